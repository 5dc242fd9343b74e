//! Packed low-bit weight rows: the layout of [`Encoding::Packed4`],
//! [`Encoding::Packed2`] and [`Encoding::Packed1`], unpacking it, validating it, and
//! (feature `std`) writing it.
//!
//! A layer's weights are `rows` rows of `row_len` values in the dense layout's order
//! (a conv filter: one row per output channel of `KH·KW·C`; a fully connected op: one
//! row per output of `IN`; a depthwise filter: one row per tap of `OC`). Each row is
//! packed on its own, `8 / bits` values per byte, the first value in the lowest bits,
//! and padded with zero bits to a whole byte, so every row starts on a byte:
//!
//! ```text
//! row 0    ⌈row_len · bits / 8⌉ bytes
//! row 1    ...
//! ```
//!
//! 4- and 2-bit values are two's complement (`-8..=7`, `-2..=1`; a symmetric
//! quantizer uses `±7` and `±1`); a 1-bit value is `+1` when set and `-1` when clear
//! (binary weights have no zero). Kernels unpack a few rows at a time to int8 and run
//! the int8 inner loops on them, so every packed layer is bit-exact with the dense
//! layer of its unpacked weights.

use super::Encoding;
use crate::error::Error;

/// The packed rows of one layer, borrowed from the data section.
#[derive(Debug, Clone, Copy)]
pub struct PackedRows<'a> {
    data: &'a [u8],
    rows: usize,
    row_len: usize,
    bits: u32,
}

/// Bits per value of a packed encoding (`None` for dense and sparse ones).
pub const fn bits_of(encoding: Encoding) -> Option<u32> {
    match encoding {
        Encoding::Packed4 => Some(4),
        Encoding::Packed2 => Some(2),
        Encoding::Packed1 => Some(1),
        Encoding::Dense | Encoding::SparseRel8 | Encoding::SparseRel4 => None,
    }
}

/// Bytes of one packed row of `row_len` values at `bits` each.
fn row_bytes(row_len: u64, bits: u32) -> u64 {
    (row_len * u64::from(bits)).div_ceil(8)
}

impl<'a> PackedRows<'a> {
    /// The rows of `data` in `encoding` (`None` for a dense or sparse encoding, or when
    /// `data` is not exactly `rows` packed rows of `row_len`).
    pub fn new(
        data: &'a [u8],
        rows: usize,
        row_len: usize,
        encoding: Encoding,
    ) -> Option<PackedRows<'a>> {
        let bits = bits_of(encoding)?;
        let len = row_bytes(row_len as u64, bits).checked_mul(rows as u64)?;
        (len == data.len() as u64).then_some(PackedRows {
            data,
            rows,
            row_len,
            bits,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Values per row.
    pub fn row_len(&self) -> usize {
        self.row_len
    }

    /// Bits per value.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Every row's bytes, in order.
    #[inline]
    pub fn iter(&self) -> core::slice::ChunksExact<'a, u8> {
        let n = row_bytes(self.row_len as u64, self.bits) as usize;
        self.data.chunks_exact(n.max(1))
    }

    /// Row `r`'s bytes.
    #[inline]
    pub fn row(&self, r: usize) -> Option<&'a [u8]> {
        let n = row_bytes(self.row_len as u64, self.bits) as usize;
        let start = r.checked_mul(n)?;
        self.data.get(start..start.checked_add(n)?)
    }

    /// Unpacks whole rows `first..first + out.len() / row_len` into `out` (int8, row
    /// after row); `None` if they are not all there or `out` is not whole rows.
    #[inline]
    pub fn unpack_rows(&self, first: usize, out: &mut [i8]) -> Option<()> {
        if self.row_len == 0 || !out.len().is_multiple_of(self.row_len) {
            return None;
        }
        for (r, dst) in (first..).zip(out.chunks_exact_mut(self.row_len)) {
            unpack_range(self.row(r)?, self.bits, 0, dst);
        }
        Some(())
    }

    /// Unpacks values `start..start + out.len()` of row `r` into `out`; `None` if they
    /// are not all in the row.
    #[inline]
    pub fn unpack_part(&self, r: usize, start: usize, out: &mut [i8]) -> Option<()> {
        if start.checked_add(out.len())? > self.row_len {
            return None;
        }
        unpack_range(self.row(r)?, self.bits, start, out);
        Some(())
    }
}

