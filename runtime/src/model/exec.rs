//! Dispatch of one validated op to its kernel.
//!
//! Validation has already checked everything looked up here, so every lookup is an
//! `Option` and any `None` (which cannot happen for a validated model) becomes one
//! [`Error::KernelArgs`]: one error path instead of one per lookup keeps this cold
//! glue small in flash.
//!
//! Each kernel's arm is guarded by its bit in the model's op set (`OPS`, a constant
//! after monomorphization), so a kernel outside the set is never referenced and the
//! linker drops it; validation has refused such ops, so the fallback arm never runs.

use core::ops::Range;

use super::{encoding_set, Model, OpKind};
use crate::arena::{bytes_as_i8, bytes_as_i8_mut, split, split_bytes};
use crate::error::Error;
use crate::format::packed::PackedRows;
use crate::format::sparse::SparseRows;
use crate::format::{Add, DataRef, Encoding, Op, OpSet, Padding, Tensor, Weights};
use crate::kernels::add::{add, add_in_place, AddParams};
use crate::kernels::argmax::argmax;
use crate::kernels::binary::{binary_conv2d, binary_fully_connected, SignInput, SignOutput};
use crate::kernels::conv::conv2d_by;
use crate::kernels::depthwise::depthwise_conv2d_by;
use crate::kernels::fully_connected::{fully_connected_by, FcShape};
use crate::kernels::low_bit::{conv2d_packed, depthwise_conv2d_packed, fully_connected_packed};
use crate::kernels::pool_bits::max_pool_bits;
use crate::kernels::pooling::{global_avg_pool, pool2d_any, MeanParams, PoolKind};
use crate::kernels::softmax::{softmax, SoftmaxParams};
use crate::kernels::sparse::{conv2d_sparse, fully_connected_sparse};
use crate::kernels::{ConvGeometry, OutputStage};

/// The op-set bits of the sparse and of the packed encodings.
const SPARSE_ENCODINGS: OpSet = encoding_set(&[Encoding::SparseRel8, Encoding::SparseRel4]);
const PACKED_ENCODINGS: OpSet =
    encoding_set(&[Encoding::Packed4, Encoding::Packed2, Encoding::Packed1]);

#[cfg_attr(all(feature = "std", target_arch = "x86_64"), inline(always))]
pub(super) fn dims4(t: &Tensor) -> Option<[usize; 4]> {
    match t.shape.as_slice() {
        &[n, h, w, c] => Some([n as usize, h as usize, w as usize, c as usize]),
        _ => None,
    }
}

/// `(product of leading dimensions, last dimension)`.
#[cfg_attr(all(feature = "std", target_arch = "x86_64"), inline(always))]
fn rows(t: &Tensor) -> Option<(usize, usize)> {
    let (&last, lead) = t.shape.split_last()?;
    let lead = lead
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d as usize))?;
    Some((lead, last as usize))
}

/// The shape of a fully connected op from `x` to `y`.
pub(super) fn fc_shape(x: &Tensor, y: &Tensor) -> Option<FcShape> {
    let (batch, in_features) = rows(x)?;
    let (_, out_features) = rows(y)?;
    Some(FcShape {
        batch,
        in_features,
        out_features,
    })
}

