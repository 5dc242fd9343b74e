//! Lowering a [`Graph`] to ONNX nodes and initializers, with QuantizeLinear /
//! DequantizeLinear pairs exactly where [`Graph::forward_t`] fake-quantizes.

use std::collections::HashSet;
use std::path::Path;

use candle_core::Tensor;

use crate::config::QuantType;
use crate::export::host_f32;
use crate::nn::{
    bypassed_activation, quant_plan, AvgPool2d, Graph, InputGrid, Layer, MaxPool2d, OutputGrid,
    QuantPlan, Source, BATCH_NORM_EPS,
};
use crate::onnx_proto::{AttributeProto, NodeProto, TensorProto};
use crate::quant::{LayerQuant, QParams};
use crate::{Error, Result};

/// Name of the graph input and output values.
pub const INPUT: &str = "input";
pub const OUTPUT: &str = "output";

/// The lowered graph: nodes in execution order, their constants, and the per-sample
/// shape of the output (the batch dimension excluded).
pub struct Lowered {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    pub output_shape: Vec<usize>,
}

struct Lowering<'a> {
    graph: &'a Graph,
    path: &'a Path,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    /// Every value and initializer name handed out so far (one namespace in ONNX).
    used: HashSet<String>,
    /// `(min, max)` initializers of ReLU6's Clip, shared by every ReLU6.
    relu6_bounds: Option<(String, String)>,
    /// Where fake quantization happens (shared with the candle forward).
    plan: QuantPlan,
    /// The grid of each lowered value, and of the graph input.
    grids: Vec<Option<QParams>>,
    input_grid: Option<QParams>,
}

/// Lowers `graph` for samples of `sample_shape` (`[C, H, W]`).
pub fn lower(graph: &Graph, path: &Path, sample_shape: [usize; 3]) -> Result<Lowered> {
    let mut l = Lowering {
        graph,
        path,
        nodes: Vec::new(),
        initializers: Vec::new(),
        used: [INPUT, OUTPUT].into_iter().map(String::from).collect(),
        relu6_bounds: None,
        plan: quant_plan(graph),
        grids: Vec::new(),
        input_grid: None,
    };
    if graph.nodes().is_empty() {
        return Err(l.fail("the graph has no layers"));
    }
    // A declared input grid: the input is rounded onto it first, as the forward does.
    let input = match l.plan.input {
        InputGrid::Declared(q) => {
            l.input_grid = Some(q);
            l.qdq(INPUT.to_string(), q, INPUT)?
        }
        InputGrid::Float | InputGrid::Hook(_) => INPUT.to_string(),
    };
    let mut values: Vec<String> = Vec::with_capacity(graph.nodes().len());
    let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(graph.nodes().len());
    for i in 0..graph.nodes().len() {
        let (inputs, in_shapes): (Vec<String>, Vec<Vec<usize>>) = graph.nodes()[i]
            .inputs
            .iter()
            .map(|s| match s {
                Source::Input => (input.clone(), sample_shape.to_vec()),
                Source::Node(j) => (values[*j].clone(), shapes[*j].clone()),
            })
            .unzip();
        let count = match &graph.nodes()[i].layer {
            Layer::AvgPool2d(AvgPool2d(p)) => p.kernel_size * p.kernel_size,
            Layer::GlobalAvgPool(_) => in_shapes[0].iter().skip(1).product(),
            _ => 1,
        };
        let (y, shape) = l.lower_node(i, inputs, in_shapes)?;
        let (y, grid) = l.quantize_output(i, y, count)?;
        values.push(y);
        l.grids.push(grid);
        shapes.push(shape);
    }
    // The last node's value is the graph output: rename it where it is produced.
    let last = values.pop().unwrap_or_default();
    for node in l.nodes.iter_mut().rev() {
        if let Some(o) = node.output.iter_mut().find(|o| **o == last) {
            *o = OUTPUT.to_string();
            node.name = OUTPUT.to_string();
            break;
        }
    }
    Ok(Lowered {
        nodes: l.nodes,
        initializers: l.initializers,
        output_shape: shapes.pop().unwrap_or_default(),
    })
}

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

impl<'a> Lowering<'a> {
    fn fail(&self, message: impl Into<String>) -> Error {
        crate::export::export_error(self.path, message)
    }

