//! The report printed at the end of `cargo xtask compress` and saved as `summary.json`.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use super::SpeedupReport;
use crate::config::QuantType;
use crate::export::packed::{Packed, PACKED_FILE};
use crate::export::write_atomic;
use crate::nn::{infer_shapes, node_macs, weight_reuse, Graph, Layer};
use crate::prune::sparsity_of;
use crate::train::{DistillReport, EpochStats};
use crate::Result;

/// One weighted layer after compression.
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub op_type: String,
    pub weights: usize,
    pub nonzero_weights: usize,
    pub biases: usize,
    pub sparsity: f64,
    /// Output channels (filters, or a Linear's rows) and how many keep a nonzero weight.
    pub channels: usize,
    pub channels_kept: usize,
    pub macs: usize,
    pub nonzero_macs: usize,
    /// Bit widths the quantizer's config gives the layer's weight, input and output
    /// (`None`: not quantized, or no quantizer; a 1-bit output is a sign activation).
    pub weight_bits: Option<u8>,
    pub input_bits: Option<u8>,
    pub output_bits: Option<u8>,
    /// How `model.sprig` stores the weights (dense, sparse, packed) and in how many
    /// bytes (`None`: no `model.sprig` was written).
    pub encoding: Option<String>,
    pub stored_bytes: Option<usize>,
}

/// A quantized layer without weights (an Add, an activation): its output's bit width.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizedOutput {
    pub name: String,
    pub op_type: String,
    pub output_bits: Option<u8>,
    /// Named by no dict: quantized by the plan's rule (residual Adds).
    pub implicit: bool,
}

/// Everything a compression run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub model: String,
    pub data: String,
    pub plan: String,
    /// Knowledge distillation, when the plan asked for it (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillReport>,
    pub train_images: usize,
    pub test_images: usize,
    pub baseline_history: Vec<EpochStats>,
    pub float_accuracy: f32,
    /// Right after pruning, before any fine-tuning.
    pub one_shot_accuracy: Option<f32>,
    /// Every fine-tuning round of the pruner (one, or Lottery Ticket's iterations).
    pub prune_rounds: Vec<RoundReport>,
    /// What the speedup after a channel pruner removed (`None`: it did not run).
    pub speedup: Option<SpeedupReport>,
    pub pruned_accuracy: Option<f32>,
    pub quantized_accuracy: Option<f32>,
    pub layers: Vec<LayerRow>,
    /// The widest weight bit width of any quantized layer (per layer: [`LayerRow`]).
    pub weight_bits: Option<u8>,
    /// The quantizer's name (`None`: none ran).
    pub quantizer: Option<String>,
    /// Quantized layers without weights (their rows are not in `layers`).
    pub quantized_outputs: Vec<QuantizedOutput>,
    /// Top-1 of the packed int8 model run by sprig-runtime on the host.
    pub deployed_accuracy: Option<f32>,
    /// Fraction of test images where the deployed and the fake-quant model agree.
    pub agreement: Option<f32>,
    /// Bytes of `model.sprig`.
    pub blob_bytes: Option<usize>,
    /// Arena bytes the packed model needs.
    pub arena_bytes: Option<usize>,
    /// Why no `model.sprig` was written, when none was.
    pub packed_skipped: Option<String>,
    pub seconds: f32,
    pub out: String,
}

/// One pruning round: the overall sparsity of the pruned layers and the accuracy after
/// its fine-tuning.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub round: usize,
    pub sparsity: f64,
    pub accuracy: f32,
}

/// Rows for the weighted layers of `compressed` (weights as the masks leave them).
pub fn layer_rows(compressed: &Graph) -> Result<Vec<LayerRow>> {
    let shapes = infer_shapes(compressed);
    let mut rows = Vec::new();
    for (i, node) in compressed.nodes().iter().enumerate() {
        let (weight, bias) = match &node.layer {
            Layer::Conv2d(c) => (c.weight(), c.bias()),
            Layer::Linear(l) => (l.weight(), l.bias()),
            _ => continue,
        };
        let weight = compressed.masked_weight(&node.name, weight)?;
        let bits = |t: QuantType| {
            compressed
                .quant()
                .and_then(|q| q.layer(&node.name))
                .and_then(|l| l.config.bits(t))
        };
        let n = weight.elem_count();
        let sparsity = sparsity_of(&weight)?;
        let nonzero = n - (sparsity * n as f64).round() as usize;
        let channels = weight.dim(0)?;
        let channels_kept = weight
            .abs()?
            .flatten_from(1)?
            .max(1)?
            .gt(0f32)?
            .to_dtype(candle_core::DType::F32)?
            .sum_all()?
            .to_scalar::<f32>()? as usize;
        rows.push(LayerRow {
            name: node.name.clone(),
            op_type: node.layer.op_type().to_string(),
            weights: n,
            nonzero_weights: nonzero,
            biases: bias.map_or(0, |b| b.elem_count()),
            sparsity,
            channels,
            channels_kept,
            macs: node_macs(compressed, i, &shapes[i]),
            nonzero_macs: nonzero * weight_reuse(compressed, i, &shapes[i]),
            weight_bits: bits(QuantType::Weight),
            input_bits: bits(QuantType::Input),
            output_bits: bits(QuantType::Output),
            encoding: None,
            stored_bytes: None,
        });
    }
    Ok(rows)
}

