//! Sparse weight rows: the layout of [`Encoding::SparseRel8`] and
//! [`Encoding::SparseRel4`], walking it, validating it, and (feature `std`) writing it.
//!
//! A layer's weights are `rows` rows of `row_len` int8 values (a conv filter's output
//! channel is one row of `KH·KW·C`, in the dense layout's order; a fully connected
//! op's output one row of `IN`). Only a row's nonzero weights are stored, each with
//! its gap, the number of zeros skipped since the previous entry (or the row start):
//!
//! ```text
//! counts   rows × u16 LE      entries in each row
//! row 0    values  n0 × i8    the entries' weights, in position order
//!          gaps    n0 bytes (rel8) or ⌈n0/2⌉ bytes (rel4: two 4-bit gaps per byte,
//!                  the first entry in the low nibble; an odd row's last high nibble is 0)
//! row 1    ...
//! ```
//!
//! So an entry's position is one past the previous entry's plus its gap (the first
//! entry's position is its gap): positions strictly increase, and each must be below
//! `row_len`. A run of zeros longer than the field holds (15 or 255) is bridged by
//! filler entries of weight 0 at the largest gap. A row with `z` zeros costs its
//! nonzeros plus their gaps, not `row_len` bytes; a kernel walks it by skipping `gap`
//! inputs and taking the next.

use super::Encoding;
use crate::error::Error;

/// The sparse rows of one layer, borrowed from the data section.
#[derive(Debug, Clone, Copy)]
pub struct SparseRows<'a> {
    counts: &'a [u8],
    body: &'a [u8],
    nibbles: bool,
}

/// One row's entries: weights and their gap bytes.
#[derive(Debug, Clone, Copy)]
pub struct SparseRow<'a> {
    /// The entries' weights (int8 as bytes).
    pub values: &'a [u8],
    /// The entries' gaps: one byte each (rel8) or two per byte (rel4).
    pub gaps: &'a [u8],
}

impl SparseRow<'_> {
    /// Call `f(position, weight)` for each entry, in order.
    #[inline]
    pub fn for_each_entry(&self, nibbles: bool, mut f: impl FnMut(usize, i8)) {
        let mut next = 0usize;
        let mut values = self.values.iter();
        let mut take = |gap: u8| {
            // An odd rel4 row's stray nibble has no weight: nothing to call.
            if let Some(&w) = values.next() {
                let position = next + usize::from(gap);
                f(position, w as i8);
                next = position + 1;
            }
        };
        for &g in self.gaps {
            if nibbles {
                take(g & 15);
                take(g >> 4);
            } else {
                take(g);
            }
        }
    }
}

/// Bytes of gap data for `entries` entries.
fn gap_bytes(entries: usize, nibbles: bool) -> usize {
    if nibbles {
        entries.div_ceil(2)
    } else {
        entries
    }
}

impl<'a> SparseRows<'a> {
    /// The rows of `data` in `encoding` (`None` for a dense encoding, or when `data`
    /// is too short for the count table).
    pub fn new(data: &'a [u8], rows: usize, encoding: Encoding) -> Option<SparseRows<'a>> {
        let nibbles = match encoding {
            Encoding::SparseRel8 => false,
            Encoding::SparseRel4 => true,
            _ => return None,
        };
        let (counts, body) = data.split_at_checked(rows.checked_mul(2)?)?;
        Some(SparseRows {
            counts,
            body,
            nibbles,
        })
    }

    /// Whether the gaps are 4-bit.
    pub fn nibbles(&self) -> bool {
        self.nibbles
    }

    /// The rows, in order.
    pub fn iter(&self) -> RowIter<'a> {
        RowIter {
            counts: self.counts.chunks_exact(2),
            rest: self.body,
            nibbles: self.nibbles,
        }
    }
}

/// Iterator over [`SparseRows`]; it stops early at a row that runs past the data.
#[derive(Debug, Clone)]
pub struct RowIter<'a> {
    counts: core::slice::ChunksExact<'a, u8>,
    rest: &'a [u8],
    nibbles: bool,
}

impl<'a> Iterator for RowIter<'a> {
    type Item = SparseRow<'a>;

