//! NNI's activation-rank filter pruners: `ActivationAPoZRankFilterPruner` (Hu et al. 2016,
//! "Network Trimming": Average Percentage of Zeros) and `ActivationMeanRankFilterPruner`
//! (Molchanov et al. 2017's mean-activation criterion). Both rank a Conv2d's filters by what
//! its output looks like after the ReLU / ReLU6 that follows it (directly, or through one
//! BatchNorm2d), measured on training images, and remove `floor(filters × sparsity)` of
//! them with their biases:
//!
//! - APoZ removes the channels that are most often zero: they rarely pass anything on.
//! - Mean activation removes the channels with the smallest average output.
//!
//! The statistics come from [`collect_statistics`](super::collect_statistics): eval-mode
//! forward passes over `statistics_batches` training batches before `compress`. Only
//! per-channel sums and counts are kept (f64, so millions of values add up exactly enough).
//!
//! NNI v1 calls the setting `statistics_batch_num` and defaults to one batch, which at its
//! examples' batch sizes is a few dozen images: too few to rank channels reliably, which
//! shows in its accuracy. Sprig defaults to 16 batches, at least 1,000 images at the
//! pipeline's batch size of 64.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use candle_core::{DType, Tensor};

use super::channels::{filter_schema, lowest_filters_mask};
use super::{filter_pruner_check, Mask, PruneTarget, Pruner, PrunerEntry, StageOptions, SPEEDUP};
use crate::config::{ConfigError, LayerConfig, Schema};
use crate::nn::{Graph, Layer, Source};
use crate::{Error, Result};

/// Batches of statistics when the plan gives none: 16 × 64 = 1,024 images.
pub const DEFAULT_STATISTICS_BATCHES: usize = 16;

/// The stage keys both pruners accept: the statistics pass under sprig's name and NNI
/// v1's, and the speedup switch.
const STAGE_KEYS: &[&str] = &["statistics_batches", "statistics_batch_num", SPEEDUP];

pub(super) const APOZ_ENTRY: PrunerEntry = PrunerEntry {
    name: "ActivationAPoZRankFilterPruner",
    aliases: &["ActivationAPoZRankPruner"],
    stage_keys: STAGE_KEYS,
    make: |options| {
        Ok(Box::new(ActivationAPoZRankFilterPruner::new(
            statistics_batches(options)?,
        )))
    },
};

pub(super) const MEAN_ENTRY: PrunerEntry = PrunerEntry {
    name: "ActivationMeanRankFilterPruner",
    aliases: &["ActivationMeanRankPruner"],
    stage_keys: STAGE_KEYS,
    make: |options| {
        Ok(Box::new(ActivationMeanRankFilterPruner::new(
            statistics_batches(options)?,
        )))
    },
};

/// The stage's batch count: `statistics_batches` or NNI's `statistics_batch_num` (not
/// both, so a plan never says two things), else [`DEFAULT_STATISTICS_BATCHES`].
pub(crate) fn statistics_batches(options: &StageOptions) -> Result<usize> {
    match (
        options.count("statistics_batches")?,
        options.count("statistics_batch_num")?,
    ) {
        (Some(_), Some(_)) => Err(Error::File {
            path: options.source.clone().into(),
            message: "`pruner.statistics_batches` and `pruner.statistics_batch_num` (NNI v1's \
                      name for it) are the same setting; give only one"
                .into(),
        }),
        (ours, nni) => Ok(ours.or(nni).unwrap_or(DEFAULT_STATISTICS_BATCHES)),
    }
}

/// What an activation-rank pruner measures per channel.
pub trait ActivationStatistic: std::fmt::Debug + Clone + Copy + Default + 'static {
    /// The pruner's NNI name.
    const PRUNER: &'static str;

    /// Per channel, the sum over one batch's activations `[N, C, H, W]` of the measured
    /// quantity; divided by the number of values it becomes the channel's statistic.
    fn batch_totals(activations: &Tensor) -> Result<Vec<f64>>;

    /// The rank of a channel with statistic `value`: the lowest ranks are pruned.
    fn rank(value: f64) -> f32;
}

/// Average Percentage of Zeros: the fraction of a channel's activations that are zero.
#[derive(Debug, Clone, Copy, Default)]
pub struct APoZ;

