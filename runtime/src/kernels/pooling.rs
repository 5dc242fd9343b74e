//! Pooling, int8: max and average over windows (TFLite's
//! `reference_integer_ops::MaxPool` / `AveragePool`) and the global mean over height
//! and width (TFLite's `reference_integer_ops::Mean`).

use super::{ConvGeometry, CHANNEL_BLOCK};
use crate::error::Error;
use crate::fixed_point::{clamp_to_i8, Requant};

/// Which reduction a window pool applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Largest in-bounds value.
    Max,
    /// Mean of the in-bounds values, rounded half away from zero.
    Average,
}

/// `(count, sum_or_max) -> value`, before clamping.
#[inline]
fn finish(kind: PoolKind, acc: i32, count: i32) -> i32 {
    match kind {
        PoolKind::Max => acc,
        PoolKind::Average => {
            let half = count / 2;
            let rounded = if acc > 0 {
                acc.wrapping_add(half)
            } else {
                acc.wrapping_sub(half)
            };
            rounded.checked_div(count).unwrap_or(0)
        }
    }
}

/// Window pooling; input and output share quantization, so values are pooled raw.
/// `g.out_c` must equal `g.in_c`; padded positions are skipped.
pub fn pool2d(
    kind: PoolKind,
    g: &ConvGeometry,
    act_min: i32,
    act_max: i32,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    if g.in_c != g.out_c || input.len() != in_len || output.len() != out_len {
        return Err(Error::KernelArgs);
    }
    let mut io = Disjoint { input, output };
    pool_core(kind, g, act_min, act_max, &mut io)
}

/// Whether [`pool2d_in_place`] accepts this geometry: no top or left padding. Then
/// every in-bounds input position a window reads lies at an NHWC index at least that
/// of the window's output pixel (`iy ≥ oy`, `ix ≥ ox`, `H ≥ OH`, `W ≥ OW`), so writing
/// outputs in order, each channel block after its window is read, never overwrites an
/// input value that is still to be read, provided the output starts at or before the
/// input in the buffer.
pub fn in_place_ok(g: &ConvGeometry) -> bool {
    g.pad_top == 0 && g.pad_left == 0
}

/// [`pool2d`] on one buffer holding the input at `buf[input_start..]` and the output
/// at `buf[output_start..]`, which may overlap: requires `output_start ≤ input_start`
/// and [`in_place_ok`] (`KernelArgs` otherwise). Results are identical to
/// [`pool2d`] on separate buffers.
pub fn pool2d_in_place(
    kind: PoolKind,
    g: &ConvGeometry,
    act_min: i32,
    act_max: i32,
    buf: &mut [i8],
    input_start: usize,
    output_start: usize,
) -> Result<(), Error> {
    if !in_place_ok(g) || output_start > input_start {
        return Err(Error::KernelArgs);
    }
    pool2d_any(kind, g, act_min, act_max, buf, input_start, output_start)
}

/// [`pool2d`] on one buffer holding the input at `buf[input_start..]` and the output
/// at `buf[output_start..]`: either disjoint, or overlapping as [`pool2d_in_place`]
/// allows (`KernelArgs` otherwise). `Model::run` calls this for every window pool, so
/// the firmware carries one pool loop, not one per buffer arrangement.
pub fn pool2d_any(
    kind: PoolKind,
    g: &ConvGeometry,
    act_min: i32,
    act_max: i32,
    buf: &mut [i8],
    input_start: usize,
    output_start: usize,
) -> Result<(), Error> {
    let (in_len, out_len) = g.lens()?;
    let end = |start: usize, len: usize| start.checked_add(len).filter(|&e| e <= buf.len());
    let (Some(in_end), Some(out_end)) = (end(input_start, in_len), end(output_start, out_len))
    else {
        return Err(Error::KernelArgs);
    };
    let disjoint = in_end <= output_start || out_end <= input_start;
    if g.in_c != g.out_c || !(disjoint || (in_place_ok(g) && output_start <= input_start)) {
        return Err(Error::KernelArgs);
    }
    let mut io = Shared {
        buf,
        input_start,
        output_start,
    };
    pool_core(kind, g, act_min, act_max, &mut io)
}

/// Where a pool reads its input and writes its output (offsets relative to the
/// tensors' starts).
trait PoolIo {
    fn input(&self, start: usize, len: usize) -> Option<&[i8]>;
    fn output(&mut self, start: usize, len: usize) -> Option<&mut [i8]>;
}

struct Disjoint<'a, 'b> {
    input: &'a [i8],
    output: &'b mut [i8],
}

impl PoolIo for Disjoint<'_, '_> {
    #[inline]
    fn input(&self, start: usize, len: usize) -> Option<&[i8]> {
        self.input.get(start..start.checked_add(len)?)
    }
    #[inline]
    fn output(&mut self, start: usize, len: usize) -> Option<&mut [i8]> {
        self.output.get_mut(start..start.checked_add(len)?)
    }
}

struct Shared<'a> {
    buf: &'a mut [i8],
    input_start: usize,
    output_start: usize,
}

impl PoolIo for Shared<'_> {
    #[inline]
    fn input(&self, start: usize, len: usize) -> Option<&[i8]> {
        let s = self.input_start.checked_add(start)?;
        self.buf.get(s..s.checked_add(len)?)
    }
    #[inline]
    fn output(&mut self, start: usize, len: usize) -> Option<&mut [i8]> {
        let s = self.output_start.checked_add(start)?;
        self.buf.get_mut(s..s.checked_add(len)?)
    }
}

