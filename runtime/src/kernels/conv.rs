//! 2-D convolution, int8 (TFLite's `reference_integer_ops::ConvPerChannel`).

use super::{dot, ConvGeometry, OutputStage};
use crate::error::Error;

/// `output[b, oy, ox, oc] = stage(Σ (input[b, iy, ix, ic] + input_offset) ·
/// filter[oc, ky, kx, ic])` over the in-bounds window (padding contributes nothing,
/// i.e. it stands for the input zero point).
///
/// NHWC rows are contiguous in `kx · C`, and so are filter rows, so each window row
/// is one dot product over `(kx1 − kx0) · C` elements.
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
