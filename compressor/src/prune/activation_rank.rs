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
use super::{filter_pruner_check, Mask, PruneTarget, Pruner, PrunerEntry, StageOptions};
use crate::config::{ConfigError, LayerConfig, Schema};
use crate::nn::{Graph, Layer, Source};
use crate::{Error, Result};

/// Batches of statistics when the plan gives none: 16 × 64 = 1,024 images.
pub const DEFAULT_STATISTICS_BATCHES: usize = 16;

/// The stage keys both pruners accept: sprig's name and NNI v1's.
const STAGE_KEYS: &[&str] = &["statistics_batches", "statistics_batch_num"];

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
mod tests {
    use candle_core::Device;
    use candle_nn::{VarBuilder, VarMap};

    use super::*;
    use crate::config::ConfigList;
    use crate::data;
    use crate::models::Model;
    use crate::nn::{
        BatchNorm2d, Conv2d, Conv2dConfig, MaxPool2d, OpType, Pool2dConfig, ReLU, ReLU6,
    };
    use crate::prune::channels::testing::{conv_config, pruned_filters};
    use crate::prune::{channels_to_prune, collect_statistics, Registry};

    /// `conv` (1 → 4 channels, 1×1) → [`bn`] → `act` (ReLU, or ReLU6 after a batch norm),
    /// and a conv `tail` feeding a max pool only.
    fn tiny_graph(with_bn: bool) -> Graph {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let mut g = Graph::new([1, 2, 2]);
        let x = g.push(
            "conv",
            Layer::Conv2d(Conv2d::new(Conv2dConfig::new(1, 4, 1), vb.pp("conv")).unwrap()),
            &[Source::Input],
        );
        let x = if with_bn {
            let x = g.push(
                "bn",
                Layer::BatchNorm2d(BatchNorm2d::new(4, vb.pp("bn")).unwrap()),
                &[x],
            );
            g.push("act", Layer::ReLU6(ReLU6), &[x])
        } else {
            g.push("act", Layer::ReLU(ReLU), &[x])
        };
        let x = g.push(
            "tail",
            Layer::Conv2d(Conv2d::new(Conv2dConfig::new(4, 4, 1), vb.pp("tail")).unwrap()),
            &[x],
        );
        g.push(
            "pool",
            Layer::MaxPool2d(MaxPool2d(Pool2dConfig {
                kernel_size: 1,
                stride: 1,
            })),
            &[x],
        );
        g
    }

    fn index(graph: &Graph, name: &str) -> usize {
        graph.nodes().iter().position(|n| n.name == name).unwrap()
    }

    /// Activations `[images, 4, 1, 2]` from per-channel rows of `2 × images` values.
    fn activations(channels: [&[f32]; 4]) -> Tensor {
        let images = channels[0].len() / 2;
        // [C, N, 1, W] → [N, C, 1, W].
        let data: Vec<f32> = channels.iter().flat_map(|c| c.iter().copied()).collect();
        Tensor::from_vec(data, (4, images, 1, 2), &Device::Cpu)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap()
    }

    fn prune<S: ActivationStatistic>(
        pruner: &mut ActivationRankFilterPruner<S>,
        graph: &Graph,
        sparsity: f64,
    ) -> Result<Vec<usize>> {
        let node = graph.node("conv").unwrap();
        let weight = node.layer.weight().unwrap();
        let target = PruneTarget {
            bias: node.layer.maskable_bias(),
            ..PruneTarget::new("conv", OpType::Conv2d, weight)
        };
        let mask = pruner.calc_mask(&target, &conv_config(sparsity))?;
        assert_eq!(mask.tensor().dims(), weight.dims());
        let pruned = pruned_filters(mask.tensor());
        let bias = mask.bias().expect("a bias mask").to_vec1::<f32>().unwrap();
        for (i, b) in bias.into_iter().enumerate() {
            assert_eq!(b == 0.0, pruned.contains(&i), "bias mask {i}");
        }
        Ok(pruned)
    }

    /// Channel 2 is always zero; channel 0 is zero in 4 of 8 values (all of the first,
    /// 1-image batch and 2 of the second, 3-image one: the average of the two batches'
    /// fractions would be 2/3, not 1/2); channel 3 in 2 of 8; channel 1 never.
    fn observe_apoz_batches<S: ActivationStatistic>(
        pruner: &mut ActivationRankFilterPruner<S>,
        graph: &Graph,
    ) {
        let act = index(graph, "act");
        let first = activations([&[0., 0.], &[1., 2.], &[0., 0.], &[0., 3.]]);
        let second = activations([
            &[1., 0., 2., 3., 0., 4.],
            &[1., 1., 1., 1., 1., 1.],
            &[0.; 6],
            &[5., 5., 5., 0., 5., 5.],
        ]);
        pruner.observe(graph, act, &first).unwrap();
        pruner.observe(graph, act, &second).unwrap();
    }

