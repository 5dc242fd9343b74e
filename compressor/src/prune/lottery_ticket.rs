//! NNI's `LotteryTicketPruner` (Frankle & Carbin 2019): `prune_iterations` rounds; round
//! `k` (1-based) prunes each selected layer by magnitude to `1 − (1 − s)^(k/n)` of its
//! weights, then rewinds every surviving parameter to its value at initialization and
//! retrains. The exported model is the last round's masked, retrained network.
//!
//! The rewind point is the model as [`Pruner::on_init`] saw it: the seeded initialization
//! (also when the baseline came from `--weights`, which has no initialization of its own).

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use serde_json::{json, Value};

use super::level::magnitude_mask;
use super::{apply_masks_to_weights, mask_layers, Mask, PruneTarget, Pruner, PrunerEntry};
use crate::config::{ConfigError, ConfigList, LayerConfig, Schema};
use crate::export::graph_tensors;
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "LotteryTicketPruner",
    aliases: &[],
    stage_keys: &[],
    make: |_| Ok(Box::new(LotteryTicketPruner::default())),
};

const NAME: &str = "LotteryTicketPruner";

/// Round `round`'s sparsity (1-based) of `rounds` for a final sparsity `sparsity`.
pub fn round_sparsity(sparsity: f64, round: usize, rounds: usize) -> f64 {
    1.0 - (1.0 - sparsity).powf(round as f64 / rounds.max(1) as f64)
}

/// Iterative magnitude pruning with rewinding.
#[derive(Debug, Clone, Default)]
pub struct LotteryTicketPruner {
    /// Every parameter and running statistic at initialization, by `<layer>.<param>`.
    initial: BTreeMap<String, Tensor>,
    layers: Vec<LayerConfig>,
    rounds: usize,
    /// The round whose masks are current (1-based; 0 before `compress`).
    round: usize,
}

impl LotteryTicketPruner {
    /// `prune_iterations` of the selected dicts: present and equal in all of them.
    fn iterations(layers: &[LayerConfig], source: &str) -> Result<usize> {
        let mut found: Option<(usize, usize)> = None;
        for layer in layers {
            let reject = |message: String| -> Error {
                ConfigError::Rejected {
                    file: source.to_string(),
                    index: layer.index,
                    algorithm: NAME,
                    message,
                }
                .into()
            };
            let n = match layer.extra.get("prune_iterations") {
                None => {
                    return Err(reject(
                        "needs `prune_iterations` (the number of rounds)".into(),
                    ))
                }
                Some(v) => v.as_u64().filter(|&n| n >= 1).ok_or_else(|| {
                    reject(format!(
                        "`prune_iterations` must be a positive integer, found {v}"
                    ))
                })? as usize,
            };
            match found {
                Some((other, index)) if other != n => {
                    return Err(reject(format!(
                        "`prune_iterations` is {n} here but {other} in config_list[{index}]; \
                         all rounds prune together, so give one value"
                    )))
                }
                _ => found = Some((n, layer.index)),
            }
        }
        Ok(found.map_or(1, |(n, _)| n))
    }

    /// Sets every saved parameter back to its initial value; masks then zero the pruned.
    fn rewind(&self, graph: &Graph) -> Result<()> {
        if self.initial.is_empty() {
            return Err(Error::Layer {
                layer: NAME.into(),
                message: "no initial weights to rewind to: `on_init` was not called".into(),
            });
        }
        for (name, current) in graph_tensors(graph) {
            if let Some(initial) = self.initial.get(&name) {
                Var::from_tensor(&current)?.set(initial)?;
            }
        }
        apply_masks_to_weights(graph)
    }

    /// The rewind point (for tests and reports).
    pub fn initial(&self) -> &BTreeMap<String, Tensor> {
        &self.initial
    }
}

impl Pruner for LotteryTicketPruner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        Schema::pruning(NAME, [OpType::Conv2d, OpType::Linear])
            .with_extra_keys(&["prune_iterations"])
    }

    fn check(&self, _graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        Self::iterations(layers, source).map(|_| ())
    }

    fn on_init(&mut self, graph: &Graph) -> Result<()> {
        self.initial = graph_tensors(graph)
            .into_iter()
            .map(|(k, v)| Ok((k, v.copy()?)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let sparsity = config.sparsity.ok_or_else(|| Error::Layer {
            layer: layer.name.to_string(),
            message: format!("{NAME} needs a sparsity"),
        })?;
        let round_target = round_sparsity(sparsity, self.round.max(1), self.rounds.max(1));
        let magnitudes = layer.weight.abs()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Mask::new(magnitude_mask(
            &magnitudes,
            round_target,
            layer.weight,
        )?))
    }

    fn compress(&mut self, graph: &mut Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let layers = self.resolve(graph, config)?;
        self.rounds = Self::iterations(&layers, &config.source)?;
        self.layers = layers.clone();
        self.round = 1;
        mask_layers(self, graph, &layers)?;
        self.rewind(graph)?;
        Ok(layers)
    }

    fn rounds(&self) -> usize {
        self.rounds.max(1)
    }

    /// Round `round` (0-based, as the pipeline counts) prunes round `round + 1`'s
    /// sparsity from the retrained weights, then rewinds.
    fn start_round(&mut self, round: usize, graph: &mut Graph) -> Result<()> {
        self.round = round + 1;
        let layers = self.layers.clone();
        mask_layers(self, graph, &layers)?;
        self.rewind(graph)
    }

    fn state(&self) -> Value {
        json!({ "round": self.round })
    }

    fn load_state(&mut self, state: &Value) -> Result<()> {
        if let Some(round) = state.get("round").and_then(Value::as_u64) {
            self.round = round as usize;
        }
        Ok(())
    }
}
