//! Load-time validation: after `validate` accepts a parsed blob, every kernel call that
//! `Model::run` makes has consistent shapes, in-bounds data and arena ranges, disjoint
//! inputs and outputs, and parameters in range.
//!
//! An op's checks are only compiled in when its kind is in the model's op set (`OPS`):
//! every arm of [`Ctx::check`] is guarded by a constant, so the checks of the other
//! kinds, like their kernels in `exec`, are not linked.

use super::lifetimes::{self, Live};
use super::stream::{band_window, chain};
use super::OpKind;
use crate::error::{sat_u32, Error};
use crate::fixed_point::{multiplier_in_range, shift_in_range};
use crate::format::{
    packed, sparse, DataRef, Encoding, GraphHeader, Op, OpSet, Padding, Tensor, TensorKind,
    Weights, FUSED_WINDOW_CAP, REQUANT_ENTRY_LEN,
};
use crate::kernels::binary::BINARY_ROW_CAP;
use crate::kernels::low_bit::PACKED_DEPTHWISE_MAX_TAPS;
use crate::model::STREAM_CHAIN_CAP;

/// Check everything about a structurally sound blob: its graph header, tensor and
/// op tables and data section.
pub(crate) fn validate<const MAX_TENSORS: usize, const OPS: OpSet>(
    graph: &GraphHeader,
    tensors: &[Tensor],
    ops: &[Op],
    data: &[u8],
) -> Result<(), Error> {
    let count = sat_u32(tensors.len());
    for index in [graph.input, graph.output] {
        if usize::try_from(index).map_or(true, |i| i >= tensors.len()) {
            return Err(Error::TensorIndexOutOfRange { index, count });
        }
    }
    for (i, t) in tensors.iter().enumerate() {
        check_tensor(sat_u32(i), t, graph)?;
        if t.streamed_rows().is_some() {
            // Without convs in the op set nothing may write a band.
            if !lifetimes::streams::<OPS>() {
                return Err(Error::BadStream { tensor: sat_u32(i) });
            }
            check_stream(sat_u32(i), ops, tensors)?;
        }
    }
    for (i, op) in ops.iter().enumerate() {
        let ctx = Ctx {
            op: sat_u32(i),
            tensors,
            data,
        };
        ctx.check::<OPS>(op)?;
    }
    // `lifetimes::compute` sets every entry first; zeros are cheaper to lay out than
    // `Live::UNSET` (a `memclr` the kernels link anyway, not a `memset` of its own).
    let mut live = [Live {
        first: 0,
        last: 0,
        root: 0,
    }; MAX_TENSORS];
    let live = live.get_mut(..tensors.len()).ok_or(Error::TooManyTensors {
        count,
        capacity: sat_u32(MAX_TENSORS),
    })?;
    lifetimes::compute(ops, tensors, graph.input, graph.output, live)?;
    check_overlaps::<OPS>(ops, tensors, live)
}

fn check_tensor(i: u32, t: &Tensor, g: &GraphHeader) -> Result<(), Error> {
    t.elements()?;
    if t.streamed_rows().is_some() {
        t.bytes().map_err(|_| Error::BadStream { tensor: i })?;
    }
    if t.shape.contains(&0) {
        return Err(Error::ZeroSizedTensor { tensor: i });
    }
    if !(t.scale.is_finite() && t.scale > 0.0) {
        return Err(Error::BadScale { tensor: i });
    }
    if !(-128..=127).contains(&t.zero_point) {
        return Err(Error::BadZeroPoint { tensor: i });
    }
    let end = t.arena_offset.checked_add(t.bytes()?);
    if end.is_none_or(|e| e > g.arena_size) {
        return Err(Error::ArenaOffsetOutOfBounds { tensor: i });
    }
    let expected = if g.input == g.output {
        None
    } else if i == g.input {
        Some(TensorKind::Input)
    } else if i == g.output {
        Some(TensorKind::Output)
    } else {
        Some(TensorKind::Activation)
    };
    // An intermediate activation may be stored as bits, or streamed.
    let kind = match t.kind {
        TensorKind::PackedBits | TensorKind::Streamed { .. } => TensorKind::Activation,
        kind => kind,
    };
    if expected != Some(kind) {
        return Err(Error::BadTensorKind { tensor: i });
    }
    Ok(())
}

