//! Slicing the caller's arena by the planned offsets.
//!
//! The arena is one `&mut [u8]`; an op needs shared views of its input tensors and a
//! mutable view of its output tensor, all inside it and the output disjoint from the
//! inputs (validation guarantees that; `split` checks it again and returns `None`
//! instead of panicking).

use core::ops::Range;

/// Shared views of the inputs `a` and `b` and a mutable view of `out`, which must not
/// overlap either input (one function for one- and two-input ops: pass `a` twice).
#[cfg_attr(all(feature = "std", target_arch = "x86_64"), inline(always))]
pub(crate) fn split<'r>(
    arena: &'r mut [u8],
    a: &Range<usize>,
    b: &Range<usize>,
    out: &Range<usize>,
) -> Option<(&'r [i8], &'r [i8], &'r mut [i8])> {
    let (a, b, out) = split_bytes(arena, a, b, out)?;
    Some((bytes_as_i8(a), bytes_as_i8(b), bytes_as_i8_mut(out)))
}

/// As [`split`], the views as bytes (packed bits are bytes, not `i8` values).
#[cfg_attr(all(feature = "std", target_arch = "x86_64"), inline(always))]
pub(crate) fn split_bytes<'r>(
    arena: &'r mut [u8],
    a: &Range<usize>,
    b: &Range<usize>,
    out: &Range<usize>,
) -> Option<(&'r [u8], &'r [u8], &'r mut [u8])> {
    let (left, rest) = arena.split_at_mut_checked(out.start)?;
    let (out_bytes, right) = rest.split_at_mut_checked(out.end.checked_sub(out.start)?)?;
    let (left, right): (&'r [u8], &'r [u8]) = (left, right);
    let view = |r: &Range<usize>| {
        if r.end <= out.start {
            left.get(r.clone())
        } else if r.start >= out.end {
            right.get(r.start - out.end..r.end - out.end)
        } else {
            None
        }
    };
    Some((view(a)?, view(b)?, out_bytes))
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
    fn splits_disjoint_ranges() {
        let mut arena = [1u8, 2, 3, 4, 5, 6, 7, 8];
        let (x, y, o) = split(&mut arena, &(0..2), &(6..8), &(2..5)).unwrap();
        assert_eq!(x, &[1, 2]);
        assert_eq!(y, &[7, 8]);
        o.fill(-1);
        assert_eq!(arena, [1, 2, 255, 255, 255, 6, 7, 8]);
    }

    #[test]
    fn refuses_overlap_and_out_of_bounds() {
        let mut arena = [0u8; 8];
        // An input overlapping the output, on either side.
        assert!(split(&mut arena, &(1..4), &(1..4), &(3..5)).is_none());
        assert!(split(&mut arena, &(0..1), &(4..6), &(3..5)).is_none());
        // An input past the end of the arena.
        assert!(split(&mut arena, &(6..12), &(6..12), &(3..5)).is_none());
        // The output past the end of the arena.
        assert!(split(&mut arena, &(1..3), &(1..3), &(7..9)).is_none());
        // A reversed output range.
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..3;
        assert!(split(&mut arena, &(0..1), &(0..1), &reversed).is_none());
    }
}
