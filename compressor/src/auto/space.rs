//! What the search may choose: per weighted layer, a weight bit width and either a Level
//! sparsity or (convolutions only) a fraction of whole filters removed. A candidate is
//! one choice per layer; it becomes an ordinary plan (LevelPruner or L1FilterPruner,
//! then QAT_Quantizer or BNNQuantizer, each with a per-layer `config_list`) that
//! `cargo xtask compress` runs like any hand-written one. A plan has one pruner, so a
//! candidate prunes either by magnitude (Level) or by filters, never both; and one
//! quantizer, so it has either binary layers (BNNQuantizer, the rest int8) or 4- and
//! 2-bit ones (QAT_Quantizer), never both: [`Candidate::with`] keeps it so.
//!
//! A binary layer (1-bit weights) also gets a sign output where that pays and is safe
//! ([`Candidate::sign_outputs`]): where it reads signs itself, so that it becomes an
//! XNOR + popcount op, or where every layer reading its output is binary and will.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::nn::{Graph, Layer};
use crate::quant::sign_readers;

/// One layer's choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Fraction of the layer's weights pruned by magnitude (0: dense).
    pub sparsity: f64,
    /// Weight bits (8, 4, 2, or 1: binary, never pruned); activations stay 8-bit but
    /// for a binary layer's sign output.
    pub bits: u8,
    /// Fraction of the layer's filters removed by L1 norm, then cut out by the speedup
    /// (convolutions only; 0: none).
    #[serde(default)]
    pub filters: f64,
}

impl Choice {
    /// The uncompressed choice: dense int8.
    pub const DENSE_INT8: Choice = Choice {
        sparsity: 0.0,
        bits: 8,
        filters: 0.0,
    };

    /// Magnitude pruning at `sparsity` with `bits`-bit weights.
    pub const fn level(sparsity: f64, bits: u8) -> Self {
        Self {
            sparsity,
            bits,
            filters: 0.0,
        }
    }

    /// `s80b4` (80 % Level, 4-bit) or `f50b8` (half the filters removed, 8-bit).
    pub fn label(&self) -> String {
        match self.filters > 0.0 {
            true => format!("f{:.0}b{}", 100.0 * self.filters, self.bits),
            false => format!("s{:.0}b{}", 100.0 * self.sparsity, self.bits),
        }
    }

    /// `filters` of the filters removed, with `bits`-bit weights.
    pub const fn filters(filters: f64, bits: u8) -> Self {
        Self {
            sparsity: 0.0,
            bits,
            filters,
        }
    }
}

/// The searched layers and the values each may take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSpace {
    /// Weighted layers (Conv2d, depthwise included, and Linear), in graph order.
    pub layers: Vec<String>,
    /// Sparsities a layer may take, ascending, 0 first.
    pub sparsities: Vec<f64>,
    /// Weight bit widths a layer may take, descending, 8 first.
    pub bits: Vec<u8>,
    /// Fractions of filters a convolution may lose (empty: no filter pruning).
    #[serde(default)]
    pub filter_sparsities: Vec<f64>,
    /// Per layer, whether it may lose filters (a Conv2d that is not depthwise).
    #[serde(default)]
    pub filterable: Vec<bool>,
    /// Per layer, whether it may be binary (not a depthwise Conv2d).
    #[serde(default)]
    pub binarizable: Vec<bool>,
    /// Per layer, the layers (indices into `layers`) that would read a sign output of
    /// it through max pools and flattens, or `None` where a sign output cannot stay
    /// ±1 (it reaches an Add, an average pool, the graph's output...).
    #[serde(default)]
    pub sign_readers: Vec<Option<Vec<usize>>>,
}

/// Sparsities searched by default (NNI's sensitivity analysis steps by 0.1; the top end
/// is finer because that is where flash is won and accuracy lost).
pub const DEFAULT_SPARSITIES: [f64; 7] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98];
/// Fractions of a convolution's filters the search may remove by default
/// (`floor(filters × fraction)` of them, as NNI counts).
pub const DEFAULT_FILTER_SPARSITIES: [f64; 2] = [0.25, 0.5];
/// Weight bit widths searched by default: what QAT trains and the packed format stores,
/// and binary (BNNQuantizer's; a candidate with binary layers keeps the rest at 8).
pub const DEFAULT_BITS: [u8; 4] = [8, 4, 2, 1];

/// Fine-tuning rate of a plan with binary layers (`configs/bnn.json`'s): latent weights
/// clipped to [-1, 1] must move far enough to flip signs.
pub const BNN_LR: f64 = 0.005;

