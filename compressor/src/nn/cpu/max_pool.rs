//! Max pooling on the CPU as candle custom ops. Its backward sends each window's gradient
//! to the window's first maximum, as PyTorch does (candle 0.11's own max-pool backward
//! scales it by the share of the window that ties for the maximum instead).

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
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
    /// The 2×2, stride-2 pool (LeNet-5's), which has a kernel of its own.
    fn is_2x2(&self) -> bool {
        self.kernel == 2 && self.stride == 2
    }
    /// Planes per parallel task: whole images, so tasks stay large enough to pay off.
    fn task_planes(&self) -> usize {
        self.channels.max(1)
    }

    /// The rows of window (`oy`, `ox`), each with the offset in `plane` of its first
    /// element.
    #[inline]
    fn window_rows<'p>(
        &self,
        plane: &'p [f32],
        oy: usize,
        ox: usize,
    ) -> impl Iterator<Item = (usize, &'p [f32])> + use<'p, '_> {
        let (y0, x0) = (oy * self.stride, ox * self.stride);
        (y0..y0 + self.kernel).map(move |y| {
            let start = y * self.width + x0;
            (start, &plane[start..start + self.kernel])
        })
    }

    /// The window's maximum; NaN if it holds one (as PyTorch's max pool does, so a
    /// diverging run still ends in a NaN loss that the training loop stops on).
    /// Branch-free: which element wins depends on the data, and branches on it
    /// mispredicted often enough to make pooling a fifth of a training step.
    #[inline]
    fn window_max(&self, plane: &[f32], oy: usize, ox: usize) -> f32 {
        let (mut max, mut nan) = (f32::NEG_INFINITY, false);
        for (_, row) in self.window_rows(plane, oy, ox) {
            for &v in row {
                max = max.max(v);
                nan |= v.is_nan();
            }
        }
        if nan {
            f32::NAN
        } else {
            max
        }
    }

    /// Offset in `plane` of the window's first element equal to `max` (the window's
    /// maximum, as the forward pass computed it; its first NaN if `max` is NaN).
    #[inline]
    fn window_argmax(&self, plane: &[f32], oy: usize, ox: usize, max: f32) -> usize {
        let is_max = |v: f32| if max.is_nan() { v.is_nan() } else { v == max };
        // Keep the first offset that holds the maximum; arithmetic, not branches.
        let mut first = usize::MAX;
        for (start, row) in self.window_rows(plane, oy, ox) {
            for (at, &v) in (start..).zip(row) {
                let take = usize::from(is_max(v) & (first == usize::MAX));
                first = take * at + (1 - take) * first;
            }
        }
        first
    }
}

/// 2×2 windows at stride 2 over one plane of width `width`: the window of output
/// (`oy`, `ox`) is `[a0, a1]` from input row `2·oy` and `[b0, b1]` from row `2·oy + 1`.
fn windows_2x2<'a>(
    x: &'a [f32],
    width: usize,
    oy: usize,
    ow: usize,
) -> impl Iterator<Item = [f32; 4]> + 'a {
    let row0 = &x[2 * oy * width..2 * oy * width + 2 * ow];
    let row1 = &x[(2 * oy + 1) * width..(2 * oy + 1) * width + 2 * ow];
    row0.chunks_exact(2)
        .zip(row1.chunks_exact(2))
        .map(|(a, b)| [a[0], a[1], b[0], b[1]])
}

/// The maximum of four, NaN if any is NaN (see [`PoolGeometry::window_max`]).
#[inline]
fn max4(v: [f32; 4]) -> f32 {
    let nan = v[0].is_nan() | v[1].is_nan() | v[2].is_nan() | v[3].is_nan();
    if nan {
        f32::NAN
    } else {
        v[0].max(v[1]).max(v[2].max(v[3]))
    }
}

