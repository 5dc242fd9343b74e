//! Elementwise add on eight lanes: `kernels::add::add_one` (TFLite's
//! `AddElementwise`: offset, shift left by 20, one requantization per input, sum, the
//! output's requantization, offset, clamp) with each step on vectors, over whole groups
//! of eight; `kernels::add::add` does the rest.

use core::arch::x86_64::*;

use super::depthwise::widen8;
use super::requant::{bytes8, Finish, Quant8};
use crate::fixed_point::ADD_LEFT_SHIFT;
use crate::kernels::AddParams;

/// AVX2 elementwise add of the leading whole groups of eight: how many elements it
/// wrote, or `None` without AVX2 (`kernels::add::add`, which checked the lengths and
/// calls this first on x86_64 hosts, runs its portable loop over the rest).
pub(crate) fn add(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) -> Option<usize> {
    if !super::avx2() {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: the CPU has AVX2 (checked just above).
    unsafe {
        add_avx2(p, input1, input2, output);
    }
    Some(output.len().min(input1.len()).min(input2.len()) / 8 * 8)
}

#[target_feature(enable = "avx2")]
fn add_avx2(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) {
    let r1 = Quant8::splat(p.input1_multiplier, p.input1_shift);
    let r2 = Quant8::splat(p.input2_multiplier, p.input2_shift);
    let out = Quant8::splat(p.output_multiplier, p.output_shift);
    let finish = Finish::with(p.output_offset, p.act_min, p.act_max);
    let (o1, o2) = (
        _mm256_set1_epi32(p.input1_offset),
        _mm256_set1_epi32(p.input2_offset),
    );
    let (a, b) = (input1.as_chunks::<8>(), input2.as_chunks::<8>());
    for ((a, b), y) in a.0.iter().zip(b.0).zip(output.chunks_exact_mut(8)) {
        // `(x + offset) · 2^20` wraps like the scalar `wrapping_mul`.
        let shifted = |x: &[i8; 8], offset: __m256i| {
            _mm256_slli_epi32::<{ ADD_LEFT_SHIFT as i32 }>(_mm256_add_epi32(widen8(x), offset))
        };
        let sum = _mm256_add_epi32(r1.requant(shifted(a, o1)), r2.requant(shifted(b, o2)));
        if let Ok(y) = <&mut [i8; 8]>::try_from(y) {
            *y = bytes8(finish.output(out.requant(sum)));
        }
    }
}
