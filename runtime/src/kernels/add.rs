//! Elementwise add, int8, TFLite's scheme (`reference_integer_ops::AddElementwise`).

pub use super::AddParams;
use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, Requant, ADD_LEFT_SHIFT};

/// The three requantizations of an Add, split once per call rather than per element.
fn requants(p: &AddParams) -> [Requant; 3] {
    [
        Requant::new(p.input1_multiplier, p.input1_shift),
        Requant::new(p.input2_multiplier, p.input2_shift),
        Requant::new(p.output_multiplier, p.output_shift),
    ]
}

/// One element: offset both inputs, shift them left by 20, scale each by its
/// multiplier, sum, requantize by the output multiplier, add the output offset, clamp.
#[inline]
fn add_with(p: &AddParams, [r1, r2, out]: &[Requant; 3], a: i8, b: i8) -> i8 {
    let shifted = |x: i8, offset: i32| {
        i32::from(x)
            .wrapping_add(offset)
            .wrapping_mul(1 << ADD_LEFT_SHIFT)
    };
    let a = r1.apply(shifted(a, p.input1_offset));
    let b = r2.apply(shifted(b, p.input2_offset));
    clamp_to_i8(
        out.apply(a.wrapping_add(b)).wrapping_add(p.output_offset),
        p.act_min,
        p.act_max,
    )
}

/// One element of [`add`].
pub fn add_one(p: &AddParams, a: i8, b: i8) -> i8 {
    add_with(p, &requants(p), a, b)
}

/// `output[i] = add_one(input1[i], input2[i])`; all three the same length.
pub fn add(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Result<(), Error> {
    if input1.len() != output.len() || input2.len() != output.len() {
        return Err(Error::KernelArgs);
    }
    // x86_64 hosts: whole groups of eight on AVX2 (same results); the rest here.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    let done = super::x86::add(p, input1, input2, output).unwrap_or(0);
    #[cfg(not(all(feature = "std", target_arch = "x86_64")))]
    let done = 0;
    let requants = requants(p);
    let rest = output.iter_mut().zip(input1).zip(input2).skip(done);
    for ((o, &a), &b) in rest {
        *o = add_with(p, &requants, a, b);
    }
    Ok(())
}
