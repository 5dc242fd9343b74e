//! Between the arena and ±1, for the binary kernels: inputs (int8 binarized at their
//! zero point, or packed bits as a binary op writes them for the next one) read into
//! packed words (a row, a run, or the band of input rows a conv slides over), and
//! outputs from a count and a channel's threshold, written as `±1` int8 or as bits.
//! Also the sizes of the two stack buffers both binary convs use, which the caller owns
//! and lends to the narrow kernel, so that the two kernels' buffers never sit on the
//! stack together.

/// Weight words a binary conv keeps on the stack: 1 KiB.
pub const WEIGHT_WORDS: usize = 256;

/// Words of packed input rows a binary conv keeps (a band row per kernel row): 1 KiB.
pub const BAND_WORDS: usize = 256;

use core::slice::ChunksExactMut;

use super::ConvGeometry;
use crate::error::Error;

/// A binary op's input, in NHWC order.
#[derive(Debug, Clone, Copy)]
pub enum SignInput<'a> {
    /// int8 values, `+1` where at least `zero_point`.
    Int8 {
        /// The values.
        values: &'a [i8],
        /// The input tensor's zero point.
        zero_point: i32,
    },
    /// Packed bits (FORMAT.md §4, `PackedBits`): value `i` is bit `i % 8` of byte
    /// `i / 8`, set for `+1`.
    Bits(&'a [u8]),
}

impl SignInput<'_> {
    /// Whether it holds `n` values: `n` bytes, or `⌈n / 8⌉` of bits.
    pub fn holds(&self, n: usize) -> bool {
        match self {
            SignInput::Int8 { values, .. } => values.len() == n,
            SignInput::Bits(bytes) => bytes.len() == n.div_ceil(8),
        }
    }

    /// ORs the signs of values `from..from + len` into `words` from bit `at` on (those
    /// bits of `words` are 0).
    #[inline(always)]
    pub fn pack(&self, words: &mut [u32], at: usize, from: usize, len: usize) -> Result<(), Error> {
        match *self {
            SignInput::Int8 { values, zero_point } => {
                let run = values.get(from..from + len).ok_or(Error::KernelArgs)?;
                pack_bits(words, at, run, zero_point);
            }
            SignInput::Bits(bytes) => {
                if (from + len).div_ceil(8) > bytes.len() {
                    return Err(Error::KernelArgs);
                }
                or_bits(words, at, len, |done, n| byte_bits(bytes, from + done, n));
            }
        }
        Ok(())
    }

    /// Packs values `from..from + len` into `words` from bit 0 (`words` holds exactly
    /// `len` bits, rounded up to words).
    #[inline]
    pub fn pack_row(&self, words: &mut [u32], from: usize, len: usize) -> Result<(), Error> {
        match *self {
            SignInput::Int8 { values, zero_point } => {
                let run = values.get(from..from + len).ok_or(Error::KernelArgs)?;
                pack_row(words, run, zero_point);
                Ok(())
            }
            SignInput::Bits(_) => {
                words.fill(0);
                self.pack(words, 0, from, len)
            }
        }
    }
}

/// 32 bits of `words` from bit `start` on (bits past the end read as 0).
#[inline(always)]
pub fn word_bits(words: &[u32], start: usize) -> u32 {
    let (i, s) = (start / 32, start % 32);
    let lo = words.get(i).map_or(0, |&w| w >> s);
    let hi = match s {
        0 => 0,
        _ => words.get(i + 1).map_or(0, |&w| w << (32 - s)),
    };
    lo | hi
}

/// Bits `start..start + len` (`len ≤ 32`) of packed bytes, at bit 0 of a word (bytes
/// past the end read as 0).
#[inline(always)]
pub fn byte_bits(bytes: &[u8], start: usize, len: usize) -> u32 {
    let first = start / 8;
    let mut v = 0u64;
    for k in 0..5 {
        v |= u64::from(bytes.get(first + k).copied().unwrap_or(0)) << (8 * k);
    }
    ((v >> (start % 8)) as u32) & low_bits(len)
}