/// Value `k` (`0..8 / BITS`) of byte `b`.
#[inline(always)]
fn value<const BITS: u32>(b: u8, k: u32) -> i8 {
    if BITS == 1 {
        // Set: +1, clear: −1.
        (((b >> k) & 1) as i8) * 2 - 1
    } else {
        // Move the field to the top, then sign-extend it back down.
        ((b << (8 - BITS - k * BITS)) as i8) >> (8 - BITS)
    }
}

/// Unpacks values `start..start + out.len()` of a packed row into `out` (values past the
/// row's bytes stay untouched; callers check the range).
#[inline]
pub fn unpack_range(row: &[u8], bits: u32, start: usize, out: &mut [i8]) {
    match bits {
        4 => unpack::<4>(row, start, out),
        2 => unpack::<2>(row, start, out),
        _ => unpack::<1>(row, start, out),
    }
}

#[inline(always)]
fn unpack<const BITS: u32>(row: &[u8], start: usize, out: &mut [i8]) {
    let per_byte = (8 / BITS) as usize;
    let skip = start % per_byte;
    let Some(bytes) = row.get(start / per_byte..) else {
        return;
    };
    // A misaligned start: the head, value by value, up to the next whole byte.
    let head = (per_byte - skip) % per_byte;
    let (out_head, out_rest) = out.split_at_mut(head.min(out.len()));
    let mut bytes = bytes.iter();
    if !out_head.is_empty() {
        if let Some(&b) = bytes.next() {
            for (k, o) in (skip as u32..).zip(out_head.iter_mut()) {
                *o = value::<BITS>(b, k);
            }
        }
    }
    // Then whole bytes, and a partial last one.
    for (chunk, &b) in out_rest.chunks_mut(per_byte).zip(bytes) {
        for (k, o) in (0u32..).zip(chunk.iter_mut()) {
            *o = value::<BITS>(b, k);
        }
    }
}

/// Check packed weight bytes against the layer's shape: exactly `rows` rows of
/// `row_len` (`DataLengthMismatch`), and every row's padding bits past its last value
/// zero (`PackedPaddingNotZero`), so one set of weights has one encoding.
pub(crate) fn validate(
    op: u32,
    data: &[u8],
    rows: u32,
    row_len: u64,
    encoding: Encoding,
) -> Result<(), Error> {
    let bits = bits_of(encoding).ok_or(Error::EncodingNotSupported {
        op,
        encoding: encoding as u32,
    })?;
    let n = row_bytes(row_len, bits);
    let expected = n * u64::from(rows);
    if expected != data.len() as u64 {
        return Err(Error::DataLengthMismatch {
            op,
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
            got: u32::try_from(data.len()).unwrap_or(u32::MAX),
        });
    }
    let used = (row_len * u64::from(bits)) % 8;
    if used != 0 && n > 0 {
        let spare = !((1u8 << used) - 1);
        for (row, bytes) in (0u32..).zip(data.chunks_exact(n as usize)) {
            if bytes.last().is_some_and(|&b| b & spare != 0) {
                return Err(Error::PackedPaddingNotZero { op, row });
            }
        }
    }
    Ok(())
}

/// The dense int8 weights (`rows × row_len`) of packed rows (for tests, tools and the
/// reference kernels).
#[cfg(any(test, feature = "std"))]
pub fn densify(rows: &PackedRows<'_>) -> std::vec::Vec<i8> {
    let mut dense = std::vec![0i8; rows.rows * rows.row_len];
    // `new` checked the length, so every row is there.
    let _ = rows.unpack_rows(0, &mut dense);
    dense
}

