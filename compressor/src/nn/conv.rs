//! 2-D convolution (NCHW), with stride, symmetric zero padding and groups (depthwise when
//! `groups == in_channels`).

use candle_core::{Result, Tensor};
use candle_nn::{init, VarBuilder};

/// Hyper-parameters of a [`Conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel_size: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub bias: bool,
}

impl Conv2dConfig {
    /// A plain convolution: stride 1, no padding, one group, with bias.
    pub fn new(in_channels: usize, out_channels: usize, kernel_size: usize) -> Self {
        Self {
            in_channels,
            out_channels,
            kernel_size,
            stride: 1,
            padding: 0,
            groups: 1,
            bias: true,
        }
    }
    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }
    pub fn padding(self, padding: usize) -> Self {
        Self { padding, ..self }
    }
    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }
    pub fn no_bias(self) -> Self {
        Self {
            bias: false,
            ..self
        }
    }
    /// Depthwise: one filter per input channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.in_channels && self.out_channels == self.in_channels
    }
    /// Output spatial size for an input of `size` pixels.
    pub fn output_size(&self, size: usize) -> usize {
        (size + 2 * self.padding - self.kernel_size) / self.stride + 1
    }
}

/// `Conv2d` as in PyTorch: weight `[out, in / groups, k, k]`, optional bias `[out]`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
}

impl Conv2d {
    /// Creates (or loads) `weight` and `bias` under `vb`, initialized as PyTorch does
    /// (Kaiming-uniform weights, uniform bias in ±1/sqrt(fan_in)).
    pub fn new(config: Conv2dConfig, vb: VarBuilder) -> Result<Self> {
        let fan_in = config.in_channels / config.groups * config.kernel_size * config.kernel_size;
        let shape = (
            config.out_channels,
            config.in_channels / config.groups,
            config.kernel_size,
            config.kernel_size,
        );
        let weight = vb.get_with_hints(shape, "weight", init::DEFAULT_KAIMING_UNIFORM)?;
        let bias = if config.bias {
            let bound = 1.0 / (fan_in as f64).sqrt();
            Some(vb.get_with_hints(
                config.out_channels,
                "bias",
                init::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
            )?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            config,
        })
    }

    /// A convolution over given tensors (a graph rewrite's); `config` must describe
    /// them, its `bias` flag follows `bias`.
    pub fn from_parts(config: Conv2dConfig, weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            config: Conv2dConfig {
                bias: bias.is_some(),
                ..config
            },
            weight,
            bias,
        }
    }

    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    /// Replaces the parameters (batch-norm folding gives a conv a bias it did not have).
    pub fn set_parameters(&mut self, weight: Tensor, bias: Option<Tensor>) {
        self.config.bias = bias.is_some();
        self.weight = weight;
        self.bias = bias;
    }

    /// The convolution with `weight` standing in for the stored one: masks and fake
    /// quantization hand in their transformed weight here.
    pub fn forward_with(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        super::cpu::conv2d(x, weight, bias, &self.config)
    }
}

impl candle_core::Module for Conv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight, self.bias.as_ref())
    }
}
