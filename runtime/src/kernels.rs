//! int8 kernels, one file per op family, plus the plain-loop oracle `reference` (built for tests and
//! with `std`).
//!
//! Every kernel checks that its slices agree with its geometry before it starts
//! ([`Error::KernelArgs`] otherwise) and reads through iterators or `get`, so no input
//! can make it panic or read out of bounds. Accumulators are `i32` and wrap on overflow
//! (as the two's-complement C reference does on every target it runs on); the
//! exporter's parameters never get near it.
//!
//! Layouts: activations NHWC; conv filter `[OC, KH, KW, C]`; depthwise filter
//! `[KH, KW, OC]` with `OC = C · depth_multiplier`; fully connected weights `[OUT, IN]`.
//!
//! On x86_64 hosts with `std`, conv, depthwise and fully connected hand over to the AVX2
//! kernels of `x86` when the CPU has AVX2 (bit-identical; see there).

use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, scale_doubled_undivided, Requant};
use crate::format::REQUANT_ENTRY_LEN;
use finish::{by_finish, Finish, Finisher};

pub mod add;
pub mod argmax;
mod band;
mod binarize;
// Declared first: its assembly-text macros (`nibbles!`, `bytes!`) serve the binary
// kernels below.
#[macro_use]
pub mod xor_popcount;
// Declared before the kernels whose choices it writes (`kernel_family!`).
#[macro_use]
mod kernel_family;
pub mod binary;
pub mod binary_narrow;
pub mod conv;
pub mod conv_pool;
pub mod depthwise;
mod depthwise_choice;
#[cfg(any(
    test,
    all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))
))]
mod depthwise_lanes;
#[allow(unsafe_code)]
mod dual;
pub(crate) mod finish;
pub mod fully_connected;
pub mod low_bit;
pub mod pool_bits;
pub mod pool_windows;
pub mod pooling;
#[allow(unsafe_code)]
mod quad;
#[cfg(any(test, feature = "std"))]
pub mod reference;
pub mod softmax;
pub mod sparse;
pub mod sparse_pool_rows;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(all(feature = "std", target_arch = "x86_64"))]
pub mod x86;

/// What happens to a channel's `i32` accumulator: add the bias, requantize, add the
/// output zero point, clamp to the fused activation range.
#[derive(Debug, Clone, Copy)]
pub struct OutputStage<'a> {
    /// `i32` LE per channel, or `None` for zero bias.
    pub bias: Option<&'a [u8]>,
    /// `channels` LE `i32` multipliers then `channels` `i8` shifts, or one pair (5 bytes).
    pub requant: &'a [u8],
    /// Number of output channels.
    pub channels: usize,
    /// Output zero point.
    pub output_offset: i32,
    /// Lower clamp.
    pub act_min: i32,
    /// Upper clamp.
    pub act_max: i32,
}

