//! Binary conv and fully connected (XNOR + popcount) on `±1` inputs and packed `±1`
//! weights ([`crate::format::BinaryConv2d`]), with `±1` outputs by per-channel
//! integer thresholds.
//!
//! Inputs arrive as int8, a value counting `+1` where it is at least the input zero
//! point, or as the packed bits another binary op wrote ([`SignInput`]); outputs leave
//! as `±1` int8 or as packed bits ([`SignOutput`]). For each output pixel the kernel
//! packs its window into bits, in the filter rows' order (`[ky][kx][c]`, bit `i` of
//! the row at bit `i % 32` of word `i / 32`, as [`crate::format::packed`] lays out
//! `Packed1` rows), once for all output channels; then each channel's dot product is
//! `n − 2 · popcount(x ⊕ w)` over the `n` in-bounds taps (a mask drops the padded ones
//! at the borders). One word holds 32 multiply-accumulates.

pub use super::binarize::{SignInput, SignOutput};

use super::binarize::{
    low_bits, or_bits, refresh_band, threshold, word_bits, BitSigns, Int8Signs, SignSink,
    BAND_WORDS, WEIGHT_WORDS,
};
use super::binary_narrow;
use super::conv::window_columns;
use super::fully_connected::FcShape;
use super::xor_popcount::{steps, xor_popcount, Row, STEP};
use super::ConvGeometry;
use crate::error::Error;
use crate::format::packed::PackedRows;

/// Most weights in one binary row (a conv window `KH·KW·C`, or a fully connected
/// op's `IN`); the loader refuses longer rows.
pub const BINARY_ROW_CAP: usize = 4096;

/// Words of the longest row, rounded up to whole steps of [`xor_popcount`].
const WORDS: usize = (BINARY_ROW_CAP / 32).div_ceil(STEP) * STEP;

/// Set bits `start..start + len` of `words`, up to a word at a time.
fn set_bits(words: &mut [u32], start: usize, len: usize) {
    let (mut p, end) = (start, start + len);
    while p < end {
        let b = p % 32;
        let n = (32 - b).min(end - p);
        if let Some(w) = words.get_mut(p / 32) {
            *w |= low_bits(n) << b;
        }
        p += n;
    }
}

