//! Mapping a parsed TFLite subgraph onto the sprig graph: one sprig op per TFLite op
//! (plus a no-copy Reshape where TFLite's FULLY_CONNECTED flattens its input), weights
//! copied in the runtime's layouts, requantization computed as TFLite Micro's kernels
//! compute it (double rounding), padding as TFLite computes SAME/VALID. Weights, biases
//! and requantization are stored by the lowering the packed exporter uses too
//! ([`crate::export::layer_integers`]).

use std::collections::HashMap;

use sprig_runtime::fixed_point::{AddQuant, SoftmaxQuant};
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::{
    Add, Conv2d, DepthwiseConv2d, FullyConnected, Model, Op, Padding, Pool2d, Reshape, Softmax,
    Tensor, TensorKind,
};

use super::error::ImportError;
use super::tflite::{self, op, tensor_type, Options, SubGraph, TfModel, TfOperator, TfTensor};
use super::{Imported, ImportedOp};
use crate::export::layer_integers::{compact, requant_pairs, LayerIntegers, Rounding, Stored};

type Result<T> = std::result::Result<T, ImportError>;

/// TFLite `Padding`: SAME.
const PAD_SAME: u8 = 0;
/// TFLite `Padding`: VALID.
const PAD_VALID: u8 = 1;

/// A window op's kernel `(h, w)`, stride `(h, w)` and explicit padding.
type Window = ((u32, u32), (u32, u32), Padding);

struct Lower<'m> {
    model: &'m TfModel<'m>,
    sg: &'m SubGraph,
    map: HashMap<usize, u32>,
    tensors: Vec<Tensor>,
    ops: Vec<Op>,
    data: BlobBuilder,
    summary: Vec<ImportedOp>,
    /// Current operator: index and TFLite name.
    index: usize,
    name: String,
}

/// Quantized weights of one op: raw int8 data in TFLite's layout and one scale per
/// output channel.
struct Weights<'m> {
    data: &'m [u8],
    shape: Vec<usize>,
    scales: Vec<f32>,
}

/// A one-input-channel depthwise filter `[1, KH, KW, oc]` (tap-major) as a conv
/// filter `[oc, KH, KW, 1]` (channel-major).
fn transpose_one_channel_filter(data: &[u8], oc: usize) -> Vec<u8> {
    let taps = data.len() / oc.max(1);
    (0..oc)
        .flat_map(|c| (0..taps).map(move |t| data[t * oc + c]))
        .collect()
}

/// Output size and `(before, after)` padding along one axis, as TFLite's
/// `ComputePaddingHeightWidth` computes them (dilation 1).
fn tflite_padding(size: u32, kernel: u32, stride: u32, padding: u8) -> Option<(u32, u32, u32)> {
    let (size, kernel, stride) = (i64::from(size), i64::from(kernel), i64::from(stride));
    if stride < 1 || kernel < 1 {
        return None;
    }
    let out = match padding {
        PAD_SAME => (size + stride - 1) / stride,
        PAD_VALID => (size + stride - kernel) / stride,
        _ => return None,
    };
    if out < 1 {
        return None;
    }
    let total = ((out - 1) * stride + kernel - size).max(0);
    let before = total / 2;
    let after = total - before;
    Some((
        u32::try_from(out).ok()?,
        u32::try_from(before).ok()?,
        u32::try_from(after).ok()?,
    ))
}

/// TFLite's `CalculateActivationRangeQuantized` for int8.
fn activation_range(
    act: u8,
    scale: f32,
    zero_point: i32,
) -> std::result::Result<(i32, i32), String> {
    let q = |f: f32| i64::from(zero_point) + (f / scale).round() as i64;
    let clamp = |v: i64| v.clamp(-128, 127) as i32;
    let (lo, hi) = match act {
        0 => (-128, 127),
        1 => (clamp(q(0.0).max(-128)), 127),
        2 => (clamp(q(-1.0).max(-128)), clamp(q(1.0).min(127))),
        3 => (clamp(q(0.0).max(-128)), clamp(q(6.0).min(127))),
        4 => return Err("fused activation TANH is not supported".into()),
        5 => return Err("fused activation SIGN_BIT is not supported".into()),
        other => return Err(format!("unknown fused activation {other}")),
    };
    if lo > hi {
        return Err(format!(
            "fused activation range is empty for output scale {scale} and zero point {zero_point}"
        ));
    }
    Ok((lo, hi))
}