impl OutputStage<'_> {
    /// Whether the byte lengths agree with `channels`.
    pub fn check(&self) -> Result<(), Error> {
        let bias_ok = self
            .bias
            .is_none_or(|b| Some(b.len()) == self.channels.checked_mul(4));
        let per_channel = self.channels.checked_mul(REQUANT_ENTRY_LEN as usize);
        let requant_ok = self.requant.len() == REQUANT_ENTRY_LEN as usize
            || Some(self.requant.len()) == per_channel;
        if bias_ok && requant_ok && self.channels > 0 {
            Ok(())
        } else {
            Err(Error::KernelArgs)
        }
    }

    /// Bias of channel `c` (0 if absent). (Decoded here, not through `word_le`: in
    /// that form the Cortex-M0's sparse LeNet-5 took 2 % more instructions.)
    #[inline]
    pub fn bias(&self, c: usize) -> i32 {
        self.bias
            .and_then(|b| b.get(c * 4..c * 4 + 4))
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, i32::from_le_bytes)
    }

    /// `(multiplier, shift)` of channel `c`.
    #[inline]
    pub fn requant(&self, c: usize) -> (i32, i32) {
        let (c, n) = if self.requant.len() == REQUANT_ENTRY_LEN as usize {
            (0, 1)
        } else {
            (c, self.channels)
        };
        let m = self
            .requant
            .get(c * 4..c * 4 + 4)
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map_or(0, i32::from_le_bytes);
        let s = self
            .requant
            .get(n * 4 + c)
            .map_or(0, |&b| i32::from(b as i8));
        (m, s)
    }

    /// Channel `c`'s bias and requantization, decoded once for many accumulators.
    #[inline]
    pub(crate) fn channel(&self, c: usize) -> ChannelQuant {
        let (m, s) = self.requant(c);
        ChannelQuant::new(self.bias(c), Requant::new(m, s))
    }

    /// Decode channels `c0..c0 + out.len()` into `out`, as [`Self::channel`] does one
    /// at a time. The block's multipliers, shifts and biases are sliced once: looked
    /// up per channel, their bounds checks cost about 45 Cortex-M4 instructions a
    /// channel, as much as its requantization. Out of line: inlined into its callers
    /// it took vww's firmware 2.3 KiB more code for 0.6 % fewer instructions.
    #[inline(never)]
    pub(crate) fn channels_into(&self, c0: usize, out: &mut [ChannelQuant]) {
        self.decode_channels::<false>(c0, out, 0);
    }

    /// [`Self::channels_into`] for a kernel that can finish small accumulators, and
    /// the form its outputs take: a small one where every channel is
    /// [`ChannelQuant::small_within`] `reach` and the clamp lies within int8's
    /// range, the terms [`Self::finish_small`] needs worked out in the same pass (a
    /// pass of its own cost vww 1 % more instructions; kernels that finish each
    /// channel once, as fully connected layers of batch 1 do, skip them).
    #[inline(never)]
    pub(crate) fn small_channels_into(
        &self,
        c0: usize,
        out: &mut [ChannelQuant],
        reach: u32,
    ) -> Finish {
        if !self.decode_channels::<true>(c0, out, reach) {
            Finish::Exact
        } else if (self.act_min, self.act_max) == (-128, 127) {
            Finish::SmallFullRange
        } else {
            Finish::Small
        }
    }

    #[inline(always)]
    fn decode_channels<const SMALL: bool>(
        &self,
        c0: usize,
        out: &mut [ChannelQuant],
        reach: u32,
    ) -> bool {
        let n = out.len();
        let entry = REQUANT_ENTRY_LEN as usize;
        if self.requant.len() == entry {
            // One pair for the whole tensor.
            let (m, s) = self.requant(0);
            let requant = Requant::new(m, s);
            out.iter_mut().for_each(|q| q.requant = requant);
        } else {
            let multipliers = self.requant.get(c0 * 4..(c0 + n) * 4).unwrap_or(&[]);
            let shifts = self
                .channels
                .checked_mul(4)
                .and_then(|at| self.requant.get(at + c0..at + c0 + n));
            let (mut multipliers, shifts) = match shifts {
                Some(s) if multipliers.len() == 4 * n => (multipliers.chunks_exact(4), s),
                _ => ([].chunks_exact(4), &[][..]),
            };
            let mut shifts = shifts.iter();
            for q in out.iter_mut() {
                let m = multipliers.next().map_or(0, word_le);
                let s = shifts.next().map_or(0, |&b| i32::from(b as i8));
                q.requant = Requant::new(m, s);
            }
        }
        let mut biases = self
            .bias
            .and_then(|b| b.get(c0 * 4..(c0 + n) * 4))
            .unwrap_or(&[])
            .chunks_exact(4);
        // (The validator keeps every op's clamp within int8's range.)
        let mut small = SMALL && -128 <= self.act_min && self.act_max <= 127;
        for q in out.iter_mut() {
            q.bias = biases.next().map_or(0, word_le);
            if SMALL {
                // Each channel's terms where it is small on its own (its `scale` 0
                // where not): `quad` finishes channel by channel; the rest choose one
                // form for the block.
                let ok = q.small_within(reach) && q.requant.right <= SMALL_RIGHT_MAX;
                if ok {
                    q.fill_small_terms(self.output_offset);
                } else {
                    q.small = SmallTerms::default();
                }
                small &= ok;
            }
        }
        small
    }

    /// Finish an accumulator with a decoded channel (same result as [`Self::apply`]).
    #[inline]
    pub(crate) fn finish(&self, q: &ChannelQuant, acc: i32) -> i8 {
        let v = q.requant.apply(acc.wrapping_add(q.bias));
        clamp_to_i8(
            v.wrapping_add(self.output_offset),
            self.act_min,
            self.act_max,
        )
    }

    /// [`Self::finish`] for an accumulator the caller knows to be small, the channel
    /// decoded by [`Self::small_channels_into`]: `Requant::apply`'s first form
    /// without its range test (five Cortex-M4 instructions per output), in
    /// [`scale_doubled_undivided`]'s steps with the output offset folded in.
    /// `FULL_RANGE`: the clamp is int8's whole range ([`Finish::SmallFullRange`]).
    #[inline(always)]
    pub(crate) fn finish_small<const FULL_RANGE: bool>(&self, q: &ChannelQuant, acc: i32) -> i8 {
        let t = &q.small;
        // `2·(acc + bias)·2^left`, exact for a small accumulator.
        let doubled = acc.wrapping_mul(t.scale).wrapping_add(t.bias);
        let high = scale_doubled_undivided(doubled, q.requant.multiplier, t.round, t.negative);
        // SAFETY: `t.right < 32`: `SmallTerms::right` is only ever 0 (its default) or
        // `right & 31` (`fill_small_terms`). Masked, the shift took one more Cortex-M4
        // instruction per output or row.
        #[allow(unsafe_code)]
        let v = unsafe { high.unchecked_shr(t.right) };
        // The clamp lies within int8's range (`small_channels_into`): nothing to
        // saturate after it, or it is the saturation.
        let clamped = if FULL_RANGE {
            v.clamp(-128, 127)
        } else {
            v.max(self.act_min).min(self.act_max)
        };
        clamped as i8
    }

    /// Finish channel `c`'s accumulator `acc` (the sum of products, bias not included).
    #[inline]
    pub fn apply(&self, acc: i32, c: usize) -> i8 {
        self.finish(&self.channel(c), acc)
    }
}

/// Four bytes as a little-endian `i32` (0 for any other length).
#[inline(always)]
fn word_le(bytes: &[u8]) -> i32 {
    match *bytes {
        [a, b, c, d] => i32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// One output channel's bias and requantization pair, decoded from an
/// [`OutputStage`].
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)] // `quad::finish_row` reads the fields by their offsets
pub(crate) struct ChannelQuant {
    bias: i32,
    requant: Requant,
    small: SmallTerms,
}

/// The terms of [`OutputStage::finish_small`]'s requantization that depend on the
/// channel only, worked out once with it: recomputed per output, `2^(right − 1)`
/// alone took three Cortex-M4 instructions, and the branch on `right` two more.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)] // `quad::finish_row` reads `bias` to `right` with one `LDM`
struct SmallTerms {
    /// `bias · 2^(left + 1)`, wrapping.
    bias: i32,
    /// `2^(left + 1)` (`2^31` at most, as `i32::MIN`; a small accumulator with
    /// `left ≥ 30` is 0): one multiply-add with the bias, where a shift by a
    /// register took a mask, the shift and the add. 0 where the channel is not small
    /// ([`ChannelQuant::finishes_small`]).
    scale: i32,
    /// `2^(right − 1)` (0 for `right = 0`) plus the output offset times `2^right`:
    /// `⌊(v + offset · 2^right) / 2^right⌋ = ⌊v / 2^right⌋ + offset`, so the offset
    /// needs no add of its own. Within `i32` with the high word for `right` up to
    /// [`SMALL_RIGHT_MAX`].
    round: i32,
    /// −1 where `right ≥ 1`, else 0: what a negative value adds before the divide.
    negative: i32,
    /// `right`, in `0..=31` (`finish_small` shifts by it unchecked).
    right: u32,
}

impl ChannelQuant {
    fn new(bias: i32, requant: Requant) -> Self {
        ChannelQuant {
            bias,
            requant,
            small: SmallTerms::default(),
        }
    }

    /// Whether [`OutputStage::small_channels_into`] found this channel small and
    /// filled its terms.
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    #[inline(always)]
    pub(crate) fn finishes_small(&self) -> bool {
        self.small.scale != 0
    }

