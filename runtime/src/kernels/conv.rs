//! 2-D convolution, int8 (TFLite's `reference_integer_ops::ConvPerChannel`).

use super::band::Band;
use super::quad::{channels_offset_quad_i8, WindowQuad, QUAD_CAP};
use super::{
    accumulate_offset, channels_offset, channels_offset_pair, channels_offset_pair_i8, dot,
    offset_into, pairs_pixels, small_offset, window_reach, ChannelQuant, ConvGeometry, OutputStage,
    WindowPair, OFFSET_CAP, PACKED, PACK_SCRATCH, QUANT_BLOCK,
};
use crate::error::Error;
use crate::format::OpSet;

/// `output[b, oy, ox, oc] = stage(Σ (input[b, iy, ix, ic] + input_offset) ·
/// filter[oc, ky, kx, ic])` over the in-bounds window (padding contributes nothing,
/// i.e. it stands for the input zero point).
///
/// Each output pixel's window is gathered once into a contiguous stack buffer of
/// `i16` with the input offset already added (padded positions are 0, so they add
/// nothing), at most `OFFSET_CAP` (512) entries. Every output channel is then one dot
/// product over `kernel_h · kernel_w · C` contiguous values, matching the filter's
/// `[OC, KH, KW, C]` layout, four channels per pass over the window (on Armv7E-M the
/// window is packed into 16-bit pairs for `SMLAD`, two channels per pass; see
/// `channels_offset`; neighbouring pixels whose windows lie inside the image and whose
/// kernel rows are whole groups of four values are packed in pairs straight from the
/// int8 image, see `conv_block`). Output channels go in blocks of `QUANT_BLOCK` (16),
/// whose bias and requantization are decoded once per block. Larger windows (or
/// offsets beyond ±256) take other paths ([`DenseConvKernel`]).
///
/// The path is [`DenseConvKernel::of`]'s choice, every path linked; a `Model` links
/// only its op set's ([`conv2d_by`]).
pub fn conv2d(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    conv2d_by::<DENSE_CONV_KERNELS>(g, input_offset, stage, filter, input, output)
}

kernel_family! {
    /// The path a dense conv runs, chosen per op from its filter size and input offset
    /// (neither changes when a band of rows is streamed), so that a [`crate::Model`]'s
    /// op set can leave the others out (bits 27 to 29: [`DenseConvKernel::bit`]).
    pub enum DenseConvKernel, DENSE_CONV_KERNELS, bits from 27;
    {
        /// The whole window gathered at once (512 values at most, `OFFSET_CAP`): every
        /// MLPerf Tiny conv but ResNet's 3×3×64.
        Gathered,
        /// Windows longer than that whose kernel rows fit it: gathered a piece of whole
        /// rows at a time where `SMLAD` packs them, row by row elsewhere.
        Pieces,
        /// Row by row: kernel rows longer than 512 values or offsets beyond ±256.
        Rows,
    }
}

impl DenseConvKernel {
    /// The path for a conv with geometry `g` and `input_offset`.
    pub fn of(g: &ConvGeometry, input_offset: i32) -> Self {
        let filter_row = g.kernel_w.saturating_mul(g.in_c);
        match small_offset(input_offset) {
            Some(_) if g.kernel_h.saturating_mul(filter_row) <= OFFSET_CAP => Self::Gathered,
            Some(_) if filter_row <= OFFSET_CAP => Self::Pieces,
            _ => Self::Rows,
        }
    }
}

