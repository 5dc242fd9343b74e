//! Conv2d, depthwise conv and fully connected on packed 4-, 2- and 1-bit weights
//! ([`crate::format::packed`]).
//!
//! Each kernel unpacks a block of weight rows to int8 in a stack buffer of
//! [`UNPACK_CAP`] bytes and hands the block to the dense kernels' own block loops
//! (`conv::conv_block`, `depthwise::depthwise_block`, `channels_offset`), so a packed
//! layer runs the dense inner loops, SIMD paths included, and is bit-exact with the
//! dense layer of its unpacked weights. A block is unpacked once per call, not per
//! pixel: the unpacking costs about one pass over the packed bytes. Windows or rows
//! too long for a block (or input offsets beyond ±256) take a slower path that
//! unpacks each row piece by piece next to the input it meets.

use super::conv::{conv_block, window_columns};
use super::depthwise::{depthwise_block, FilterColumns};
use super::fully_connected::FcShape;
use super::{
    channels_offset, dot, offset_into, small_offset, ChannelQuant, ConvGeometry, OutputStage,
    OFFSET_CAP, PACK_SCRATCH, QUANT_BLOCK,
};
use crate::error::Error;
use crate::format::packed::PackedRows;

/// Bytes of unpacked int8 weights a kernel holds at once (on the stack).
pub const UNPACK_CAP: usize = 1024;

/// Most taps (`KH·KW`) a packed depthwise filter may have: one channel's taps must fit
/// [`UNPACK_CAP`] (the loader refuses larger ones with `EncodingNotSupported`).
pub const PACKED_DEPTHWISE_MAX_TAPS: usize = UNPACK_CAP;

/// Bytes of the piecewise path's buffer.
const PIECE: usize = 128;

/// [`crate::kernels::conv::conv2d`] on packed filter rows (one per output channel).
pub fn conv2d_packed(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    if input.len() != in_len
        || output.len() != out_len
        || rows.rows() != g.out_c
        || rows.row_len() != filter_oc
        || filter_oc == 0
        || stage.channels != g.out_c
    {
        return Err(Error::KernelArgs);
    }
    match small_offset(input_offset) {
        Some(offset) if filter_oc <= OFFSET_CAP => {
            // Whole filters per block: at least two (filter_oc ≤ 512).
            let per_block = (UNPACK_CAP / filter_oc).min(QUANT_BLOCK);
            let mut unpacked = [0i8; UNPACK_CAP];
            let mut buf = [0i16; OFFSET_CAP];
            for c0 in (0..g.out_c).step_by(per_block) {
                let n = per_block.min(g.out_c - c0);
                let block = unpacked.get_mut(..n * filter_oc).ok_or(Error::KernelArgs)?;
                rows.unpack_rows(c0, block).ok_or(Error::KernelArgs)?;
                conv_block(g, offset, stage, c0, block, &mut buf, input, output)?;
            }
            Ok(())
        }
        _ => conv_by_pieces(g, input_offset, stage, rows, input, output),
    }
}

/// Any window and offset: per output channel, one dot product per in-bounds window row,
/// its weights unpacked piece by piece.
fn conv_by_pieces(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let mut piece = [0i8; PIECE];
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let (ix0, kx0, run) = window_columns(g, ox);
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                for (oc, out) in out_px.iter_mut().enumerate() {
                    let mut acc = 0i32;
                    for ky in ky0..ky1 {
                        let start = ((y0 + ky - g.pad_top) * g.in_w + ix0) * g.in_c;
                        let x = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                        let at = ky * filter_row + kx0 * g.in_c;
                        let part = dot_piecewise(x, rows, oc, at, input_offset, &mut piece)?;
                        acc = acc.wrapping_add(part);
                    }
                    *out = stage.apply(acc, oc);
                }
            }
        }
    }
    Ok(())
}

/// `Σ (x[i] + input_offset) · w[i]` with `w` = row `r`'s values from `start` on,
/// unpacked into `piece` a piece at a time.
#[inline]
fn dot_piecewise(
    x: &[i8],
    rows: &PackedRows<'_>,
    r: usize,
    start: usize,
    input_offset: i32,
    piece: &mut [i8],
) -> Result<i32, Error> {
    let mut acc = 0i32;
    let mut at = start;
    for xs in x.chunks(piece.len().max(1)) {
        let w = piece.get_mut(..xs.len()).ok_or(Error::KernelArgs)?;
        rows.unpack_part(r, at, w).ok_or(Error::KernelArgs)?;
        acc = acc.wrapping_add(dot(xs, w, input_offset));
        at += xs.len();
    }
    Ok(acc)
}

