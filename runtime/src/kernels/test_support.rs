//! What the kernels' unit tests share: a seeded generator, random output stages, and
//! the geometry of a conv then a 2×2 max pool.

use std::vec::Vec;

use super::ConvGeometry;

/// A `k × k` conv (stride 1, `pad` on every side) over one `h × w × c` image into
/// `out_c` channels, then the 2×2 max pool (stride 2) that reads it: `(conv, pool)`.
pub(crate) fn conv_then_pool2(
    (h, w, c): (usize, usize, usize),
    k: usize,
    pad: usize,
    out_c: usize,
) -> (ConvGeometry, ConvGeometry) {
    let conv = ConvGeometry {
        batch: 1,
        in_h: h,
        in_w: w,
        in_c: c,
        out_h: h + 2 * pad - k + 1,
        out_w: w + 2 * pad - k + 1,
        out_c,
        kernel_h: k,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        pad_top: pad,
        pad_left: pad,
    };
    let pool = ConvGeometry {
        in_h: conv.out_h,
        in_w: conv.out_w,
        in_c: out_c,
        out_h: conv.out_h / 2,
        out_w: conv.out_w / 2,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_top: 0,
        pad_left: 0,
        ..conv
    };
    (conv, pool)
}

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

/// Turns the host's AVX2 kernels on or off for this thread (a no-op elsewhere), so a
/// test can run the portable kernels on an x86_64 host too.
pub(crate) fn host_fast_path(on: bool) {
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    crate::kernels::x86::set_enabled(on);
    let _ = on;
}
