//! Dispatch of one validated op to its kernel.

use super::Model;
use crate::arena::{bytes_as_i8, split_io, view_mut, Region};
use crate::error::Error;
use crate::format::{DataRef, Op, Padding, Tensor};
use crate::kernels::add::{add, AddParams};
use crate::kernels::argmax::argmax;
use crate::kernels::conv::conv2d;
use crate::kernels::depthwise::depthwise_conv2d;
use crate::kernels::fully_connected::{fully_connected, FcShape};
use crate::kernels::pooling::{global_avg_pool, pool2d, pool2d_in_place, MeanParams, PoolKind};
use crate::kernels::softmax::{softmax, SoftmaxParams};
use crate::kernels::{ConvGeometry, OutputStage};

fn dims4(t: &Tensor) -> Result<[usize; 4], Error> {
    match t.shape.as_slice() {
        &[n, h, w, c] => Ok([n as usize, h as usize, w as usize, c as usize]),
        _ => Err(Error::KernelArgs),
    }
}

/// `(product of leading dimensions, last dimension)`.
fn rows(t: &Tensor) -> Result<(usize, usize), Error> {
    let (&last, lead) = t.shape.split_last().ok_or(Error::KernelArgs)?;
    let lead = lead
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
        .ok_or(Error::KernelArgs)?;
    Ok((lead, last as usize))
}

