//! Streamed tensors (FORMAT.md §4): a chain of convs whose intermediate outputs are
//! bands of rows. The op that ends the chain (the first whose output is stored whole:
//! a conv, or an Add) computes as many of its output rows per call as the nearest band
//! holds the windows of; before each call every band drops the rows no later window
//! reads and, if rows are missing, is filled to the brim by its producer. Every output
//! value is computed exactly as by the whole-tensor kernels, over the same window.

use core::ops::Range;

use super::exec::{add_ranges, conv_geometry, range};
use super::{Model, OpKind};
use crate::arena::split;
use crate::error::Error;
use crate::format::{Op, OpSet, Tensor};
use crate::kernels::ConvGeometry;

/// Most streamed tensors one chain may hold (validated at load): the chain's bands
/// are tracked on the stack, and refilling them recurses once per band.
pub const STREAM_CHAIN_CAP: usize = 4;

/// One streamed tensor while its chain runs: rows `base..base + count` of it are
/// stored, in order, at the start of its band.
struct Band<'m> {
    /// The op that writes it, and the tensor it reads.
    producer: Op,
    input: &'m Tensor,
    tensor: &'m Tensor,
    offset: usize,
    rows: usize,
    row_bytes: usize,
    base: usize,
    count: usize,
}

impl Band<'_> {
    /// One past the last row stored.
    fn end(&self) -> usize {
        self.base + self.count
    }

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
        (hi <= self.end()).then_some(start..end)
    }
}

/// Input rows `lo..hi` that output rows `q..q + n` of `g` read.
pub(super) fn rows_read(g: &ConvGeometry, q: usize, n: usize) -> Option<(usize, usize)> {
    let lo = q.checked_mul(g.stride_h)?.saturating_sub(g.pad_top);
    let last = (q + n).checked_sub(1)?.checked_mul(g.stride_h)? + g.kernel_h;
    let hi = g.in_h.min(last.checked_sub(g.pad_top)?);
    (lo <= hi).then_some((lo, hi))
}

/// Narrow `g` to output rows `q..q + n`: the geometry that computes just those from
/// just the input rows they read, `lo..hi` (returned).
pub(super) fn narrow_rows(g: &mut ConvGeometry, q: usize, n: usize) -> Option<(usize, usize)> {
    let (lo, hi) = rows_read(g, q, n)?;
    g.pad_top = g.pad_top.saturating_sub(q.checked_mul(g.stride_h)?);
    (g.in_h, g.out_h) = (hi - lo, n);
    Some((lo, hi))
}

/// Input rows `lo..hi` that output rows `q..q + n` of `g` read, and the geometry that
/// computes just those output rows from just those input rows.
fn row_window(g: &ConvGeometry, q: usize, n: usize) -> Option<(usize, usize, ConvGeometry)> {
    let mut sub = *g;
    let (lo, hi) = narrow_rows(&mut sub, q, n)?;
    Some((lo, hi, sub))
}

/// How many output rows of `g` have their windows within `rows` consecutive input
/// rows (at least one: a band holds its reader's window).
fn rows_per_call(g: &ConvGeometry, rows: usize) -> usize {
    rows.saturating_sub(g.kernel_h) / g.stride_h.max(1) + 1
}

/// Bytes of one row of a `[1, H, W, C]` tensor.
fn row_bytes(t: &Tensor) -> Option<usize> {
    match t.shape.as_slice() {
        &[1, _, w, c] => (w as usize).checked_mul(c as usize),
        _ => None,
    }
}

/// The streamed input of `op`, the op that ends a chain (`None` if it reads none).
fn streamed_input(op: &Op, tensors: &[Tensor]) -> Option<u32> {
    op.inputs().find(|&t| {
        tensors
            .get(t as usize)
            .is_some_and(|t| t.streamed_rows().is_some())
    })
}

/// The streamed tensors of the chain that reads `t`, nearest first, each with the op
/// that writes it (nothing if `t` is stored). Each producer reads the next one; the
/// last reads the chain's stored input. On a validated model at most
/// [`STREAM_CHAIN_CAP`] long; callers bound it all the same.
pub(crate) fn chain<'o>(
    ops: impl Iterator<Item = Op> + Clone + 'o,
    tensors: &'o [Tensor],
    t: u32,
) -> impl Iterator<Item = (u32, Op)> + 'o {
    let link = move |t: u32| {
        tensors.get(t as usize)?.streamed_rows()?;
        Some((t, ops.clone().find(|op| op.output() == t)?))
    };
    core::iter::successors(link(t), move |(_, producer)| {
        link(producer.inputs().next()?)
    })
}