    #[inline]
    fn next(&mut self) -> Option<SparseRow<'a>> {
        let n = match self.counts.next()? {
            &[lo, hi] => usize::from(u16::from_le_bytes([lo, hi])),
            _ => return None,
        };
        let (values, rest) = self.rest.split_at_checked(n)?;
        let (gaps, rest) = rest.split_at_checked(gap_bytes(n, self.nibbles))?;
        self.rest = rest;
        Some(SparseRow { values, gaps })
    }
}

/// Check sparse weight bytes against the layer's shape: the count table, each row's
/// count (at most `row_len`), the total length, then every position (below
/// `row_len`) and the stray nibble of an odd rel4 row. Errors name op `op` and the row.
pub(crate) fn validate(
    op: u32,
    data: &[u8],
    rows: u32,
    row_len: u64,
    encoding: Encoding,
) -> Result<(), Error> {
    let table = u64::from(rows) * 2;
    let length = |expected: u64| Error::DataLengthMismatch {
        op,
        expected: u32::try_from(expected).unwrap_or(u32::MAX),
        got: u32::try_from(data.len()).unwrap_or(u32::MAX),
    };
    let layout = SparseRows::new(data, rows as usize, encoding).ok_or(length(table))?;
    let mut expected = table;
    for (row, pair) in (0u32..).zip(layout.counts.chunks_exact(2)) {
        let n = pair.iter().rev().fold(0u64, |a, &b| a << 8 | u64::from(b));
        if n > row_len {
            return Err(Error::SparseRowTooLong { op, row });
        }
        expected += n + gap_bytes(n as usize, layout.nibbles) as u64;
    }
    if expected != data.len() as u64 {
        return Err(length(expected));
    }
    for (row, entries) in (0u32..).zip(layout.iter()) {
        // One past the last entry: the row's used length.
        let mut end = 0u64;
        entries.for_each_entry(layout.nibbles, |position, _| end = position as u64 + 1);
        if end > row_len {
            return Err(Error::SparseIndexOutOfRow { op, row });
        }
        let stray = layout.nibbles && entries.values.len() % 2 == 1;
        if stray && entries.gaps.last().is_some_and(|&g| g >> 4 != 0) {
            return Err(Error::SparseIndexOutOfRow { op, row });
        }
    }
    Ok(())
}

/// The dense weights `rows × row_len` of sparse rows (for tests, tools and the
/// reference kernels): each entry's weight at its position.
#[cfg(any(test, feature = "std"))]
pub fn densify(
    rows: &SparseRows<'_>,
    row_count: usize,
    row_len: usize,
) -> Result<std::vec::Vec<i8>, Error> {
    let mut dense = std::vec![0i8; row_count * row_len];
    let mut n_rows = 0;
    for (row, out) in rows.iter().zip(dense.chunks_exact_mut(row_len.max(1))) {
        let mut result = Ok(());
        row.for_each_entry(rows.nibbles, |position, w| match out.get_mut(position) {
            Some(slot) => *slot = w,
            None => result = Err(Error::KernelArgs),
        });
        result?;
        n_rows += 1;
    }
    if n_rows != row_count {
        return Err(Error::KernelArgs);
    }
    Ok(dense)
}

