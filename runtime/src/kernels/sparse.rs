//! Conv2d and fully connected over sparse weight rows (`format::sparse`): each output
//! is a sum over its row's stored entries only, so the work shrinks with the density.
//!
//! Bit-exact with the dense kernels on the densified weights: the products are the
//! same and the dropped ones are zero, and `i32` sums wrap (so their order does not
//! matter).
//!
//! - Conv: rows go in groups (up to 16, entries up to 512) whose entries are turned
//!   once per call into input offsets from a window's first element (`Taps`).
//!   Interior pixels (whole window inside the input) read the input directly, two
//!   adjacent pixels per walk over a row's entries; border pixels gather their window
//!   into the dense kernel's `i16` buffer (`x + input_offset`, padding 0) and walk
//!   each row over it: skip `gap` inputs, multiply the next.
//! - Fully connected: each input row gathered once the same way, then each output's
//!   row walked over it.
//! - Windows or rows longer than the buffer (or offsets beyond ±256) take a slower
//!   path that decodes each entry's position.
//!
//! No SIMD path: an entry is a gather of one input, not a run of adjacent values, so
//! the dense kernels' SMLAD/AVX2 pairs do not apply. `docs/ARCHITECTURE.md` ("Sparse
//! weights") has the instruction counts behind each choice.

use super::conv::gather_window;
use super::fully_connected::FcShape;
use super::{
    offset_into, small_offset, ChannelQuant, ConvGeometry, OutputStage, OFFSET_CAP, QUANT_BLOCK,
};
use crate::error::Error;
use crate::format::sparse::{RowIter, SparseRow, SparseRows};

/// `Σ x[position] · weight` over one row's entries; `x` holds offset inputs.
///
/// Positions are validated below the row length (≤ `OFFSET_CAP`); masking them with
/// `OFFSET_CAP − 1` changes none and lets the compiler drop every bounds check, which
/// otherwise doubled the instructions per entry on the Cortex-M4.
#[inline(always)]
pub(crate) fn dot_row(x: &[i16; OFFSET_CAP], row: &SparseRow<'_>, nibbles: bool) -> i32 {
    const MASK: usize = OFFSET_CAP - 1;
    let at = |p: usize| i32::from(x.get(p & MASK).copied().unwrap_or(0));
    let w = |v: u8| i32::from(v as i8);
    let mut acc = 0i32;
    // The next position if the gap were 0.
    let mut p = 0usize;
    if nibbles {
        // Arrays of two, zipped with the gap bytes: one loop counter, not two.
        let (pairs, last) = row.values.as_chunks::<2>();
        for (&[w0, w1], &g) in pairs.iter().zip(row.gaps) {
            let g = u32::from(g);
            p += (g & 15) as usize;
            acc = acc.wrapping_add(at(p) * w(w0));
            p += 1 + (g >> 4) as usize;
            acc = acc.wrapping_add(at(p) * w(w1));
            p += 1;
        }
        if let (&[w0], Some(&g)) = (last, row.gaps.last()) {
            acc = acc.wrapping_add(at(p + usize::from(g & 15)) * w(w0));
        }
    } else {
        for (&v, &g) in row.values.iter().zip(row.gaps) {
            p += usize::from(g);
            acc = acc.wrapping_add(at(p) * w(v));
            p += 1;
        }
    }
    acc
}

/// [`super::conv::conv2d`] with the filter as sparse rows (one per output channel, of
/// `kernel_h · kernel_w · C` positions).
pub fn conv2d_sparse(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    stage.check()?;
    if input.len() != in_len || output.len() != out_len || stage.channels != g.out_c {
        return Err(Error::KernelArgs);
    }
    let window_len = g.kernel_h * g.kernel_w * g.in_c;
    match small_offset(input_offset) {
        Some(offset) if window_len <= OFFSET_CAP => {
            conv_gathered(g, offset, stage, filter, input, output)
        }
        _ => conv_by_entries(g, input_offset, stage, filter, input, output),
    }
}

