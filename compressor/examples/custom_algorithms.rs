//! Writing your own pruner and quantizer.
//!
//! **A pruner** is any type implementing [`Pruner`]. Two methods are required: `name`
//! (used in errors) and `calc_mask`, which gets one layer selected by the `config_list`
//! (its name, op type and current weight) together with that layer's resolved
//! [`LayerConfig`] (its `sparsity`, plus any extra keys the pruner's `schema` allows), and
//! returns a 0/1 [`Mask`] of the weight's shape. Everything else comes with the trait:
//! `compress` resolves the NNI `config_list` against the graph, calls `calc_mask` per
//! layer, attaches the masks and zeroes the pruned weights; [`train::train`] keeps them at
//! exactly zero; `update_epoch` / `step` are hooks for schedules (the other hooks —
//! activation statistics, a loss regulariser, rounds, checkpointed state — are listed in
//! `sprig_compressor::prune`); `export_model` writes NNI's weight, mask and ONNX files.
//!
//! **Naming it in a plan file.** Register a [`PrunerEntry`] (see [`FILTER_PRUNER_ENTRY`])
//! in a [`Registry`] and hand it to the job; a plan can then say
//! `"algorithm": "ExampleFilterPruner"` like any built-in:
//!
//! ```ignore
//! let mut opts = CompressOptions::new("runs/custom");
//! opts.registry.register(FILTER_PRUNER_ENTRY);
//! opts.plan = Some("my-plan.json".into());
//! compress::run(&opts)?;
//! ```
//!
//! **A quantizer** is any type implementing [`Quantizer`]: `name`, a `schema` (which op
//! types and bit widths its `config_list` accepts) and whichever of `quantize_weight`,
//! `quantize_input`, `quantize_output` it needs; the others pass tensors through. The
//! hooks run in the forward pass and may keep per-layer [`QuantState`] (ranges, scales)
//! that `calibration.json` reports. Rounding has no useful gradient, so the hooks return
//! their result through a [`QuantGrad`]: a tensor whose value is the quantized one and
//! whose gradient is a surrogate chosen by the rule.
//!
//! This example writes one of each, and a gradient rule:
//! - [`FilterPruner`] removes whole output channels (conv filters, rows of a linear
//!   weight) with the smallest L1 norm, the structured pruning that lets an exporter drop
//!   channels instead of storing zeros;
//! - [`TernaryQuantizer`] quantizes weights to `{-α, 0, +α}` per output channel (Li & Liu,
//!   *Ternary Weight Networks*, 2016: threshold `Δ = 0.7·mean|w|`, `α` the mean magnitude
//!   of the weights above it);
//! - [`ClippedIdentity`] is its backward: the gradient passes where `|w| ≤ 1` and is zero
//!   outside (the "hard tanh" straight-through estimator of BinaryConnect).
//!
//! It trains LeNet-5 on 2000 images, prunes half the channels of every layer but the
//! classifier, binds the ternary quantizer, fine-tunes, and prints accuracy and per-layer
//! sparsity. Run it with `cargo run -p sprig-compressor --example custom_algorithms`.

use std::collections::BTreeSet;

use anyhow::Result;
use candle_core::{Device, Tensor, D};
use sprig_compressor::config::{ConfigList, LayerConfig, QuantType, Schema};
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{
    sparsity_of, Mask, PruneTarget, Pruner, PrunerEntry, Registry, StageOptions,
};
use sprig_compressor::quant::{QuantContext, QuantGrad, QuantRange, QuantState, Quantizer};
use sprig_compressor::train::{self, evaluate, TrainConfig};

/// Prunes the `round(sparsity · channels)` output channels with the smallest L1 norm
/// (keeping at least one).
#[derive(Debug, Default)]
pub struct FilterPruner;

impl Pruner for FilterPruner {
    fn name(&self) -> &'static str {
        "FilterPruner"
    }

    fn calc_mask(
        &mut self,
        layer: &PruneTarget,
        config: &LayerConfig,
    ) -> sprig_compressor::Result<Mask> {
        let sparsity = config
            .sparsity
            .ok_or_else(|| sprig_compressor::Error::Layer {
                layer: layer.name.to_string(),
                message: "FilterPruner needs a sparsity".into(),
            })?;
        let w = layer.weight;
        let channels = w.dim(0)?;
        let norms = w.abs()?.flatten_from(1)?.sum(D::Minus1)?.to_vec1::<f32>()?;
        let prune = ((sparsity * channels as f64).round() as usize).min(channels - 1);
        let mut order: Vec<usize> = (0..channels).collect();
        order.sort_by(|&a, &b| norms[a].total_cmp(&norms[b]).then(a.cmp(&b)));
        let mut keep = vec![1f32; channels];
        for &c in &order[..prune] {
            keep[c] = 0.0;
        }
        // One value per channel, broadcast over the rest of the weight's shape.
        let mut shape = vec![1usize; w.rank()];
        shape[0] = channels;
        let mask = Tensor::from_vec(keep, shape, w.device())?
            .to_dtype(w.dtype())?
            .broadcast_as(w.shape())?
            .contiguous()?;
        Ok(Mask::new(mask))
    }
}

/// Makes [`FilterPruner`] nameable in plan files as `"ExampleFilterPruner"` once
/// registered ([`Registry::register`]).
pub const FILTER_PRUNER_ENTRY: PrunerEntry = PrunerEntry {
    name: "ExampleFilterPruner",
    aliases: &[],
    stage_keys: &[],
    make: make_filter_pruner,
};

fn make_filter_pruner(_options: &StageOptions) -> sprig_compressor::Result<Box<dyn Pruner>> {
    Ok(Box::new(FilterPruner))
}

