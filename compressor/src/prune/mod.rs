//! Pruners in NNI's shape: `calc_mask` decides which weights of one layer go; the
//! provided methods resolve the `config_list`, attach masks and keep pruned weights at
//! exactly zero.

mod level;
mod mask;

pub use level::LevelPruner;
pub use mask::{apply_masks_to_weights, sparsity_of, Mask};

use candle_core::Tensor;

use crate::config::{ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

/// The layer a pruner is asked about.
#[derive(Debug, Clone, Copy)]
pub struct PruneTarget<'a> {
    pub name: &'a str,
    pub op_type: OpType,
    /// The current stored weight (already zero where an earlier mask pruned it).
    pub weight: &'a Tensor,
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

    /// Resolves `config` against `graph`, computes every selected layer's mask, attaches
    /// the masks and zeroes the pruned weights. Returns the resolved layers.
    fn compress(&mut self, graph: &mut Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let layers = config.resolve(&graph.layer_infos(), &self.schema())?;
        for layer in &layers {
            let node = graph.node(&layer.name).ok_or_else(|| Error::Layer {
                layer: layer.name.clone(),
                message: "not in the graph".into(),
            })?;
            let weight = node.layer.weight().ok_or_else(|| Error::Layer {
                layer: layer.name.clone(),
                message: format!("{} has no weight to prune", node.layer.op_type()),
            })?;
            let target = PruneTarget {
                name: &layer.name,
                op_type: node.layer.op_type(),
                weight,
            };
            let mask = self.calc_mask(&target, layer)?;
            if mask.tensor().dims() != weight.dims() {
                return Err(Error::Layer {
                    layer: layer.name.clone(),
                    message: format!(
                        "{} returned a mask of shape {:?} for a weight of shape {:?}",
                        self.name(),
                        mask.tensor().dims(),
                        weight.dims()
                    ),
                });
            }
            graph.set_mask(&layer.name, mask.into_tensor());
        }
        apply_masks_to_weights(graph)?;
        Ok(layers)
    }

    /// Called at the start of each fine-tuning epoch (schedules such as AGP use it).
    fn update_epoch(&mut self, _epoch: usize, _graph: &mut Graph) -> Result<()> {
        Ok(())
    }

    /// Called after each optimizer step.
    fn step(&mut self, _graph: &mut Graph) -> Result<()> {
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