fn geometry(
    x: &Tensor,
    y: &Tensor,
    kernel: (u32, u32),
    stride: (u32, u32),
    pad: &Padding,
) -> Option<ConvGeometry> {
    let [batch, in_h, in_w, in_c] = dims4(x)?;
    let [_, out_h, out_w, out_c] = dims4(y)?;
    Some(ConvGeometry {
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

/// The geometry of a conv or depthwise conv from `x` to `y`.
pub(super) fn conv_geometry(op: &Op, x: &Tensor, y: &Tensor) -> Option<ConvGeometry> {
    let (kernel, stride, pad) = match op {
        Op::Conv2d(p) => (
            (p.kernel_h, p.kernel_w),
            (p.stride_h, p.stride_w),
            &p.padding,
        ),
        Op::DepthwiseConv2d(p) => (
            (p.kernel_h, p.kernel_w),
            (p.stride_h, p.stride_w),
            &p.padding,
        ),
        _ => return None,
    };
    geometry(x, y, kernel, stride, pad)
}

/// A binary op's input and output in the arena, as int8 or packed bits as their
/// tensors are stored.
fn signs<'b>(
    arena: &'b mut [u8],
    x: &Tensor,
    y: &Tensor,
    rin: &Range<usize>,
    rout: &Range<usize>,
) -> Option<(SignInput<'b>, SignOutput<'b>)> {
    let (input, _, output) = split_bytes(arena, rin, rin, rout)?;
    let input = match x.is_bits() {
        true => SignInput::Bits(input),
        false => SignInput::Int8 {
            values: bytes_as_i8(input),
            zero_point: x.zero_point,
        },
    };
    let output = match y.is_bits() {
        true => SignOutput::Bits(output),
        false => SignOutput::Int8(bytes_as_i8_mut(output)),
    };
    Some((input, output))
}

/// An Add of the arena bytes `in1` and `in2` into `out`, which may be exactly either
/// input's bytes (the in-place Add, validated: FORMAT.md §4); over input 2 it runs as
/// over input 1 with the inputs' roles exchanged.
pub(super) fn add_ranges(
    arena: &mut [u8],
    params: &AddParams,
    in1: &Range<usize>,
    in2: &Range<usize>,
    out: &Range<usize>,
) -> Option<Result<(), Error>> {
    let (params, other) = match (out == in1, out == in2) {
        (true, _) => (*params, in2),
        (_, true) => (params.swapped(), in1),
        _ => {
            let (a, b, output) = split(arena, in1, in2, out)?;
            return Some(add(params, a, b, output));
        }
    };
    let (other, _, acc) = split(arena, other, other, out)?;
    Some(add_in_place(&params, acc, other))
}

/// The arena bytes of `t`.
#[cfg_attr(all(feature = "std", target_arch = "x86_64"), inline(always))]
pub(super) fn range(t: &Tensor) -> Option<Range<usize>> {
    let start = t.arena_offset as usize;
    Some(start..start.checked_add(t.bytes().ok()? as usize)?)
}

impl<'a, const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'a, MAX_OPS, MAX_TENSORS, OPS>
{
    pub(super) fn bytes(&self, r: DataRef) -> Option<&'a [u8]> {
        let start = r.offset as usize;
        self.data.get(start..start.checked_add(r.len as usize)?)
    }

    /// The rows of sparse weights whose encoding the op set links; `None` for every
    /// other encoding (constant-folded where `OPS` holds no sparse encoding).
    #[inline(always)]
    pub(super) fn sparse_rows(
        &self,
        w: Weights,
        bytes: &'a [u8],
        rows: usize,
    ) -> Option<SparseRows<'a>> {
        // The set's test first: a constant, so a set without sparse encodings drops
        // the sparse kernels (the encoding itself is only known at run time).
        if OPS & SPARSE_ENCODINGS == 0 || !w.encoding.is_in(OPS) {
            return None;
        }
        SparseRows::new(bytes, rows, w.encoding)
    }

    /// Whether `w` are dense weights and the op set links the dense kernels (a
    /// constant `false` where it does not, so they are not linked).
    #[inline(always)]
    pub(super) fn dense(&self, w: Weights) -> bool {
        Encoding::Dense.is_in(OPS) && w.encoding == Encoding::Dense
    }

    /// The rows of packed low-bit weights whose encoding the op set links; `None` for
    /// every other encoding (constant-folded where `OPS` holds no packed encoding).
    #[inline(always)]
    pub(super) fn packed_rows(
        &self,
        w: Weights,
        bytes: &'a [u8],
        rows: usize,
        row_len: usize,
    ) -> Option<PackedRows<'a>> {
        // As for sparse rows: a set without packed encodings drops the packed kernels.
        if OPS & PACKED_ENCODINGS == 0 || !w.encoding.is_in(OPS) {
            return None;
        }
        PackedRows::new(bytes, rows, row_len, w.encoding)
    }

    pub(super) fn stage(
        &self,
        bias: Option<DataRef>,
        requant: DataRef,
        y: &Tensor,
        channels: usize,
        act: (i32, i32),
    ) -> Option<OutputStage<'a>> {
        Some(OutputStage {
            bias: match bias {
                Some(b) => Some(self.bytes(b)?),
                None => None,
            },
            requant: self.bytes(requant)?,
            channels,
            output_offset: y.zero_point,
            act_min: act.0,
            act_max: act.1,
        })
    }

    /// A fully connected op's shape, parameters and arena ranges, as [`Self::dispatch`]
    /// resolves them, for the host's prepared ops.
    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    pub(super) fn fc_parts(&self, op: &Op) -> Option<crate::kernels::x86::FcParts<'a>> {
        let Op::FullyConnected(p) = op else {
            return None;
        };
        if !self.dense(p.weights) || !OpKind::FullyConnected.is_in(OPS) {
            return None;
        }
        let x = self.tensors.get(p.input as usize)?;
        let y = self.tensors.get(p.output as usize)?;
        let shape = fc_shape(x, y)?;
        let out_features = shape.out_features;
        Some(crate::kernels::x86::FcParts {
            shape,
            input_offset: x.zero_point.wrapping_neg(),
            stage: self.stage(p.bias, p.requant, y, out_features, (p.act_min, p.act_max))?,
            weights: bytes_as_i8(self.bytes(p.weights.data)?),
            input: range(x)?,
            output: range(y)?,
        })
    }

    /// Output rows of a conv or depthwise conv (`op`), with geometry `g` over the
    /// `input` rows it reads: the whole tensors, or a band of rows when streamed.
    // Not inlined: one copy of the kernels' dispatch for both callers.
    #[inline(never)]
    pub(super) fn conv_rows(
        &self,
        op: &Op,
        g: &ConvGeometry,
        input_zero_point: i32,
        y: &Tensor,
        input: &[i8],
        output: &mut [i8],
    ) -> Option<Result<(), Error>> {
        let has = |kind: OpKind| kind.is_in(OPS);
        let input_offset = input_zero_point.wrapping_neg();
        Some(match op {
            Op::Conv2d(p) if has(OpKind::Conv2d) => {
                let stage = self.stage(p.bias, p.requant, y, g.out_c, (p.act_min, p.act_max))?;
                let filter = self.bytes(p.filter.data)?;
                let row_len = g.kernel_h * g.kernel_w * g.in_c;
                if let Some(rows) = self.packed_rows(p.filter, filter, g.out_c, row_len) {
                    conv2d_packed(g, input_offset, &stage, &rows, input, output)
                } else if let Some(rows) = self.sparse_rows(p.filter, filter, g.out_c) {
                    conv2d_sparse(g, input_offset, &stage, &rows, input, output)
                } else if self.dense(p.filter) {
                    let filter = bytes_as_i8(filter);
                    conv2d_by::<OPS>(g, input_offset, &stage, filter, input, output)
                } else {
                    return None;
                }
            }
            Op::DepthwiseConv2d(p) if has(OpKind::DepthwiseConv2d) => {
                let stage = self.stage(p.bias, p.requant, y, g.out_c, (p.act_min, p.act_max))?;
                let filter = self.bytes(p.filter.data)?;
                let dm = p.depth_multiplier as usize;
                let taps = g.kernel_h * g.kernel_w;
                if let Some(rows) = self.packed_rows(p.filter, filter, taps, g.out_c) {
                    depthwise_conv2d_packed(g, dm, input_offset, &stage, &rows, input, output)
                } else if self.dense(p.filter) {
                    let filter = bytes_as_i8(filter);
                    depthwise_conv2d_by::<OPS>(g, dm, input_offset, &stage, filter, input, output)
                } else {
                    return None;
                }
            }
            _ => return None,
        })
    }

    /// An Add's parameters, with its tensors' zero points.
    pub(super) fn add_params(&self, p: &Add) -> Option<AddParams> {
        let a = self.tensors.get(p.input1 as usize)?;
        let b = self.tensors.get(p.input2 as usize)?;
        let y = self.tensors.get(p.output as usize)?;
        Some(AddParams {
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
        })
    }

    /// Run one op on the arena.
    pub(super) fn exec(&self, op: &Op, arena: &mut [u8]) -> Result<(), Error> {
        self.dispatch(op, arena).unwrap_or(Err(Error::KernelArgs))
    }

    fn dispatch(&self, op: &Op, arena: &mut [u8]) -> Option<Result<(), Error>> {
        let has = |kind: OpKind| kind.is_in(OPS);
        let (xi, _, yi) = op.operands_inlined();
        let x = self.tensors.get(xi as usize)?;
        let y = self.tensors.get(yi as usize)?;
        let (rin, rout) = (range(x)?, range(y)?);
        let input_offset = x.zero_point.wrapping_neg();
        Some(match op {
            Op::Conv2d(_) | Op::DepthwiseConv2d(_)
                if has(OpKind::Conv2d) || has(OpKind::DepthwiseConv2d) =>
            {
                if y.streamed_rows().is_some() {
                    // Runs row by row in the step of the op that ends its chain.
                    return Some(Ok(()));
                }
                if x.streamed_rows().is_some() {
                    return self.run_stream(op, arena);
                }
                let g = conv_geometry(op, x, y)?;
                let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                return self.conv_rows(op, &g, x.zero_point, y, input, output);
            }
            Op::FullyConnected(p) if has(OpKind::FullyConnected) => {
                let (batch, in_features) = rows(x)?;
                let (_, out_features) = rows(y)?;
                let shape = FcShape {
                    batch,
                    in_features,
                    out_features,
                };
                let stage =
                    self.stage(p.bias, p.requant, y, out_features, (p.act_min, p.act_max))?;
                let weights = self.bytes(p.weights.data)?;
                let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                let packed = self.packed_rows(p.weights, weights, out_features, in_features);
                if let Some(rows) = packed {
                    fully_connected_packed(&shape, input_offset, &stage, &rows, input, output)
                } else if let Some(rows) = self.sparse_rows(p.weights, weights, out_features) {
                    fully_connected_sparse(&shape, input_offset, &stage, &rows, input, output)
                } else if self.dense(p.weights) {
                    let weights = bytes_as_i8(weights);
                    fully_connected_by::<OPS>(&shape, input_offset, &stage, weights, input, output)
                } else {
                    return None;
                }
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p)
                if has(OpKind::MaxPool2d) || has(OpKind::AvgPool2d) =>
            {
                // Without average pools in the set this is a constant.
                let kind = match op {
                    Op::AvgPool2d(_) if has(OpKind::AvgPool2d) => PoolKind::Average,
                    _ => PoolKind::Max,
                };
                let g = geometry(
                    x,
                    y,
                    (p.filter_h, p.filter_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                // One buffer spanning both tensors, whether they overlap (in place,
                // validated: same offset, no top/left padding) or not.
                let lo = rin.start.min(rout.start);
                let buf = arena.get_mut(lo..rin.end.max(rout.end))?;
                // Packed bits come only from binary ops: without them in the set, this
                // branch and its kernel are not linked.
                let binary = has(OpKind::BinaryConv2d) || has(OpKind::BinaryFullyConnected);
                if binary && x.is_bits() {
                    return Some(max_pool_bits(&g, buf, rin.start - lo, rout.start - lo));
                }
                let buf = bytes_as_i8_mut(buf);
                let (act_min, act_max) = (p.act_min, p.act_max);
                pool2d_any(
                    kind,
                    &g,
                    act_min,
                    act_max,
                    buf,
                    rin.start - lo,
                    rout.start - lo,
                )
            }
            Op::GlobalAvgPool(p) if has(OpKind::GlobalAvgPool) => {
                let params = MeanParams {
                    input_offset,
                    multiplier: p.multiplier,
                    shift: p.shift,
                    output_offset: y.zero_point,
                    act_min: p.act_min,
                    act_max: p.act_max,
                };
                let dims = dims4(x)?;
                let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                global_avg_pool(dims, &params, input, output)
            }
            Op::Add(p) if has(OpKind::Add) => {
                let b = self.tensors.get(p.input2 as usize)?;
                if b.streamed_rows().is_some() || x.streamed_rows().is_some() {
                    return self.run_stream(op, arena);
                }
                let params = self.add_params(p)?;
                return add_ranges(arena, &params, &rin, &range(b)?, &rout);
            }
            // The output aliases the input's bytes: nothing to do.
            Op::Reshape(_) if has(OpKind::Reshape) => Ok(()),
            Op::Softmax(p) if has(OpKind::Softmax) => {
                let (_, depth) = rows(x)?;
                let params = SoftmaxParams {
                    input_multiplier: p.input_multiplier,
                    input_left_shift: p.input_left_shift,
                    diff_min: p.diff_min,
                };
                let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                softmax(depth, &params, input, output)
            }
            Op::BinaryConv2d(p) if has(OpKind::BinaryConv2d) => {
                let g = geometry(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let row_len = g.kernel_h * g.kernel_w * g.in_c;
                let filter = self.bytes(p.filter.data)?;
                let rows = PackedRows::new(filter, g.out_c, row_len, Encoding::Packed1)?;
                let thresholds = self.bytes(p.thresholds)?;
                let (input, output) = signs(arena, x, y, &rin, &rout)?;
                binary_conv2d(&g, thresholds, &rows, input, output)
            }
            Op::BinaryFullyConnected(p) if has(OpKind::BinaryFullyConnected) => {
                let (batch, in_features) = rows(x)?;
                let (_, out_features) = rows(y)?;
                let shape = FcShape {
                    batch,
                    in_features,
                    out_features,
                };
                let weights = self.bytes(p.weights.data)?;
                let packed =
                    PackedRows::new(weights, out_features, in_features, Encoding::Packed1)?;
                let thresholds = self.bytes(p.thresholds)?;
                let (input, output) = signs(arena, x, y, &rin, &rout)?;
                binary_fully_connected(&shape, thresholds, &packed, input, output)
            }
            Op::Conv2dMaxPool(p) if has(OpKind::Conv2dMaxPool) => {
                return self.fused_strips(p, x, y, arena);
            }
            Op::ArgMax(_) if has(OpKind::ArgMax) => {
                let (_, depth) = rows(x)?;
                let (input, _, output) = split(arena, &rin, &rin, &rout)?;
                argmax(depth, input, output)
            }
            _ => return None,
        })
    }
}
