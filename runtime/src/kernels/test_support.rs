//! What the kernels' unit tests share: a seeded generator and random output stages.

use std::vec::Vec;

/// A xorshift64 generator from `seed` (nonzero): the same values on every run.
pub(crate) fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// Per-channel requantization bytes of `channels` single-rounding pairs (shift 0): the
/// multipliers `next() >> drop`, below `2^(32 − drop)`.
pub(crate) fn single_rounding_requant(
    next: &mut impl FnMut() -> u64,
    channels: usize,
    drop: u32,
) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..channels)
        .flat_map(|_| ((next() as u32) >> drop).to_le_bytes())
        .collect();
    bytes.extend((0..channels).map(|_| 0u8));
    bytes
}
