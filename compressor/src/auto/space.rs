//! What the search may choose: per weighted layer, a weight bit width and either a Level
//! sparsity or (convolutions only) a fraction of whole filters removed. A candidate is
//! one choice per layer; it becomes an ordinary plan (LevelPruner or L1FilterPruner,
//! then QAT_Quantizer, each with a per-layer `config_list`) that `cargo xtask compress`
//! runs like any hand-written one. A plan has one pruner, so a candidate prunes either
//! by magnitude (Level) or by filters, never both: [`Candidate::with`] keeps it so.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::nn::{Graph, Layer};

/// One layer's choice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Fraction of the layer's weights pruned by magnitude (0: dense).
    pub sparsity: f64,
    /// Weight bits (8, 4 or 2); activations stay 8-bit.
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
}

/// Sparsities searched by default (NNI's sensitivity analysis steps by 0.1; the top end
/// is finer because that is where flash is won and accuracy lost).
pub const DEFAULT_SPARSITIES: [f64; 7] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98];
/// Fractions of a convolution's filters the search may remove by default
/// (`floor(filters × fraction)` of them, as NNI counts).
pub const DEFAULT_FILTER_SPARSITIES: [f64; 2] = [0.25, 0.5];
/// Weight bit widths searched by default: what QAT trains and the packed format stores.
/// Binary weights need the BNN quantizer's sign activations, which a per-layer QAT plan
/// cannot mix in, so they are not searched.
pub const DEFAULT_BITS: [u8; 3] = [8, 4, 2];

impl SearchSpace {
    /// Every Conv2d and Linear of `graph` with the default values.
    pub fn of(graph: &Graph) -> Self {
        let weighted: Vec<_> = (graph.nodes().iter())
            .filter(|n| matches!(n.layer, Layer::Conv2d(_) | Layer::Linear(_)))
            .collect();
        Self {
            layers: weighted.iter().map(|n| n.name.clone()).collect(),
            sparsities: DEFAULT_SPARSITIES.to_vec(),
            bits: DEFAULT_BITS.to_vec(),
            filter_sparsities: DEFAULT_FILTER_SPARSITIES.to_vec(),
            filterable: (weighted.iter())
                .map(|n| matches!(&n.layer, Layer::Conv2d(c) if c.config().groups == 1))
                .collect(),
        }
    }

    /// Every choice layer `i` may take, dense int8 first: each bit width with each Level
    /// sparsity, and for a filterable convolution with each filter fraction.
    pub fn choices(&self, i: usize) -> Vec<Choice> {
        let mut all = Vec::new();
        for &bits in &self.bits {
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

    /// This candidate with layer `i` at `choice`, the others kept, except that a plan
    /// has one pruner: choosing filters clears every Level sparsity, and choosing a
    /// Level sparsity clears every filter fraction.
    pub fn with(&self, i: usize, choice: Choice) -> Candidate {
        let mut next = self.clone();
        for (j, c) in next.0.iter_mut().enumerate() {
            if j == i {
                *c = choice;
            } else if choice.filters > 0.0 {
                c.sparsity = 0.0;
            } else if choice.sparsity > 0.0 {
                c.filters = 0.0;
            }
        }
        next
    }

    /// The candidate as a compression plan: LevelPruner (or L1FilterPruner, with its
    /// speedup) with one `config_list` entry per pruned layer (no pruner when nothing is
    /// pruned), then QAT_Quantizer quantizing every
    /// Conv2d and Linear to 8 bits, with a later entry per narrower layer (NNI's rule:
    /// later entries override earlier ones).
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
        let mut quantized = vec![json!({
            "op_types": ["Conv2d", "Linear"],
            "quant_types": ["input", "weight", "output"],
            "quant_bits": 8
        })];
        quantized.extend(
            space
                .layers
                .iter()
                .zip(&self.0)
                .filter(|(_, c)| c.bits != 8)
                .map(|(layer, c)| {
                    json!({
                        "op_names": [layer],
                        "quant_types": ["input", "weight", "output"],
                        "quant_bits": { "input": 8, "weight": c.bits, "output": 8 }
                    })
                }),
        );
        let mut plan = serde_json::Map::new();
        if !pruned.is_empty() {
            plan.insert(
                "pruner".into(),
                json!({ "algorithm": pruner, "config_list": pruned }),
            );
        }
        plan.insert(
            "quantizer".into(),
            json!({ "algorithm": "QAT_Quantizer", "config_list": quantized }),
        );
        Value::Object(plan)
    }
}
