//! Integer requantization primitives, as TensorFlow Lite (Micro) and gemmlowp define them.
//!
//! # Rounding, precisely
//!
//! A real multiplier `M > 0` is stored as a Q0.31 `multiplier` in `[2^30, 2^31)` and a
//! power-of-two `shift` with `M ≈ multiplier · 2^(shift − 31)`
//! ([`quantize_multiplier`], TFLite's `QuantizeMultiplier`). Applying it to an `i32`
//! accumulator `x` ([`multiply_by_quantized_multiplier`], TFLite Micro's *double
//! rounding* reference, the default build without `TFLITE_SINGLE_ROUNDING`) is:
//!
//! 1. `x · 2^max(shift, 0)` (wrapping, as the C code's overflow is undefined and never
//!    reached with the exporter's parameters);
//! 2. [`saturating_rounding_doubling_high_mul`] (SRDHM): `x · multiplier / 2^31`
//!    computed exactly in 64 bits as `(x·m + nudge) / 2^31` truncated toward zero,
//!    `nudge = 2^30` for `x·m ≥ 0` and `1 − 2^30` otherwise. That is round to nearest
//!    with ties toward **+∞** (a positive tie goes away from zero; the `+1` in the
//!    negative nudge makes a negative tie go toward zero: `−1.5 → −1`). The one
//!    overflow case `MIN · MIN` saturates to `i32::MAX`;
//! 3. [`rounding_divide_by_pot`] by `2^max(−shift, 0)`: round to nearest with ties
//!    **away from zero** (gemmlowp's `RoundingDivideByPOT`: add one to the arithmetic
//!    shift when the remainder exceeds half, where "half" is one larger for negatives).
//!
//! So a value is rounded twice (ties toward +∞, then ties away from zero), exactly as
//! the TFLite Micro reference kernels do; results are bit-identical to them.
//!
//! # Why TFLite Micro's default
//!
//! TFLite Micro can be built with `TFLITE_SINGLE_ROUNDING` (one rounding, ties up), but
//! its default build, its reference kernels and the `tflite-micro` Python package use
//! the double rounding above, and that is what existing int8 models were validated
//! against; matching it byte for byte is worth more than the slightly better rounding.
//! The multiplier itself must come from the real scale ratio computed in `f64`
//! (`s_in · s_w / s_out`), as TFLite computes it: forming the product in `f32` changed one
//! output byte in 64,000 on MLPerf Tiny's anomaly-detection model. With these choices,
//! `cargo xtask conformance` finds every int8 reference model in `shared/models`
//! byte-identical with TensorFlow Lite Micro.
//!
//! Add uses TFLite's scheme: inputs are offset, shifted left by [`ADD_LEFT_SHIFT`] `= 20`
//! bits, scaled by per-input multipliers below one, summed, and the sum requantized by
//! the output multiplier ([`AddQuant`]).
//!
//! Softmax uses gemmlowp's fixed-point `exp` and reciprocal ([`exp_on_negative_values`],
//! [`one_over_one_plus_x_for_x_in_0_1`], [`get_reciprocal`]), transcribed from their
//! published definitions.
//!
//! Everything here is integer arithmetic, except the parameter helpers that turn `f64`
//! scales into multipliers; those run on the host (they need no `std`, but the runtime
//! never calls them).

/// Left shift applied to both Add inputs before scaling (TFLite's `left_shift = 20`).
pub const ADD_LEFT_SHIFT: u32 = 20;

/// Smallest accepted shift of a requantization multiplier.
pub const MIN_SHIFT: i32 = -31;
/// Largest accepted shift of a requantization multiplier.
pub const MAX_SHIFT: i32 = 30;