/// A group of consecutive rows, their entries turned into input offsets from the
/// window's first element (`ky·W·C + kx·C + c`): interior pixels (whole window inside
/// the input) then read the input directly, with no window to gather. Filled once per
/// group and op call, reused by every pixel; one table per call (kept in place: a
/// copy of it would cost its 1.3 KiB of stack again).
pub(crate) struct Taps<'a> {
    /// Every row's entry offsets, one row after another.
    offsets: [u16; OFFSET_CAP],
    /// Per row: its entries' weights and `Σ w` (for the input offset's share).
    sums: [i32; QUANT_BLOCK],
    /// Per row: the row itself (values and gaps, for border pixels).
    pub(crate) rows: [SparseRow<'a>; QUANT_BLOCK],
    /// Rows in the group.
    pub(crate) len: usize,
    /// One past the largest offset in the group: a window of this many bytes holds
    /// every input the group reads.
    reach: usize,
}

impl<'a> Taps<'a> {
    pub(crate) fn new() -> Self {
        const EMPTY: SparseRow<'static> = SparseRow {
            values: &[],
            gaps: &[],
        };
        Taps {
            offsets: [0; OFFSET_CAP],
            sums: [0; QUANT_BLOCK],
            rows: [EMPTY; QUANT_BLOCK],
            len: 0,
            reach: 0,
        }
    }

    /// Take rows from `rows` (at most `max`) while their entries fit the table. Leaves
    /// `len` 0 when the next row alone does not fit.
    pub(crate) fn fill(
        &mut self,
        g: &ConvGeometry,
        rows: &mut RowIter<'a>,
        max: usize,
        nibbles: bool,
    ) {
        let row_len = g.kernel_w * g.in_c;
        let row_stride = g.in_w * g.in_c;
        let mut used = 0;
        self.len = 0;
        self.reach = 0;
        while self.len < max.min(QUANT_BLOCK) {
            let mut peek = rows.clone();
            let Some(row) = peek.next() else { break };
            let n = row.values.len();
            let slots = self.offsets.get_mut(used..used + n);
            let (Some(slots), Some(sum), Some(slot_row)) = (
                slots,
                self.sums.get_mut(self.len),
                self.rows.get_mut(self.len),
            ) else {
                break;
            };
            let mut total = 0i32;
            let mut reach = self.reach;
            let mut slot = slots.iter_mut();
            row.for_each_entry(nibbles, |position, w| {
                let (ky, rest) = (position / row_len, position % row_len);
                if let Some(s) = slot.next() {
                    *s = (ky * row_stride + rest) as u16;
                    reach = reach.max(usize::from(*s) + 1);
                }
                total = total.wrapping_add(i32::from(w));
            });
            self.reach = reach;
            *sum = total;
            *slot_row = row;
            used += n;
            self.len += 1;
            *rows = peek;
        }
    }

    /// Interior pixels: each row's `Σ (x + offset) · w`, read straight from the input
    /// as `Σ x·w + offset · Σ w`, for one pixel (`second` `None`) or two: `window`
    /// starts at the first one's window, the second's is `step` bytes on, and one walk
    /// over a row's entries serves both (two scalar accumulators: a loop over an
    /// array of them kept them in memory, 9 instructions more per entry on the M4).
    ///
    /// The inputs are read unchecked, after one check that `window` covers every
    /// offset of the group (`reach`) for both pixels: a bounds check per read cost 5
    /// of the 8.5 instructions per entry and pixel on the M4.
    #[inline(always)]
    #[allow(clippy::too_many_arguments, unsafe_code)]
    pub(crate) fn direct(
        &self,
        window: &[i8],
        step: usize,
        offset: i32,
        stage: &OutputStage<'_>,
        qs: &[ChannelQuant],
        first: &mut [i8],
        second: Option<&mut [i8]>,
    ) -> Result<(), Error> {
        let span = self.reach + if second.is_some() { step } else { 0 };
        if window.len() < span {
            return Err(Error::KernelArgs);
        }
        let mut offsets: &[u16] = &self.offsets;
        let rows = self.rows.iter().zip(&self.sums).take(self.len);
        match second {
            Some(second) => {
                let outs = first.iter_mut().zip(second.iter_mut());
                for ((row, &sum), (q, (o0, o1))) in rows.zip(qs.iter().zip(outs)) {
                    let (mine, rest) = offsets.split_at(row.values.len().min(offsets.len()));
                    offsets = rest;
                    let mut a0 = offset.wrapping_mul(sum);
                    let mut a1 = a0;
                    for (&w, &off) in row.values.iter().zip(mine) {
                        let (w, off) = (i32::from(w as i8), usize::from(off));
                        // SAFETY: `off < reach` (every stored offset is), so `off` and
                        // `off + step` are below `reach + step ≤ window.len()`.
                        let (x0, x1) = unsafe { (read(window, off), read(window, off + step)) };
                        a0 = a0.wrapping_add(x0 * w);
                        a1 = a1.wrapping_add(x1 * w);
                    }
                    *o0 = stage.finish(q, a0);
                    *o1 = stage.finish(q, a1);
                }
            }
            None => {
                for ((row, &sum), (q, o0)) in rows.zip(qs.iter().zip(first.iter_mut())) {
                    let (mine, rest) = offsets.split_at(row.values.len().min(offsets.len()));
                    offsets = rest;
                    let mut a0 = offset.wrapping_mul(sum);
                    for (&w, &off) in row.values.iter().zip(mine) {
                        // SAFETY: `off < reach ≤ window.len()`.
                        let x = unsafe { read(window, usize::from(off)) };
                        a0 = a0.wrapping_add(x * i32::from(w as i8));
                    }
                    *o0 = stage.finish(q, a0);
                }
            }
        }
        Ok(())
    }
}

