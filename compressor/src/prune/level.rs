//! NNI's `LevelPruner`: in each selected layer, zero the `sparsity` fraction of weights
//! with the smallest magnitude (exactly `round(sparsity · n)` of them).

use candle_core::{DType, Tensor};

use super::{Mask, PruneTarget, Pruner, PrunerEntry};
use crate::config::{LayerConfig, Schema};
use crate::nn::OpType;
use crate::{Error, Result};

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "LevelPruner",
    aliases: &[],
    stage_keys: &[],
    make: |_| Ok(Box::new(LevelPruner)),
};

/// Fine-grained magnitude pruning.
#[derive(Debug, Clone, Copy, Default)]
pub struct LevelPruner;

impl Pruner for LevelPruner {
    fn name(&self) -> &'static str {
        "LevelPruner"
    }

    /// Magnitudes compare across layers, so `total_sparsity` ranks them globally.
    fn schema(&self) -> Schema {
        Schema::pruning(self.name(), [OpType::Conv2d, OpType::Linear]).with_global_sparsity()
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let sparsity = config.sparsity.ok_or_else(|| Error::Layer {
            layer: layer.name.to_string(),
            message: "LevelPruner needs a sparsity".into(),
        })?;
        let magnitudes = layer
            .weight
            .abs()?
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        Ok(Mask::new(magnitude_mask(
            &magnitudes,
            sparsity,
            layer.weight,
        )?))
    }
}

/// A mask pruning the `round(sparsity · n)` smallest magnitudes (ties by position).
pub(crate) fn magnitude_mask(magnitudes: &[f32], sparsity: f64, like: &Tensor) -> Result<Tensor> {
    let n = magnitudes.len();
    let prune = ((sparsity * n as f64).round() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| magnitudes[a].total_cmp(&magnitudes[b]).then(a.cmp(&b)));
    let mut keep = vec![1f32; n];
    for &i in &order[..prune] {
        keep[i] = 0.0;
    }
    Ok(Tensor::from_vec(keep, like.shape(), like.device())?.to_dtype(like.dtype())?)
}