/// [`crate::kernels::depthwise::depthwise_conv2d`] on a packed filter (one row of `OC`
/// per tap).
#[allow(clippy::too_many_arguments)]
pub fn depthwise_conv2d_packed(
    g: &ConvGeometry,
    depth_multiplier: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    let taps = g.kernel_h * g.kernel_w;
    if depth_multiplier == 0
        || g.in_c.checked_mul(depth_multiplier) != Some(g.out_c)
        || input.len() != in_len
        || output.len() != out_len
        || rows.rows() != taps
        || rows.row_len() != g.out_c
        || taps == 0
        || taps > PACKED_DEPTHWISE_MAX_TAPS
        || stage.channels != g.out_c
    {
        return Err(Error::KernelArgs);
    }
    let per_block = (UNPACK_CAP / taps).min(QUANT_BLOCK);
    let mut unpacked = [0i8; UNPACK_CAP];
    for c0 in (0..g.out_c).step_by(per_block) {
        let n = per_block.min(g.out_c - c0);
        let block = unpacked.get_mut(..taps * n).ok_or(Error::KernelArgs)?;
        // Tap t's weights for channels c0..c0 + n, as block row t.
        for (t, part) in block.chunks_exact_mut(n).enumerate() {
            rows.unpack_part(t, c0, part).ok_or(Error::KernelArgs)?;
        }
        let columns = FilterColumns {
            filter: block,
            stride: n,
            first: 0,
        };
        depthwise_block(
            g,
            depth_multiplier,
            input_offset,
            stage,
            c0,
            n,
            columns,
            input,
            output,
        )?;
    }
    Ok(())
}

/// [`crate::kernels::fully_connected::fully_connected`] on packed weight rows (one per
/// output).
pub fn fully_connected_packed(
    shape: &FcShape,
    input_offset: i32,
    stage: &OutputStage<'_>,
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    stage.check()?;
    let FcShape {
        in_features,
        out_features,
        ..
    } = *shape;
    let ok = shape.fits(input.len(), output.len())
        && rows.rows() == out_features
        && rows.row_len() == in_features
        && stage.channels == out_features;
    if !ok {
        return Err(Error::KernelArgs);
    }
    let Some(offset) = small_offset(input_offset).filter(|_| in_features <= OFFSET_CAP) else {
        let mut piece = [0i8; PIECE];
        for (row, out_row) in input
            .chunks_exact(in_features)
            .zip(output.chunks_exact_mut(out_features))
        {
            for (o, out) in out_row.iter_mut().enumerate() {
                let acc = dot_piecewise(row, rows, o, 0, input_offset, &mut piece)?;
                *out = stage.apply(acc, o);
            }
        }
        return Ok(());
    };
    // Offset each input row once, then blocks of whole unpacked rows (at least two).
    let per_block = (UNPACK_CAP / in_features).min(QUANT_BLOCK);
    let mut buf = [0i16; OFFSET_CAP];
    let mut unpacked = [0i8; UNPACK_CAP];
    let mut scratch = PACK_SCRATCH;
    let x = buf.get_mut(..in_features).ok_or(Error::KernelArgs)?;
    for (row, out_row) in input
        .chunks_exact(in_features)
        .zip(output.chunks_exact_mut(out_features))
    {
        offset_into(x, row, offset);
        for c0 in (0..out_features).step_by(per_block) {
            let n = per_block.min(out_features - c0);
            let block = unpacked
                .get_mut(..n * in_features)
                .ok_or(Error::KernelArgs)?;
            rows.unpack_rows(c0, block).ok_or(Error::KernelArgs)?;
            let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
            let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
            stage.channels_into(c0, q);
            let out_block = out_row.get_mut(c0..c0 + n).ok_or(Error::KernelArgs)?;
            channels_offset(x, &mut scratch, block, stage, q, out_block)?;
        }
    }
    Ok(())
}