impl<'m> Lower<'m> {
    fn err(&self, reason: impl Into<String>) -> ImportError {
        ImportError::Op {
            index: self.index,
            op: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// The TFLite tensor at `index` (from an operator's or the subgraph's list).
    fn tf(&self, place: &str, index: i32) -> Result<(usize, &'m TfTensor)> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.sg.tensors.get(i).map(|t| (i, t)))
            .ok_or_else(|| ImportError::TensorIndexOutOfRange {
                place: place.to_string(),
                index: i64::from(index),
                count: self.sg.tensors.len(),
            })
    }

    /// Operator input `k` (`None` when absent or −1).
    fn input(&self, o: &TfOperator, k: usize) -> Result<Option<(usize, &'m TfTensor)>> {
        match o.inputs.get(k) {
            None | Some(-1) => Ok(None),
            Some(&i) => {
                let place = format!("operator {} ({}) input {k}", self.index, self.name);
                self.tf(&place, i).map(Some)
            }
        }
    }

    fn required_input(&self, o: &TfOperator, k: usize) -> Result<(usize, &'m TfTensor)> {
        self.input(o, k)?
            .ok_or_else(|| self.err(format!("input {k} is missing")))
    }

    fn output(&self, o: &TfOperator) -> Result<(usize, &'m TfTensor)> {
        if o.outputs.len() != 1 {
            return Err(self.err(format!("has {} outputs, expected 1", o.outputs.len())));
        }
        let place = format!("operator {} ({}) output 0", self.index, self.name);
        self.tf(&place, o.outputs[0])
    }

    fn buffer(&self, ti: usize, t: &TfTensor) -> Result<&'m [u8]> {
        self.model
            .buffers
            .get(t.buffer as usize)
            .copied()
            .ok_or_else(|| ImportError::BufferIndexOutOfRange {
                tensor: ti,
                name: t.name.clone(),
                buffer: t.buffer,
                count: self.model.buffers.len(),
            })
    }

    /// Scale and zero point of an int8 activation tensor.
    fn act_quant(&self, ti: usize, t: &TfTensor) -> Result<(f32, i32)> {
        if t.dtype != tensor_type::INT8 {
            return Err(ImportError::NotInt8 {
                tensor: ti,
                name: t.name.clone(),
                dtype: tflite::type_name(t.dtype),
            });
        }
        let missing = || ImportError::MissingQuantization {
            tensor: ti,
            name: t.name.clone(),
            dtype: "int8",
        };
        let q = t.quantization.as_ref().ok_or_else(missing)?;
        let (&scale, &zp) = q
            .scale
            .first()
            .zip(q.zero_point.first())
            .ok_or_else(missing)?;
        if q.scale.len() != 1 || q.zero_point.len() != 1 {
            return Err(self.err(format!(
                "activation tensor {ti} (`{}`) is quantized per channel; sprig activations are per tensor",
                t.name
            )));
        }
        if !(scale.is_finite() && scale > 0.0) {
            return Err(self.err(format!("tensor {ti} (`{}`) has scale {scale}", t.name)));
        }
        let zp = i32::try_from(zp)
            .ok()
            .filter(|z| (-128..=127).contains(z))
            .ok_or_else(|| self.err(format!("tensor {ti} (`{}`) has zero point {zp}", t.name)))?;
        Ok((scale, zp))
    }

    /// The sprig tensor for TFLite activation tensor `ti`, created on first use.
    fn act(&mut self, ti: usize, t: &TfTensor) -> Result<u32> {
        if let Some(&s) = self.map.get(&ti) {
            return Ok(s);
        }
        let (scale, zero_point) = self.act_quant(ti, t)?;
        if !self.buffer(ti, t)?.is_empty() {
            return Err(self.err(format!(
                "tensor {ti} (`{}`) is a constant used as an activation; sprig has no constant activations",
                t.name
            )));
        }
        let mut dims: Vec<u32> = Vec::new();
        for &d in &t.shape {
            let d = u32::try_from(d)
                .ok()
                .filter(|&d| d > 0)
                .ok_or_else(|| self.err(format!("tensor {ti} (`{}`) has dimension {d}", t.name)))?;
            dims.push(d);
        }
        if dims.is_empty() {
            dims.push(1);
        }
        let shape = dims.as_slice().try_into().map_err(|_| {
            self.err(format!(
                "tensor {ti} (`{}`) has rank {}; sprig tensors have rank ≤ 4",
                t.name,
                dims.len()
            ))
        })?;
        let s = self.push_tensor(Tensor {
            shape,
            scale,
            zero_point,
            arena_offset: 0,
            kind: TensorKind::Activation,
        })?;
        self.map.insert(ti, s);
        Ok(s)
    }

    fn push_tensor(&mut self, t: Tensor) -> Result<u32> {
        let s = u32::try_from(self.tensors.len())
            .map_err(|_| ImportError::Runtime("too many tensors".into()))?;
        self.tensors.push(t);
        Ok(s)
    }

    /// The output tensor of the current op: must not have been written before.
    fn new_output(&mut self, ti: usize, t: &TfTensor) -> Result<u32> {
        if self.map.contains_key(&ti) {
            return Err(self.err(format!(
                "output tensor {ti} (`{}`) is already written by an earlier operator or is the graph input",
                t.name
            )));
        }
        self.act(ti, t)
    }

    fn shape_of(&self, s: u32) -> Vec<u32> {
        self.tensors
            .get(s as usize)
            .map(|t| t.shape.to_vec())
            .unwrap_or_default()
    }

    fn quant_of(&self, s: u32) -> (f32, i32) {
        self.tensors
            .get(s as usize)
            .map_or((1.0, 0), |t| (t.scale, t.zero_point))
    }

    fn dims4(&self, s: u32, what: &str) -> Result<[u32; 4]> {
        let shape = self.shape_of(s);
        <[u32; 4]>::try_from(shape.as_slice()).map_err(|_| {
            self.err(format!(
                "{what} has shape {shape:?}, expected rank 4 (NHWC)"
            ))
        })
    }

    /// Constant int8 weights with symmetric scales along `axis` (the output-channel axis
    /// of the op's layout), `channels` of them.
    fn weights(
        &self,
        ti: usize,
        t: &'m TfTensor,
        axis: usize,
        channels: usize,
    ) -> Result<Weights<'m>> {
        if t.dtype != tensor_type::INT8 {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) is {}; sprig needs int8 weights",
                t.name,
                tflite::type_name(t.dtype)
            )));
        }
        let q = t
            .quantization
            .as_ref()
            .filter(|q| !q.scale.is_empty())
            .ok_or_else(|| ImportError::MissingQuantization {
                tensor: ti,
                name: t.name.clone(),
                dtype: "int8",
            })?;
        let shape: Vec<usize> = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
            .collect::<Option<_>>()
            .ok_or_else(|| self.err(format!("weights tensor {ti} has shape {:?}", t.shape)))?;
        let data = self.buffer(ti, t)?;
        let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if data.is_empty() {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) is not constant",
                t.name
            )));
        }
        if elements != Some(data.len()) {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) has shape {shape:?} but {} bytes of data",
                t.name,
                data.len()
            )));
        }
        if q.zero_point.iter().any(|&z| z != 0) {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) has non-zero zero points; sprig weights are symmetric",
                t.name
            )));
        }
        // Checked before any per-channel vector is sized by `channels`, so a corrupt
        // shape cannot ask for a huge allocation (the data length bounds it).
        if shape.get(axis) != Some(&channels) {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) has shape {shape:?}, expected {channels} output channels in dimension {axis}",
                t.name
            )));
        }
        let qdim = usize::try_from(q.quantized_dimension).ok();
        let scales = if q.scale.len() == 1 {
            vec![q.scale[0]; channels]
        } else if q.scale.len() == channels && qdim == Some(axis) {
            q.scale.clone()
        } else if q.scale.iter().all(|&s| s.to_bits() == q.scale[0].to_bits())
            && qdim.and_then(|d| shape.get(d)) == Some(&q.scale.len())
        {
            vec![q.scale[0]; channels]
        } else {
            return Err(self.err(format!(
                "weights tensor {ti} (`{}`) has {} scales along dimension {}; sprig requantizes \
                 per output channel (dimension {axis}, {channels} channels)",
                t.name,
                q.scale.len(),
                q.quantized_dimension
            )));
        };
        if scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(self.err(format!(
                "weights tensor {ti} has a scale that is not positive"
            )));
        }
        Ok(Weights {
            data,
            shape,
            scales,
        })
    }

    /// int32 bias of `channels` values, if the op has one.
    fn bias(&self, o: &TfOperator, k: usize, channels: usize) -> Result<Option<Vec<i32>>> {
        let Some((ti, t)) = self.input(o, k)? else {
            return Ok(None);
        };
        if t.dtype != tensor_type::INT32 {
            return Err(self.err(format!(
                "bias tensor {ti} (`{}`) is {}; sprig needs int32 biases",
                t.name,
                tflite::type_name(t.dtype)
            )));
        }
        let data = self.buffer(ti, t)?;
        if data.len() != 4 * channels {
            return Err(self.err(format!(
                "bias tensor {ti} (`{}`) has {} bytes, expected {} ({channels} int32)",
                t.name,
                data.len(),
                4 * channels
            )));
        }
        let values = data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Some(values))
    }

    /// The int8 weights `w` of an op (`rows` rows), its bias and its requantization from
    /// tensor `x`'s scale to tensor `y`'s (TFLite's double rounding, one shared pair
    /// where all channels agree), pushed by the lowering shared with the packed exporter.
    /// Imported weights stay dense, as TensorFlow Lite stores them.
    fn push_layer(
        &mut self,
        w: &Weights<'_>,
        rows: usize,
        bias: Option<Vec<i32>>,
        (x, y): (u32, u32),
    ) -> Result<Stored> {
        let (x_scale, _) = self.quant_of(x);
        let (y_scale, _) = self.quant_of(y);
        let layer = LayerIntegers {
            weights: w.data.iter().map(|&b| b as i8).collect(),
            rows,
            bits: 8,
            bias,
            requant: compact(requant_pairs(x_scale, &w.scales, y_scale, Rounding::Double)),
        };
        layer
            .push(&mut self.data, &[])
            .map_err(|e| ImportError::Runtime(e.to_string()))
    }

    fn act_range(&self, act: u8, y: u32) -> Result<(i32, i32)> {
        let (scale, zp) = self.quant_of(y);
        activation_range(act, scale, zp).map_err(|r| self.err(r))
    }

    /// Padding and checked output size for a window op.
    fn window(
        &self,
        x: [u32; 4],
        y: [u32; 4],
        kernel: (i32, i32),
        stride: (i32, i32),
        padding: u8,
    ) -> Result<Window> {
        let pos = |v: i32, what: &str| {
            u32::try_from(v)
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| self.err(format!("{what} is {v}")))
        };
        let (kh, kw) = (
            pos(kernel.0, "kernel height")?,
            pos(kernel.1, "kernel width")?,
        );
        let (sh, sw) = (
            pos(stride.0, "stride height")?,
            pos(stride.1, "stride width")?,
        );
        if padding != PAD_SAME && padding != PAD_VALID {
            return Err(self.err(format!("unknown padding {padding}")));
        }
        let geometry = |size, k, s| {
            tflite_padding(size, k, s, padding).ok_or_else(|| {
                self.err(format!(
                    "kernel {k} with stride {s} does not fit size {size}"
                ))
            })
        };
        let (oh, top, bottom) = geometry(x[1], kh, sh)?;
        let (ow, left, right) = geometry(x[2], kw, sw)?;
        if y[0] != x[0] || y[1] != oh || y[2] != ow {
            return Err(self.err(format!(
                "output shape {y:?} does not match input {x:?} with kernel {kh}×{kw}, stride {sh}×{sw}, {} padding (expected {}×{})",
                if padding == PAD_SAME { "SAME" } else { "VALID" },
                oh,
                ow
            )));
        }
        if top >= kh || bottom >= kh || left >= kw || right >= kw {
            return Err(self.err("padding is not smaller than the kernel"));
        }
        Ok((
            (kh, kw),
            (sh, sw),
            Padding {
                top,
                left,
                bottom,
                right,
            },
        ))
    }

    fn record(&mut self, sprig: &'static str, y: u32, macs: u64, parameters: u64) {
        self.summary.push(ImportedOp {
            index: self.index,
            tflite: self.name.clone(),
            sprig,
            output_shape: self.shape_of(y),
            macs,
            parameters,
        });
    }

    fn lower_op(&mut self, o: &'m TfOperator) -> Result<()> {
        let code = self.model.opcodes.get(o.opcode_index as usize).ok_or(
            ImportError::OpcodeIndexOutOfRange {
                op: self.index,
                code: o.opcode_index,
                count: self.model.opcodes.len(),
            },
        )?;
        self.name = if code.0 == 32 && !code.1.is_empty() {
            format!("CUSTOM `{}`", code.1)
        } else {
            tflite::op_name(code.0)
        };
        match code.0 {
            op::CONV_2D => self.conv(o, false),
            op::DEPTHWISE_CONV_2D => self.conv(o, true),
            op::FULLY_CONNECTED => self.fully_connected(o),
            op::AVERAGE_POOL_2D => self.pool(o, false),
            op::MAX_POOL_2D => self.pool(o, true),
            op::ADD => self.add(o),
            op::RESHAPE | op::SQUEEZE => self.reshape(o),
            op::SOFTMAX => self.softmax(o),
            _ => Err(self.err("operator not supported by sprig")),
        }
    }

    fn conv(&mut self, o: &'m TfOperator, depthwise: bool) -> Result<()> {
        let (xi, xt) = self.required_input(o, 0)?;
        let (wi, wt) = self.required_input(o, 1)?;
        let (yi, yt) = self.output(o)?;
        let x = self.act(xi, xt)?;
        let y = self.new_output(yi, yt)?;
        let xd = self.dims4(x, "input")?;
        let yd = self.dims4(y, "output")?;
        let (padding, stride, act, dilation, dm_opt) = match o.options {
            Options::Conv2d {
                padding,
                stride_w,
                stride_h,
                activation,
                dilation_w,
                dilation_h,
            } if !depthwise => (
                padding,
                (stride_h, stride_w),
                activation,
                (dilation_h, dilation_w),
                0,
            ),
            Options::DepthwiseConv2d {
                padding,
                stride_w,
                stride_h,
                depth_multiplier,
                activation,
                dilation_w,
                dilation_h,
            } if depthwise => (
                padding,
                (stride_h, stride_w),
                activation,
                (dilation_h, dilation_w),
                depth_multiplier,
            ),
            ref other => return Err(self.err(format!("unexpected builtin options {other:?}"))),
        };
        if dilation != (1, 1) {
            return Err(self.err(format!(
                "dilation {}×{} is not supported (only 1)",
                dilation.0, dilation.1
            )));
        }
        let oc = yd[3] as usize;
        let axis = if depthwise { 3 } else { 0 };
        let w = self.weights(wi, wt, axis, oc)?;
        let [n, _, _, c] = xd;
        let (kh, kw, expected) = if depthwise {
            match w.shape.as_slice() {
                &[1, kh, kw, wc] => (kh, kw, wc == oc),
                _ => (0, 0, false),
            }
        } else {
            match w.shape.as_slice() {
                &[wo, kh, kw, wc] => (kh, kw, wo == oc && wc == c as usize),
                _ => (0, 0, false),
            }
        };
        if !expected {
            return Err(self.err(format!(
                "filter shape {:?} does not fit input {xd:?} and output {yd:?}{}",
                w.shape,
                if depthwise {
                    ""
                } else {
                    " (grouped convolution is not supported)"
                }
            )));
        }
        let (kh, kw) = (
            i32::try_from(kh).map_err(|_| self.err("kernel too large"))?,
            i32::try_from(kw).map_err(|_| self.err("kernel too large"))?,
        );
        let ((kh, kw), (sh, sw), pad) = self.window(xd, yd, (kh, kw), stride, padding)?;
        let (act_min, act_max) = self.act_range(act, y)?;
        let bias = self.bias(o, 2, oc)?;
        if depthwise {
            if !oc.is_multiple_of(c as usize) {
                return Err(self.err(format!(
                    "{oc} output channels is not a multiple of {c} input channels"
                )));
            }
            let dm = oc / c as usize;
            if dm_opt != 0 && i64::from(dm_opt) != dm as i64 {
                return Err(self.err(format!(
                    "depth_multiplier option {dm_opt} disagrees with the shapes ({c} → {oc} channels)"
                )));
            }
        }
        // A depthwise conv of one input channel (person_detect's first layer, 3×3 ×8)
        // is a conv of `oc` filters: lowered as one, its filter transposed from
        // `[1, KH, KW, oc]` to `[oc, KH, KW, 1]`, it takes the conv kernels (the
        // depthwise ones serve a depth multiplier above 1 with a plain loop). The same
        // products and requantization per channel: bit-identical.
        let transposed;
        let (w, depthwise) = if depthwise && c == 1 {
            transposed = transpose_one_channel_filter(w.data, oc);
            let shape = vec![oc, kh as usize, kw as usize, 1];
            let scales = w.scales;
            (
                Weights {
                    data: &transposed,
                    shape,
                    scales,
                },
                false,
            )
        } else {
            (w, depthwise)
        };
        // A depthwise filter's rows are its taps, a conv's its output channels.
        let rows = if depthwise { w.data.len() / oc } else { oc };
        let Stored {
            weights: filter,
            bias,
            requant,
            ..
        } = self.push_layer(&w, rows, bias, (x, y))?;
        let taps = u64::from(kh) * u64::from(kw);
        let outputs = u64::from(n) * u64::from(yd[1]) * u64::from(yd[2]) * oc as u64;
        let params = w.data.len() as u64 + bias.map_or(0, |_| oc as u64);
        if depthwise {
            let dm = u32::try_from(oc / c as usize)
                .map_err(|_| self.err("depth multiplier too large"))?;
            self.ops.push(Op::DepthwiseConv2d(DepthwiseConv2d {
                input: x,
                output: y,
                filter,
                bias,
                requant,
                kernel_h: kh,
                kernel_w: kw,
                stride_h: sh,
                stride_w: sw,
                padding: pad,
                depth_multiplier: dm,
                act_min,
                act_max,
            }));
            self.record("DepthwiseConv2d", y, outputs * taps, params);
        } else {
            self.ops.push(Op::Conv2d(Conv2d {
                input: x,
                output: y,
                filter,
                bias,
                requant,
                kernel_h: kh,
                kernel_w: kw,
                stride_h: sh,
                stride_w: sw,
                padding: pad,
                act_min,
                act_max,
            }));
            self.record("Conv2d", y, outputs * taps * u64::from(c), params);
        }
        Ok(())
    }

    fn fully_connected(&mut self, o: &'m TfOperator) -> Result<()> {
        let (xi, xt) = self.required_input(o, 0)?;
        let (wi, wt) = self.required_input(o, 1)?;
        let (yi, yt) = self.output(o)?;
        let Options::FullyConnected {
            activation,
            weights_format,
            ..
        } = o.options
        else {
            return Err(self.err(format!("unexpected builtin options {:?}", o.options)));
        };
        if weights_format != 0 {
            return Err(self.err(format!(
                "weights format {weights_format} is not supported (only DEFAULT)"
            )));
        }
        let x = self.act(xi, xt)?;
        let y = self.new_output(yi, yt)?;
        let y_shape = self.shape_of(y);
        let out = *y_shape.last().unwrap_or(&0) as usize;
        let w = self.weights(wi, wt, 0, out)?;
        let &[wo, k] = w.shape.as_slice() else {
            return Err(self.err(format!("weights shape {:?} is not [OUT, IN]", w.shape)));
        };
        if wo != out {
            return Err(self.err(format!(
                "weights shape {:?} does not fit output {y_shape:?}",
                w.shape
            )));
        }
        let x_shape = self.shape_of(x);
        let x_elems: u64 = x_shape.iter().map(|&d| u64::from(d)).product();
        let y_lead: Vec<u32> = y_shape[..y_shape.len() - 1].to_vec();
        let batch: u64 = y_lead.iter().map(|&d| u64::from(d)).product();
        if x_elems != batch * k as u64 {
            return Err(self.err(format!(
                "input {x_shape:?} does not flatten to {batch} rows of {k} for output {y_shape:?}"
            )));
        }
        let k32 = u32::try_from(k).map_err(|_| self.err("input too large"))?;
        // TFLite flattens the input to [batch, IN]; sprig wants equal leading dims, so
        // view the input through a no-copy Reshape when they differ.
        let x_ok = x_shape
            .split_last()
            .is_some_and(|(&l, lead)| l == k32 && lead == y_lead.as_slice());
        let x_in = if x_ok {
            x
        } else {
            let mut dims = y_lead.clone();
            dims.push(k32);
            let shape = dims
                .as_slice()
                .try_into()
                .map_err(|_| self.err(format!("output rank {} is above 4", y_shape.len())))?;
            let (scale, zero_point) = self.quant_of(x);
            let r = self.push_tensor(Tensor {
                shape,
                scale,
                zero_point,
                arena_offset: 0,
                kind: TensorKind::Activation,
            })?;
            self.ops.push(Op::Reshape(Reshape {
                input: x,
                output: r,
            }));
            self.record("Reshape", r, 0, 0);
            r
        };
        let (act_min, act_max) = self.act_range(activation, y)?;
        let bias = self.bias(o, 2, out)?;
        // As conv: the input·filter product in double (`requant_pairs`). (A float
        // product, as older TFLite's GetQuantizedConvolutionMultipler took it, differs
        // from the tflite-micro package on ad01_int8.)
        let Stored {
            weights,
            bias,
            requant,
            ..
        } = self.push_layer(&w, out, bias, (x, y))?;
        self.ops.push(Op::FullyConnected(FullyConnected {
            input: x_in,
            output: y,
            weights,
            bias,
            requant,
            act_min,
            act_max,
        }));
        let params = w.data.len() as u64 + bias.map_or(0, |_| out as u64);
        self.record("FullyConnected", y, batch * (out * k) as u64, params);
        Ok(())
    }

    fn pool(&mut self, o: &'m TfOperator, max: bool) -> Result<()> {
        let (xi, xt) = self.required_input(o, 0)?;
        let (yi, yt) = self.output(o)?;
        let Options::Pool2d {
            padding,
            stride_w,
            stride_h,
            filter_w,
            filter_h,
            activation,
        } = o.options
        else {
            return Err(self.err(format!("unexpected builtin options {:?}", o.options)));
        };
        let x = self.act(xi, xt)?;
        let y = self.new_output(yi, yt)?;
        let xd = self.dims4(x, "input")?;
        let yd = self.dims4(y, "output")?;
        if xd[3] != yd[3] {
            return Err(self.err(format!("input {xd:?} and output {yd:?} differ in channels")));
        }
        let xq = self.quant_of(x);
        let yq = self.quant_of(y);
        if xq.0.to_bits() != yq.0.to_bits() || xq.1 != yq.1 {
            return Err(self.err(format!(
                "input quantization {xq:?} and output quantization {yq:?} differ; sprig pools do not rescale"
            )));
        }
        let ((fh, fw), (sh, sw), pad) =
            self.window(xd, yd, (filter_h, filter_w), (stride_h, stride_w), padding)?;
        let (act_min, act_max) = self.act_range(activation, y)?;
        let p = Pool2d {
            input: x,
            output: y,
            filter_h: fh,
            filter_w: fw,
            stride_h: sh,
            stride_w: sw,
            padding: pad,
            act_min,
            act_max,
        };
        if max {
            self.ops.push(Op::MaxPool2d(p));
            self.record("MaxPool2d", y, 0, 0);
        } else {
            self.ops.push(Op::AvgPool2d(p));
            self.record("AvgPool2d", y, 0, 0);
        }
        Ok(())
    }

    fn add(&mut self, o: &'m TfOperator) -> Result<()> {
        let (ai, at) = self.required_input(o, 0)?;
        let (bi, bt) = self.required_input(o, 1)?;
        let (yi, yt) = self.output(o)?;
        let Options::Add { activation } = o.options else {
            return Err(self.err(format!("unexpected builtin options {:?}", o.options)));
        };
        let a = self.act(ai, at)?;
        let b = self.act(bi, bt)?;
        let y = self.new_output(yi, yt)?;
        let (sa, sb, sy) = (self.shape_of(a), self.shape_of(b), self.shape_of(y));
        if sa != sy || sb != sy {
            return Err(self.err(format!(
                "shapes {sa:?} + {sb:?} → {sy:?}: broadcasting is not supported"
            )));
        }
        let q = AddQuant::from_scales(
            f64::from(self.quant_of(a).0),
            f64::from(self.quant_of(b).0),
            f64::from(self.quant_of(y).0),
        );
        let (act_min, act_max) = self.act_range(activation, y)?;
        self.ops.push(Op::Add(Add {
            input1: a,
            input2: b,
            output: y,
            input1_multiplier: q.input1_multiplier,
            input1_shift: q.input1_shift,
            input2_multiplier: q.input2_multiplier,
            input2_shift: q.input2_shift,
            output_multiplier: q.output_multiplier,
            output_shift: q.output_shift,
            act_min,
            act_max,
        }));
        self.record("Add", y, 0, 0);
        Ok(())
    }

    fn reshape(&mut self, o: &'m TfOperator) -> Result<()> {
        let (xi, xt) = self.required_input(o, 0)?;
        let (yi, yt) = self.output(o)?;
        let x = self.act(xi, xt)?;
        let y = self.new_output(yi, yt)?;
        let count = |s: Vec<u32>| s.iter().map(|&d| u64::from(d)).product::<u64>();
        if count(self.shape_of(x)) != count(self.shape_of(y)) {
            return Err(self.err(format!(
                "input {:?} and output {:?} differ in element count",
                self.shape_of(x),
                self.shape_of(y)
            )));
        }
        let (xq, yq) = (self.quant_of(x), self.quant_of(y));
        if xq.0.to_bits() != yq.0.to_bits() || xq.1 != yq.1 {
            return Err(self.err(format!(
                "input quantization {xq:?} and output quantization {yq:?} differ; a sprig Reshape does not rescale"
            )));
        }
        self.ops.push(Op::Reshape(Reshape {
            input: x,
            output: y,
        }));
        self.record("Reshape", y, 0, 0);
        Ok(())
    }

    fn softmax(&mut self, o: &'m TfOperator) -> Result<()> {
        let (xi, xt) = self.required_input(o, 0)?;
        let (yi, yt) = self.output(o)?;
        let Options::Softmax { beta } = o.options else {
            return Err(self.err(format!("unexpected builtin options {:?}", o.options)));
        };
        let x = self.act(xi, xt)?;
        let y = self.new_output(yi, yt)?;
        if self.shape_of(x) != self.shape_of(y) {
            return Err(self.err("input and output shapes differ"));
        }
        let yq = self.quant_of(y);
        if yq != (1.0 / 256.0, -128) {
            return Err(self.err(format!(
                "output quantization {yq:?}; sprig's softmax writes scale 1/256, zero point −128"
            )));
        }
        let q = SoftmaxQuant::from_scale(f64::from(beta), f64::from(self.quant_of(x).0))
            .ok_or_else(|| {
                self.err(format!(
                    "beta {beta} with the input scale gives no usable multiplier"
                ))
            })?;
        self.ops.push(Op::Softmax(Softmax {
            input: x,
            output: y,
            input_multiplier: q.input_multiplier,
            input_left_shift: q.input_left_shift,
            diff_min: q.diff_min,
        }));
        self.record("Softmax", y, 0, 0);
        Ok(())
    }
}