impl ActivationStatistic for APoZ {
    const PRUNER: &'static str = "ActivationAPoZRankFilterPruner";

    fn batch_totals(activations: &Tensor) -> Result<Vec<f64>> {
        let zeros = activations.eq(&activations.zeros_like()?)?;
        Ok(zeros
            .to_dtype(DType::F64)?
            .sum((0, 2, 3))?
            .to_vec1::<f64>()?)
    }

    /// Mostly-zero channels go first.
    fn rank(value: f64) -> f32 {
        -value as f32
    }
}

/// Mean activation: a channel's average output.
#[derive(Debug, Clone, Copy, Default)]
pub struct MeanActivation;

impl ActivationStatistic for MeanActivation {
    const PRUNER: &'static str = "ActivationMeanRankFilterPruner";

    fn batch_totals(activations: &Tensor) -> Result<Vec<f64>> {
        Ok(activations
            .to_dtype(DType::F64)?
            .sum((0, 2, 3))?
            .to_vec1::<f64>()?)
    }

    /// Weakest channels go first.
    fn rank(value: f64) -> f32 {
        value as f32
    }
}

/// One conv's accumulated statistics.
#[derive(Debug, Clone, Default, PartialEq)]
struct ChannelTotals {
    /// Per channel, the sum of [`ActivationStatistic::batch_totals`].
    totals: Vec<f64>,
    /// Activations seen per channel (images × H × W).
    values: u64,
    images: u64,
}

/// Filter pruning by an activation statistic `S`; use it as
/// [`ActivationAPoZRankFilterPruner`] or [`ActivationMeanRankFilterPruner`].
#[derive(Debug, Clone)]
pub struct ActivationRankFilterPruner<S: ActivationStatistic> {
    batches: usize,
    /// By conv name; every conv followed by an activation, selected or not (the config is
    /// only resolved in `compress`).
    stats: BTreeMap<String, ChannelTotals>,
    statistic: PhantomData<S>,
}

/// Prunes the filters whose activations are most often zero.
pub type ActivationAPoZRankFilterPruner = ActivationRankFilterPruner<APoZ>;
/// Prunes the filters with the smallest mean activation.
pub type ActivationMeanRankFilterPruner = ActivationRankFilterPruner<MeanActivation>;

impl<S: ActivationStatistic> Default for ActivationRankFilterPruner<S> {
    fn default() -> Self {
        Self::new(DEFAULT_STATISTICS_BATCHES)
    }
}

impl<S: ActivationStatistic> ActivationRankFilterPruner<S> {
    /// A pruner that asks for `batches` training batches of statistics.
    pub fn new(batches: usize) -> Self {
        Self {
            batches,
            stats: BTreeMap::new(),
            statistic: PhantomData,
        }
    }

    /// The per-channel statistic of conv `layer` so far (APoZ in [0, 1], or the mean
    /// activation), if any of its activations were observed.
    pub fn channel_statistics(&self, layer: &str) -> Option<Vec<f64>> {
        let stats = self.stats.get(layer)?;
        let n = stats.values as f64;
        Some(stats.totals.iter().map(|t| t / n).collect())
    }

    /// How many images conv `layer`'s statistics cover.
    pub fn images_observed(&self, layer: &str) -> Option<u64> {
        self.stats.get(layer).map(|s| s.images)
    }

    /// Forgets every statistic (before a fresh statistics pass).
    pub fn clear_statistics(&mut self) {
        self.stats.clear();
    }
}