/// `window[i]` without a bounds check.
///
/// # Safety
/// `i < window.len()`.
#[allow(unsafe_code)]
#[inline(always)]
unsafe fn read(window: &[i8], i: usize) -> i32 {
    debug_assert!(i < window.len());
    // SAFETY: the caller guarantees `i < window.len()`.
    i32::from(unsafe { *window.get_unchecked(i) })
}

fn conv_gathered(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let image_len = g.in_h * g.in_w * g.in_c;
    let window_len = g.kernel_h * g.kernel_w * g.in_c;
    // Offsets are `u16`: the span of one window must fit.
    let span = ((g.kernel_h - 1) * g.in_w + g.kernel_w) * g.in_c;
    let direct = span <= usize::from(u16::MAX);
    let mut buf = [0i16; OFFSET_CAP];
    let mut taps = Taps::new();
    let nibbles = filter.nibbles();
    let mut quants = [ChannelQuant::default(); QUANT_BLOCK];
    let mut rows = filter.iter();
    // Channel blocks outermost, each block's output stage decoded once; within a block,
    // groups of rows whose entries fit the tap table.
    for c0 in (0..g.out_c).step_by(QUANT_BLOCK) {
        let n = (g.out_c - c0).min(QUANT_BLOCK);
        let q = quants.get_mut(..n).ok_or(Error::KernelArgs)?;
        stage.channels_into(c0, q);
        let mut done = 0;
        while done < n {
            taps.len = 0;
            if direct {
                taps.fill(g, &mut rows, n - done, nibbles);
            }
            // A row too long for the table (or windows too wide for `u16` offsets):
            // that row alone, through the gathered window only.
            let (len, lone) = match taps.len {
                0 => (1, Some(rows.next().ok_or(Error::KernelArgs)?)),
                len => (len, None),
            };
            let group: &[SparseRow<'_>] = match &lone {
                Some(row) => core::slice::from_ref(row),
                None => taps.rows.get(..len).unwrap_or(&[]),
            };
            let qs = q.get(done..done + len).ok_or(Error::KernelArgs)?;
            let (lo, hi) = (c0 + done, c0 + done + len);
            let mut pixels = output.chunks_exact_mut(g.out_c);
            for image in input.chunks_exact(image_len) {
                for oy in 0..g.out_h {
                    let y0 = oy * g.stride_h;
                    let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
                    let inside_rows = lone.is_none() && ky0 == 0 && ky1 == g.kernel_h;
                    let inside = |ox: usize| {
                        let x0 = ox * g.stride_w;
                        inside_rows && x0 >= g.pad_left && x0 + g.kernel_w <= g.in_w + g.pad_left
                    };
                    let mut ox = 0;
                    while ox < g.out_w {
                        let out = pixels
                            .next()
                            .and_then(|p| p.get_mut(lo..hi))
                            .ok_or(Error::KernelArgs)?;
                        if inside(ox) {
                            let x0 = ox * g.stride_w;
                            let origin = ((y0 - g.pad_top) * g.in_w + x0 - g.pad_left) * g.in_c;
                            let window = image.get(origin..).ok_or(Error::KernelArgs)?;
                            let (offset, step) = (i32::from(offset), g.stride_w * g.in_c);
                            // Two pixels per walk over the entries where the next is
                            // interior too.
                            if ox + 1 < g.out_w && inside(ox + 1) {
                                let next = pixels
                                    .next()
                                    .and_then(|p| p.get_mut(lo..hi))
                                    .ok_or(Error::KernelArgs)?;
                                taps.direct(window, step, offset, stage, qs, out, Some(next))?;
                                ox += 2;
                            } else {
                                taps.direct(window, step, offset, stage, qs, out, None)?;
                                ox += 1;
                            }
                            continue;
                        }
                        let window = buf.get_mut(..window_len).ok_or(Error::KernelArgs)?;
                        gather_window(g, image, (y0, ky0, ky1), ox, offset, window)?;
                        for ((out, q), row) in out.iter_mut().zip(qs).zip(group) {
                            *out = stage.finish(q, dot_row(&buf, row, nibbles));
                        }
                        ox += 1;
                    }
                }
            }
            done += len;
        }
    }
    Ok(())
}