/// Lower a parsed model (see the module docs).
pub(super) fn lower(model: &TfModel<'_>, bytes: usize, name: &str) -> Result<Imported> {
    let sg = model.subgraphs.first().ok_or_else(|| ImportError::Graph {
        reason: "the model has no subgraph".into(),
    })?;
    // Every buffer reference is checked up front, whether or not an op reads it.
    for (ti, t) in sg.tensors.iter().enumerate() {
        if t.buffer as usize >= model.buffers.len() {
            return Err(ImportError::BufferIndexOutOfRange {
                tensor: ti,
                name: t.name.clone(),
                buffer: t.buffer,
                count: model.buffers.len(),
            });
        }
    }
    if sg.inputs.len() != 1 || sg.outputs.len() != 1 {
        return Err(ImportError::Graph {
            reason: format!(
                "subgraph 0 has {} inputs and {} outputs; sprig models have one of each",
                sg.inputs.len(),
                sg.outputs.len()
            ),
        });
    }
    let mut l = Lower {
        model,
        sg,
        map: HashMap::new(),
        tensors: Vec::new(),
        ops: Vec::new(),
        data: BlobBuilder::new(),
        summary: Vec::new(),
        index: 0,
        name: "graph input".into(),
    };
    let (ii, it) = l.tf("the subgraph's input", sg.inputs[0])?;
    let (oi, _) = l.tf("the subgraph's output", sg.outputs[0])?;
    let input = l.act(ii, it)?;
    for (index, o) in sg.operators.iter().enumerate() {
        l.index = index;
        l.lower_op(o)?;
    }
    let output = *l.map.get(&oi).ok_or_else(|| ImportError::Graph {
        reason: format!("the subgraph's output tensor {oi} is not written by any operator"),
    })?;
    if output == input {
        return Err(ImportError::Graph {
            reason: "the graph output is its input".into(),
        });
    }
    for (i, t) in l.tensors.iter_mut().enumerate() {
        t.kind = match i as u32 {
            i if i == input => TensorKind::Input,
            i if i == output => TensorKind::Output,
            _ => TensorKind::Activation,
        };
    }
    let rt = |e: sprig_runtime::Error| ImportError::Runtime(e.to_string());
    let mut graph = GraphDef {
        tensors: l.tensors,
        ops: l.ops,
        input,
        output,
        arena_size: 0,
    };
    // Conv → max pool as one op (format 2.2): bit-exact, and the conv's output takes no arena.
    graph.fuse_conv_max_pools();
    // Conv outputs that only the next conv (or Add) reads, as bands of rows where that
    // lowers the arena (format 2.5): bit-exact, as the fused pools.
    graph.stream_rows();
    let arena = graph.plan_arena().map_err(rt)?;
    let blob = l.data.finish(&graph).map_err(rt)?;
    let m = Model::from_bytes(&blob).map_err(rt)?;
    let (input_quant, output_quant) = (m.input_quant(), m.output_quant());
    let (input_shape, output_shape) = (m.input_shape().to_vec(), m.output_shape().to_vec());
    let macs = l.summary.iter().map(|o| o.macs).sum();
    let parameters = l.summary.iter().map(|o| o.parameters).sum();
    Ok(Imported {
        name: name.to_string(),
        blob,
        tflite_bytes: bytes,
        arena_bytes: arena as usize,
        tflite_ops: sg.operators.len(),
        ops: l.summary,
        macs,
        parameters,
        input_shape,
        output_shape,
        input: input_quant,
        output: output_quant,
    })
}