    #[test]
    fn apoz_prunes_the_channels_with_the_most_zeros() {
        let graph = tiny_graph(false);
        let mut pruner = ActivationAPoZRankFilterPruner::new(2);
        observe_apoz_batches(&mut pruner, &graph);
        assert_eq!(
            pruner.channel_statistics("conv").unwrap(),
            [0.5, 0.0, 1.0, 0.25]
        );
        assert_eq!(pruner.images_observed("conv"), Some(4));
        assert_eq!(prune(&mut pruner, &graph, 0.25).unwrap(), [2]);
        assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [0, 2]);
        assert_eq!(prune(&mut pruner, &graph, 0.75).unwrap(), [0, 2, 3]);
        // floor(4 × 0.2) = 0.
        assert!(prune(&mut pruner, &graph, 0.2).unwrap().is_empty());
    }

    #[test]
    fn mean_rank_prunes_the_weakest_channels() {
        let graph = tiny_graph(false);
        let mut pruner = ActivationMeanRankFilterPruner::new(2);
        let act = index(&graph, "act");
        // Means 3, 1, 0.5, 2 over both batches (sums 12, 4, 2, 8 over 4 values).
        let first = activations([&[6., 6.], &[0., 0.], &[0., 0.], &[4., 4.]]);
        let second = activations([&[0., 0.], &[4., 0.], &[1., 1.], &[0., 0.]]);
        pruner.observe(&graph, act, &first).unwrap();
        pruner.observe(&graph, act, &second).unwrap();
        assert_eq!(
            pruner.channel_statistics("conv").unwrap(),
            [3.0, 1.0, 0.5, 2.0]
        );
        assert_eq!(prune(&mut pruner, &graph, 0.25).unwrap(), [2]);
        assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [1, 2]);
        assert_eq!(prune(&mut pruner, &graph, 0.75).unwrap(), [1, 2, 3]);
    }

    #[test]
    fn the_same_activations_rank_differently_under_the_two_statistics() {
        // APoZ [0.5, 0, 1, 0.25]; means [1.25, 1.125, 0, 3.5] (sums 10, 9, 0, 28 over 8).
        let graph = tiny_graph(false);
        let mut apoz = ActivationAPoZRankFilterPruner::new(2);
        let mut mean = ActivationMeanRankFilterPruner::new(2);
        observe_apoz_batches(&mut apoz, &graph);
        observe_apoz_batches(&mut mean, &graph);
        assert_eq!(
            mean.channel_statistics("conv").unwrap(),
            [1.25, 1.125, 0.0, 3.5]
        );
        assert_eq!(prune(&mut apoz, &graph, 0.5).unwrap(), [0, 2]);
        assert_eq!(prune(&mut mean, &graph, 0.5).unwrap(), [1, 2]);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let graph = tiny_graph(false);
        let act = index(&graph, "act");
        let same = activations([&[0., 1.], &[2., 0.], &[0., 3.], &[4., 0.]]);
        let mut apoz = ActivationAPoZRankFilterPruner::new(1);
        apoz.observe(&graph, act, &same).unwrap();
        assert_eq!(prune(&mut apoz, &graph, 0.5).unwrap(), [0, 1]);
        let flat = activations([&[1., 1.], &[2., 0.], &[0., 2.], &[1., 1.]]);
        let mut mean = ActivationMeanRankFilterPruner::new(1);
        mean.observe(&graph, act, &flat).unwrap();
        assert_eq!(prune(&mut mean, &graph, 0.75).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn batch_norm_between_conv_and_relu6_is_looked_through() {
        let graph = tiny_graph(true);
        let mut pruner = ActivationAPoZRankFilterPruner::new(2);
        observe_apoz_batches(&mut pruner, &graph);
        assert_eq!(
            pruner.channel_statistics("conv").unwrap(),
            [0.5, 0.0, 1.0, 0.25]
        );
        assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [0, 2]);
    }

    #[test]
    fn only_activations_after_a_conv_are_recorded() {
        let graph = tiny_graph(true);
        let mut pruner = ActivationMeanRankFilterPruner::new(1);
        let x = activations([&[1., 1.], &[1., 1.], &[1., 1.], &[1., 1.]]);
        for name in ["conv", "bn", "tail", "pool"] {
            pruner.observe(&graph, index(&graph, name), &x).unwrap();
        }
        assert!(pruner.stats.is_empty());
        assert_eq!(conv_before(&graph, index(&graph, "act")), Some(0));
        assert_eq!(activation_after(&graph, index(&graph, "tail")), None);

        // LeNet-5: relu1 and relu2 follow convs; relu3 and relu4 follow Linears.
        let model = Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
        let g = &model.graph;
        let found: Vec<(&str, &str)> = (0..g.nodes().len())
            .filter_map(|i| conv_before(g, i).map(|c| (&*g.nodes()[i].name, &*g.nodes()[c].name)))
            .collect();
        assert_eq!(found, [("relu1", "conv1"), ("relu2", "conv2")]);
    }

    #[test]
    fn a_conv_without_statistics_is_an_error_that_says_why() {
        let graph = tiny_graph(false);
        let mut pruner = ActivationAPoZRankFilterPruner::new(1);
        let err = prune(&mut pruner, &graph, 0.5).unwrap_err().to_string();
        assert!(err.contains("`conv`"), "{err}");
        assert!(err.contains("ActivationAPoZRankFilterPruner"), "{err}");
        assert!(err.contains("no statistics pass ran"), "{err}");

        // Statistics for another conv only.
        pruner.stats.insert(
            "other".into(),
            ChannelTotals {
                totals: vec![0.0; 4],
                values: 8,
                images: 4,
            },
        );
        let err = prune(&mut pruner, &graph, 0.5).unwrap_err().to_string();
        assert!(err.contains("`conv`"), "{err}");
        assert!(err.contains("no ReLU or ReLU6 after it"), "{err}");
    }

    #[test]
    fn statistics_of_the_wrong_width_are_refused() {
        let graph = tiny_graph(false);
        let mut pruner = ActivationMeanRankFilterPruner::new(1);
        let act = index(&graph, "act");
        pruner
            .observe(&graph, act, &activations([&[1., 1.]; 4]))
            .unwrap();
        let narrow = Tensor::ones((1, 3, 1, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(pruner.observe(&graph, act, &narrow).is_err());
    }

    #[test]
    fn stage_keys_and_the_default_batch_count() {
        let options = |pairs: &[(&str, serde_json::Value)]| StageOptions {
            source: "plan.json".into(),
            values: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        let registry = Registry::builtin();
        for (name, canonical) in [
            ("ActivationAPoZRankFilterPruner", APoZ::PRUNER),
            ("ActivationAPoZRankPruner", APoZ::PRUNER),
            ("ActivationMeanRankFilterPruner", MeanActivation::PRUNER),
            ("ActivationMeanRankPruner", MeanActivation::PRUNER),
        ] {
            let make = |pairs: &[(&str, serde_json::Value)]| registry.make(name, &options(pairs));
            let pruner = make(&[]).unwrap();
            assert_eq!(pruner.name(), canonical);
            assert_eq!(pruner.statistics_batches(), DEFAULT_STATISTICS_BATCHES);
            let pruner = make(&[("statistics_batches", 3.into())]).unwrap();
            assert_eq!(pruner.statistics_batches(), 3);
            let pruner = make(&[("statistics_batch_num", 5.into())]).unwrap();
            assert_eq!(pruner.statistics_batches(), 5);

            let both = [
                ("statistics_batches", 3.into()),
                ("statistics_batch_num", 3.into()),
            ];
            let err = make(&both).err().unwrap().to_string();
            assert!(err.contains("plan.json"), "{err}");
            assert!(err.contains("only one"), "{err}");
            for bad in [0.into(), (-1).into(), 2.5.into(), "4".into()] {
                let err = make(&[("statistics_batches", bad)]).err().unwrap();
                assert!(err.to_string().contains("positive integer"), "{err}");
            }
            let err = make(&[("sparsity", 0.5.into())]).err().unwrap();
            assert!(err.to_string().contains("statistics_batch_num"), "{err}");
        }
        // Enough images at the pipeline's batch size.
        const _: () = assert!(DEFAULT_STATISTICS_BATCHES * 64 >= 1000);
    }

    #[test]
    fn schema_is_conv2d_only_and_linear_is_rejected() {
        let pruner = ActivationMeanRankFilterPruner::default();
        let schema = pruner.schema();
        assert_eq!(schema.default_op_types, [OpType::Conv2d]);
        assert_eq!(schema.supported_op_types, [OpType::Conv2d]);
        let model = Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["Linear"], "sparsity": 0.5}]"#).unwrap();
        let err = pruner
            .resolve(&model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config_list[0]"), "{err}");
        assert!(err.contains("ActivationMeanRankFilterPruner"), "{err}");
        assert!(err.contains("`Linear`"), "{err}");
        assert!(err.contains("supported: Conv2d"), "{err}");
    }

    #[test]
    fn check_rejects_a_conv_with_no_activation_after_it() {
        let pruner = ActivationAPoZRankFilterPruner::default();
        // resnet8: a block's second conv goes conv → bn → add → relu.
        let model = Model::new("resnet8", 10, &Device::Cpu, 0).unwrap();
        let config = ConfigList::from_json_str(
            r#"[{"op_names": ["stack1.block1.conv"], "sparsity": 0.5},
                {"op_names": ["stack1.block2.conv"], "sparsity": 0.5}]"#,
        )
        .unwrap();
        let err = pruner
            .resolve(&model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&config.source), "{err}");
        assert!(err.contains("config_list[1]"), "{err}");
        assert!(err.contains("`stack1.block2.conv`"), "{err}");
        assert!(err.contains("not followed by a ReLU or ReLU6"), "{err}");
        assert!(err.contains("stack1.block2.bn"), "{err}");

        // The first conv of a block (conv → bn → relu) and DS-CNN's pointwise convs pass.
        let ok = ConfigList::from_json_str(
            r#"[{"op_names": ["stem.conv", "stack1.block1.conv"], "sparsity": 0.5}]"#,
        )
        .unwrap();
        assert_eq!(pruner.resolve(&model.graph, &ok).unwrap().len(), 2);
        let dscnn = Model::new("dscnn", 10, &Device::Cpu, 0).unwrap();
        let pw = ConfigList::from_json_str(
            r#"[{"op_names": ["stem.conv", "block1.pw.conv"], "sparsity": 0.5}]"#,
        )
        .unwrap();
        assert_eq!(pruner.resolve(&dscnn.graph, &pw).unwrap().len(), 2);
        // Depthwise convs keep the filter pruners' refusal.
        let dw =
            ConfigList::from_json_str(r#"[{"op_names": ["block1.dw.conv"], "sparsity": 0.5}]"#)
                .unwrap();
        let err = pruner.resolve(&dscnn.graph, &dw).unwrap_err().to_string();
        assert!(err.contains("depthwise"), "{err}");
    }

    /// For each filter of `layer`: whether its weights and bias are all exactly zero.
    fn zero_filters(model: &Model, layer: &str) -> Vec<bool> {
        let node = model.graph.node(layer).unwrap();
        let w = node.layer.weight().unwrap();
        let filters = w.dim(0).unwrap();
        let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = node
            .layer
            .maskable_bias()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        w.chunks(w.len() / filters)
            .zip(b)
            .map(|(row, bias)| row.iter().all(|&v| v == 0.0) && bias == 0.0)
            .collect()
    }

    fn end_to_end<S: ActivationStatistic>() {
        let (train, _) = data::resolve(None).unwrap().load().unwrap();
        let train = train.subset(150);
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 5).unwrap();
        let mut pruner = ActivationRankFilterPruner::<S>::new(2);
        let images = collect_statistics(&mut pruner, &model, &train, 64, 5).unwrap();
        assert_eq!(images, 128, "{}", S::PRUNER);
        for conv in ["conv1", "conv2"] {
            assert_eq!(pruner.images_observed(conv), Some(128), "{}", S::PRUNER);
        }
        let ranks: Vec<Vec<f32>> = ["conv1", "conv2"]
            .iter()
            .map(|c| {
                let s = pruner.channel_statistics(c).unwrap();
                s.into_iter().map(S::rank).collect()
            })
            .collect();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#).unwrap();
        let layers = pruner.compress(&mut model.graph, &config).unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["conv1", "conv2"]);
        for ((conv, filters), ranks) in [("conv1", 6), ("conv2", 16)].into_iter().zip(&ranks) {
            let zeros = zero_filters(&model, conv);
            let pruned: Vec<usize> = (0..filters).filter(|&i| zeros[i]).collect();
            assert_eq!(pruned.len(), filters / 2, "{} {conv}", S::PRUNER);
            assert_eq!(
                pruned,
                channels_to_prune(ranks, 0.5),
                "{} {conv}",
                S::PRUNER
            );
            assert_eq!(pruned_filters(&model.graph.masks()[conv]), pruned);
            let bias_mask = model.graph.bias_masks()[conv].to_vec1::<f32>().unwrap();
            for (i, m) in bias_mask.into_iter().enumerate() {
                assert_eq!(m == 0.0, pruned.contains(&i), "{conv} bias mask {i}");
            }
        }
    }

    #[test]
    fn apoz_end_to_end_on_lenet5_zeroes_whole_filters() {
        end_to_end::<APoZ>();
    }

    #[test]
    fn mean_activation_end_to_end_on_lenet5_zeroes_whole_filters() {
        end_to_end::<MeanActivation>();
    }
}
