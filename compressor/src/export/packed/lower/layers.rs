//! One method per layer kind: what each emits into the runtime graph and the data
//! section (see the parent module for the rules).

use candle_core::Tensor;
use sprig_runtime::fixed_point::AddQuant;
use sprig_runtime::format::packed::bits_of as packed_bits;
use sprig_runtime::kernels::low_bit::PACKED_DEPTHWISE_MAX_TAPS;
use sprig_runtime::{
    Conv2d as RtConv2d, DepthwiseConv2d, Encoding, FullyConnected, Op, Padding, Pool2d, Reshape,
    Weights,
};

use super::signs::{sign_output_stage, Signs};
use super::{u32_of, Lowering, OutputStage, Value, PACKED_BITS};
use crate::config::QuantType;
use crate::export::host_f32;
use crate::export::layer_integers::{
    bias_integers, requant_pairs, LayerIntegers, Rounding, Stored,
};
use crate::nn::{Layer, OutputGrid};
use crate::{Error, Result};

impl Lowering<'_> {
    /// The layer's integer weights (PyTorch layout, row-major, as int8), per-channel
    /// scales and bit width: the quantizer's own
    /// ([`Graph::weight_integers`](crate::nn::Graph::weight_integers)), the integers its
    /// fake quantization computes with.
    fn weights(&self, i: usize) -> Result<(Vec<i8>, Vec<f32>, u8)> {
        let name = &self.graph.nodes()[i].name;
        let configured = self
            .graph
            .quant()
            .and_then(|q| q.layer(name))
            .filter(|l| l.config.quantizes(QuantType::Weight));
        if configured.is_none() {
            return Err(self.layer_fail(
                i,
                format!(
                    "its weights are not quantized; add \"weight\" to its quant_types (e.g. \
                     {{\"op_names\": [\"{name}\"], \"quant_types\": [\"weight\"], \
                     \"quant_bits\": {PACKED_BITS}}})"
                ),
            ));
        }
        let Some(q) = self.graph.weight_integers(name)? else {
            let quantizer = self.graph.quant().map_or("", |q| q.quantizer().name());
            return Err(self.layer_fail(
                i,
                format!("{quantizer} gives no integer form of its weights to pack"),
            ));
        };
        if !(1..=PACKED_BITS).contains(&q.bits) {
            return Err(self.layer_fail(
                i,
                format!(
                    "its weights are {}-bit integers; the packed format stores 1 to \
                     {PACKED_BITS}-bit weights",
                    q.bits
                ),
            ));
        }
        if q.scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(self.layer_fail(i, "a weight scale is not a positive number"));
        }
        let ints = q.to_i8().map_err(|e| self.layer_fail(i, e))?;
        Ok((ints, q.scales, q.bits))
    }

    /// The encodings besides dense the op's kernels run, of those `allowed`: the sparse
    /// ones only where the op has sparse kernels (the shared push then keeps the packed
    /// widths that hold the weights' bits).
    fn encodings(&self, sparse: bool) -> Vec<Encoding> {
        self.allowed
            .iter()
            .copied()
            .filter(|&e| sparse || packed_bits(e).is_some())
            .collect()
    }

    /// Pushes layer `i`'s integers ([`LayerIntegers::push`]), its weights in the
    /// smallest of dense and `encodings`, and counts their bytes.
    fn push_layer(
        &mut self,
        i: usize,
        layer: &LayerIntegers,
        encodings: &[Encoding],
    ) -> Result<Stored> {
        let stored = layer
            .push(&mut self.data, encodings)
            .map_err(|e| self.rt_fail(i, e))?;
        self.record_weights(i, &stored.weights);
        self.bias_bytes += stored.bias_bytes;
        self.requant_bytes += stored.requant_bytes;
        Ok(stored)
    }

    /// Counts layer `i`'s stored weights in the byte totals and the weighted layers.
    pub(super) fn record_weights(&mut self, i: usize, w: &Weights) {
        self.weight_bytes += w.data.len as usize;
        self.weighted_layers
            .push(self.graph.nodes()[i].name.clone());
    }

    /// The int32 biases and per-channel requantization pairs (single rounding) of an op
    /// with per-channel weight scales.
    fn output_stage(
        &self,
        i: usize,
        bias: Option<&Tensor>,
        in_scale: f32,
        weight_scales: &[f32],
        out_scale: f32,
    ) -> Result<OutputStage> {
        let bias = match bias {
            Some(b) => Some(
                bias_integers(&host_f32(b)?, in_scale, weight_scales)
                    .map_err(|e| self.layer_fail(i, e))?,
            ),
            None => None,
        };
        let pairs = requant_pairs(in_scale, weight_scales, out_scale, Rounding::Single);
        Ok((bias, pairs))
    }

    pub(super) fn rt_fail(&self, i: usize, e: sprig_runtime::Error) -> Error {
        self.layer_fail(i, format!("encoding failed: {e}"))
    }

    pub(super) fn conv(&mut self, i: usize, conv: &crate::nn::Conv2d) -> Result<Value> {
        let c = *conv.config();
        let x = self.input(i, 0)?;
        let [h, w, ch] = self.nhwc(i, &x)?;
        if ch != c.in_channels {
            return Err(self.layer_fail(
                i,
                format!("expects {} input channels, gets {ch}", c.in_channels),
            ));
        }
        let depthwise = c.is_depthwise();
        if c.groups != 1 && !depthwise {
            return Err(self.layer_fail(
                i,
                format!(
                    "grouped convolution (groups {}) is not supported; only groups 1 and \
                     depthwise (groups = in = out channels)",
                    c.groups
                ),
            ));
        }
        if c.stride == 0
            || c.padding >= c.kernel_size
            || h + 2 * c.padding < c.kernel_size
            || w + 2 * c.padding < c.kernel_size
        {
            return Err(self.layer_fail(
                i,
                format!(
                    "kernel {k}, stride {s}, padding {p} do not fit a {h}×{w} input (padding \
                     must be below the kernel size)",
                    k = c.kernel_size,
                    s = c.stride,
                    p = c.padding
                ),
            ));
        }
        let (grid, act) = self.output_grid(i)?;
        let (mut ints, scales, bits) = self.weights(i)?;
        let sign = self.sign_output(i);
        let (binary, thresholds) =
            self.sign_lowering(i, conv.bias(), &x, (bits, !depthwise), &scales, &mut ints)?;
        let (oc, k) = (c.out_channels, c.kernel_size);
        let filter = if depthwise {
            // [OC, 1, KH, KW] → [KH, KW, OC].
            let mut f = vec![0i8; ints.len()];
            for o in 0..oc {
                for t in 0..k * k {
                    f[t * oc + o] = ints[o * k * k + t];
                }
            }
            f
        } else {
            // [OC, IC, KH, KW] → [OC, KH, KW, IC].
            let ic = c.in_channels;
            let mut f = vec![0i8; ints.len()];
            for o in 0..oc {
                for i_c in 0..ic {
                    for t in 0..k * k {
                        f[(o * k * k + t) * ic + i_c] = ints[(o * ic + i_c) * k * k + t];
                    }
                }
            }
            f
        };
        let out_shape = vec![1, c.output_size(h), c.output_size(w), oc];
        let (kk, s, p) = (u32_of(k), u32_of(c.stride), u32_of(c.padding));
        let padding = Padding {
            top: p,
            left: p,
            bottom: p,
            right: p,
        };
        if let (true, Some(t)) = (binary, &thresholds) {
            return self.binary_conv(i, &x, &filter, t, out_shape, grid, (kk, s, padding));
        }
        // Depthwise: one row per tap, never sparse (no sparse depthwise kernel), and
        // packed only while a channel's taps fit the kernel's unpacking buffer.
        let (rows, encodings) = if depthwise {
            let packs = k * k <= PACKED_DEPTHWISE_MAX_TAPS;
            let encodings = if packs {
                self.encodings(false)
            } else {
                Vec::new()
            };
            (k * k, encodings)
        } else {
            (oc, self.encodings(true))
        };
        let (bias, requant) = match &thresholds {
            Some(t) => sign_output_stage(t),
            None => self.output_stage(i, conv.bias(), x.grid.scale, &scales, grid.scale)?,
        };
        let layer = LayerIntegers {
            weights: filter,
            rows,
            bits,
            bias,
            requant,
        };
        let Stored {
            weights: filter,
            bias,
            requant,
            ..
        } = self.push_layer(i, &layer, &encodings)?;
        let (act_min, act_max) = self.clamps_or_sign(act, grid, sign);
        let mut y = self.new_tensor(Some(i), out_shape, grid, None)?;
        if sign {
            y.signs = Signs::ZeroIsPlus;
        }
        self.ops.push(if depthwise {
            Op::DepthwiseConv2d(DepthwiseConv2d {
                input: x.index,
                output: y.index,
                filter,
                bias,
                requant,
                kernel_h: kk,
                kernel_w: kk,
                stride_h: s,
                stride_w: s,
                padding,
                depth_multiplier: 1,
                act_min,
                act_max,
            })
        } else {
            Op::Conv2d(RtConv2d {
                input: x.index,
                output: y.index,
                filter,
                bias,
                requant,
                kernel_h: kk,
                kernel_w: kk,
                stride_h: s,
                stride_w: s,
                padding,
                act_min,
                act_max,
            })
        });
        Ok(y)
    }

    pub(super) fn linear(&mut self, i: usize, lin: &crate::nn::Linear) -> Result<Value> {
        let x = self.input(i, 0)?;
        let (n_in, n_out) = (lin.in_features(), lin.out_features());
        if x.shape != [1, n_in] {
            return Err(self.layer_fail(
                i,
                format!("expects a [1, {n_in}] input, gets {:?}", x.shape),
            ));
        }
        let (grid, act) = self.output_grid(i)?;
        let (mut ints, scales, bits) = self.weights(i)?;
        let sign = self.sign_output(i);
        let (binary, thresholds) =
            self.sign_lowering(i, lin.bias(), &x, (bits, true), &scales, &mut ints)?;
        let weights = match x.flattened_from {
            // PyTorch's column c·H·W + y·W + x is the runtime's (y·W + x)·C + c.
            Some([c, h, w]) if h * w > 1 => {
                let mut p = vec![0i8; ints.len()];
                for o in 0..n_out {
                    let (src, dst) = (&ints[o * n_in..][..n_in], &mut p[o * n_in..][..n_in]);
                    for ch in 0..c {
                        for pix in 0..h * w {
                            dst[pix * c + ch] = src[ch * h * w + pix];
                        }
                    }
                }
                p
            }
            _ => ints,
        };
        if let (true, Some(t)) = (binary, &thresholds) {
            return self.binary_linear(i, &x, &weights, t, grid);
        }
        let (bias, requant) = match &thresholds {
            Some(t) => sign_output_stage(t),
            None => self.output_stage(i, lin.bias(), x.grid.scale, &scales, grid.scale)?,
        };
        let layer = LayerIntegers {
            weights,
            rows: n_out,
            bits,
            bias,
            requant,
        };
        let encodings = self.encodings(true);
        let Stored {
            weights,
            bias,
            requant,
            ..
        } = self.push_layer(i, &layer, &encodings)?;
        let (act_min, act_max) = self.clamps_or_sign(act, grid, sign);
        let mut y = self.new_tensor(Some(i), vec![1, n_out], grid, None)?;
        if sign {
            y.signs = Signs::ZeroIsPlus;
        }
        self.ops.push(Op::FullyConnected(FullyConnected {
            input: x.index,
            output: y.index,
            weights,
            bias,
            requant,
            act_min,
            act_max,
        }));
        Ok(y)
    }

    /// Max or average pooling (no padding); input and output share the grid.
    pub(super) fn pool(
        &mut self,
        i: usize,
        average: bool,
        kernel: [usize; 2],
        stride: [usize; 2],
    ) -> Result<Value> {
        let x = self.input(i, 0)?;
        if average {
            self.refuse_zero_is_plus(i, &x)?;
        }
        let [h, w, c] = self.nhwc(i, &x)?;
        if kernel[0] > h || kernel[1] > w || kernel.contains(&0) || stride.contains(&0) {
            return Err(self.layer_fail(
                i,
                format!("a {kernel:?} window with stride {stride:?} does not fit a {h}×{w} input"),
            ));
        }
        let (grid, act) = self.output_grid(i)?;
        if grid != x.grid {
            return Err(self.layer_fail(
                i,
                "its output grid differs from its input's; the int8 pools keep the input's \
                 grid (do not quantize a pool's output separately)",
            ));
        }
        let (act_min, act_max) = self.clamps(act, grid);
        let out_shape = vec![
            1,
            (h - kernel[0]) / stride[0] + 1,
            (w - kernel[1]) / stride[1] + 1,
            c,
        ];
        let mut y = self.new_tensor(Some(i), out_shape, grid, None)?;
        if !average {
            y.signs = x.signs; // the max of signs is a sign
        }
        let p = Pool2d {
            input: x.index,
            output: y.index,
            filter_h: u32_of(kernel[0]),
            filter_w: u32_of(kernel[1]),
            stride_h: u32_of(stride[0]),
            stride_w: u32_of(stride[1]),
            padding: Padding::default(),
            act_min,
            act_max,
        };
        self.ops.push(if average {
            Op::AvgPool2d(p)
        } else {
            Op::MaxPool2d(p)
        });
        Ok(y)
    }

    pub(super) fn flatten(&mut self, i: usize) -> Result<Value> {
        let x = self.input(i, 0)?;
        let (grid, act) = self.output_grid(i)?;
        if grid != x.grid || act.is_some() {
            return Err(self.layer_fail(
                i,
                "a flatten must keep its input's grid and cannot carry an activation",
            ));
        }
        if x.shape.len() == 2 {
            return Ok(x); // already [1, N]: nothing to do
        }
        let [h, w, c] = self.nhwc(i, &x)?;
        if h * w > 1 {
            let consumers = self.graph.consumers(i);
            let bad = consumers
                .iter()
                .find(|&&j| !matches!(self.graph.nodes()[j].layer, Layer::Linear(_)));
            if let Some(&j) = bad {
                return Err(self.layer_fail(
                    i,
                    format!(
                        "flattens a {h}×{w}×{c} tensor for `{}` ({}); only a Linear can read \
                         it, because the runtime flattens NHWC (h, w, c) where PyTorch \
                         flattens (c, h, w) and only a Linear's weight columns can be permuted \
                         to match",
                        self.graph.nodes()[j].name,
                        self.graph.nodes()[j].layer.op_type()
                    ),
                ));
            }
            if consumers.is_empty() {
                return Err(self.layer_fail(
                    i,
                    "a flattened multi-pixel tensor cannot be the graph output (its element \
                     order would differ from PyTorch's)",
                ));
            }
        }
        let mut y = self.new_tensor(Some(i), vec![1, h * w * c], grid, Some([c, h, w]))?;
        y.signs = x.signs;
        self.ops.push(Op::Reshape(Reshape {
            input: x.index,
            output: y.index,
        }));
        Ok(y)
    }

    pub(super) fn add(&mut self, i: usize) -> Result<Value> {
        let a = self.input(i, 0)?;
        let b = self.input(i, 1)?;
        self.refuse_zero_is_plus(i, &a)?;
        self.refuse_zero_is_plus(i, &b)?;
        if a.shape != b.shape {
            return Err(self.layer_fail(i, format!("adds shapes {:?} and {:?}", a.shape, b.shape)));
        }
        if a.flattened_from.is_some() || b.flattened_from.is_some() {
            return Err(self.layer_fail(i, "adds flattened tensors, which is not supported"));
        }
        let (grid, act) = self.output_grid(i)?;
        let (act_min, act_max) = self.clamps(act, grid);
        let q = AddQuant::from_scales(
            f64::from(a.grid.scale),
            f64::from(b.grid.scale),
            f64::from(grid.scale),
        );
        let y = self.new_tensor(Some(i), a.shape.clone(), grid, None)?;
        self.ops.push(Op::Add(sprig_runtime::Add {
            input1: a.index,
            input2: b.index,
            output: y.index,
            input1_multiplier: q.input1_multiplier,
            input1_shift: q.input1_shift,
            input2_multiplier: q.input2_multiplier,
            input2_shift: q.input2_shift,
            output_multiplier: q.output_multiplier,
            output_shift: q.output_shift,
            act_min,
            act_max,
        }));
        Ok(y)
    }

    /// A ReLU / ReLU6 not fused into its producer: on its input's grid, it is a clamp,
    /// which a 1×1 max pool with `act_min`/`act_max` applies exactly.
    pub(super) fn unfused_activation(&mut self, i: usize) -> Result<Value> {
        let x = self.input(i, 0)?;
        self.refuse_zero_is_plus(i, &x)?;
        let Some(grid) = self.grids.outputs[i] else {
            return Err(self.missing_grid(i, i));
        };
        if self.plan[i].output != OutputGrid::Inherited || grid != x.grid {
            return Err(self.layer_fail(
                i,
                "an activation with its own output grid is only supported fused after a \
                 Conv2d, Linear or Add; quantize the output of the layer before it instead",
            ));
        }
        if x.shape.len() != 4 {
            return Err(self.layer_fail(
                i,
                format!(
                    "an unfused activation on a {:?} tensor is not supported (only on \
                     [1, H, W, C])",
                    x.shape
                ),
            ));
        }
        let (act_min, act_max) = self.clamps(Some(i), grid);
        let y = self.new_tensor(Some(i), x.shape.clone(), grid, None)?;
        self.ops.push(Op::MaxPool2d(Pool2d {
            input: x.index,
            output: y.index,
            filter_h: 1,
            filter_w: 1,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::default(),
            act_min,
            act_max,
        }));
        Ok(y)
    }
}
