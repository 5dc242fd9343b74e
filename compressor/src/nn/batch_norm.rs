//! 2-D batch normalization over NCHW, with running statistics kept as variables so they
//! are checkpointed and exported with the weights.

use candle_core::{DType, Result, Tensor, Var, D};
use candle_nn::{init, VarBuilder};

/// PyTorch's defaults.
pub const BATCH_NORM_EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

/// `BatchNorm2d`: `weight` (γ), `bias` (β), `running_mean`, `running_var`.
#[derive(Debug, Clone)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    num_features: usize,
}

impl BatchNorm2d {
    pub fn new(num_features: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(num_features, "weight", init::Init::Const(1.0))?;
        let bias = vb.get_with_hints(num_features, "bias", init::Init::Const(0.0))?;
        let running_mean =
            vb.get_with_hints(num_features, "running_mean", init::Init::Const(0.0))?;
        let running_var = vb.get_with_hints(num_features, "running_var", init::Init::Const(1.0))?;
        Ok(Self {
            weight,
            bias,
            running_mean: Var::from_tensor(&running_mean)?,
            running_var: Var::from_tensor(&running_var)?,
            num_features,
        })
    }

    /// A batch norm over given tensors (a graph rewrite's), all `[C]`. Running statistics
    /// that are variables stay those variables, so updates reach their owner.
    pub fn from_parts(
        weight: Tensor,
        bias: Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
    ) -> Result<Self> {
        Ok(Self {
            num_features: weight.dim(0)?,
            weight,
            bias,
            running_mean: Var::from_tensor(running_mean)?,
            running_var: Var::from_tensor(running_var)?,
        })
    }

    pub fn num_features(&self) -> usize {
        self.num_features
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }
    pub fn running_mean(&self) -> &Tensor {
        self.running_mean.as_tensor()
    }
    pub fn running_var(&self) -> &Tensor {
        self.running_var.as_tensor()
    }

    /// The per-channel affine map `y = x·scale + shift` this layer applies in eval mode.
    pub fn eval_scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let inv_std = (self.running_var.as_tensor() + BATCH_NORM_EPS)?
            .sqrt()?
            .recip()?;
        let scale = (&self.weight * inv_std)?;
        let shift = (&self.bias - (self.running_mean.as_tensor() * &scale)?)?;
        Ok((scale, shift))
    }

    /// Training mode normalizes with the batch statistics and updates the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.num_features;
        let (scale, shift) = if train {
            let x32 = x.to_dtype(DType::F32)?;
            let per_channel = x32.transpose(0, 1)?.flatten_from(1)?; // [C, N*H*W]
            let n = per_channel.dim(D::Minus1)? as f64;
            let mean = per_channel.mean(D::Minus1)?;
            let centered = per_channel.broadcast_sub(&mean.unsqueeze(1)?)?;
            let var = centered.sqr()?.mean(D::Minus1)?;
            let unbiased = (&var * (n / (n - 1.0).max(1.0)))?;
            self.running_mean.set(
                &((self.running_mean.as_tensor() * (1.0 - MOMENTUM))?
                    + (mean.detach() * MOMENTUM)?)?,
            )?;
            self.running_var.set(
                &((self.running_var.as_tensor() * (1.0 - MOMENTUM))?
                    + (unbiased.detach() * MOMENTUM)?)?,
            )?;
            let inv_std = (var + BATCH_NORM_EPS)?.sqrt()?.recip()?;
            let scale = (&self.weight * inv_std)?;
            let shift = (&self.bias - (mean * &scale)?)?;
            (scale, shift)
        } else {
            self.eval_scale_shift()?
        };
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}
