//! CPU kernels for the layers that dominate training time (`docs/training-profile.md`):
//! convolution (im2col + the `gemm` crate, batch spread over rayon's threads), max
//! pooling and ReLU, as candle custom ops whose `bwd` keeps candle's autograd working. The
//! dispatchers below use them for contiguous-able `f32` tensors on the CPU and hand
//! every other case (CUDA, other dtypes, shapes they do not cover) to candle's own ops.

mod conv2d;
mod gemm;
mod geometry;
mod im2col;
mod max_pool;
mod relu;
mod storage;

use candle_core::{DType, Result, Tensor};

use crate::nn::Conv2dConfig;
use conv2d::Conv2dForward;
use geometry::ConvGeometry;
use max_pool::{MaxPoolForward, PoolGeometry};
use relu::ReluForward;

fn on_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// `x.conv2d(weight, padding, stride, 1, groups)` plus `bias` (`[out_channels]`) per channel.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    config: &Conv2dConfig,
) -> Result<Tensor> {
    let geometry = match x.dims4() {
        Ok((n, c, h, w)) if c == config.in_channels => ConvGeometry::new(config, [n, c, h, w]),
        _ => None,
    };
    let expected_weight = [
        config.out_channels,
        config.in_channels / config.groups.max(1),
        config.kernel_size,
        config.kernel_size,
    ];
    match geometry {
        Some(g)
            if on_cpu_f32(x)
                && on_cpu_f32(weight)
                && g.stride > 0
                && g.groups > 0
                && g.in_channels % g.groups == 0
                && g.out_channels % g.groups == 0
                && g.image_len() > 0
                && g.out_image_len() > 0
                && weight.dims() == expected_weight
                && bias.is_none_or(|b| on_cpu_f32(b) && b.dims() == [g.out_channels]) =>
        {
            let (x, weight) = (x.contiguous()?, weight.contiguous()?);
            match bias {
                Some(b) => x.apply_op3(&weight, &b.contiguous()?, Conv2dForward(g)),
                None => x.apply_op2(&weight, Conv2dForward(g)),
            }
        }
        _ => {
            let y = x.conv2d(weight, config.padding, config.stride, 1, config.groups)?;
            match bias {
                Some(b) => y.broadcast_add(&b.reshape((1, config.out_channels, 1, 1))?),
                None => Ok(y),
            }
        }
    }
}

/// `x.max_pool2d_with_stride(kernel, stride)`.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize) -> Result<Tensor> {
    match x.dims4() {
        Ok((batch, channels, height, width))
            if on_cpu_f32(x) && kernel > 0 && stride > 0 && kernel <= height && kernel <= width =>
        {
            let g = PoolGeometry {
                batch,
                channels,
                height,
                width,
                kernel,
                stride,
            };
            x.contiguous()?.apply_op1(MaxPoolForward(g))
        }
        _ => x.max_pool2d_with_stride(kernel, stride),
    }
}

/// `x.relu()`, with the gradient PyTorch uses (zero at `x == 0`; candle passes it).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if on_cpu_f32(x) {
        x.contiguous()?.apply_op1(ReluForward)
    } else {
        x.relu()
    }
}

#[cfg(test)]
mod tests;