    fn layer_fail(&self, i: usize, message: impl std::fmt::Display) -> Error {
        crate::export::layer_error(self.path, self.graph, i, message)
    }

    /// A name not used yet: `base`, else `base_1`, `base_2`, ...
    fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 0;
        while self.used.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.used.insert(name.clone());
        name
    }

    /// Appends a node with one output named after `base`; returns the output's name.
    fn op(
        &mut self,
        op_type: &str,
        base: &str,
        inputs: Vec<String>,
        attribute: Vec<AttributeProto>,
    ) -> String {
        let out = self.fresh(base);
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: out.clone(),
            op_type: op_type.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    fn init_f32(&mut self, base: &str, dims: &[usize], values: &[f32]) -> String {
        let name = self.fresh(base);
        self.initializers
            .push(TensorProto::float(&name, dims, values));
        name
    }

    fn init_i8(&mut self, base: &str, dims: &[usize], values: &[i8]) -> String {
        let name = self.fresh(base);
        self.initializers
            .push(TensorProto::int8(&name, dims, values));
        name
    }

    fn init_int4(&mut self, base: &str, dims: &[usize], values: &[i8]) -> String {
        let name = self.fresh(base);
        self.initializers
            .push(TensorProto::int4(&name, dims, values));
        name
    }

    fn init_tensor(&mut self, base: &str, t: &Tensor) -> Result<String> {
        let values = host_f32(t)?;
        Ok(self.init_f32(base, t.dims(), &values))
    }

    fn layer_quant(&self, i: usize) -> Option<&'a LayerQuant> {
        self.graph.quant()?.layer(&self.graph.nodes()[i].name)
    }

    /// QuantizeLinear + DequantizeLinear of `x` with per-tensor `q` (int8 storage). For
    /// fewer than 8 bits a Clip to the grid's float range follows, since QuantizeLinear
    /// saturates to [-128, 127] only.
    fn qdq(&mut self, x: String, q: QParams, base: &str) -> Result<String> {
        if q.qmin < i32::from(i8::MIN) || q.qmax > i32::from(i8::MAX) || q.qmin > q.qmax {
            return Err(self.fail(format!(
                "{base}: integer range [{}, {}] does not fit int8",
                q.qmin, q.qmax
            )));
        }
        let valid =
            q.scale.is_finite() && q.scale > 0.0 && (q.qmin..=q.qmax).contains(&q.zero_point);
        if !valid {
            return Err(self.fail(format!(
                "{base}: invalid scale {} / zero point {}",
                q.scale, q.zero_point
            )));
        }
        let scale = self.init_f32(&format!("{base}_scale"), &[], &[q.scale]);
        let zero_point = self.init_i8(&format!("{base}_zero_point"), &[], &[q.zero_point as i8]);
        let quantized = self.op(
            "QuantizeLinear",
            &format!("{base}_quantized"),
            vec![x, scale.clone(), zero_point.clone()],
            vec![],
        );
        let dq = self.op(
            "DequantizeLinear",
            &format!("{base}_dequantized"),
            vec![quantized, scale, zero_point],
            vec![],
        );
        if q.qmin == i32::from(i8::MIN) && q.qmax == i32::from(i8::MAX) {
            return Ok(dq);
        }
        // Same f32 arithmetic as DequantizeLinear, so the bounds are grid points exactly.
        let lo = (q.qmin - q.zero_point) as f32 * q.scale;
        let hi = (q.qmax - q.zero_point) as f32 * q.scale;
        let lo = self.init_f32(&format!("{base}_clip_min"), &[], &[lo]);
        let hi = self.init_f32(&format!("{base}_clip_max"), &[], &[hi]);
        Ok(self.op("Clip", &format!("{base}_clipped"), vec![dq, lo, hi], vec![]))
    }

    /// The sign activation of BNN's binary outputs, `+1` where `x ≥ 0` and `−1` below
    /// (`sign(0) = +1`, which ONNX's `Sign` does not give): `Where(x ≥ 0, 1, −1)`.
    fn sign(&mut self, x: String, base: &str) -> String {
        let zero = self.init_f32(&format!("{base}_zero"), &[], &[0.0]);
        let plus = self.init_f32(&format!("{base}_plus_one"), &[], &[1.0]);
        let minus = self.init_f32(&format!("{base}_minus_one"), &[], &[-1.0]);
        let ge = self.op(
            "GreaterOrEqual",
            &format!("{base}_nonnegative"),
            vec![x, zero],
            vec![],
        );
        self.op(
            "Where",
            &format!("{base}_sign"),
            vec![ge, plus, minus],
            vec![],
        )
    }

    /// The ONNX form of [`crate::quant::round_average_onto_grid`]: the average of
    /// `count` grid values back onto grid `q`, as the int8 average pool rounds it (integer
    /// sum, ties away from zero), which QuantizeLinear (ties to even) cannot express.
    fn round_average_onto_grid(
        &mut self,
        x: String,
        q: QParams,
        count: usize,
        base: &str,
    ) -> String {
        let constant =
            |l: &mut Self, name: &str, v: f32| l.init_f32(&format!("{base}_{name}"), &[], &[v]);
        let scale = constant(self, "scale", q.scale);
        let zp = constant(self, "zero_point", q.zero_point as f32);
        let n = constant(self, "count", count as f32);
        let half = constant(self, "half_count", (count / 2) as f32);
        let lo = constant(self, "qmin", q.qmin as f32);
        let hi = constant(self, "qmax", q.qmax as f32);
        let v = self.op(
            "Div",
            &format!("{base}_scaled"),
            vec![x, scale.clone()],
            vec![],
        );
        let raw = self.op("Add", &format!("{base}_raw"), vec![v, zp.clone()], vec![]);
        let times = self.op(
            "Mul",
            &format!("{base}_times_count"),
            vec![raw, n.clone()],
            vec![],
        );
        // Round is ties-to-even, but this value is an integer up to float error.
        let sum = self.op("Round", &format!("{base}_sum"), vec![times], vec![]);
        let sign = self.op("Sign", &format!("{base}_sign"), vec![sum.clone()], vec![]);
        let abs = self.op("Abs", &format!("{base}_abs"), vec![sum], vec![]);
        let biased = self.op("Add", &format!("{base}_biased"), vec![abs, half], vec![]);
        let quotient = self.op("Div", &format!("{base}_quotient"), vec![biased, n], vec![]);
        let floor = self.op("Floor", &format!("{base}_floor"), vec![quotient], vec![]);
        let integer = self.op("Mul", &format!("{base}_integer"), vec![floor, sign], vec![]);
        let clipped = self.op(
            "Clip",
            &format!("{base}_clipped"),
            vec![integer, lo, hi],
            vec![],
        );
        let centered = self.op(
            "Sub",
            &format!("{base}_centered"),
            vec![clipped, zp],
            vec![],
        );
        self.op(
            "Mul",
            &format!("{base}_dequantized"),
            vec![centered, scale],
            vec![],
        )
    }

    /// The input fake-quant of a Conv2d / Linear, where the plan has one and the
    /// quantizer has calibrated it.
    fn quantize_input(&mut self, i: usize, x: String) -> Result<String> {
        if !self.plan[i].quantize_input {
            return Ok(x);
        }
        let Some(q) = self.layer_quant(i).and_then(|lq| lq.input_qparams()) else {
            return Ok(x);
        };
        if self.graph.nodes()[i].inputs[0] == Source::Input {
            self.input_grid = Some(q);
        }
        let base = format!("{}.input", self.graph.nodes()[i].name);
        self.qdq(x, q, &base)
    }

    /// Conv2d / Linear node `i`'s bias on its int32 grid, as the eval forward adds it
    /// ([`Graph::deployed_bias`]); `None` where the float bias stands.
    fn deployed_bias(&self, i: usize) -> Result<Option<Tensor>> {
        let producer = match self.graph.nodes()[i].inputs[0] {
            Source::Input => self.input_grid,
            Source::Node(j) => self.grids[j],
        };
        let in_grid = self.graph.layer_input_grid(&self.plan, i, producer);
        Ok(self.graph.deployed_bias(&self.plan, i, in_grid)?)
    }

    /// The output fake-quant of node `i` as the plan places it; returns the value and
    /// the grid it is on.
    fn quantize_output(
        &mut self,
        i: usize,
        y: String,
        count: usize,
    ) -> Result<(String, Option<QParams>)> {
        let in_grid = match self.graph.nodes()[i].inputs[0] {
            Source::Input => self.input_grid,
            Source::Node(j) => self.grids[j],
        };
        match self.plan[i].output {
            OutputGrid::Owned(owner) => {
                let qp = self
                    .layer_quant(owner)
                    .filter(|lq| lq.config.quantizes(QuantType::Output))
                    .and_then(|lq| lq.output_qparams());
                let owner_name = &self.graph.nodes()[owner].name;
                let base = format!("{owner_name}.output");
                let binary = self
                    .graph
                    .quant()
                    .is_some_and(|b| b.binary_output(owner_name));
                match qp {
                    Some(q) if binary => Ok((self.sign(y, &base), Some(q))),
                    Some(q) => Ok((self.qdq(y, q, &base)?, Some(q))),
                    None => Ok((y, None)),
                }
            }
            // A max pool's output is on its input's grid, and a pair written after it
            // says so. Without it onnxruntime's extended optimizations insert their
            // own pair, whose opset-21 `output_dtype` (INT8) then disagrees with the
            // UINT8 zero point they rewrite it to, and the session fails to load
            // (1.31 and 1.32, AVX-512 VNNI; onnxruntime#25526).
            OutputGrid::Inherited => match in_grid {
                Some(q) if matches!(self.graph.nodes()[i].layer, Layer::MaxPool2d(_)) => {
                    let base = format!("{}.output", self.graph.nodes()[i].name);
                    Ok((self.qdq(y, q, &base)?, in_grid))
                }
                _ => Ok((y, in_grid)),
            },
            OutputGrid::Rounded => match in_grid {
                Some(q) => {
                    let base = format!("{}.output", self.graph.nodes()[i].name);
                    Ok((self.round_average_onto_grid(y, q, count, &base), Some(q)))
                }
                None => Ok((y, None)),
            },
            OutputGrid::Float | OutputGrid::Fused => Ok((y, None)),
        }
    }

    /// The masked weight as a float initializer, or (weight quantization bound) the
    /// quantizer's integers ([`Graph::weight_integers`]) as int8 with a per-output-channel
    /// DequantizeLinear (axis 0, zero points 0); a quantizer without an integer form
    /// gives its fake-quantized weight as floats.
    fn weight(&mut self, i: usize, weight: &Tensor) -> Result<String> {
        let name = self.graph.nodes()[i].name.clone();
        let masked = self.graph.masked_weight(&name, weight)?;
        let Some(binding) = self.graph.quant().filter(|_| {
            self.layer_quant(i)
                .is_some_and(|lq| lq.config.quantizes(QuantType::Weight))
        }) else {
            return self.init_tensor(&format!("{name}.weight"), &masked);
        };
        let Some(q) = self.graph.weight_integers(&name)? else {
            let fake = binding.quantize_weight(&name, &masked, false)?;
            return self.init_tensor(&format!("{name}.weight"), &fake);
        };
        let bits = q.bits;
        if !(1..=8).contains(&bits) {
            return Err(self.layer_fail(i, format!("{bits}-bit weights do not fit int8")));
        }
        let out_channels = masked.dim(0)?;
        let scales = q.scales.clone();
        if scales.len() != out_channels || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(self.layer_fail(
                i,
                format!(
                    "{} weight scales for {out_channels} output channels, or a non-positive one",
                    scales.len()
                ),
            ));
        }
        let integers = q.to_i8().map_err(|e| self.layer_fail(i, e))?;
        // Up to 4 bits, ONNX's INT4 (opset 21) holds them at half the bytes; the zero
        // point must have the same type.
        let int4 = bits <= 4 && integers.iter().all(|v| (-8..=7).contains(v));
        let init = if int4 { Self::init_int4 } else { Self::init_i8 };
        let q = init(
            self,
            &format!("{name}.weight_quantized"),
            masked.dims(),
            &integers,
        );
        let scale = self.init_f32(&format!("{name}.weight_scale"), &[out_channels], &scales);
        let zero_point = init(
            self,
            &format!("{name}.weight_zero_point"),
            &[out_channels],
            &vec![0; out_channels],
        );
        Ok(self.op(
            "DequantizeLinear",
            &format!("{name}.weight"),
            vec![q, scale, zero_point],
            vec![AttributeProto::int("axis", 0)],
        ))
    }

    /// `[C, H, W]` of a 2-D layer's input, or an error naming the layer.
    fn chw(&self, i: usize, shape: &[usize]) -> Result<[usize; 3]> {
        match *shape {
            [c, h, w] => Ok([c, h, w]),
            _ => Err(self.layer_fail(
                i,
                format!("expects a [C, H, W] input per sample, got {shape:?}"),
            )),
        }
    }

    /// Emits node `i`; returns its output value and per-sample output shape.
    fn lower_node(
        &mut self,
        i: usize,
        inputs: Vec<String>,
        in_shapes: Vec<Vec<usize>>,
    ) -> Result<(String, Vec<usize>)> {
        let graph = self.graph;
        let node = &graph.nodes()[i];
        let name = node.name.as_str();
        let x = inputs[0].clone();
        let shape = in_shapes[0].clone();
        let out = match &node.layer {
            Layer::Conv2d(conv) => {
                let c = *conv.config();
                let [ch, h, w] = self.chw(i, &shape)?;
                if ch != c.in_channels {
                    return Err(self.layer_fail(
                        i,
                        format!("expects {} input channels, gets {ch}", c.in_channels),
                    ));
                }
                if h + 2 * c.padding < c.kernel_size
                    || w + 2 * c.padding < c.kernel_size
                    || c.stride == 0
                {
                    return Err(
                        self.layer_fail(i, format!("a {h}×{w} input is too small for its kernel"))
                    );
                }
                let x = self.quantize_input(i, x)?;
                let mut args = vec![x, self.weight(i, conv.weight())?];
                let on_grid = self.deployed_bias(i)?;
                if let Some(b) = on_grid.as_ref().or(conv.bias()) {
                    args.push(self.init_tensor(&format!("{name}.bias"), b)?);
                }
                let (k, s, p) = (c.kernel_size, c.stride, c.padding);
                let attrs = vec![
                    AttributeProto::ints("kernel_shape", ints(&[k, k])),
                    AttributeProto::ints("strides", ints(&[s, s])),
                    AttributeProto::ints("pads", ints(&[p, p, p, p])),
                    AttributeProto::ints("dilations", vec![1, 1]),
                    AttributeProto::int("group", c.groups as i64),
                ];
                let y = self.op("Conv", name, args, attrs);
                (y, vec![c.out_channels, c.output_size(h), c.output_size(w)])
            }
            Layer::Linear(lin) => {
                if shape != [lin.in_features()] {
                    return Err(self.layer_fail(
                        i,
                        format!(
                            "expects [{}] features per sample, gets {shape:?}",
                            lin.in_features()
                        ),
                    ));
                }
                let x = self.quantize_input(i, x)?;
                let mut args = vec![x, self.weight(i, lin.weight())?];
                let on_grid = self.deployed_bias(i)?;
                if let Some(b) = on_grid.as_ref().or(lin.bias()) {
                    args.push(self.init_tensor(&format!("{name}.bias"), b)?);
                }
                let y = self.op("Gemm", name, args, vec![AttributeProto::int("transB", 1)]);
                (y, vec![lin.out_features()])
            }
            Layer::BatchNorm2d(bn) => {
                let [ch, ..] = self.chw(i, &shape)?;
                if ch != bn.num_features() {
                    return Err(self.layer_fail(
                        i,
                        format!("has {} features, gets {ch} channels", bn.num_features()),
                    ));
                }
                let args = vec![
                    x,
                    self.init_tensor(&format!("{name}.weight"), bn.weight())?,
                    self.init_tensor(&format!("{name}.bias"), bn.bias())?,
                    self.init_tensor(&format!("{name}.running_mean"), bn.running_mean())?,
                    self.init_tensor(&format!("{name}.running_var"), bn.running_var())?,
                ];
                let y = self.op(
                    "BatchNormalization",
                    name,
                    args,
                    vec![AttributeProto::float("epsilon", BATCH_NORM_EPS as f32)],
                );
                (y, shape)
            }
            // The owner's sign activation replaces it (BNN's binary outputs).
            Layer::ReLU(_) | Layer::ReLU6(_) if bypassed_activation(graph, &self.plan, i) => {
                (x, shape)
            }
            Layer::ReLU(_) => (self.op("Relu", name, vec![x], vec![]), shape),
            Layer::ReLU6(_) => {
                let (lo, hi) = match self.relu6_bounds.clone() {
                    Some(b) => b,
                    None => {
                        let b = (
                            self.init_f32("relu6_min", &[], &[0.0]),
                            self.init_f32("relu6_max", &[], &[6.0]),
                        );
                        self.relu6_bounds = Some(b.clone());
                        b
                    }
                };
                (self.op("Clip", name, vec![x, lo, hi], vec![]), shape)
            }
            Layer::MaxPool2d(MaxPool2d(cfg)) | Layer::AvgPool2d(AvgPool2d(cfg)) => {
                let cfg = *cfg;
                let [ch, h, w] = self.chw(i, &shape)?;
                if h < cfg.kernel_size || w < cfg.kernel_size || cfg.stride == 0 {
                    return Err(
                        self.layer_fail(i, format!("a {h}×{w} input is too small for its window"))
                    );
                }
                let op_type = if matches!(node.layer, Layer::MaxPool2d(_)) {
                    "MaxPool"
                } else {
                    "AveragePool"
                };
                let attrs = vec![
                    AttributeProto::ints("kernel_shape", ints(&[cfg.kernel_size, cfg.kernel_size])),
                    AttributeProto::ints("strides", ints(&[cfg.stride, cfg.stride])),
                ];
                let y = self.op(op_type, name, vec![x], attrs);
                (y, vec![ch, cfg.output_size(h), cfg.output_size(w)])
            }
            Layer::GlobalAvgPool(_) => {
                let [ch, ..] = self.chw(i, &shape)?;
                (
                    self.op("GlobalAveragePool", name, vec![x], vec![]),
                    vec![ch, 1, 1],
                )
            }
            Layer::Flatten(_) => {
                let y = self.op(
                    "Flatten",
                    name,
                    vec![x],
                    vec![AttributeProto::int("axis", 1)],
                );
                (y, vec![shape.iter().product()])
            }
            Layer::Add(_) => {
                if in_shapes[1] != shape {
                    return Err(
                        self.layer_fail(i, format!("adds shapes {shape:?} and {:?}", in_shapes[1]))
                    );
                }
                (self.op("Add", name, inputs, vec![]), shape)
            }
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::onnx_proto::data_type;
    use crate::quant::{QatQuantizer, Quantizer};
    use candle_core::Device;

    /// lenet5 with `config` bound by QAT, ranges calibrated on a deterministic batch
    /// spanning [-1, 1].
    fn calibrated(config: &str) -> Result<Model> {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 3)?;
        QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(config)?)?;
        let n = 4 * 28 * 28;
        let x = Tensor::arange(0f32, n as f32, &Device::Cpu)?
            .affine(2.0 / n as f64, -1.0)?
            .reshape((4, 1, 28, 28))?;
        model.graph.forward_t(&x, true)?;
        Ok(model)
    }

    fn initializer<'a>(lowered: &'a Lowered, name: &str) -> &'a TensorProto {
        lowered
            .initializers
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no initializer {name}"))
    }

    fn f32s(t: &TensorProto) -> Vec<f32> {
        t.raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn weight_initializers_are_the_quantizers_integers() -> Result<()> {
        let model = calibrated(
            r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#,
        )?;
        let lowered = lower(&model.graph, Path::new("model.onnx"), [1, 28, 28])?;
        let binding = model.graph.quant().expect("bound");
        for name in ["conv1", "conv2", "fc1", "fc2", "fc3"] {
            let q = model.graph.weight_integers(name)?.expect("quantized");
            let ints: Vec<u8> = q.to_i8()?.into_iter().map(|v| v as u8).collect();
            let init = initializer(&lowered, &format!("{name}.weight_quantized"));
            assert_eq!(init.raw_data, ints, "{name}: integers");
            let scales = initializer(&lowered, &format!("{name}.weight_scale"));
            assert_eq!(f32s(scales), q.scales, "{name}: scales");
            // ... and they are what the forward pass's weight hook computes with.
            let node = model.graph.node(name).expect("layer");
            let w = model
                .graph
                .masked_weight(name, node.layer.weight().expect("weight"))?;
            let fake = binding.quantize_weight(name, &w, false)?;
            let diff = (fake - q.dequantize()?)?.abs()?.max_all()?;
            assert_eq!(diff.to_scalar::<f32>()?, 0.0, "{name}");
        }
        Ok(())
    }

    /// 4-bit weights go out as INT4 (two per byte, low nibble first) with INT4 zero
    /// points; a layer kept at 8 bits stays INT8.
    #[test]
    fn four_bit_weights_are_int4_initializers() -> Result<()> {
        let model = calibrated(
            r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": {"input": 8, "weight": 4, "output": 8}},
                {"op_names": ["fc3"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#,
        )?;
        let lowered = lower(&model.graph, Path::new("model.onnx"), [1, 28, 28])?;
        for name in ["conv1", "conv2", "fc1", "fc2"] {
            let ints = model
                .graph
                .weight_integers(name)?
                .expect("quantized")
                .to_i8()?;
            assert!(ints.iter().all(|v| (-8..=7).contains(v)), "{name}");
            let init = initializer(&lowered, &format!("{name}.weight_quantized"));
            assert_eq!(init.data_type, data_type::INT4, "{name}");
            assert_eq!(init.raw_data.len(), ints.len().div_ceil(2), "{name}");
            for (k, &v) in ints.iter().enumerate() {
                let nibble = (init.raw_data[k / 2] >> (4 * (k % 2))) & 0x0f;
                assert_eq!(((nibble << 4) as i8) >> 4, v, "{name}[{k}]");
            }
            let zero = initializer(&lowered, &format!("{name}.weight_zero_point"));
            assert_eq!(zero.data_type, data_type::INT4, "{name}");
            assert!(zero.raw_data.iter().all(|&b| b == 0), "{name}");
        }
        let fc3 = initializer(&lowered, "fc3.weight_quantized");
        assert_eq!(fc3.data_type, data_type::INT8);
        Ok(())
    }

    /// Each max pool reads a dequantized conv output and is quantized again on the
    /// same scale and zero point, so onnxruntime's optimizer inserts no pair there.
    #[test]
    fn a_max_pool_on_a_grid_is_quantized_again_on_it() -> Result<()> {
        let model = calibrated(
            r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8}]"#,
        )?;
        let lowered = lower(&model.graph, Path::new("model.onnx"), [1, 28, 28])?;
        let producer = |value: &str| {
            lowered
                .nodes
                .iter()
                .find(|n| n.output.iter().any(|o| o == value))
                .unwrap_or_else(|| panic!("nothing produces {value}"))
        };
        let consumer = |value: &str| {
            lowered
                .nodes
                .iter()
                .find(|n| n.input.iter().any(|i| i == value))
                .unwrap_or_else(|| panic!("nothing reads {value}"))
        };
        for (pool, conv) in [("pool1", "conv1"), ("pool2", "conv2")] {
            let node = lowered.nodes.iter().find(|n| n.name == pool).expect(pool);
            assert_eq!(node.op_type, "MaxPool");
            let before = producer(&node.input[0]);
            assert_eq!(before.op_type, "DequantizeLinear", "{pool}'s input");
            assert_eq!(before.input[1], format!("{conv}.output_scale"));
            let after = consumer(&node.output[0]);
            assert_eq!(after.op_type, "QuantizeLinear", "{pool}'s output");
            let (scale, zero) = (&after.input[1], &after.input[2]);
            assert_eq!(
                f32s(initializer(&lowered, scale)),
                f32s(initializer(&lowered, &before.input[1]))
            );
            assert_eq!(
                initializer(&lowered, zero).raw_data,
                initializer(&lowered, &before.input[2]).raw_data
            );
            assert_eq!(consumer(&after.output[0]).op_type, "DequantizeLinear");
        }
        Ok(())
    }

    #[test]
    fn a_declared_input_grid_is_quantized_first() -> Result<()> {
        let model = calibrated(
            r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8}]"#,
        )?;
        let lowered = lower(&model.graph, Path::new("model.onnx"), [1, 28, 28])?;
        let first = &lowered.nodes[0];
        assert_eq!(first.op_type, "QuantizeLinear");
        assert_eq!(first.input[0], INPUT);
        let scale = initializer(&lowered, &first.input[1]);
        assert_eq!(f32s(scale), [crate::data::INPUT_SCALE]);
        assert_eq!(initializer(&lowered, &first.input[2]).raw_data, [0]);
        Ok(())
    }
}
