//! Hand-computed cases for the fixed-point primitives.

use super::*;

const HALF: i32 = 1 << 30; // 0.5 in Q0.31

#[test]
fn srdhm_hand_cases() {
    // 2^30 · 2^30 / 2^31 = 2^29 exactly.
    assert_eq!(saturating_rounding_doubling_high_mul(HALF, HALF), 1 << 29);
    // 3 · 2^30 / 2^31 = 1.5: a positive tie goes up to 2.
    assert_eq!(saturating_rounding_doubling_high_mul(3, HALF), 2);
    // −1.5: (−3·2^30 + 1 − 2^30) / 2^31 = −2 + 2^-31, truncated toward zero: −1.
    assert_eq!(saturating_rounding_doubling_high_mul(-3, HALF), -1);
    // −1.25 → −1, −1.75 → −2 (no ties).
    assert_eq!(saturating_rounding_doubling_high_mul(-5, 1 << 29), -1);
    assert_eq!(saturating_rounding_doubling_high_mul(-7, 1 << 29), -2);
    // The one overflow: MIN · MIN saturates.
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
        i32::MAX
    );
    // (2^31 − 1)^2 / 2^31 = 2^31 − 2 + 2^-31 → 2^31 − 2.
    assert_eq!(
        saturating_rounding_doubling_high_mul(i32::MAX, i32::MAX),
        i32::MAX - 1
    );
}

#[test]
fn rounding_divide_by_pot_hand_cases() {
    assert_eq!(rounding_divide_by_pot(5, 1), 3); // 2.5 → 3 (away from zero)
    assert_eq!(rounding_divide_by_pot(-5, 1), -3); // −2.5 → −3
    assert_eq!(rounding_divide_by_pot(7, 2), 2); // 1.75 → 2
    assert_eq!(rounding_divide_by_pot(-6, 2), -2); // −1.5 → −2
    assert_eq!(rounding_divide_by_pot(-5, 2), -1); // −1.25 → −1
    assert_eq!(rounding_divide_by_pot(1234, 0), 1234);
    assert_eq!(rounding_divide_by_pot(i32::MIN, 31), -1); // −1 exactly
    assert_eq!(rounding_divide_by_pot(i32::MAX, 31), 1); // 0.99… → 1
}

#[test]
fn quantize_multiplier_hand_cases() {
    // 0.5 = 0.5 · 2^0 → (2^30, 0): 2^30 · 2^(0 − 31) = 0.5.
    assert_eq!(quantize_multiplier(0.5), (1 << 30, 0));
    // 1.0 = 0.5 · 2^1.
    assert_eq!(quantize_multiplier(1.0), (1 << 30, 1));
    // 0.75 · 2^31 = 1_610_612_736.
    assert_eq!(quantize_multiplier(0.75), (1_610_612_736, 0));
    // 0.003 = 0.768 · 2^-8; 0.768 · 2^31 = 1_649_267_441.66 → 1_649_267_442.
    assert_eq!(quantize_multiplier(0.003), (1_649_267_442, -8));
    // q rounds up to 2^31: halve it and bump the shift.
    assert_eq!(quantize_multiplier(1.0 - 1e-12), (1 << 30, 1));
    // Out of range or invalid inputs.
    assert_eq!(quantize_multiplier(0.0), (0, 0));
    assert_eq!(quantize_multiplier(-1.0), (0, 0));
    assert_eq!(quantize_multiplier(f64::NAN), (0, 0));
    assert_eq!(quantize_multiplier(1e-12), (0, 0)); // shift would be −39
    assert_eq!(quantize_multiplier(1e12), (i32::MAX, MAX_SHIFT));
    // Subnormal input still decomposes (and underflows to zero).
    assert_eq!(quantize_multiplier(f64::from_bits(1)), (0, 0));
}

#[test]
fn multiply_by_quantized_multiplier_hand_cases() {
    // M = 0.5: 100 → 50.
    assert_eq!(multiply_by_quantized_multiplier(100, HALF, 0), 50);
    // M = 0.75 · 2^-2 = 0.1875: SRDHM(100, 0.75) = 75, then 75 / 4 = 18.75 → 19.
    assert_eq!(multiply_by_quantized_multiplier(100, 1_610_612_736, -2), 19);
    assert_eq!(
        multiply_by_quantized_multiplier(-100, 1_610_612_736, -2),
        -19
    );
    // M = 0.5 · 2^2 = 2: 3 · 4 = 12, SRDHM(12, 0.5) = 6.
    assert_eq!(multiply_by_quantized_multiplier(3, HALF, 2), 6);
    // The first rounding's negative tie: −3 · 0.5 = −1.5 → −1.
    assert_eq!(multiply_by_quantized_multiplier(-3, HALF, 0), -1);
    // Multiplier 0 gives 0.
    assert_eq!(multiply_by_quantized_multiplier(12345, 0, -5), 0);
}