/// `round(a · b / 2^31)`, ties toward +∞, saturating `MIN · MIN` to `MAX`
/// (gemmlowp's `SaturatingRoundingDoublingHighMul`; see the module docs).
///
/// Not inlined: only softmax's `exp`, reciprocal and output scaling (a few calls per
/// row) use it on the device, where each inlined copy of the 64-bit multiply costs
/// about 60 bytes of flash; the conv and fully connected kernels requantize through
/// [`Requant`].
#[inline(never)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // |ab + nudge| < 2^62, and the quotient fits i32 once MIN·MIN is excluded.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `round(x / 2^exponent)`, ties away from zero (gemmlowp's `RoundingDivideByPOT`).
///
/// gemmlowp defines `exponent` in `0..=31`, where this matches it bit for bit; outside
/// that range the same formula is evaluated in 64 bits with `exponent` clamped to
/// `0..=62`, so no input can panic. Not inlined, for the reason given at
/// [`saturating_rounding_doubling_high_mul`].
#[inline(never)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let e = exponent.clamp(0, 62) as u32;
    let x = i64::from(x);
    let mask = (1i64 << e) - 1;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i64::from(x < 0);
    // (x >> e) is within i32 range for e >= 0.
    ((x >> e) + i64::from(remainder > threshold)) as i32
}

/// `x · 2^exponent` for `exponent > 0`, saturating (gemmlowp's
/// `SaturatingRoundingMultiplyByPOT` with a positive exponent); a rounding divide for
/// negative exponents.
#[inline]
pub fn saturating_rounding_multiply_by_pot(x: i32, exponent: i32) -> i32 {
    if exponent <= 0 {
        return rounding_divide_by_pot(x, -exponent);
    }
    if exponent >= 31 {
        return match x.signum() {
            1 => i32::MAX,
            -1 => i32::MIN,
            _ => 0,
        };
    }
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

/// TFLite Micro's `MultiplyByQuantizedMultiplier` (double rounding): see the module
/// docs. `shift` is expected in [`MIN_SHIFT`]`..=`[`MAX_SHIFT`] (validated at load);
/// other values are clamped, never a panic.
#[inline]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let shift = shift.clamp(MIN_SHIFT, MAX_SHIFT);
    let left = if shift > 0 { shift as u32 } else { 0 };
    let right = if shift > 0 { 0 } else { -shift };
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_mul(1i32 << left), multiplier),
        right,
    )
}

/// A requantization pair split for repeated use: [`multiply_by_quantized_multiplier`]
/// with the shift clamped and split once (see [`Requant::apply`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requant {
    /// Q0.31 multiplier.
    pub multiplier: i32,
    /// `max(shift, 0)`, at most [`MAX_SHIFT`].
    pub left: u32,
    /// `max(−shift, 0)`, at most `−`[`MIN_SHIFT`] `= 31`.
    pub right: u32,
}

impl Requant {
    /// Split `(multiplier, shift)`, clamping `shift` as [`multiply_by_quantized_multiplier`]
    /// does.
    #[inline]
    pub fn new(multiplier: i32, shift: i32) -> Self {
        let shift = shift.clamp(MIN_SHIFT, MAX_SHIFT);
        Requant {
            multiplier,
            left: shift.max(0).unsigned_abs(),
            right: shift.min(0).unsigned_abs(),
        }
    }

    /// Bit-identical to `multiply_by_quantized_multiplier(x, multiplier, shift)`, in
    /// 32-bit arithmetic except for the one widening multiply:
    ///
    /// - SRDHM: `(x·m + nudge) / 2^31` truncated toward zero equals
    ///   `(x·m + 2^30) >> 31` (arithmetic) for both signs: for `x·m < 0` truncation is
    ///   `(v + 2^31 − 1) >> 31` with `v = x·m + 1 − 2^30`, i.e. `(x·m + 2^30) >> 31`.
    ///   Where the shifted `a` has `|a| < 2^30` (an int8 layer's accumulator, unless
    ///   it sums some 30,000 full-scale products),
    ///   that is `(2a·m + 2^31) >> 32`, one `SMMULR` on Armv7E-M, and `a = i32::MIN`
    ///   (SRDHM's one saturating case) cannot occur.
    /// - Rounding divide by `2^right`, `right ≤ 31`, ties away from zero: then
    ///   `|high| < 2^30`, so `(high + 2^(right−1) − [high < 0]) >> right` cannot
    ///   overflow; elsewhere gemmlowp's mask/threshold form, all terms fit `i32`
    ///   (`mask ≤ 2^31 − 1`; the `+1` only happens for `right ≥ 1`).
    #[inline]
    pub fn apply(&self, x: i32) -> i32 {
        let a = x.wrapping_shl(self.left);
        // `a` in `(−2^30, 2^30)`. Not on Armv6-M: both forms call the same 64-bit
        // multiply routine there, and the range test only adds (+1.7 % on LeNet-5).
        let small = !cfg!(sprig_armv6m) && (a.wrapping_add((1 << 30) - 1) as u32) < (1 << 31) - 1;
        // Single-rounding pairs (sprig's own layers, `quantize_multiplier_single_rounding`)
        // have nothing to divide.
        let e = self.right & 31;
        if small {
            return if e == 0 {
                scale_small::<false>(a, self.multiplier, 0)
            } else {
                scale_small::<true>(a, self.multiplier, e)
            };
        }
        let high = if a == i32::MIN && self.multiplier == i32::MIN {
            i32::MAX
        } else {
            ((i64::from(a) * i64::from(self.multiplier) + (1i64 << 30)) >> 31) as i32
        };
        if e == 0 {
            return high;
        }
        let mask = ((1u32 << e).wrapping_sub(1)) as i32;
        let remainder = high & mask;
        let threshold = (mask >> 1) + i32::from(high < 0);
        (high >> e) + i32::from(remainder > threshold)
    }
}