/// Encode `rows` rows of dense int8 weights as sparse rows (`None` for a dense
/// encoding, no rows, a row longer than a `u16` count can describe, or a length that
/// is not `rows` whole rows).
#[cfg(any(test, feature = "std"))]
pub fn encode(weights: &[i8], rows: usize, encoding: Encoding) -> Option<std::vec::Vec<u8>> {
    let nibbles = match encoding {
        Encoding::SparseRel8 => false,
        Encoding::SparseRel4 => true,
        _ => return None,
    };
    let max_gap: usize = if nibbles { 15 } else { 255 };
    if rows == 0 || !weights.len().is_multiple_of(rows) {
        return None;
    }
    let row_len = weights.len() / rows;
    let mut counts = std::vec::Vec::with_capacity(2 * rows);
    let mut body = std::vec::Vec::new();
    for row in weights.chunks_exact(row_len.max(1)) {
        let mut entries: std::vec::Vec<(u8, i8)> = std::vec::Vec::new();
        // Position of the next entry if its gap were 0: the first may sit at 0,
        // later ones at least one past the previous.
        let mut next = 0usize;
        for (position, &w) in row.iter().enumerate().filter(|(_, &w)| w != 0) {
            let mut gap = position - next;
            while gap > max_gap {
                entries.push((max_gap as u8, 0));
                gap -= max_gap + 1;
            }
            entries.push((gap as u8, w));
            next = position + 1;
        }
        counts.extend_from_slice(&u16::try_from(entries.len()).ok()?.to_le_bytes());
        body.extend(entries.iter().map(|&(_, w)| w as u8));
        if nibbles {
            body.extend(entries.chunks(2).map(|pair| match pair {
                [(a, _), (b, _)] => a | b << 4,
                [(a, _)] => *a,
                _ => 0,
            }));
        } else {
            body.extend(entries.iter().map(|&(g, _)| g));
        }
    }
    counts.extend_from_slice(&body);
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn round_trip(weights: &[i8], rows: usize, encoding: Encoding) -> Vec<u8> {
        let bytes = encode(weights, rows, encoding).unwrap();
        let row_len = weights.len() / rows;
        validate(0, &bytes, rows as u32, row_len as u64, encoding).unwrap();
        let layout = SparseRows::new(&bytes, rows, encoding).unwrap();
        assert_eq!(densify(&layout, rows, row_len).unwrap(), weights);
        bytes
    }

    #[test]
    fn rows_round_trip_with_fillers_and_odd_rows() {
        let mut weights = std::vec![0i8; 3 * 300];
        for (i, w) in weights.iter_mut().enumerate() {
            if i % 37 == 0 || i % 300 == 299 || i % 300 == 0 {
                *w = (i % 251) as i8 - 100;
            }
        }
        weights[300] = 0; // row 1 starts with a gap
        for encoding in [Encoding::SparseRel8, Encoding::SparseRel4] {
            round_trip(&weights, 3, encoding);
        }
        // Long gaps need fillers: rel4 every 16 positions, rel8 every 256.
        let mut far = std::vec![0i8; 600];
        far[599] = 5;
        let rel4 = round_trip(&far, 1, Encoding::SparseRel4);
        let rel8 = round_trip(&far, 1, Encoding::SparseRel8);
        assert_eq!(rel4.len(), 2 + 38 + 19, "599 = 37 fillers of 16, then 7");
        assert_eq!(rel8.len(), 2 + 3 * 2, "599 = 2 fillers of 256, then 87");
        // Empty rows and a fully dense row.
        round_trip(&[0, 0, 0, 1, 2, 3], 2, Encoding::SparseRel4);
    }

    #[test]
    fn validation_names_each_fault() {
        let weights = [0i8, 3, 0, 0, 4, 0, 0, 0, 5, 0];
        let good = encode(&weights, 1, Encoding::SparseRel8).unwrap();
        assert_eq!(good, [3, 0, 3, 4, 5, 1, 2, 3]);
        let check = |bytes: &[u8], row_len| {
            validate(7, bytes, 1, row_len, Encoding::SparseRel8).unwrap_err()
        };
        let mut past = good.clone();
        past[7] = 9;
        assert_eq!(
            check(&past, 10),
            Error::SparseIndexOutOfRow { op: 7, row: 0 }
        );
        assert_eq!(check(&good, 2), Error::SparseRowTooLong { op: 7, row: 0 });
        assert!(matches!(
            check(&good[..7], 10),
            Error::DataLengthMismatch {
                op: 7,
                expected: 8,
                got: 7
            }
        ));
        assert!(matches!(
            check(&[1], 10),
            Error::DataLengthMismatch { expected: 2, .. }
        ));
        let odd = encode(&weights, 1, Encoding::SparseRel4).unwrap();
        let mut stray = odd.clone();
        *stray.last_mut().unwrap() |= 0x10;
        assert_eq!(
            validate(7, &stray, 1, 10, Encoding::SparseRel4).unwrap_err(),
            Error::SparseIndexOutOfRow { op: 7, row: 0 }
        );
    }
}
