//! Sparse conv + max pool a row at a time, pooled before it is requantized.
//!
//! With few nonzero weights per output, the per-pixel work of the general fused kernel
//! (a window per pixel, a requantization per conv pixel, the fold into the pool)
//! outweighs the multiply-accumulates: on LeNet-5 at 90 % Level sparsity its conv1
//! spent about 110 Cortex-M4 instructions per conv output beside 25 × 0.1 MACs. Here,
//! per output channel and pool row, each nonzero weight adds `w · (x + offset)` along
//! a whole conv output row at once (a strided run of the input row it reads), the
//! conv rows' accumulators are maxed into the pool row's, and each pool output is
//! requantized once.
//!
//! Max first, requantization after: see [`pooled_first`](super::conv_pool::pooled_first)
//! for when that is exact. Rows wider than [`ROW_CAP`] take the window kernel.

use super::{ConvGeometry, OutputStage};
use crate::error::Error;
use crate::format::sparse::{SparseRow, SparseRows};

/// Widest conv or pool output row taken: two `i32` rows of this on the stack (256 B;
/// LeNet-5's are 28 and 10 wide). Wider rows take the window kernel.
pub const ROW_CAP: usize = 32;
/// Most nonzero weights of one filter taken (6 B each on the stack). This kernel pays
/// off only for filters far sparser than that; denser ones take the window kernel.
pub const ROW_TAPS_CAP: usize = 64;
/// Widest kernel taken (its valid output columns per tap column sit on the stack).
const KERNEL_W_CAP: usize = 32;
use super::pool_windows::{nonzero, reading_outputs, window_span, Walk};

/// Whether the row kernel takes this layer: its rows fit the row buffers and every
/// filter the tap table.
pub fn fits(conv: &ConvGeometry, pool: &ConvGeometry, filter: &SparseRows<'_>) -> bool {
    let g = conv;
    // Taps keep a kernel row in a byte and an input-row offset in 16 bits.
    // (A kernel with no input channel or column would never finish placing a weight.)
    g.in_c > 0
        && g.kernel_w > 0
        && g.out_w <= ROW_CAP
        && pool.out_w <= ROW_CAP
        && g.kernel_w <= KERNEL_W_CAP
        && g.kernel_h <= usize::from(u8::MAX)
        && g.in_w * g.in_c <= usize::from(u16::MAX)
        && filter.iter().all(|row| nonzero(row.values) <= ROW_TAPS_CAP)
}

