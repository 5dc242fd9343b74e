//! Softmax over the last dimension, int8 in, int8 out with scale 1/256 and zero point
//! −128, following TFLite's int8 reference (`reference_ops::Softmax` for int8):
//!
//! 1. `diff = x − max(row)`; differences below `diff_min` contribute nothing and
//!    output −128;
//! 2. `diff` is scaled to Q5.26 by `input_multiplier · 2^input_left_shift`
//!    (`beta · input_scale` folded in) and exponentiated with gemmlowp's
//!    `exp_on_negative_values` (Q0.31);
//! 3. the exponentials are summed in Q12.19, the sum's reciprocal taken with
//!    `GetReciprocal`, and each output is `exp · 1/sum` rescaled to 8 fractional bits,
//!    minus 128, clamped to int8.
//!
//! It is bit-exact with `kernels::reference::softmax`; bit-exactness with
//! TFLite itself rests on the fixed-point transcriptions in [`crate::fixed_point`] and
//! is not yet checked against TFLite's output.

use crate::error::Error;
use crate::fixed_point::{
    exp_on_negative_values, get_reciprocal, multiply_by_quantized_multiplier_greater_than_one,
    rounding_divide_by_pot, saturating_rounding_doubling_high_mul, SOFTMAX_ACCUM_INTEGER_BITS,
    SOFTMAX_DIFF_INTEGER_BITS,
};

/// Softmax parameters (see [`crate::fixed_point::SoftmaxQuant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxParams {
    /// Q0.31 multiplier of `beta · input_scale · 2^26`.
    pub input_multiplier: i32,
    /// Its left shift (0..=30).
    pub input_left_shift: i32,
    /// Smallest difference from the row maximum that still counts (≤ 0).
    pub diff_min: i32,
}

/// Rows up to this long keep their exponentials on the stack instead of computing
/// them twice.
const CACHED_DEPTH: usize = 64;

/// `exp(diff · scale)` in Q0.31, or `None` below `diff_min`. Not inlined: softmax runs
/// once per inference on a short row, so its two call sites sharing one copy saves
/// flash at no measurable cost.
#[inline(never)]
pub(crate) fn exp_of_diff(p: &SoftmaxParams, diff: i32) -> Option<i32> {
    if diff < p.diff_min {
        return None;
    }
    let scaled = multiply_by_quantized_multiplier_greater_than_one(
        diff,
        p.input_multiplier,
        p.input_left_shift,
    );
    Some(exp_on_negative_values::<SOFTMAX_DIFF_INTEGER_BITS>(scaled))
}

/// The int8 output for one exponential, given the row's reciprocal.
#[inline]
pub(crate) fn output_of(exp: Option<i32>, scale: i32, bits_over_unit: i32) -> i8 {
    match exp {
        None => i8::MIN,
        Some(e) => {
            let unsat = rounding_divide_by_pot(
                saturating_rounding_doubling_high_mul(scale, e),
                bits_over_unit + 31 - 8,
            );
            unsat.wrapping_add(-128).clamp(-128, 127) as i8
        }
    }
}

/// Softmax of each row of `depth` values.
pub fn softmax(
    depth: usize,
    p: &SoftmaxParams,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    if depth == 0 || input.len() != output.len() || !input.len().is_multiple_of(depth) {
        return Err(Error::KernelArgs);
    }
    for (row, out_row) in input
        .chunks_exact(depth)
        .zip(output.chunks_exact_mut(depth))
    {
        let max = i32::from(row.iter().copied().max().unwrap_or(0));
        let mut cache = [None; CACHED_DEPTH];
        let mut sum = 0i32;
        for (i, &x) in row.iter().enumerate() {
            let e = exp_of_diff(p, i32::from(x) - max);
            if let Some(slot) = cache.get_mut(i) {
                *slot = e;
            }
            if let Some(e) = e {
                // Q0.31 → Q12.19 (gemmlowp's Rescale<12>).
                sum =
                    sum.wrapping_add(rounding_divide_by_pot(e, SOFTMAX_ACCUM_INTEGER_BITS as i32));
            }
        }
        let (scale, bits) = get_reciprocal(sum, SOFTMAX_ACCUM_INTEGER_BITS as i32);
        for (i, (o, &x)) in out_row.iter_mut().zip(row).enumerate() {
            let e = match cache.get(i) {
                // The first pass cached every position below CACHED_DEPTH.
                Some(&cached) => cached,
                _ => exp_of_diff(p, i32::from(x) - max),
            };
            *o = output_of(e, scale, bits);
        }
    }
    Ok(())
}
