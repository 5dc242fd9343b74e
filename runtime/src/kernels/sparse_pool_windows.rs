//! Sparse conv + max pool a pool window at a time, pooled before it is requantized.
//!
//! With few nonzero weights per output, the per-pixel work of the general fused kernel
//! (a window per pixel, a requantization per conv pixel, the fold into the pool)
//! outweighs the multiply-accumulates: on LeNet-5 at 90 % Level sparsity its conv1
//! spent about 110 Cortex-M4 instructions per conv output beside 25 × 0.1 MACs. Here,
//! per output channel, each pool output gathers the conv outputs of its window
//! straight from the input through the channel's nonzero weights (a 2×2 window's four
//! in one walk over the weights, in registers), takes their maximum as `i32`, and is
//! requantized once. Nothing is stored between the conv and the pool.
//!
//! Max first, requantization after: see [`pooled_first`](super::conv_pool::pooled_first)
//! for when that is exact.

use super::{ConvGeometry, OutputStage};
use crate::error::Error;
use crate::format::sparse::{SparseRow, SparseRows};

/// Most nonzero weights of one filter taken (decoded once per channel onto the stack,
/// 6 B each; a denser filter gains little from sparsity and takes the general kernel).
pub const TAPS_CAP: usize = 128;

/// `output = max_pool(pool, conv2d(conv, input))` as
/// [`conv2d_sparse_max_pool`](super::conv_pool::conv2d_sparse_max_pool) computes it,
/// when the geometry fits the taps' fields; `Ok(false)` (nothing written) otherwise.
/// The caller has checked the operands' lengths, that the filter is sparse enough and
/// the output stage lets the pool come first
/// ([`pooled_first`](super::conv_pool::pooled_first)), and prefilled `output` (a pool
/// window of padding only keeps it). Not inlined: in the general kernel's frame its
/// loops ran out of registers.
#[inline(never)]
#[allow(unsafe_code)]
pub fn conv2d_sparse_max_pool_by_windows(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<bool, Error> {
    let g = conv;
    let row_len = g.in_w * g.in_c;
    // Taps keep their kernel row and column in bytes and their offset in a window
    // (less than `kernel_h` input rows) in 16 bits.
    let fits = g.in_c > 0
        && g.kernel_w > 0
        && g.kernel_h <= usize::from(u8::MAX)
        && g.kernel_w <= usize::from(u8::MAX)
        && g.kernel_h * row_len <= usize::from(u16::MAX);
    if !fits {
        return Ok(false);
    }
    let image_in = g.in_h * row_len;
    let image_out = pool.out_h * pool.out_w * pool.out_c;
    let inner = Interior::of(g);
    let mut taps = [Tap::default(); TAPS_CAP];
    let mut places = [Place::default(); TAPS_CAP];
    for (c, row) in filter.iter().enumerate() {
        let q = stage.channel(c);
        let n = decode(&row, filter.nibbles(), g, &mut taps, &mut places);
        let (Some(taps), Some(places)) = (taps.get(..n), places.get(..n)) else {
            return Err(Error::KernelArgs);
        };
        // An interior pixel reads every tap inside the input: their `w · offset`
        // terms add up to one constant.
        let interior_bias = taps.iter().fold(0i32, |sum, t| {
            sum.wrapping_add(i32::from(t.w).wrapping_mul(input_offset))
        });
        let border = Border {
            g,
            taps,
            places,
            input_offset,
        };
        for (image, out) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            for py in 0..pool.out_h {
                let (oy0, oy1) =
                    window_span(py, pool.stride_h, pool.pad_top, pool.kernel_h, g.out_h);
                for px in 0..pool.out_w {
                    let (ox0, ox1) =
                        window_span(px, pool.stride_w, pool.pad_left, pool.kernel_w, g.out_w);
                    if oy0 >= oy1 || ox0 >= ox1 {
                        continue; // a window of padding only keeps its prefill
                    }
                    let square = oy1 - oy0 == 2 && ox1 - ox0 == 2;
                    let best = if square && inner.holds(oy0, ox0) && inner.holds(oy1 - 1, ox1 - 1) {
                        let at = inner.origin(g, oy0, ox0);
                        let (dx, dy) = (g.stride_w * g.in_c, g.stride_h * row_len);
                        // SAFETY: all four pixels are interior (the corners are, and
                        // the interior is a rectangle): `Interior`'s invariant.
                        let best = unsafe { max_of_square(image, at, dx, dy, taps) };
                        best.wrapping_add(interior_bias)
                    } else {
                        let mut best = i32::MIN;
                        for oy in oy0..oy1 {
                            for ox in ox0..ox1 {
                                let acc = if inner.holds(oy, ox) {
                                    let at = inner.origin(g, oy, ox);
                                    // SAFETY: the pixel is interior.
                                    let acc = unsafe { gather1(image, at, taps) };
                                    acc.wrapping_add(interior_bias)
                                } else {
                                    border.accumulate(image, oy, ox)
                                };
                                best = best.max(acc);
                            }
                        }
                        best
                    };
                    let at = (py * pool.out_w + px) * pool.out_c + c;
                    let y = out.get_mut(at).ok_or(Error::KernelArgs)?;
                    *y = stage.finish(&q, best);
                }
            }
        }
    }
    Ok(true)
}