/// [`conv2d`] with the path [`DenseConvKernel::of`] chooses, referencing only the
/// paths op set `SET` links; another is `KernelArgs` on every target (the loader has
/// refused such a model).
///
/// Not inlined: inlined into the op dispatcher, its row-by-row loops lost registers and
/// a 3×3×64 conv took 31.1 M instructions on the Cortex-M0 instead of 21.2 M.
#[inline(never)]
pub fn conv2d_by<const SET: OpSet>(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let filter_len = filter_oc.checked_mul(g.out_c).ok_or(Error::KernelArgs)?;
    if input.len() != in_len
        || output.len() != out_len
        || filter.len() != filter_len
        || stage.channels != g.out_c
    {
        return Err(Error::KernelArgs);
    }
    // A pointwise conv's pixels are read as one row, so that the kernels group them
    // across image rows (kws_ref_model's 5-pixel rows left one pixel in five to the
    // one-pixel path, vww's 6- and 3-pixel rows a pair or a single each).
    let pointwise = g.kernel_h == 1
        && g.kernel_w == 1
        && (g.stride_h, g.stride_w, g.pad_top, g.pad_left) == (1, 1, 0, 0)
        && (g.out_h, g.out_w) == (g.in_h, g.in_w);
    let flat = ConvGeometry {
        in_h: 1,
        in_w: g.in_h * g.in_w,
        out_h: 1,
        out_w: g.out_h * g.out_w,
        ..*g
    };
    let g = if pointwise { &flat } else { g };
    // Refused on every target alike, the host's AVX2 kernels included.
    let kernel = DenseConvKernel::of(g, input_offset);
    if !kernel.is_in(SET) {
        return Err(Error::KernelArgs);
    }
    // x86_64 hosts: the AVX2 kernels (same results), unless the CPU lacks AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(done) = small_offset(input_offset)
        .and_then(|offset| super::x86::conv2d(g, offset, stage, filter, input, output))
    {
        return done;
    }
    // Each arm's set test is a constant: a path the set leaves out is not referenced.
    // Without SMLAD the row-by-row path runs the pieces' convs too (one call site, so
    // that it stays inlined).
    use DenseConvKernel::{Gathered, Pieces, Rows};
    match (kernel, small_offset(input_offset)) {
        (Gathered, Some(offset)) if Gathered.is_in(SET) => {
            gathered(g, offset, stage, filter, input, output)
        }
        (Pieces, Some(offset)) if PACKED && Pieces.is_in(SET) => {
            gathered_in_pieces(g, offset, stage, filter, input, output)
        }
        (Pieces | Rows, _) if Rows.is_in(SET) || (!PACKED && Pieces.is_in(SET)) => {
            by_rows(g, input_offset, stage, filter, input, output)
        }
        _ => Err(Error::KernelArgs),
    }
}

/// Windows longer than [`OFFSET_CAP`] (pretrainedResnet's 3×3×64 = 576) whose rows
/// fit it, where [`PACKED`]: each window gathered a piece of whole kernel rows at a
/// time, every channel of a block accumulating over the pieces ([`accumulate_offset`]:
/// the piece packed once, two channels per `SMLAD` pass), then finished. Without SMLAD
/// the row-by-row path is faster (this one measured +3.5 % on the Cortex-M3, +7 % on
/// RISC-V for a 3×3×64 conv).
fn gathered_in_pieces(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_row = g.kernel_w * g.in_c;
    let filter_oc = g.kernel_h * filter_row;
    let piece_rows = (OFFSET_CAP / filter_row.max(1)).max(1);
    let image_len = g.in_h * g.in_w * g.in_c;
    let mut buf = [0i16; OFFSET_CAP];
    let mut scratch = PACK_SCRATCH;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    for (block, f_block) in filter.chunks(QUANT_BLOCK * filter_oc).enumerate() {
        let c0 = block * QUANT_BLOCK;
        let n = f_block.len() / filter_oc.max(1);
        let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
        stage.channels_into(c0, q);
        let mut pixels = output.chunks_exact_mut(g.out_c);
        for image in input.chunks_exact(image_len) {
            for oy in 0..g.out_h {
                let y0 = oy * g.stride_h;
                let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
                for ox in 0..g.out_w {
                    let mut sums = [0i32; QUANT_BLOCK];
                    let sums = sums.get_mut(..n).ok_or(Error::KernelArgs)?;
                    for first in (0..g.kernel_h).step_by(piece_rows) {
                        let rows = piece_rows.min(g.kernel_h - first);
                        let x = buf.get_mut(..rows * filter_row).ok_or(Error::KernelArgs)?;
                        gather_rows(g, image, (y0, ky0, ky1), ox, offset, first, x)?;
                        let start = first * filter_row;
                        accumulate_offset(x, &mut scratch, f_block, filter_oc, start, sums)?;
                    }
                    let out_px = pixels
                        .next()
                        .and_then(|p| p.get_mut(c0..c0 + n))
                        .ok_or(Error::KernelArgs)?;
                    for ((y, &acc), q) in out_px.iter_mut().zip(sums.iter()).zip(q.iter()) {
                        *y = stage.finish(q, acc);
                    }
                }
            }
        }
    }
    Ok(())
}

