//! Masks and the invariant that pruned parameters are stored as exact zeros.

use candle_core::{DType, Tensor, Var};

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

/// Multiplies every masked parameter by its mask, in place, so pruned weights, biases and
/// batch-norm γ/β are exactly zero in checkpoints and exports and optimizer updates cannot
/// revive them.
pub fn apply_masks_to_weights(graph: &Graph) -> Result<()> {
    let targets = graph
        .masks()
        .iter()
        .map(|(name, m)| (graph.node(name).and_then(|n| n.layer.maskable_weight()), m))
        .chain(
            graph
                .bias_masks()
                .iter()
                .map(|(name, m)| (graph.node(name).and_then(|n| n.layer.maskable_bias()), m)),
        );
    for (param, mask) in targets {
        if let Some(param) = param {
            let var = Var::from_tensor(param)?;
            var.set(&(param * mask)?)?;
        }
    }
    Ok(())
}