    /// Work out [`OutputStage::finish_small`]'s terms.
    #[inline(always)]
    fn fill_small_terms(&mut self, output_offset: i32) {
        let shift = (self.requant.left + 1).min(31);
        let right = self.requant.right & 31;
        let half = ((1u32 << right) >> 1) as i32;
        self.small = SmallTerms {
            bias: self.bias.wrapping_shl(shift),
            scale: 1i32.wrapping_shl(shift),
            round: half.wrapping_add(output_offset.wrapping_shl(right)),
            negative: -i32::from(right > 0),
            right,
        };
    }

    /// Whether `stage.finish(self, acc)` is non-decreasing over `|acc| ≤ reach`: the
    /// multiplier is not negative (SRDHM and the rounding divide are then
    /// non-decreasing, as the clamps are) and neither the bias add, nor the left
    /// shift, nor the output offset add can wrap there (the requantized value is at
    /// most the shifted one in size, the multiplier being below 1).
    pub(crate) fn monotonic_within(&self, reach: i64, stage: &OutputStage<'_>) -> bool {
        let shifted = (i64::from(self.bias).abs() + reach) << self.requant.left.min(31);
        let widest = shifted + i64::from(stage.output_offset).abs();
        self.requant.multiplier >= 0 && widest < i64::from(i32::MAX)
    }

    /// Whether every accumulator `|acc| ≤ reach` has `(acc + bias) · 2^left` below
    /// 2^30 in size, and the multiplier is not negative (the validator refuses
    /// negative ones): where [`OutputStage::finish_small`] is exact.
    #[inline(always)]
    pub(crate) fn small_within(&self, reach: u32) -> bool {
        // `x · 2^left < 2^30` as `x ≤ (2^30 − 1) >> left`: 32-bit arithmetic only.
        let widest = self.bias.unsigned_abs().saturating_add(reach);
        widest <= ((1u32 << 30) - 1).wrapping_shr(self.requant.left.min(31))
            && self.requant.multiplier >= 0
    }
}

/// Largest right shift of the small form, whose rounding term carries the output
/// offset times `2^right` ([`OutputStage::finish_small`]): with the high word (below
/// `2^30` in size) the sum stays within `i32` up to here; TFLite's shifts are
/// rarely above 12.
const SMALL_RIGHT_MAX: u32 = 22;

/// The largest accumulator of a window of `len` offset inputs (`|x + offset| ≤ 384`,
/// offsets within ±256 as the packed paths require) against int8 weights.
pub(crate) fn window_reach(len: usize) -> u32 {
    u32::try_from(len)
        .unwrap_or(u32::MAX)
        .saturating_mul(128 * 384)
}

/// Offsets and fixed-point parameters of an add (see
/// [`crate::fixed_point::AddQuant`]; the Add kernel's, here because the x86 kernels take it too).
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

/// Output channels decoded at once into a [`ChannelQuant`] stack array (256 bytes).
pub(crate) const QUANT_BLOCK: usize = 16;

/// Geometry of a 2-D window op (conv, depthwise conv, pooling), all NHWC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[allow(missing_docs)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub out_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride_h: usize,
    pub stride_w: usize,
    pub pad_top: usize,
    pub pad_left: usize,
}

impl ConvGeometry {
    /// Check the geometry is self-consistent and return `(input_len, output_len)`.
    ///
    /// Consistent means: no zero size or stride, padding smaller than the kernel, every
    /// window starts inside the padded input and every product fits `usize`. Then all
    /// index arithmetic in the kernels stays below the slice lengths.
    pub fn lens(&self) -> Result<(usize, usize), Error> {
        let dims = [
            self.batch,
            self.in_h,
            self.in_w,
            self.in_c,
            self.out_h,
            self.out_w,
            self.out_c,
            self.kernel_h,
            self.kernel_w,
            self.stride_h,
            self.stride_w,
        ];
        if dims.contains(&0) || self.pad_top >= self.kernel_h || self.pad_left >= self.kernel_w {
            return Err(Error::KernelArgs);
        }
        let last_h = (self.out_h - 1).checked_mul(self.stride_h);
        let last_w = (self.out_w - 1).checked_mul(self.stride_w);
        let inside = |last: Option<usize>, size: usize, pad: usize| {
            last.zip(size.checked_add(pad)).is_some_and(|(l, s)| l < s)
        };
        if !inside(last_h, self.in_h, self.pad_top) || !inside(last_w, self.in_w, self.pad_left) {
            return Err(Error::KernelArgs);
        }
        let product = |d: [usize; 4]| {
            d.iter()
                .try_fold(1usize, |a, &b| a.checked_mul(b))
                .ok_or(Error::KernelArgs)
        };
        let input = product([self.batch, self.in_h, self.in_w, self.in_c])?;
        let output = product([self.batch, self.out_h, self.out_w, self.out_c])?;
        Ok((input, output))
    }

    /// In-bounds kernel offsets `k0..k1` along one axis for the window starting at
    /// `origin` (= output index · stride) with `pad` padding over `size` inputs.
    #[inline]
    pub(crate) fn window(origin: usize, pad: usize, kernel: usize, size: usize) -> (usize, usize) {
        let k0 = pad.saturating_sub(origin);
        let k1 = kernel.min((size + pad).saturating_sub(origin));
        (k0, k1.max(k0))
    }
}

/// `Σ (x + input_offset) · w` over two equal-length runs, wrapping.
///
/// Computed as `Σ x·w + input_offset · Σ w` (equal modulo 2^32, so bit-identical to
/// the direct form): both sums run over plain `i8` pairs, which compilers vectorize
/// well (each product fits an `i16`).
#[inline]
pub(crate) fn dot(input: &[i8], weights: &[i8], input_offset: i32) -> i32 {
    let mut xw = 0i32;
    let mut sw = 0i32;
    for (&x, &w) in input.iter().zip(weights) {
        xw = xw.wrapping_add(i32::from(x) * i32::from(w));
        sw = sw.wrapping_add(i32::from(w));
    }
    xw.wrapping_add(input_offset.wrapping_mul(sw))
}

/// Largest run of offset inputs (`x + input_offset` as `i16`) a kernel keeps on the
/// stack: 512 entries, 1 KiB. Longer runs take the slower [`dot`] paths.
pub(crate) const OFFSET_CAP: usize = 512;

// The fused conv + pool kernels compute sparse and packed pixels through one window.
const _: () = assert!(crate::format::FUSED_WINDOW_CAP as usize <= OFFSET_CAP);

