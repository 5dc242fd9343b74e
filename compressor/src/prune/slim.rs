//! NNI's `SlimPruner` (Liu et al. 2017, "Learning Efficient Convolutional Networks through
//! Network Slimming"): a BatchNorm2d's γ scales each channel, so a channel whose |γ| is
//! small contributes little and can go, together with the filter (and bias) of the Conv2d
//! that produces it.
//!
//! * All selected batch norms are ranked **together**, by |γ|, under one global threshold
//!   (as the paper and NNI do): `floor(total channels × sparsity)` channels go, the
//!   smallest |γ| first, ties to the earlier layer (graph order) and then the lower index.
//!   One sparsity therefore serves every selected layer; dicts giving different ones are
//!   rejected.
//! * Every layer keeps at least one channel: where the ranking would take a layer's last
//!   channel, that channel stays and the next-smallest elsewhere goes instead, so the
//!   count is met whenever the other layers have channels to spare. A layer with no
//!   channel would cut the network in two.
//! * NNI 2.x's stage key `mode: "normal"` ranks each layer on its own instead
//!   (`floor(channels × sparsity)` per layer): with one global threshold a layer whose γ
//!   run small as a whole (LeNet-5's first batch norm) loses all but one channel.
//! * Sparsity training: with `slim_l1` λ > 0 the baseline trains with λ·Σ|γ| (over every
//!   batch norm of the model) added to the loss, which drives unimportant γ towards zero
//!   before the ranking; fine-tuning after pruning is plain.

use candle_core::{DType, Tensor};

use super::channels::required_sparsity;
use super::{apply_masks_to_weights, attach_mask, channel_mask, Mask, PruneTarget, Pruner};
use super::{PrunerEntry, SPEEDUP};
use crate::config::{ConfigError, ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, Layer, OpType, Source};
use crate::{Error, Result};

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: NAME,
    aliases: &[],
    stage_keys: &["slim_l1", "mode", SPEEDUP],
    make: |options| {
        let per_layer = match options.values.get("mode").map(|v| v.as_str()) {
            None | Some(Some("global")) => false,
            Some(Some("normal")) => true,
            Some(_) => {
                return Err(Error::File {
                    path: options.source.clone().into(),
                    message: "`pruner.mode` must be \"global\" (one threshold over all \
                              selected batch norms, the default) or \"normal\" (each layer \
                              prunes its own share)"
                        .into(),
                })
            }
        };
        let mut pruner = SlimPruner::new(options.f64("slim_l1")?.unwrap_or(0.0));
        pruner.per_layer = per_layer;
        Ok(Box::new(pruner))
    },
};

const NAME: &str = "SlimPruner";

/// Network Slimming: channel pruning by batch-norm scale.
#[derive(Debug, Clone, Default)]
pub struct SlimPruner {
    /// λ of the L1 penalty on γ while the baseline trains (0: no sparsity training).
    l1: f64,
    /// Set by `compress`: sparsity training is over, so the penalty is off.
    compressed: bool,
    /// NNI 2.x's `mode: "normal"`: each layer prunes `floor(channels × sparsity)` of its
    /// own channels instead of sharing one global threshold.
    per_layer: bool,
}

impl SlimPruner {
    /// A pruner whose baseline trains with λ = `l1` (0: a plain baseline).
    pub fn new(l1: f64) -> Self {
        Self {
            l1,
            compressed: false,
            per_layer: false,
        }
    }

    /// The one sparsity of the selected layers (`check` has made sure they agree).
    fn common_sparsity(layers: &[LayerConfig], source: &str) -> Result<f64> {
        let Some(first) = layers.first() else {
            return Ok(0.0);
        };
        let sparsity = first.sparsity.ok_or_else(|| Error::Layer {
            layer: first.name.clone(),
            message: format!("{NAME} needs a sparsity"),
        })?;
        if let Some(other) = layers.iter().find(|l| l.sparsity != Some(sparsity)) {
            return Err(ConfigError::Rejected {
                file: source.to_string(),
                index: other.index,
                algorithm: NAME,
                message: format!(
                    "sparsity {} (for `{}`) differs from {sparsity} in config_list[{}] \
                     (for `{}`); {NAME} ranks the channels of all selected BatchNorm2d \
                     layers together, so it takes one sparsity for all of them",
                    other
                        .sparsity
                        .map_or_else(|| "none".to_string(), |s| s.to_string()),
                    other.name,
                    first.index,
                    first.name
                ),
            }
            .into());
        }
        Ok(sparsity)
    }
}

/// The Conv2d whose output batch norm `bn` normalizes, or why there is none.
fn producing_conv<'g>(graph: &'g Graph, bn: &str) -> std::result::Result<&'g str, String> {
    let node = graph
        .node(bn)
        .ok_or_else(|| format!("`{bn}` is not in the graph"))?;
    match node.inputs.as_slice() {
        [Source::Node(i)] => {
            let input = &graph.nodes()[*i];
            match &input.layer {
                Layer::Conv2d(_) => Ok(&input.name),
                other => Err(format!(
                    "`{bn}` reads `{}`, a {}, not a Conv2d; {NAME} removes each channel with \
                     the convolution filter that produces it",
                    input.name,
                    other.op_type()
                )),
            }
        }
        _ => Err(format!(
            "`{bn}` reads the model input, not a Conv2d; {NAME} removes each channel with \
             the convolution filter that produces it"
        )),
    }
}

