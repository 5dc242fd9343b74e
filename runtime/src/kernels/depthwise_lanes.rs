//! Depthwise convolution with one filter per input channel (depth multiplier 1) on
//! Armv7E-M: four channels per pass over the window, their accumulators in registers,
//! one `LDR` bringing the four inputs of a tap and `SMLABB` / `SMLATT` multiplying them
//! as 16-bit lanes.
//!
//! The plain kernel walks a 16-entry accumulator array per pixel and tap, and measured
//! 15–22 Cortex-M4 instructions per MAC on vww_96_int8's 3×3 depthwise convs,
//! whose windows hold only nine products per output. Here, per block of
//! [`QUANT_BLOCK`] channels:
//!
//! - each tap's weights of four channels are sign-extended once into two words of
//!   16-bit lanes (`(w0, w2)`, `(w1, w3)`, the lanes `SXTB16` gives the inputs) beside
//!   the tap's input offset, so one `LDM` fetches all three;
//! - the input offset is folded into the accumulator's start, `input_offset · Σ w`
//!   (equal modulo 2^32 to adding it to every input, hence bit-exact);
//! - taps outside the image read a pad word whose bytes are `−input_offset`: their
//!   `x + input_offset` is 0, so every pixel runs the full window and needs the same
//!   start value.
//!
//! The portable spelling of the inner loop (host unit tests) models the instructions
//! exactly; only the loop differs on the target.

#![allow(unsafe_code)]

use super::depthwise_choice::{DepthwiseKernel, LANES, LANE_TAPS_CAP as TAPS_CAP};
use super::finish::{by_finish, Finisher};
use super::{ChannelQuant, ConvGeometry, OutputStage, QUANT_BLOCK};
use crate::error::Error;

/// One tap's weights for one four-channel group: two words of sign-extended 16-bit
/// lanes, `(w0, w2)` and `(w1, w3)`, which `LDRD` reads.
type TapWeights = [u32; 2];

/// [`super::depthwise::depthwise_conv2d`] where [`DepthwiseKernel::of`] chooses
/// [`DepthwiseKernel::Lanes`] (depth multiplier 1, windows of at most [`TAPS_CAP`]
/// taps, channels in whole groups of four, as in every MLPerf Tiny model);
/// `KernelArgs` elsewhere, since the tables below rely on it. The caller has checked
/// the slices against `g`.
pub(crate) fn depthwise_conv2d(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let pad_byte = input_offset
        .checked_neg()
        .and_then(|p| i8::try_from(p).ok())
        .filter(|_| DepthwiseKernel::of(g, 1, input_offset) == DepthwiseKernel::Lanes)
        .ok_or(Error::KernelArgs)?;
    (0..g.out_c).step_by(QUANT_BLOCK).try_for_each(|c0| {
        let n = QUANT_BLOCK.min(g.out_c - c0);
        channel_block(
            g,
            input_offset,
            pad_byte,
            stage,
            filter,
            input,
            output,
            c0,
            n,
        )
    })
}