/// `input_offset` as an `i16` if `|input_offset| ≤ 256`, so that `x + input_offset`
/// fits an `i16` for every `i8` `x` (always the case for a validated model, whose
/// offsets lie in `−127..=128`).
#[inline]
pub(crate) fn small_offset(input_offset: i32) -> Option<i16> {
    i16::try_from(input_offset)
        .ok()
        .filter(|o| (-256..=256).contains(o))
}

/// `dst[i] = src[i] + offset` (no overflow: `|offset| ≤ 256`).
#[inline]
pub(crate) fn offset_into(dst: &mut [i16], src: &[i8], offset: i16) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = i16::from(s).wrapping_add(offset);
    }
}

/// `Σ x·w` over offset inputs `x` (`|x| ≤ 384`, so each product is exact in `i32`
/// and equals the reference's `(x + input_offset) · w`), wrapping.
#[inline]
pub(crate) fn dot_offset(x: &[i16], w: &[i8]) -> i32 {
    let mut acc = 0i32;
    for (&xv, &wv) in x.iter().zip(w) {
        acc = acc.wrapping_add(i32::from(xv).wrapping_mul(i32::from(wv)));
    }
    acc
}

/// [`dot_offset`] of one input run against four weight runs at once, so each input
/// value is loaded once per four products.
#[inline]
pub(crate) fn dot_offset4(x: &[i16], w0: &[i8], w1: &[i8], w2: &[i8], w3: &[i8]) -> [i32; 4] {
    let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
    for ((((&xv, &v0), &v1), &v2), &v3) in x.iter().zip(w0).zip(w1).zip(w2).zip(w3) {
        let xv = i32::from(xv);
        a0 = a0.wrapping_add(xv.wrapping_mul(i32::from(v0)));
        a1 = a1.wrapping_add(xv.wrapping_mul(i32::from(v1)));
        a2 = a2.wrapping_add(xv.wrapping_mul(i32::from(v2)));
        a3 = a3.wrapping_add(xv.wrapping_mul(i32::from(v3)));
    }
    [a0, a1, a2, a3]
}

/// Whether [`channels_offset`] uses the packed dual-MAC path: on SMLAD targets, and in
/// this crate's unit tests (with the portable SMLAD), which check it against the plain
/// path that the integration tests run on the host.
pub(crate) const PACKED: bool = cfg!(any(
    test,
    all(
        target_arch = "arm",
        any(target_feature = "dsp", sprig_arm_dsp)
    )
));

/// Scratch space for [`channels_offset`]'s packed inputs: `OFFSET_CAP / 2` words where
/// [`PACKED`], none elsewhere. Callers make one per kernel call, not per pixel.
pub(crate) type PackScratch = [u32; if PACKED { OFFSET_CAP / 2 } else { 0 }];

/// An empty [`PackScratch`].
pub(crate) const PACK_SCRATCH: PackScratch = [0; if PACKED { OFFSET_CAP / 2 } else { 0 }];

/// Pack offset inputs for `SMLAD` (`dual::dot_two`): each group `x0 x1 x2 x3` becomes
/// the words `(x0, x2)` and `(x1, x3)` (low half first), matching `SXTB16` and
/// `SXTB16 …, ROR #8` of the four weight bytes. `out.len() = x.len() / 4 · 2`;
/// the `x.len() % 4` tail is left to the caller.
#[inline]
fn pack_pairs(x: &[i16], out: &mut [u32]) {
    for (g, o) in x.chunks_exact(4).zip(out.chunks_exact_mut(2)) {
        if let (&[x0, x1, x2, x3], [even, odd]) = (g, o) {
            let h = |v: i16| u32::from(v as u16);
            *even = h(x0) | (h(x2) << 16);
            *odd = h(x1) | (h(x3) << 16);
        }
    }
}

/// Four weight bytes as a little-endian word (the portable loops' load).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
fn word(w: &[i8]) -> u32 {
    match *w {
        [a, b, c, d] => u32::from_le_bytes([a as u8, b as u8, c as u8, d as u8]),
        _ => 0,
    }
}

/// [`dot_offset`] over inputs packed by [`pack_pairs`] (`packed`, covering the first
/// `packed.len() · 2` inputs) plus the unpacked tail `tail`, for two weight runs.
/// Same sums, wrapping, so bit-identical.
#[inline(never)]
fn dot_packed2(packed: &[u32], tail: &[i16], w0: &[i8], w1: &[i8]) -> [i32; 2] {
    let body = packed.len() * 2;
    let (b0, t0) = w0.split_at_checked(body).unwrap_or((&[], &[]));
    let (b1, t1) = w1.split_at_checked(body).unwrap_or((&[], &[]));
    let (a0, a1) = dual::dot_two(packed, b0, b1, (0, 0));
    [
        a0.wrapping_add(dot_offset(tail, t0)),
        a1.wrapping_add(dot_offset(tail, t1)),
    ]
}

/// [`channels_offset`] on SMLAD targets: pack `x` once, then two channels per pass
/// (four run out of registers on Cortex-M4).
#[inline]
fn channels_packed(
    x: &[i16],
    scratch: &mut PackScratch,
    weights: &[i8],
    stage: &OutputStage<'_>,
    quants: &[ChannelQuant],
    out: &mut [i8],
) -> Result<(), Error> {
    pack_input(x, scratch)?;
    channels_from_packed(x, scratch, weights, stage, quants, out)
}

/// Pack `x` into `scratch` for [`channels_prepacked`] (its first `x.len() / 4 · 2`
/// words), where several blocks of channels read the same input.
#[inline]
pub(crate) fn pack_input(x: &[i16], scratch: &mut PackScratch) -> Result<(), Error> {
    let packed = scratch
        .get_mut(..x.len() / 4 * 2)
        .ok_or(Error::KernelArgs)?;
    pack_pairs(x, packed);
    Ok(())
}

/// [`channels_offset`] where [`PACKED`], on an `x` that [`pack_input`] has already
/// packed into `scratch` (a fully connected row, for all its blocks of channels).
#[inline(never)]
pub(crate) fn channels_prepacked(
    x: &[i16],
    scratch: &PackScratch,
    weights: &[i8],
    stage: &OutputStage<'_>,
    quants: &[ChannelQuant],
    out: &mut [i8],
) -> Result<(), Error> {
    channels_from_packed(x, scratch, weights, stage, quants, out)
}

