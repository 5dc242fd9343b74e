//! Between int8 and ±1, for the binary kernels: int8 inputs binarized at their zero
//! point into packed bits (a row, a run, or the band of input rows a conv slides over),
//! and `±1` int8 outputs from a count and a channel's threshold. Also the sizes of the
//! two stack buffers both binary convs use, which the caller owns and lends to the
//! narrow kernel, so that the two kernels' buffers never sit on the stack together.

/// Weight words a binary conv keeps on the stack: 1 KiB.
pub const WEIGHT_WORDS: usize = 256;

/// Words of packed input rows a binary conv keeps (a band row per kernel row): 1 KiB.
pub const BAND_WORDS: usize = 256;

use super::ConvGeometry;
use crate::error::Error;

/// A channel's `i32` threshold from its four little-endian bytes.
#[inline(always)]
pub fn threshold(bytes: &[u8]) -> i32 {
    match *bytes {
        [a, b, c, d] => i32::from_le_bytes([a, b, c, d]),
        _ => i32::MAX,
    }
}

/// `+1` / `−1` as int8.
#[inline(always)]
pub fn sign(on: bool) -> i8 {
    if on {
        1
    } else {
        -1
    }
}

/// Pack `values` (int8, `+1` where `≥ zero_point`) into `words` from bit `start` on.
#[inline]
pub fn pack_bits(words: &mut [u32], start: usize, values: &[i8], zero_point: i32) {
    for (p, &v) in (start..).zip(values) {
        if i32::from(v) >= zero_point {
            if let Some(w) = words.get_mut(p / 32) {
                *w |= 1 << (p % 32);
            }
        }
    }
}

/// Binarizes the input rows that the kernel rows `ky0..ky1` of output row origin `y0`
/// read and the band does not hold yet, each into its slot (input row `iy` in slot
/// `iy % kernel_h`, `row_words` words) by `pack(slot, row)`; `held` is each slot's row.
/// Inlined: as a call it cost the general kernel 1–4 % (64-channel layer, every board).
#[inline(always)]
pub fn refresh_band(
    g: &ConvGeometry,
    image: &[i8],
    band: &mut [u32],
    held: &mut [usize],
    row_words: usize,
    (y0, ky0, ky1): (usize, usize, usize),
    pack: impl Fn(&mut [u32], &[i8]),
) -> Result<(), Error> {
    let in_row = g.in_w * g.in_c;
    for ky in ky0..ky1 {
        let iy = y0 + ky - g.pad_top;
        let slot = iy % g.kernel_h;
        if held.get(slot) != Some(&iy) {
            let words = band
                .get_mut(slot * row_words..(slot + 1) * row_words)
                .ok_or(Error::KernelArgs)?;
            let src = image
                .get(iy * in_row..(iy + 1) * in_row)
                .ok_or(Error::KernelArgs)?;
            pack(words, src);
            if let Some(h) = held.get_mut(slot) {
                *h = iy;
            }
        }
    }
    Ok(())
}

/// Packs `values` (int8, `+1` where `≥ zero_point`) into `words` from bit 0, a word at
/// a time (`words` holds exactly `values.len()` bits, rounded up to words).
#[inline]
pub fn pack_row(words: &mut [u32], values: &[i8], zero_point: i32) {
    for (w, chunk) in words.iter_mut().zip(values.chunks(32)) {
        let mut bits = 0u32;
        for (b, &v) in chunk.iter().enumerate() {
            bits |= u32::from(i32::from(v) >= zero_point) << b;
        }
        *w = bits;
    }
}
