//! im2col and its adjoint col2im for one group of one image: the column matrix has a row
//! per (input channel, kernel row, kernel column) and a column per output pixel, so the
//! convolution becomes `weight[group_out × patch_len] · columns[patch_len × out_pixels]`.

use super::geometry::ConvGeometry;

/// For kernel offset `offset` along an axis: the output positions whose input position
/// `out * stride + offset - padding` lies inside `0..size`, as a range.
fn valid_outputs(offset: usize, size: usize, out_size: usize, g: &ConvGeometry) -> (usize, usize) {
    // out * stride + offset >= padding
    let first = g.padding.saturating_sub(offset).div_ceil(g.stride);
    // out * stride + offset < size + padding
    let end = if size + g.padding > offset {
        ((size + g.padding - offset - 1) / g.stride + 1).min(out_size)
    } else {
        0
    };
    (first.min(end), end)
}

/// Fills `columns` (`patch_len × out_pixels`) from `image` (this group's `group_in`
/// channels, `height × width` each); padding reads as zero.
pub fn im2col(image: &[f32], g: &ConvGeometry, columns: &mut [f32]) {
    let (k, ow, oh) = (g.kernel, g.out_width, g.out_height);
    let pixels = g.out_pixels();
    let mut rows = columns[..g.patch_len() * pixels].chunks_exact_mut(pixels);
    for c in 0..g.group_in() {
        let plane = &image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ki in 0..k {
            let (row_first, row_end) = valid_outputs(ki, g.height, oh, g);
            for kj in 0..k {
                let row = rows.next().expect("patch_len rows");
                let cols = valid_outputs(kj, g.width, ow, g);
                row[..row_first * ow].fill(0.0);
                row[row_end * ow..].fill(0.0);
                if row_first == row_end {
                    continue;
                }
                let band = &mut row[row_first * ow..row_end * ow];
                let first_src_row = row_first * g.stride + ki - g.padding;
                if g.stride == 1 && ow == g.width {
                    copy_same_width_band(plane, first_src_row, kj, cols, g, band);
                    continue;
                }
                let (col_first, col_end) = cols;
                for (y, out) in band.chunks_exact_mut(ow).enumerate() {
                    zero_outside(out, cols);
                    let src_row = first_src_row + y * g.stride;
                    let src = &plane[src_row * g.width..(src_row + 1) * g.width];
                    if g.stride == 1 {
                        let x0 = col_first + kj - g.padding;
                        out[col_first..col_end].copy_from_slice(&src[x0..x0 + col_end - col_first]);
                    } else {
                        for (x, o) in out[col_first..col_end].iter_mut().enumerate() {
                            *o = src[(col_first + x) * g.stride + kj - g.padding];
                        }
                    }
                }
            }
        }
    }
}

/// Zeroes the entries of one output row left and right of `cols` (they read padding).
/// Most rows have none: the checks spare a `memset` call per row.
fn zero_outside(out: &mut [f32], (col_first, col_end): (usize, usize)) {
    if col_first > 0 {
        out[..col_first].fill(0.0);
    }
    if col_end < out.len() {
        out[col_end..].fill(0.0);
    }
}

/// Stride 1 with output rows as wide as input rows (a "same" convolution): entry
/// `(y, x)` of the band reads the plane at a fixed offset from `y · width + x`, so the
/// whole band is one copy, after which the columns that read padding (and so took
/// wrapped-around pixels from a neighbouring row) are zeroed. One copy instead of one
/// per output row.
fn copy_same_width_band(
    plane: &[f32],
    first_src_row: usize,
    kj: usize,
    cols: (usize, usize),
    g: &ConvGeometry,
    band: &mut [f32],
) {
    let (col_first, col_end) = cols;
    let width = g.width;
    if col_first < col_end {
        // From the first row's first valid column to the last row's last valid one.
        let dst = col_first..band.len() - width + col_end;
        let src_start = first_src_row * width + col_first + kj - g.padding;
        band[dst.clone()].copy_from_slice(&plane[src_start..src_start + dst.len()]);
    }
    for out in band.chunks_exact_mut(width) {
        zero_outside(out, cols);
    }
}