/// Windows of at most [`OFFSET_CAP`] values, gathered whole.
// Inlined into `conv2d_by` on the Cortex-M3 only (Armv7-M without the DSP extension).
// Measured with the op set naming the paths, M3 / M0 / RISC-V / M4 instructions per
// inference against leaving it to LLVM, which keeps it out of line: kws_ref_model
// −12.0 % / – / +1.8 % / −0.05 %, pretrainedResnet_quant −14.1 % / – / +1.0 % / +0.19 %,
// speech −12.9 % / +1.0 % / +2.4 % / +1.3 % (the M0 runs only speech).
#[cfg_attr(
    all(
        target_arch = "arm",
        not(any(target_feature = "dsp", sprig_arm_dsp, sprig_armv6m))
    ),
    inline(always)
)]
fn gathered(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let mut buf = [0i16; OFFSET_CAP];
    // Channel blocks outermost, so each block's output stage is decoded once; the
    // window is gathered again per block (cheap next to the block's dot products).
    for (block, f_block) in filter.chunks(QUANT_BLOCK * filter_oc).enumerate() {
        conv_block(
            g,
            offset,
            stage,
            block * QUANT_BLOCK,
            f_block,
            &mut buf,
            input,
            output,
        )?;
    }
    Ok(())
}

/// Output channels `c0..c0 + n` of every pixel, `f_block` their `n` filters (at most
/// [`QUANT_BLOCK`]), `buf` room for one window (`KH·KW·C` entries) or, where
/// [`pairs_pixels`], two: the body of [`conv2d`]'s gathered path, shared with the packed
/// low-bit kernels, which unpack a block of filters and hand it here. Two neighbouring
/// pixels of a row go through [`channels_offset_pair`] together where it pays.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_block(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    c0: usize,
    f_block: &[i8],
    buf: &mut [i16],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let image_len = g.in_h * g.in_w * g.in_c;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let mut scratch = PACK_SCRATCH;
    let n = f_block.len() / filter_oc.max(1);
    let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
    let form = stage.small_channels_into(c0, q, window_reach(filter_oc));
    // Two windows, then the band of offset input rows where it fits.
    let (windows, tail) = buf
        .split_at_mut_checked((2 * filter_oc).min(buf.len()))
        .ok_or(Error::KernelArgs)?;
    let (window, rest) = windows
        .split_at_mut_checked(filter_oc)
        .ok_or(Error::KernelArgs)?;
    let mut second = rest
        .get_mut(..filter_oc)
        .filter(|_| pairs_pixels(filter_oc));
    // Pairs of pixels whose windows lie inside the image go packed straight from it
    // where kernel rows come in whole groups of four values; the band, which saved
    // gathering those windows, is then left out (border pixels gather from the image).
    // Other kernel rows (a first conv's 3×3×3: 9 values) are read padded to the next
    // multiple of 4 where that adds at most a third: the windows read a few values
    // past their edge, a copy of the filters has zeros there.
    let run = g.kernel_w * g.in_c;
    let padded_run = run.next_multiple_of(4);
    let mut padded_store: [i8; PADDED_FILTERS_CAP];
    let direct_filters = if padded_run == run {
        Some(f_block)
    } else if 3 * padded_run <= 4 * run && pairs_pixels(g.kernel_h * padded_run) {
        padded_store = [0; PADDED_FILTERS_CAP];
        pad_runs(f_block, run, padded_run, &mut padded_store)
    } else {
        None
    };
    let (run, direct_filters) = match direct_filters.filter(|_| second.is_some()) {
        Some(filters) => (padded_run, Some(filters)),
        None => (run, None),
    };
    let direct = direct_filters.is_some();
    let direct_filters = direct_filters.unwrap_or(f_block);
    let quads = direct && g.kernel_h * run <= QUAD_CAP;
    // The last value a window read straight from the image takes, from its start.
    let window_span = (g.kernel_h - 1) * g.in_w * g.in_c + run;
    let mut band = Band::new(g, tail).filter(|_| !direct);
    let mut outputs = PixelOutputs {
        output,
        pixel: g.out_c,
        channels: c0..c0 + n,
        next: 0,
    };
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            let rows = (y0, ky0, ky1);
            if let Some(band) = band.as_mut() {
                band.load(g, image, rows, offset)?;
            }
            let band = band.as_ref();
            let gather = |ox: usize, window: &mut [i16]| match band {
                Some(band) => band.window(g, ox, window),
                None => gather_window(g, image, rows, ox, offset, window),
            };
            let mut ox = 0;
            while ox < g.out_w {
                // Four pixels at once where all four windows lie inside.
                if quads && ox + 3 < g.out_w {
                    let starts = (pair_inside(g, rows, ox), pair_inside(g, rows, ox + 2));
                    let last_inside = |&(_, d): &(usize, usize)| d + window_span <= image.len();
                    if let (Some((a, b)), Some((c, d))) = (starts.0, starts.1.filter(last_inside)) {
                        let quad = WindowQuad {
                            image,
                            starts: [a, b, c, d],
                            rows: g.kernel_h,
                            run,
                            stride: g.in_w * g.in_c,
                        };
                        let outs = (outputs.take(4)?, g.out_c);
                        let (q, w, scratch) = (&*q, direct_filters, &mut scratch);
                        channels_offset_quad_i8(&quad, offset, scratch, w, (stage, form), q, outs)?;
                        ox += 4;
                        continue;
                    }
                }
                if let Some(w2) = second.as_deref_mut().filter(|_| ox + 1 < g.out_w) {
                    let starts = if direct {
                        pair_inside(g, rows, ox).filter(|&(_, b)| b + window_span <= image.len())
                    } else {
                        None
                    };
                    if let Some(starts) = starts {
                        let pair = WindowPair {
                            image,
                            starts,
                            rows: g.kernel_h,
                            run,
                            stride: g.in_w * g.in_c,
                        };
                        let (out_a, out_b) = outputs.pair()?;
                        let (q, w, scratch, stage) =
                            (&*q, direct_filters, &mut scratch, (stage, form));
                        channels_offset_pair_i8(&pair, offset, scratch, w, stage, q, out_a, out_b)?;
                        ox += 2;
                        continue;
                    }
                    gather(ox, window)?;
                    gather(ox + 1, w2)?;
                    let (out_a, out_b) = outputs.pair()?;
                    channels_offset_pair(
                        window,
                        w2,
                        &mut scratch,
                        f_block,
                        (stage, form),
                        q,
                        out_a,
                        out_b,
                    )?;
                    ox += 2;
                    continue;
                }
                gather(ox, window)?;
                channels_offset(window, &mut scratch, f_block, stage, q, outputs.take(1)?)?;
                ox += 1;
            }
        }
    }
    Ok(())
}

