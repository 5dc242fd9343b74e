//! The fused conv + max pool (`Conv2dMaxPool`) over its own input (format 2.6,
//! FORMAT.md §4): the pooled output may overlap the input it is the last reader of,
//! placed so that each pool row's bytes lie clear of every input row that it or a
//! later-computed row reads.
//!
//! Placed *before* the input (forward), the pool rows are computed top down: row `r`
//! ends at or before the first input row it reads. Placed *after* (backward), bottom
//! up: row `r` starts at or after the end of the last input row it reads. The rows each
//! pool row reads move down monotonically, so either way a strip of pool rows and the
//! input rows it reads are disjoint slices of the arena: each strip is an ordinary
//! kernel call over the strip's sub-geometry, which any of the fused kernels computes
//! bit-exactly (each conv value is the same integer, a maximum does not depend on the
//! order). Strips are as tall as the placement allows (one pool row at the least).
//!
//! LeNet-5's conv1 (28×28×1 → 14×14×6) and conv2 (14×14×6 → 5×5×16) placed so take
//! 1,288 bytes of arena instead of 1,960.

use core::ops::Range;

use super::exec::{dims4, range};
use super::stream::{narrow_rows, rows_read};
use super::Model;
use crate::arena::{bytes_as_i8, split};
use crate::error::Error;
use crate::format::{Conv2dMaxPool, OpSet, Tensor};
use crate::kernels::conv_pool::{
    conv2d_max_pool, conv2d_packed_max_pool, conv2d_sparse_max_pool_by, FusedSparseKernel,
};
use crate::kernels::ConvGeometry;

/// `(conv, pool)` geometries of a fused conv and max pool from `x` to `y`: the conv's
/// output (never stored) is what the pool reads.
// Inlined: called, the pair came back in an `Option` built aside and copied into the
// caller's frame (measured: 40 B more of the fused op's dispatch).
#[inline(always)]
pub(crate) fn fused_geometry(
    x: &Tensor,
    y: &Tensor,
    p: &Conv2dMaxPool,
) -> Option<(ConvGeometry, ConvGeometry)> {
    let c = &p.conv;
    let [batch, in_h, in_w, in_c] = dims4(x)?;
    let [_, out_h, out_w, out_c] = dims4(y)?;
    let size = |n: usize, k: u32, s: u32, a: u32, b: u32| {
        let span = n.checked_add(a as usize)?.checked_add(b as usize)?;
        Some(span.checked_sub(k as usize)?.checked_div(s as usize)? + 1)
    };
    let pad = &c.padding;
    let conv_h = size(in_h, c.kernel_h, c.stride_h, pad.top, pad.bottom)?;
    let conv_w = size(in_w, c.kernel_w, c.stride_w, pad.left, pad.right)?;
    let w = &p.pool;
    let conv = ConvGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        out_h: conv_h,
        out_w: conv_w,
        out_c,
        kernel_h: c.kernel_h as usize,
        kernel_w: c.kernel_w as usize,
        stride_h: c.stride_h as usize,
        stride_w: c.stride_w as usize,
        pad_top: pad.top as usize,
        pad_left: pad.left as usize,
    };
    let pool = ConvGeometry {
        batch,
        in_h: conv_h,
        in_w: conv_w,
        in_c: out_c,
        out_h,
        out_w,
        out_c,
        kernel_h: usize::from(w.filter_h),
        kernel_w: usize::from(w.filter_w),
        stride_h: usize::from(w.stride_h),
        stride_w: usize::from(w.stride_w),
        pad_top: usize::from(w.pad_top),
        pad_left: usize::from(w.pad_left),
    };
    Some((conv, pool))
}

/// Input rows that pool rows `rows` of a fused op read (through the conv rows under
/// their pool windows).
fn input_rows(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    rows: &Range<usize>,
) -> Option<Range<usize>> {
    let (c0, c1) = rows_read(pool, rows.start, rows.len())?;
    let (a, b) = rows_read(conv, c0, c1 - c0)?;
    Some(a..b)
}

/// Narrow a fused op's whole geometries to pool rows `rows`: the geometries that
/// compute just those from just the input rows they read (returned).
fn narrow(
    conv: &mut ConvGeometry,
    pool: &mut ConvGeometry,
    rows: &Range<usize>,
) -> Option<Range<usize>> {
    let (c0, c1) = narrow_rows(pool, rows.start, rows.len())?;
    let (a, b) = narrow_rows(conv, c0, c1 - c0)?;
    Some(a..b)
}