/// The adjoint of [`im2col`]: adds each entry of `columns` into the input pixel it was
/// read from (entries that came from padding are dropped).
pub fn col2im_add(columns: &[f32], g: &ConvGeometry, image: &mut [f32]) {
    let (k, ow, oh) = (g.kernel, g.out_width, g.out_height);
    let pixels = g.out_pixels();
    let mut rows = columns[..g.patch_len() * pixels].chunks_exact(pixels);
    for c in 0..g.group_in() {
        let plane = &mut image[c * g.height * g.width..(c + 1) * g.height * g.width];
        for ki in 0..k {
            let (row_first, row_end) = valid_outputs(ki, g.height, oh, g);
            for kj in 0..k {
                let row = rows.next().expect("patch_len rows");
                let (col_first, col_end) = valid_outputs(kj, g.width, ow, g);
                for y in row_first..row_end {
                    let src = &row[y * ow + col_first..y * ow + col_end];
                    let dst_row = y * g.stride + ki - g.padding;
                    let dst = &mut plane[dst_row * g.width..(dst_row + 1) * g.width];
                    if g.stride == 1 {
                        let x0 = col_first + kj - g.padding;
                        for (d, s) in dst[x0..x0 + src.len()].iter_mut().zip(src) {
                            *d += s;
                        }
                    } else {
                        for (x, s) in src.iter().enumerate() {
                            dst[(col_first + x) * g.stride + kj - g.padding] += s;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{col2im_add, im2col};
    use crate::nn::cpu::geometry::ConvGeometry;
    use crate::nn::Conv2dConfig;

    /// The column matrix entry by its definition, one pixel at a time.
    fn reference(image: &[f32], g: &ConvGeometry) -> Vec<f32> {
        let mut out = Vec::new();
        for c in 0..g.group_in() {
            for ki in 0..g.kernel {
                for kj in 0..g.kernel {
                    for y in 0..g.out_height {
                        for x in 0..g.out_width {
                            let iy = (y * g.stride + ki) as isize - g.padding as isize;
                            let ix = (x * g.stride + kj) as isize - g.padding as isize;
                            let inside = (0..g.height as isize).contains(&iy)
                                && (0..g.width as isize).contains(&ix);
                            out.push(if inside {
                                image[(c * g.height + iy as usize) * g.width + ix as usize]
                            } else {
                                0.0
                            });
                        }
                    }
                }
            }
        }
        out
    }

    fn geometries() -> Vec<ConvGeometry> {
        let mut all = Vec::new();
        for (k, s, p, h, w) in [
            (5, 1, 2, 28, 28),
            (5, 1, 0, 14, 14),
            (3, 2, 1, 9, 8),
            (3, 1, 1, 5, 7),
            (1, 2, 0, 6, 6),
            (3, 3, 2, 4, 5),
            (1, 1, 0, 3, 3),
        ] {
            let cfg = Conv2dConfig::new(2, 3, k).stride(s).padding(p);
            all.push(ConvGeometry::new(&cfg, [1, 2, h, w]).unwrap());
        }
        all
    }

    #[test]
    fn columns_match_the_definition() {
        for g in geometries() {
            let image: Vec<f32> = (0..g.image_len()).map(|i| i as f32 + 1.0).collect();
            let mut cols = vec![f32::NAN; g.patch_len() * g.out_pixels()];
            im2col(&image, &g, &mut cols);
            assert_eq!(cols, reference(&image, &g), "{g:?}");
        }
    }

    /// col2im is im2col's adjoint: <im2col(x), c> == <x, col2im(c)> for all x, c.
    #[test]
    fn col2im_is_the_adjoint() {
        for g in geometries() {
            let image: Vec<f32> = (0..g.image_len()).map(|i| ((i * 7) % 11) as f32).collect();
            let cols: Vec<f32> = (0..g.patch_len() * g.out_pixels())
                .map(|i| ((i * 5) % 13) as f32 - 6.0)
                .collect();
            let mut im_cols = vec![0.0; cols.len()];
            im2col(&image, &g, &mut im_cols);
            let mut back = vec![0.0; image.len()];
            col2im_add(&cols, &g, &mut back);
            let lhs: f32 = im_cols.iter().zip(&cols).map(|(a, b)| a * b).sum();
            let rhs: f32 = image.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert_eq!(lhs, rhs, "{g:?}");
        }
    }
}