/// Channels `channels` of an output's pixels (`pixel` values each), handed out in
/// turn from pixel `next` on.
struct PixelOutputs<'o> {
    output: &'o mut [i8],
    pixel: usize,
    channels: core::ops::Range<usize>,
    next: usize,
}

impl PixelOutputs<'_> {
    /// The next `count` pixels' channels as one slice, from the first pixel's to the
    /// last's: pixel `k`'s at `k · pixel`.
    fn take(&mut self, count: usize) -> Result<&mut [i8], Error> {
        let first = self.next * self.pixel;
        let last = (self.next + count - 1) * self.pixel;
        self.next += count;
        let range = first + self.channels.start..last + self.channels.end;
        self.output.get_mut(range).ok_or(Error::KernelArgs)
    }

    /// The next two pixels' channels.
    fn pair(&mut self) -> Result<(&mut [i8], &mut [i8]), Error> {
        let (pixel, n) = (self.pixel, self.channels.len());
        let (a, b) = self
            .take(2)?
            .split_at_mut_checked(pixel)
            .ok_or(Error::KernelArgs)?;
        Ok((a.get_mut(..n).ok_or(Error::KernelArgs)?, b))
    }
}

/// Bytes of [`conv_block`]'s copy of its filters with kernel rows padded to a
/// multiple of 4 values (on the stack): vww_96_int8's first conv takes all of it,
/// 8 × 36 (each byte more is a byte more of stack for every conv).
const PADDED_FILTERS_CAP: usize = 288;