/// The pool loop, in NHWC output order; for each output pixel and block of up to
/// [`CHANNEL_BLOCK`] channels, the whole window is read before the block is written
/// (the order [`pool2d_in_place`] relies on).
fn pool_core(
    kind: PoolKind,
    g: &ConvGeometry,
    act_min: i32,
    act_max: i32,
    io: &mut impl PoolIo,
) -> Result<(), Error> {
    let c = g.in_c;
    let image_len = g.in_h * g.in_w * c;
    let init = match kind {
        PoolKind::Max => i32::from(i8::MIN),
        PoolKind::Average => 0,
    };
    let mut pixel = 0usize;
    let mut block = [0; CHANNEL_BLOCK];
    for b in 0..g.batch {
        let image = b * image_len;
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                // In-bounds positions of this window (≥ 1 for a consistent geometry).
                let count = i32::try_from((ky1 - ky0) * (kx1 - kx0)).unwrap_or(i32::MAX);
                let mut c0 = 0;
                while c0 < c {
                    let n = CHANNEL_BLOCK.min(c - c0);
                    // Only the block's channels, each written below before it is read:
                    // clearing all 32 per pixel cost 128 instructions on the M4, more
                    // than a 2×2 max over 6 channels.
                    let acc = block.get_mut(..n).ok_or(Error::KernelArgs)?;
                    // A max over a whole 2×2 window (LeNet-5's and most CNNs' pools):
                    // each channel's four taps in one pass, from two row reads.
                    if kind == PoolKind::Max && (ky1 - ky0, kx1 - kx0) == (2, 2) {
                        let at = |ky: usize| {
                            let (iy, ix) = (y0 + ky - g.pad_top, x0 + kx0 - g.pad_left);
                            let row = io.input(image + (iy * g.in_w + ix) * c + c0, c + n)?;
                            Some((row.get(..n)?, row.get(c..)?))
                        };
                        let ((a, b), (d, e)) = at(ky0).zip(at(ky0 + 1)).ok_or(Error::KernelArgs)?;
                        let taps = a.iter().zip(b).zip(d.iter().zip(e));
                        for (slot, ((&a, &b), (&d, &e))) in acc.iter_mut().zip(taps) {
                            *slot = i32::from(a.max(b).max(d.max(e)));
                        }
                    } else {
                        acc.fill(init);
                        for ky in ky0..ky1 {
                            let iy = y0 + ky - g.pad_top;
                            for kx in kx0..kx1 {
                                let ix = x0 + kx - g.pad_left;
                                let p = image + (iy * g.in_w + ix) * c + c0;
                                let x = io.input(p, n).ok_or(Error::KernelArgs)?;
                                match kind {
                                    PoolKind::Max => {
                                        for (a, &v) in acc.iter_mut().zip(x) {
                                            *a = (*a).max(i32::from(v));
                                        }
                                    }
                                    PoolKind::Average => {
                                        for (a, &v) in acc.iter_mut().zip(x) {
                                            *a = a.wrapping_add(i32::from(v));
                                        }
                                    }
                                }
                            }
                        }
                    }
                    let out = io.output(pixel * c + c0, n).ok_or(Error::KernelArgs)?;
                    for (o, &a) in out.iter_mut().zip(acc.iter()) {
                        *o = clamp_to_i8(finish(kind, a, count), act_min, act_max);
                    }
                    c0 += n;
                }
                pixel += 1;
            }
        }
    }
    Ok(())
}

/// Quantization of a global average pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeanParams {
    /// Minus the input zero point.
    pub input_offset: i32,
    /// Multiplier of `input_scale / output_scale`.
    pub multiplier: i32,
    /// Its shift.
    pub shift: i32,
    /// Output zero point.
    pub output_offset: i32,
    /// Lower clamp.
    pub act_min: i32,
    /// Upper clamp.
    pub act_max: i32,
}

/// Mean over H and W of `[batch, h, w, c]` into `[batch, 1, 1, c]`:
/// `acc = Σ (x + input_offset)`, requantized, divided by `h·w` rounding half away from
/// zero, plus the output offset, clamped.
pub fn global_avg_pool(
    dims: [usize; 4],
    p: &MeanParams,
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let [batch, h, w, c] = dims;
    let hw = h.checked_mul(w).ok_or(Error::KernelArgs)?;
    let in_len = hw.checked_mul(c).and_then(|v| v.checked_mul(batch));
    let count = i32::try_from(hw).map_err(|_| Error::KernelArgs)?;
    if dims.contains(&0)
        || in_len != Some(input.len())
        || batch.checked_mul(c) != Some(output.len())
    {
        return Err(Error::KernelArgs);
    }
    let requant = Requant::new(p.multiplier, p.shift);
    let image_len = hw * c;
    // One output at a time, summing its channel down the image with a stride of `c`:
    // the same sums, in the same order, as channel blocks over pixels, in 60 % of the
    // flash (412 bytes instead of 690 on thumbv7em; the op runs once per model).
    for (i, out) in output.iter_mut().enumerate() {
        let mut at = (i / c) * image_len + i % c;
        let end = at + image_len;
        let mut acc = 0i32;
        while at < end {
            let v = input.get(at).copied().ok_or(Error::KernelArgs)?;
            acc = acc.wrapping_add(i32::from(v).wrapping_add(p.input_offset));
            at += c;
        }
        let v = finish(PoolKind::Average, requant.apply(acc), count);
        *out = clamp_to_i8(v.wrapping_add(p.output_offset), p.act_min, p.act_max);
    }
    Ok(())
}