/// Which channels of each layer go, given each layer's |γ| (`magnitudes[k]` for layer `k`,
/// in graph order): the `floor(total × sparsity)` smallest over all layers together, ties
/// to the earlier layer and then the lower index, never a layer's last channel (see the
/// module docs). Each layer's list is sorted ascending.
pub fn global_channels_to_prune(magnitudes: &[Vec<f32>], sparsity: f64) -> Vec<Vec<usize>> {
    let total: usize = magnitudes.iter().map(Vec::len).sum();
    let count = ((total as f64 * sparsity).floor() as usize).min(total);
    let mut order: Vec<(usize, usize)> = magnitudes
        .iter()
        .enumerate()
        .flat_map(|(layer, m)| (0..m.len()).map(move |c| (layer, c)))
        .collect();
    // Lexicographic (layer, index) order is the tie rule; the sort is stable.
    order.sort_by(|&(la, ca), &(lb, cb)| magnitudes[la][ca].total_cmp(&magnitudes[lb][cb]));
    let mut left: Vec<usize> = magnitudes.iter().map(Vec::len).collect();
    let mut pruned = vec![Vec::new(); magnitudes.len()];
    let mut taken = 0;
    for (layer, channel) in order {
        if taken == count {
            break;
        }
        if left[layer] > 1 {
            left[layer] -= 1;
            pruned[layer].push(channel);
            taken += 1;
        }
    }
    for channels in &mut pruned {
        channels.sort_unstable();
    }
    pruned
}

/// |γ| of a batch norm as f32 values.
fn magnitudes(gamma: &Tensor) -> Result<Vec<f32>> {
    Ok(gamma.abs()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

impl Pruner for SlimPruner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        Schema::pruning(NAME, [OpType::BatchNorm2d])
    }

    /// Something to prune, each batch norm fed by a Conv2d, and one sparsity.
    fn check(&self, graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        if layers.is_empty() {
            let has_bn = graph
                .nodes()
                .iter()
                .any(|n| matches!(n.layer, Layer::BatchNorm2d(_)));
            let message = if has_bn {
                format!(
                    "{NAME}: the config list selects no BatchNorm2d layer; select some with \
                     `\"op_types\": [\"BatchNorm2d\"]`"
                )
            } else {
                format!(
                    "{NAME} prunes the channels of BatchNorm2d layers, but the model has no \
                     BatchNorm2d layers; use a model with batch norms (e.g. --model lenet5_bn) \
                     or another pruner"
                )
            };
            return Err(Error::File {
                path: source.into(),
                message,
            });
        }
        for layer in layers {
            producing_conv(graph, &layer.name).map_err(|message| ConfigError::Rejected {
                file: source.to_string(),
                index: layer.index,
                algorithm: NAME,
                message,
            })?;
        }
        Self::common_sparsity(layers, source).map(|_| ())
    }

    /// One layer on its own (only `mask_layers` asks; `compress` ranks all layers
    /// together): its own smallest |γ|, with β.
    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let sparsity = required_sparsity(NAME, layer, config)?;
        let pruned = global_channels_to_prune(&[magnitudes(layer.weight)?], sparsity);
        channel_mask(layer.weight, layer.bias, &pruned[0])
    }

    /// The global ranking, then per batch norm a mask over γ and β and one over the same
    /// output channels of its Conv2d (filters and bias).
    fn compress(&mut self, graph: &mut Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let layers = self.resolve(graph, config)?;
        let sparsity = Self::common_sparsity(&layers, &config.source)?;
        let mut all = Vec::with_capacity(layers.len());
        for layer in &layers {
            let gamma = match graph.node(&layer.name).map(|n| &n.layer) {
                Some(Layer::BatchNorm2d(bn)) => bn.weight(),
                _ => {
                    return Err(Error::Layer {
                        layer: layer.name.clone(),
                        message: format!("{NAME} prunes BatchNorm2d layers only"),
                    })
                }
            };
            all.push(magnitudes(gamma)?);
        }
        let pruned = if self.per_layer {
            all.iter()
                .flat_map(|m| global_channels_to_prune(std::slice::from_ref(m), sparsity))
                .collect()
        } else {
            global_channels_to_prune(&all, sparsity)
        };
        for (layer, channels) in layers.iter().zip(&pruned) {
            let conv = producing_conv(graph, &layer.name)
                .map_err(|message| Error::Layer {
                    layer: layer.name.clone(),
                    message,
                })?
                .to_string();
            let mut masks = Vec::with_capacity(2);
            for name in [layer.name.as_str(), conv.as_str()] {
                let layer = graph.node(name).map(|n| &n.layer);
                let weight = layer.and_then(Layer::maskable_weight);
                let bias = layer.and_then(Layer::maskable_bias);
                let weight = weight.ok_or_else(|| Error::Layer {
                    layer: name.to_string(),
                    message: "has no weight to mask".into(),
                })?;
                masks.push((name.to_string(), channel_mask(weight, bias, channels)?));
            }
            for (name, mask) in masks {
                attach_mask(graph, &name, mask, NAME)?;
            }
        }
        apply_masks_to_weights(graph)?;
        self.compressed = true;
        Ok(layers)
    }

    /// λ·Σ|γ| over every BatchNorm2d of the model, until `compress`.
    fn regularizer(&self, graph: &Graph) -> Result<Option<Tensor>> {
        if self.l1 <= 0.0 || self.compressed {
            return Ok(None);
        }
        let mut sum: Option<Tensor> = None;
        for node in graph.nodes() {
            if let Layer::BatchNorm2d(bn) = &node.layer {
                let term = bn.weight().abs()?.sum_all()?;
                sum = Some(match sum {
                    Some(s) => (s + term)?,
                    None => term,
                });
            }
        }
        Ok(match sum {
            Some(s) => Some((s * self.l1)?),
            None => None,
        })
    }

    /// `slim-l1-<λ>` when the baseline trains sparse: a plain baseline is another model.
    fn baseline_tag(&self) -> Option<String> {
        (self.l1 > 0.0).then(|| format!("slim-l1-{}", self.l1))
    }
}

#[cfg(test)]
mod tests;