#[cfg(test)]
mod tests {
    use super::transpose_one_channel_filter;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use sprig_runtime::kernels::{reference, ConvGeometry, OutputStage};

    /// A depthwise conv of one input channel (×8, 3×3, stride 2, padded) equals the
    /// conv of its transposed filter, output for output, through TFLite's reference
    /// kernels: the importer's rewrite changes no result.
    #[test]
    fn one_channel_depthwise_is_a_conv_of_its_transposed_filter() {
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let oc = 8;
        let g = ConvGeometry {
            batch: 2,
            in_h: 9,
            in_w: 8,
            in_c: 1,
            out_h: 5,
            out_w: 4,
            out_c: oc,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            pad_top: 1,
            pad_left: 0,
        };
        let (in_len, out_len) = g.lens().unwrap();
        let input: Vec<i8> = (0..in_len).map(|_| rng.random()).collect();
        let depthwise: Vec<u8> = (0..9 * oc).map(|_| rng.random()).collect();
        let conv: Vec<i8> = transpose_one_channel_filter(&depthwise, oc)
            .into_iter()
            .map(|b| b as i8)
            .collect();
        let depthwise: Vec<i8> = depthwise.into_iter().map(|b| b as i8).collect();
        let bias: Vec<u8> = (0..oc)
            .flat_map(|_| rng.random_range(-2000i32..=2000).to_le_bytes())
            .collect();
        let mut requant: Vec<u8> = (0..oc)
            .flat_map(|_| rng.random_range(0x4000_0000i32..0x5000_0000).to_le_bytes())
            .collect();
        requant.extend((0..oc).map(|_| rng.random_range(249u8..=252)));
        let stage = OutputStage {
            bias: Some(&bias),
            requant: &requant,
            channels: oc,
            output_offset: -7,
            act_min: -128,
            act_max: 127,
        };
        let (mut want, mut got) = (vec![0i8; out_len], vec![1i8; out_len]);
        reference::depthwise_conv2d(&g, oc, 5, &stage, &depthwise, &input, &mut want);
        reference::conv2d(&g, 5, &stage, &conv, &input, &mut got);
        assert_eq!(got, want);
        assert!(want.iter().any(|&v| v != want[0]), "degenerate outputs");
    }
}
