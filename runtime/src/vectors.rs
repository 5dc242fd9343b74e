//! Test vectors (`vectors.bin`): int8 inputs with their labels and the host runtime's
//! outputs, so firmware can check it computes byte for byte what the host computed.
//!
//! Little-endian layout:
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic `SPVC` |
//! | 2 | version (1) |
//! | 2 | reserved, 0 |
//! | 4 | vector count `n` |
//! | 4 | input length (int8 elements) |
//! | 4 | output length (int8 elements) |
//! | `n × (1 + in + out)` | per vector: label (u8), input, expected output |
//!
//! The file must be exactly that long.

use crate::arena::bytes_as_i8;
use crate::Error;

const MAGIC: &[u8; 4] = b"SPVC";
const VERSION: u16 = 1;
const HEADER_LEN: usize = 20;

/// A parsed, length-checked vector file borrowed from flash.
#[derive(Debug, Clone, Copy)]
pub struct Vectors<'a> {
    records: &'a [u8],
    count: usize,
    input_len: usize,
    output_len: usize,
}

/// One test vector.
#[derive(Debug, Clone, Copy)]
pub struct Vector<'a> {
    /// The dataset label.
    pub label: u8,
    /// The quantized input.
    pub input: &'a [i8],
    /// The host runtime's output for `input`.
    pub expected: &'a [i8],
}

fn le_u32(bytes: &[u8], at: usize) -> Result<usize, Error> {
    let b: [u8; 4] = bytes
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::BadVectors)?;
    usize::try_from(u32::from_le_bytes(b)).map_err(|_| Error::BadVectors)
}

impl<'a> Vectors<'a> {
    /// Checks the header and the total length.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if bytes.get(..4) != Some(MAGIC.as_slice()) {
            return Err(Error::BadVectors);
        }
        let version = bytes
            .get(4..6)
            .and_then(|v| v.try_into().ok())
            .map(u16::from_le_bytes);
        if version != Some(VERSION) {
            return Err(Error::BadVectors);
        }
        let (count, input_len, output_len) =
            (le_u32(bytes, 8)?, le_u32(bytes, 12)?, le_u32(bytes, 16)?);
        let record = input_len
            .checked_add(output_len)
            .and_then(|n| n.checked_add(1))
            .ok_or(Error::BadVectors)?;
        let total = record
            .checked_mul(count)
            .and_then(|n| n.checked_add(HEADER_LEN))
            .ok_or(Error::BadVectors)?;
        if bytes.len() != total {
            return Err(Error::BadVectors);
        }
        let records = bytes.get(HEADER_LEN..).ok_or(Error::BadVectors)?;
        Ok(Self {
            records,
            count,
            input_len,
            output_len,
        })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.count
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Input elements per vector.
    pub fn input_len(&self) -> usize {
        self.input_len
    }
    /// Output elements per vector.
    pub fn output_len(&self) -> usize {
        self.output_len
    }

    /// Vector `i`, if it exists.
    pub fn get(&self, i: usize) -> Option<Vector<'a>> {
        let record = 1 + self.input_len + self.output_len;
        let bytes = self.records.get(i.checked_mul(record)?..)?.get(..record)?;
        let (label, rest) = bytes.split_first()?;
        let (input, expected) = rest.split_at_checked(self.input_len)?;
        Some(Vector {
            label: *label,
            input: bytes_as_i8(input),
            expected: bytes_as_i8(expected),
        })
    }

    /// All vectors in order.
    pub fn iter(&self) -> impl Iterator<Item = Vector<'a>> + '_ {
        (0..self.count).filter_map(|i| self.get(i))
    }
}

/// Encodes vectors `(label, input, expected output)`; every input and output must have
/// the given lengths.
#[cfg(feature = "std")]
pub fn write_vectors(
    input_len: usize,
    output_len: usize,
    vectors: &[(u8, std::vec::Vec<i8>, std::vec::Vec<i8>)],
) -> Result<std::vec::Vec<u8>, Error> {
    let u32_of = |n: usize| u32::try_from(n).map_err(|_| Error::Encode);
    let mut out =
        std::vec::Vec::with_capacity(HEADER_LEN + vectors.len() * (1 + input_len + output_len));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for n in [vectors.len(), input_len, output_len] {
        out.extend_from_slice(&u32_of(n)?.to_le_bytes());
    }
    for (label, input, expected) in vectors {
        if input.len() != input_len || expected.len() != output_len {
            return Err(Error::Encode);
        }
        out.push(*label);
        out.extend(input.iter().map(|&v| v as u8));
        out.extend(expected.iter().map(|&v| v as u8));
    }
    Ok(out)
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use std::vec;

    #[test]
    fn round_trip_and_every_truncation_is_an_error() {
        let blob = write_vectors(
            3,
            2,
            &[
                (7, vec![1, -2, 3], vec![-128, 127]),
                (1, vec![0, 0, -1], vec![5, 6]),
            ],
        )
        .unwrap();
        let v = Vectors::parse(&blob).unwrap();
        assert_eq!((v.len(), v.input_len(), v.output_len()), (2, 3, 2));
        let first = v.get(0).unwrap();
        assert_eq!(
            (first.label, first.input, first.expected),
            (7, &[1i8, -2, 3][..], &[-128i8, 127][..])
        );
        assert_eq!(
            v.iter().map(|x| x.label).collect::<std::vec::Vec<_>>(),
            [7, 1]
        );
        assert!(v.get(2).is_none());
        for cut in 0..blob.len() {
            assert_eq!(
                Vectors::parse(&blob[..cut]).unwrap_err(),
                Error::BadVectors,
                "prefix {cut}"
            );
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert_eq!(Vectors::parse(&longer).unwrap_err(), Error::BadVectors);
        let mut huge = blob.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Vectors::parse(&huge).unwrap_err(), Error::BadVectors);
    }
}