/// The body of [`channels_packed`] and [`channels_prepacked`]. Always inlined: a call
/// here from the conv kernels' pixel loops cost lenet5's conv1 4 % more instructions on
/// the Cortex-M4 (LLVM then laid out the fused kernel's loops worse).
#[inline(always)]
fn channels_from_packed(
    x: &[i16],
    scratch: &PackScratch,
    weights: &[i8],
    stage: &OutputStage<'_>,
    quants: &[ChannelQuant],
    out: &mut [i8],
) -> Result<(), Error> {
    let len = x.len();
    if len == 0 || out.len() != quants.len() || out.len().checked_mul(len) != Some(weights.len()) {
        return Err(Error::KernelArgs);
    }
    let packed = scratch.get(..len / 4 * 2).ok_or(Error::KernelArgs)?;
    let tail = x.get(len / 4 * 4..).ok_or(Error::KernelArgs)?;
    if tail.is_empty() {
        // Sums first, then the requantizations: each loop then keeps its own values
        // in registers. (Not for short blocks with a tail, such as vww's first conv:
        // there zeroing the sums cost more than the split saves.)
        let mut sums = [0i32; QUANT_BLOCK];
        let sums = sums.get_mut(..out.len()).ok_or(Error::KernelArgs)?;
        sums_packed(packed, weights, sums);
        for ((y, &acc), q) in out.iter_mut().zip(sums.iter()).zip(quants) {
            *y = stage.finish(q, acc);
        }
        return Ok(());
    }
    let mut outs = out.chunks_exact_mut(2);
    let mut filters = weights.chunks_exact(2 * len);
    let mut qs = quants.chunks_exact(2);
    for ((o, f), q) in outs.by_ref().zip(filters.by_ref()).zip(qs.by_ref()) {
        let (w0, w1) = f.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let acc = dot_packed2(packed, tail, w0, w1);
        for ((y, a), q) in o.iter_mut().zip(acc).zip(q) {
            *y = stage.finish(q, a);
        }
    }
    for ((y, w), q) in outs
        .into_remainder()
        .iter_mut()
        .zip(filters.remainder().chunks_exact(len))
        .zip(qs.remainder())
    {
        *y = stage.finish(q, dot_packed2(packed, tail, w, w)[0]);
    }
    Ok(())
}

/// `sums[j] = Σ x·w` over weight row `j` (`weights` holds `sums.len()` rows of
/// `len = 2·packed.len()` values), `x` packed by [`pack_pairs`] into `packed`: two
/// rows per `SMLAD` pass ([`dual::dot_row_pairs`]). Out of line and apart from the
/// requantization, the passes keep their pointers in registers: in one loop with it,
/// LLVM spilled around each pass (about 90 Cortex-M4 instructions a pair of rows).
#[inline(never)]
fn sums_packed(packed: &[u32], weights: &[i8], sums: &mut [i32]) {
    let len = packed.len() * 2;
    let even = sums.len() / 2 * 2;
    let Some((pairs, last)) = sums.split_at_mut_checked(even) else {
        return;
    };
    let (paired, rest) = weights.split_at(weights.len().min(even.saturating_mul(len)));
    dual::dot_row_pairs(packed, paired, pairs);
    if let ([s], Some(w)) = (last, rest.get(..len)) {
        *s = dot_packed2(packed, &[], w, w)[0];
    }
}

/// For each output channel `j` (weights `weights[j·len .. (j+1)·len]`,
/// `len = x.len()`), `out[j] = stage.finish(&quants[j], Σ x·w)`: four channels per
/// pass over `x` (a last partial group of one to three as one more pass), or where
/// [`PACKED`], `x` packed into `scratch` once and two channels per `SMLAD` pass.
// Not inlined. Inlined, on RISC-V it made `fully_connected_by` 512 B larger (and took
// `dot_offset4` out of line), and on the Cortex-M3 it sat inside the gathered conv
// path: out of line, M3 instructions per inference kws_ref_model −9.8 %,
// pretrainedResnet_quant −11.7 %, speech −10.7 %; the M4 and M0 builds are unchanged.
#[inline(never)]
pub(crate) fn channels_offset(
    x: &[i16],
    scratch: &mut PackScratch,
    weights: &[i8],
    stage: &OutputStage<'_>,
    quants: &[ChannelQuant],
    out: &mut [i8],
) -> Result<(), Error> {
    let len = x.len();
    if len == 0 || out.len() != quants.len() || out.len().checked_mul(len) != Some(weights.len()) {
        return Err(Error::KernelArgs);
    }
    if PACKED {
        return channels_packed(x, scratch, weights, stage, quants, out);
    }
    let mut outs = out.chunks_exact_mut(4);
    let mut filters = weights.chunks_exact(4 * len);
    let mut qs = quants.chunks_exact(4);
    for ((o, f), q) in outs.by_ref().zip(filters.by_ref()).zip(qs.by_ref()) {
        let (w0, r) = f.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let (w1, r) = r.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let (w2, w3) = r.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let acc = dot_offset4(x, w0, w1, w2, w3);
        for ((y, a), q) in o.iter_mut().zip(acc).zip(q) {
            *y = stage.finish(q, a);
        }
    }
    // One to three channels left: one more four-wide pass (repeating the last run), as
    // vectorized as the others, rather than one short loop per channel.
    let mut rest = filters.remainder().chunks_exact(len);
    if let Some(w0) = rest.next() {
        let w1 = rest.next().unwrap_or(w0);
        let w2 = rest.next().unwrap_or(w1);
        let acc = dot_offset4(x, w0, w1, w2, w2);
        for ((y, a), q) in outs
            .into_remainder()
            .iter_mut()
            .zip(acc)
            .zip(qs.remainder())
        {
            *y = stage.finish(q, a);
        }
    }
    Ok(())
}

