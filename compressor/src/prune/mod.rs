//! Pruners in NNI's shape: `calc_mask` decides which weights of one layer go; the
//! provided methods resolve the `config_list`, attach masks and keep pruned weights at
//! exactly zero.
//!
//! Beyond `calc_mask`, the trait carries the hooks NNI's algorithms need from a training
//! loop, each a no-op by default (see `docs/ARCHITECTURE.md`, "Pruning hooks"):
//!
//! | hook | called | used by |
//! |------|--------|---------|
//! | [`Pruner::check`] | before any training, with the resolved layers | every pruner (plan errors up front) |
//! | [`Pruner::on_init`] | once, with the freshly initialized model | Lottery Ticket (rewind point) |
//! | [`Pruner::statistics_batches`] / [`Pruner::observe`] | forward passes over training batches before `compress` | APoZ, mean activation |
//! | [`Pruner::regularizer`] | added to every training loss | Network Slimming (L1 on γ) |
//! | [`Pruner::schedule_epochs`] / [`Pruner::schedule_steps`] | before any training | AGP (enough `--ft-epochs`) |
//! | [`Pruner::update_epoch`] / [`Pruner::step`] | start of each epoch / after each optimizer step, with the gradients | AGP |
//! | [`Pruner::rounds`] / [`Pruner::start_round`] | between fine-tuning rounds | Lottery Ticket |
//! | [`Pruner::state`] / [`Pruner::load_state`] | saved in and restored from every checkpoint | schedules |

mod activation_rank;
mod agp;
mod channels;
mod fpgm;
mod level;
mod lottery_ticket;
mod mask;
mod norm_filter;
mod registry;
mod slim;
mod statistics;

pub use activation_rank::{
    APoZ, ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
    ActivationRankFilterPruner, ActivationStatistic, MeanActivation, DEFAULT_STATISTICS_BATCHES,
};
pub use agp::{agp_sparsity, agp_step_sparsity, AgpPruner, AgpSchedule, StepSchedule};
pub use channels::{channel_mask, channels_to_prune, filter_pruner_check};
pub use fpgm::FPGMPruner;
pub use level::LevelPruner;
pub use lottery_ticket::{round_sparsity, LotteryTicketPruner};
pub use mask::{apply_masks_to_weights, sparsity_of, Mask};
pub use norm_filter::{L1FilterPruner, L2FilterPruner, NormFilterPruner};
pub use registry::{PrunerEntry, PrunerFactory, Registry, StageOptions, SPEEDUP};
pub use slim::{global_channels_to_prune, SlimPruner};
pub use statistics::collect_statistics;

use candle_core::backprop::GradStore;
use candle_core::Tensor;

use crate::config::{ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

/// The layer a pruner is asked about.
#[derive(Debug, Clone, Copy)]
pub struct PruneTarget<'a> {
    pub name: &'a str,
    pub op_type: OpType,
    /// The current stored weight (already zero where an earlier mask pruned it); a batch
    /// norm's γ.
    pub weight: &'a Tensor,
    /// The layer's bias (a batch norm's β), if it has one.
    pub bias: Option<&'a Tensor>,
}

impl<'a> PruneTarget<'a> {
    /// A target with a weight and no bias.
    pub fn new(name: &'a str, op_type: OpType, weight: &'a Tensor) -> Self {
        Self {
            name,
            op_type,
            weight,
            bias: None,
        }
    }
}

/// A pruning algorithm.
pub trait Pruner {
    /// The algorithm's name as in NNI.
    fn name(&self) -> &'static str;

    /// Which op types and extra keys its `config_list` accepts (default: Conv2d and
    /// Linear, no extra keys).
    fn schema(&self) -> Schema {
        Schema::pruning(self.name(), vec![OpType::Conv2d, OpType::Linear])
    }

    /// The mask for one layer: same shape as its weight, 1.0 keeps and 0.0 prunes.
    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask>;

    /// Checks the resolved layers against the graph before anything trains (a filter
    /// pruner pointed at a Linear, a schedule that ends before it starts). `source` names
    /// the config list for messages.
    fn check(&self, _graph: &Graph, _layers: &[LayerConfig], _source: &str) -> Result<()> {
        Ok(())
    }

    /// Resolves `config` against `graph` and runs [`Pruner::check`]: the plan's errors,
    /// before any training.
    fn resolve(&self, graph: &Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let mut layers = config.resolve(&graph.layer_infos(), &self.schema())?;
        // `total_sparsity` (schemas that allow it): one magnitude ranking over the
        // dict's layers turns into each layer's sparsity.
        if config.has_global_sparsity(&layers) {
            config.allocate_global(&mut layers, |l| weight_magnitudes(graph, &l.name))?;
        }
        self.check(graph, &layers, &config.source)?;
        Ok(layers)
    }

    /// Resolves `config` against `graph`, computes every selected layer's mask, attaches
    /// the masks and zeroes the pruned weights. Returns the resolved layers.
    fn compress(&mut self, graph: &mut Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let layers = self.resolve(graph, config)?;
        mask_layers(self, graph, &layers)?;
        Ok(layers)
    }

    /// Called once with the freshly initialized model, before the baseline trains or
    /// `--weights` are loaded (NNI builds its pruners on the untrained model).
    fn on_init(&mut self, _graph: &Graph) -> Result<()> {
        Ok(())
    }

    /// How many training batches of activation statistics `compress` needs (0: none).
    fn statistics_batches(&self) -> usize {
        0
    }

    /// One node's output during the statistics pass (an eval-mode forward over training
    /// batches, run by [`collect_statistics`] before `compress`).
    fn observe(&mut self, _graph: &Graph, _node: usize, _output: &Tensor) -> Result<()> {
        Ok(())
    }

