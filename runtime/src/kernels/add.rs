//! Elementwise add, int8, TFLite's scheme (`reference_integer_ops::AddElementwise`).

pub use super::AddParams;
use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, scale_small, Requant, ADD_LEFT_SHIFT};

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
    if let Some(inputs) = SmallInputs::of(p, &requants) {
        let [_, _, out] = &requants;
        let (a, b, y) = (
            input1.get(done..),
            input2.get(done..),
            output.get_mut(done..),
        );
        if let (Some(a), Some(b), Some(y)) = (a, b, y) {
            inputs.add(p, out, a, b, y);
        }
        return Ok(());
    }
    let rest = output.iter_mut().zip(input1).zip(input2).skip(done);
    for ((o, &a), &b) in rest {
        *o = add_with(p, &requants, a, b);
    }
    Ok(())
}

/// Elements [`add_in_place`] copies aside at a time.
const IN_PLACE_BLOCK: usize = 128;

/// [`add`] with the output over input 1: `acc[i] = add_one(acc[i], other[i])`
/// (FORMAT.md §4, "In-place Add"). Each block of `acc` is copied aside first, so the
/// kernel never reads what it has written. For an output over input 2, pass
/// [`AddParams::swapped`]: the sum of the two scaled inputs does not depend on order.
pub fn add_in_place(p: &AddParams, acc: &mut [i8], other: &[i8]) -> Result<(), Error> {
    if other.len() != acc.len() {
        return Err(Error::KernelArgs);
    }
    let mut block = [0i8; IN_PLACE_BLOCK];
    for (y, b) in acc
        .chunks_mut(IN_PLACE_BLOCK)
        .zip(other.chunks(IN_PLACE_BLOCK))
    {
        let a = block.get_mut(..y.len()).ok_or(Error::KernelArgs)?;
        a.copy_from_slice(y);
        add(p, a, b, y)?;
    }
    Ok(())
}

impl AddParams {
    /// The same Add with its inputs' roles exchanged.
    pub fn swapped(&self) -> AddParams {
        AddParams {
            input1_offset: self.input2_offset,
            input2_offset: self.input1_offset,
            input1_multiplier: self.input2_multiplier,
            input1_shift: self.input2_shift,
            input2_multiplier: self.input1_multiplier,
            input2_shift: self.input1_shift,
            ..*self
        }
    }
}

/// The inputs' side of an Add whose shifted inputs are known to be small: neither
/// input requantization shifts left and both offsets lie within ±256, so
/// `|x + offset| · 2^20 < 2^29` and [`scale_small`] is exact
/// for every int8 `x`. TFLite's own parameters always qualify (input shifts are ≤ 0).
struct SmallInputs {
    inputs: [ScaledInput; 2],
}

/// One input's offset and requantization.
#[derive(Clone, Copy)]
struct ScaledInput {
    offset: i32,
    multiplier: i32,
    right: u32,
}

impl ScaledInput {
    fn new(offset: i32, r: &Requant) -> Option<Self> {
        let small = offset.unsigned_abs() <= 256 && r.left == 0;
        small.then_some(ScaledInput {
            offset,
            multiplier: r.multiplier,
            right: r.right & 31,
        })
    }

    /// `sums[i] (+)= r.apply((xs[i] + offset) · 2^20)`, overwriting or
    /// adding (`ADD`), with the branch on `right` taken once per block: the input of
    /// the larger scale has `right = 0` (its multiplier is 2^30), the other divides.
    #[inline(always)]
    fn pass<const ADD: bool>(&self, xs: &[i8], sums: &mut [i32]) {
        if self.right == 0 {
            self.pass_with::<ADD, false>(xs, sums);
        } else {
            self.pass_with::<ADD, true>(xs, sums);
        }
    }

    #[inline(always)]
    fn pass_with<const ADD: bool, const DIVIDE: bool>(&self, xs: &[i8], sums: &mut [i32]) {
        let (m, right) = (self.multiplier, self.right);
        for (s, &x) in sums.iter_mut().zip(xs) {
            let v = scale_small::<DIVIDE>((i32::from(x) + self.offset) << ADD_LEFT_SHIFT, m, right);
            *s = if ADD { s.wrapping_add(v) } else { v };
        }
    }
}

impl SmallInputs {
    fn of(p: &AddParams, [r1, r2, _]: &[Requant; 3]) -> Option<Self> {
        Some(SmallInputs {
            inputs: [
                ScaledInput::new(p.input1_offset, r1)?,
                ScaledInput::new(p.input2_offset, r2)?,
            ],
        })
    }

    /// `y[i] = `[`add_with`]`(p, .., a[i], b[i])`, bit-identical, in blocks: the first
    /// input's requantized values into a small buffer, the second's added, then the
    /// output stage over it. In one loop the parameters and pointers did not fit the
    /// Cortex-M4's registers and LLVM reloaded them from the stack per element.
    fn add(&self, p: &AddParams, out: &Requant, a: &[i8], b: &[i8], y: &mut [i8]) {
        let [first, second] = self.inputs;
        let mut sums = [0i32; SUMS_BLOCK];
        for ((a, b), y) in a
            .chunks(SUMS_BLOCK)
            .zip(b.chunks(SUMS_BLOCK))
            .zip(y.chunks_mut(SUMS_BLOCK))
        {
            first.pass::<false>(a, &mut sums);
            second.pass::<true>(b, &mut sums);
            // The sums are at most 2 · 384 · 2^20 < 2^30 in size: without a left shift
            // the output's requantization takes the same form.
            match (out.left, out.right & 31) {
                (0, 0) => finish(p, &sums, y, |s| scale_small::<false>(s, out.multiplier, 0)),
                (0, right) => finish(p, &sums, y, |s| {
                    scale_small::<true>(s, out.multiplier, right)
                }),
                _ => finish(p, &sums, y, |s| out.apply(s)),
            }
        }
    }
}

/// `y[i] = clamp(requantize(sums[i]) + output offset)`.
#[inline(always)]
fn finish(p: &AddParams, sums: &[i32], y: &mut [i8], requantize: impl Fn(i32) -> i32) {
    for (y, &s) in y.iter_mut().zip(sums) {
        *y = clamp_to_i8(
            requantize(s).wrapping_add(p.output_offset),
            p.act_min,
            p.act_max,
        );
    }
}

/// Elements per block of [`SmallInputs::add`] (its sums on the stack).
const SUMS_BLOCK: usize = 32;
