//! The input rows one output row's conv windows read, offset into `i16` once (`x +
//! offset`, the left and right padding as 0), so that gathering a window is one
//! contiguous copy per kernel row instead of a padded, offset gather per window.
//!
//! For LeNet-5's conv1 (28×28×1, 5×5, padding 2) gathering each 25-value window from
//! the image took about 450 instructions on the Cortex-M4, more than its six channels'
//! multiply-accumulates (`SPRIG_PROFILE=1 cargo xtask sim`); the band is refreshed once
//! per output row instead.

use super::{offset_into, ConvGeometry};
use crate::error::Error;

/// `kernel_h` offset input rows, each `width` entries: `pad_left · C` zeros, the image
/// row, then zeros to the right edge of the last window.
pub(crate) struct Band<'b> {
    rows: &'b mut [i16],
    width: usize,
}

impl<'b> Band<'b> {
    /// A band for geometry `g` in `buf`, if it fits and neighbouring windows overlap
    /// (`None`: gather per window). Without overlap (`KW ≤ stride`, e.g. a 1×1 conv)
    /// the band only adds a copy: kws_ref_model +3.4 % on the Cortex-M4.
    pub(crate) fn new(g: &ConvGeometry, buf: &'b mut [i16]) -> Option<Self> {
        if g.kernel_w <= g.stride_w {
            return None;
        }
        let last_window_end = g.out_w.checked_sub(1)? * g.stride_w + g.kernel_w;
        let columns = last_window_end.max(g.pad_left + g.in_w);
        let width = columns.checked_mul(g.in_c)?;
        let rows = buf.get_mut(..width.checked_mul(g.kernel_h)?)?;
        Some(Band { rows, width })
    }

    /// Loads the rows of output row origin `y0` (kernel rows `ky0..ky1` in the image,
    /// the others all padding) from `image`.
    #[inline]
    pub(crate) fn load(
        &mut self,
        g: &ConvGeometry,
        image: &[i8],
        (y0, ky0, ky1): (usize, usize, usize),
        offset: i16,
    ) -> Result<(), Error> {
        let in_row = g.in_w * g.in_c;
        let left = g.pad_left * g.in_c;
        for (ky, row) in self.rows.chunks_exact_mut(self.width).enumerate() {
            row.fill(0);
            if ky < ky0 || ky >= ky1 {
                continue;
            }
            let iy = y0 + ky - g.pad_top;
            let src = image
                .get(iy * in_row..(iy + 1) * in_row)
                .ok_or(Error::KernelArgs)?;
            let dst = row.get_mut(left..left + in_row).ok_or(Error::KernelArgs)?;
            offset_into(dst, src, offset);
        }
        Ok(())
    }

    /// Output column `ox`'s window (`KH·KW·C` entries, the filter's order) into
    /// `window`, as [`super::conv::gather_window`] gathers it.
    #[inline]
    pub(crate) fn window(
        &self,
        g: &ConvGeometry,
        ox: usize,
        window: &mut [i16],
    ) -> Result<(), Error> {
        let run = g.kernel_w * g.in_c;
        let start = ox * g.stride_w * g.in_c;
        for (dst, row) in window
            .chunks_exact_mut(run)
            .zip(self.rows.chunks_exact(self.width))
        {
            let src = row.get(start..start + run).ok_or(Error::KernelArgs)?;
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = s;
            }
        }
        Ok(())
    }
}
