//! Convolution fused with the max pool that reads it (format 2.2's `Conv2dMaxPool`):
//! the conv's output is never stored; each of its pixels is computed once, in raster
//! order, and folded straight into the maxima of the pool windows that cover it, so
//! the op needs no buffer beyond the pooled output (which holds the running maxima)
//! and one pixel's block of channels on the stack.
//!
//! Bit-exact with the conv kernels followed by a max pool with the full int8 range:
//! each conv value is computed by the conv kernels' own per-pixel code (dense window
//! and `channels_offset`, sparse taps and rows, packed rows unpacked to dense), and a
//! maximum does not depend on the order its values arrive in. Conv pixels that no
//! pool window reads are skipped.

use super::band::Band;
use super::conv::{gather_window, window_columns};
use super::finish::Finish;
use super::pool_windows::{
    self, conv2d_dense_max_pool_by_windows, conv2d_sparse_max_pool_by_windows, nonzero, TAPS_CAP,
};
use super::sparse::{dot_row, Taps};
use super::sparse_pool_rows::{self, conv2d_sparse_max_pool_by_rows};
use super::{
    channels_offset, channels_offset_pair, dot, pairs_pixels, small_offset, ChannelQuant,
    ConvGeometry, OutputStage, PackScratch, OFFSET_CAP, PACK_SCRATCH, QUANT_BLOCK,
};
use crate::error::Error;
use crate::format::packed::PackedRows;
use crate::format::sparse::{SparseRow, SparseRows};
use crate::format::OpSet;
use crate::kernels::low_bit::UNPACK_CAP;

/// `output = max_pool(pool, conv2d(conv, input))` with a dense filter: `conv` is the
/// convolution's geometry (its `out_*` the unstored conv output), `pool` the pool's
/// (its `in_*` equal to `conv`'s `out_*`, `in_c = out_c`). Other arguments as
/// [`conv2d`](super::conv::conv2d); `output` is the pooled `[N, PH, PW, OC]`.
// Not inlined: the three entries' buffers stay out of their caller's frame, which
// every fused op's run passes through (measured: 4,240 B inlined, on lenet5's path).
#[inline(never)]
pub fn conv2d_max_pool(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = conv.kernel_h * conv.kernel_w * conv.in_c;
    if Some(filter.len()) != filter_oc.checked_mul(conv.out_c) {
        return Err(Error::KernelArgs);
    }
    start(conv, pool, stage, input, output)?;
    // With few MACs per conv pixel the pixel kernel's per-pixel work (its window,
    // packed pairs, a requantization per pixel and channel, the fold into the pool)
    // dominates; the window kernel has none of it. LeNet-5's conv1 (25 weights × 6
    // channels a pixel): Cortex-M4 871 k → 618 k instructions, M3 1,223 k → 587 k,
    // M0 2,642 k → 1,391 k, RV32 1,436 k → 826 k. Its conv2 (150 × 16) lost on all
    // but the M3 (M4 585 k → 1,080 k).
    if filter_oc * conv.out_c <= WINDOW_MACS_CAP
        && max_first_exact(conv, input_offset, stage)
        && conv2d_dense_max_pool_by_windows(conv, pool, input_offset, stage, filter, input, output)?
    {
        return Ok(());
    }
    by_pixels_dense(conv, pool, input_offset, stage, filter, input, output)
}

/// MACs per conv pixel up to which a dense conv + max pool goes a pool window at a time.
const WINDOW_MACS_CAP: usize = 512;

/// [`conv2d_max_pool`] pixel by pixel. Not inlined, so that its buffers and the window
/// kernel's never share a frame.
#[inline(never)]
fn by_pixels_dense(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = conv.kernel_h * conv.kernel_w * conv.in_c;
    let mut window = [0i16; OFFSET_CAP];
    let mut scratch = PACK_SCRATCH;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let offset = small_offset(input_offset).filter(|_| filter_oc <= OFFSET_CAP);
    let mut dense = DensePixel::new(conv, input_offset, stage, offset, &mut window, &mut scratch);
    // Channel blocks outermost, as in the conv: each block's output stage is decoded
    // once.
    for (block, f_block) in filter.chunks(QUANT_BLOCK * filter_oc).enumerate() {
        let c0 = block * QUANT_BLOCK;
        let n = f_block.len() / filter_oc.max(1);
        let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
        stage.channels_into(c0, q);
        let q = &*q;
        fold_pixels(
            conv,
            pool,
            input,
            output,
            c0..c0 + n,
            |image, at, out, next| dense.compute(image, at, f_block, c0, q, out, next),
        )?;
    }
    Ok(())
}

