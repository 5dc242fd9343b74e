//! Fully connected layer, `y = x Wᵀ + b` as in PyTorch.

use candle_core::{Result, Tensor};
use candle_nn::{init, VarBuilder};

/// `Linear` with weight `[out, in]` and bias `[out]`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
    in_features: usize,
    out_features: usize,
}

impl Linear {
    /// Creates (or loads) `weight` and `bias` under `vb` with PyTorch's default init.
    pub fn new(in_features: usize, out_features: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(
            (out_features, in_features),
            "weight",
            init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let bound = 1.0 / (in_features as f64).sqrt();
        let bias = vb.get_with_hints(
            out_features,
            "bias",
            init::Init::Uniform {
                lo: -bound,
                up: bound,
            },
        )?;
        Ok(Self {
            weight,
            bias: Some(bias),
            in_features,
            out_features,
        })
    }

    /// A layer over given tensors (a graph rewrite's): weight `[out, in]`, bias `[out]`.
    pub fn from_parts(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_features, in_features) = weight.dims2()?;
        Ok(Self {
            weight,
            bias,
            in_features,
            out_features,
        })
    }

    pub fn in_features(&self) -> usize {
        self.in_features
    }
    pub fn out_features(&self) -> usize {
        self.out_features
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The product with `weight` standing in for the stored one (masks, fake quantization).
    pub fn forward_with(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = x.matmul(&weight.t()?)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

impl candle_core::Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight, self.bias.as_ref())
    }
}