/// `filters`' kernel rows of `run` weights each, every one followed by zeros up to
/// `padded_run`, in `out`; `None` where they do not fit.
fn pad_runs<'o>(
    filters: &[i8],
    run: usize,
    padded_run: usize,
    out: &'o mut [i8],
) -> Option<&'o [i8]> {
    let len = (filters.len() / run).checked_mul(padded_run)?;
    let out = out.get_mut(..len)?;
    for (row, padded) in filters
        .chunks_exact(run)
        .zip(out.chunks_exact_mut(padded_run))
    {
        padded.get_mut(..run)?.copy_from_slice(row);
    }
    Some(out)
}

/// Where the windows of output columns `ox` and `ox + 1` of the row `rows` describes
/// (`(y0, ky0, ky1)`, as [`gather_window`] takes it) start in the image, if both lie
/// wholly inside it. (Called only where [`conv_block`] packs from the image: evaluated
/// for every pair, it cost pretrainedResnet's 3×3 convs 1.8 %.)
#[inline(always)]
fn pair_inside(
    g: &ConvGeometry,
    (y0, ky0, ky1): (usize, usize, usize),
    ox: usize,
) -> Option<(usize, usize)> {
    if (ky0, ky1) != (0, g.kernel_h) {
        return None;
    }
    let start = |ox: usize| {
        let x0 = ox * g.stride_w;
        let columns = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
        let inside = columns == (0, g.kernel_w);
        inside.then(|| ((y0 - g.pad_top) * g.in_w + x0 - g.pad_left) * g.in_c)
    };
    start(ox).zip(start(ox + 1))
}

/// Gather output pixel `(oy, ox)`'s window of `image` into `window` (`KH·KW·C`
/// entries, the filter's order) as `x + offset`, padded positions 0. `rows` is
/// `(oy · stride_h, ky0, ky1)`, the row range computed once per output row.
#[inline(always)]
pub(crate) fn gather_window(
    g: &ConvGeometry,
    image: &[i8],
    rows: (usize, usize, usize),
    ox: usize,
    offset: i16,
    window: &mut [i16],
) -> Result<(), Error> {
    gather_rows(g, image, rows, ox, offset, 0, window)
}

/// [`gather_window`] for kernel rows `first_ky..` only, as many as `out` holds (whole
/// rows of `KW·C` entries): one piece of a window too long for the buffer.
#[inline(always)]
fn gather_rows(
    g: &ConvGeometry,
    image: &[i8],
    (y0, ky0, ky1): (usize, usize, usize),
    ox: usize,
    offset: i16,
    first_ky: usize,
    out: &mut [i16],
) -> Result<(), Error> {
    let filter_row = g.kernel_w * g.in_c;
    let x0 = ox * g.stride_w;
    let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
    let (left, run) = (kx0 * g.in_c, (kx1 - kx0) * g.in_c);
    let ix0 = x0 + kx0 - g.pad_left;
    for (i, row) in out.chunks_exact_mut(filter_row).enumerate() {
        let ky = first_ky + i;
        if ky < ky0 || ky >= ky1 {
            zero(row);
            continue;
        }
        let iy = y0 + ky - g.pad_top;
        let start = (iy * g.in_w + ix0) * g.in_c;
        let src = image.get(start..start + run).ok_or(Error::KernelArgs)?;
        let (pad_l, rest) = row.split_at_mut_checked(left).ok_or(Error::KernelArgs)?;
        let (mid, pad_r) = rest.split_at_mut_checked(run).ok_or(Error::KernelArgs)?;
        zero(pad_l);
        offset_into(mid, src, offset);
        zero(pad_r);
    }
    Ok(())
}