/// A streamed tensor `t` (FORMAT.md §4): written by a conv or depthwise conv and read
/// only by the next op, either a conv or depthwise conv whose window height fits in
/// the band, or an Add whose other input is stored whole; at most
/// [`STREAM_CHAIN_CAP`] in one chain. (Its shape and band height were checked with its
/// size.)
pub(crate) fn check_stream(t: u32, ops: &[Op], tensors: &[Tensor]) -> Result<(), Error> {
    let bad = Error::BadStream { tensor: t };
    let producer = ops.iter().position(|op| op.output() == t).ok_or(bad)?;
    let writes_band = matches!(
        ops.get(producer),
        Some(Op::Conv2d(_) | Op::DepthwiseConv2d(_))
    );
    let readers = ops.iter().filter(|op| op.inputs().any(|i| i == t)).count();
    let window = ops
        .get(producer + 1)
        .and_then(|reader| band_window(reader, t, tensors));
    let rows = tensors.get(t as usize).and_then(Tensor::streamed_rows);
    let fits = window
        .zip(rows)
        .is_some_and(|(window, rows)| rows >= window);
    // The chain's length: this band and the streamed tensors its producers read.
    let depth = chain(ops.iter().copied(), tensors, t)
        .take(STREAM_CHAIN_CAP + 1)
        .count();
    if !writes_band || readers != 1 || !fits || depth > STREAM_CHAIN_CAP {
        return Err(bad);
    }
    Ok(())
}

/// No two roots that are live at the same time may share arena bytes, except an
/// in-place pool's input and output ([`lifetimes::may_alias`]).
fn check_overlaps<const OPS: OpSet>(
    ops: &[Op],
    tensors: &[Tensor],
    live: &[Live],
) -> Result<(), Error> {
    let range = |t: &Tensor| {
        let start = u64::from(t.arena_offset);
        (start, start + u64::from(t.bytes().unwrap_or(0)))
    };
    let roots = tensors.iter().zip(live).enumerate().filter(|(i, (_, l))| {
        usize::try_from(l.root).ok() == Some(*i) && l.first != lifetimes::NONE
    });
    for (a, (ta, la)) in roots.clone() {
        let (a0, a1) = range(ta);
        for (b, (tb, lb)) in roots.clone().filter(|(b, _)| *b > a) {
            let (b0, b1) = range(tb);
            if la.overlaps(lb)
                && a0 < b1
                && b0 < a1
                && !lifetimes::may_alias::<OPS>(ops, tensors, live, sat_u32(a), sat_u32(b))
            {
                return Err(Error::ArenaOverlap {
                    a: sat_u32(a),
                    b: sat_u32(b),
                });
            }
        }
    }
    Ok(())
}

/// Checks of one op, with the context errors need.
struct Ctx<'t> {
    op: u32,
    tensors: &'t [Tensor],
    data: &'t [u8],
}