#[inline(always)]
fn le_word(b: &[u8]) -> u32 {
    match *b {
        [a, b, c, d, ..] => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// A little-endian word from at most four bytes (missing high bytes read as 0, as a
/// packed row's padding bits are).
#[inline(always)]
fn partial_word(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .rev()
        .fold(0u32, |acc, &byte| (acc << 8) | u32::from(byte))
}

/// `popcount((x ⊕ w) & mask)` over a packed row `w` (`mask` `None`: every bit
/// counts). Whole steps of three words in [`xor_popcount`]; the words past the row's
/// last whole step (its last bytes zero padded, as its padding bits are) one at a time.
#[inline(always)]
fn mismatches(x: &[u32], mask: Option<&[u32]>, row: &[u8]) -> u32 {
    let mut total = xor_popcount(x, mask, Row::Bytes(row));
    let done = STEP * steps(x, mask, Row::Bytes(row));
    for (k, &xk) in x.iter().enumerate().skip(done) {
        let w = match row.get(4 * k..) {
            Some(bytes) if bytes.len() >= 4 => le_word(bytes),
            Some(bytes) => partial_word(bytes),
            None => 0,
        };
        let m = mask.map_or(u32::MAX, |m| m.get(k).copied().unwrap_or(0));
        total += ((xk ^ w) & m).count_ones();
    }
    total
}

/// Copies packed rows into `out` as little-endian words, `stride` words per row (the
/// words past a row's bytes stay 0, as its padding bits are).
fn load_rows(rows: &PackedRows<'_>, out: &mut [u32], stride: usize) {
    out.fill(0);
    for (dst, row) in out.chunks_exact_mut(stride).zip(rows.iter()) {
        for (d, bytes) in dst.iter_mut().zip(row.chunks(4)) {
            *d = partial_word(bytes);
        }
    }
}

/// ORs bits `from..from + len` of `src` into `dst` from bit `at` on (`dst`'s bits there
/// are 0), up to 32 at a time.
#[inline(always)]
fn copy_bits(dst: &mut [u32], at: usize, src: &[u32], from: usize, len: usize) {
    or_bits(dst, at, len, |done, n| {
        word_bits(src, from + done) & low_bits(n)
    });
}

/// Most kernel rows the band holds.
const BAND_ROWS: usize = 16;

/// Binary convolution: `output[b, oy, ox, oc] = +1` where `Σ x · w ≥ thresholds[oc]`
/// over the in-bounds window, else `−1` (see the module docs).
///
/// Each input row is binarized once into a band of packed rows (one slot per kernel
/// row, reused while the output rows slide down), and each window is assembled from
/// those words a run of `KW·C` bits at a time. Rows too wide for the band are
/// binarized window by window instead.
pub fn binary_conv2d(
    g: &ConvGeometry,
    thresholds: &[u8],
    rows: &PackedRows<'_>,
    input: SignInput<'_>,
    output: SignOutput<'_>,
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    let row_len = g.kernel_h * g.kernel_w * g.in_c;
    if !input.holds(in_len)
        || !output.holds(out_len)
        || rows.bits() != 1
        || rows.rows() != g.out_c
        || rows.row_len() != row_len
        || row_len == 0
        || row_len > BINARY_ROW_CAP
        || thresholds.len() != 4 * g.out_c
    {
        return Err(Error::KernelArgs);
    }
    let args = (thresholds, rows);
    match output {
        SignOutput::Int8(out) => conv(g, args, input, Int8Signs::new(out, g.out_c)),
        SignOutput::Bits(out) => conv(g, args, input, BitSigns::new(out)),
    }
}

/// [`binary_conv2d`] on checked arguments, into `sink`. Inlined (both output kinds'
/// copies) except on Armv7E-M: out of line, the 64-channel benchmark layer cost the
/// Cortex-M3 9 % and the M0 7 % more; inlined, the M4 2 % more
/// (`cargo xtask bench binary`).
#[cfg_attr(
    not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))),
    inline(always)
)]
fn conv(
    g: &ConvGeometry,
    (thresholds, rows): (&[u8], &PackedRows<'_>),
    input: SignInput<'_>,
    mut sink: impl SignSink,
) -> Result<(), Error> {
    let row_len = g.kernel_h * g.kernel_w * g.in_c;
    // Both kernels' stack buffers, lent to the narrow one: as its own, they sat on the
    // stack beside these (6.9 KiB peak, against 3.5 KiB shared).
    let mut w_buf = [0u32; WEIGHT_WORDS];
    let mut band = [0u32; BAND_WORDS];
    if binary_narrow::fits(g) {
        let args = (thresholds, rows);
        return binary_narrow::binary_conv2d_narrow(
            g,
            args,
            input,
            &mut sink,
            (&mut w_buf, &mut band),
        );
    }
    // Whole steps of `xor_popcount`, zero past the row.
    let words = row_len.div_ceil(32).div_ceil(STEP) * STEP;
    let mut x_buf = [0u32; WORDS];
    let mut m_buf = [0u32; WORDS];
    let x = x_buf.get_mut(..words).ok_or(Error::KernelArgs)?;
    let m = m_buf.get_mut(..words).ok_or(Error::KernelArgs)?;
    // The weights (rows as aligned words, each zero padded to whole steps of
    // `xor_popcount`) when they all fit, else read from their bytes.
    let cached = w_buf.get_mut(..g.out_c * words);
    let cached = cached.map(|w| {
        load_rows(rows, w, words);
        &*w
    });
    let in_row = g.in_w * g.in_c;
    let row_words = in_row.div_ceil(32);
    let banded = g.kernel_h <= BAND_ROWS && g.kernel_h * row_words <= BAND_WORDS;
    let filter_row = g.kernel_w * g.in_c;
    for b in 0..g.batch {
        let image = b * g.in_h * in_row;
        // The input row each band slot holds.
        let mut held = [usize::MAX; BAND_ROWS];
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            if banded {
                let rows = (y0, ky0, ky1);
                refresh_band(
                    g,
                    image,
                    &mut band,
                    &mut held,
                    row_words,
                    rows,
                    |words, from| input.pack_row(words, from, in_row),
                )?;
            }
            for ox in 0..g.out_w {
                let (ix0, kx0, run) = window_columns(g, ox);
                x.fill(0);
                let valid = (ky1 - ky0) * run;
                let full = valid == row_len;
                if !full {
                    m.fill(0);
                }
                for ky in ky0..ky1 {
                    let iy = y0 + ky - g.pad_top;
                    let at = ky * filter_row + kx0 * g.in_c;
                    if banded {
                        let slot = (iy % g.kernel_h) * row_words;
                        let src = band.get(slot..slot + row_words).ok_or(Error::KernelArgs)?;
                        copy_bits(x, at, src, ix0 * g.in_c, run);
                    } else {
                        let start = image + (iy * g.in_w + ix0) * g.in_c;
                        input.pack(x, at, start, run)?;
                    }
                    if !full {
                        set_bits(m, at, run);
                    }
                }
                let mask = (!full).then_some(&*m);
                let x = &*x;
                if let Some(w) = cached {
                    let rows = w.chunks_exact(words).zip(thresholds.chunks_exact(4));
                    sink.put(rows.map(|(row, t)| {
                        let d = valid as i32 - 2 * xor_popcount(x, mask, Row::Words(row)) as i32;
                        d >= threshold(t)
                    }))?;
                } else {
                    let rows = rows.iter().zip(thresholds.chunks_exact(4));
                    sink.put(rows.map(|(row, t)| {
                        let d = valid as i32 - 2 * mismatches(x, mask, row) as i32;
                        d >= threshold(t)
                    }))?;
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
    thresholds: &[u8],
    rows: &PackedRows<'_>,
    input: SignInput<'_>,
    output: SignOutput<'_>,
) -> Result<(), Error> {
    let FcShape {
        batch,
        in_features,
        out_features,
    } = *shape;
    let ok = input.holds(batch * in_features)
        && output.holds(batch * out_features)
        && in_features <= BINARY_ROW_CAP
        && rows.bits() == 1
        && rows.rows() == out_features
        && rows.row_len() == in_features
        && thresholds.len() == 4 * out_features;
    if !ok {
        return Err(Error::KernelArgs);
    }
    let args = (shape, thresholds, rows);
    match output {
        SignOutput::Int8(out) => fc(args, input, Int8Signs::new(out, out_features)),
        SignOutput::Bits(out) => fc(args, input, BitSigns::new(out)),
    }
}

/// [`binary_fully_connected`] on checked arguments, into `sink`.
fn fc(
    (shape, thresholds, rows): (&FcShape, &[u8], &PackedRows<'_>),
    input: SignInput<'_>,
    mut sink: impl SignSink,
) -> Result<(), Error> {
    let in_features = shape.in_features;
    let mut x_buf = [0u32; WORDS];
    let x = x_buf
        .get_mut(..in_features.div_ceil(32))
        .ok_or(Error::KernelArgs)?;
    for b in 0..shape.batch {
        input.pack_row(x, b * in_features, in_features)?;
        let x = &*x;
        let rows = rows.iter().zip(thresholds.chunks_exact(4));
        sink.put(rows.map(|(row, t)| {
            let d = in_features as i32 - 2 * mismatches(x, None, row) as i32;
            d >= threshold(t)
        }))?;
    }
    Ok(())
}
