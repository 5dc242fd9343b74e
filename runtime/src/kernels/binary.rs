//! Binary conv and fully connected (XNOR + popcount) on `±1` inputs and packed `±1`
//! weights ([`crate::format::BinaryConv2d`]), with `±1` outputs by per-channel
//! integer thresholds.
//!
//! Inputs arrive as int8: a value counts `+1` where it is at least the input zero
//! point. For each output pixel the kernel packs its window into bits, in the filter
//! rows' order (`[ky][kx][c]`, bit `i` of the row at bit `i % 32` of word `i / 32`,
//! as [`crate::format::packed`] lays out `Packed1` rows), once for all output
//! channels; then each channel's dot product is `n − 2 · popcount(x ⊕ w)` over the `n`
//! in-bounds taps (a mask drops the padded ones at the borders). One word holds 32
//! multiply-accumulates.

use super::conv::window_columns;
use super::fully_connected::FcShape;
use super::ConvGeometry;
use crate::error::Error;
use crate::format::packed::PackedRows;

/// Most weights in one binary row (a conv window `KH·KW·C`, or a fully connected
/// op's `IN`); the loader refuses longer rows.
pub const BINARY_ROW_CAP: usize = 4096;

const WORDS: usize = BINARY_ROW_CAP / 32;

/// The `i32` thresholds, one per channel.
fn threshold(thresholds: &[u8], c: usize) -> i32 {
    match thresholds.get(4 * c..4 * c + 4) {
        Some(&[a, b, c, d]) => i32::from_le_bytes([a, b, c, d]),
        _ => i32::MAX,
    }
}

/// Word `k` of a packed row (bytes past the row's end read as 0, which its padding
/// bits also are).
#[inline(always)]
fn row_word(row: &[u8], k: usize) -> u32 {
    match row.get(4 * k..4 * k + 4) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => {
            let tail = row.get(4 * k..).unwrap_or(&[]);
            tail.iter()
                .rev()
                .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte))
        }
    }
}

/// `+1` / `−1` as int8.
#[inline(always)]
fn sign(on: bool) -> i8 {
    if on {
        1
    } else {
        -1
    }
}

/// Set bits `start..start + len` of `words`.
fn set_bits(words: &mut [u32], start: usize, len: usize) {
    for p in start..start + len {
        if let Some(w) = words.get_mut(p / 32) {
            *w |= 1 << (p % 32);
        }
    }
}

/// Pack `values` (int8, `+1` where `≥ zero_point`) into `words` from bit `start` on.
#[inline]
fn pack_bits(words: &mut [u32], start: usize, values: &[i8], zero_point: i32) {
    for (p, &v) in (start..).zip(values) {
        if i32::from(v) >= zero_point {
            if let Some(w) = words.get_mut(p / 32) {
                *w |= 1 << (p % 32);
            }
        }
    }
}

/// `popcount((x ⊕ w) & mask)` over a row's words (`mask` `None`: every bit counts).
#[inline(always)]
fn mismatches(x: &[u32], mask: Option<&[u32]>, row: &[u8]) -> u32 {
    let mut n = 0;
    match mask {
        None => {
            for (k, &xk) in x.iter().enumerate() {
                n += (xk ^ row_word(row, k)).count_ones();
            }
        }
        Some(m) => {
            for (k, (&xk, &mk)) in x.iter().zip(m).enumerate() {
                n += ((xk ^ row_word(row, k)) & mk).count_ones();
            }
        }
    }
    n
}

/// Binary convolution: `output[b, oy, ox, oc] = +1` where `Σ x · w ≥ thresholds[oc]`
/// over the in-bounds window, else `−1` (see the module docs).
pub fn binary_conv2d(
    g: &ConvGeometry,
    input_zero_point: i32,
    thresholds: &[u8],
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    let row_len = g.kernel_h * g.kernel_w * g.in_c;
    if input.len() != in_len
        || output.len() != out_len
        || rows.bits() != 1
        || rows.rows() != g.out_c
        || rows.row_len() != row_len
        || row_len == 0
        || row_len > BINARY_ROW_CAP
        || thresholds.len() != 4 * g.out_c
    {
        return Err(Error::KernelArgs);
    }
    let words = row_len.div_ceil(32);
    let mut x_buf = [0u32; WORDS];
    let mut m_buf = [0u32; WORDS];
    let x = x_buf.get_mut(..words).ok_or(Error::KernelArgs)?;
    let m = m_buf.get_mut(..words).ok_or(Error::KernelArgs)?;
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let (ix0, kx0, run) = window_columns(g, ox);
                x.fill(0);
                let valid = (ky1 - ky0) * run;
                let full = valid == row_len;
                if !full {
                    m.fill(0);
                }
                for ky in ky0..ky1 {
                    let start = ((y0 + ky - g.pad_top) * g.in_w + ix0) * g.in_c;
                    let src = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                    let at = ky * filter_row + kx0 * g.in_c;
                    pack_bits(x, at, src, input_zero_point);
                    if !full {
                        set_bits(m, at, run);
                    }
                }
                let mask = (!full).then_some(&*m);
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                for (oc, out) in out_px.iter_mut().enumerate() {
                    let row = rows.row(oc).ok_or(Error::KernelArgs)?;
                    let d = valid as i32 - 2 * mismatches(x, mask, row) as i32;
                    *out = sign(d >= threshold(thresholds, oc));
                }
            }
        }
    }
    Ok(())
}

/// Binary fully connected: `output[b, o] = +1` where `Σ_i x[b, i] · w[o, i] ≥
/// thresholds[o]`, else `−1`.
pub fn binary_fully_connected(
    shape: &FcShape,
    input_zero_point: i32,
    thresholds: &[u8],
    rows: &PackedRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let FcShape {
        in_features,
        out_features,
        ..
    } = *shape;
    let ok = shape.fits(input.len(), output.len())
        && in_features <= BINARY_ROW_CAP
        && rows.bits() == 1
        && rows.rows() == out_features
        && rows.row_len() == in_features
        && thresholds.len() == 4 * out_features;
    if !ok {
        return Err(Error::KernelArgs);
    }
    let mut x_buf = [0u32; WORDS];
    let x = x_buf
        .get_mut(..in_features.div_ceil(32))
        .ok_or(Error::KernelArgs)?;
    for (row_in, out_row) in input
        .chunks_exact(in_features)
        .zip(output.chunks_exact_mut(out_features))
    {
        x.fill(0);
        pack_bits(x, 0, row_in, input_zero_point);
        for (o, out) in out_row.iter_mut().enumerate() {
            let row = rows.row(o).ok_or(Error::KernelArgs)?;
            let d = in_features as i32 - 2 * mismatches(x, None, row) as i32;
            *out = sign(d >= threshold(thresholds, o));
        }
    }
    Ok(())
}