/// The rows of streamed tensor `t` that one window of `reader` spans: a conv's or a
/// depthwise conv's kernel height where `t` is its input, one row for an Add whose
/// other input is stored whole; `None` for any other reader, which may not read a band.
pub(crate) fn band_window(reader: &Op, t: u32, tensors: &[Tensor]) -> Option<u32> {
    let stored = |t: u32| {
        tensors
            .get(t as usize)
            .is_some_and(|t| t.streamed_rows().is_none())
    };
    match reader {
        Op::Conv2d(p) if p.input == t => Some(p.kernel_h),
        Op::DepthwiseConv2d(p) if p.input == t => Some(p.kernel_h),
        Op::Add(p) if p.input1 == t && stored(p.input2) => Some(1),
        Op::Add(p) if p.input2 == t && stored(p.input1) => Some(1),
        _ => None,
    }
}

/// Whether op `end` may write its output over `x` row by row (an in-place Add that
/// ends a chain whose first op reads `x` too): once output row `r` is written, every
/// row of `x` that a later window of the chain reads lies past `r`. This replays the
/// fewest rows each band must have made for row `r`; [`Model::run_stream`] makes at
/// least those (it fills bands to the brim), so its later windows start no earlier.
/// Ops that end no chain, or whose chain does not read `x`, are always safe.
pub(crate) fn stream_rows_stay_ahead(ops: &[Op], tensors: &[Tensor], end: usize, x: u32) -> bool {
    let Some(op) = ops.get(end) else {
        return false;
    };
    let Some(t) = streamed_input(op, tensors) else {
        return true;
    };
    // The producers' geometries, nearest first, and the stored tensor the chain reads.
    let mut geometries: heapless::Vec<ConvGeometry, STREAM_CHAIN_CAP> = heapless::Vec::new();
    let mut source = t;
    for (band, producer) in chain(ops.iter().copied(), tensors, t) {
        let input = producer.inputs().next();
        let geometry = input
            .and_then(|i| tensors.get(i as usize))
            .zip(tensors.get(band as usize))
            .and_then(|(input, band)| conv_geometry(&producer, input, band));
        match (input, geometry.map(|g| geometries.push(g))) {
            (Some(input), Some(Ok(()))) => source = input,
            _ => return false,
        }
    }
    if source != x {
        return true;
    }
    let height = tensors
        .get(t as usize)
        .and_then(|t| t.shape.get(1).copied());
    (0..height.unwrap_or(0) as usize).all(|r| {
        // Rows the nearest band holds after output row `r`, then each farther band.
        let mut upto = r + 1;
        for (k, g) in geometries.iter().enumerate() {
            if k + 1 == geometries.len() {
                // The first op has made `upto` rows; its next window starts at
                // `upto · stride − pad`.
                return upto >= g.out_h || upto * g.stride_h > r + g.pad_top;
            }
            match row_window(g, upto - 1, 1) {
                Some((_, hi, _)) => upto = hi,
                None => return false,
            }
        }
        false
    })
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'a, MAX_OPS, MAX_TENSORS, OPS>
{
    fn tensor(&self, t: u32) -> Option<&Tensor> {
        self.tensors.get(t as usize)
    }

    /// Run the chain that `end` ends: a conv or an Add reading a streamed tensor.
    #[inline(never)]
    pub(super) fn run_stream(&self, end: &Op, arena: &mut [u8]) -> Option<Result<(), Error>> {
        let mut bands: heapless::Vec<Band<'_>, STREAM_CHAIN_CAP> = heapless::Vec::new();
        let streamed = streamed_input(end, &self.tensors)?;
        for (t, producer) in chain(self.ops(), &self.tensors, streamed) {
            let tensor = self.tensor(t)?;
            let band = Band {
                producer,
                input: self.tensor(producer.inputs().next()?)?,
                tensor,
                offset: range(tensor)?.start,
                rows: tensor.streamed_rows()? as usize,
                row_bytes: row_bytes(tensor)?,
                base: 0,
                count: 0,
            };
            bands.push(band).ok()?;
        }
        let (x, y) = (self.tensor(streamed)?, self.tensor(end.output())?);
        let out_row = row_bytes(y)?;
        let out_start = range(y)?.start;
        // Without Adds in the op set this is a constant, and the Add kernels unlinked.
        let sum = match end {
            Op::Add(p) if OpKind::Add.is_in(OPS) => Some((p, self.add_params(p)?)),
            _ => None,
        };
        let g = match sum {
            Some(_) => None,
            None => Some(conv_geometry(end, x, y)?),
        };
        let out_h = y.shape.get(1).copied()? as usize;
        let mut r = 0;
        while r < out_h {
            // As many output rows as the nearest band holds the windows of.
            let held = bands.first()?.rows;
            let (lo, hi, sub) = match &g {
                Some(g) => {
                    let n = (out_h - r).min(rows_per_call(g, held));
                    let (lo, hi, sub) = row_window(g, r, n)?;
                    (lo, hi, Some(sub))
                }
                None => (r, r + (out_h - r).min(held), None),
            };
            let n = sub.map_or(hi - lo, |sub| sub.out_h);
            if let Err(e) = self.refill(&mut bands, lo..hi, arena)? {
                return Some(Err(e));
            }
            let rin = bands.first()?.stored(lo, hi)?;
            let at = out_start + r * out_row;
            let rout = at..at + n * out_row;
            let done = match (sum, sub) {
                (Some((p, params)), _) => {
                    // Rows `r..r + n` of the stored input, and of the band for the other.
                    let row_of = |t: u32| {
                        let at = range(self.tensor(t)?)?.start + r * out_row;
                        Some(at..at + n * out_row)
                    };
                    let (in1, in2) = match p.input1 == streamed {
                        true => (rin.clone(), row_of(p.input2)?),
                        false => (row_of(p.input1)?, rin.clone()),
                    };
                    add_ranges(arena, &params, &in1, &in2, &rout)?
                }
                (None, Some(sub)) => {
                    let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                    self.conv_rows(end, &sub, x.zero_point, y, input, output)?
                }
                (None, None) => return None,
            };
            if let Err(e) = done {
                return Some(Err(e));
            }
            r += n;
        }
        Some(Ok(()))
    }

    /// Make `bands[0]` hold the rows `want` of its tensor. Rows below `want` are read
    /// by no later window and are dropped; then, if rows are missing, the band is
    /// filled to the brim, so that the kernels run on as many rows per call as the
    /// bands hold. The new rows come from `bands[1..]` or, for the last band, from its
    /// producer's stored input (all in one call).
    fn refill(
        &self,
        bands: &mut [Band<'_>],
        want: Range<usize>,
        arena: &mut [u8],
    ) -> Option<Result<(), Error>> {
        let (band, deeper) = bands.split_first_mut()?;
        if band.end() >= want.end {
            return Some(Ok(()));
        }
        // The producer's whole-tensor geometry (derived here, not kept in the band:
        // the bands' table is on the stack).
        let geometry = conv_geometry(&band.producer, band.input, band.tensor)?;
        let keep_from = want.start.min(band.end());
        let target = geometry.out_h.min(keep_from + band.rows).max(want.end);
        while band.end() < target {
            let q = band.end();
            // At most a band's worth, and from a deeper band as many as it holds the
            // windows of.
            let n = match deeper.first() {
                Some(d) => rows_per_call(&geometry, d.rows),
                None => band.rows,
            };
            let n = n.min(band.rows).min(target - q);
            let (lo, hi, sub) = row_window(&geometry, q, n)?;
            let rin = match deeper.first() {
                Some(_) => {
                    if let Err(e) = self.refill(deeper, lo..hi, arena)? {
                        return Some(Err(e));
                    }
                    deeper.first()?.stored(lo, hi)?
                }
                None => {
                    let whole = range(band.input)?;
                    let row = row_bytes(band.input)?;
                    whole.start + lo * row..whole.start + hi * row
                }
            };
            // Drop the oldest rows the new ones displace: all lie below `want`.
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
            if let Err(e) = self.conv_rows(&band.producer, &sub, zp, band.tensor, input, output)? {
                return Some(Err(e));
            }
            band.count += n;
        }
        Some(Ok(()))
    }
}