/// Bytes of one row of the input and of the pooled output.
fn row_bytes(conv: &ConvGeometry, pool: &ConvGeometry) -> Option<(usize, usize)> {
    Some((
        conv.in_w.checked_mul(conv.in_c)?,
        pool.out_w.checked_mul(pool.out_c)?,
    ))
}

/// The least distances, in bytes, at which the pooled output may start before the
/// input (forward) and after it (backward): every pool row `r` ends at or before the
/// start of the first input row it reads, or starts at or after the end of the last.
/// `None` for a batch of more than one image (no placement over the input is allowed).
pub(crate) fn least_lags(conv: &ConvGeometry, pool: &ConvGeometry) -> Option<(usize, usize)> {
    if conv.batch != 1 {
        return None;
    }
    let (row_in, row_out) = row_bytes(conv, pool)?;
    let (mut before, mut after) = (0usize, 1usize);
    for r in 0..pool.out_h {
        let read = input_rows(conv, pool, &(r..r + 1))?;
        let end = r.checked_add(1)?.checked_mul(row_out)?;
        before = before.max(end.saturating_sub(read.start.checked_mul(row_in)?));
        let read_end = read.end.checked_mul(row_in)?;
        after = after.max(read_end.saturating_sub(r.checked_mul(row_out)?));
    }
    Some((before, after))
}

/// Whether `y`, the output of fused op `p` reading `x`, lies where the op may write it
/// over `x` (both in the arena at their offsets): forward or backward at least the
/// [`least_lags`].
pub(crate) fn clear_of_input(p: &Conv2dMaxPool, x: &Tensor, y: &Tensor) -> bool {
    let Some((before, after)) =
        fused_geometry(x, y, p).and_then(|(conv, pool)| least_lags(&conv, &pool))
    else {
        return false;
    };
    let (ox, oy) = (x.arena_offset as usize, y.arena_offset as usize);
    match oy <= ox {
        true => ox - oy >= before,
        false => oy - ox >= after,
    }
}

