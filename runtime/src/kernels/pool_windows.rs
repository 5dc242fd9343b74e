//! Conv + max pool a pool window at a time, pooled before it is requantized, for
//! sparse filters and small dense ones.
//!
//! With few weights per output, the per-pixel work of the general fused kernel (a
//! window per pixel, a requantization per conv pixel, the fold into the pool)
//! outweighs the multiply-accumulates: on LeNet-5 at 90 % Level sparsity its conv1
//! spent about 110 Cortex-M4 instructions per conv output beside 25 × 0.1 MACs. Here,
//! per output channel, each pool output gathers the conv outputs of its window
//! straight from the input through the channel's nonzero weights (a 2×2 window's four
//! in one walk over the weights, in registers), takes their maximum as `i32`, and is
//! requantized once. Nothing is stored between the conv and the pool. A conv with
//! padding reads padded copies of the few input rows each row of pool windows needs
//! (the padding as the input's zero point), so every pixel reads without checks.
//!
//! A dense filter with few MACs per conv pixel (LeNet-5's conv1: 25 weights, 6
//! channels) gains too: the general kernel's per-pixel work is as large there.
//!
//! Max first, requantization after: see [`pooled_first`](super::conv_pool::pooled_first)
//! for when that is exact.

use super::{ConvGeometry, OutputStage};
use crate::error::Error;
use crate::format::sparse::SparseRows;

/// Bytes of padded input rows held for one row of pool windows (on the stack; LeNet-5's
/// conv1 takes 192). Larger bands take the border path, tap by tap.
const BAND_CAP: usize = 256;

/// Most nonzero weights of one filter taken (decoded once per channel onto the stack,
/// 4 B each; a denser filter gains little from sparsity and takes the general kernel).
pub const TAPS_CAP: usize = 128;

/// Filters with at most this many nonzero weights decode into a table this long, in a
/// frame 256 bytes smaller (LeNet-5 pruned to 80 %: its densest filter holds 39).
const SMALL_TAPS: usize = 64;

/// And with at most this many, into one 192 bytes smaller still (LeNet-5's conv1 at
/// 80 %: 8).
const TINY_TAPS: usize = 16;

/// One filter row as the window kernel reads it: its nonzero weights by position.
pub trait FilterRow {
    /// `f(position, w)` for the row's weights in increasing position (zeros may come
    /// too: they are skipped).
    fn for_each_weight(&self, f: impl FnMut(usize, i8));
}

impl FilterRow for &[i8] {
    fn for_each_weight(&self, mut f: impl FnMut(usize, i8)) {
        for (position, &w) in self.iter().enumerate() {
            f(position, w);
        }
    }
}

/// A sparse row and whether its gaps are nibbles.
struct Sparse<'a>(crate::format::sparse::SparseRow<'a>, bool);

impl FilterRow for Sparse<'_> {
    fn for_each_weight(&self, f: impl FnMut(usize, i8)) {
        self.0.for_each_entry(self.1, f);
    }
}