/// `acc[j] += Σ x·w` over piece `start..start + x.len()` of each of the `acc.len()`
/// weight rows `rows[j·row_len ..][..row_len]`, wrapping: a row longer than
/// [`OFFSET_CAP`] summed in pieces of offset inputs, `x` packed into `scratch` once and
/// two rows per `SMLAD` pass, as in [`channels_offset`]. Only where [`PACKED`] (the
/// callers check): elsewhere `scratch` has no room and the call is `KernelArgs`.
// Not inlined: inlined into `fully_connected_by`, it took `offset_into` out of line
// there (ad01_int8: 4,300 more M4 instructions per inference).
#[inline(never)]
pub(crate) fn accumulate_offset(
    x: &[i16],
    scratch: &mut PackScratch,
    rows: &[i8],
    row_len: usize,
    start: usize,
    acc: &mut [i32],
) -> Result<(), Error> {
    let len = x.len();
    if start.checked_add(len).is_none_or(|end| end > row_len) {
        return Err(Error::KernelArgs);
    }
    let piece = |j: usize| {
        rows.get(j * row_len + start..)
            .and_then(|r| r.get(..len))
            .ok_or(Error::KernelArgs)
    };
    pack_input(x, scratch)?;
    let packed = scratch.get(..len / 4 * 2).ok_or(Error::KernelArgs)?;
    let tail = x.get(len / 4 * 4..).ok_or(Error::KernelArgs)?;
    for (k, pair) in acc.chunks_mut(2).enumerate() {
        let w0 = piece(2 * k)?;
        let w1 = if pair.len() == 2 {
            piece(2 * k + 1)?
        } else {
            w0
        };
        for (a, sum) in pair.iter_mut().zip(dot_packed2(packed, tail, w0, w1)) {
            *a = a.wrapping_add(sum);
        }
    }
    Ok(())
}

/// Largest window the two-pixel path takes ([`channels_offset_pair`]): two windows fit
/// the one window buffer of [`OFFSET_CAP`] entries, and their packed pairs the one
/// [`PackScratch`].
pub(crate) const PAIR_CAP: usize = OFFSET_CAP / 2;

/// Longest window whose channels [`channels_offset_pair`] sums all at once
/// ([`dual::dot_pair_rows`]): its inner loop takes one instruction more per 8 products
/// than `dot_pair`'s, which longer windows would pay for more than the rows loop saves.
const PAIR_ROWS_CAP: usize = 32;

/// Whether conv kernels compute two pixels per pass over the weights
/// ([`channels_offset_pair`]): where [`PACKED`], for windows of at most [`PAIR_CAP`].
#[inline]
pub(crate) fn pairs_pixels(window_len: usize) -> bool {
    PACKED && window_len <= PAIR_CAP
}

/// Pack two equal-length runs of offset inputs for `dual::dot_pair`: each group of four
/// becomes the words `(a0,a2) (a1,a3) (b0,b2) (b1,b3)`. `out.len() = a.len() / 4 · 4`;
/// the `a.len() % 4` tails are left to the caller.
#[inline]
fn pack_pixel_pair(a: &[i16], b: &[i16], out: &mut [u32]) {
    let h = |v: i16| u32::from(v as u16);
    for ((ga, gb), o) in a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .zip(out.chunks_exact_mut(4))
    {
        if let (&[a0, a1, a2, a3], &[b0, b1, b2, b3], [p0, p1, p2, p3]) = (ga, gb, o) {
            *p0 = h(a0) | (h(a2) << 16);
            *p1 = h(a1) | (h(a3) << 16);
            *p2 = h(b0) | (h(b2) << 16);
            *p3 = h(b1) | (h(b3) << 16);
        }
    }
}

/// [`channels_offset`] for two pixels at once: `out_a[j]` from window `xa`, `out_b[j]`
/// from `xb` (equal lengths, at most [`PAIR_CAP`]). Both windows are packed side by side
/// and each weight word, loaded and sign-extended once, feeds both pixels
/// (`dual::dot_pair`). Same sums, wrapping, so bit-identical. Only where
/// [`pairs_pixels`] (the callers check). `stage` comes with whether the block's
/// accumulators are known small ([`OutputStage::small_channels_into`]: then
/// [`OutputStage::finish_small`]).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(crate) fn channels_offset_pair(
    xa: &[i16],
    xb: &[i16],
    scratch: &mut PackScratch,
    weights: &[i8],
    stage: (&OutputStage<'_>, Finish),
    quants: &[ChannelQuant],
    out_a: &mut [i8],
    out_b: &mut [i8],
) -> Result<(), Error> {
    let len = xa.len();
    let body = len / 4 * 4;
    if xb.len() != len {
        return Err(Error::KernelArgs);
    }
    let (packed, rest) = scratch
        .split_at_mut_checked(body)
        .ok_or(Error::KernelArgs)?;
    pack_pixel_pair(xa, xb, packed);
    let tails = xa
        .get(body..)
        .zip(xb.get(body..))
        .ok_or(Error::KernelArgs)?;
    channels_from_packed_pair(packed, rest, tails, weights, stage, quants, out_a, out_b)
}

/// Two pixels' conv windows as they lie in an int8 image: `rows` runs of `run`
/// values each (a kernel row's `KW · C`), consecutive runs `stride` apart (an image
/// row), the first pixel's window from `starts.0`, the second's from `starts.1`.
pub(crate) struct WindowPair<'i> {
    pub image: &'i [i8],
    pub starts: (usize, usize),
    pub rows: usize,
    pub run: usize,
    pub stride: usize,
}

/// [`channels_offset_pair`] for two windows read straight from an int8 image
/// (`run` a multiple of 4) with their input `offset`, packed run by run
/// (`dual::pack_offset_pair`) into the layout [`pack_pixel_pair`] gives the gathered
/// `i16` windows: interior pixels go without the copies into those windows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn channels_offset_pair_i8(
    pair: &WindowPair<'_>,
    offset: i16,
    scratch: &mut PackScratch,
    weights: &[i8],
    stage: (&OutputStage<'_>, Finish),
    quants: &[ChannelQuant],
    out_a: &mut [i8],
    out_b: &mut [i8],
) -> Result<(), Error> {
    let WindowPair {
        image,
        starts: (a, b),
        rows,
        run,
        stride,
    } = *pair;
    let len = rows.checked_mul(run).ok_or(Error::KernelArgs)?;
    if run == 0 || !run.is_multiple_of(4) {
        return Err(Error::KernelArgs);
    }
    let (packed, rest) = scratch.split_at_mut_checked(len).ok_or(Error::KernelArgs)?;
    let run_at = |start: usize, r: usize| image.get(start + r * stride..)?.get(..run);
    if rows == 1 {
        // A 1×1 conv's pixels (and any one-row window): without the rows loop's setup
        // (vww 0.6 % fewer instructions).
        let (Some(xa), Some(xb)) = (run_at(a, 0), run_at(b, 0)) else {
            return Err(Error::KernelArgs);
        };
        dual::pack_offset_pair(xa, xb, offset, packed);
    } else {
        for (r, out) in packed.chunks_exact_mut(run).enumerate() {
            let (Some(xa), Some(xb)) = (run_at(a, r), run_at(b, r)) else {
                return Err(Error::KernelArgs);
            };
            dual::pack_offset_pair(xa, xb, offset, out);
        }
    }
    channels_from_packed_pair(
        packed,
        rest,
        (&[], &[]),
        weights,
        stage,
        quants,
        out_a,
        out_b,
    )
}

