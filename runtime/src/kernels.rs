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

use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, multiply_by_quantized_multiplier};
use crate::format::REQUANT_ENTRY_LEN;

pub mod add;
pub mod argmax;
pub mod conv;
pub mod depthwise;
pub mod fully_connected;
pub mod pooling;
#[cfg(any(test, feature = "std"))]
pub mod reference;
pub mod softmax;

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

    /// Bias of channel `c` (0 if absent).
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

    /// Finish channel `c`'s accumulator `acc` (the sum of products, bias not included).
    #[inline]
    pub fn apply(&self, acc: i32, c: usize) -> i8 {
        let (m, s) = self.requant(c);
        let v = multiply_by_quantized_multiplier(acc.wrapping_add(self.bias(c)), m, s);
        clamp_to_i8(
            v.wrapping_add(self.output_offset),
            self.act_min,
            self.act_max,
        )
    }
}

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

/// For each output channel `oc` (weights `weights[oc·len .. (oc+1)·len]`,
/// `len = x.len()`), `out[oc] = stage.apply(Σ x·w, oc)`, four channels per pass over
/// `x`.
#[inline]
pub(crate) fn channels_offset(
    x: &[i16],
    weights: &[i8],
    stage: &OutputStage<'_>,
    out: &mut [i8],
) -> Result<(), Error> {
    let len = x.len();
    if len == 0 || out.len().checked_mul(len) != Some(weights.len()) {
        return Err(Error::KernelArgs);
    }
    let mut outs = out.chunks_exact_mut(4);
    let mut filters = weights.chunks_exact(4 * len);
    let mut oc = 0usize;
    for (o, f) in outs.by_ref().zip(filters.by_ref()) {
        let (w0, r) = f.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let (w1, r) = r.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let (w2, w3) = r.split_at_checked(len).ok_or(Error::KernelArgs)?;
        let acc = dot_offset4(x, w0, w1, w2, w3);
        for (j, (y, a)) in o.iter_mut().zip(acc).enumerate() {
            *y = stage.apply(a, oc + j);
        }
        oc += 4;
    }
    for (j, (y, w)) in outs
        .into_remainder()
        .iter_mut()
        .zip(filters.remainder().chunks_exact(len))
        .enumerate()
    {
        *y = stage.apply(dot_offset(x, w), oc + j);
    }
    Ok(())
}

/// Largest number of channels a pooling kernel accumulates at once on the stack.
pub(crate) const CHANNEL_BLOCK: usize = 32;