/// Channels `c0..c0 + n` (`n` a multiple of [`LANES`], at most [`QUANT_BLOCK`]) of
/// every pixel.
#[allow(clippy::too_many_arguments)]
fn channel_block(
    g: &ConvGeometry,
    input_offset: i32,
    pad_byte: i8,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
    c0: usize,
    n: usize,
) -> Result<(), Error> {
    const GROUPS: usize = QUANT_BLOCK / LANES;
    let taps = g.kernel_h * g.kernel_w;
    let groups = n / LANES;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let block = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
    // |x + input_offset| ≤ 128 + |input_offset| and |w| ≤ 128 for each of the taps.
    let reach = (taps as u32 * 128).saturating_mul(128 + input_offset.unsigned_abs());
    let form = stage.small_channels_into(c0, block, reach);

    // Per group: the weights in lanes, and the accumulators' start.
    let mut table = [[[0u32; 2]; TAPS_CAP]; GROUPS];
    let mut start = [[0i32; LANES]; GROUPS];
    let lane = |v: i8| u32::from(i16::from(v) as u16);
    for (gi, (group, start)) in table.iter_mut().zip(&mut start).take(groups).enumerate() {
        let c = c0 + gi * LANES;
        for (t, entry) in group.iter_mut().take(taps).enumerate() {
            let first = t * g.out_c + c;
            let Some(&[w0, w1, w2, w3]) = filter.get(first..first + LANES) else {
                return Err(Error::KernelArgs);
            };
            *entry = [lane(w0) | lane(w2) << 16, lane(w1) | lane(w3) << 16];
            for (s, wv) in start.iter_mut().zip([w0, w1, w2, w3]) {
                *s = s.wrapping_add(input_offset.wrapping_mul(i32::from(wv)));
            }
        }
    }

    let pad = [pad_byte; QUANT_BLOCK];
    let image_len = g.in_h * g.in_w * g.in_c;
    let row = (g.in_w * g.in_c) as isize;
    let mut pixels = output.chunks_exact_mut(g.out_c);
    // The taps' input offsets from a group's window origin, the same for every group
    // (one table for all: rewritten per group, a border pixel of a 64-channel layer
    // took 144 stores, a quarter of kws_ref_model's depthwise instructions).
    let mut offsets = [0usize; TAPS_CAP];
    // Whether `offsets` holds those of a window wholly inside the image.
    let mut interior = false;
    for image in input.chunks_exact(image_len) {
        let pad_from_image = (pad.as_ptr() as isize).wrapping_sub(image.as_ptr() as isize);
        for oy in 0..g.out_h {
            let y0 = (oy * g.stride_h) as isize - g.pad_top as isize;
            for ox in 0..g.out_w {
                let x0 = (ox * g.stride_w) as isize - g.pad_left as isize;
                // The window origin's byte offset in the image, channel `c0` (may lie
                // outside it; only in-bounds taps are read from the image).
                let origin = (y0 * row + x0 * g.in_c as isize) + c0 as isize;
                let inside = y0 >= 0
                    && x0 >= 0
                    && y0 as usize + g.kernel_h <= g.in_h
                    && x0 as usize + g.kernel_w <= g.in_w;
                if !inside || !interior {
                    let pad_offset = pad_from_image.wrapping_sub(origin);
                    write_offsets(g, y0, x0, pad_offset, &mut offsets);
                    interior = inside;
                }
                let offsets = offsets.get(..taps).ok_or(Error::KernelArgs)?;
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                let out_block = out_px.get_mut(c0..c0 + n).ok_or(Error::KernelArgs)?;
                let base = image.as_ptr().wrapping_offset(origin);
                let groups = table.iter().zip(&start).zip(quants.chunks_exact(LANES));
                for (gi, (((group, &start), quants), out)) in
                    groups.zip(out_block.chunks_exact_mut(LANES)).enumerate()
                {
                    let weights = group.get(..taps).ok_or(Error::KernelArgs)?;
                    // SAFETY: `write_offsets` made every offset lead from `base` (the
                    // pixel's window origin at this group's first channel) to four
                    // readable bytes: inside `image` for a tap in bounds (channels
                    // `c0 + 4·gi .. +4 ≤ in_c` of an in-bounds pixel), or
                    // `pad[4·gi..4·gi + 4]` (`4·gi + 4 ≤ QUANT_BLOCK`) for one outside;
                    // `taps ≥ 1` (the geometry has no empty kernel) and both slices
                    // hold `taps` entries.
                    let base = base.wrapping_add(gi * LANES);
                    let acc = unsafe { lanes_dot(base, offsets, weights, start) };
                    // Spelled out: as a loop, LLVM spilled the four sums to the stack.
                    if let ([o0, o1, o2, o3], [q0, q1, q2, q3], [a0, a1, a2, a3]) =
                        (out, quants, acc)
                    {
                        by_finish!(form, stage, |f| {
                            *o0 = f.finish(q0, a0);
                            *o1 = f.finish(q1, a1);
                            *o2 = f.finish(q2, a2);
                            *o3 = f.finish(q3, a3);
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

/// The taps' input offsets for the window at `(y0, x0)` (its top-left input,
/// possibly in the padding): a tap in the image reads its pixel, one outside reads
/// the pad at `pad_offset` from the window origin. Offsets are the same for every
/// group, whose origins differ by the group's first channel like the pad's words do.
fn write_offsets(
    g: &ConvGeometry,
    y0: isize,
    x0: isize,
    pad_offset: isize,
    offsets: &mut [usize; TAPS_CAP],
) {
    let row = (g.in_w * g.in_c) as isize;
    let mut t = 0;
    for ky in 0..g.kernel_h as isize {
        for kx in 0..g.kernel_w as isize {
            let (iy, ix) = (y0 + ky, x0 + kx);
            let inside = iy >= 0 && ix >= 0 && (iy as usize) < g.in_h && (ix as usize) < g.in_w;
            let offset = if inside {
                ky * row + kx * g.in_c as isize
            } else {
                pad_offset
            };
            if let Some(entry) = offsets.get_mut(t) {
                *entry = offset as usize;
            }
            t += 1;
        }
    }
}

/// One tap of [`lanes_dot`]'s assembly: its input offset and weight lanes loaded (both
/// pointers moved on), the four inputs read from `base`, split into 16-bit lanes and
/// multiplied into the four sums.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
macro_rules! lanes_tap {
    () => {
        concat!(
            "ldr r0, [{o}], #4\n",
            "ldrd r1, r2, [{w}], #8\n",
            "ldr r0, [{base}, r0]\n",
            "sxtb16 {t}, r0\n",
            "smlabb {a0}, {t}, r1, {a0}\n",
            "smlatt {a2}, {t}, r1, {a2}\n",
            "sxtb16 {t}, r0, ror #8\n",
            "smlabb {a1}, {t}, r2, {a1}\n",
            "smlatt {a3}, {t}, r2, {a3}",
        )
    };
}

/// `acc[j] + Σ x_j · w_j` over the taps, where tap `t`'s four inputs are the bytes at
/// `base + offsets[t]` and its weights the lanes of `weights[t]`; wrapping.
///
/// # Safety
///
/// `offsets` is not empty, `weights` is as long, and for each offset the four bytes at
/// `base` plus it (signed) are readable.
#[inline(always)]
unsafe fn lanes_dot(
    base: *const i8,
    offsets: &[usize],
    weights: &[TapWeights],
    acc: [i32; LANES],
) -> [i32; LANES] {
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    {
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        if offsets.len() == 9 {
            // A 3×3 window (every depthwise conv of the MLPerf Tiny models): the nine
            // taps in a straight line, without the loop's compare and branch.
            // SAFETY: as below, for exactly nine taps.
            unsafe {
                core::arch::asm!(
                    ".rept 9",
                    lanes_tap!(),
                    ".endr",
                    o = inout(reg) offsets.as_ptr() => _,
                    w = inout(reg) weights.as_ptr() => _,
                    base = in(reg) base,
                    a0 = inout(reg) a0,
                    a1 = inout(reg) a1,
                    a2 = inout(reg) a2,
                    a3 = inout(reg) a3,
                    t = out(reg) _,
                    out("r0") _,
                    out("r1") _,
                    out("r2") _,
                    options(pure, readonly, nostack),
                );
            }
            return [a0, a1, a2, a3];
        }
        // SAFETY: per the contract every offset leads to a readable word (unaligned
        // `LDR` is allowed on Armv7E-M); `offsets` (words) and `weights` (pairs of
        // words, word aligned as `LDRD` needs) are non-empty and equally long. The
        // loop writes only the named registers and touches no other memory.
        unsafe {
            core::arch::asm!(
                "2:",
                lanes_tap!(),
                "cmp {o}, {end}",
                "bne 2b",
                o = inout(reg) offsets.as_ptr() => _,
                w = inout(reg) weights.as_ptr() => _,
                end = in(reg) offsets.as_ptr().add(offsets.len()),
                base = in(reg) base,
                a0 = inout(reg) a0,
                a1 = inout(reg) a1,
                a2 = inout(reg) a2,
                a3 = inout(reg) a3,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                options(pure, readonly, nostack),
            );
        }
        [a0, a1, a2, a3]
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    {
        let lo = |v: u32| i32::from(v as u16 as i16);
        let hi = |v: u32| i32::from((v >> 16) as u16 as i16);
        use super::dual::{sxtb16, sxtb16_ror8};
        let [mut a0, mut a1, mut a2, mut a3] = acc;
        for (&offset, &[even, odd]) in offsets.iter().zip(weights) {
            // SAFETY: readable per the contract.
            let x = unsafe { base.wrapping_add(offset).cast::<u32>().read_unaligned() };
            let x = u32::from_le(x);
            let (xe, xo) = (sxtb16(x), sxtb16_ror8(x));
            a0 = a0.wrapping_add(lo(xe) * lo(even));
            a2 = a2.wrapping_add(hi(xe) * hi(even));
            a1 = a1.wrapping_add(lo(xo) * lo(odd));
            a3 = a3.wrapping_add(hi(xo) * hi(odd));
        }
        [a0, a1, a2, a3]
    }
}

#[cfg(test)]
mod tests {
    use super::super::reference;
    use super::super::test_support::xorshift;
    use super::*;
    use std::vec::Vec;

    /// Every geometry with kernels up to 3×3, strides 1 and 2, any padding and channel
    /// counts around the block and lane sizes, against the plain-loop oracle.
    #[test]
    fn matches_the_reference() {
        let mut next = xorshift(0x51ed_270b_a7d1_93c5u64);
        let mut cases = 0;
        for (kh, kw) in [(1, 1), (3, 3), (1, 3), (3, 1), (2, 2)] {
            for stride in 1..=2usize {
                for channels in [4usize, 8, 12, 16, 20, 36] {
                    let (in_h, in_w) = (1 + (next() % 7) as usize, 1 + (next() % 7) as usize);
                    let pad_top = (next() % kh as u64) as usize;
                    let pad_left = (next() % kw as u64) as usize;
                    if in_h + 2 * pad_top < kh || in_w + 2 * pad_left < kw {
                        continue;
                    }
                    let out_h = (in_h + 2 * pad_top - kh) / stride + 1;
                    let out_w = (in_w + 2 * pad_left - kw) / stride + 1;
                    let g = ConvGeometry {
                        batch: 2,
                        in_h,
                        in_w,
                        in_c: channels,
                        out_h,
                        out_w,
                        out_c: channels,
                        kernel_h: kh,
                        kernel_w: kw,
                        stride_h: stride,
                        stride_w: stride,
                        pad_top,
                        pad_left,
                    };
                    let Ok((in_len, out_len)) = g.lens() else {
                        continue;
                    };
                    let input: Vec<i8> = (0..in_len).map(|_| next() as i8).collect();
                    let filter: Vec<i8> = (0..kh * kw * channels).map(|_| next() as i8).collect();
                    let bias: Vec<u8> = (0..channels)
                        .flat_map(|_| ((next() % 4001) as i32 - 2000).to_le_bytes())
                        .collect();
                    let mut requant: Vec<u8> = (0..channels)
                        .flat_map(|_| (0x4000_0000 + (next() % 0x1000_0000) as i32).to_le_bytes())
                        .collect();
                    requant.extend((0..channels).map(|_| (next() % 9) as u8 + 248));
                    let stage = OutputStage {
                        bias: Some(&bias),
                        requant: &requant,
                        channels,
                        output_offset: (next() % 21) as i32 - 10,
                        act_min: -128,
                        act_max: 127,
                    };
                    let input_offset = (next() % 256) as i32 - 127;
                    let mut want = std::vec![0i8; out_len];
                    reference::depthwise_conv2d(
                        &g,
                        1,
                        input_offset,
                        &stage,
                        &filter,
                        &input,
                        &mut want,
                    );
                    let mut got = std::vec![0i8; out_len];
                    depthwise_conv2d(&g, input_offset, &stage, &filter, &input, &mut got).unwrap();
                    assert_eq!(got, want, "{g:?}, input offset {input_offset}");
                    cases += 1;
                }
            }
        }
        assert!(cases > 40, "only {cases} geometries drawn");
    }

    /// Offsets whose negation is no `i8`, depth multipliers above 1, larger windows and
    /// channel counts that are no multiple of four go to the block kernel; the lane
    /// kernel refuses them.
    #[test]
    fn takes_only_what_it_covers() {
        let g = |k: usize, c: usize| ConvGeometry {
            batch: 1,
            in_h: 5,
            in_w: 5,
            in_c: c,
            out_h: 5 - k + 1,
            out_w: 5 - k + 1,
            out_c: c,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            pad_top: 0,
            pad_left: 0,
        };
        let requant = [0, 0, 0, 0x40, 0];
        let stage = |c| OutputStage {
            bias: None,
            requant: &requant,
            channels: c,
            output_offset: 0,
            act_min: -128,
            act_max: 127,
        };
        let run = |g: ConvGeometry, dm: usize, offset: i32| {
            let lanes = DepthwiseKernel::of(&g, dm, offset) == DepthwiseKernel::Lanes;
            let (in_len, out_len) = g.lens().unwrap();
            let mut out = std::vec![0i8; out_len];
            let filter = std::vec![1i8; g.kernel_h * g.kernel_w * g.out_c];
            let ran = depthwise_conv2d(
                &g,
                offset,
                &stage(g.out_c),
                &filter,
                &std::vec![0i8; in_len],
                &mut out,
            );
            assert_eq!(ran.is_ok(), lanes, "{g:?}, dm {dm}, offset {offset}");
            lanes
        };
        assert!(run(g(3, 8), 1, 128));
        assert!(!run(g(3, 8), 1, -128));
        assert!(!run(g(5, 8), 1, 0));
        assert!(!run(g(3, 3), 1, 0));
        assert!(!run(g(3, 6), 1, 0));
        let mut dm2 = g(3, 8);
        dm2.in_c = 4;
        assert!(!run(dm2, 2, 0));
    }
}