/// [`Requant::apply`]'s first form, exact for an already shifted `a` in
/// `(−2^30, 2^30)`: SRDHM by `multiplier` as one rounding high multiply, then where
/// `DIVIDE` the rounding divide by `2^right` (`right` in `1..=31`); without, `right`
/// is 0 and ignored. A constant, so that a loop over one requantization whose range
/// it knows (an Add's offset inputs times `2^20`) picks the form once.
#[inline(always)]
pub fn scale_small<const DIVIDE: bool>(a: i32, multiplier: i32, right: u32) -> i32 {
    let doubled = i64::from(a.wrapping_add(a));
    let high = ((doubled * i64::from(multiplier) + (1i64 << 31)) >> 32) as i32;
    if DIVIDE {
        let half = 1i32.wrapping_shl(right.wrapping_sub(1));
        high.wrapping_add(half)
            .wrapping_add(high >> 31)
            .wrapping_shr(right)
    } else {
        high
    }
}

/// [`scale_small`] of `a` before its final shift by `right` (`>> right`, `right < 32`,
/// completes it), from `doubled = 2a` (`|a| < 2^30`) and a multiplier that is not
/// negative, with `negative = −[right ≥ 1]` and `round = 2^(right − 1)` (0 for
/// `right = 0`) worked out beforehand. Two steps fold into the multiply (one `SMMLAR`
/// on Armv7E-M):
///
/// - the rounding divide's `−[high < 0]` is taken as `−[a < 0]`: the two differ
///   only where `a < 0` and `high = 0`, and there `(half − 1) >> right` and
///   `half >> right` are both 0;
/// - `round` and that term are added to the product's high word, which
///   `(round·2^32 + 2a·m + 2^31) >> 32 = round + high` does exactly.
///
/// `round` may also carry a multiple of `2^right`, which passes through the shift as
/// that multiple (a caller folds its output offset in so), as long as the sum stays
/// within `i32`.
#[inline(always)]
pub fn scale_doubled_undivided(doubled: i32, multiplier: i32, round: i32, negative: i32) -> i32 {
    let round = round.wrapping_add((doubled >> 31) & negative);
    let product = i64::from(doubled) * i64::from(multiplier);
    ((product + (i64::from(round) << 32) + (1i64 << 31)) >> 32) as i32
}

/// TFLite's `MultiplyByQuantizedMultiplierGreaterThanOne`: `SRDHM(x · 2^left_shift, m)`.
#[inline]
pub fn multiply_by_quantized_multiplier_greater_than_one(
    x: i32,
    multiplier: i32,
    left_shift: i32,
) -> i32 {
    let left = left_shift.clamp(0, MAX_SHIFT) as u32;
    saturating_rounding_doubling_high_mul(x.wrapping_mul(1i32 << left), multiplier)
}