/// Encode `rows` rows of int8 weights packed at `encoding`'s width (`None` for a dense
/// or sparse encoding, no rows, a length that is not `rows` whole rows, or a value the
/// width cannot hold: outside `-8..=7` for 4 bits, `-2..=1` for 2, not `±1` for 1).
#[cfg(any(test, feature = "std"))]
pub fn encode(weights: &[i8], rows: usize, encoding: Encoding) -> Option<std::vec::Vec<u8>> {
    let bits = bits_of(encoding)?;
    if rows == 0 || !weights.len().is_multiple_of(rows) {
        return None;
    }
    let row_len = weights.len() / rows;
    let per_byte = (8 / bits) as usize;
    let field = |w: i8| -> Option<u8> {
        if bits == 1 {
            return match w {
                1 => Some(1),
                -1 => Some(0),
                _ => None,
            };
        }
        let half = 1i8 << (bits - 1);
        ((-half..half).contains(&w)).then_some((w as u8) & ((1u8 << bits) - 1))
    };
    let mut out = std::vec::Vec::with_capacity(rows * row_len.div_ceil(per_byte));
    for row in weights.chunks_exact(row_len.max(1)) {
        for chunk in row.chunks(per_byte) {
            let mut byte = 0u8;
            for (k, &w) in (0u32..).zip(chunk) {
                byte |= field(w)? << (k * bits);
            }
            out.push(byte);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const PACKED: [Encoding; 3] = [Encoding::Packed4, Encoding::Packed2, Encoding::Packed1];

    fn sample(encoding: Encoding, n: usize) -> Vec<i8> {
        let values: &[i8] = match encoding {
            Encoding::Packed4 => &[-8, -7, -3, 0, 1, 5, 7],
            Encoding::Packed2 => &[-2, -1, 0, 1],
            _ => &[-1, 1],
        };
        (0..n)
            .map(|i| values[(i * 7 + i / 3) % values.len()])
            .collect()
    }

    #[test]
    fn rows_round_trip_at_every_width_and_offset() {
        for encoding in PACKED {
            for row_len in [1usize, 3, 7, 8, 9, 17, 150] {
                let weights = sample(encoding, 3 * row_len);
                let bytes = encode(&weights, 3, encoding).unwrap();
                validate(0, &bytes, 3, row_len as u64, encoding).unwrap();
                let rows = PackedRows::new(&bytes, 3, row_len, encoding).unwrap();
                assert_eq!(densify(&rows), weights, "{encoding:?} row_len {row_len}");
                // Any part of any row, from any offset.
                for start in 0..row_len {
                    for len in 0..=row_len - start {
                        let mut part = std::vec![99i8; len];
                        rows.unpack_part(2, start, &mut part).unwrap();
                        let from = 2 * row_len + start;
                        assert_eq!(part, &weights[from..from + len]);
                    }
                }
                assert!(rows.unpack_part(0, row_len, &mut [0]).is_none());
            }
        }
    }

    #[test]
    fn layout_is_low_bits_first() {
        assert_eq!(
            encode(&[1, -1, 7], 1, Encoding::Packed4).unwrap(),
            [0xF1, 0x07]
        );
        assert_eq!(
            encode(&[1, -1, -2, 0, 1], 1, Encoding::Packed2).unwrap(),
            [0x2D, 0x01]
        );
        assert_eq!(
            encode(&[1, -1, 1, 1], 1, Encoding::Packed1).unwrap(),
            [0x0D]
        );
        // Values the width cannot hold.
        assert!(encode(&[8], 1, Encoding::Packed4).is_none());
        assert!(encode(&[-3], 1, Encoding::Packed2).is_none());
        assert!(encode(&[0], 1, Encoding::Packed1).is_none());
        assert!(encode(&[1], 1, Encoding::Dense).is_none());
    }

    #[test]
    fn validation_names_each_fault() {
        let bytes = encode(&[1, 2, 3, -1, -2, -3], 2, Encoding::Packed4).unwrap();
        assert_eq!(bytes, [0x21, 0x03, 0xEF, 0x0D]);
        assert_eq!(
            validate(5, &bytes[..3], 2, 3, Encoding::Packed4).unwrap_err(),
            Error::DataLengthMismatch {
                op: 5,
                expected: 4,
                got: 3
            }
        );
        let mut dirty = bytes;
        dirty[3] |= 0x40;
        assert_eq!(
            validate(5, &dirty, 2, 3, Encoding::Packed4).unwrap_err(),
            Error::PackedPaddingNotZero { op: 5, row: 1 }
        );
        assert!(matches!(
            validate(5, &dirty, 2, 3, Encoding::SparseRel8).unwrap_err(),
            Error::EncodingNotSupported { op: 5, .. }
        ));
    }
}