/// The body of [`channels_offset_pair`] and [`channels_offset_pair_i8`] once the two
/// windows are packed: `packed` (their first `packed.len()` values), `tails` (the
/// rest, unpacked), `rest` the scratch after the packed words. It checks the
/// outputs and weights against the windows for both. Inlined into both:
/// out of line it saved 0.7 KiB of code and cost vww 2.9 % more instructions.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn channels_from_packed_pair(
    packed: &[u32],
    rest: &mut [u32],
    (tail_a, tail_b): (&[i16], &[i16]),
    weights: &[i8],
    (stage, form): (&OutputStage<'_>, Finish),
    quants: &[ChannelQuant],
    out_a: &mut [i8],
    out_b: &mut [i8],
) -> Result<(), Error> {
    let body = packed.len();
    let len = body + tail_a.len();
    if len == 0
        || tail_b.len() != tail_a.len()
        || out_a.len() != quants.len()
        || out_b.len() != quants.len()
        || out_a.len().checked_mul(len) != Some(weights.len())
    {
        return Err(Error::KernelArgs);
    }
    if tail_a.is_empty() && len <= PAIR_ROWS_CAP {
        // Sums first (in the scratch after the packed windows: a stack array would be
        // zeroed per call), then the requantizations, as in `channels_from_packed`.
        let sums = rest.get_mut(..2 * quants.len()).ok_or(Error::KernelArgs)?;
        dual::dot_pair_rows(packed, weights, sums);
        let outs = out_a.iter_mut().zip(out_b.iter_mut());
        let rows = outs.zip(quants).zip(sums.chunks_exact(2));
        // One loop per form: the form chosen per output (one helper for both) cost
        // vww 0.4 % more instructions, chosen per row as much again.
        by_finish!(form, stage, |f| {
            for (((ya, yb), q), s) in rows {
                if let &[a, b] = s {
                    *ya = f.finish(q, a as i32);
                    *yb = f.finish(q, b as i32);
                }
            }
        });
        return Ok(());
    }
    let rows = weights
        .chunks_exact(len)
        .zip(quants)
        .zip(out_a.iter_mut())
        .zip(out_b.iter_mut());
    by_finish!(form, stage, |f| {
        for (((w, q), ya), yb) in rows {
            let (w_body, w_tail) = w.split_at_checked(body).ok_or(Error::KernelArgs)?;
            let acc = (dot_offset(tail_a, w_tail), dot_offset(tail_b, w_tail));
            let (a, b) = dual::dot_pair(packed, w_body, acc);
            *ya = f.finish(q, a);
            *yb = f.finish(q, b);
        }
    });
    Ok(())
}

/// Largest number of channels a pooling kernel accumulates at once on the stack.
pub(crate) const CHANNEL_BLOCK: usize = 32;

#[cfg(test)]
mod packed_tests {
    use super::test_support::xorshift;
    use super::*;
    use std::vec::Vec;

    /// `finish_small` equals `finish` for every accumulator within a reach that
    /// `small_channels_into` accepts: random multipliers (negative ones and `i32::MIN`
    /// included), shifts over their whole range, biases, offsets and clamps, with the
    /// accumulators at the reach's edges as well as inside it.
    #[test]
    fn finish_small_matches_finish_within_reach() {
        let mut next = xorshift(0x1234_5678_9abc_def1u64);
        let (mut checked, mut full_range) = (0, 0);
        for case in 0..4000 {
            let multiplier = match case % 50 {
                0 => i32::MIN,
                1 => i32::MAX,
                _ => next() as i32,
            };
            let shift = (next() % 62) as i32 - 31;
            let bias = (next() as i32) >> (next() % 32);
            let mut requant = [0u8; 5];
            requant[..4].copy_from_slice(&multiplier.to_le_bytes());
            requant[4] = shift as i8 as u8;
            let bias_bytes = bias.to_le_bytes();
            // A quarter of the clamps are int8's whole range.
            let whole = case % 4 == 0;
            let lo = if whole {
                -128
            } else {
                (next() % 256) as i32 - 128
            };
            let stage = OutputStage {
                bias: Some(&bias_bytes),
                requant: &requant,
                channels: 1,
                output_offset: (next() % 256) as i32 - 128,
                act_min: lo,
                act_max: if whole {
                    127
                } else {
                    lo.max((next() % 256) as i32 - 128)
                },
            };
            let mut q = [ChannelQuant::default()];
            let reach = (next() >> (33 + next() % 24)) as u32;
            let form = stage.small_channels_into(0, &mut q, reach);
            if form == Finish::Exact {
                continue;
            }
            let [q] = q;
            checked += 1;
            let reach = reach as i32;
            for acc in [-reach, reach, 0, (next() as i32) % reach.max(1)] {
                let want = stage.finish(&q, acc);
                let got = match form {
                    Finish::SmallFullRange => stage.finish_small::<true>(&q, acc),
                    _ => stage.finish_small::<false>(&q, acc),
                };
                assert_eq!(
                    got, want,
                    "m {multiplier} shift {shift} bias {bias} acc {acc}"
                );
                full_range += usize::from(form == Finish::SmallFullRange);
            }
        }
        assert!(checked > 500, "only {checked} cases within reach");
        assert!(full_range > 20, "only {full_range} full-range clamps");
    }