fn max_2x2(x: &[f32], width: usize, oh: usize, ow: usize, y: &mut [f32]) {
    for oy in 0..oh {
        for (out, v) in y[oy * ow..(oy + 1) * ow]
            .iter_mut()
            .zip(windows_2x2(x, width, oy, ow))
        {
            *out = max4(v);
        }
    }
}

/// The windows do not overlap, so each one writes its four gradient entries outright
/// (the maximum's gets `dy`, the others zero) in row order, instead of a scattered add.
/// The maximum is the forward pass's output `y`, not recomputed: the window's elements
/// equal to it form a 4-bit mask whose lowest set bit (`h & −h`) is the first maximum.
fn max_2x2_grad(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    width: usize,
    oh: usize,
    ow: usize,
    dx: &mut [f32],
) {
    for oy in 0..oh {
        let (upper, lower) = dx[2 * oy * width..(2 * oy + 2) * width].split_at_mut(width);
        let outs = upper[..2 * ow]
            .chunks_exact_mut(2)
            .zip(lower[..2 * ow].chunks_exact_mut(2));
        let windows = windows_2x2(x, width, oy, ow);
        let rows = y[oy * ow..(oy + 1) * ow]
            .iter()
            .zip(&dy[oy * ow..(oy + 1) * ow]);
        for (((up, low), v), (&max, &grad)) in outs.zip(windows).zip(rows) {
            let max_is_nan = max.is_nan();
            let hit = |v: f32| u32::from((v == max) | (max_is_nan & v.is_nan()));
            let hits = hit(v[0]) | hit(v[1]) << 1 | hit(v[2]) << 2 | hit(v[3]) << 3;
            let first = hits & hits.wrapping_neg();
            // Bit masks, not selects: the compiler turned selects into branches, which
            // mispredicted.
            let keep =
                |bit: u32| f32::from_bits(grad.to_bits() & (first >> bit & 1).wrapping_neg());
            up[0] = keep(0);
            up[1] = keep(1);
            low[0] = keep(2);
            low[1] = keep(3);
        }
    }
}

/// `y = max_pool(x)`.
pub struct MaxPoolForward(pub PoolGeometry);

/// `dx` from `(x, y, dy)`: each output gradient added at its window's first element
/// equal to the forward output `y`, i.e. the window's first maximum in `x`.
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
                    if g.is_2x2() {
                        max_2x2(x, g.width, oh, ow, y);
                        continue;
                    }
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

    fn bwd(&self, x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op3_no_bwd(
            y,
            &dy.contiguous()?,
            &MaxPoolGrad(self.0),
        )?))
    }
}

impl CustomOp3 for MaxPoolGrad {
    fn name(&self) -> &'static str {
        "sprig-max-pool2d-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ys: &CpuStorage,
        yl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let y = contiguous_f32(ys, yl, self.name())?;
        let dy = contiguous_f32(dys, dyl, self.name())?;
        let (oh, ow) = (g.out_height(), g.out_width());
        let mut dx = vec![0.0f32; x.len()];
        let out_chunk = g.task_planes() * g.out_plane();
        dx.par_chunks_mut(g.task_planes() * g.plane())
            .zip(x.par_chunks(g.task_planes() * g.plane()))
            .zip(y.par_chunks(out_chunk).zip(dy.par_chunks(out_chunk)))
            .for_each(|((dxs, xs), (ys, dys))| {
                let planes = dxs
                    .chunks_exact_mut(g.plane())
                    .zip(xs.chunks_exact(g.plane()));
                let outs = ys
                    .chunks_exact(g.out_plane())
                    .zip(dys.chunks_exact(g.out_plane()));
                for ((dx, x), (y, dy)) in planes.zip(outs) {
                    if g.is_2x2() {
                        max_2x2_grad(x, y, dy, g.width, oh, ow, dx);
                        continue;
                    }
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let at = oy * ow + ox;
                            dx[g.window_argmax(x, oy, ox, y[at])] += dy[at];
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
