//! Weight masks and the invariant that pruned weights are stored as exact zeros.

use candle_core::{DType, Tensor, Var};

use crate::nn::Graph;
use crate::Result;

/// A 0/1 tensor the shape of a layer's weight.
#[derive(Debug, Clone)]
pub struct Mask(Tensor);

impl Mask {
    /// Wraps a tensor of 0.0 / 1.0 values (converted to the weight dtype by the caller).
    pub fn new(tensor: Tensor) -> Self {
        Self(tensor)
    }
    /// A mask keeping everything.
    pub fn ones_like(weight: &Tensor) -> Result<Self> {
        Ok(Self(weight.ones_like()?))
    }
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }
    pub fn into_tensor(self) -> Tensor {
        self.0
    }
}

/// Fraction of zeros in a tensor.
pub fn sparsity_of(t: &Tensor) -> Result<f64> {
    let zeros = t
        .eq(0f32)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as f64;
    Ok(zeros / t.elem_count().max(1) as f64)
}

/// Multiplies every masked layer's stored weight by its mask, in place, so pruned weights
/// are exactly zero in checkpoints and exports and optimizer updates cannot revive them.
pub fn apply_masks_to_weights(graph: &Graph) -> Result<()> {
    for (name, mask) in graph.masks() {
        if let Some(weight) = graph.node(name).and_then(|n| n.layer.weight()) {
            let var = Var::from_tensor(weight)?;
            var.set(&(weight * mask)?)?;
        }
    }
    Ok(())
}