/// Fills each row's encoding and stored bytes from the weighted ops of `packed` (named
/// by the graph layers behind them).
pub fn record_stored(rows: &mut [LayerRow], packed: &Packed) -> Result<()> {
    let stored = packed
        .model()?
        .layer_weights()
        .map_err(|e| crate::Error::Export {
            path: PACKED_FILE.into(),
            message: format!("cannot read the weights back: {e}"),
        })?;
    for (name, op) in packed.weighted_layers.iter().zip(&stored) {
        if let Some(row) = rows.iter_mut().find(|r| &r.name == name) {
            row.encoding = Some(op.encoding.name().to_string());
            row.stored_bytes = Some(op.bytes);
        }
    }
    Ok(())
}

/// The quantized layers of `compressed` that have no weight, in graph order.
pub fn quantized_outputs(compressed: &Graph) -> Vec<QuantizedOutput> {
    let Some(binding) = compressed.quant() else {
        return Vec::new();
    };
    compressed
        .nodes()
        .iter()
        .filter(|n| n.layer.weight().is_none())
        .filter_map(|n| {
            let layer = binding.layer(&n.name)?;
            Some(QuantizedOutput {
                name: n.name.clone(),
                op_type: n.layer.op_type().to_string(),
                output_bits: layer.config.bits(QuantType::Output),
                implicit: layer.is_implicit(),
            })
        })
        .collect()
}

impl Summary {
    pub fn total<F: Fn(&LayerRow) -> usize>(&self, f: F) -> usize {
        self.layers.iter().map(f).sum()
    }
    /// float32 bytes of weights and biases.
    pub fn float_bytes(&self) -> usize {
        4 * self.total(|r| r.weights + r.biases)
    }
    /// A row's weight bit width: its own, else 8 (what the chip stores unquantized
    /// weights at).
    fn row_bits(r: &LayerRow) -> usize {
        usize::from(r.weight_bits.unwrap_or(8))
    }
    /// Dense quantized bytes: weights at their layer's bit width, int32 biases.
    pub fn quantized_bytes(&self) -> usize {
        self.total(|r| r.weights * Self::row_bits(r)).div_ceil(8) + 4 * self.total(|r| r.biases)
    }
    /// Quantized bytes counting only nonzero weights (what sparse storage approaches).
    pub fn quantized_nonzero_bytes(&self) -> usize {
        self.total(|r| r.nonzero_weights * Self::row_bits(r))
            .div_ceil(8)
            + 4 * self.total(|r| r.biases)
    }
    /// `int8`, `int4`, ...: the layers' one weight width, or the span `1–8-bit` of mixed
    /// widths.
    pub fn weight_bits_label(&self) -> String {
        let widths = self.layers.iter().map(Self::row_bits);
        match (widths.clone().min(), widths.max()) {
            (Some(lo), Some(hi)) if lo != hi => format!("{lo}–{hi}-bit"),
            (Some(b), _) => format!("int{b}"),
            _ => "int8".to_string(),
        }
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| crate::Error::Export {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, text.as_bytes())
    }
}