/// `output = max_pool(pool, conv2d(conv, input))` as
/// [`conv2d_sparse_max_pool`](super::conv_pool::conv2d_sparse_max_pool) computes it,
/// when the geometry fits the row buffers; `Ok(false)` (nothing written) otherwise.
/// The caller has checked the operands' lengths, and that the filter is sparse enough
/// and the output stage lets the pool come first
/// ([`pooled_first`](super::conv_pool::pooled_first)). Not inlined: in the general
/// kernel's frame its loops ran out of registers.
#[inline(never)]
pub fn conv2d_sparse_max_pool_by_rows(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<bool, Error> {
    let g = conv;
    if !fits(conv, pool, filter) {
        return Ok(false);
    }
    let image_in = g.in_h * g.in_w * g.in_c;
    let image_out = pool.out_h * pool.out_w * pool.out_c;
    let mut taps = [Tap::default(); ROW_TAPS_CAP];
    let mut acc = [0i32; ROW_CAP];
    // The pool row's maxima, or a 2×2 pool's second conv row.
    let mut second = [0i32; ROW_CAP];
    let acc = acc.get_mut(..g.out_w).ok_or(Error::KernelArgs)?;
    // 2×2 windows side by side (LeNet-5's): both conv rows, then each output's four.
    let pairs = pool.pad_left == 0 && pool.kernel_w == 2 && pool.stride_w == 2;
    for (c, row) in filter.iter().enumerate() {
        let q = stage.channel(c);
        let taps = decode(&row, filter.nibbles(), g, &mut taps);
        for (image, out) in input
            .chunks_exact(image_in)
            .zip(output.chunks_exact_mut(image_out))
        {
            for py in 0..pool.out_h {
                let (oy0, oy1) =
                    window_span(py, pool.stride_h, pool.pad_top, pool.kernel_h, g.out_h);
                if oy0 >= oy1 {
                    continue; // no conv row: the pool output keeps its prefill
                }
                let row_len = pool.out_w * pool.out_c;
                let out_row =
                    (out.get_mut(py * row_len..(py + 1) * row_len)).ok_or(Error::KernelArgs)?;
                let mut outs = out_row.iter_mut().skip(c).step_by(pool.out_c);
                if pairs && oy1 - oy0 == 2 {
                    let below = second.get_mut(..g.out_w).ok_or(Error::KernelArgs)?;
                    accumulate_row(g, image, oy0, taps, input_offset, acc);
                    accumulate_row(g, image, oy0 + 1, taps, input_offset, below);
                    let ((above, above_last), (below, below_last)) =
                        (acc.as_chunks::<2>(), below.as_chunks::<2>());
                    // The outputs second: a zip pulls its first iterator first, and
                    // the last output may still be wanted below.
                    for (([a0, a1], [b0, b1]), y) in above.iter().zip(below).zip(&mut outs) {
                        *y = stage.finish(&q, (*a0).max(*a1).max((*b0).max(*b1)));
                    }
                    // A last window cut short by the right padding.
                    if let (Some(y), [a], [b]) = (outs.next(), above_last, below_last) {
                        *y = stage.finish(&q, (*a).max(*b));
                    }
                    continue;
                }
                let pooled = second.get_mut(..pool.out_w).ok_or(Error::KernelArgs)?;
                pooled.fill(i32::MIN);
                for oy in oy0..oy1 {
                    accumulate_row(g, image, oy, taps, input_offset, acc);
                    max_into(pool, acc, pooled);
                }
                for (y, &best) in outs.zip(pooled.iter()) {
                    // i32::MIN: a window of padding only (no accumulator gets there).
                    if best != i32::MIN {
                        *y = stage.finish(&q, best);
                    }
                }
            }
        }
    }
    Ok(true)
}

/// Folds a conv row's accumulators into the pool row's maxima: 2-wide windows side by
/// side (LeNet-5's 2×2, stride 2) a pair each, the last one cut short by right padding;
/// other windows one by one.
#[inline(always)]
fn max_into(pool: &ConvGeometry, acc: &[i32], pooled: &mut [i32]) {
    if pool.pad_left == 0 && pool.kernel_w == 2 && pool.stride_w == 2 {
        let (pairs, last) = acc.as_chunks::<2>();
        let (full, rest) = pooled.split_at_mut(pairs.len().min(pooled.len()));
        for (best, [a0, a1]) in full.iter_mut().zip(pairs) {
            *best = (*best).max((*a0).max(*a1));
        }
        if let (Some(best), [a]) = (rest.first_mut(), last) {
            *best = (*best).max(*a);
        }
        return;
    }
    for (px, best) in pooled.iter_mut().enumerate() {
        let (ox0, ox1) = window_span(px, pool.stride_w, pool.pad_left, pool.kernel_w, acc.len());
        if let Some(&m) = acc.get(ox0..ox1).and_then(|run| run.iter().max()) {
            *best = (*best).max(m);
        }
    }
}

/// One nonzero weight, placed: its kernel row, the conv output columns `lo..hi` whose
/// window reads it inside the input, and where the first of them reads in an input
/// row (`(lo·stride + kx − pad)·C + ci`).
#[derive(Debug, Clone, Copy, Default)]
struct Tap {
    column: u16,
    ky: u8,
    lo: u8,
    hi: u8,
    w: i8,
}

/// `row`'s nonzero weights, placed, into `taps`; the filled part. A weight whose
/// column never reads inside the input is dropped.
fn decode<'t>(
    row: &SparseRow<'_>,
    nibbles: bool,
    g: &ConvGeometry,
    taps: &'t mut [Tap; ROW_TAPS_CAP],
) -> &'t [Tap] {
    // rel4 rows pad long gaps with zero weights: only nonzero ones become taps.
    let mut walk = Walk::default();
    let mut n = 0;
    row.for_each_entry(nibbles, |position, w| {
        walk.advance_to(position, g);
        let (lo, hi) = reading_outputs(walk.kx, g.pad_left, g.stride_w, g.in_w, g.out_w);
        if let (true, Some(tap)) = (w != 0 && lo < hi, taps.get_mut(n)) {
            *tap = Tap {
                ky: walk.ky as u8,
                lo: lo as u8,
                hi: hi as u8,
                column: ((lo * g.stride_w + walk.kx - g.pad_left) * g.in_c + walk.ci) as u16,
                w,
            };
            n += 1;
        }
    });
    taps.get(..n).unwrap_or(&[])
}

