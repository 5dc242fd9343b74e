//! Element-wise activations. On export they fuse into the producing layer as an int8 clamp.

use candle_core::{Result, Tensor};

/// `max(x, 0)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReLU;

/// `min(max(x, 0), 6)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReLU6;

impl candle_core::Module for ReLU {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::cpu::relu(x)
    }
}

impl candle_core::Module for ReLU6 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.clamp(0f32, 6f32)
    }
}