/// [`conv2d_max_pool`] with packed low-bit filter rows: blocks of rows unpacked to
/// int8, then the dense pixels. Windows of at most 512 values (`OFFSET_CAP`) and offsets
/// within ±256 (`KernelArgs` otherwise; the loader refuses larger fused windows).
// Not inlined: the three entries' buffers stay out of their caller's frame, which
// every fused op's run passes through (measured: 4,240 B inlined, on lenet5's path).
#[inline(never)]
pub fn conv2d_packed_max_pool(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = conv.kernel_h * conv.kernel_w * conv.in_c;
    let offset = small_offset(input_offset).ok_or(Error::KernelArgs)?;
    if rows.rows() != conv.out_c || rows.row_len() != filter_oc || filter_oc > OFFSET_CAP {
        return Err(Error::KernelArgs);
    }
    start(conv, pool, stage, input, output)?;
    let mut window = [0i16; OFFSET_CAP];
    let mut scratch = PACK_SCRATCH;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let mut unpacked = [0i8; UNPACK_CAP];
    let offset = Some(offset);
    let mut dense = DensePixel::new(conv, input_offset, stage, offset, &mut window, &mut scratch);
    // Whole filters per block: at least two (filter_oc ≤ 512).
    let per_block = (UNPACK_CAP / filter_oc.max(1)).min(QUANT_BLOCK);
    for c0 in (0..conv.out_c).step_by(per_block) {
        let n = per_block.min(conv.out_c - c0);
        let block = unpacked.get_mut(..n * filter_oc).ok_or(Error::KernelArgs)?;
        rows.unpack_rows(c0, block).ok_or(Error::KernelArgs)?;
        let block = &*block;
        let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
        stage.channels_into(c0, q);
        let q = &*q;
        fold_pixels(
            conv,
            pool,
            input,
            output,
            c0..c0 + n,
            |image, at, out, next| dense.compute(image, at, block, c0, q, out, next),
        )?;
    }
    Ok(())
}

/// [`conv2d_max_pool`] with sparse filter rows (one per output channel): a pool window
/// ([`super::pool_windows`]) or a conv row ([`super::sparse_pool_rows`]) at a time,
/// pooled before requantizing, where the tap table and the output stage allow; else computed as
/// [`conv2d_sparse`](super::sparse::conv2d_sparse) computes them: interior pixels
/// straight from the input through the rows' tap table, border pixels over a gathered
/// window. Windows of at most 512 values (`OFFSET_CAP`) and offsets within ±256
/// (`KernelArgs` otherwise; the loader refuses larger fused windows). The kernel is
/// [`FusedSparseKernel::of`]'s choice, every kernel linked; a `Model` chooses once per
/// op and links only its set's ([`conv2d_sparse_max_pool_by`]).
pub fn conv2d_sparse_max_pool(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let kernel = FusedSparseKernel::of(conv, pool, input_offset, stage, filter)?;
    conv2d_sparse_max_pool_by::<{ FUSED_SPARSE_KERNELS }>(
        kernel,
        conv,
        pool,
        input_offset,
        stage,
        filter,
        input,
        output,
    )
}

kernel_family! {
    /// The kernel that runs a fused conv + max pool with sparse filter rows: chosen per
    /// op ([`FusedSparseKernel::of`]), so that the loader can refuse a model whose
    /// kernel a [`crate::Model`]'s op set leaves out (bits 24 to 26).
    pub enum FusedSparseKernel, FUSED_SPARSE_KERNELS, bits from 24;
    {
        /// A pool window at a time through all weights ([`super::pool_windows`]).
        Windows,
        /// A conv row at a time, weight by weight ([`super::sparse_pool_rows`]).
        Rows,
        /// Pixel by pixel, requantized before the pool: where the pool may not come
        /// first or a filter is too dense for the pool-first kernels' tap tables.
        Pixels,
    }
}

