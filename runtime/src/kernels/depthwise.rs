//! Depthwise 2-D convolution, int8 (TFLite's
//! `reference_integer_ops::DepthwiseConvPerChannel`).

pub use super::depthwise_choice::{DepthwiseKernel, DEPTHWISE_KERNELS};
use super::{ChannelQuant, ConvGeometry, OutputStage, QUANT_BLOCK};
use crate::error::Error;
use crate::format::OpSet;

/// `output[b, oy, ox, c·dm + m] = stage(Σ (input[b, iy, ix, c] + input_offset) ·
/// filter[ky, kx, c·dm + m])` over the in-bounds window, `dm = depth_multiplier`,
/// `g.out_c = g.in_c · dm`.
///
/// Channels are accumulated in blocks of 32 on the stack, walking the
/// window once per block, so the inner loop runs over contiguous channels; on
/// Armv7E-M, four channels per pass in 16-bit lanes where [`DepthwiseKernel::of`]
/// says so. Every kernel linked; a `Model` links only its op set's
/// ([`depthwise_conv2d_by`]).
pub fn depthwise_conv2d(
    g: &ConvGeometry,
    depth_multiplier: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    depthwise_conv2d_by::<DEPTHWISE_KERNELS>(
        g,
        depth_multiplier,
        input_offset,
        stage,
        filter,
        input,
        output,
    )
}

/// Whether this target has the lane kernel (`SXTB16` and `SMLABB`).
const LANE_KERNEL: bool = cfg!(all(
    target_arch = "arm",
    any(target_feature = "dsp", sprig_arm_dsp)
));

/// [`depthwise_conv2d`] with the kernel [`DepthwiseKernel::of`] chooses, referencing
/// only what op set `SET` links; another is `KernelArgs` on every target (the loader
/// has refused such a model).
pub fn depthwise_conv2d_by<const SET: OpSet>(
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
    // Refused on every target alike, the host's AVX2 kernels included.
    let kernel = DepthwiseKernel::of(g, depth_multiplier, input_offset);
    if !kernel.is_in(SET) {
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
    // Armv7E-M: four channels per pass in 16-bit lanes (same results). The set's
    // test is a constant, leaving the lane kernel out of sets without it.
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    if DepthwiseKernel::Lanes.is_in(SET) && kernel == DepthwiseKernel::Lanes {
        return super::depthwise_lanes::depthwise_conv2d(
            g,
            input_offset,
            stage,
            filter,
            input,
            output,
        );
    }
    // Constant: without a lane kernel the block kernel runs both choices.
    let blocks =
        DepthwiseKernel::Blocks.is_in(SET) || (!LANE_KERNEL && DepthwiseKernel::Lanes.is_in(SET));
    if !blocks {
        return Err(Error::KernelArgs);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::reference;
    use crate::kernels::test_support::{host_fast_path, single_rounding_requant, xorshift};

    /// The lane kernel's cases are chosen the same on every target; a set naming one
    /// kernel runs the depthwise convs that choose it bit-exact and refuses the
    /// others, on the host's AVX2 kernels too.
    #[test]
    fn a_set_runs_only_its_kernels() {
        use DepthwiseKernel::{Blocks, Lanes};
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15u64);
        let square = |k: usize, c: usize, dm: usize| ConvGeometry {
            batch: 1,
            in_h: 6,
            in_w: 5,
            in_c: c,
            out_h: 6,
            out_w: 5,
            out_c: c * dm,
            kernel_h: k,
            kernel_w: k,
            stride_h: 1,
            stride_w: 1,
            pad_top: k / 2,
            pad_left: k / 2,
        };
        for (g, dm, offset, kernel) in [
            (square(3, 8, 1), 1, 128, Lanes),
            (square(3, 8, 1), 1, -128, Blocks),
            (square(5, 8, 1), 1, 3, Blocks),
            (square(3, 6, 1), 1, 3, Blocks),
            (square(3, 4, 2), 2, 3, Blocks),
        ] {
            assert_eq!(DepthwiseKernel::of(&g, dm, offset), kernel, "{g:?}");
            let (in_len, out_len) = g.lens().unwrap();
            let input: std::vec::Vec<i8> = (0..in_len).map(|_| next() as i8).collect();
            let taps = g.kernel_h * g.kernel_w * g.out_c;
            let filter: std::vec::Vec<i8> = (0..taps).map(|_| next() as i8).collect();
            let requant = single_rounding_requant(&mut next, g.out_c, 9);
            let stage = OutputStage {
                bias: None,
                requant: &requant,
                channels: g.out_c,
                output_offset: 2,
                act_min: -128,
                act_max: 127,
            };
            let mut want = std::vec![1i8; out_len];
            reference::depthwise_conv2d(&g, dm, offset, &stage, &filter, &input, &mut want);
            let runs = [
                depthwise_conv2d_by::<{ Lanes.bit() }>,
                depthwise_conv2d_by::<{ Blocks.bit() }>,
                depthwise_conv2d_by::<0>,
            ];
            // With the host's AVX2 kernels, and without (the block kernel runs).
            for (avx2, (only, run)) in [true, false].into_iter().flat_map(|avx2| {
                let kernels = [Some(Lanes), Some(Blocks), None];
                kernels.into_iter().zip(runs).map(move |r| (avx2, r))
            }) {
                host_fast_path(avx2);
                let mut got = std::vec![0i8; out_len];
                let ran = run(&g, dm, offset, &stage, &filter, &input, &mut got);
                match only.is_none_or(|k| k == kernel) {
                    true => assert_eq!((ran, &got), (Ok(()), &want), "{kernel:?}, {avx2}"),
                    false => assert_eq!(ran, Err(Error::KernelArgs), "{kernel:?} in {only:?}"),
                }
            }
            host_fast_path(true);
        }
    }
}
