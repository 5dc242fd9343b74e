//! What the search may choose: per weighted layer, a Level sparsity and a weight bit
//! width. A candidate is one choice per layer; it becomes an ordinary plan (LevelPruner
//! then QAT_Quantizer, each with a per-layer `config_list`) that `cargo xtask compress`
//! runs like any hand-written one.

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
}

impl Choice {
    /// The uncompressed choice: dense int8.
    pub const DENSE_INT8: Choice = Choice {
        sparsity: 0.0,
        bits: 8,
    };
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
}

/// Sparsities searched by default (NNI's sensitivity analysis steps by 0.1; the top end
/// is finer because that is where flash is won and accuracy lost).
pub const DEFAULT_SPARSITIES: [f64; 7] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98];
/// Weight bit widths searched by default: what QAT trains and the packed format stores.
/// Binary weights need the BNN quantizer's sign activations, which a per-layer QAT plan
/// cannot mix in, so they are not searched.
pub const DEFAULT_BITS: [u8; 3] = [8, 4, 2];

impl SearchSpace {
    /// Every Conv2d and Linear of `graph` with the default values.
    pub fn of(graph: &Graph) -> Self {
        let layers = graph
            .nodes()
            .iter()
            .filter(|n| matches!(n.layer, Layer::Conv2d(_) | Layer::Linear(_)))
            .map(|n| n.name.clone())
            .collect();
        Self {
            layers,
            sparsities: DEFAULT_SPARSITIES.to_vec(),
            bits: DEFAULT_BITS.to_vec(),
        }
    }

    /// Every choice a layer may take, dense int8 first.
    pub fn choices(&self) -> Vec<Choice> {
        let mut all = Vec::with_capacity(self.sparsities.len() * self.bits.len());
        for &bits in &self.bits {
            for &sparsity in &self.sparsities {
                all.push(Choice { sparsity, bits });
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
    /// A short stable name (`conv1=s80b4,fc1=s95b8`), the key under which its
    /// measurement and its trial are kept.
    pub fn key(&self, space: &SearchSpace) -> String {
        space
            .layers
            .iter()
            .zip(&self.0)
            .map(|(layer, c)| format!("{layer}=s{:.0}b{}", 100.0 * c.sparsity, c.bits))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The candidate as a compression plan: LevelPruner with one `config_list` entry per
    /// pruned layer (none when nothing is pruned), then QAT_Quantizer quantizing every
    /// Conv2d and Linear to 8 bits, with a later entry per narrower layer (NNI's rule:
    /// later entries override earlier ones).
    pub fn plan(&self, space: &SearchSpace) -> Value {
        let pruned: Vec<Value> = space
            .layers
            .iter()
            .zip(&self.0)
            .filter(|(_, c)| c.sparsity > 0.0)
            .map(|(layer, c)| json!({ "op_names": [layer], "sparsity": c.sparsity }))
            .collect();
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
                json!({ "algorithm": "LevelPruner", "config_list": pruned }),
            );
        }
        plan.insert(
            "quantizer".into(),
            json!({ "algorithm": "QAT_Quantizer", "config_list": quantized }),
        );
        Value::Object(plan)
    }
}
