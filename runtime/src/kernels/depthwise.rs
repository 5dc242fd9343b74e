//! Depthwise 2-D convolution, int8 (TFLite's
//! `reference_integer_ops::DepthwiseConvPerChannel`).

use super::{ChannelQuant, ConvGeometry, OutputStage, QUANT_BLOCK};
use crate::error::Error;

/// `output[b, oy, ox, c·dm + m] = stage(Σ (input[b, iy, ix, c] + input_offset) ·
/// filter[ky, kx, c·dm + m])` over the in-bounds window, `dm = depth_multiplier`,
/// `g.out_c = g.in_c · dm`.
///
/// Channels are accumulated in blocks of 32 on the stack, walking the
/// window once per block, so the inner loop runs over contiguous channels.
pub fn depthwise_conv2d(
    g: &ConvGeometry,
    depth_multiplier: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    let filter_len = (g.kernel_h * g.kernel_w)
        .checked_mul(g.out_c)
        .ok_or(Error::KernelArgs)?;
    if depth_multiplier == 0
        || g.in_c.checked_mul(depth_multiplier) != Some(g.out_c)
        || input.len() != in_len
        || output.len() != out_len
        || filter.len() != filter_len
        || stage.channels != g.out_c
    {
        return Err(Error::KernelArgs);
    }
    // x86_64 hosts: the AVX2 kernels (same results), unless the CPU lacks AVX2.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    if let Some(done) = super::x86::depthwise_conv2d(
        g,
        depth_multiplier,
        input_offset,
        stage,
        filter,
        input,
        output,
    ) {
        return done;
    }
    // Armv7E-M: four channels per pass in 16-bit lanes (same results).
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    if let Some(done) = super::depthwise_lanes::depthwise_conv2d(
        g,
        depth_multiplier,
        input_offset,
        stage,
        filter,
        input,
        output,
    ) {
        return done;
    }
    // Channel blocks outermost, so each block's bias and requantization are decoded once
    // per call, not once per output pixel.
    for c0 in (0..g.out_c).step_by(QUANT_BLOCK) {
        let n = QUANT_BLOCK.min(g.out_c - c0);
        let taps = FilterColumns {
            filter,
            stride: g.out_c,
            first: c0,
        };
        depthwise_block(
            g,
            depth_multiplier,
            input_offset,
            stage,
            c0,
            n,
            taps,
            input,
            output,
        )?;
    }
    Ok(())
}

/// Where a block's weights lie: tap `t`'s weight for the block's channel `j` is
/// `filter[t · stride + first + j]` (the dense `[KH, KW, OC]` filter, or a packed
/// block unpacked to `[KH·KW, n]`).
#[derive(Clone, Copy)]
pub(crate) struct FilterColumns<'f> {
    pub filter: &'f [i8],
    pub stride: usize,
    pub first: usize,
}

/// Output channels `c0..c0 + n` (`n` at most [`QUANT_BLOCK`]) of every pixel, their
/// weights at `taps`: the body of [`depthwise_conv2d`], shared with the packed
/// low-bit kernel.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise_block(
    g: &ConvGeometry,
    dm: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    c0: usize,
    n: usize,
    taps: FilterColumns<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let image_len = g.in_h * g.in_w * g.in_c;
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    stage.channels_into(c0, quants.get_mut(..n).ok_or(Error::KernelArgs)?);
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                let out_block = out_px.get_mut(c0..c0 + n).ok_or(Error::KernelArgs)?;
                let mut acc = [0i32; QUANT_BLOCK];
                for ky in ky0..ky1 {
                    let iy = y0 + ky - g.pad_top;
                    for kx in kx0..kx1 {
                        let ix = x0 + kx - g.pad_left;
                        let p = (iy * g.in_w + ix) * g.in_c;
                        let x = image.get(p..p + g.in_c).ok_or(Error::KernelArgs)?;
                        let f = (ky * g.kernel_w + kx) * taps.stride + taps.first;
                        let w = taps.filter.get(f..f + n).ok_or(Error::KernelArgs)?;
                        if dm == 1 {
                            let x = x.get(c0..c0 + n).ok_or(Error::KernelArgs)?;
                            for ((a, &xv), &wv) in acc.iter_mut().zip(x).zip(w) {
                                let t = i32::from(xv).wrapping_add(input_offset);
                                *a = a.wrapping_add(t.wrapping_mul(i32::from(wv)));
                            }
                        } else {
                            for (j, (a, &wv)) in acc.iter_mut().zip(w).enumerate() {
                                let xv = x.get((c0 + j) / dm).copied().unwrap_or(0);
                                let t = i32::from(xv).wrapping_add(input_offset);
                                *a = a.wrapping_add(t.wrapping_mul(i32::from(wv)));
                            }
                        }
                    }
                }
                for ((out, &a), q) in out_block.iter_mut().zip(&acc).zip(&quants) {
                    *out = stage.finish(q, a);
                }
            }
        }
    }
    Ok(())
}