/// One nonzero weight and where it reads in a window: `(ky·in_w + kx)·C + ci` values
/// after the window's first (top-left) input.
#[derive(Debug, Clone, Copy, Default)]
struct Tap {
    offset: u16,
    w: i16,
}

/// A tap's kernel row and column, for pixels whose window crosses the padding.
#[derive(Debug, Clone, Copy, Default)]
struct Place {
    ky: u8,
    kx: u8,
}

/// `row`'s nonzero weights into `taps` and `places`; how many.
fn decode(
    row: &SparseRow<'_>,
    nibbles: bool,
    g: &ConvGeometry,
    taps: &mut [Tap; TAPS_CAP],
    places: &mut [Place; TAPS_CAP],
) -> usize {
    // rel4 rows pad long gaps with zero weights: only nonzero ones become taps.
    let mut walk = Walk::default();
    let mut n = 0;
    row.for_each_entry(nibbles, |position, w| {
        walk.advance_to(position, g);
        if let (true, Some(tap), Some(place)) = (w != 0, taps.get_mut(n), places.get_mut(n)) {
            *tap = Tap {
                offset: ((walk.ky * g.in_w + walk.kx) * g.in_c + walk.ci) as u16,
                w: i16::from(w),
            };
            *place = Place {
                ky: walk.ky as u8,
                kx: walk.kx as u8,
            };
            n += 1;
        }
    });
    n
}

/// A weight's place in the filter row, `(ky, kx, ci)`, followed from one entry to the
/// next by additions (entries come in increasing position; no division per entry).
#[derive(Default)]
struct Walk {
    position: usize,
    ky: usize,
    kx: usize,
    ci: usize,
}

impl Walk {
    fn advance_to(&mut self, position: usize, g: &ConvGeometry) {
        self.ci += position - self.position;
        self.position = position;
        while self.ci >= g.in_c {
            self.ci -= g.in_c;
            self.kx += 1;
            if self.kx == g.kernel_w {
                self.kx = 0;
                self.ky += 1;
            }
        }
    }
}

/// The conv output pixels whose whole kernel window lies inside the input: rows
/// `rows.0..rows.1`, columns `cols.0..cols.1`. Invariant: for such a pixel,
/// `origin + (ky·in_w + kx)·C + ci < in_h·in_w·C` for every `ky < kernel_h`,
/// `kx < kernel_w`, `ci < C`.
struct Interior {
    rows: (usize, usize),
    cols: (usize, usize),
}

impl Interior {
    fn of(g: &ConvGeometry) -> Self {
        Self {
            rows: inside(g.pad_top, g.stride_h, g.kernel_h, g.in_h, g.out_h),
            cols: inside(g.pad_left, g.stride_w, g.kernel_w, g.in_w, g.out_w),
        }
    }

    #[inline(always)]
    fn holds(&self, oy: usize, ox: usize) -> bool {
        (self.rows.0..self.rows.1).contains(&oy) && (self.cols.0..self.cols.1).contains(&ox)
    }

    /// Where an interior pixel's window starts in the image.
    #[inline(always)]
    fn origin(&self, g: &ConvGeometry, oy: usize, ox: usize) -> usize {
        ((oy * g.stride_h - g.pad_top) * g.in_w + ox * g.stride_w - g.pad_left) * g.in_c
    }
}

/// The outputs `lo..hi` (of `count`) whose `kernel` wide window, `stride` apart, `pad`
/// before the first input, lies wholly inside `len` inputs.
fn inside(pad: usize, stride: usize, kernel: usize, len: usize, count: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let lo = pad.div_ceil(stride).min(count);
    // o·stride − pad + kernel ≤ len
    let hi = match (len + pad).checked_sub(kernel) {
        Some(last_start) => (last_start / stride + 1).min(count),
        None => 0,
    };
    (lo, hi.max(lo))
}