    /// Two windows packed straight from an int8 image, run by run, give what their
    /// gathered, offset `i16` windows give: runs of 4 to 64 values, one to three of
    /// them (up to the scratch), up to 16 channels, offsets across ±256.
    #[test]
    fn image_window_pairs_match_gathered_windows() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let requant = [0x00, 0x00, 0x10, 0x00, 0x00]; // 2^20, shift 0: single rounding
        let mut varied = false;
        for (run, rows) in (4..=64usize)
            .step_by(4)
            .flat_map(|run| (1..=3).map(move |r| (run, r)))
        {
            let len = run * rows;
            for channels in [1usize, 2, 3, 7, 16] {
                let offset = (next() % 513) as i16 - 256;
                let stride = run + 12;
                let image: Vec<i8> = (0..stride * rows + run + 8).map(|_| next() as i8).collect();
                let starts = (next() as usize % 4, 4 + next() as usize % 4);
                let gather = |start: usize| -> Vec<i16> {
                    (0..rows)
                        .flat_map(|r| &image[start + r * stride..][..run])
                        .map(|&v| i16::from(v) + offset)
                        .collect()
                };
                let (xa, xb) = (gather(starts.0), gather(starts.1));
                let w: Vec<i8> = (0..len * channels).map(|_| next() as i8).collect();
                let stage = OutputStage {
                    bias: None,
                    requant: &requant,
                    channels,
                    output_offset: -5,
                    act_min: -128,
                    act_max: 127,
                };
                let mut quants = std::vec![ChannelQuant::default(); channels];
                let small = stage.small_channels_into(0, &mut quants, window_reach(len));
                let mut scratch = PACK_SCRATCH;
                let mut want = (std::vec![0i8; channels], std::vec![0i8; channels]);
                let (wa, wb) = (&mut want.0, &mut want.1);
                channels_offset_pair(
                    &xa,
                    &xb,
                    &mut scratch,
                    &w,
                    (&stage, Finish::Exact),
                    &quants,
                    wa,
                    wb,
                )
                .unwrap();
                let pair = WindowPair {
                    image: &image,
                    starts,
                    rows,
                    run,
                    stride,
                };
                let mut got = (std::vec![1i8; channels], std::vec![1i8; channels]);
                let (ga, gb) = (&mut got.0, &mut got.1);
                let stage = (&stage, small);
                channels_offset_pair_i8(&pair, offset, &mut scratch, &w, stage, &quants, ga, gb)
                    .unwrap();
                assert_eq!(got, want, "run {run} rows {rows} channels {channels}");
                varied |= want.0.iter().chain(&want.1).any(|&v| v != want.0[0]);
            }
        }
        assert!(
            varied,
            "every output the same: the comparison shows nothing"
        );
    }

    /// The two-pixel path gives each pixel's plain `Σ x·w`, for every window length up
    /// to [`PAIR_CAP`] and channel count.
    #[test]
    fn pixel_pairs_match_plain_dot() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1du64);
        let requant = [0x00, 0x00, 0x10, 0x00, 0x00]; // 2^20, shift 0: single rounding
        for len in (1..=40usize).chain([150, 255, PAIR_CAP]) {
            for channels in 1..=5usize {
                let mut x =
                    || -> Vec<i16> { (0..len).map(|_| (next() % 769) as i16 - 384).collect() };
                let (xa, xb) = (x(), x());
                let w: Vec<i8> = (0..len * channels).map(|_| next() as i8).collect();
                let stage = OutputStage {
                    bias: None,
                    requant: &requant,
                    channels,
                    output_offset: 3,
                    act_min: -128,
                    act_max: 127,
                };
                let quants: Vec<ChannelQuant> = (0..channels).map(|c| stage.channel(c)).collect();
                let mut scratch = PACK_SCRATCH;
                let (mut ya, mut yb) = (std::vec![0i8; channels], std::vec![0i8; channels]);
                channels_offset_pair(
                    &xa,
                    &xb,
                    &mut scratch,
                    &w,
                    (&stage, Finish::Exact),
                    &quants,
                    &mut ya,
                    &mut yb,
                )
                .unwrap();
                for c in 0..channels {
                    let wc = &w[c * len..(c + 1) * len];
                    let body = len / 4 * 4;
                    let (a, b) = dual::dot_pair(&scratch[..body], &wc[..body], (0, 0));
                    assert_eq!(
                        a,
                        dot_offset(&xa[..body], &wc[..body]),
                        "len {len} channel {c}"
                    );
                    assert_eq!(
                        b,
                        dot_offset(&xb[..body], &wc[..body]),
                        "len {len} channel {c}"
                    );
                    assert_eq!(
                        ya[c],
                        stage.apply(dot_offset(&xa, wc), c),
                        "len {len} channel {c}"
                    );
                    assert_eq!(
                        yb[c],
                        stage.apply(dot_offset(&xb, wc), c),
                        "len {len} channel {c}"
                    );
                }
            }
        }
    }

    /// The packed dual-MAC path (with the portable SMLAD/SXTB16 here) gives the plain
    /// `Σ x·w` for every length and channel count, so the Armv7E-M build, whose only
    /// difference is the three instructions, is bit-exact too.
    #[test]
    fn packed_channels_match_plain_dot() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let requant = [0x00, 0x00, 0x00, 0x40, 0xfe]; // 2^30, shift −2
        for len in 1..=70usize {
            for channels in 1..=9usize {
                let x: Vec<i16> = (0..len).map(|_| (next() % 769) as i16 - 384).collect();
                let w: Vec<i8> = (0..len * channels).map(|_| next() as i8).collect();
                let stage = OutputStage {
                    bias: None,
                    requant: &requant,
                    channels,
                    output_offset: (next() % 20) as i32 - 10,
                    act_min: -128,
                    act_max: 127,
                };
                let quants: Vec<ChannelQuant> = (0..channels).map(|c| stage.channel(c)).collect();
                let mut scratch = PACK_SCRATCH;
                let mut got = std::vec![0i8; channels];
                channels_packed(&x, &mut scratch, &w, &stage, &quants, &mut got).unwrap();
                for (c, &g) in got.iter().enumerate() {
                    let wc = &w[c * len..(c + 1) * len];
                    let acc = dot_offset(&x, wc);
                    let [p, _] = dot_packed2(&scratch[..len / 4 * 2], &x[len / 4 * 4..], wc, wc);
                    assert_eq!(p, acc, "len {len} channel {c}");
                    assert_eq!(g, stage.apply(acc, c), "len {len} channel {c}");
                }
            }
        }
    }
}