/// `output = max_pool(pool, conv2d(conv, input))` as
/// [`conv2d_sparse_max_pool`](super::conv_pool::conv2d_sparse_max_pool) computes it,
/// when the geometry fits the taps' fields; `Ok(false)` (nothing written) otherwise.
/// Also `Ok(false)` where a row holds more than [`TAPS_CAP`] nonzero weights. The
/// caller has checked the operands' lengths and that the output stage lets the pool
/// come first ([`pooled_first`](super::conv_pool::pooled_first)), and prefilled
/// `output` (a pool window of padding only keeps it).
pub fn conv2d_sparse_max_pool_by_windows(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<bool, Error> {
    let nibbles = filter.nibbles();
    let rows = filter.iter().map(|row| Sparse(row, nibbles));
    // Entries bound the nonzero weights (rel4 rows' filler entries are zeros): counted
    // only where the bound passes the small table.
    let bound = filter.iter().map(|row| row.values.len()).max();
    let densest = match bound {
        Some(n) if n > SMALL_TAPS => filter.iter().map(|row| nonzero(row.values)).max(),
        bound => bound,
    };
    let kernel = Kernel::of(conv, pool, input_offset, stage);
    kernel.with_table(densest.unwrap_or(0), rows, input, output)
}

/// [`conv2d_sparse_max_pool_by_windows`] with a dense filter (`out_c` rows of
/// `kernel_h · kernel_w · C`), under the same conditions; also `Ok(false)` where a
/// row has more than [`TAPS_CAP`] nonzero weights.
pub fn conv2d_dense_max_pool_by_windows(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<bool, Error> {
    let filter_oc = conv.kernel_h * conv.kernel_w * conv.in_c;
    if filter_oc == 0 || filter.len() != filter_oc * conv.out_c {
        return Err(Error::KernelArgs);
    }
    let rows = filter.chunks_exact(filter_oc);
    let densest = rows.clone().map(nonzero).max();
    let kernel = Kernel::of(conv, pool, input_offset, stage);
    kernel.with_table(densest.unwrap_or(0), rows, input, output)
}

/// Whether the window kernel takes conv `conv` pooled by `pool`: its taps' fields
/// hold the kernel and its rows (of the padded copies, where it reads them).
pub fn fits(conv: &ConvGeometry, pool: &ConvGeometry, input_offset: i32) -> bool {
    let padded = padded_rows(conv, pool, input_offset);
    taps_fit(conv, padded.map_or(conv.in_w * conv.in_c, |p| p.row_len))
}

/// Whether taps hold conv `g`'s kernel over input rows of `tap_row_len` values: kernel
/// row and column in bytes, the offset in a window (less than `kernel_h` rows) in 16
/// bits.
fn taps_fit(g: &ConvGeometry, tap_row_len: usize) -> bool {
    g.in_c > 0
        && g.kernel_w > 0
        && g.kernel_h <= usize::from(u8::MAX)
        && g.kernel_w <= usize::from(u8::MAX)
        && g.kernel_h * tap_row_len <= usize::from(u16::MAX)
}

/// The padded copies of its input rows the conv reads, where it reads them: they fit
/// the band and some pixel's window crosses the padding.
fn padded_rows(g: &ConvGeometry, pool: &ConvGeometry, input_offset: i32) -> Option<Padded> {
    Padded::new(g, pool, input_offset).filter(|_| !Interior::of(g).is_everything(g))
}

/// Nonzero weights in `row` (int8, or their bytes).
pub(super) fn nonzero<W: Copy + Default + PartialEq>(row: &[W]) -> usize {
    row.iter().filter(|&&w| w != W::default()).count()
}

/// What the kernel works on besides the filter rows and the tensors.
struct Kernel<'k, 's> {
    conv: &'k ConvGeometry,
    pool: &'k ConvGeometry,
    input_offset: i32,
    stage: &'k OutputStage<'s>,
}

impl<'k, 's> Kernel<'k, 's> {
    fn of(
        conv: &'k ConvGeometry,
        pool: &'k ConvGeometry,
        input_offset: i32,
        stage: &'k OutputStage<'s>,
    ) -> Self {
        Self {
            conv,
            pool,
            input_offset,
            stage,
        }
    }

    /// [`by_windows`](Self::by_windows) with a tap table just long enough for
    /// `densest` weights, from one of three frames (only the one that runs counts in a
    /// board's stack peak; the kernel itself is one copy); `Ok(false)` past
    /// [`TAPS_CAP`].
    fn with_table<R: FilterRow>(
        &self,
        densest: usize,
        filter: impl Iterator<Item = R>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<bool, Error> {
        if densest <= TINY_TAPS {
            self.on_stack::<R, TINY_TAPS>(filter, input, output)
        } else if densest <= SMALL_TAPS {
            self.on_stack::<R, SMALL_TAPS>(filter, input, output)
        } else if densest <= TAPS_CAP {
            self.on_stack::<R, TAPS_CAP>(filter, input, output)
        } else {
            Ok(false)
        }
    }

    /// A table of `N` taps in this frame; the band of padded rows in a frame of its
    /// own, only for a conv that reads one ([`Self::pads`]).
    #[inline(never)]
    fn on_stack<R: FilterRow, const N: usize>(
        &self,
        filter: impl Iterator<Item = R>,
        input: &[i8],
        output: &mut [i8],
    ) -> Result<bool, Error> {
        let mut taps = [Tap::default(); N];
        match self.pads() {
            true => self.with_band(filter, &mut taps, input, output),
            false => self.by_windows(filter, &mut taps, &mut [], input, output),
        }
    }

    /// A band of [`BAND_CAP`] bytes in this frame.
    #[inline(never)]
    fn with_band<R: FilterRow>(
        &self,
        filter: impl Iterator<Item = R>,
        table: &mut [Tap],
        input: &[i8],
        output: &mut [i8],
    ) -> Result<bool, Error> {
        let mut band = [0i8; BAND_CAP];
        self.by_windows(filter, table, &mut band, input, output)
    }

    /// Whether the conv reads padded copies of its input rows (see `by_windows`).
    fn pads(&self) -> bool {
        padded_rows(self.conv, self.pool, self.input_offset).is_some()
    }

    /// The kernel of both entries, over the filter's rows, decoding each into `table`
    /// (long enough for every row's nonzero weights), padded rows into `band` (empty
    /// where it [`pads`](Self::pads) not). Not inlined: in the general kernel's frame
    /// its loops ran out of registers.
    #[inline(never)]
    #[allow(unsafe_code)]
    fn by_windows<R: FilterRow>(
        &self,
        filter: impl Iterator<Item = R>,
        table: &mut [Tap],
        band: &mut [i8],
        input: &[i8],
        output: &mut [i8],
    ) -> Result<bool, Error> {
        let Kernel {
            conv,
            pool,
            input_offset,
            stage,
        } = *self;
        let g = conv;
        let row_len = g.in_w * g.in_c;
        let inner = Interior::of(g);
        // A conv with padding reads, where they fit, padded copies of the input rows each
        // row of pool windows needs: every pixel then reads inside, at the interior's
        // speed. Elsewhere pixels across the padding check each tap. Whether it does was
        // decided with the band ([`Self::pads`]): it is empty where not.
        let padded = Padded::new(g, pool, input_offset).filter(|_| !band.is_empty());
        let tap_row_len = padded.as_ref().map_or(row_len, |p| p.row_len);
        if !taps_fit(g, tap_row_len) {
            return Ok(false);
        }
        let image_in = g.in_h * row_len;
        let image_out = pool.out_h * pool.out_w * pool.out_c;
        let squares = square_windows(g, pool, padded.is_some(), &inner);
        for (c, row) in filter.enumerate() {
            let q = stage.channel(c);
            let Some(taps) = decode(&row, g, tap_row_len, table) else {
                return Err(Error::KernelArgs);
            };
            // An interior pixel reads every tap inside the input: their `w · offset`
            // terms add up to one constant.
            let interior_bias = taps.iter().fold(0i32, |sum, t| {
                sum.wrapping_add(i32::from(t.w).wrapping_mul(input_offset))
            });
            let border = Border {
                g,
                row: &row,
                input_offset,
            };
            for (image, out) in input
                .chunks_exact(image_in)
                .zip(output.chunks_exact_mut(image_out))
            {
                for py in 0..pool.out_h {
                    let (oy0, oy1) =
                        window_span(py, pool.stride_h, pool.pad_top, pool.kernel_h, g.out_h);
                    if oy0 >= oy1 {
                        continue; // windows of padding only keep their prefill
                    }
                    // Where the pixels read: the padded rows from conv row `oy0` on, or
                    // the image.
                    let (source, reads) = match &padded {
                        Some(p) => (p.load(g, image, (oy0, oy1), band)?, Reads::Band(oy0, p)),
                        None => (image, Reads::Image(&inner)),
                    };
                    let (dx, dy) = (g.stride_w * g.in_c, g.stride_h * tap_row_len);
                    let row_at = py * pool.out_w * pool.out_c + c;
                    // The square windows that read inside, one after another: most of
                    // a 2×2 pool's row, without the general path's per-window work.
                    let rows_inside =
                        oy1 - oy0 == 2 && reads.row_inside(oy0) && reads.row_inside(oy0 + 1);
                    let run = if rows_inside { squares.clone() } else { 0..0 };
                    let first = (run.start * pool.stride_w).wrapping_sub(pool.pad_left);
                    if let (false, Some(mut at)) = (run.is_empty(), reads.origin(g, oy0, first)) {
                        for px in run.clone() {
                            // SAFETY: `squares` holds 2×2 windows whose columns read
                            // inside, and both rows do.
                            let best = unsafe { max_of_square(source, at, dx, dy, taps) };
                            let y = out
                                .get_mut(row_at + px * pool.out_c)
                                .ok_or(Error::KernelArgs)?;
                            *y = stage.finish(&q, best.wrapping_add(interior_bias));
                            at += pool.stride_w * dx;
                        }
                    }
                    for px in (0..run.start).chain(run.end..pool.out_w) {
                        let (ox0, ox1) =
                            window_span(px, pool.stride_w, pool.pad_left, pool.kernel_w, g.out_w);
                        if ox0 >= ox1 {
                            continue;
                        }
                        let square = oy1 - oy0 == 2 && ox1 - ox0 == 2;
                        let corners =
                            (reads.origin(g, oy0, ox0), reads.origin(g, oy1 - 1, ox1 - 1));
                        let best = if let (true, Some(at), Some(_)) = (square, corners.0, corners.1)
                        {
                            // SAFETY: all four pixels read inside (the corners do, and the
                            // pixels that do form a rectangle): `Reads::origin`.
                            let best =
                                unsafe { max_of_square(source, at, g.stride_w * g.in_c, dy, taps) };
                            best.wrapping_add(interior_bias)
                        } else {
                            let mut best = i32::MIN;
                            for oy in oy0..oy1 {
                                for ox in ox0..ox1 {
                                    let acc = match reads.origin(g, oy, ox) {
                                        // SAFETY: the pixel reads inside.
                                        Some(at) => unsafe { gather1(source, at, taps) }
                                            .wrapping_add(interior_bias),
                                        None => border.accumulate(image, oy, ox),
                                    };
                                    best = best.max(acc);
                                }
                            }
                            best
                        };
                        let y = out
                            .get_mut(row_at + px * pool.out_c)
                            .ok_or(Error::KernelArgs)?;
                        *y = stage.finish(&q, best);
                    }
                }
            }
        }
        Ok(true)
    }
}

/// The pool windows `px` of a 2×2 pool, none cut by padding, whose conv columns both
/// read inside (all of them where the rows are padded, else the interior's).
fn square_windows(
    g: &ConvGeometry,
    pool: &ConvGeometry,
    padded: bool,
    inner: &Interior,
) -> core::ops::Range<usize> {
    if pool.kernel_h != 2 || pool.kernel_w != 2 {
        return 0..0;
    }
    let (lo, hi) = if padded { (0, g.out_w) } else { inner.cols };
    // Window `px` covers conv columns `px·stride − pad` and the one after.
    let first = (lo + pool.pad_left).div_ceil(pool.stride_w.max(1));
    let end = match (hi + pool.pad_left).checked_sub(2) {
        Some(last_start) => (last_start / pool.stride_w.max(1) + 1).min(pool.out_w),
        None => 0,
    };
    first.min(end)..end
}

/// One nonzero weight and where it reads in a window: `ky·row_len + kx·C + ci` values
/// after the window's first (top-left) input, `row_len` that of the rows read (the
/// image's or the padded rows').
#[derive(Debug, Clone, Copy, Default)]
struct Tap {
    offset: u16,
    w: i16,
}

/// `row`'s nonzero weights into `taps`, for windows in rows `row_len` long: the filled
/// part, `None` if they do not fit. Not inlined: its state took room of its own in the
/// kernel's frame.
#[inline(never)]
fn decode<'t>(
    row: &impl FilterRow,
    g: &ConvGeometry,
    row_len: usize,
    taps: &'t mut [Tap],
) -> Option<&'t [Tap]> {
    // Dense rows, and rel4 rows' long gaps, hold zero weights: only nonzero ones
    // become taps. The weight at `(ky · kernel_w + kx) · C + ci` reads
    // `ky · row_len + kx · C + ci` into the window: only the kernel row `ky` is
    // followed (a step per kernel row, where a walk over `kx` and `ci` took one per
    // column: the strips of a fused op over its input decode every filter per strip).
    let filter_row = g.kernel_w * g.in_c;
    let (mut ky, mut row_start) = (0, 0);
    let mut n = 0;
    row.for_each_weight(|position, w| {
        while position >= row_start + filter_row && filter_row > 0 {
            (ky, row_start) = (ky + 1, row_start + filter_row);
        }
        if w != 0 {
            if let Some(tap) = taps.get_mut(n) {
                *tap = Tap {
                    offset: (ky * row_len + (position - row_start)) as u16,
                    w: i16::from(w),
                };
            }
            n += 1; // counted past the table too: then `None`
        }
    });
    taps.get(..n)
}

/// A weight's place in the filter row, `(ky, kx, ci)`, followed from one entry to the
/// next by additions (entries come in increasing position; no division per entry).
#[derive(Default)]
pub(super) struct Walk {
    position: usize,
    pub(super) ky: usize,
    pub(super) kx: usize,
    pub(super) ci: usize,
}

impl Walk {
    pub(super) fn advance_to(&mut self, position: usize, g: &ConvGeometry) {
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

    /// Whether every pixel is interior (a conv that reads no padding).
    fn is_everything(&self, g: &ConvGeometry) -> bool {
        self.rows == (0, g.out_h) && self.cols == (0, g.out_w)
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
/// before the first input, lies wholly inside `len` inputs: its first and its last
/// column both read inside.
fn inside(pad: usize, stride: usize, kernel: usize, len: usize, count: usize) -> (usize, usize) {
    let (lo, _) = reading_outputs(0, pad, stride, len, count);
    let (_, hi) = reading_outputs(kernel.saturating_sub(1), pad, stride, len, count);
    (lo, hi.max(lo))
}

/// The outputs `lo..hi` (of `count`) whose tap at kernel column `k` reads inside an
/// input row `len` wide: `0 ≤ o·stride + k − pad < len`.
pub(super) fn reading_outputs(
    k: usize,
    pad: usize,
    stride: usize,
    len: usize,
    count: usize,
) -> (usize, usize) {
    let stride = stride.max(1);
    let lo = pad.saturating_sub(k).div_ceil(stride);
    // o·stride < len + pad − k
    let hi = match (len + pad).checked_sub(k) {
        Some(limit) => limit.div_ceil(stride),
        None => 0,
    };
    (lo.min(count), hi.min(count).max(lo.min(count)))
}

/// The largest of the four accumulators (without the taps' `w · offset`) of the
/// interior pixels at `at`, `at + dx`, `at + dy`, `at + dx + dy`: a 2×2 pool window's
/// conv outputs. Not inlined: in the caller's frame its loop spilled to the stack.
///
/// # Safety
/// All four pixels read inside `image` ([`Reads::origin`]).
#[inline(never)]
#[allow(unsafe_code)]
unsafe fn max_of_square(image: &[i8], at: usize, dx: usize, dy: usize, taps: &[Tap]) -> i32 {
    let (mut a, mut b, mut c, mut d) = (0i32, 0i32, 0i32, 0i32);
    // One base pointer and three fixed distances: indexing the slice kept `at`,
    // `dx + dy` and the slice in registers of their own and spilled the loop.
    // SAFETY: `at` is the first pixel's window origin, inside `image`.
    let base = unsafe { image.as_ptr().add(at) };
    let dxy = dx + dy;
    for t in taps {
        let w = i32::from(t.w);
        // SAFETY: `Reads::origin`'s invariant, for each of the four pixels.
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
/// The pixel reads inside `image` ([`Reads::origin`]).
#[inline(always)]
#[allow(unsafe_code)]
unsafe fn gather1(image: &[i8], at: usize, taps: &[Tap]) -> i32 {
    // SAFETY: `Reads::origin`'s invariant.
    let read = |i: usize| i32::from(unsafe { *image.get_unchecked(i) });
    taps.iter().fold(0i32, |acc, t| {
        acc.wrapping_add(i32::from(t.w).wrapping_mul(read(at + usize::from(t.offset))))
    })
}

/// Input rows `in_h` high and `C·in_w` wide with their padding, in a buffer: the rows
/// one row of pool windows reads, the padding as `-offset` (an int8: the negated
/// input offset is the input's zero point), so that it adds nothing to `x + offset`.
struct Padded {
    /// Columns of padding before the image's first.
    left: usize,
    /// Values per padded row: `C ·` (left padding, image, right padding).
    row_len: usize,
    fill: i8,
}

impl Padded {
    /// `None` where the rows of a pool window's conv rows would not fit [`BAND_CAP`]
    /// or the fill is not an int8.
    fn new(g: &ConvGeometry, pool: &ConvGeometry, input_offset: i32) -> Option<Self> {
        let fill = i8::try_from(input_offset.checked_neg()?).ok()?;
        let columns = g.out_w.checked_sub(1)? * g.stride_w + g.kernel_w;
        let row_len = columns.max(g.pad_left + g.in_w).checked_mul(g.in_c)?;
        let rows = pool.kernel_h.checked_sub(1)? * g.stride_h + g.kernel_h;
        (rows.checked_mul(row_len)? <= BAND_CAP).then_some(Self {
            left: g.pad_left,
            row_len,
            fill,
        })
    }

    /// The padded input rows that conv rows `oy0..oy1` read, from `band`.
    fn load<'b>(
        &self,
        g: &ConvGeometry,
        image: &[i8],
        (oy0, oy1): (usize, usize),
        band: &'b mut [i8],
    ) -> Result<&'b [i8], Error> {
        let rows = (oy1 - oy0 - 1) * g.stride_h + g.kernel_h;
        let band = band
            .get_mut(..rows * self.row_len)
            .ok_or(Error::KernelArgs)?;
        let in_row = g.in_w * g.in_c;
        let first = (oy0 * g.stride_h).wrapping_sub(g.pad_top);
        for (k, row) in band.chunks_exact_mut(self.row_len).enumerate() {
            row.fill(self.fill);
            // Above the image the row wraps past `in_h`: padding.
            let iy = first.wrapping_add(k);
            if iy < g.in_h {
                let src = image.get(iy * in_row..(iy + 1) * in_row);
                let at = self.left * g.in_c;
                let dst = row.get_mut(at..at + in_row);
                dst.zip(src)
                    .ok_or(Error::KernelArgs)?
                    .0
                    .copy_from_slice(src.unwrap_or(&[]));
            }
        }
        Ok(band)
    }
}

/// Where a pixel's window starts in what the pixels read.
enum Reads<'a> {
    /// The image: interior pixels only.
    Image(&'a Interior),
    /// Padded rows from conv row `.0` on: every pixel of the row of pool windows.
    Band(usize, &'a Padded),
}

impl Reads<'_> {
    /// Whether conv row `oy`'s windows read inside, in rows (columns apart).
    #[inline(always)]
    fn row_inside(&self, oy: usize) -> bool {
        match self {
            Reads::Image(inner) => (inner.rows.0..inner.rows.1).contains(&oy),
            Reads::Band(..) => true,
        }
    }

    /// Where pixel `(oy, ox)`'s window starts, if all of it lies in what is read.
    /// Invariant: then `start + (ky·row_len + kx·C + ci)` is inside for every
    /// `ky < kernel_h`, `kx < kernel_w`, `ci < C` (row_len the taps').
    #[inline(always)]
    fn origin(&self, g: &ConvGeometry, oy: usize, ox: usize) -> Option<usize> {
        match self {
            Reads::Image(inner) => inner.holds(oy, ox).then(|| inner.origin(g, oy, ox)),
            Reads::Band(oy0, p) => {
                Some((oy - oy0) * g.stride_h * p.row_len + ox * g.stride_w * g.in_c)
            }
        }
    }
}

/// Pixels whose window crosses the padding: each weight checked. The filter row is
/// walked again per pixel (its places are not kept beside the taps: 256 bytes of
/// stack for a path only convs whose padded rows miss [`BAND_CAP`] take).
struct Border<'a, R> {
    g: &'a ConvGeometry,
    row: &'a R,
    input_offset: i32,
}

impl<R: FilterRow> Border<'_, R> {
    /// `Σ w · (x + offset)` over the weights of pixel `(oy, ox)` that read inside.
    /// Not inlined, for the same reason as [`decode`].
    #[inline(never)]
    fn accumulate(&self, image: &[i8], oy: usize, ox: usize) -> i32 {
        let g = self.g;
        let mut acc = 0i32;
        let mut walk = Walk::default();
        self.row.for_each_weight(|position, w| {
            walk.advance_to(position, g);
            // Above or left of the input the subtraction wraps past `in_h` / `in_w`.
            let iy = (oy * g.stride_h + walk.ky).wrapping_sub(g.pad_top);
            let ix = (ox * g.stride_w + walk.kx).wrapping_sub(g.pad_left);
            if w == 0 || iy >= g.in_h || ix >= g.in_w {
                return;
            }
            if let Some(&x) = image.get((iy * g.in_w + ix) * g.in_c + walk.ci) {
                let x = i32::from(x).wrapping_add(self.input_offset);
                acc = acc.wrapping_add(i32::from(w).wrapping_mul(x));
            }
        });
        acc
    }
}

/// The inputs `lo..hi` (of `count`) that window `i` covers: `kernel` wide, `stride`
/// apart, `pad` before the first input.
#[inline(always)]
pub(super) fn window_span(
    i: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    count: usize,
) -> (usize, usize) {
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
    fn reading_outputs_keeps_taps_inside_the_row() {
        // 28 wide, kernel 5, pad 2, stride 1: column 0 reads from output 2 on.
        assert_eq!(reading_outputs(0, 2, 1, 28, 28), (2, 28));
        assert_eq!(reading_outputs(2, 2, 1, 28, 28), (0, 28));
        assert_eq!(reading_outputs(4, 2, 1, 28, 28), (0, 26));
        // Stride 2, no padding, 7 wide, 3 outputs of kernel 3: all inside.
        assert_eq!(reading_outputs(2, 0, 2, 7, 3), (0, 3));
        // Brute force against the definition.
        for (k, pad, stride, len, count) in [(0, 3, 2, 5, 4), (3, 1, 3, 4, 3), (1, 0, 1, 1, 2)] {
            let inside: Vec<usize> = (0..count)
                .filter(|&o| {
                    let i = (o * stride + k) as isize - pad as isize;
                    (0..len as isize).contains(&i)
                })
                .collect();
            let (lo, hi) = reading_outputs(k, pad, stride, len, count);
            assert_eq!(
                (lo..hi).collect::<Vec<_>>(),
                inside,
                "{k} {pad} {stride} {len} {count}"
            );
        }
    }

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