impl SearchSpace {
    /// Every Conv2d and Linear of `graph` with the default values.
    pub fn of(graph: &Graph) -> Self {
        let weighted: Vec<usize> = (0..graph.nodes().len())
            .filter(|&i| matches!(graph.nodes()[i].layer, Layer::Conv2d(_) | Layer::Linear(_)))
            .collect();
        let layer_of = |node: &usize| weighted.iter().position(|w| w == node);
        let not_depthwise: Vec<bool> = (weighted.iter())
            .map(|&i| match &graph.nodes()[i].layer {
                Layer::Conv2d(c) => !c.config().is_depthwise(),
                _ => true,
            })
            .collect();
        Self {
            layers: (weighted.iter())
                .map(|&i| graph.nodes()[i].name.clone())
                .collect(),
            sparsities: DEFAULT_SPARSITIES.to_vec(),
            bits: DEFAULT_BITS.to_vec(),
            filter_sparsities: DEFAULT_FILTER_SPARSITIES.to_vec(),
            filterable: (weighted.iter())
                .map(|&i| matches!(&graph.nodes()[i].layer, Layer::Conv2d(c) if c.config().groups == 1))
                .collect(),
            binarizable: not_depthwise,
            sign_readers: (weighted.iter())
                .map(|&i| {
                    let readers = sign_readers(graph, i).ok()?;
                    readers.iter().map(layer_of).collect()
                })
                .collect(),
        }
    }

    /// Every choice layer `i` may take, dense int8 first: each bit width with each Level
    /// sparsity, and for a filterable convolution with each filter fraction; binary
    /// (dense) where the layer may be binary.
    pub fn choices(&self, i: usize) -> Vec<Choice> {
        let mut all = Vec::new();
        for &bits in &self.bits {
            if bits == 1 {
                if self.binarizable.get(i).copied().unwrap_or(false) {
                    all.push(Choice::level(0.0, 1));
                }
                continue;
            }
            for &sparsity in &self.sparsities {
                all.push(Choice::level(sparsity, bits));
            }
            if self.filterable.get(i).copied().unwrap_or(false) {
                for &filters in &self.filter_sparsities {
                    all.push(Choice::filters(filters, bits));
                }
            }
        }
        all
    }

    /// Every layer dense int8.
    pub fn uncompressed(&self) -> Candidate {
        Candidate(vec![Choice::DENSE_INT8; self.layers.len()])
    }
}

/// One choice per layer of a [`SearchSpace`], in its layer order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate(pub Vec<Choice>);