impl FusedSparseKernel {
    /// The kernel for conv `conv` and pool `pool` (the whole op's geometries) with
    /// these operands: the pool-first kernels where the output stage and the filters'
    /// density allow it, the row kernel where it does less setup work and fits its
    /// buffers, else the window kernel where its taps fit, else the pixel kernel.
    pub fn of(
        conv: &ConvGeometry,
        pool: &ConvGeometry,
        input_offset: i32,
        stage: &OutputStage<'_>,
        filter: &SparseRows<'_>,
    ) -> Result<Self, Error> {
        let Some(taps) = pooled_first(conv, input_offset, stage, filter)? else {
            return Ok(Self::Pixels);
        };
        // Each weight along whole conv rows pays a setup per (weight, conv row), about
        // 45 Cortex-M4 instructions; each pool window gathered through all weights
        // pays one per (window, channel), about 90 with its requantization, but 3.75
        // instructions a MAC against 5.5. Fitted on LeNet-5's conv1 (28 rows, 196
        // windows × 6 channels), M4 instructions rows / windows: 2.5 weights a filter
        // 204 k / 217 k, 5 weights 283 k / 266 k; conv2 (15 weights, 10 rows, 25 × 16
        // windows) 322 k / 165 k.
        let rows_setups = taps * conv.out_h;
        let window_setups = pool.out_h * pool.out_w * conv.out_c;
        Ok(
            if 2 * rows_setups < window_setups && sparse_pool_rows::fits(conv, pool, filter) {
                Self::Rows
            } else if pool_windows::fits(conv, pool, input_offset) {
                Self::Windows
            } else {
                Self::Pixels
            },
        )
    }
}

/// [`conv2d_sparse_max_pool`] with `kernel`, chosen by [`FusedSparseKernel::of`] on the
/// whole op's geometries (`conv` and `pool` may be a strip of its rows). Only the
/// kernels op set `SET` links are referenced; another is `KernelArgs` (the loader has
/// refused such a model).
// Not inlined: the three entries' buffers stay out of their caller's frame, which
// every fused op's run passes through (measured: 4,240 B inlined, on lenet5's path).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub fn conv2d_sparse_max_pool_by<const SET: OpSet>(
    kernel: FusedSparseKernel,
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let g = conv;
    let window_len = g.kernel_h * g.kernel_w * g.in_c;
    let offset = small_offset(input_offset).ok_or(Error::KernelArgs)?;
    if window_len > OFFSET_CAP {
        return Err(Error::KernelArgs);
    }
    start(conv, pool, stage, input, output)?;
    let ran = match kernel {
        FusedSparseKernel::Rows if kernel.is_in(SET) => {
            conv2d_sparse_max_pool_by_rows(conv, pool, input_offset, stage, filter, input, output)?
        }
        FusedSparseKernel::Windows if kernel.is_in(SET) => conv2d_sparse_max_pool_by_windows(
            conv,
            pool,
            input_offset,
            stage,
            filter,
            input,
            output,
        )?,
        FusedSparseKernel::Pixels if kernel.is_in(SET) => {
            by_pixels(conv, pool, offset, stage, filter, input, output)?;
            true
        }
        _ => false,
    };
    match ran {
        true => Ok(()),
        false => Err(Error::KernelArgs),
    }
}

/// The nonzero weights of `filter`, if its conv may take the maximum over a pool
/// window before requantizing: `None` where a filter holds more than [`TAPS_CAP`], or
/// the output stage forbids it ([`max_first_exact`]).
pub fn pooled_first(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
) -> Result<Option<usize>, Error> {
    if !max_first_exact(g, input_offset, stage) {
        return Ok(None);
    }
    let (mut rows, mut total, mut densest) = (0, 0, 0);
    for row in filter.iter() {
        let n = nonzero(row.values);
        (rows, total, densest) = (rows + 1, total + n, densest.max(n));
    }
    if rows != g.out_c {
        return Err(Error::KernelArgs);
    }
    // At any density the pool-first kernels beat the pixel kernel on LeNet-5 (at 50 %:
    // conv1 846 k → 401 k Cortex-M4 instructions, conv2 732 k → 583 k; M0 and RV32
    // 27–49 % fewer); a filter denser than TAPS_CAP does not fit their tap table.
    if densest > TAPS_CAP {
        return Ok(None);
    }
    Ok(Some(total))
}

