//! Slicing the caller's arena by the planned offsets.
//!
//! The arena is one `&mut [u8]`; an op needs shared views of its input tensors and a
//! mutable view of its output tensor, all inside it and the output disjoint from the
//! inputs (validation guarantees that; these helpers check it again and return an
//! error instead of panicking).

use core::ops::Range;

use crate::error::{sat_u32, Error};

/// A tensor's bytes in the arena, with its index for error messages.
#[derive(Debug, Clone)]
pub struct Region {
    /// Tensor index.
    pub tensor: u32,
    /// Byte range in the arena.
    pub range: Range<usize>,
}

/// Shared views of `inputs` and a mutable view of `output`, all inside `arena`.
///
/// Errors: a range outside the arena (`ArenaTooSmall`), or an input overlapping the
/// output (`ArenaOverlap`).
pub fn split_io<'a, const N: usize>(
    arena: &'a mut [u8],
    inputs: [&Region; N],
    output: &Region,
) -> Result<([&'a [i8]; N], &'a mut [i8]), Error> {
    let too_small = |end: usize, got: usize| Error::ArenaTooSmall {
        needed: sat_u32(end),
        got: sat_u32(got),
    };
    let len = arena.len();
    let out = &output.range;
    let (left, rest) = arena
        .split_at_mut_checked(out.start)
        .ok_or(too_small(out.end, len))?;
    let (out_bytes, right) = rest
        .split_at_mut_checked(out.end.saturating_sub(out.start))
        .ok_or(too_small(out.end, len))?;
    let left: &'a [u8] = left;
    let right: &'a [u8] = right;
    let mut views: [&'a [i8]; N] = [&[]; N];
    for (view, input) in views.iter_mut().zip(inputs) {
        let r = &input.range;
        let bytes = if r.end <= out.start {
            left.get(r.clone())
        } else if r.start >= out.end {
            right.get(r.start - out.end..r.end - out.end)
        } else {
            return Err(Error::ArenaOverlap {
                a: input.tensor,
                b: output.tensor,
            });
        };
        *view = bytes_as_i8(bytes.ok_or(too_small(r.end, len))?);
    }
    Ok((views, bytes_as_i8_mut(out_bytes)))
}

/// A shared view of one region.
pub fn view<'a>(arena: &'a [u8], region: &Region) -> Result<&'a [i8], Error> {
    arena
        .get(region.range.clone())
        .map(bytes_as_i8)
        .ok_or(Error::ArenaTooSmall {
            needed: sat_u32(region.range.end),
            got: sat_u32(arena.len()),
        })
}

/// A mutable view of one region.
pub fn view_mut<'a>(arena: &'a mut [u8], region: &Region) -> Result<&'a mut [i8], Error> {
    let got = sat_u32(arena.len());
    arena
        .get_mut(region.range.clone())
        .map(bytes_as_i8_mut)
        .ok_or(Error::ArenaTooSmall {
            needed: sat_u32(region.range.end),
            got,
        })
}

/// Reinterpret bytes as `i8`.
#[allow(unsafe_code)]
pub fn bytes_as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: `u8` and `i8` have the same size (1) and alignment (1) and every bit
    // pattern is valid for both; the new slice covers exactly the same memory with the
    // same lifetime and shared-borrow rules.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}

/// Reinterpret bytes as `i8`, mutably.
#[allow(unsafe_code)]
pub fn bytes_as_i8_mut(bytes: &mut [u8]) -> &mut [i8] {
    // SAFETY: as in `bytes_as_i8`; the unique borrow of `bytes` moves into the result,
    // so no other access to the memory exists while it lives.
    unsafe { core::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<i8>(), bytes.len()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_disjoint_regions() {
        let mut arena = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let a = Region {
            tensor: 0,
            range: 0..2,
        };
        let b = Region {
            tensor: 1,
            range: 6..8,
        };
        let out = Region {
            tensor: 2,
            range: 2..5,
        };
        let ([x, y], o) = split_io(&mut arena, [&a, &b], &out).unwrap();
        assert_eq!(x, &[1, 2]);
        assert_eq!(y, &[7, 8]);
        o.fill(-1);
        assert_eq!(arena, [1, 2, 255, 255, 255, 6, 7, 8]);
    }

    #[test]
    fn rejects_overlap_and_out_of_bounds() {
        let mut arena = [0u8; 8];
        let a = Region {
            tensor: 0,
            range: 1..4,
        };
        let out = Region {
            tensor: 2,
            range: 3..5,
        };
        assert_eq!(
            split_io(&mut arena, [&a], &out).unwrap_err(),
            Error::ArenaOverlap { a: 0, b: 2 }
        );
        let far = Region {
            tensor: 1,
            range: 6..12,
        };
        assert!(matches!(
            split_io(&mut arena, [&far], &out),
            Err(Error::ArenaTooSmall { .. })
        ));
        let out_far = Region {
            tensor: 1,
            range: 7..9,
        };
        assert!(split_io(&mut arena, [&a], &out_far).is_err());
    }
}
