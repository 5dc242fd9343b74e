//! Max pooling over packed `±1` bits (FORMAT.md §4, `PackedBits`): the max of `±1`
//! values is `+1` exactly where any of them is, so each output is the OR of its
//! window's in-bounds bits, up to 32 channels per read.

use super::binarize::{byte_bits, put_bits};
use super::pooling::in_place_ok;
use super::ConvGeometry;
use crate::error::Error;

/// Max pool of geometry `g` on one buffer holding the input's bits from byte `input`
/// and the output's from byte `output`: disjoint, or overlapping as an in-place int8
/// pool may (no top/left padding, `output ≤ input`). In place this is safe for the
/// same reason: an output's bit index is never above an input bit still to be read,
/// and each write touches only the output's own bits.
pub fn max_pool_bits(
    g: &ConvGeometry,
    buf: &mut [u8],
    input: usize,
    output: usize,
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    let end = |start: usize, bits: usize| {
        start
            .checked_add(bits.div_ceil(8))
            .filter(|&e| e <= buf.len())
    };
    let (Some(in_end), Some(out_end)) = (end(input, in_len), end(output, out_len)) else {
        return Err(Error::KernelArgs);
    };
    let disjoint = in_end <= output || out_end <= input;
    if g.in_c != g.out_c || !(disjoint || (in_place_ok(g) && output <= input)) {
        return Err(Error::KernelArgs);
    }
    let c = g.in_c;
    let (x0, y0) = (8 * input, 8 * output);
    let mut out_at = y0;
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            let top = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(top, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let left = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(left, g.pad_left, g.kernel_w, g.in_w);
                for c0 in (0..c).step_by(32) {
                    let n = (c - c0).min(32);
                    let mut any = 0u32;
                    for ky in ky0..ky1 {
                        let iy = top + ky - g.pad_top;
                        for kx in kx0..kx1 {
                            let ix = left + kx - g.pad_left;
                            let pixel = (b * g.in_h + iy) * g.in_w + ix;
                            any |= byte_bits(buf, x0 + pixel * c + c0, n);
                        }
                    }
                    put_bits(buf, out_at + c0, n, any);
                }
                out_at += c;
            }
        }
    }
    Ok(())
}