/// The low `n` bits set (`n ≤ 32`).
#[inline(always)]
pub fn low_bits(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// ORs `len` bits into `dst` from bit `at` on (`dst`'s bits there are 0), up to 32 at a
/// time, `read(done, n)` giving source bits `done..done + n` at bit 0 of a word.
#[inline(always)]
pub fn or_bits(dst: &mut [u32], at: usize, len: usize, read: impl Fn(usize, usize) -> u32) {
    let mut done = 0;
    while done < len {
        let n = (len - done).min(32);
        let bits = read(done, n);
        let (dw, db) = ((at + done) / 32, (at + done) % 32);
        if let Some(w) = dst.get_mut(dw) {
            *w |= bits << db;
        }
        if db != 0 && n > 32 - db {
            if let Some(w) = dst.get_mut(dw + 1) {
                *w |= bits >> (32 - db);
            }
        }
        done += n;
    }
}

/// Writes bits `at..at + n` (`n ≤ 32`) of `bytes` from the low bits of `bits`, leaving
/// every other bit as it was.
#[inline]
pub fn put_bits(bytes: &mut [u8], at: usize, n: usize, bits: u32) {
    let mut done = 0;
    while done < n {
        let (i, s) = ((at + done) / 8, (at + done) % 8);
        let m = (8 - s).min(n - done);
        let mask = (((1u16 << m) - 1) as u8) << s;
        if let Some(b) = bytes.get_mut(i) {
            *b = (*b & !mask) | (((bits >> done) as u8) << s & mask);
        }
        done += m;
    }
}

/// Where a binary op writes its `±1` outputs, in NHWC order.
pub enum SignOutput<'a> {
    /// As int8 `−1` / `+1`.
    Int8(&'a mut [i8]),
    /// As packed bits, as [`SignInput::Bits`] reads them.
    Bits(&'a mut [u8]),
}

impl SignOutput<'_> {
    /// Whether it holds `n` values.
    pub fn holds(&self, n: usize) -> bool {
        match self {
            SignOutput::Int8(values) => values.len() == n,
            SignOutput::Bits(bytes) => bytes.len() == n.div_ceil(8),
        }
    }
}

/// The kernels' view of a [`SignOutput`], one group of outputs (a pixel's channels, a
/// fully connected row) at a time; generic, so that the int8 form's loop is what it
/// was before bits existed.
pub trait SignSink {
    /// Writes the next group's signs.
    fn put(&mut self, signs: impl Iterator<Item = bool>) -> Result<(), Error>;
}

/// `±1` int8 outputs, `group` at a time.
pub struct Int8Signs<'a>(ChunksExactMut<'a, i8>);

impl<'a> Int8Signs<'a> {
    /// Groups of `group` outputs (nonzero).
    pub fn new(values: &'a mut [i8], group: usize) -> Self {
        Int8Signs(values.chunks_exact_mut(group.max(1)))
    }
}

impl SignSink for Int8Signs<'_> {
    #[inline(always)]
    fn put(&mut self, signs: impl Iterator<Item = bool>) -> Result<(), Error> {
        let out = self.0.next().ok_or(Error::KernelArgs)?;
        for (o, on) in out.iter_mut().zip(signs) {
            *o = sign(on);
        }
        Ok(())
    }
}

/// Outputs as packed bits, from bit 0 on.
pub struct BitSigns<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> BitSigns<'a> {
    /// Bits from the first of `bytes` on.
    pub fn new(bytes: &'a mut [u8]) -> Self {
        BitSigns { bytes, at: 0 }
    }
}

impl SignSink for BitSigns<'_> {
    #[inline(always)]
    fn put(&mut self, signs: impl Iterator<Item = bool>) -> Result<(), Error> {
        // Up to 32 signs gathered in a register, then written as bytes: a
        // read-modify-write per bit cost a 16-channel conv a fifth more.
        let (mut word, mut n) = (0u32, 0);
        for on in signs {
            word |= u32::from(on) << n;
            n += 1;
            if n == 32 {
                put_bits(self.bytes, self.at, 32, word);
                self.at += 32;
                (word, n) = (0, 0);
            }
        }
        put_bits(self.bytes, self.at, n, word);
        self.at += n;
        Ok(())
    }
}

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
/// `iy % kernel_h`, `row_words` words) by `pack(slot, first value of the row)` (the
/// image starting at value `image`); `held` is each slot's row. Inlined: as a call it
/// cost the general kernel 1–4 % (64-channel layer, every board).
#[inline(always)]
pub fn refresh_band(
    g: &ConvGeometry,
    image: usize,
    band: &mut [u32],
    held: &mut [usize],
    row_words: usize,
    (y0, ky0, ky1): (usize, usize, usize),
    pack: impl Fn(&mut [u32], usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let in_row = g.in_w * g.in_c;
    for ky in ky0..ky1 {
        let iy = y0 + ky - g.pad_top;
        let slot = iy % g.kernel_h;
        if held.get(slot) != Some(&iy) {
            let words = band
                .get_mut(slot * row_words..(slot + 1) * row_words)
                .ok_or(Error::KernelArgs)?;
            pack(words, image + iy * in_row)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_bits_touches_only_its_bits() {
        let mut bytes = [0xFFu8, 0x00, 0xFF];
        put_bits(&mut bytes, 6, 12, 0b1010_1010_1010);
        assert_eq!(bytes, [0b1011_1111, 0b1010_1010, 0b1111_1110]);
        put_bits(&mut bytes, 0, 32, 0);
        assert_eq!(bytes, [0, 0, 0]);
    }
}