impl<S: ActivationStatistic> Pruner for ActivationRankFilterPruner<S> {
    fn name(&self) -> &'static str {
        S::PRUNER
    }

    /// Conv2d only: a Linear's outputs are single neurons, not filters, and NNI's
    /// activation pruners do not take them.
    fn schema(&self) -> Schema {
        filter_schema(S::PRUNER)
    }

    fn check(&self, graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        filter_pruner_check(S::PRUNER, graph, layers, source)?;
        for layer in layers {
            let Some(conv) = graph.nodes().iter().position(|n| n.name == layer.name) else {
                continue;
            };
            if activation_after(graph, conv).is_none() {
                let feeds: Vec<&str> = graph
                    .consumers(conv)
                    .into_iter()
                    .map(|i| graph.nodes()[i].name.as_str())
                    .collect();
                return Err(ConfigError::Rejected {
                    file: source.to_string(),
                    index: layer.index,
                    algorithm: S::PRUNER,
                    message: format!(
                        "`{}` is not followed by a ReLU or ReLU6 (directly or through one \
                         BatchNorm2d; it feeds {}), so it has no activations to rank; exclude \
                         it ({{\"op_names\": [\"{}\"], \"exclude\": true}})",
                        layer.name,
                        if feeds.is_empty() {
                            "nothing".to_string()
                        } else {
                            feeds.join(", ")
                        },
                        layer.name
                    ),
                }
                .into());
            }
        }
        Ok(())
    }

    fn statistics_batches(&self) -> usize {
        self.batches
    }

    fn observe(&mut self, graph: &Graph, node: usize, output: &Tensor) -> Result<()> {
        let Some(conv) = conv_before(graph, node) else {
            return Ok(());
        };
        let name = &graph.nodes()[conv].name;
        let (images, channels, h, w) = output.dims4()?;
        let batch = S::batch_totals(output)?;
        let stats = self.stats.entry(name.clone()).or_default();
        if stats.totals.is_empty() {
            stats.totals = vec![0.0; channels];
        }
        if stats.totals.len() != channels {
            return Err(Error::Layer {
                layer: name.clone(),
                message: format!(
                    "{}: activations with {channels} channels after {} earlier",
                    S::PRUNER,
                    stats.totals.len()
                ),
            });
        }
        for (total, b) in stats.totals.iter_mut().zip(batch) {
            *total += b;
        }
        stats.values += (images * h * w) as u64;
        stats.images += images as u64;
        Ok(())
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let fail = |message: String| Error::Layer {
            layer: layer.name.to_string(),
            message: format!("{}: {message}", S::PRUNER),
        };
        let sparsity = config
            .sparsity
            .ok_or_else(|| fail("needs a sparsity".into()))?;
        let statistics = match self.channel_statistics(layer.name) {
            Some(s) if !s.is_empty() => s,
            _ if self.stats.is_empty() => {
                return Err(fail(
                    "no activation statistics: no statistics pass ran before compress \
                     (collect_statistics with statistics_batches > 0)"
                        .into(),
                ))
            }
            _ => {
                return Err(fail(
                    "no activation statistics for this layer: the statistics pass saw no \
                     ReLU or ReLU6 after it (directly or through one BatchNorm2d)"
                        .into(),
                ))
            }
        };
        let filters = layer.weight.dim(0)?;
        if statistics.len() != filters {
            return Err(fail(format!(
                "statistics for {} channels, but the weight has {filters} filters",
                statistics.len()
            )));
        }
        let ranks: Vec<f32> = statistics.into_iter().map(S::rank).collect();
        lowest_filters_mask(layer, &ranks, sparsity)
    }
}

/// The ReLU / ReLU6 whose output carries conv `conv`'s channels: a consumer of the conv,
/// else a consumer of a BatchNorm2d that consumes it (the first such, so each conv is
/// measured at one place).
fn activation_after(graph: &Graph, conv: usize) -> Option<usize> {
    let nodes = graph.nodes();
    if !matches!(nodes.get(conv)?.layer, Layer::Conv2d(_)) {
        return None;
    }
    let consumers = graph.consumers(conv);
    let direct = consumers
        .iter()
        .copied()
        .find(|&i| nodes[i].layer.is_activation());
    direct.or_else(|| {
        consumers
            .iter()
            .filter(|&&i| matches!(nodes[i].layer, Layer::BatchNorm2d(_)))
            .find_map(|&bn| {
                graph
                    .consumers(bn)
                    .into_iter()
                    .find(|&i| nodes[i].layer.is_activation())
            })
    })
}

/// The conv whose activations node `node` is, if it is one's [`activation_after`].
fn conv_before(graph: &Graph, node: usize) -> Option<usize> {
    let nodes = graph.nodes();
    if !nodes.get(node)?.layer.is_activation() {
        return None;
    }
    let Source::Node(mut conv) = *nodes[node].inputs.first()? else {
        return None;
    };
    if matches!(nodes[conv].layer, Layer::BatchNorm2d(_)) {
        let Source::Node(before) = *nodes[conv].inputs.first()? else {
            return None;
        };
        conv = before;
    }
    (activation_after(graph, conv) == Some(node)).then_some(conv)
}

#[cfg(test)]
mod tests;
