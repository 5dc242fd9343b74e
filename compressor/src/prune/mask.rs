//! Masks and the invariant that pruned parameters are stored as exact zeros.

use candle_core::{DType, Tensor};

use crate::nn::Graph;
use crate::Result;

/// What a pruner decides for one layer: a 0/1 tensor the shape of its weight (a Conv2d or
/// Linear weight, or a BatchNorm2d's γ), and for structured pruners one for its bias (β).
#[derive(Debug, Clone)]
pub struct Mask {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Mask {
    /// Wraps a tensor of 0.0 / 1.0 values (in the weight's dtype) for the weight only.
    pub fn new(weight: Tensor) -> Self {
        Self { weight, bias: None }
    }
    /// A weight mask and a bias mask (filter pruners remove a channel's bias with it).
    pub fn with_bias(weight: Tensor, bias: Tensor) -> Self {
        Self {
            weight,
            bias: Some(bias),
        }
    }
    /// A mask keeping everything.
    pub fn ones_like(weight: &Tensor) -> Result<Self> {
        Ok(Self::new(weight.ones_like()?))
    }
    pub fn tensor(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    pub fn into_tensor(self) -> Tensor {
        self.weight
    }
    pub fn into_parts(self) -> (Tensor, Option<Tensor>) {
        (self.weight, self.bias)
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

/// Multiplies every masked parameter by its mask, in place
/// ([`Graph::apply_masks_to_weights`]; the graph owns its masks).
pub fn apply_masks_to_weights(graph: &Graph) -> Result<()> {
    Ok(graph.apply_masks_to_weights()?)
}