impl<'t> Ctx<'t> {
    fn t(&self, index: u32) -> Result<&'t Tensor, Error> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.tensors.get(i))
            .ok_or(Error::TensorIndexOutOfRange {
                index,
                count: sat_u32(self.tensors.len()),
            })
    }

    fn shape_err(&self) -> Error {
        Error::ShapeMismatch { op: self.op }
    }

    fn dims4(&self, t: &Tensor) -> Result<[u32; 4], Error> {
        <[u32; 4]>::try_from(t.shape.as_slice()).map_err(|_| self.shape_err())
    }

    /// `(leading dims, last dim)` of a tensor of rank ≥ 1.
    fn split_last<'s>(&self, t: &'s Tensor) -> Result<(&'s [u32], u32), Error> {
        match t.shape.split_last() {
            Some((&last, lead)) => Ok((lead, last)),
            None => Err(self.shape_err()),
        }
    }

    fn act(&self, min: i32, max: i32) -> Result<(), Error> {
        if -128 <= min && min <= max && max <= 127 {
            Ok(())
        } else {
            Err(Error::BadActivationRange { op: self.op })
        }
    }

    fn same_quant(&self, a: &Tensor, b: &Tensor) -> Result<(), Error> {
        if a.scale.to_bits() == b.scale.to_bits() && a.zero_point == b.zero_point {
            Ok(())
        } else {
            Err(Error::QuantMismatch { op: self.op })
        }
    }

    fn mult_shift(&self, multiplier: i32, shift: i32) -> Result<(), Error> {
        if !multiplier_in_range(multiplier) {
            return Err(Error::MultiplierOutOfRange {
                op: self.op,
                multiplier,
            });
        }
        if !shift_in_range(shift) {
            return Err(Error::ShiftOutOfRange { op: self.op, shift });
        }
        Ok(())
    }

    /// The referenced bytes, which must lie inside the data section and be `expected`
    /// bytes long (`expected` computed in `u64`, so it cannot overflow). Not inlined:
    /// one copy serves the weights, bias and requantization checks of three ops.
    #[inline(never)]
    fn data_ref(&self, r: DataRef, expected: u64) -> Result<&'t [u8], Error> {
        let start = usize::try_from(r.offset).ok();
        let end = start
            .zip(usize::try_from(r.len).ok())
            .and_then(|(s, l)| s.checked_add(l));
        let bytes = start
            .zip(end)
            .and_then(|(s, e)| self.data.get(s..e))
            .ok_or(Error::DataOutOfBounds { op: self.op })?;
        if u64::from(r.len) != expected {
            return Err(Error::DataLengthMismatch {
                op: self.op,
                expected: u32::try_from(expected).unwrap_or(u32::MAX),
                got: r.len,
            });
        }
        Ok(bytes)
    }

    /// A layer's weights: `rows` rows of `row_len`, dense or in a sparse or packed
    /// encoding of the op set `OPS` (see `format::sparse`, `format::packed`).
    fn weights<const OPS: OpSet>(&self, w: Weights, rows: u32, row_len: u64) -> Result<(), Error> {
        if !w.encoding.is_in(OPS) {
            return Err(Error::EncodingNotInSet {
                op: self.op,
                encoding: w.encoding as u32,
            });
        }
        if w.encoding == Encoding::Dense {
            return self.data_ref(w.data, u64::from(rows) * row_len).map(|_| ());
        }
        let bytes = self.data_ref(w.data, u64::from(w.data.len))?;
        match packed::bits_of(w.encoding) {
            Some(_) => packed::validate(self.op, bytes, rows, row_len, w.encoding),
            None => sparse::validate(self.op, bytes, rows, row_len, w.encoding),
        }
    }

    /// A binary op's weights: `Packed1` rows (whatever the op set's encodings: the
    /// binary kernels read them directly), at most [`BINARY_ROW_CAP`] long.
    fn binary_weights(&self, w: Weights, rows: u32, row_len: u64) -> Result<(), Error> {
        if w.encoding != Encoding::Packed1 {
            return Err(Error::EncodingNotSupported {
                op: self.op,
                encoding: w.encoding as u32,
            });
        }
        if row_len > BINARY_ROW_CAP as u64 {
            return Err(Error::BadParameter { op: self.op });
        }
        let bytes = self.data_ref(w.data, u64::from(w.data.len))?;
        packed::validate(self.op, bytes, rows, row_len, w.encoding)
    }

    /// Per-channel (or shared) requantization bytes: the lengths, then every pair.
    fn requant(&self, r: DataRef, channels: u32) -> Result<(), Error> {
        let entry = u64::from(REQUANT_ENTRY_LEN);
        let per_channel = entry * u64::from(channels);
        let (bytes, n) = if u64::from(r.len) == entry {
            (self.data_ref(r, entry)?, 1usize)
        } else {
            (self.data_ref(r, per_channel)?, channels as usize)
        };
        let (mults, shifts) = bytes
            .split_at_checked(n * 4)
            .ok_or(Error::DataOutOfBounds { op: self.op })?;
        for (m, &s) in mults.chunks_exact(4).zip(shifts) {
            let m = <[u8; 4]>::try_from(m).map_or(0, i32::from_le_bytes);
            self.mult_shift(m, i32::from(s as i8))?;
        }
        Ok(())
    }

    fn bias(&self, r: Option<DataRef>, channels: u32) -> Result<(), Error> {
        match r {
            Some(r) => self.data_ref(r, 4 * u64::from(channels)).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Expected output size along one axis.
    fn out_dim(
        &self,
        size: u32,
        kernel: u32,
        stride: u32,
        pad_a: u32,
        pad_b: u32,
    ) -> Result<u32, Error> {
        if stride == 0 {
            return Err(Error::ZeroStride { op: self.op });
        }
        if kernel == 0 {
            return Err(Error::BadParameter { op: self.op });
        }
        if pad_a >= kernel || pad_b >= kernel {
            return Err(Error::BadPadding { op: self.op });
        }
        let padded = size
            .checked_add(pad_a)
            .and_then(|v| v.checked_add(pad_b))
            .ok_or(Error::ShapeOverflow)?;
        let span = padded.checked_sub(kernel).ok_or(self.shape_err())?;
        Ok(span / stride + 1)
    }

    /// Window geometry shared by convs and pools: checks batch and spatial sizes,
    /// returns `(in_c, out_c)`.
    #[allow(clippy::too_many_arguments)]
    fn window_op(
        &self,
        x: &Tensor,
        y: &Tensor,
        kernel: (u32, u32),
        stride: (u32, u32),
        pad: &Padding,
    ) -> Result<(u32, u32), Error> {
        let [n, h, w, c] = self.dims4(x)?;
        let [n2, oh, ow, oc] = self.dims4(y)?;
        let eh = self.out_dim(h, kernel.0, stride.0, pad.top, pad.bottom)?;
        let ew = self.out_dim(w, kernel.1, stride.1, pad.left, pad.right)?;
        if n != n2 || oh != eh || ow != ew {
            return Err(self.shape_err());
        }
        Ok((c, oc))
    }

    /// Packed bits only between binary ops, through reshapes and max pools that keep
    /// them bits (a pool whose clamp keeps `±1`).
    fn bits_operands(
        &self,
        op: &Op,
        x: &Tensor,
        b: Option<&Tensor>,
        y: &Tensor,
    ) -> Result<(), Error> {
        let ok = match op {
            Op::BinaryConv2d(_) | Op::BinaryFullyConnected(_) => true,
            Op::Reshape(_) => x.is_bits() == y.is_bits(),
            Op::MaxPool2d(p) if x.is_bits() => y.is_bits() && p.act_min <= -1 && p.act_max >= 1,
            _ => !(x.is_bits() || b.is_some_and(Tensor::is_bits) || y.is_bits()),
        };
        if ok {
            Ok(())
        } else {
            Err(Error::PackedBitsOperand { op: self.op })
        }
    }

    /// Check one op of a model whose op set is `OPS`.
    fn check<const OPS: OpSet>(&self, op: &Op) -> Result<(), Error> {
        let has = |kind: OpKind| kind.is_in(OPS);
        let outside_set = Error::OpNotInSet {
            op: self.op,
            kind: op.kind(),
        };
        // An op outside the set is refused before its tensors are looked up: this
        // program cannot run it, whatever its fields.
        if !has(op.kind()) {
            return Err(outside_set);
        }
        // Every op's tensors are looked up here, in field order (`Add`: input1,
        // input2, output), before anything else is checked.
        let (xi, second, yi) = op.operands();
        let x = self.t(xi)?;
        let b = match second {
            Some(i) => Some(self.t(i)?),
            None => None,
        };
        let y = self.t(yi)?;
        self.bits_operands(op, x, b, y)?;
        match op {
            Op::Conv2d(p) if has(OpKind::Conv2d) => {
                let (c, oc) = self.window_op(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let taps = u64::from(p.kernel_h) * u64::from(p.kernel_w);
                self.weights::<OPS>(p.filter, oc, taps * u64::from(c))?;
                self.bias(p.bias, oc)?;
                self.requant(p.requant, oc)?;
                self.act(p.act_min, p.act_max)
            }
            Op::DepthwiseConv2d(p) if has(OpKind::DepthwiseConv2d) => {
                let (c, oc) = self.window_op(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                if p.depth_multiplier == 0 {
                    return Err(Error::BadParameter { op: self.op });
                }
                if u64::from(c) * u64::from(p.depth_multiplier) != u64::from(oc) {
                    return Err(self.shape_err());
                }
                // Dense or packed (one row per tap), never sparse; a packed filter's
                // taps must fit the kernel's unpacking buffer.
                let taps = u64::from(p.kernel_h) * u64::from(p.kernel_w);
                let packs = packed::bits_of(p.filter.encoding).is_some()
                    && taps <= PACKED_DEPTHWISE_MAX_TAPS as u64;
                if p.filter.encoding != Encoding::Dense && !packs {
                    return Err(Error::EncodingNotSupported {
                        op: self.op,
                        encoding: p.filter.encoding as u32,
                    });
                }
                let taps32 = u32::try_from(taps).map_err(|_| self.shape_err())?;
                self.weights::<OPS>(p.filter, taps32, u64::from(oc))?;
                self.bias(p.bias, oc)?;
                self.requant(p.requant, oc)?;
                self.act(p.act_min, p.act_max)
            }
            Op::FullyConnected(p) if has(OpKind::FullyConnected) => {
                let (lead_x, k) = self.split_last(x)?;
                let (lead_y, n) = self.split_last(y)?;
                if lead_x != lead_y {
                    return Err(self.shape_err());
                }
                self.weights::<OPS>(p.weights, n, u64::from(k))?;
                self.bias(p.bias, n)?;
                self.requant(p.requant, n)?;
                self.act(p.act_min, p.act_max)
            }
            Op::MaxPool2d(p) | Op::AvgPool2d(p)
                if has(OpKind::MaxPool2d) || has(OpKind::AvgPool2d) =>
            {
                let (c, oc) = self.window_op(
                    x,
                    y,
                    (p.filter_h, p.filter_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                if c != oc {
                    return Err(self.shape_err());
                }
                self.same_quant(x, y)?;
                self.act(p.act_min, p.act_max)
            }
            Op::GlobalAvgPool(p) if has(OpKind::GlobalAvgPool) => {
                let [n, _, _, c] = self.dims4(x)?;
                if self.dims4(y)? != [n, 1, 1, c] {
                    return Err(self.shape_err());
                }
                self.mult_shift(p.multiplier, p.shift)?;
                self.act(p.act_min, p.act_max)
            }
            Op::Add(p) if has(OpKind::Add) => {
                let a = x;
                let b = b.unwrap_or(x);
                if a.shape != y.shape || b.shape != y.shape {
                    return Err(self.shape_err());
                }
                self.mult_shift(p.input1_multiplier, p.input1_shift)?;
                self.mult_shift(p.input2_multiplier, p.input2_shift)?;
                self.mult_shift(p.output_multiplier, p.output_shift)?;
                self.act(p.act_min, p.act_max)
            }
            Op::Reshape(_) if has(OpKind::Reshape) => {
                if x.elements()? != y.elements()? {
                    return Err(self.shape_err());
                }
                self.same_quant(x, y)?;
                if x.arena_offset != y.arena_offset {
                    return Err(Error::BadAlias { op: self.op });
                }
                Ok(())
            }
            Op::Softmax(p) if has(OpKind::Softmax) => {
                self.split_last(x)?;
                if x.shape != y.shape {
                    return Err(self.shape_err());
                }
                if y.zero_point != -128 || y.scale != 1.0 / 256.0 {
                    return Err(Error::QuantMismatch { op: self.op });
                }
                if !multiplier_in_range(p.input_multiplier) {
                    return Err(Error::MultiplierOutOfRange {
                        op: self.op,
                        multiplier: p.input_multiplier,
                    });
                }
                if !(0..=30).contains(&p.input_left_shift) {
                    return Err(Error::ShiftOutOfRange {
                        op: self.op,
                        shift: p.input_left_shift,
                    });
                }
                if p.diff_min > 0 {
                    return Err(Error::BadParameter { op: self.op });
                }
                Ok(())
            }
            Op::BinaryConv2d(p) if has(OpKind::BinaryConv2d) => {
                let (c, oc) = self.window_op(
                    x,
                    y,
                    (p.kernel_h, p.kernel_w),
                    (p.stride_h, p.stride_w),
                    &p.padding,
                )?;
                let taps = u64::from(p.kernel_h) * u64::from(p.kernel_w);
                self.binary_weights(p.filter, oc, taps * u64::from(c))?;
                self.data_ref(p.thresholds, 4 * u64::from(oc)).map(|_| ())
            }
            Op::BinaryFullyConnected(p) if has(OpKind::BinaryFullyConnected) => {
                let (lead_x, k) = self.split_last(x)?;
                let (lead_y, n) = self.split_last(y)?;
                if lead_x != lead_y {
                    return Err(self.shape_err());
                }
                self.binary_weights(p.weights, n, u64::from(k))?;
                self.data_ref(p.thresholds, 4 * u64::from(n)).map(|_| ())
            }
            Op::Conv2dMaxPool(p) if has(OpKind::Conv2dMaxPool) => {
                let c = &p.conv;
                let [n, h, w, ic] = self.dims4(x)?;
                let [n2, ph, pw, oc] = self.dims4(y)?;
                let pad = &c.padding;
                let conv_h = self.out_dim(h, c.kernel_h, c.stride_h, pad.top, pad.bottom)?;
                let conv_w = self.out_dim(w, c.kernel_w, c.stride_w, pad.left, pad.right)?;
                let win = &p.pool;
                let pooled = |size, k: u8, s: u8, a: u8, b: u8| {
                    let [k, s, a, b] = [k, s, a, b].map(u32::from);
                    self.out_dim(size, k, s, a, b)
                };
                let eh = pooled(
                    conv_h,
                    win.filter_h,
                    win.stride_h,
                    win.pad_top,
                    win.pad_bottom,
                )?;
                let ew = pooled(
                    conv_w,
                    win.filter_w,
                    win.stride_w,
                    win.pad_left,
                    win.pad_right,
                )?;
                if n != n2 || ph != eh || pw != ew {
                    return Err(self.shape_err());
                }
                // Sparse and packed filters: the conv's windowed paths only (no
                // piecewise fallback in the fused kernels).
                let taps = u64::from(c.kernel_h) * u64::from(c.kernel_w);
                let window = taps * u64::from(ic);
                if c.filter.encoding != Encoding::Dense && window > u64::from(FUSED_WINDOW_CAP) {
                    return Err(Error::EncodingNotSupported {
                        op: self.op,
                        encoding: c.filter.encoding as u32,
                    });
                }
                self.weights::<OPS>(c.filter, oc, taps * u64::from(ic))?;
                self.bias(c.bias, oc)?;
                self.requant(c.requant, oc)?;
                self.act(c.act_min, c.act_max)
            }
            Op::ArgMax(_) if has(OpKind::ArgMax) => {
                let (lead_x, depth) = self.split_last(x)?;
                let (lead_y, one) = self.split_last(y)?;
                if lead_x != lead_y || one != 1 {
                    return Err(self.shape_err());
                }
                if depth > 128 {
                    return Err(Error::BadParameter { op: self.op });
                }
                if y.zero_point != 0 || y.scale != 1.0 {
                    return Err(Error::QuantMismatch { op: self.op });
                }
                Ok(())
            }
            // Refused above; the guards only keep other kinds' checks out of the build.
            _ => Err(outside_set),
        }
    }
}