/// Output column `ox`'s in-bounds window: its first input column, its first kernel
/// column, and the length of one in-bounds window row (`columns · C`, contiguous in
/// NHWC input and in the filter alike).
#[inline(always)]
pub(crate) fn window_columns(g: &ConvGeometry, ox: usize) -> (usize, usize, usize) {
    let x0 = ox * g.stride_w;
    let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
    (x0 + kx0 - g.pad_left, kx0, (kx1 - kx0) * g.in_c)
}

/// `s.fill(0)` without a `memset` call for the short (mostly empty) padding runs of a
/// window.
#[inline]
fn zero(s: &mut [i16]) {
    if !s.is_empty() {
        s.fill(0);
    }
}

/// Any window size and offset: one dot product per in-bounds window row (NHWC rows
/// are contiguous in `kx · C`, and so are filter rows).
fn by_rows(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let (ix0, kx0, run) = window_columns(g, ox);
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                for ((oc, out), f_oc) in out_px
                    .iter_mut()
                    .enumerate()
                    .zip(filter.chunks_exact(filter_oc))
                {
                    let mut acc = 0i32;
                    for ky in ky0..ky1 {
                        let iy = y0 + ky - g.pad_top;
                        let start = (iy * g.in_w + ix0) * g.in_c;
                        let f_start = ky * filter_row + kx0 * g.in_c;
                        let x = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                        let w = f_oc.get(f_start..f_start + run).ok_or(Error::KernelArgs)?;
                        acc = acc.wrapping_add(dot(x, w, input_offset));
                    }
                    *out = stage.apply(acc, oc);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::kernels::test_support::{host_fast_path, single_rounding_requant, xorshift};
    use std::vec::Vec;

    /// A random conv for geometry `g`: input, filters, biases within ±10,000 and
    /// single-rounding requantization, output offset −3, int8's whole range.
    struct Case {
        input: Vec<i8>,
        filter: Vec<i8>,
        bias: Vec<u8>,
        requant: Vec<u8>,
    }

    impl Case {
        fn random(next: &mut impl FnMut() -> u64, g: &ConvGeometry) -> Self {
            let (in_len, _) = g.lens().unwrap();
            let filter_len = g.out_c * g.kernel_h * g.kernel_w * g.in_c;
            Case {
                input: (0..in_len).map(|_| next() as i8).collect(),
                filter: (0..filter_len).map(|_| next() as i8).collect(),
                bias: (0..g.out_c)
                    .flat_map(|_| ((next() % 20_001) as i32 - 10_000).to_le_bytes())
                    .collect(),
                requant: single_rounding_requant(next, g.out_c, 11),
            }
        }

        fn stage(&self) -> OutputStage<'_> {
            OutputStage {
                bias: Some(&self.bias),
                requant: &self.requant,
                channels: self.bias.len() / 4,
                output_offset: -3,
                act_min: -128,
                act_max: 127,
            }
        }
    }

    /// Each path is chosen from the filter size and offset alone; a set naming one path
    /// runs the convs that choose it bit-exact and refuses the others, on the host's
    /// AVX2 kernels too.
    #[test]
    fn a_set_runs_only_its_paths() {
        use DenseConvKernel::{Gathered, Pieces, Rows};
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let square = |k: usize, c: usize| ConvGeometry {
            batch: 1,
            in_h: 4,
            in_w: 5,
            in_c: c,
            out_h: 4,
            out_w: 5,
            out_c: 3,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            pad_top: k / 2,
            pad_left: k / 2,
        };
        for (g, offset, path) in [
            (square(3, 3), -7, Gathered),
            (square(3, 64), 5, Pieces),
            (square(1, 600), 5, Rows),
            (square(3, 3), 300, Rows),
        ] {
            assert_eq!(DenseConvKernel::of(&g, offset), path, "{g:?}");
            let case = Case::random(&mut next, &g);
            let (input, filter, stage) = (&case.input, &case.filter, case.stage());
            let out_len = g.lens().unwrap().1;
            let mut want = std::vec![1i8; out_len];
            reference::conv2d(&g, offset, &stage, filter, input, &mut want);
            let runs = [
                conv2d_by::<{ Gathered.bit() }>,
                conv2d_by::<{ Pieces.bit() }>,
                conv2d_by::<{ Rows.bit() }>,
                conv2d_by::<0>,
            ];
            // With the host's AVX2 kernels, and without (the portable paths run).
            for (avx2, (only, run)) in [true, false].into_iter().flat_map(|avx2| {
                let paths = [Some(Gathered), Some(Pieces), Some(Rows), None];
                paths.into_iter().zip(runs).map(move |r| (avx2, r))
            }) {
                host_fast_path(avx2);
                let mut got = std::vec![0i8; out_len];
                let ran = run(&g, offset, &stage, filter, input, &mut got);
                match only.is_none_or(|p| p == path) {
                    true => assert_eq!((ran, &got), (Ok(()), &want), "{path:?}, {avx2}"),
                    false => assert_eq!(ran, Err(Error::KernelArgs), "{path:?} in {only:?}"),
                }
            }
            host_fast_path(true);
        }
    }

    /// More output channels than one [`QUANT_BLOCK`] (the property tests stop at 6),
    /// per-channel bias and requantization, padding and both strides.
    #[test]
    fn many_channels_match_reference() {
        let mut next = xorshift(0x0123_4567_89ab_cdefu64);
        for (out_c, stride) in [(17usize, 1usize), (37, 2), (33, 1)] {
            let g = ConvGeometry {
                batch: 2,
                in_h: 7,
                in_w: 6,
                in_c: 3,
                out_h: if stride == 1 { 7 } else { 4 },
                out_w: if stride == 1 { 6 } else { 3 },
                out_c,
                kernel_h: 3,
                kernel_w: 3,
                stride_h: stride,
                stride_w: stride,
                pad_top: 1,
                pad_left: 1,
            };
            let (in_len, out_len) = g.lens().unwrap();
            let input: Vec<i8> = (0..in_len).map(|_| next() as i8).collect();
            let filter: Vec<i8> = (0..out_c * 27).map(|_| next() as i8).collect();
            let bias: Vec<u8> = (0..out_c)
                .flat_map(|_| ((next() % 20_001) as i32 - 10_000).to_le_bytes())
                .collect();
            let mut requant: Vec<u8> = (0..out_c)
                .flat_map(|_| ((1u32 << 30) + (next() as u32 >> 2)).to_le_bytes())
                .collect();
            requant.extend((0..out_c).map(|_| (-((next() % 12) as i8) - 3) as u8));
            let stage = OutputStage {
                bias: Some(&bias),
                requant: &requant,
                channels: out_c,
                output_offset: 5,
                act_min: -128,
                act_max: 127,
            };
            let (mut fast, mut slow) = (std::vec![0i8; out_len], std::vec![1i8; out_len]);
            conv2d(&g, -7, &stage, &filter, &input, &mut fast).unwrap();
            reference::conv2d(&g, -7, &stage, &filter, &input, &mut slow);
            assert_eq!(fast, slow, "out_c {out_c}");
            assert!(fast.iter().any(|&v| v != fast[0]), "degenerate output");
        }
    }

    /// A pointwise conv read as one row of pixels (as `conv2d` reads it) gives the
    /// image's result: through `conv2d`, and through the gathered path on the flat
    /// geometry, whose quads and pairs then span image rows (5-pixel rows, 2 images).
    #[test]
    fn pointwise_convs_read_as_one_row_match_reference() {
        let mut next = xorshift(0x7f4a_7c15_9e37_79b9u64);
        for (h, w, c, out_c) in [
            (5usize, 5usize, 8usize, 19usize),
            (3, 3, 64, 6),
            (4, 6, 4, 33),
        ] {
            let g = ConvGeometry {
                batch: 2,
                in_h: h,
                in_w: w,
                in_c: c,
                out_h: h,
                out_w: w,
                out_c,
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 1,
                stride_w: 1,
                pad_top: 0,
                pad_left: 0,
            };
            let case = Case::random(&mut next, &g);
            let (input, filter, stage) = (&case.input, &case.filter, case.stage());
            let out_len = g.lens().unwrap().1;
            let mut want = std::vec![1i8; out_len];
            reference::conv2d(&g, 9, &stage, filter, input, &mut want);
            let mut got = std::vec![0i8; out_len];
            conv2d(&g, 9, &stage, filter, input, &mut got).unwrap();
            assert_eq!(got, want, "{g:?}");
            let flat = ConvGeometry {
                in_h: 1,
                in_w: h * w,
                out_h: 1,
                out_w: h * w,
                ..g
            };
            let mut got = std::vec![0i8; out_len];
            gathered(&flat, 9, &stage, filter, input, &mut got).unwrap();
            assert_eq!(got, want, "{g:?} flat");
            assert!(want.iter().any(|&v| v != want[0]), "degenerate output");
        }
    }

    /// The gathered paths themselves (the host's `conv2d` takes AVX2 first): two pixels
    /// per pass where the window fits [`super::super::PAIR_CAP`] (unit tests turn the
    /// packed path on), odd and even row widths, one pixel per pass above it, and
    /// windows above [`OFFSET_CAP`] in pieces.
    #[test]
    fn gathered_pixel_pairs_match_reference() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        // (in_h, in_w, in_c, kernel, pad, stride, out_c): windows 25, 27, 150, 300, 9.
        for (h, w, c, k, pad, stride, out_c, pieces) in [
            (
                9usize, 9usize, 1usize, 5usize, 2usize, 1usize, 6usize, false,
            ),
            (7, 6, 3, 3, 1, 1, 5, false),
            (8, 7, 6, 5, 0, 1, 17, false),
            (6, 5, 12, 5, 2, 2, 3, false),
            // Kernel rows read padded to a multiple of 4 (`pad_runs`): 3×3×3 as vww's
            // first conv (stride 2, 8 channels), 3×3×1, and windows whose padded rows
            // would read past the image's end (the last quad of pixels, the last pair:
            // they gather instead).
            (10, 10, 3, 3, 0, 2, 8, false),
            (9, 8, 1, 3, 0, 1, 8, false),
            (7, 6, 3, 3, 0, 1, 6, false),
            (5, 8, 3, 3, 0, 1, 6, false),
            // Windows above 512 values, in pieces of whole kernel rows: 3×3×64 (pieces
            // of 2 rows + 1) and 5×5×24 (4 rows + 1).
            (5, 6, 64, 3, 1, 1, 19, true),
            (6, 6, 24, 5, 2, 2, 4, true),
        ] {
            let out = |n: usize| (n + 2 * pad - k) / stride + 1;
            let g = ConvGeometry {
                batch: 2,
                in_h: h,
                in_w: w,
                in_c: c,
                out_h: out(h),
                out_w: out(w),
                out_c,
                kernel_h: k,
                kernel_w: k,
                stride_h: stride,
                stride_w: stride,
                pad_top: pad,
                pad_left: pad,
            };
            let case = Case::random(&mut next, &g);
            let (input, filter, stage) = (&case.input, &case.filter, case.stage());
            let out_len = g.lens().unwrap().1;
            let (mut fast, mut slow) = (std::vec![0i8; out_len], std::vec![1i8; out_len]);
            if pieces {
                gathered_in_pieces(&g, 9, &stage, filter, input, &mut fast).unwrap();
            } else {
                gathered(&g, 9, &stage, filter, input, &mut fast).unwrap();
            }
            reference::conv2d(&g, 9, &stage, filter, input, &mut slow);
            assert_eq!(fast, slow, "{g:?}");
            assert!(fast.iter().any(|&v| v != fast[0]), "degenerate output");
        }
    }
}
