//! 2-D convolution, int8 (TFLite's `reference_integer_ops::ConvPerChannel`).

use super::{
    channels_offset, dot, offset_into, small_offset, ConvGeometry, OutputStage, OFFSET_CAP,
};
use crate::error::Error;

/// `output[b, oy, ox, oc] = stage(Σ (input[b, iy, ix, ic] + input_offset) ·
/// filter[oc, ky, kx, ic])` over the in-bounds window (padding contributes nothing,
/// i.e. it stands for the input zero point).
///
/// Each output pixel's window is gathered once into a contiguous stack buffer of
/// `i16` with the input offset already added (padded positions are 0, so they add
/// nothing), at most [`OFFSET_CAP`] entries. Every output channel is then one dot
/// product over `kernel_h · kernel_w · C` contiguous values, matching the filter's
/// `[OC, KH, KW, C]` layout, four channels per pass over the window. Larger windows
/// (or offsets beyond ±256) take a row-by-row path.
pub fn conv2d(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let filter_len = filter_oc.checked_mul(g.out_c).ok_or(Error::KernelArgs)?;
    if input.len() != in_len
        || output.len() != out_len
        || filter.len() != filter_len
        || stage.channels != g.out_c
    {
        return Err(Error::KernelArgs);
    }
    match small_offset(input_offset) {
        Some(offset) if filter_oc <= OFFSET_CAP => {
            gathered(g, offset, stage, filter, input, output)
        }
        _ => by_rows(g, input_offset, stage, filter, input, output),
    }
}

fn gathered(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let mut buf = [0i16; OFFSET_CAP];
    let window = buf.get_mut(..filter_oc).ok_or(Error::KernelArgs)?;
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                let (left, run) = (kx0 * g.in_c, (kx1 - kx0) * g.in_c);
                let ix0 = x0 + kx0 - g.pad_left;
                for (ky, row) in window.chunks_exact_mut(filter_row).enumerate() {
                    if ky < ky0 || ky >= ky1 {
                        row.fill(0);
                        continue;
                    }
                    let iy = y0 + ky - g.pad_top;
                    let start = (iy * g.in_w + ix0) * g.in_c;
                    let src = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                    let (pad_l, rest) = row.split_at_mut_checked(left).ok_or(Error::KernelArgs)?;
                    let (mid, pad_r) = rest.split_at_mut_checked(run).ok_or(Error::KernelArgs)?;
                    pad_l.fill(0);
                    offset_into(mid, src, offset);
                    pad_r.fill(0);
                }
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                channels_offset(window, filter, stage, out_px)?;
            }
        }
    }
    Ok(())
}

/// Any window size and offset: one dot product per in-bounds window row (NHWC rows
/// are contiguous in `kx · C`, and so are filter rows).
fn by_rows(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let filter_oc = g.kernel_h * g.kernel_w * g.in_c;
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                let run = (kx1 - kx0) * g.in_c;
                let ix0 = x0 + kx0 - g.pad_left;
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                for ((oc, out), f_oc) in out_px
                    .iter_mut()
                    .enumerate()
                    .zip(filter.chunks_exact(filter_oc))
                {
                    let mut acc = 0i32;
                    for ky in ky0..ky1 {
                        let iy = y0 + ky - g.pad_top;
                        let start = (iy * g.in_w + ix0) * g.in_c;
                        let f_start = ky * filter_row + kx0 * g.in_c;
                        let x = image.get(start..start + run).ok_or(Error::KernelArgs)?;
                        let w = f_oc.get(f_start..f_start + run).ok_or(Error::KernelArgs)?;
                        acc = acc.wrapping_add(dot(x, w, input_offset));
                    }
                    *out = stage.apply(acc, oc);
                }
            }
        }
    }
    Ok(())
}
