//! `[N, C, H, W] -> [N, C·H·W]`, in PyTorch's (channel-major) order.

use candle_core::{Result, Tensor};

#[derive(Debug, Clone, Copy, Default)]
pub struct Flatten;

impl candle_core::Module for Flatten {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.flatten_from(1)
    }
}