#[test]
fn add_quant_hand_case() {
    // s1 = 0.5, s2 = 0.25, so = 1: twice_max = 1.
    // in1: 0.5 → (2^30, 0); in2: 0.25 → (2^30, −1); out: 1/2^20 = 0.5·2^-19 → (2^30, −19).
    let q = AddQuant::from_scales(0.5, 0.25, 1.0);
    assert_eq!(
        q,
        AddQuant {
            input1_multiplier: 1 << 30,
            input1_shift: 0,
            input2_multiplier: 1 << 30,
            input2_shift: -1,
            output_multiplier: 1 << 30,
            output_shift: -19,
        }
    );
}

#[test]
fn softmax_quant_hand_case() {
    // beta = 1, scale = 2^-8: real = 2^-8 · 2^26 = 2^18 = 0.5 · 2^19 → (2^30, 19).
    // diff_min = −floor(31 · 2^26 / 2^19) = −31 · 2^7 = −3968.
    let q = SoftmaxQuant::from_scale(1.0, 1.0 / 256.0);
    assert_eq!(
        q,
        Some(SoftmaxQuant {
            input_multiplier: 1 << 30,
            input_left_shift: 19,
            diff_min: -3968,
        })
    );
    assert_eq!(SoftmaxQuant::from_scale(1.0, 1e-12), None);
}

#[test]
fn exp_and_reciprocal_are_close_to_float() {
    let one = 2_147_483_648.0f64;
    assert_eq!(exp_on_negative_values::<5>(0), i32::MAX);
    for k in 1..=40 {
        // a = −k/8 in Q5.26.
        let a = -(k << 23);
        let got = f64::from(exp_on_negative_values::<5>(a)) / one;
        let want = (-(k as f64) / 8.0).exp();
        assert!((got - want).abs() < 1e-6, "exp(-{k}/8): {got} vs {want}");
    }
    // 1 / (1 + 0.5) = 2/3.
    let got = f64::from(one_over_one_plus_x_for_x_in_0_1(HALF)) / one;
    assert!((got - 2.0 / 3.0).abs() < 1e-7, "{got}");
    // 1 / (1 + 0) saturates at (almost) one.
    assert!(one_over_one_plus_x_for_x_in_0_1(0) > i32::MAX - 8);
}

#[test]
fn saturating_multiply_by_pot_saturates() {
    assert_eq!(saturating_rounding_multiply_by_pot(1 << 20, 5), 1 << 25);
    assert_eq!(saturating_rounding_multiply_by_pot(1 << 27, 5), i32::MAX);
    assert_eq!(saturating_rounding_multiply_by_pot(-(1 << 27), 5), i32::MIN);
    assert_eq!(saturating_rounding_multiply_by_pot(6, -2), 2); // 1.5 → 2
}

#[test]
fn requant_matches_multiply_by_quantized_multiplier() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let edges = [
        0,
        1,
        -1,
        2,
        -2,
        i32::MIN,
        i32::MIN + 1,
        i32::MAX,
        i32::MAX - 1,
        1 << 30,
        -(1 << 30),
        3 << 29,
        -(3 << 29),
    ];
    for i in 0..400_000u32 {
        let r = next();
        let pick = |v: u64, k: u32| {
            if k.is_multiple_of(4) {
                edges[(v % edges.len() as u64) as usize]
            } else if k % 4 == 1 {
                (v as i32) >> ((v >> 40) % 31)
            } else {
                v as i32
            }
        };
        let x = pick(r, i);
        let m = pick(next(), i / 4);
        let shift = (next() % 70) as i32 - 35;
        let want = multiply_by_quantized_multiplier(x, m, shift);
        assert_eq!(
            Requant::new(m, shift).apply(x),
            want,
            "x={x} m={m} s={shift}"
        );
    }
}