/// Whether a stored requantization multiplier is valid: any non-negative `i32`.
/// [`quantize_multiplier`] writes them normalized to `[2^30, 2^31)` (or 0);
/// [`quantize_multiplier_single_rounding`] writes smaller ones with shift 0 (format
/// 2.3). [`Requant::apply`] is exact for every one of them.
pub fn multiplier_in_range(multiplier: i32) -> bool {
    multiplier >= 0
}

/// Whether a shift is in [`MIN_SHIFT`]`..=`[`MAX_SHIFT`].
pub fn shift_in_range(shift: i32) -> bool {
    (MIN_SHIFT..=MAX_SHIFT).contains(&shift)
}

/// `frexp` for finite positive `x`: `(q, e)` with `x = q · 2^e`, `q ∈ [0.5, 1)`.
fn frexp_positive(x: f64) -> (f64, i32) {
    let bits = x.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    if biased == 0 {
        // Subnormal: scale into the normal range first.
        let (q, e) = frexp_positive(x * f64::from_bits(0x4350_0000_0000_0000)); // 2^54
        return (q, e - 54);
    }
    let q = f64::from_bits((bits & !(0x7ffu64 << 52)) | (1022u64 << 52));
    (q, biased - 1022)
}

/// TFLite's `QuantizeMultiplier`: `real ≈ multiplier · 2^(shift − 31)` with
/// `multiplier ∈ [2^30, 2^31)`.
///
/// `q = frexp(real)`, `multiplier = round(q · 2^31)` (half away from zero); a rounded
/// `2^31` becomes `2^30` with `shift + 1`; a shift below −31 gives `(0, 0)`; above 30
/// saturates to `(i32::MAX, 30)`. Zero, negative, NaN or infinite input gives `(0, 0)`
/// (the runtime only uses positive multipliers).
pub fn quantize_multiplier(real: f64) -> (i32, i32) {
    if !(real.is_finite() && real > 0.0) {
        return (0, 0);
    }
    let (q, mut shift) = frexp_positive(real);
    // q · 2^31 ∈ [2^30, 2^31) is exact; adding 0.5 is exact; `as` truncates = floor.
    let mut q_fixed = (q * 2_147_483_648.0 + 0.5) as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < MIN_SHIFT {
        return (0, 0);
    }
    if shift > MAX_SHIFT {
        return (i32::MAX, MAX_SHIFT);
    }
    (q_fixed as i32, shift)
}

/// Smallest multiplier [`quantize_multiplier_single_rounding`] stores unnormalized:
/// `2^20`, i.e. 20 significant bits, enough that an output within ±2^8 steps is off
/// by at most 2^-13 step.
pub const SINGLE_ROUNDING_MIN_MULTIPLIER: i32 = 1 << 20;

/// `real` as a pair whose requantization rounds **once**: for `real ∈ [2^-11, 1)`,
/// `(round(real · 2^31), 0)`, an unnormalized multiplier with shift 0, so
/// [`Requant::apply`] computes `(x · m + 2^30) >> 31`, the nearest integer to `x · real`
/// (ties up), with no second rounding divide (TFLite's `TFLITE_SINGLE_ROUNDING` result,
/// to 20 or more bits of the multiplier). Outside that range it is
/// [`quantize_multiplier`]: at `real ≥ 1` that pair already rounds once (a left shift,
/// then one rounding multiply), and below `2^-11` an unnormalized multiplier would keep
/// too few bits.
///
/// sprig's own conv and fully connected layers use it, because the fake-quant forward
/// that QAT trains and the ONNX export computes rounds once: TFLite's double rounding
/// (first to `2^shift` of a step) moved 1–7 % of 4- and 2-bit layers' outputs by a step
/// (docs/ARCHITECTURE.md, "Deployed vs fake-quant"). Imported TFLite models keep
/// [`quantize_multiplier`], which is what TFLite Micro computes for them.
pub fn quantize_multiplier_single_rounding(real: f64) -> (i32, i32) {
    if real.is_finite() && real > 0.0 && real < 1.0 {
        // `real · 2^31` is exact; adding 0.5 and truncating rounds it (it is positive).
        let fixed = (real * 2_147_483_648.0 + 0.5) as i64;
        if fixed >= i64::from(SINGLE_ROUNDING_MIN_MULTIPLIER) && fixed < 1i64 << 31 {
            return (fixed as i32, 0);
        }
    }
    quantize_multiplier(real)
}

