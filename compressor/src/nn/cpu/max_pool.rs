//! Max pooling on the CPU as candle custom ops. Its backward sends each window's gradient
//! to the window's first maximum, as PyTorch does (candle 0.11's own max-pool backward
//! scales it by the share of the window that ties for the maximum instead).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::storage::contiguous_f32;

/// Sizes of a max pool over `[batch, channels, height, width]` (no padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: usize,
    pub stride: usize,
}

impl PoolGeometry {
    fn out_height(&self) -> usize {
        (self.height - self.kernel) / self.stride + 1
    }
    fn out_width(&self) -> usize {
        (self.width - self.kernel) / self.stride + 1
    }
    fn plane(&self) -> usize {
        self.height * self.width
    }
    fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }
    /// Planes per parallel task: whole images, so tasks stay large enough to pay off.
    fn task_planes(&self) -> usize {
        self.channels.max(1)
    }

    /// Offsets in `plane` of window (`oy`, `ox`), row by row.
    #[inline]
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = usize> + '_ {
        let (y0, x0) = (oy * self.stride, ox * self.stride);
        (y0..y0 + self.kernel)
            .flat_map(move |y| y * self.width + x0..y * self.width + x0 + self.kernel)
    }

    /// The window's maximum; NaN if it holds one (as PyTorch's max pool does, so a
    /// diverging run still ends in a NaN loss that the training loop stops on).
    /// Branch-free: which element wins depends on the data, and branches on it
    /// mispredicted often enough to make pooling a fifth of a training step.
    #[inline]
    fn window_max(&self, plane: &[f32], oy: usize, ox: usize) -> f32 {
        let (mut max, mut nan) = (f32::NEG_INFINITY, false);
        for at in self.window(oy, ox) {
            max = max.max(plane[at]);
            nan |= plane[at].is_nan();
        }
        if nan {
            f32::NAN
        } else {
            max
        }
    }

    /// Offset in `plane` of the window's first maximum (its first NaN, if any).
    #[inline]
    fn window_argmax(&self, plane: &[f32], oy: usize, ox: usize) -> usize {
        let max = self.window_max(plane, oy, ox);
        if max.is_nan() {
            return self
                .window(oy, ox)
                .find(|&at| plane[at].is_nan())
                .unwrap_or(0);
        }
        // Keep the first offset that holds the maximum; arithmetic, not branches.
        let mut first = usize::MAX;
        for at in self.window(oy, ox) {
            let take = usize::from((plane[at] == max) & (first == usize::MAX));
            first = take * at + (1 - take) * first;
        }
        first
    }
}

/// `y = max_pool(x)`.
pub struct MaxPoolForward(pub PoolGeometry);

/// `dx`: each output gradient added at its window's first maximum in `x`.
pub struct MaxPoolGrad(pub PoolGeometry);

impl CustomOp1 for MaxPoolForward {
    fn name(&self) -> &'static str {
        "sprig-max-pool2d"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut y = vec![0.0f32; g.batch * g.channels * g.out_plane()];
        y.par_chunks_mut(g.task_planes() * g.out_plane())
            .zip(x.par_chunks(g.task_planes() * g.plane()))
            .for_each(|(ys, xs)| {
                for (y, x) in ys
                    .chunks_exact_mut(g.out_plane())
                    .zip(xs.chunks_exact(g.plane()))
                {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            y[oy * ow + ox] = g.window_max(x, oy, ox);
                        }
                    }
                }
            });
        Ok((
            CpuStorage::F32(y),
            Shape::from((g.batch, g.channels, oh, ow)),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &dy.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
}

impl CustomOp2 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "sprig-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let dy = contiguous_f32(dys, dyl, self.name())?;
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut dx = vec![0.0f32; x.len()];
        dx.par_chunks_mut(g.task_planes() * g.plane())
            .zip(x.par_chunks(g.task_planes() * g.plane()))
            .zip(dy.par_chunks(g.task_planes() * g.out_plane()))
            .for_each(|((dxs, xs), dys)| {
                let planes = dxs
                    .chunks_exact_mut(g.plane())
                    .zip(xs.chunks_exact(g.plane()));
                for ((dx, x), dy) in planes.zip(dys.chunks_exact(g.out_plane())) {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            dx[g.window_argmax(x, oy, ox)] += dy[oy * ow + ox];
                        }
                    }
                }
            });
        Ok((
            CpuStorage::F32(dx),
            Shape::from((g.batch, g.channels, g.height, g.width)),
        ))
    }
}