/// `scale_doubled_undivided(2a, …) >> right` equals TFLite's SRDHM then rounding
/// divide for every `|a| < 2^30` and multiplier `≥ 0`: values at the range's edges,
/// near zero (where its sign term differs from the high word's) and anywhere, every
/// `right` in `0..=31`.
#[test]
fn scale_doubled_undivided_matches_srdhm_then_divide() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let limit = (1i32 << 30) - 1;
    for i in 0..400_000u32 {
        let r = next();
        let a = match i % 4 {
            0 => [0, 1, -1, limit, -limit, limit - 1, -limit + 1][(r % 7) as usize],
            1 => ((r as i32) >> 2) >> ((r >> 40) % 30),
            2 => (r % 64) as i32 - 32,
            _ => (r as i32) >> 2,
        };
        let m = match (next() >> 8) % 5 {
            0 => [0, 1, i32::MAX, 1 << 30, (1 << 30) + 1][(next() % 5) as usize],
            1 => (next() as i32 & i32::MAX) >> (next() % 31),
            _ => next() as i32 & i32::MAX,
        };
        let right = (next() % 32) as u32;
        let half = ((1u32 << right) >> 1) as i32;
        let negative = -i32::from(right > 0);
        let want =
            rounding_divide_by_pot(saturating_rounding_doubling_high_mul(a, m), right as i32);
        assert_eq!(
            scale_doubled_undivided(a + a, m, half, negative) >> right,
            want,
            "a={a} m={m} right={right}"
        );
    }
}

#[test]
fn single_rounding_multiplier_rounds_once() {
    // 0.25 · 2^31 unnormalized, shift 0.
    assert_eq!(quantize_multiplier_single_rounding(0.25), (1 << 29, 0));
    // 5 · 0.25 = 1.25 → 1 once; TFLite's pair (2^30, −1) rounds 2.5 → 3 first, then
    // 3 / 2 = 1.5 → 2.
    let (m, s) = quantize_multiplier_single_rounding(0.25);
    assert_eq!(Requant::new(m, s).apply(5), 1);
    let (m, s) = quantize_multiplier(0.25);
    assert_eq!(Requant::new(m, s).apply(5), 2);
    // Ties go up, as in SRDHM: ±0.5 → 1 and 0.
    let (m, s) = quantize_multiplier_single_rounding(0.25);
    assert_eq!(Requant::new(m, s).apply(2), 1);
    assert_eq!(Requant::new(m, s).apply(-2), 0);
    // Below 2^-11, or at 1 and above, TFLite's normalized pair.
    assert_eq!(
        quantize_multiplier_single_rounding(1e-4),
        quantize_multiplier(1e-4)
    );
    assert_eq!(
        quantize_multiplier_single_rounding(1.0),
        quantize_multiplier(1.0)
    );
    assert_eq!(
        quantize_multiplier_single_rounding(3.5),
        quantize_multiplier(3.5)
    );
    assert_eq!(quantize_multiplier_single_rounding(f64::NAN), (0, 0));
    assert_eq!(quantize_multiplier_single_rounding(-0.5), (0, 0));
    // Just below 1 rounds to 2^31, which does not fit: the normalized pair.
    assert_eq!(
        quantize_multiplier_single_rounding(1.0 - 1e-12),
        quantize_multiplier(1.0 - 1e-12)
    );
}

#[test]
fn single_rounding_is_nearest_of_the_stored_multiplier() {
    let mut seed = 0x2545_f491_u32;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    for _ in 0..20_000 {
        let real = 2f64.powf(-11.0 + 11.0 * f64::from(next()) / f64::from(u32::MAX));
        let (m, s) = quantize_multiplier_single_rounding(real);
        assert!(multiplier_in_range(m) && shift_in_range(s));
        let x = (next() as i32) >> (next() % 24);
        let got = Requant::new(m, s).apply(x);
        if s == 0 {
            // floor(x·m / 2^31 + 1/2), exactly.
            let want = ((i64::from(x) * i64::from(m) + (1 << 30)) >> 31) as i32;
            assert_eq!(got, want, "x {x}, real {real}");
        }
        assert_eq!(got, multiply_by_quantized_multiplier(x, m, s));
        let err = (f64::from(got) - f64::from(x) * real).abs();
        assert!(
            err <= 0.5 + f64::from(x).abs() * real * 2f64.powi(-20),
            "x {x}, real {real}"
        );
    }
}