fn pct(x: f32) -> String {
    format!("{:.2} %", 100.0 * x)
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "model {}  |  data {} ({} train / {} test images)",
            self.model, self.data, self.train_images, self.test_images
        )?;
        writeln!(f, "plan  {}", self.plan)?;
        if let Some(d) = &self.distill {
            writeln!(
                f,
                "distilled from {} ({} top-1), T {}, alpha {}",
                d.teacher,
                pct(d.teacher_accuracy),
                d.temperature,
                d.alpha
            )?;
        }
        writeln!(f)?;
        writeln!(f, "{:<22} {:>9}", "accuracy (top-1)", "")?;
        writeln!(f, "  {:<20} {:>9}", "float", pct(self.float_accuracy))?;
        if let Some(a) = self.one_shot_accuracy {
            writeln!(f, "  {:<20} {:>9}", "pruned, one-shot", pct(a))?;
        }
        if self.prune_rounds.len() > 1 {
            for r in &self.prune_rounds {
                writeln!(
                    f,
                    "  {:<20} {:>9}  (sparsity {:.2} %)",
                    format!("round {}", r.round),
                    pct(r.accuracy),
                    100.0 * r.sparsity
                )?;
            }
        }
        if let Some(a) = self.pruned_accuracy {
            writeln!(
                f,
                "  {:<20} {:>9}  ({:+.2} points)",
                "pruned + fine-tune",
                pct(a),
                100.0 * (a - self.float_accuracy)
            )?;
        }
        if let Some(a) = self.quantized_accuracy {
            writeln!(
                f,
                "  {:<20} {:>9}  ({:+.2} points)",
                "quantized",
                pct(a),
                100.0 * (a - self.float_accuracy)
            )?;
        }
        if let Some(a) = self.deployed_accuracy {
            let agreement = self.agreement.map_or(String::new(), |g| {
                format!(", agrees with quantized on {}", pct(g))
            });
            writeln!(
                f,
                "  {:<20} {:>9}  ({:+.2} points{agreement})",
                "deployed int8",
                pct(a),
                100.0 * (a - self.float_accuracy)
            )?;
        }
        writeln!(f)?;
        if let Some(s) = &self.speedup {
            write!(
                f,
                "speedup: {} -> {} parameters ({:+.2} %)",
                s.parameters_before,
                s.parameters_after,
                100.0 * (s.parameters_after as f64 / s.parameters_before.max(1) as f64 - 1.0)
            )?;
            if let Some(change) = s.max_output_change {
                write!(f, ", outputs within {change:.1e} of the masked model")?;
            }
            writeln!(f)?;
            for l in &s.layers {
                // Batch norms and depthwise convs have one channel count for both sides.
                let sides = match l.inputs == l.outputs {
                    true => vec![("channels", l.outputs)],
                    false => vec![("in", l.inputs), ("out", l.outputs)],
                };
                let changes: Vec<String> = sides
                    .into_iter()
                    .filter(|(_, (before, after))| before != after)
                    .map(|(side, (before, after))| format!("{side} {before} -> {after}"))
                    .collect();
                writeln!(
                    f,
                    "  {:<20} {:<12} {}",
                    l.name,
                    l.op_type,
                    changes.join(", ")
                )?;
            }
            writeln!(f)?;
        }
        // Bits of weight / input / output ("-": not quantized), with a quantizer only.
        let quantized = self.quantizer.is_some();
        let bits_header = if quantized { "  bits w/i/o" } else { "" };
        writeln!(
            f,
            "{:<16} {:<8} {:>9} {:>9} {:>9} {:>9} {:>11} {:>11}{bits_header}",
            "layer", "type", "weights", "nonzero", "sparsity", "channels", "MACs", "nonzero MACs"
        )?;
        for r in &self.layers {
            let bits = match quantized {
                true => format!(
                    "  {:>11}",
                    [r.weight_bits, r.input_bits, r.output_bits]
                        .map(|b| b.map_or("-".to_string(), |b| b.to_string()))
                        .join("/")
                ),
                false => String::new(),
            };
            writeln!(
                f,
                "{:<16} {:<8} {:>9} {:>9} {:>8.2}% {:>9} {:>11} {:>11}{bits}",
                r.name,
                r.op_type,
                r.weights,
                r.nonzero_weights,
                100.0 * r.sparsity,
                format!("{}/{}", r.channels_kept, r.channels),
                r.macs,
                r.nonzero_macs
            )?;
        }
        let (w, nz) = (self.total(|r| r.weights), self.total(|r| r.nonzero_weights));
        writeln!(
            f,
            "{:<16} {:<8} {:>9} {:>9} {:>8.2}% {:>9} {:>11} {:>11}",
            "total",
            "",
            w,
            nz,
            100.0 * (1.0 - nz as f64 / w.max(1) as f64),
            format!(
                "{}/{}",
                self.total(|r| r.channels_kept),
                self.total(|r| r.channels)
            ),
            self.total(|r| r.macs),
            self.total(|r| r.nonzero_macs)
        )?;
        if !self.quantized_outputs.is_empty() {
            let outputs: Vec<String> = self
                .quantized_outputs
                .iter()
                .map(|o| {
                    let bits = o.output_bits.map_or("-".to_string(), |b| b.to_string());
                    let implicit = if o.implicit { ", implicit" } else { "" };
                    format!("{} ({}{implicit}) {bits}", o.name, o.op_type)
                })
                .collect();
            writeln!(f, "output bits of other layers: {}", outputs.join(", "))?;
        }
        if self.layers.iter().any(|r| r.output_bits == Some(1)) {
            writeln!(
                f,
                "1-bit outputs are sign activations (±1 of the pre-activation, replacing a fused ReLU)"
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "parameters: {} weights + {} biases; nonzero weights {}",
            w,
            self.total(|r| r.biases),
            nz
        )?;
        let bits = self.weight_bits_label();
        writeln!(
            f,
            "bytes: float32 {}  |  {bits} dense {}  |  {bits} nonzero-only {}",
            self.float_bytes(),
            self.quantized_bytes(),
            self.quantized_nonzero_bytes()
        )?;
        match (self.blob_bytes, self.arena_bytes, &self.packed_skipped) {
            (Some(blob), Some(arena), _) => writeln!(
                f,
                "model.sprig: {blob} bytes (dense int8 weights + int32 biases {}), arena {arena} bytes",
                self.total(|r| r.weights) + 4 * self.total(|r| r.biases)
            )?,
            (_, _, Some(why)) => writeln!(f, "model.sprig: not written ({why})")?,
            _ => {}
        }
        write!(f, "time: {:.1} s  |  outputs in {}", self.seconds, self.out)
    }
}