/// Whether conv `g` with `stage` may take the maximum over a pool window before
/// requantizing, bit-exact.
///
/// Max first, requantization after, is bit-exact where the output stage
/// (`OutputStage::finish`) is non-decreasing in the accumulator: there
/// `max(f(a), f(b)) = f(max(a, b))`. It is, for a non-negative multiplier, as long as
/// nothing wraps: the bias add, the left shift and the output offset add on the
/// largest accumulator a window can reach (`ChannelQuant::monotonic_within`). SRDHM,
/// the rounding divide and the clamps are each non-decreasing. Every channel is
/// checked before anything is written; a layer where one fails (a validated model
/// never has a negative multiplier, and real biases are far from `i32` overflow) takes
/// the general kernel.
pub fn max_first_exact(g: &ConvGeometry, input_offset: i32, stage: &OutputStage<'_>) -> bool {
    // |w| ≤ 128 and |x + offset| ≤ 128 + |offset| for every tap of a window.
    let window_len = g.kernel_h * g.kernel_w * g.in_c;
    let reach = window_len as i64 * 128 * (128 + i64::from(input_offset.unsigned_abs()));
    (0..g.out_c).all(|c| stage.channel(c).monotonic_within(reach, stage))
}

/// [`conv2d_sparse_max_pool`] pixel by pixel: interior pixels straight from the input
/// through the rows' tap table, border pixels over a gathered window. Not inlined, so
/// that its buffers and the row kernel's never share a frame.
#[inline(never)]
fn by_pixels(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let g = conv;
    let window_len = g.kernel_h * g.kernel_w * g.in_c;
    // Offsets in the tap table are `u16`: the span of one window must fit.
    let span = ((g.kernel_h - 1) * g.in_w + g.kernel_w) * g.in_c;
    let direct = span <= usize::from(u16::MAX);
    let mut buf = [0i16; OFFSET_CAP];
    let mut taps = Taps::new();
    let nibbles = filter.nibbles();
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let mut rows = filter.iter();
    for c0 in (0..g.out_c).step_by(QUANT_BLOCK) {
        let n = (g.out_c - c0).min(QUANT_BLOCK);
        let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
        stage.channels_into(c0, q);
        let mut done = 0;
        while done < n {
            taps.len = 0;
            if direct {
                taps.fill(g, &mut rows, n - done, nibbles);
            }
            // A row too long for the table (or windows too wide for `u16` offsets):
            // that row alone, through the gathered window only.
            let (len, lone) = match taps.len {
                0 => (1, Some(rows.next().ok_or(Error::KernelArgs)?)),
                len => (len, None),
            };
            let group: &[SparseRow<'_>] = match &lone {
                Some(row) => core::slice::from_ref(row),
                None => taps.rows.get(..len).unwrap_or(&[]),
            };
            let qs = q.get(done..done + len).ok_or(Error::KernelArgs)?;
            let lo = c0 + done;
            let taps = &taps;
            let compute = |image: &[i8],
                           (oy, ox): (usize, usize),
                           out: &mut [i8],
                           next: Option<&mut [i8]>| {
                let y0 = oy * g.stride_h;
                let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
                let inside_rows = lone.is_none() && ky0 == 0 && ky1 == g.kernel_h;
                let inside = |ox: usize| {
                    let x0 = ox * g.stride_w;
                    inside_rows && x0 >= g.pad_left && x0 + g.kernel_w <= g.in_w + g.pad_left
                };
                if inside(ox) {
                    let x0 = ox * g.stride_w;
                    let origin = ((y0 - g.pad_top) * g.in_w + x0 - g.pad_left) * g.in_c;
                    let window = image.get(origin..).ok_or(Error::KernelArgs)?;
                    let (offset, step) = (i32::from(offset), g.stride_w * g.in_c);
                    // Two pixels per walk over the entries where the next one is wanted
                    // and interior too, as the sparse conv does.
                    let pair = next.filter(|_| inside(ox + 1));
                    let paired = pair.is_some();
                    taps.direct(window, step, offset, stage, qs, out, pair)?;
                    return Ok(paired);
                }
                let window = buf.get_mut(..window_len).ok_or(Error::KernelArgs)?;
                gather_window(g, image, (y0, ky0, ky1), ox, offset, window)?;
                for ((y, q), row) in out.iter_mut().zip(qs).zip(group) {
                    *y = stage.finish(q, dot_row(&buf, row, nibbles));
                }
                Ok(false)
            };
            fold_pixels(conv, pool, input, output, lo..lo + len, compute)?;
            done += len;
        }
    }
    Ok(())
}