/// The built-in pruners and this example's.
pub fn registry() -> Registry {
    let mut registry = Registry::builtin();
    registry.register(FILTER_PRUNER_ENTRY);
    registry
}

/// Straight-through where `low ≤ x ≤ high`, zero gradient outside; the value is exactly
/// the quantized tensor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClippedIdentity;

impl QuantGrad for ClippedIdentity {
    fn apply(
        &self,
        x: &Tensor,
        quantized: &Tensor,
        range: QuantRange,
    ) -> candle_core::Result<Tensor> {
        let inside = x
            .ge(range.low)?
            .mul(&x.le(range.high)?)?
            .to_dtype(x.dtype())?;
        let passed = (x * inside)?;
        // `passed - passed.detach()` is exactly zero with gradient `inside`; adding the
        // quantized tensor to it keeps its value bit for bit.
        (&passed - passed.detach())? + quantized
    }
}

/// Ternary weights `{-α, 0, +α}` per output channel, trained through [`ClippedIdentity`]
/// on `[-1, 1]`.
#[derive(Debug, Default)]
pub struct TernaryQuantizer;

/// The range inside which [`TernaryQuantizer`] lets gradients through.
pub const TERNARY_CLIP: QuantRange = QuantRange {
    low: -1.0,
    high: 1.0,
};

impl TernaryQuantizer {
    /// The ternary weight and the per-channel `α`s.
    pub fn ternarize(weight: &Tensor) -> candle_core::Result<(Tensor, Vec<f32>)> {
        let w = weight.detach().flatten_from(1)?; // [out, k]
        let magnitude = w.abs()?;
        let threshold = (magnitude.mean_keepdim(1)? * 0.7)?;
        let above = magnitude.broadcast_gt(&threshold)?.to_dtype(w.dtype())?;
        // α = mean |w| over the weights above the threshold (0 for an all-zero channel).
        let count = above.sum_keepdim(1)?.clamp(1f32, f32::MAX)?;
        let alpha = ((&magnitude * &above)?.sum_keepdim(1)? / count)?;
        let ternary = (w.sign()? * above)?.broadcast_mul(&alpha)?;
        Ok((
            ternary.reshape(weight.shape())?,
            alpha.flatten_all()?.to_vec1()?,
        ))
    }
}

impl Quantizer for TernaryQuantizer {
    fn name(&self) -> &'static str {
        "TernaryQuantizer"
    }

    fn schema(&self) -> Schema {
        // Ternary values need 2 bits; weights of Conv2d and Linear only.
        Schema::quantization(self.name(), [OpType::Conv2d, OpType::Linear], 2..=2)
    }

    fn quantize_weight(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> candle_core::Result<Tensor> {
        let (ternary, alphas) = Self::ternarize(weight)?;
        state.weight_scales = alphas;
        state.weight_bits = Some(ctx.bits(QuantType::Weight));
        if ctx.training {
            state.steps += 1;
        }
        ClippedIdentity.apply(weight, &ternary, TERNARY_CLIP)
    }
}

const PRUNE_CONFIG: &str = r#"[
    {"op_types": ["default"], "sparsity": 0.5},
    {"op_names": ["fc3"], "exclude": true}
]"#;
const QUANT_CONFIG: &str =
    r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight"], "quant_bits": 2}]"#;

fn print_layers(model: &Model) -> Result<()> {
    let binding = model.graph.quant();
    for node in model.graph.nodes() {
        let Some(w) = node.layer.weight() else {
            continue;
        };
        let stored = sparsity_of(w)?;
        let mut line = format!("  {:<6} stored sparsity {:5.1}%", node.name, 100.0 * stored);
        if let Some(b) = binding {
            // The weight the forward pass computes with: masked, then ternary.
            let effective = b.quantize_weight(
                &node.name,
                &model.graph.masked_weight(&node.name, w)?,
                false,
            )?;
            let levels = effective
                .flatten_from(1)?
                .to_vec2::<f32>()?
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| v.to_bits())
                        .collect::<BTreeSet<_>>()
                        .len()
                })
                .max()
                .unwrap_or(0);
            line += &format!(
                ", effective sparsity {:5.1}%, at most {levels} values per channel",
                100.0 * sparsity_of(&effective)?
            );
        }
        println!("{line}");
    }
    Ok(())
}

fn main() -> Result<()> {
    let source = data::resolve(None)?;
    println!("{}", source.describe());
    let (train_full, test_full) = source.load()?;
    let (train_set, test_set) = (train_full.subset(2000), test_full.subset(1000));

    let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let mut cfg = TrainConfig::new(2, 0);
    cfg.label = "baseline".into();
    train::train(&mut model, &train_set, &test_set, &cfg, None)?;
    println!(
        "float LeNet-5: {:.2}% top-1",
        100.0 * evaluate(&model, &test_set)?
    );

    let mut pruner = FilterPruner;
    pruner.compress(&mut model.graph, &ConfigList::from_json_str(PRUNE_CONFIG)?)?;
    println!(
        "{} (half the channels): {:.2}% top-1 before fine-tuning",
        pruner.name(),
        100.0 * evaluate(&model, &test_set)?
    );

    TernaryQuantizer.compress(&mut model.graph, &ConfigList::from_json_str(QUANT_CONFIG)?)?;
    println!(
        "+ TernaryQuantizer: {:.2}% top-1 before fine-tuning",
        100.0 * evaluate(&model, &test_set)?
    );

    let mut cfg = TrainConfig::new(2, 0);
    cfg.lr = 1e-3;
    cfg.label = "fine-tune".into();
    train::train(&mut model, &train_set, &test_set, &cfg, Some(&mut pruner))?;
    println!(
        "pruned + ternary, fine-tuned: {:.2}% top-1",
        100.0 * evaluate(&model, &test_set)?
    );
    print_layers(&model)?;
    Ok(())
}