impl Candidate {
    /// A short stable name (`conv1=s80b4,fc1=s95b8`; `conv2=f50b8` for half its filters
    /// removed), the key under which its measurement and its trial are kept.
    pub fn key(&self, space: &SearchSpace) -> String {
        space
            .layers
            .iter()
            .zip(&self.0)
            .map(|(layer, c)| format!("{layer}={}", c.label()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the candidate removes filters (its plan's pruner is L1FilterPruner).
    pub fn prunes_filters(&self) -> bool {
        self.0.iter().any(|c| c.filters > 0.0)
    }

    /// Whether the candidate has binary layers (its plan's quantizer is BNNQuantizer).
    pub fn binarizes(&self) -> bool {
        self.0.iter().any(|c| c.bits == 1)
    }

    /// This candidate with layer `i` at `choice`, the others kept, except that a plan
    /// has one pruner and one quantizer: choosing filters clears every Level sparsity,
    /// and choosing a Level sparsity clears every filter fraction; choosing binary
    /// widens every 4- and 2-bit layer to 8, and choosing 4 or 2 bits widens every
    /// binary layer to 8.
    pub fn with(&self, i: usize, choice: Choice) -> Candidate {
        let mut next = self.clone();
        for (j, c) in next.0.iter_mut().enumerate() {
            if j == i {
                *c = choice;
                continue;
            }
            if choice.filters > 0.0 {
                c.sparsity = 0.0;
            } else if choice.sparsity > 0.0 {
                c.filters = 0.0;
            }
            let other_quantizer = match choice.bits {
                1 => c.bits != 8 && c.bits != 1,
                8 => false,
                _ => c.bits == 1,
            };
            if other_quantizer {
                c.bits = 8;
            }
        }
        next
    }

    /// Per layer, whether its output is a sign (±1): a binary layer gets one where it
    /// stays ±1 on its way (`SearchSpace::sign_readers`) and either it reads signs
    /// itself (it becomes a binary op, exactly ±1 out) or every layer reading it is
    /// binary and may take a sign output too (each becomes a binary op). A sign output
    /// of a layer that reads int8 values is an int8 op clamped to [-1, 1], whose 0 only
    /// binary ops read right (as +1); the second condition keeps it from int8 readers.
    pub fn sign_outputs(&self, space: &SearchSpace) -> Vec<bool> {
        let readers = |j: usize| space.sign_readers.get(j).and_then(Option::as_ref);
        let binary = |j: usize| self.0.get(j).is_some_and(|c| c.bits == 1);
        let mut sign = vec![false; self.0.len()];
        for i in 0..self.0.len() {
            let Some(its_readers) = readers(i).filter(|_| binary(i)) else {
                continue;
            };
            let reads_signs = (0..i).any(|j| sign[j] && readers(j).is_some_and(|r| r.contains(&i)));
            let read_by_binary_ops = !its_readers.is_empty()
                && (its_readers.iter()).all(|&r| binary(r) && readers(r).is_some());
            sign[i] = reads_signs || read_by_binary_ops;
        }
        sign
    }

    /// The candidate as a compression plan: LevelPruner (or L1FilterPruner, with its
    /// speedup) with one `config_list` entry per pruned layer (no pruner when nothing is
    /// pruned), then the quantizer: QAT_Quantizer quantizing every Conv2d and Linear to
    /// 8 bits, with a later entry per narrower layer (NNI's rule: later entries override
    /// earlier ones); or, with binary layers, BNNQuantizer as `configs/bnn.json` has it
    /// (weights and outputs int8, a later entry per binary layer, its output a sign
    /// where [`Candidate::sign_outputs`] says so), fine-tuned at [`BNN_LR`].
    pub fn plan(&self, space: &SearchSpace) -> Value {
        let filters = self.prunes_filters();
        let pruned: Vec<Value> = (space.layers.iter().zip(&self.0))
            .map(|(layer, c)| (layer, if filters { c.filters } else { c.sparsity }))
            .filter(|(_, fraction)| *fraction > 0.0)
            .map(|(layer, fraction)| json!({ "op_names": [layer], "sparsity": fraction }))
            .collect();
        let pruner = if filters {
            "L1FilterPruner"
        } else {
            "LevelPruner"
        };
        let quantizer = match self.binarizes() {
            true => self.bnn_quantizer(space),
            false => self.qat_quantizer(space),
        };
        let mut plan = serde_json::Map::new();
        if !pruned.is_empty() {
            plan.insert(
                "pruner".into(),
                json!({ "algorithm": pruner, "config_list": pruned }),
            );
        }
        plan.insert("quantizer".into(), quantizer);
        Value::Object(plan)
    }

    /// QAT_Quantizer: every Conv2d and Linear at 8 bits, then an entry per narrower layer.
    fn qat_quantizer(&self, space: &SearchSpace) -> Value {
        let mut entries = vec![json!({
            "op_types": ["Conv2d", "Linear"],
            "quant_types": ["input", "weight", "output"],
            "quant_bits": 8
        })];
        entries.extend(
            (space.layers.iter().zip(&self.0))
                .filter(|(_, c)| c.bits != 8)
                .map(|(layer, c)| {
                    json!({
                        "op_names": [layer],
                        "quant_types": ["input", "weight", "output"],
                        "quant_bits": { "input": 8, "weight": c.bits, "output": 8 }
                    })
                }),
        );
        json!({ "algorithm": "QAT_Quantizer", "config_list": entries })
    }

    /// BNNQuantizer: weights and outputs at 8 bits, then an entry per binary layer.
    fn bnn_quantizer(&self, space: &SearchSpace) -> Value {
        let sign = self.sign_outputs(space);
        let mut entries = vec![json!({
            "op_types": ["Conv2d", "Linear"],
            "quant_types": ["weight", "output"],
            "quant_bits": 8
        })];
        entries.extend(
            (space.layers.iter().zip(&self.0).zip(sign))
                .filter(|((_, c), _)| c.bits == 1)
                .map(|((layer, _), sign)| {
                    json!({
                        "op_names": [layer],
                        "quant_types": ["weight", "output"],
                        "quant_bits": { "weight": 1, "output": if sign { 1 } else { 8 } }
                    })
                }),
        );
        json!({ "algorithm": "BNNQuantizer", "lr": BNN_LR, "config_list": entries })
    }
}