/// The largest of the four accumulators (without the taps' `w · offset`) of the
/// interior pixels at `at`, `at + dx`, `at + dy`, `at + dx + dy`: a 2×2 pool window's
/// conv outputs. Not inlined: in the caller's frame its loop spilled to the stack.
///
/// # Safety
/// All four pixels are interior ([`Interior`]).
#[inline(never)]
#[allow(unsafe_code)]
unsafe fn max_of_square(image: &[i8], at: usize, dx: usize, dy: usize, taps: &[Tap]) -> i32 {
    let (mut a, mut b, mut c, mut d) = (0i32, 0i32, 0i32, 0i32);
    // One base pointer and three fixed distances: indexing the slice kept `at`,
    // `dx + dy` and the slice in registers of their own and spilled the loop.
    // SAFETY: `at` is the first pixel's window origin, inside the image.
    let base = unsafe { image.as_ptr().add(at) };
    let dxy = dx + dy;
    for t in taps {
        let w = i32::from(t.w);
        // SAFETY: `Interior`'s invariant, for each of the four pixels.
        unsafe {
            let p = base.add(usize::from(t.offset));
            a = a.wrapping_add(w.wrapping_mul(i32::from(*p)));
            b = b.wrapping_add(w.wrapping_mul(i32::from(*p.add(dx))));
            c = c.wrapping_add(w.wrapping_mul(i32::from(*p.add(dy))));
            d = d.wrapping_add(w.wrapping_mul(i32::from(*p.add(dxy))));
        }
    }
    a.max(b).max(c.max(d))
}

/// The accumulator (without the taps' `w · offset`) of the interior pixel at `at`.
///
/// # Safety
/// The pixel is interior ([`Interior`]).
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn gather1(image: &[i8], at: usize, taps: &[Tap]) -> i32 {
    // SAFETY: `Interior`'s invariant.
    let read = |i: usize| i32::from(unsafe { *image.get_unchecked(i) });
    taps.iter().fold(0i32, |acc, t| {
        acc.wrapping_add(i32::from(t.w).wrapping_mul(read(at + usize::from(t.offset))))
    })
}

/// Pixels whose window crosses the padding: each tap checked.
struct Border<'a> {
    g: &'a ConvGeometry,
    taps: &'a [Tap],
    places: &'a [Place],
    input_offset: i32,
}

impl Border<'_> {
    /// `Σ w · (x + offset)` over the taps of pixel `(oy, ox)` that read inside.
    fn accumulate(&self, image: &[i8], oy: usize, ox: usize) -> i32 {
        let g = self.g;
        let mut acc = 0i32;
        for (t, p) in self.taps.iter().zip(self.places) {
            // Above or left of the input the subtraction wraps past `in_h` / `in_w`.
            let iy = (oy * g.stride_h + usize::from(p.ky)).wrapping_sub(g.pad_top);
            let ix = (ox * g.stride_w + usize::from(p.kx)).wrapping_sub(g.pad_left);
            if iy >= g.in_h || ix >= g.in_w {
                continue;
            }
            // The tap's channel: its offset less its row's and column's.
            let ci =
                usize::from(t.offset) - (usize::from(p.ky) * g.in_w + usize::from(p.kx)) * g.in_c;
            if let Some(&x) = image.get((iy * g.in_w + ix) * g.in_c + ci) {
                let x = i32::from(x).wrapping_add(self.input_offset);
                acc = acc.wrapping_add(i32::from(t.w).wrapping_mul(x));
            }
        }
        acc
    }
}

/// The inputs `lo..hi` (of `count`) that window `i` covers: `kernel` wide, `stride`
/// apart, `pad` before the first input.
#[inline(always)]
fn window_span(i: usize, stride: usize, pad: usize, kernel: usize, count: usize) -> (usize, usize) {
    let start = i * stride;
    let lo = start.saturating_sub(pad).min(count);
    let hi = (start + kernel).saturating_sub(pad).min(count);
    (lo, hi.max(lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn inside_keeps_whole_windows_in_the_input() {
        // 28 wide, kernel 5, pad 2, stride 1: outputs 2..26 see no padding.
        assert_eq!(inside(2, 1, 5, 28, 28), (2, 26));
        // No padding: every output.
        assert_eq!(inside(0, 1, 5, 14, 10), (0, 10));
        // Brute force against the definition.
        for (pad, stride, kernel, len, count) in [
            (0, 2, 3, 7, 3),
            (3, 2, 2, 5, 5),
            (1, 3, 4, 4, 2),
            (2, 1, 5, 3, 3),
        ] {
            let whole: Vec<usize> = (0..count)
                .filter(|&o| {
                    let start = (o * stride) as isize - pad as isize;
                    start >= 0 && start + kernel as isize <= len as isize
                })
                .collect();
            let (lo, hi) = inside(pad, stride, kernel, len, count);
            assert_eq!(
                (lo..hi).collect::<Vec<_>>(),
                whole,
                "{pad} {stride} {kernel} {len} {count}"
            );
        }
    }

    #[test]
    fn window_span_clips_padding() {
        assert_eq!(window_span(0, 2, 1, 3, 10), (0, 2));
        assert_eq!(window_span(4, 2, 1, 3, 10), (7, 10));
        assert_eq!(window_span(6, 2, 1, 3, 10), (10, 10));
    }
}