/// The six fixed-point parameters of an int8 Add, from the three tensor scales, as
/// TFLite's `PrepareGeneralSubOp`/`CalculateArithmeticOpData` computes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddQuant {
    /// Multiplier for input 1 (`s1 / (2·max(s1, s2))`).
    pub input1_multiplier: i32,
    /// Shift for input 1 (≤ −1).
    pub input1_shift: i32,
    /// Multiplier for input 2.
    pub input2_multiplier: i32,
    /// Shift for input 2.
    pub input2_shift: i32,
    /// Output multiplier (`2·max(s1, s2) / (2^20 · s_out)`).
    pub output_multiplier: i32,
    /// Output shift.
    pub output_shift: i32,
}

impl AddQuant {
    /// Parameters for `out = in1 + in2` with the given (positive) scales.
    pub fn from_scales(input1_scale: f64, input2_scale: f64, output_scale: f64) -> Self {
        let twice_max = 2.0
            * if input1_scale > input2_scale {
                input1_scale
            } else {
                input2_scale
            };
        let (m1, s1) = quantize_multiplier(input1_scale / twice_max);
        let (m2, s2) = quantize_multiplier(input2_scale / twice_max);
        let real_out = twice_max / (f64::from(1u32 << ADD_LEFT_SHIFT) * output_scale);
        let (mo, so) = quantize_multiplier(real_out);
        AddQuant {
            input1_multiplier: m1,
            input1_shift: s1,
            input2_multiplier: m2,
            input2_shift: s2,
            output_multiplier: mo,
            output_shift: so,
        }
    }
}

/// Integer bits of softmax's scaled input differences (TFLite's `kScaledDiffIntegerBits`).
pub const SOFTMAX_DIFF_INTEGER_BITS: u32 = 5;
/// Integer bits of softmax's sum of exponentials (TFLite's `kAccumulationIntegerBits`).
pub const SOFTMAX_ACCUM_INTEGER_BITS: u32 = 12;

/// The fixed-point parameters of an int8 softmax (TFLite's `PreprocessSoftmaxScaling`
/// and `CalculateInputRadius`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxQuant {
    /// `beta · input_scale · 2^26` as a Q0.31 multiplier.
    pub input_multiplier: i32,
    /// Its (non-negative) left shift.
    pub input_left_shift: i32,
    /// Differences from the row maximum below this (≤ 0) contribute nothing.
    pub diff_min: i32,
}

impl SoftmaxQuant {
    /// Parameters for `softmax(beta · x)` over an int8 input with `input_scale`.
    /// `None` if the scaled multiplier is below one (input scale below ~2^-26) or not
    /// finite.
    pub fn from_scale(beta: f64, input_scale: f64) -> Option<Self> {
        let ib = SOFTMAX_DIFF_INTEGER_BITS;
        let mut real = beta * input_scale * f64::from(1u32 << (31 - ib));
        let cap = 2_147_483_647.0;
        if real > cap {
            real = cap;
        }
        let (m, shift) = quantize_multiplier(real);
        if m == 0 || shift < 0 {
            return None;
        }
        // floor(((1 << ib) - 1) · 2^(31 - ib) / 2^shift), exact in integers.
        let radius = ((((1i64 << ib) - 1) << (31 - ib)) >> shift) as i32;
        Some(SoftmaxQuant {
            input_multiplier: m,
            input_left_shift: shift,
            diff_min: -radius,
        })
    }
}

/// gemmlowp's `RoundingHalfSum` for `i32`: `(a + b + sign) / 2` in 64 bits.
#[inline]
fn rounding_half_sum(a: i32, b: i32) -> i32 {
    let sum = i64::from(a) + i64::from(b);
    let sign = if sum >= 0 { 1 } else { -1 };
    ((sum + sign) / 2) as i32
}

