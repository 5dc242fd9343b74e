//! Streamed tensors (FORMAT.md §4): a chain of convs whose intermediate outputs are
//! bands of rows. The op that ends the chain (the first whose output is stored whole)
//! runs the chain one of its output rows at a time, and each band is refilled on
//! demand: its producer computes the rows the band's reader needs next, after the
//! band has dropped the rows no later window reads. Every output value is computed
//! exactly as by the whole-tensor kernels, over the same window.

use core::ops::Range;

use super::exec::{conv_geometry, range};
use super::Model;
use crate::arena::split;
use crate::error::Error;
use crate::format::{Op, Tensor};
use crate::kernels::ConvGeometry;

/// Most streamed tensors one chain may hold (validated at load): the chain's bands
/// are tracked on the stack, and refilling them recurses once per band.
pub const STREAM_CHAIN_CAP: usize = 4;

/// One streamed tensor while its chain runs: rows `base..base + count` of it are
/// stored, in order, at the start of its band.
struct Band<'m> {
    /// The op that writes it, and the tensor it reads.
    producer: &'m Op,
    input: &'m Tensor,
    tensor: &'m Tensor,
    /// The producer's whole-tensor geometry.
    geometry: ConvGeometry,
    offset: usize,
    rows: usize,
    row_bytes: usize,
    base: usize,
    count: usize,
}

impl Band<'_> {
    /// Copy stored row slot `from` to slot `to < from` (rows are disjoint, so a row
    /// at a time is a plain copy; `memmove` would cost 1.5 KiB of flash).
    fn move_row(&self, arena: &mut [u8], from: usize, to: usize) -> Option<()> {
        let (head, tail) = arena.split_at_mut_checked(self.offset + from * self.row_bytes)?;
        let start = self.offset + to * self.row_bytes;
        let dst = head.get_mut(start..start + self.row_bytes)?;
        dst.copy_from_slice(tail.get(..self.row_bytes)?);
        Some(())
    }

    /// The arena bytes of the stored rows `lo..hi` (a subset of those stored).
    fn stored(&self, lo: usize, hi: usize) -> Option<Range<usize>> {
        let start = self.offset + lo.checked_sub(self.base)? * self.row_bytes;
        let end = self.offset + hi.checked_sub(self.base)? * self.row_bytes;
        (hi <= self.base + self.count).then_some(start..end)
    }
}

/// Input rows `lo..hi` that output rows `q..q + n` of `g` read, and the geometry that
/// computes just those output rows from just those input rows.
fn row_window(g: &ConvGeometry, q: usize, n: usize) -> Option<(usize, usize, ConvGeometry)> {
    let start = q.checked_mul(g.stride_h)?;
    let lo = start.saturating_sub(g.pad_top);
    let last = (q + n - 1).checked_mul(g.stride_h)? + g.kernel_h;
    let hi = g.in_h.min(last.checked_sub(g.pad_top)?);
    let sub = ConvGeometry {
        in_h: hi.checked_sub(lo)?,
        out_h: n,
        pad_top: g.pad_top.saturating_sub(start),
        ..*g
    };
    Some((lo, hi, sub))
}

/// Bytes of one row of a `[1, H, W, C]` tensor.
fn row_bytes(g_h: usize, t: &Tensor) -> Option<usize> {
    range(t)?;
    match t.shape.as_slice() {
        &[1, _, w, c] => (w as usize).checked_mul(c as usize),
        _ => None,
    }
    .filter(|_| g_h > 0)
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: u32>
    Model<'a, MAX_OPS, MAX_TENSORS, OPS>
{
    fn tensor(&self, t: u32) -> Option<&Tensor> {
        self.tensors.get(t as usize)
    }

    /// Run the chain that `end`, a conv reading a streamed tensor, ends.
    #[inline(never)]
    pub(super) fn run_stream(&self, end: &Op, arena: &mut [u8]) -> Option<Result<(), Error>> {
        let mut bands: heapless::Vec<Band<'_>, STREAM_CHAIN_CAP> = heapless::Vec::new();
        let mut t = end.inputs().next()?;
        while let Some(rows) = self.tensor(t)?.streamed_rows() {
            let producer = self.ops.iter().find(|op| op.output() == t)?;
            let tensor = self.tensor(t)?;
            let input = self.tensor(producer.inputs().next()?)?;
            let geometry = conv_geometry(producer, input, tensor)?;
            let band = Band {
                producer,
                input,
                tensor,
                geometry,
                offset: range(tensor)?.start,
                rows: rows as usize,
                row_bytes: row_bytes(geometry.out_h, tensor)?,
                base: 0,
                count: 0,
            };
            bands.push(band).ok()?;
            t = producer.inputs().next()?;
        }
        let (x, y) = (bands.first()?.tensor, self.tensor(end.output())?);
        let g = conv_geometry(end, x, y)?;
        let out_row = row_bytes(g.out_h, y)?;
        let out_start = range(y)?.start;
        for r in 0..g.out_h {
            let (lo, hi, sub) = row_window(&g, r, 1)?;
            if let Err(e) = self.refill(&mut bands, hi, arena)? {
                return Some(Err(e));
            }
            let rin = bands.first()?.stored(lo, hi)?;
            let at = out_start + r * out_row;
            let (input, _, output) = split(arena, &rin, &rin, &(at..at + out_row))?;
            if let Err(e) = self.conv_rows(end, &sub, x.zero_point, y, input, output)? {
                return Some(Err(e));
            }
        }
        Some(Ok(()))
    }

    /// Make `bands[0]` hold rows up to `upto` (exclusive), computing the missing ones
    /// from `bands[1..]` or, for the last band, from its producer's stored input.
    fn refill(
        &self,
        bands: &mut [Band<'_>],
        upto: usize,
        arena: &mut [u8],
    ) -> Option<Result<(), Error>> {
        let (band, deeper) = bands.split_first_mut()?;
        while band.base + band.count < upto {
            let q = band.base + band.count;
            // From a band, one row at a time (its reader's window is all it holds);
            // from a stored tensor, all the rows wanted at once.
            let n = match deeper.is_empty() {
                true => (upto - q).min(band.rows),
                false => 1,
            };
            let (lo, hi, sub) = row_window(&band.geometry, q, n)?;
            let rin = match deeper.first() {
                Some(_) => {
                    if let Err(e) = self.refill(deeper, hi, arena)? {
                        return Some(Err(e));
                    }
                    deeper.first()?.stored(lo, hi)?
                }
                None => {
                    let whole = range(band.input)?;
                    let row = row_bytes(band.geometry.in_h, band.input)?;
                    whole.start + lo * row..whole.start + hi * row
                }
            };
            // Drop the oldest rows the new ones displace: no later window reads them.
            let drop = (band.count + n).saturating_sub(band.rows);
            if drop > 0 {
                band.count -= drop;
                band.base += drop;
                for row in 0..band.count {
                    band.move_row(arena, row + drop, row)?;
                }
            }
            let at = band.offset + band.count * band.row_bytes;
            let rout = at..at + n * band.row_bytes;
            let (input, _, output) = split(arena, &rin, &rin, &rout)?;
            let zp = band.input.zero_point;
            if let Err(e) = self.conv_rows(band.producer, &sub, zp, band.tensor, input, output)? {
                return Some(Err(e));
            }
            band.count += n;
        }
        Some(Ok(()))
    }
}