/// Any window size and offset: each entry's position split into `(ky, kx, c)`.
fn conv_by_entries(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let image_len = g.in_h * g.in_w * g.in_c;
    let filter_row = g.kernel_w * g.in_c;
    let nibbles = filter.nibbles();
    let mut pixels = output.chunks_exact_mut(g.out_c);
    for image in input.chunks_exact(image_len) {
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                let out_px = pixels.next().ok_or(Error::KernelArgs)?;
                for ((oc, out), row) in out_px.iter_mut().enumerate().zip(filter.iter()) {
                    let mut acc = 0i32;
                    row.for_each_entry(nibbles, |position, w| {
                        let (ky, rest) = (position / filter_row, position % filter_row);
                        let (kx, c) = (rest / g.in_c, rest % g.in_c);
                        if (ky0..ky1).contains(&ky) && (kx0..kx1).contains(&kx) {
                            let iy = y0 + ky - g.pad_top;
                            let ix = x0 + kx - g.pad_left;
                            let x = image.get((iy * g.in_w + ix) * g.in_c + c).copied();
                            let x = x.map_or(0, |v| i32::from(v).wrapping_add(input_offset));
                            acc = acc.wrapping_add(x.wrapping_mul(i32::from(w)));
                        }
                    });
                    *out = stage.apply(acc, oc);
                }
            }
        }
    }
    Ok(())
}

/// [`super::fully_connected::fully_connected`] with the weights as sparse rows (one
/// per output, of `in_features` positions).
pub fn fully_connected_sparse(
    shape: &FcShape,
    input_offset: i32,
    stage: &OutputStage<'_>,
    weights: &SparseRows<'_>,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    stage.check()?;
    let FcShape {
        in_features,
        out_features,
        ..
    } = *shape;
    let ok = shape.fits(input.len(), output.len()) && stage.channels == out_features;
    if !ok {
        return Err(Error::KernelArgs);
    }
    let nibbles = weights.nibbles();
    let mut buf = [0i16; OFFSET_CAP];
    for (x, out_row) in input
        .chunks_exact(in_features)
        .zip(output.chunks_exact_mut(out_features))
    {
        let outputs = out_row.iter_mut().enumerate().zip(weights.iter());
        match (small_offset(input_offset), buf.get_mut(..in_features)) {
            (Some(offset), Some(gathered)) => {
                offset_into(gathered, x, offset);
                for ((o, out), row) in outputs {
                    *out = stage.apply(dot_row(&buf, &row, nibbles), o);
                }
            }
            _ => {
                for ((o, out), row) in outputs {
                    let mut acc = 0i32;
                    row.for_each_entry(nibbles, |position, w| {
                        let v = x.get(position).map_or(0, |&v| i32::from(v));
                        acc = acc
                            .wrapping_add(v.wrapping_add(input_offset).wrapping_mul(i32::from(w)));
                    });
                    *out = stage.apply(acc, o);
                }
            }
        }
    }
    Ok(())
}