/// The checks every flavour makes, then the pooled output set to `i8::MIN`, the
/// identity of the maxima (every pool window holds at least one conv pixel, since
/// padding is smaller than the window, so it is always replaced).
fn start(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    stage: &OutputStage<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, _) = conv.lens()?;
    let (_, out_len) = pool.lens()?;
    stage.check()?;
    let chained = pool.batch == conv.batch
        && pool.in_h == conv.out_h
        && pool.in_w == conv.out_w
        && pool.in_c == conv.out_c
        && pool.out_c == conv.out_c;
    if !chained || input.len() != in_len || output.len() != out_len || stage.channels != conv.out_c
    {
        return Err(Error::KernelArgs);
    }
    output.fill(i8::MIN);
    Ok(())
}

/// For every image and every conv pixel `(oy, ox)` some pool window reads, in raster
/// order: `compute(image, (oy, ox), out, next)` writes the pixel's channels `channels`
/// into `out`, which is then folded into the maximum of each pool output covering it.
/// Where pixel `(oy, ox + 1)` is wanted too, `next` offers its buffer: `compute`
/// returns `true` if it filled it as well (one pass for two pixels), `false` if not.
fn fold_pixels(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input: &[i8],
    output: &mut [i8],
    channels: core::ops::Range<usize>,
    mut compute: impl FnMut(&[i8], (usize, usize), &mut [i8], Option<&mut [i8]>) -> Result<bool, Error>,
) -> Result<(), Error> {
    let image_in = conv.in_h * conv.in_w * conv.in_c;
    let image_out = pool.out_h * pool.out_w * pool.out_c;
    let mut values = [[0i8; QUANT_BLOCK]; 2];
    let [first, second] = &mut values;
    let n = channels.len();
    let (v0, v1) = first
        .get_mut(..n)
        .zip(second.get_mut(..n))
        .ok_or(Error::KernelArgs)?;
    for (image, pooled) in input
        .chunks_exact(image_in)
        .zip(output.chunks_exact_mut(image_out))
    {
        // Half-open ranges: `a..=b` loops cost more on the Cortex-M.
        let mut fold = |rows: (usize, usize), cols: (usize, usize), v: &[i8]| {
            for py in rows.0..rows.1 + 1 {
                for px in cols.0..cols.1 + 1 {
                    let at = (py * pool.out_w + px) * pool.out_c;
                    let dst = pooled
                        .get_mut(at + channels.start..at + channels.end)
                        .ok_or(Error::KernelArgs)?;
                    for (d, &s) in dst.iter_mut().zip(v) {
                        *d = (*d).max(s);
                    }
                }
            }
            Ok::<(), Error>(())
        };
        let mut row_cover = Cover::new(pool.kernel_h, pool.stride_h, pool.pad_top, pool.out_h);
        for oy in 0..conv.out_h {
            let Some(rows) = row_cover.step() else {
                continue; // no window reads this conv row: not computed at all
            };
            let mut col_cover = Cover::new(pool.kernel_w, pool.stride_w, pool.pad_left, pool.out_w);
            let mut here = col_cover.step();
            let mut ox = 0;
            while ox < conv.out_w {
                let next = if ox + 1 < conv.out_w {
                    col_cover.step()
                } else {
                    None
                };
                let Some(cols) = here else {
                    ox += 1;
                    here = next;
                    continue;
                };
                let paired = compute(image, (oy, ox), v0, next.and(Some(&mut *v1)))?;
                fold(rows, cols, v0)?;
                match (paired, next) {
                    (true, Some(next_cols)) => {
                        fold(rows, next_cols, v1)?;
                        ox += 2;
                        here = if ox < conv.out_w {
                            col_cover.step()
                        } else {
                            None
                        };
                    }
                    _ => {
                        ox += 1;
                        here = next;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Which pool outputs cover each input along one axis, input after input: windows
/// `kernel` wide, `stride` apart, `pad` before the first input, `count` of them.
/// Advanced by additions only (no division per pixel: the Cortex-M0 has none).
struct Cover {
    kernel: usize,
    stride: usize,
    pad: usize,
    count: usize,
    /// The next input.
    i: usize,
    /// First window that has not ended before the current input.
    first: usize,
    /// Last window that has started at or before the current input (before clamping
    /// to `count`).
    last: usize,
}

impl Cover {
    fn new(kernel: usize, stride: usize, pad: usize, count: usize) -> Self {
        Cover {
            kernel,
            stride: stride.max(1),
            pad,
            count,
            i: 0,
            first: 0,
            last: 0,
        }
    }

    /// The pool outputs `first..=last` whose windows contain the next input (then
    /// moves on to the one after); `None` if no window does.
    #[inline]
    fn step(&mut self) -> Option<(usize, usize)> {
        // Window p covers inputs p·stride − pad .. p·stride − pad + kernel (exclusive).
        let reach = self.i + self.pad;
        self.i += 1;
        while (self.last + 1) * self.stride <= reach {
            self.last += 1;
        }
        while self.first * self.stride + self.kernel <= reach {
            self.first += 1;
        }
        let last = self.last.min(self.count.checked_sub(1)?);
        (self.first <= last).then_some((self.first, last))
    }
}

/// One conv output pixel's channels from a dense filter block, computed as the conv
/// kernel computes them.
struct DensePixel<'g, 's, 'w> {
    g: &'g ConvGeometry,
    input_offset: i32,
    stage: &'g OutputStage<'s>,
    /// The offset as `i16` and a buffer of [`OFFSET_CAP`] entries, where the window
    /// fits it (the conv's gathered path); `None`: row-by-row dot products.
    gathered: Option<(i16, &'w mut [i16])>,
    /// The gathered path's input rows, offset once per output row, where they fit
    /// beside the windows, and the `(image, oy)` they hold.
    band: Option<Band<'w>>,
    band_row: Option<(usize, usize)>,
    scratch: &'w mut PackScratch,
}

impl<'g, 's, 'w> DensePixel<'g, 's, 'w> {
    /// Gathered (with `offset`) into `buf`: two windows, then the band of offset input
    /// rows where it fits; row by row without an offset.
    fn new(
        g: &'g ConvGeometry,
        input_offset: i32,
        stage: &'g OutputStage<'s>,
        offset: Option<i16>,
        buf: &'w mut [i16; OFFSET_CAP],
        scratch: &'w mut PackScratch,
    ) -> Self {
        let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
        let (windows, tail) = buf.split_at_mut(filter_oc.min(OFFSET_CAP / 2) * 2);
        DensePixel {
            g,
            input_offset,
            stage,
            band: offset.and_then(|_| Band::new(g, tail)),
            gathered: offset.map(|offset| (offset, windows)),
            band_row: None,
            scratch,
        }
    }

    /// Channels `c0..c0 + out.len()` (filters `f_block`, decoded stages `q`) of conv
    /// output pixel `(oy, ox)` of `image` into `out`, and where `next` is offered and
    /// the window is small enough for [`channels_offset_pair`], those of pixel
    /// `(oy, ox + 1)` into `next` too (then `true`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn compute(
        &mut self,
        image: &[i8],
        (oy, ox): (usize, usize),
        f_block: &[i8],
        c0: usize,
        q: &[ChannelQuant],
        out: &mut [i8],
        next: Option<&mut [i8]>,
    ) -> Result<bool, Error> {
        let g = self.g;
        let y0 = oy * g.stride_h;
        let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
        let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
        if let Some((offset, buf)) = self.gathered.as_mut() {
            let (window, rest) = buf
                .split_at_mut_checked(filter_oc)
                .ok_or(Error::KernelArgs)?;
            let rows = (y0, ky0, ky1);
            // The band when it fits: loaded once per output row (and image).
            let band = match self.band.as_mut() {
                Some(band) => {
                    let at = (image.as_ptr() as usize, oy);
                    if self.band_row != Some(at) {
                        band.load(g, image, rows, *offset)?;
                        self.band_row = Some(at);
                    }
                    Some(&*band)
                }
                None => None,
            };
            let gather = |ox: usize, window: &mut [i16]| match band {
                Some(band) => band.window(g, ox, window),
                None => gather_window(g, image, rows, ox, *offset, window),
            };
            gather(ox, window)?;
            if let Some((next, second)) = next
                .zip(rest.get_mut(..filter_oc))
                .filter(|_| pairs_pixels(filter_oc))
            {
                gather(ox + 1, second)?;
                let (stage, scratch) = (self.stage, &mut *self.scratch);
                let stage = (stage, Finish::Exact);
                channels_offset_pair(window, second, scratch, f_block, stage, q, out, next)?;
                return Ok(true);
            }
            channels_offset(window, self.scratch, f_block, self.stage, q, out)?;
            return Ok(false);
        }
        let filter_row = g.kernel_w * g.in_c;
        let (ix0, kx0, run) = window_columns(g, ox);
        for (j, (y, f_oc)) in out
            .iter_mut()
            .zip(f_block.chunks_exact(filter_oc))
            .enumerate()
        {
            let mut acc = 0i32;
            for ky in ky0..ky1 {
                let iy = y0 + ky - g.pad_top;
                let start = (iy * g.in_w + ix0) * g.in_c;
                let f_start = ky * filter_row + kx0 * g.in_c;
                let x = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                let w = f_oc.get(f_start..f_start + run).ok_or(Error::KernelArgs)?;
                acc = acc.wrapping_add(dot(x, w, self.input_offset));
            }
            *y = self.stage.apply(acc, c0 + j);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::kernels::test_support::{conv_then_pool2, single_rounding_requant, xorshift};

    /// The dense fused kernel against the conv then pool oracle, with the two-pixel
    /// path on (unit tests turn the packed path on): LeNet-5's conv1 shape (window 25,
    /// pairs) and a window of 300 (one pixel per pass), odd widths included.
    #[test]
    fn dense_pixel_pairs_match_reference() {
        let mut next = xorshift(0x0123_4567_89ab_cdefu64);
        for (h, w, c, k, pad, out_c) in [
            (12usize, 12usize, 1usize, 5usize, 2usize, 6usize),
            (9, 11, 12, 5, 0, 3),
        ] {
            let (conv, pool) = conv_then_pool2((h, w, c), k, pad, out_c);
            let (in_len, _) = conv.lens().unwrap();
            let (_, out_len) = pool.lens().unwrap();
            let input: std::vec::Vec<i8> = (0..in_len).map(|_| next() as i8).collect();
            let filter: std::vec::Vec<i8> = (0..out_c * k * k * c).map(|_| next() as i8).collect();
            let requant = single_rounding_requant(&mut next, out_c, 12);
            let stage = OutputStage {
                bias: None,
                requant: &requant,
                channels: out_c,
                output_offset: 4,
                act_min: -128,
                act_max: 127,
            };
            let (mut fast, mut slow) = (std::vec![0i8; out_len], std::vec![1i8; out_len]);
            conv2d_max_pool(&conv, &pool, -5, &stage, &filter, &input, &mut fast).unwrap();
            reference::conv2d_max_pool(&conv, &pool, -5, &stage, &filter, &input, &mut slow);
            assert_eq!(fast, slow, "{conv:?}");
            assert!(fast.iter().any(|&v| v != fast[0]), "degenerate output");
        }
    }

    /// `Cover` agrees with listing every window's inputs.
    #[test]
    fn cover_lists_the_windows_of_each_input() {
        for kernel in 1..=4 {
            for stride in 1..=3 {
                for pad in 0..kernel {
                    for size in 1..=9usize {
                        let Some(span) = (size + pad).checked_sub(kernel) else {
                            continue;
                        };
                        let count = span / stride + 1;
                        let mut cover = Cover::new(kernel, stride, pad, count);
                        for i in 0..size {
                            let hits: std::vec::Vec<usize> = (0..count)
                                .filter(|p| {
                                    let start = (p * stride) as isize - pad as isize;
                                    (start..start + kernel as isize).contains(&(i as isize))
                                })
                                .collect();
                            let expected = hits.first().zip(hits.last()).map(|(&f, &l)| (f, l));
                            assert_eq!(
                                cover.step(),
                                expected,
                                "k{kernel} s{stride} p{pad} n{size} i{i}"
                            );
                        }
                    }
                }
            }
        }
    }
}