fn geometry(
    x: &Tensor,
    y: &Tensor,
    kernel: (u32, u32),
    stride: (u32, u32),
    pad: &Padding,
) -> Result<ConvGeometry, Error> {
    let [batch, in_h, in_w, in_c] = dims4(x)?;
    let [_, out_h, out_w, out_c] = dims4(y)?;
    Ok(ConvGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        out_h,
        out_w,
        out_c,
        kernel_h: kernel.0 as usize,
        kernel_w: kernel.1 as usize,
        stride_h: stride.0 as usize,
        stride_w: stride.1 as usize,
        pad_top: pad.top as usize,
        pad_left: pad.left as usize,
    })
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize> Model<'a, MAX_OPS, MAX_TENSORS> {
    fn bytes(&self, r: DataRef) -> Result<&'a [u8], Error> {
        let start = r.offset as usize;
        let end = start.checked_add(r.len as usize).ok_or(Error::KernelArgs)?;
        self.data.get(start..end).ok_or(Error::KernelArgs)
    }

    fn stage(
        &self,
        bias: Option<DataRef>,
        requant: DataRef,
        y: &Tensor,
        channels: usize,
        act: (i32, i32),
    ) -> Result<OutputStage<'a>, Error> {
        Ok(OutputStage {
            bias: bias.map(|b| self.bytes(b)).transpose()?,
            requant: self.bytes(requant)?,
            channels,
            output_offset: y.zero_point,
            act_min: act.0,
            act_max: act.1,
        })
    }

    /// Run one op on the arena.
    pub(super) fn exec(&self, op: &Op, arena: &mut [u8]) -> Result<(), Error> {
        match op {
            Op::Conv2d(p) => {
                let (x, y) = (self.tensor(p.input)?, self.tensor(p.output)?);
                let g = geometry(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let stage = self.stage(p.bias, p.requant, y, g.out_c, (p.act_min, p.act_max))?;
                let filter = bytes_as_i8(self.bytes(p.filter)?);
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                conv2d(
                    &g,
                    x.zero_point.wrapping_neg(),
                    &stage,
                    filter,
                    input,
                    output,
                )
            }
            Op::DepthwiseConv2d(p) => {
                let (x, y) = (self.tensor(p.input)?, self.tensor(p.output)?);
                let g = geometry(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let stage = self.stage(p.bias, p.requant, y, g.out_c, (p.act_min, p.act_max))?;
                let filter = bytes_as_i8(self.bytes(p.filter)?);
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                let dm = p.depth_multiplier as usize;
                depthwise_conv2d(
                    &g,
                    dm,
                    x.zero_point.wrapping_neg(),
                    &stage,
                    filter,
                    input,
                    output,
                )
            }
            Op::FullyConnected(p) => {
                let (x, y) = (self.tensor(p.input)?, self.tensor(p.output)?);
                let (batch, in_features) = rows(x)?;
                let (_, out_features) = rows(y)?;
                let shape = FcShape {
                    batch,
                    in_features,
                    out_features,
                };
                let stage =
                    self.stage(p.bias, p.requant, y, out_features, (p.act_min, p.act_max))?;
                let weights = bytes_as_i8(self.bytes(p.weights)?);
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                fully_connected(
                    &shape,
                    x.zero_point.wrapping_neg(),
                    &stage,
                    weights,
                    input,
                    output,
                )
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => {
                let kind = match op {
                    Op::MaxPool2d(_) => PoolKind::Max,
                    _ => PoolKind::Average,
                };
                let (x, y) = (self.tensor(p.input)?, self.tensor(p.output)?);
                let g = geometry(
                    x,
                    y,
                    (p.filter_h, p.filter_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let (i, o) = (&rin.range, &rout.range);
                if i.start < o.end && o.start < i.end {
                    // In place (validated: same offset, no top/left padding).
                    let lo = i.start.min(o.start);
                    let both = Region {
                        tensor: p.input,
                        range: lo..i.end.max(o.end),
                    };
                    let buf = view_mut(arena, &both)?;
                    let (act_min, act_max) = (p.act_min, p.act_max);
                    pool2d_in_place(kind, &g, act_min, act_max, buf, i.start - lo, o.start - lo)
                } else {
                    let ([input], output) = split_io(arena, [&rin], &rout)?;
                    pool2d(kind, &g, p.act_min, p.act_max, input, output)
                }
            }
            Op::GlobalAvgPool(p) => {
                let (x, y) = (self.tensor(p.input)?, self.tensor(p.output)?);
                let params = MeanParams {
                    input_offset: x.zero_point.wrapping_neg(),
                    multiplier: p.multiplier,
                    shift: p.shift,
                    output_offset: y.zero_point,
                    act_min: p.act_min,
                    act_max: p.act_max,
                };
                let dims = dims4(x)?;
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                global_avg_pool(dims, &params, input, output)
            }
            Op::Add(p) => {
                let (a, b, y) = (
                    self.tensor(p.input1)?,
                    self.tensor(p.input2)?,
                    self.tensor(p.output)?,
                );
                let params = AddParams {
                    input1_offset: a.zero_point.wrapping_neg(),
                    input2_offset: b.zero_point.wrapping_neg(),
                    output_offset: y.zero_point,
                    input1_multiplier: p.input1_multiplier,
                    input1_shift: p.input1_shift,
                    input2_multiplier: p.input2_multiplier,
                    input2_shift: p.input2_shift,
                    output_multiplier: p.output_multiplier,
                    output_shift: p.output_shift,
                    act_min: p.act_min,
                    act_max: p.act_max,
                };
                let (r1, r2, rout) = (
                    self.region(p.input1)?,
                    self.region(p.input2)?,
                    self.region(p.output)?,
                );
                let ([in1, in2], output) = split_io(arena, [&r1, &r2], &rout)?;
                add(&params, in1, in2, output)
            }
            // The output aliases the input's bytes: nothing to do.
            Op::Reshape(_) => Ok(()),
            Op::Softmax(p) => {
                let x = self.tensor(p.input)?;
                let (_, depth) = rows(x)?;
                let params = SoftmaxParams {
                    input_multiplier: p.input_multiplier,
                    input_left_shift: p.input_left_shift,
                    diff_min: p.diff_min,
                };
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                softmax(depth, &params, input, output)
            }
            Op::ArgMax(p) => {
                let x = self.tensor(p.input)?;
                let (_, depth) = rows(x)?;
                let (rin, rout) = (self.region(p.input)?, self.region(p.output)?);
                let ([input], output) = split_io(arena, [&rin], &rout)?;
                argmax(depth, input, output)
            }
        }
    }
}