/// The next strip after pool rows `done` of fused op `p` over its input (forward:
/// from the first row not done down, backward: from the last up), as many rows as
/// the input rows they overwrite are all read: the pool rows and the arena bytes of
/// the input rows they read and of their output.
// Not inlined: the geometries it works out stay out of the kernel's callers' frames.
#[inline(never)]
fn next_strip(
    p: &Conv2dMaxPool,
    (x, y): (&Tensor, &Tensor),
    done: &Range<usize>,
    (rin, rout): (&Range<usize>, &Range<usize>),
) -> Option<[Range<usize>; 3]> {
    let (conv, pool) = fused_geometry(x, y, p)?;
    let (row_in, row_out) = row_bytes(&conv, &pool)?;
    if conv.batch != 1 || row_out == 0 {
        return None;
    }
    let rows = if rout.start <= rin.start {
        let first = input_rows(&conv, &pool, &(done.end..done.end + 1))?.start;
        let room = (rin.start + first * row_in).checked_sub(rout.start)?;
        done.end..pool.out_h.min(room / row_out)
    } else {
        let last = pool.out_h.checked_sub(done.len())?;
        let end = input_rows(&conv, &pool, &(last.checked_sub(1)?..last))?.end;
        let start = (rin.start + end * row_in).checked_sub(rout.start);
        start.map_or(0, |s| s.div_ceil(row_out))..last
    };
    if rows.is_empty() {
        return None;
    }
    let read = input_rows(&conv, &pool, &rows)?;
    let bytes = |r: &Range<usize>, at: usize, row: usize| {
        Some(at.checked_add(r.start * row)?..at.checked_add(r.end * row)?)
    };
    let input = bytes(&read, rin.start, row_in)?;
    let output = bytes(&rows, rout.start, row_out)?;
    Some([rows, input, output])
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'a, MAX_OPS, MAX_TENSORS, OPS>
{
    /// Run fused op `p` from `x` to `y`: in one call where they are disjoint, else in
    /// strips of pool rows, each as tall as the placement allows.
    // Inlined into the dispatch: a frame of its own cost 124 B of stack on the path of
    // every fused op's kernel.
    #[inline(always)]
    pub(super) fn fused_strips(
        &self,
        p: &Conv2dMaxPool,
        x: &Tensor,
        y: &Tensor,
        arena: &mut [u8],
    ) -> Option<Result<(), Error>> {
        let (rin, rout) = (range(x)?, range(y)?);
        // Chosen once, on the whole op (as the loader checked it): every strip runs it.
        let kernel = match self.fused_sparse_kernel(p)? {
            Ok(kernel) => kernel,
            Err(e) => return Some(Err(e)),
        };
        if rout.end <= rin.start || rin.end <= rout.start {
            let (input, _, output) = split(arena, &rin, &rin, &rout)?;
            return self.fused_kernel(p, (x, y), kernel, None, input, output);
        }
        let pool_rows = *y.shape.get(1)? as usize;
        let mut done = 0..0;
        while done.len() < pool_rows {
            let [rows, input, output] = next_strip(p, (x, y), &done, (&rin, &rout))?;
            let (input, _, output) = split(arena, &input, &input, &output)?;
            if let Err(e) = self.fused_kernel(p, (x, y), kernel, Some(&rows), input, output)? {
                return Some(Err(e));
            }
            done = match rout.start <= rin.start {
                true => 0..rows.end,
                false => rows.start..pool_rows,
            };
        }
        Some(Ok(()))
    }

    /// Pooled rows `rows` of fused op `p` from `x` to `y` (all of them where `None`),
    /// over the `input` rows they read; `kernel` where its filter rows are sparse.
    // Not inlined, and the geometries built here: the strips' loop above carries none.
    #[inline(never)]
    fn fused_kernel(
        &self,
        p: &Conv2dMaxPool,
        (x, y): (&Tensor, &Tensor),
        kernel: Option<FusedSparseKernel>,
        rows: Option<&Range<usize>>,
        input: &[i8],
        output: &mut [i8],
    ) -> Option<Result<(), Error>> {
        let (mut conv, mut pool) = fused_geometry(x, y, p)?;
        if let Some(rows) = rows {
            narrow(&mut conv, &mut pool, rows)?;
        }
        let (conv, pool) = (&conv, &pool);
        let c = &p.conv;
        let stage = self.stage(c.bias, c.requant, y, conv.out_c, (c.act_min, c.act_max))?;
        let filter = self.bytes(c.filter.data)?;
        let row_len = conv.kernel_h * conv.kernel_w * conv.in_c;
        let off = x.zero_point.wrapping_neg();
        Some(
            if let Some(rows) = self.packed_rows(c.filter, filter, conv.out_c, row_len) {
                conv2d_packed_max_pool(conv, pool, off, &stage, &rows, input, output)
            } else if let Some(rows) = self.sparse_rows(c.filter, filter, conv.out_c) {
                let kernel = kernel?;
                conv2d_sparse_max_pool_by::<OPS>(
                    kernel, conv, pool, off, &stage, &rows, input, output,
                )
            } else if self.dense(c.filter) {
                let filter = bytes_as_i8(filter);
                conv2d_max_pool(conv, pool, off, &stage, filter, input, output)
            } else {
                return None;
            },
        )
    }

    /// The kernel fused op `p` runs where its filter rows are sparse (and their
    /// encoding in the op set; `Ok(None)` otherwise), chosen on the whole op.
    // Not inlined: its geometries stay out of the fused op's dispatch frame.
    #[inline(never)]
    pub(crate) fn fused_sparse_kernel(
        &self,
        p: &Conv2dMaxPool,
    ) -> Option<Result<Option<FusedSparseKernel>, Error>> {
        let x = self.tensors.get(p.conv.input as usize)?;
        let y = self.tensors.get(p.conv.output as usize)?;
        let (conv, pool) = fused_geometry(x, y, p)?;
        let c = &p.conv;
        let filter = self.bytes(c.filter.data)?;
        let Some(rows) = self.sparse_rows(c.filter, filter, conv.out_c) else {
            return Some(Ok(None));
        };
        let stage = self.stage(c.bias, c.requant, y, conv.out_c, (c.act_min, c.act_max))?;
        let off = x.zero_point.wrapping_neg();
        Some(FusedSparseKernel::of(&conv, &pool, off, &stage, &rows).map(Some))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::conv_then_pool2;

    #[test]
    fn lenet5_lags_are_the_documented_ones() {
        // conv1: 28×28×1, 5×5 same → 28×28×6 → 14×14×6 (FORMAT.md §4).
        let (conv, pool) = conv_then_pool2((28, 28, 1), 5, 2, 6);
        assert_eq!(least_lags(&conv, &pool), Some((504, 112)));
        // conv2: 14×14×6, 5×5 valid → 10×10×16 → 5×5×16.
        let (conv, pool) = conv_then_pool2((14, 14, 6), 5, 0, 16);
        assert_eq!(least_lags(&conv, &pool), Some((80, 856)));
    }

    #[test]
    fn no_placement_over_the_input_for_a_batch() {
        let (mut conv, mut pool) = conv_then_pool2((14, 14, 6), 5, 0, 16);
        (conv.batch, pool.batch) = (2, 2);
        assert_eq!(least_lags(&conv, &pool), None);
    }
}
