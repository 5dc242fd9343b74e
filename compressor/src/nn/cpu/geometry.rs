//! The sizes of one 2-D convolution over a batch (NCHW, square kernel, symmetric zero
//! padding, dilation 1), as the im2col kernels and the GEMMs see them.

use crate::nn::Conv2dConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub groups: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub out_height: usize,
    pub out_width: usize,
}

impl ConvGeometry {
    /// The geometry of `config` applied to an input of `[batch, in_channels, height, width]`;
    /// `None` where the input is smaller than the (padded) kernel.
    pub fn new(config: &Conv2dConfig, input_dims: [usize; 4]) -> Option<Self> {
        let [batch, in_channels, height, width] = input_dims;
        let span = |size: usize| {
            (size + 2 * config.padding)
                .checked_sub(config.kernel_size)
                .map(|s| s / config.stride + 1)
        };
        Some(Self {
            batch,
            in_channels,
            out_channels: config.out_channels,
            groups: config.groups,
            height,
            width,
            kernel: config.kernel_size,
            stride: config.stride,
            padding: config.padding,
            out_height: span(height)?,
            out_width: span(width)?,
        })
    }

    /// Input channels each group reads.
    pub fn group_in(&self) -> usize {
        self.in_channels / self.groups
    }
    /// Output channels each group writes.
    pub fn group_out(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Rows of one group's column matrix: `group_in × kernel × kernel`.
    pub fn patch_len(&self) -> usize {
        self.group_in() * self.kernel * self.kernel
    }
    /// Output pixels per channel (columns of the column matrix).
    pub fn out_pixels(&self) -> usize {
        self.out_height * self.out_width
    }
    pub fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }
    pub fn out_image_len(&self) -> usize {
        self.out_channels * self.out_pixels()
    }
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }
    /// A 1×1, stride-1, unpadded convolution reads its input as the column matrix itself.
    pub fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}