    /// A term added to the training loss (scalar), e.g. Network Slimming's λ·Σ|γ|.
    fn regularizer(&self, _graph: &Graph) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// A short tag when the baseline must train with [`Pruner::regularizer`] (sparsity
    /// training before pruning); it keys the baseline cache. `None`: a plain baseline.
    fn baseline_tag(&self) -> Option<String> {
        None
    }

    /// Fine-tuning epochs the pruner's schedule needs to reach its final sparsity for
    /// these resolved layers (0: no schedule). The pipeline refuses fewer `--ft-epochs`.
    fn schedule_epochs(&self, _layers: &[LayerConfig]) -> usize {
        0
    }

    /// Optimizer steps the pruner's per-step schedule needs (0: none); the pipeline refuses
    /// fewer fine-tuning steps.
    fn schedule_steps(&self, _layers: &[LayerConfig]) -> usize {
        0
    }

    /// Called at the start of each fine-tuning epoch (schedules such as AGP use it).
    fn update_epoch(&mut self, _epoch: usize, _graph: &mut Graph) -> Result<()> {
        Ok(())
    }

    /// Called after each optimizer step, with that step's gradients.
    fn step(&mut self, _graph: &mut Graph, _grads: &GradStore) -> Result<()> {
        Ok(())
    }

    /// Fine-tuning rounds (Lottery Ticket's `prune_iterations`); 1 for one-shot pruners.
    fn rounds(&self) -> usize {
        1
    }

    /// Prepares round `round` (1-based after the first): recompute masks, rewind weights.
    fn start_round(&mut self, _round: usize, _graph: &mut Graph) -> Result<()> {
        Ok(())
    }

    /// The pruner's own state, saved in every checkpoint so `--resume` is exact.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restores what [`Pruner::state`] saved.
    fn load_state(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// Writes NNI's three files: weights with pruned entries zeroed, the masks, and
    /// (if `onnx_path` is given) an ONNX model for `input_shape` (`[N, C, H, W]`).
    fn export_model(
        &self,
        graph: &Graph,
        model_path: &std::path::Path,
        mask_path: &std::path::Path,
        onnx_path: Option<&std::path::Path>,
        input_shape: [usize; 4],
    ) -> Result<()> {
        crate::export::export_model(graph, model_path, mask_path, onnx_path, input_shape)
    }
}

/// |w| of layer `name`'s prunable weight, flattened.
fn weight_magnitudes(graph: &Graph, name: &str) -> Result<Vec<f32>> {
    let weight = graph
        .node(name)
        .and_then(|n| n.layer.maskable_weight())
        .ok_or_else(|| Error::Layer {
            layer: name.to_string(),
            message: "has no weight to prune".into(),
        })?;
    Ok(weight
        .abs()?
        .flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

/// Computes `pruner`'s mask for every layer of `layers`, attaches them and zeroes the
/// pruned parameters: the body of [`Pruner::compress`], for pruners that override it.
pub fn mask_layers<P: Pruner + ?Sized>(
    pruner: &mut P,
    graph: &mut Graph,
    layers: &[LayerConfig],
) -> Result<()> {
    attach_masks(pruner, graph, layers)?;
    apply_masks_to_weights(graph)
}

/// Computes `pruner`'s mask for every layer of `layers` and attaches them, leaving the
/// parameters as they are (the forward pass applies masks): for a graph whose variables
/// another graph shares.
pub fn attach_masks<P: Pruner + ?Sized>(
    pruner: &mut P,
    graph: &mut Graph,
    layers: &[LayerConfig],
) -> Result<()> {
    for layer in layers {
        let mask = {
            let node = graph.node(&layer.name).ok_or_else(|| Error::Layer {
                layer: layer.name.clone(),
                message: "not in the graph".into(),
            })?;
            let weight = node.layer.maskable_weight().ok_or_else(|| Error::Layer {
                layer: layer.name.clone(),
                message: format!("{} has no weight to prune", node.layer.op_type()),
            })?;
            let target = PruneTarget {
                name: &layer.name,
                op_type: node.layer.op_type(),
                weight,
                bias: node.layer.maskable_bias(),
            };
            pruner.calc_mask(&target, layer)?
        };
        attach_mask(graph, &layer.name, mask, pruner.name())?;
    }
    Ok(())
}

/// Attaches `mask` to layer `name` after checking its shapes against the layer's
/// parameters (`algorithm` names the pruner in the error).
pub fn attach_mask(graph: &mut Graph, name: &str, mask: Mask, algorithm: &str) -> Result<()> {
    let node = graph.node(name).ok_or_else(|| Error::Layer {
        layer: name.to_string(),
        message: "not in the graph".into(),
    })?;
    let shape_error = |what: &str, mask: &Tensor, param: Option<&Tensor>| Error::Layer {
        layer: name.to_string(),
        message: format!(
            "{algorithm} returned a {what} mask of shape {:?} for a {what} of shape {:?}",
            mask.dims(),
            param.map(|p| p.dims().to_vec())
        ),
    };
    let weight = node.layer.maskable_weight();
    if weight.is_none_or(|w| w.dims() != mask.tensor().dims()) {
        return Err(shape_error("weight", mask.tensor(), weight));
    }
    let bias = node.layer.maskable_bias();
    if let Some(b) = mask.bias() {
        if bias.is_none_or(|p| p.dims() != b.dims()) {
            return Err(shape_error("bias", b, bias));
        }
    }
    let (weight, bias) = mask.into_parts();
    graph.set_mask(name, weight);
    if let Some(b) = bias {
        graph.set_bias_mask(name, b);
    }
    Ok(())
}
