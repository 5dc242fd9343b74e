//! Pooling over NCHW: max, average (no padding) and global average.

use candle_core::{Result, Tensor};

/// Window size and stride of a pooling layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dConfig {
    pub kernel_size: usize,
    pub stride: usize,
}

impl Pool2dConfig {
    pub fn output_size(&self, size: usize) -> usize {
        (size - self.kernel_size) / self.stride + 1
    }
}

/// `MaxPool2d`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d(pub Pool2dConfig);

/// `AvgPool2d`.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d(pub Pool2dConfig);

/// Global average pool, `AdaptiveAvgPool2d(1)` in PyTorch: `[N, C, H, W] -> [N, C, 1, 1]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GlobalAvgPool;

impl candle_core::Module for MaxPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::cpu::max_pool2d(x, self.0.kernel_size, self.0.stride)
    }
}

impl candle_core::Module for AvgPool2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.avg_pool2d_with_stride(self.0.kernel_size, self.0.stride)
    }
}

impl candle_core::Module for GlobalAvgPool {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.mean_keepdim(3)?.mean_keepdim(2)
    }
}