/// gemmlowp's `exp_on_interval_between_negative_one_quarter_and_0_excl` on a Q0.31 raw
/// value: a fourth-order Taylor expansion around −1/8.
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    let mul = saturating_rounding_doubling_high_mul;
    const CONSTANT_TERM: i32 = 1_895_147_668; // exp(-1/8) in Q0.31
    const ONE_OVER_3: i32 = 715_827_883; // 1/3 in Q0.31
    let x = a.wrapping_add(1 << 28); // a + 1/8
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let poly = rounding_divide_by_pot(
        mul(x4_over_4.wrapping_add(x3), ONE_OVER_3).wrapping_add(x2),
        1,
    );
    CONSTANT_TERM.wrapping_add(mul(CONSTANT_TERM, x.wrapping_add(poly)))
}

/// gemmlowp's `exp_on_negative_values`: `exp(a)` for a raw fixed-point `a ≤ 0` with
/// `INTEGER_BITS` integer bits; the result is raw Q0.31.
pub fn exp_on_negative_values<const INTEGER_BITS: u32>(a: i32) -> i32 {
    let mul = saturating_rounding_doubling_high_mul;
    let frac_bits = 31 - INTEGER_BITS;
    let one_quarter: i32 = 1 << (frac_bits - 2);
    let mask = one_quarter - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(one_quarter);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, INTEGER_BITS as i32),
    );
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(-2^k) in Q0.31 for k = -2..=4.
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, multiplier) in BARREL {
        if (INTEGER_BITS as i32) > exponent {
            let bit = frac_bits as i32 + exponent;
            if (0..31).contains(&bit) && remainder & (1 << bit) != 0 {
                result = mul(result, multiplier);
            }
        }
    }
    if INTEGER_BITS > 5 {
        let clamp_b = 36 - INTEGER_BITS as i32;
        if (0..31).contains(&clamp_b) && a < -(1 << clamp_b) {
            result = 0;
        }
    }
    if a == 0 {
        i32::MAX
    } else {
        result
    }
}

/// gemmlowp's `one_over_one_plus_x_for_x_in_0_1`: `1 / (1 + a)` for raw Q0.31 `a`
/// in `[0, 1)`, three Newton–Raphson steps; raw Q0.31 result (saturating at one).
pub fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    let mul = saturating_rounding_doubling_high_mul;
    let half_denominator = rounding_half_sum(a, i32::MAX); // Q0.31
    const C48_OVER_17: i32 = 1_515_870_810; // Q2.29
    const CNEG32_OVER_17: i32 = -1_010_580_540; // Q2.29
    let mut x = C48_OVER_17.wrapping_add(mul(half_denominator, CNEG32_OVER_17)); // Q2.29
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x); // Q2.29
        let one_minus = (1i32 << 29).wrapping_sub(half_denominator_times_x); // Q2.29
                                                                             // Q2.29 · Q2.29 = Q4.27, rescaled to Q2.29.
        x = x.wrapping_add(saturating_rounding_multiply_by_pot(mul(x, one_minus), 2));
    }
    // x / 2 as Q1.30 (same raw), rescaled to Q0.31.
    saturating_rounding_multiply_by_pot(x, 1)
}

/// TFLite's `GetReciprocal`: for a positive raw fixed-point `x` with `integer_digits`
/// integer bits, returns `(scale, num_bits_over_unit)` with
/// `1/x ≈ scale · 2^-(31 + num_bits_over_unit)` … in the sense TFLite's softmax uses.
pub fn get_reciprocal(x: i32, integer_digits: i32) -> (i32, i32) {
    let ux = x as u32;
    let headroom_plus_one = ux.leading_zeros();
    let num_bits_over_unit = integer_digits - headroom_plus_one as i32;
    let shifted = ux.checked_shl(headroom_plus_one).unwrap_or(0);
    let shifted_sum_minus_one = shifted.wrapping_sub(1u32 << 31) as i32;
    (
        one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one),
        num_bits_over_unit,
    )
}

/// Clamp an `i32` into `[lo, hi]` and narrow to `i8`; `lo`/`hi` are within int8 range
/// for validated models, and the result is clamped to int8 regardless.
#[inline]
pub fn clamp_to_i8(x: i32, lo: i32, hi: i32) -> i8 {
    x.max(lo).min(hi).clamp(-128, 127) as i8
}

#[cfg(test)]
mod tests;