/// Conv output row `oy` of one channel before its output stage: `acc` (`out_w`
/// long) set to `Σ w · (x + offset)` over `taps`. Not inlined: with the loops around
/// it in one function, the taps' setup spilled its invariants to the stack.
#[inline(never)]
fn accumulate_row(
    g: &ConvGeometry,
    image: &[i8],
    oy: usize,
    taps: &[Tap],
    input_offset: i32,
    acc: &mut [i32],
) {
    acc.fill(0);
    for tap in taps {
        scatter(g, image, oy, tap, input_offset, acc);
    }
}

/// Adds `w · (x + offset)` of `tap` to every conv output of row `oy` whose window
/// reads it inside the input.
///
/// Unchecked reads and writes, safe by construction: [`decode`] gave the tap the
/// columns `lo..hi` whose reads fall inside an input row (`reading_outputs`: the last
/// one reads at `column + (hi − lo − 1)·step < in_w·C`) with `hi ≤ out_w ≤ acc.len()`,
/// and the row `iy < in_h` is checked here, in an image of `in_h·in_w·C` values (the
/// caller's `chunks_exact`). Bounds checks here cost a third of each tap's setup.
#[inline(always)]
#[allow(unsafe_code)]
fn scatter(
    g: &ConvGeometry,
    image: &[i8],
    oy: usize,
    tap: &Tap,
    input_offset: i32,
    acc: &mut [i32],
) {
    // Above the input the subtraction wraps to a huge row: skipped like those below.
    let iy = (oy * g.stride_h + usize::from(tap.ky)).wrapping_sub(g.pad_top);
    if iy >= g.in_h {
        return; // a padding row: nothing to add
    }
    let start = iy * g.in_w * g.in_c + usize::from(tap.column);
    let step = g.stride_w * g.in_c;
    let (lo, hi) = (usize::from(tap.lo), usize::from(tap.hi));
    debug_assert!(lo < hi && hi <= acc.len());
    debug_assert!(start + (hi - lo - 1) * step < image.len());
    // SAFETY: `lo < hi ≤ acc.len()`, see above.
    let acc = unsafe { acc.get_unchecked_mut(lo..hi) };
    let w = i32::from(tap.w);
    let bias = w.wrapping_mul(input_offset);
    let add =
        |a: &mut i32, x: i8| *a = a.wrapping_add(w.wrapping_mul(i32::from(x)).wrapping_add(bias));
    // SAFETY (every read): `at ≤ start + (hi − lo − 1)·step < image.len()`, see above.
    let read = |at: usize| unsafe { *image.get_unchecked(at) };
    // Two outputs per pass: the loop's own instructions were a third of it.
    let (pairs, last) = acc.as_chunks_mut::<2>();
    let mut at = start;
    for [a0, a1] in pairs {
        add(a0, read(at));
        add(a1, read(at + step));
        at += 2 * step;
    }
    if let [a] = last {
        add(a, read(at));
    }
}
