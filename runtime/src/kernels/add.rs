//! Elementwise add, int8, TFLite's scheme (`reference_integer_ops::AddElementwise`).

use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, multiply_by_quantized_multiplier, ADD_LEFT_SHIFT};

/// Offsets and fixed-point parameters of an add (see
/// [`crate::fixed_point::AddQuant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct AddParams {
    /// Minus input 1's zero point.
    pub input1_offset: i32,
    /// Minus input 2's zero point.
    pub input2_offset: i32,
    /// Output zero point.
    pub output_offset: i32,
    pub input1_multiplier: i32,
    pub input1_shift: i32,
    pub input2_multiplier: i32,
    pub input2_shift: i32,
    pub output_multiplier: i32,
    pub output_shift: i32,
    pub act_min: i32,
    pub act_max: i32,
}

/// One element: offset both inputs, shift them left by 20, scale each by its
/// multiplier, sum, requantize by the output multiplier, add the output offset, clamp.
#[inline]
pub fn add_one(p: &AddParams, a: i8, b: i8) -> i8 {
    let scale = |x: i8, offset: i32, m: i32, s: i32| {
        let shifted = i32::from(x)
            .wrapping_add(offset)
            .wrapping_mul(1 << ADD_LEFT_SHIFT);
        multiply_by_quantized_multiplier(shifted, m, s)
    };
    let a = scale(a, p.input1_offset, p.input1_multiplier, p.input1_shift);
    let b = scale(b, p.input2_offset, p.input2_multiplier, p.input2_shift);
    let raw =
        multiply_by_quantized_multiplier(a.wrapping_add(b), p.output_multiplier, p.output_shift);
    clamp_to_i8(raw.wrapping_add(p.output_offset), p.act_min, p.act_max)
}

/// `output[i] = add_one(input1[i], input2[i])`; all three the same length.
pub fn add(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), Error> {
    if input1.len() != output.len() || input2.len() != output.len() {
        return Err(Error::KernelArgs);
    }
    for ((o, &a), &b) in output.iter_mut().zip(input1).zip(input2) {
        *o = add_one(p, a, b);
    }
    Ok(())
}
