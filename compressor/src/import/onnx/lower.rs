//! ONNX nodes → a [`Graph`] of sprig layers, one node at a time in file order.
//!
//! Values are tracked by name: a graph tensor (its node and per-sample shape), a
//! constant (initializers, `Constant` nodes) or a shape vector (folded `Shape` chains,
//! see `shapes.rs`). Weights become variables of one [`VarMap`] named
//! `<layer>.weight`, `.bias`, `.running_mean`, `.running_var`, as the zoo's are.
//!
//! Layout: sprig's graph is NCHW. tf2onnx's `Transpose(perm = [0, 2, 3, 1])` before a
//! Keras `Flatten` is not a layer: the tensor is marked NHWC, the flatten after it is an
//! ordinary (channel-major) Flatten, and the Gemm/MatMul reading it gets its weight
//! columns reordered from (h, w, c) to (c, h, w), which computes the same products.

use std::collections::HashMap;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use super::attributes::Attributes;
use super::decode::Decoded;
use super::error::{OnnxError, Place};
use super::names::{Namer, Producer};
use super::shapes::{Dim, Dims};
use super::tensor::{self, Const, ConstData};
use crate::nn::{
    Add, AvgPool2d, BatchNorm2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, Graph, Layer,
    Linear, MaxPool2d, Pool2dConfig, ReLU, ReLU6, Source, BATCH_NORM_EPS,
};
use crate::onnx_proto::NodeProto;

/// The ops [`lower`] maps (listed in errors about any other).
pub const SUPPORTED_OPS: [&str; 28] = [
    "Conv",
    "Gemm",
    "MatMul",
    "Add",
    "BatchNormalization",
    "Relu",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Softmax",
    "Dropout",
    "Identity",
    "Constant",
    "Shape",
    "Gather",
    "Slice",
    "Concat",
    "Cast",
    "CastLike",
    "Sub",
    "Mul",
];

/// A graph tensor: the node that computes it and its shape without the batch.
#[derive(Debug, Clone)]
struct TensorValue {
    src: Source,
    /// NCHW order (`[C, H, W]`), or `[F]` once flat.
    shape: Vec<usize>,
    /// Logically NHWC (after a `Transpose [0, 2, 3, 1]`); `shape` stays `[C, H, W]`.
    nhwc: bool,
    /// A flatten of an NHWC tensor: its columns are in (h, w, c) order for ONNX and
    /// `[C, H, W]` is what they came from.
    hwc_columns: Option<[usize; 3]>,
}

#[derive(Debug, Clone)]
enum Value {
    Tensor(TensorValue),
    Const(Const),
    Dims(Dims),
}

/// What [`lower`] produces.
pub struct Lowered {
    pub graph: Graph,
    pub varmap: VarMap,
    /// Per-sample output shape (`[classes]`).
    pub output_shape: Vec<usize>,
    /// A trailing Softmax was left out (training wants logits; argmax is unchanged).
    pub softmax_dropped: bool,
    /// `(ONNX node name, op, sprig layer)` for every node that became a layer.
    pub layers: Vec<(String, String, String)>,
}

type Step<T = ()> = Result<T, String>;

struct Lowering<'a> {
    graph: Graph,
    varmap: VarMap,
    device: &'a Device,
    values: HashMap<String, Value>,
    /// How many node inputs (and graph outputs) read each value.
    readers: HashMap<String, usize>,
    namer: Namer,
    batch: Option<i64>,
    output: String,
    softmax_dropped: bool,
    layers: Vec<(String, String, String)>,
    /// The node being lowered: index, name, op.
    at: (usize, String, String),
}

/// Lowers a decoded model (see the module docs).
pub fn lower(d: &Decoded, file: &str, device: &Device) -> Result<Lowered, OnnxError> {
    let g = d.model.graph.as_ref().expect("decode checked the graph");
    let fail = |place: Place, message: String| OnnxError {
        file: file.to_string(),
        place,
        message,
    };
    // A Keras model's NHWC input transposed to NCHW first: sprig feeds NCHW, so the
    // transpose is the identity and the dims are read in NHWC order.
    let nhwc_input = g
        .node
        .iter()
        .filter(|n| n.input.contains(&d.input))
        .all(|n| n.op_type == "Transpose" && perm(n) == Some(vec![0, 3, 1, 2]))
        && g.node.iter().any(|n| n.input.contains(&d.input));
    let [a, b, c] = d.dims;
    let input_shape = if nhwc_input { [c, a, b] } else { [a, b, c] };
    let mut l = Lowering {
        graph: Graph::new(input_shape),
        varmap: VarMap::new(),
        device,
        values: HashMap::new(),
        readers: HashMap::new(),
        namer: Namer::new(
            Producer::from_name(&d.model.producer_name),
            g.node.iter().map(|n| n.name.as_str()),
        ),
        batch: d.batch,
        output: d.output.clone(),
        softmax_dropped: false,
        layers: Vec::new(),
        at: (0, String::new(), String::new()),
    };
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *l.readers.entry(i.clone()).or_default() += 1;
        }
    }
    *l.readers.entry(d.output.clone()).or_default() += 1;
    for t in &g.initializer {
        let c = tensor::decode(t).map_err(|e| fail(Place::Value(t.name.clone()), e))?;
        l.values.insert(t.name.clone(), Value::Const(c));
    }
    l.values.insert(
        d.input.clone(),
        Value::Tensor(TensorValue {
            src: Source::Input,
            shape: input_shape.to_vec(),
            nhwc: nhwc_input,
            hwc_columns: None,
        }),
    );
    for (index, node) in g.node.iter().enumerate() {
        l.at = (index, node.name.clone(), node.op_type.clone());
        l.node(node).map_err(|message| {
            fail(
                Place::Node {
                    index,
                    name: node.name.clone(),
                    op: node.op_type.clone(),
                },
                message,
            )
        })?;
    }
    let out = Place::Value(d.output.clone());
    let t = match l.values.get(&d.output) {
        Some(Value::Tensor(t)) => t.clone(),
        Some(_) => return Err(fail(out, "the graph output is a constant".into())),
        None => return Err(fail(out, "no node computes the graph output".into())),
    };
    let last = l.graph.nodes().len().checked_sub(1).map(Source::Node);
    if Some(t.src) != last {
        return Err(fail(
            out,
            "the graph output is not computed by the last layer (layers whose results \
             nobody reads, or an output that is the input)"
                .into(),
        ));
    }
    if t.shape.len() != 1 || t.nhwc || t.hwc_columns.is_some() {
        return Err(fail(
            out,
            format!(
                "the output has per-sample shape {:?}; sprig compresses classifiers, whose \
                 output is [N, classes]",
                t.shape
            ),
        ));
    }
    Ok(Lowered {
        graph: l.graph,
        varmap: l.varmap,
        output_shape: t.shape,
        softmax_dropped: l.softmax_dropped,
        layers: l.layers,
    })
}

fn perm(n: &NodeProto) -> Option<Vec<i64>> {
    Attributes(&n.attribute)
        .ints("perm")
        .ok()
        .flatten()
        .map(<[i64]>::to_vec)
}

fn usize_of(v: i64, what: &str) -> Step<usize> {
    usize::try_from(v).map_err(|_| format!("{what} is {v}"))
}

impl Lowering<'_> {
    fn node(&mut self, n: &NodeProto) -> Step {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Err(format!(
                "op `{}` of domain `{}` is not supported; sprig imports default-domain ops: {}",
                n.op_type,
                n.domain,
                SUPPORTED_OPS.join(", ")
            ));
        }
        let a = Attributes(&n.attribute);
        match n.op_type.as_str() {
            "Conv" => self.conv(n, &a),
            "Gemm" => self.gemm(n, &a),
            "MatMul" => self.matmul(n),
            "Add" => self.add(n),
            "Sub" => self.sub(n),
            "Mul" => self.mul(n),
            "BatchNormalization" => self.batch_norm(n, &a),
            "Relu" => self.unary(n, Layer::ReLU(ReLU)),
            "Clip" => self.clip(n, &a),
            "MaxPool" => self.pool(n, &a, true),
            "AveragePool" => self.pool(n, &a, false),
            "GlobalAveragePool" => self.global_pool(n, true),
            "ReduceMean" => self.reduce_mean(n, &a),
            "Flatten" => self.flatten(n, &a),
            "Reshape" => self.reshape(n),
            "Squeeze" => self.squeeze(n, &a),
            "Unsqueeze" => self.unsqueeze(n, &a),
            "Transpose" => self.transpose(n, &a),
            "Softmax" => self.softmax(n),
            "Dropout" | "Identity" => {
                let v = self.value(n, 0)?.clone();
                self.set(n, v)
            }
            "Cast" => self.cast(n, &a),
            "CastLike" => self.cast_like(n),
            "Constant" => self.constant(n, &a),
            "Shape" => self.shape(n),
            "Gather" => self.gather(n, &a),
            "Slice" => self.slice(n, &a),
            "Concat" => self.concat(n, &a),
            other => Err(format!(
                "op `{other}` is not supported; sprig imports: {}",
                SUPPORTED_OPS.join(", ")
            )),
        }
    }

    // ----- values -------------------------------------------------------------------

    fn value(&self, n: &NodeProto, k: usize) -> Step<&Value> {
        let name = n
            .input
            .get(k)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("input {k} is missing"))?;
        self.values.get(name).ok_or_else(|| {
            format!("input {k} `{name}` is not computed by an earlier node (is the graph sorted?)")
        })
    }
    fn optional(&self, n: &NodeProto, k: usize) -> Step<Option<&Value>> {
        match n.input.get(k) {
            Some(s) if !s.is_empty() => self.value(n, k).map(Some),
            _ => Ok(None),
        }
    }
    /// Input `k` as an NCHW graph tensor.
    fn tensor(&self, n: &NodeProto, k: usize) -> Step<TensorValue> {
        let t = self.any_tensor(n, k)?;
        if t.nhwc {
            return Err(format!(
                "input {k} `{}` is NHWC (transposed from NCHW); this op reads NCHW tensors only",
                n.input[k]
            ));
        }
        if t.hwc_columns.is_some() {
            return Err(format!(
                "input {k} `{}` is a flattened NHWC tensor; only Gemm/MatMul may read one",
                n.input[k]
            ));
        }
        Ok(t)
    }
    fn any_tensor(&self, n: &NodeProto, k: usize) -> Step<TensorValue> {
        match self.value(n, k)? {
            Value::Tensor(t) => Ok(t.clone()),
            _ => Err(format!(
                "input {k} `{}` is a constant; sprig maps this op only on a computed tensor",
                n.input[k]
            )),
        }
    }
    fn konst(&self, n: &NodeProto, k: usize) -> Step<Const> {
        match self.value(n, k)? {
            Value::Const(c) => Ok(c.clone()),
            Value::Dims(d) if !d.dims.contains(&Dim::Batch) => Ok(Const {
                dims: if d.scalar { vec![] } else { vec![d.dims.len()] },
                data: ConstData::I64(
                    d.dims
                        .iter()
                        .map(|x| match x {
                            Dim::Known(v) => *v,
                            Dim::Batch => 0,
                        })
                        .collect(),
                ),
            }),
            _ => Err(format!(
                "input {k} `{}` is computed at run time; sprig needs a constant (an initializer \
                 or Constant node) here",
                n.input[k]
            )),
        }
    }
    fn dims(&self, n: &NodeProto, k: usize) -> Step<Dims> {
        match self.value(n, k)? {
            Value::Dims(d) => Ok(d.clone()),
            Value::Const(c) => Dims::from_const(c)
                .ok_or_else(|| format!("input {k} `{}` is not a 1-D integer vector", n.input[k])),
            Value::Tensor(_) => Err(format!(
                "input {k} `{}` is an activation tensor; sprig folds this op on shapes and \
                 constants only",
                n.input[k]
            )),
        }
    }
    fn set(&mut self, n: &NodeProto, v: Value) -> Step {
        let out = n
            .output
            .first()
            .filter(|s| !s.is_empty())
            .ok_or("the node has no output")?;
        self.values.insert(out.clone(), v);
        Ok(())
    }
    fn set_tensor(&mut self, n: &NodeProto, src: Source, shape: Vec<usize>) -> Step {
        self.set(
            n,
            Value::Tensor(TensorValue {
                src,
                shape,
                nhwc: false,
                hwc_columns: None,
            }),
        )
    }

    // ----- layers -------------------------------------------------------------------

    /// The layer name of node `n`; `weight`: the input index of its weight (its
    /// parameters' tensor names come first in naming it).
    fn layer_name(&mut self, n: &NodeProto, weight: Option<usize>) -> String {
        let params: Vec<&str> = match weight {
            Some(k) => n.input.iter().skip(k).map(String::as_str).collect(),
            None => Vec::new(),
        };
        let scopes = n
            .metadata_props
            .iter()
            .find(|p| p.key == "pkg.torch.onnx.name_scopes")
            .map(|p| p.value.as_str());
        self.namer
            .name(self.at.0, &n.op_type, &n.name, scopes, &params)
    }
    fn push(&mut self, n: &NodeProto, name: String, layer: Layer, inputs: &[Source]) -> Source {
        self.layers
            .push((n.name.clone(), n.op_type.clone(), name.clone()));
        self.graph.push(name, layer, inputs)
    }
    /// A variable `<layer>.<param>` holding `values`.
    fn var(&self, layer: &str, param: &str, values: Vec<f32>, dims: &[usize]) -> Step<Tensor> {
        let t = Tensor::from_vec(values, dims, self.device).map_err(|e| e.to_string())?;
        let var = Var::from_tensor(&t).map_err(|e| e.to_string())?;
        let tensor = var.as_tensor().clone();
        self.varmap
            .data()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{layer}.{param}"), var);
        Ok(tensor)
    }
    fn unary(&mut self, n: &NodeProto, layer: Layer) -> Step {
        let x = self.tensor(n, 0)?;
        let name = self.layer_name(n, None);
        let src = self.push(n, name, layer, &[x.src]);
        self.set_tensor(n, src, x.shape)
    }

    fn conv(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let x = self.tensor(n, 0)?;
        let w = self.konst(n, 1)?;
        let [c, h, wd] = image(&x)?;
        let [m, cg, kh, kw] = w.dims[..] else {
            return Err(format!(
                "weight has dims {:?}; sprig maps 2-D convolutions (4-D weights)",
                w.dims
            ));
        };
        if kh != kw {
            return Err(format!(
                "kernel {kh}×{kw} is not square; sprig's Conv2d takes square kernels"
            ));
        }
        let group = usize_of(a.int("group")?.unwrap_or(1), "group")?;
        if group == 0 || c % group != 0 || m % group != 0 || cg != c / group {
            return Err(format!(
                "weight {:?} does not fit {c} input channels in {group} groups",
                w.dims
            ));
        }
        if a.ints("dilations")?
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("dilated convolutions are not supported (dilations must be 1)".into());
        }
        let stride = square(a.ints("strides")?, "strides")?;
        let padding = padding(a, [h, wd], kh, stride)?;
        if h + 2 * padding < kh || wd + 2 * padding < kh {
            return Err(format!(
                "a {kh}×{kh} kernel does not fit the {h}×{wd} input padded by {padding}"
            ));
        }
        let bias = match self.optional(n, 2)? {
            Some(_) => Some(self.konst(n, 2)?),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.count() != m) {
            return Err(format!(
                "bias has {} elements for {m} output channels",
                bias.map_or(0, |b| b.count())
            ));
        }
        let name = self.layer_name(n, Some(1));
        let weight = self.var(&name, "weight", w.floats(), &w.dims)?;
        let bias = match bias {
            Some(b) => Some(self.var(&name, "bias", b.floats(), &[m])?),
            None => None,
        };
        let config = Conv2dConfig::new(c, m, kh)
            .stride(stride)
            .padding(padding)
            .groups(group);
        let out = [m, config.output_size(h), config.output_size(wd)];
        let layer = Layer::Conv2d(Conv2d::from_parts(config, weight, bias));
        let src = self.push(n, name, layer, &[x.src]);
        self.set_tensor(n, src, out.to_vec())
    }

    /// A Linear over a flat input from an ONNX weight `[out, in]` (already transposed).
    fn linear(
        &mut self,
        n: &NodeProto,
        x: TensorValue,
        w: Vec<f32>,
        out: usize,
        bias: Option<Vec<f32>>,
        weight_input: usize,
    ) -> Step {
        let [features] = x.shape[..] else {
            return Err(format!(
                "input has per-sample shape {:?}; a fully connected layer reads a flat [N, features] tensor (add a Flatten)",
                x.shape
            ));
        };
        if w.len() != out * features {
            return Err(format!(
                "weight has {} elements for {features} inputs and {out} outputs",
                w.len()
            ));
        }
        // ONNX columns of a flattened NHWC tensor are (h, w, c); sprig's flatten is (c, h, w).
        let w = match x.hwc_columns {
            Some([c, h, wd]) => {
                let mut v = vec![0f32; w.len()];
                for o in 0..out {
                    for ci in 0..c {
                        for y in 0..h {
                            for xx in 0..wd {
                                v[o * features + (ci * h + y) * wd + xx] =
                                    w[o * features + (y * wd + xx) * c + ci];
                            }
                        }
                    }
                }
                v
            }
            None => w,
        };
        let name = self.layer_name(n, Some(weight_input));
        let weight = self.var(&name, "weight", w, &[out, features])?;
        let bias = match bias {
            Some(b) => Some(self.var(&name, "bias", b, &[out])?),
            None => None,
        };
        let layer = Layer::Linear(Linear::from_parts(weight, bias).map_err(|e| e.to_string())?);
        let src = self.push(n, name, layer, &[x.src]);
        self.set_tensor(n, src, vec![out])
    }

    fn gemm(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let x = self.any_tensor(n, 0)?;
        if x.nhwc {
            return Err("input is an unflattened NHWC tensor".into());
        }
        if a.int("transA")?.unwrap_or(0) != 0 {
            return Err(
                "transA = 1 is not supported (the activation must be [N, features])".into(),
            );
        }
        let b = self.konst(n, 1)?;
        let [r, s] = b.dims[..] else {
            return Err(format!(
                "B has dims {:?}; Gemm needs a 2-D constant",
                b.dims
            ));
        };
        let alpha = a.float("alpha")?.unwrap_or(1.0);
        let beta = a.float("beta")?.unwrap_or(1.0);
        let trans_b = a.int("transB")?.unwrap_or(0) != 0;
        let (out, w) = if trans_b {
            (r, b.floats())
        } else {
            (s, transpose(&b.floats(), r, s))
        };
        let w = w.into_iter().map(|v| v * alpha).collect();
        let bias = match self.optional(n, 2)? {
            Some(_) => {
                let c = self.konst(n, 2)?;
                let v = match c.count() {
                    1 => vec![c.floats()[0]; out],
                    k if k == out => c.floats(),
                    k => {
                        return Err(format!(
                            "C has {k} elements; sprig maps a bias of {out} or 1"
                        ))
                    }
                };
                Some(v.into_iter().map(|v| v * beta).collect())
            }
            None => None,
        };
        self.linear(n, x, w, out, bias, 1)
    }

    fn matmul(&mut self, n: &NodeProto) -> Step {
        let x = self.any_tensor(n, 0)?;
        if x.nhwc {
            return Err("input is an unflattened NHWC tensor".into());
        }
        let b = self.konst(n, 1)?;
        let [r, s] = b.dims[..] else {
            return Err(format!(
                "the second input has dims {:?}; sprig maps MatMul with a 2-D constant weight",
                b.dims
            ));
        };
        self.linear(n, x, transpose(&b.floats(), r, s), s, None, 1)
    }

    /// Folds `x + c` (`scale` false) or `x · c` (`scale` true) into the Conv/Linear
    /// computing `x`, if `x` has no other reader and `c` is a scalar or one value per
    /// output channel (broadcast as ONNX does: `[M, 1, 1]` for a conv, `[M]` for a
    /// fully connected layer). tf2onnx writes Keras biases and unfused batch norms so.
    fn fold_affine(
        &mut self,
        n: &NodeProto,
        x: &TensorValue,
        input: usize,
        c: &Const,
        scale: bool,
    ) -> Step<bool> {
        let Source::Node(i) = x.src else {
            return Ok(false);
        };
        if self.readers.get(&n.input[input]).copied() != Some(1) {
            return Ok(false);
        }
        let name = self.graph.nodes()[i].name.clone();
        let (channels, weight, bias, tail) = match &self.graph.nodes()[i].layer {
            Layer::Conv2d(conv) => (
                conv.config().out_channels,
                conv.weight().clone(),
                conv.bias().cloned(),
                &[1usize, 1][..],
            ),
            Layer::Linear(lin) => (
                lin.out_features(),
                lin.weight().clone(),
                lin.bias().cloned(),
                &[][..],
            ),
            _ => return Ok(false),
        };
        let dims: Vec<usize> = c.dims.iter().copied().skip_while(|&d| d == 1).collect();
        let per_channel = dims.first() == Some(&channels) && dims[1..] == *tail;
        if !per_channel && c.count() != 1 {
            return Ok(false);
        }
        let values = if c.count() == 1 {
            vec![c.floats()[0]; channels]
        } else {
            c.floats()
        };
        let fail = |e: candle_core::Error| e.to_string();
        let v = Tensor::from_vec(values, channels, self.device).map_err(fail)?;
        let set = |t: &Tensor, value: Tensor| -> Step {
            Var::from_tensor(t).map_err(fail)?.set(&value).map_err(fail)
        };
        let bias = match (bias, scale) {
            (Some(b), false) => {
                set(&b, (&b + &v).map_err(fail)?)?;
                Some(b)
            }
            (Some(b), true) => {
                set(&b, (&b * &v).map_err(fail)?)?;
                Some(b)
            }
            (None, false) => Some(self.var(
                &name,
                "bias",
                v.to_vec1::<f32>().map_err(fail)?,
                &[channels],
            )?),
            (None, true) => None,
        };
        if scale {
            let mut shape = vec![channels];
            shape.extend(std::iter::repeat_n(1, weight.rank() - 1));
            let per_row = v.reshape(shape).map_err(fail)?;
            set(&weight, weight.broadcast_mul(&per_row).map_err(fail)?)?;
        }
        let layer = &mut self.graph.nodes_mut()[i].layer;
        match layer {
            Layer::Conv2d(conv) => conv.set_parameters(weight, bias),
            Layer::Linear(_) => {
                *layer = Layer::Linear(Linear::from_parts(weight, bias).map_err(fail)?)
            }
            _ => {}
        }
        Ok(true)
    }

    /// `tensor · constant`: folded into the layer before it.
    fn mul(&mut self, n: &NodeProto) -> Step {
        let (x, k, c) = match (self.value(n, 0)?.clone(), self.value(n, 1)?.clone()) {
            (Value::Tensor(x), Value::Const(c)) => (x, 0, c),
            (Value::Const(c), Value::Tensor(x)) => (x, 1, c),
            _ => return Err("Mul is supported only as `tensor × constant` (a scale folded into the Conv, Gemm or MatMul before it)".into()),
        };
        if !x.nhwc && x.hwc_columns.is_none() && self.fold_affine(n, &x, k, &c, true)? {
            self.set(n, Value::Tensor(x))
        } else {
            Err(
                "multiplies by a constant a tensor that is not the output of a Conv, Gemm or \
                 MatMul read only here; sprig folds a constant Mul only into that layer"
                    .into(),
            )
        }
    }

    fn add(&mut self, n: &NodeProto) -> Step {
        match (self.value(n, 0)?.clone(), self.value(n, 1)?.clone()) {
            (Value::Tensor(_), Value::Tensor(_)) => {
                let (x, y) = (self.tensor(n, 0)?, self.tensor(n, 1)?);
                if x.shape != y.shape {
                    return Err(format!(
                        "adds shapes {:?} and {:?}; sprig's Add takes two tensors of the same shape (no broadcasting)",
                        x.shape, y.shape
                    ));
                }
                let name = self.layer_name(n, None);
                let src = self.push(n, name, Layer::Add(Add), &[x.src, y.src]);
                self.set_tensor(n, src, x.shape)
            }
            (Value::Tensor(x), Value::Const(c)) | (Value::Const(c), Value::Tensor(x)) => {
                let k = usize::from(matches!(self.value(n, 0)?, Value::Const(_)));
                if !x.nhwc && self.fold_affine(n, &x, k, &c, false)? {
                    self.set(n, Value::Tensor(x))
                } else {
                    Err("adds a constant to a tensor that is not the output of a Conv, Gemm or \
                         MatMul read only here; sprig maps a constant Add only as that layer's bias"
                        .into())
                }
            }
            _ => {
                Err("adds two constants or shape vectors; sprig folds only Shape → Gather/Slice → Concat chains".into())
            }
        }
    }

    /// `x − c` with a constant `c`: a bias of `−c` (tf2onnx writes a Keras bias this way
    /// after folding rarely, PyTorch never).
    fn sub(&mut self, n: &NodeProto) -> Step {
        let x = self.tensor(n, 0)?;
        let c = self.konst(n, 1).map_err(|_| {
            "Sub is supported only as `tensor − constant` after a Conv, Gemm or MatMul".to_string()
        })?;
        let neg = Const {
            dims: c.dims.clone(),
            data: ConstData::F32(c.floats().iter().map(|v| -v).collect()),
        };
        if self.fold_affine(n, &x, 0, &neg, false)? {
            self.set(n, Value::Tensor(x))
        } else {
            Err(
                "Sub is supported only as `tensor − constant` right after a Conv, Gemm or MatMul"
                    .into(),
            )
        }
    }

    fn batch_norm(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let x = self.tensor(n, 0)?;
        let [c, _, _] = image(&x)?;
        if a.int("training_mode")?.unwrap_or(0) != 0 {
            return Err("training_mode = 1: export the model in eval mode (model.eval())".into());
        }
        let eps = a.float("epsilon")?.unwrap_or(1e-5) as f64;
        let mut params = Vec::with_capacity(4);
        for k in 1..=4 {
            let p = self.konst(n, k)?;
            if p.count() != c {
                return Err(format!(
                    "input {k} has {} elements for {c} channels",
                    p.count()
                ));
            }
            params.push(p.floats());
        }
        // sprig's BatchNorm2d uses PyTorch's ε = 1e-5; another ε (Keras: 1e-3) moves into
        // the variance, which gives the same eval output.
        let var: Vec<f32> = params[3]
            .iter()
            .map(|&v| (v as f64 + eps - BATCH_NORM_EPS) as f32)
            .collect();
        if var
            .iter()
            .any(|&v| v.is_nan() || v + BATCH_NORM_EPS as f32 <= 0.0)
        {
            return Err("running variance + ε is not positive".into());
        }
        let name = self.layer_name(n, Some(1));
        let gamma = self.var(&name, "weight", params[0].clone(), &[c])?;
        let beta = self.var(&name, "bias", params[1].clone(), &[c])?;
        let mean = self.var(&name, "running_mean", params[2].clone(), &[c])?;
        let var = self.var(&name, "running_var", var, &[c])?;
        let bn = BatchNorm2d::from_parts(gamma, beta, &mean, &var).map_err(|e| e.to_string())?;
        let src = self.push(n, name, Layer::BatchNorm2d(bn), &[x.src]);
        self.set_tensor(n, src, x.shape)
    }

    fn clip(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let bound = |k: usize, attr: &str| -> Step<Option<f32>> {
            match self.optional(n, k)? {
                Some(_) => self
                    .konst(n, k)?
                    .scalar()
                    .map(Some)
                    .ok_or_else(|| format!("input {k} is not a scalar")),
                None => a.float(attr),
            }
        };
        let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
        match (lo, hi) {
            (Some(l), Some(h)) if l == 0.0 && h == 6.0 => self.unary(n, Layer::ReLU6(ReLU6)),
            (Some(0.0), None) => self.unary(n, Layer::ReLU(ReLU)),
            (Some(l), Some(h)) if l == 0.0 && h == f32::INFINITY => self.unary(n, Layer::ReLU(ReLU)),
            _ => Err(format!(
                "Clip({lo:?}, {hi:?}) is not supported; sprig maps Clip(0, 6) (ReLU6) and Clip(0, ∞) (ReLU)"
            )),
        }
    }

    fn pool(&mut self, n: &NodeProto, a: &Attributes, max: bool) -> Step {
        let x = self.tensor(n, 0)?;
        let [c, h, w] = image(&x)?;
        let k = square(a.ints("kernel_shape")?, "kernel_shape")?;
        let stride = square(a.ints("strides")?, "strides")?;
        if a.ints("dilations")?
            .is_some_and(|d| d.iter().any(|&v| v != 1))
        {
            return Err("dilated pooling is not supported".into());
        }
        if padding(a, [h, w], k, stride)? != 0 {
            return Err("padded pooling is not supported (sprig's pools take no padding)".into());
        }
        if h < k || w < k {
            return Err(format!("a {k}×{k} window does not fit the {h}×{w} input"));
        }
        if a.int("ceil_mode")?.unwrap_or(0) != 0 && ((h - k) % stride != 0 || (w - k) % stride != 0)
        {
            return Err(
                "ceil_mode = 1 changes the output size here; sprig's pools round down".into(),
            );
        }
        let cfg = Pool2dConfig {
            kernel_size: k,
            stride,
        };
        let layer = if max {
            Layer::MaxPool2d(MaxPool2d(cfg))
        } else {
            Layer::AvgPool2d(AvgPool2d(cfg))
        };
        let name = self.layer_name(n, None);
        let src = self.push(n, name, layer, &[x.src]);
        self.set_tensor(n, src, vec![c, cfg.output_size(h), cfg.output_size(w)])
    }

    /// Global average pool; `keep` false adds the flatten a `keepdims = 0` mean implies.
    fn global_pool(&mut self, n: &NodeProto, keep: bool) -> Step {
        let mut x = self.any_tensor(n, 0)?;
        if x.hwc_columns.is_some() {
            return Err("input is a flattened tensor".into());
        }
        let [c, _, _] = image(&x)?;
        let name = self.layer_name(n, None);
        let src = self.push(
            n,
            name.clone(),
            Layer::GlobalAvgPool(GlobalAvgPool),
            &[x.src],
        );
        x = TensorValue {
            src,
            shape: vec![c, 1, 1],
            nhwc: false,
            hwc_columns: None,
        };
        if !keep {
            let flat = self.namer.reserve(&format!("{name}.flatten"));
            let src = self.push(n, flat, Layer::Flatten(Flatten), &[x.src]);
            x = TensorValue {
                src,
                shape: vec![c],
                nhwc: false,
                hwc_columns: None,
            };
        }
        self.set(n, Value::Tensor(x))
    }

    fn reduce_mean(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let x = self.any_tensor(n, 0)?;
        // Opset 18 moved `axes` from an attribute to an input.
        let axes: Vec<i64> = match self.optional(n, 1)? {
            Some(_) => self
                .konst(n, 1)?
                .ints()
                .map(<[i64]>::to_vec)
                .unwrap_or_default(),
            None => a.ints("axes")?.map(<[i64]>::to_vec).unwrap_or_default(),
        };
        let mut axes: Vec<i64> = axes
            .into_iter()
            .map(|v| if v < 0 { v + 4 } else { v })
            .collect();
        axes.sort_unstable();
        let spatial = if x.nhwc { [1, 2] } else { [2, 3] };
        if axes != spatial {
            return Err(format!(
                "ReduceMean over axes {axes:?} is not supported; sprig maps the mean over the spatial axes {spatial:?} (a global average pool)"
            ));
        }
        let keep = a.int("keepdims")?.unwrap_or(1) != 0;
        if x.nhwc && keep {
            return Err("a kept-dims mean of an NHWC tensor is not supported".into());
        }
        self.global_pool(n, keep)
    }

    /// `[C, H, W]` → `[C·H·W]`, from an NCHW or an NHWC tensor.
    fn flat(&mut self, n: &NodeProto, x: TensorValue) -> Step {
        if x.shape.len() == 1 {
            return self.set(n, Value::Tensor(x));
        }
        let name = self.layer_name(n, None);
        let src = self.push(n, name, Layer::Flatten(Flatten), &[x.src]);
        let hwc_columns = match (x.nhwc, &x.shape[..]) {
            (true, &[c, h, w]) if c > 1 && h * w > 1 => Some([c, h, w]),
            _ => None,
        };
        self.set(
            n,
            Value::Tensor(TensorValue {
                src,
                shape: vec![x.shape.iter().product()],
                nhwc: false,
                hwc_columns,
            }),
        )
    }

    fn flatten(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let x = self.any_tensor(n, 0)?;
        let axis = a.int("axis")?.unwrap_or(1);
        if axis != 1 {
            return Err(format!(
                "axis {axis} is not supported; sprig flattens [N, ...] to [N, features] (axis 1)"
            ));
        }
        self.flat(n, x)
    }

    /// Reshape of a constant (the dynamo exporter computes ReduceMean's axes so).
    fn reshape_constant(&mut self, n: &NodeProto) -> Step {
        let c = self.konst(n, 0)?;
        let target = self.konst(n, 1)?;
        let target = target
            .ints()
            .ok_or("the new shape is not an integer tensor")?;
        let mut dims = Vec::with_capacity(target.len());
        let mut infer = None;
        for (k, &d) in target.iter().enumerate() {
            match d {
                -1 if infer.is_none() => {
                    infer = Some(k);
                    dims.push(1);
                }
                0 => dims.push(
                    *c.dims
                        .get(k)
                        .ok_or("dimension 0 copies a dimension the input lacks")?,
                ),
                d if d > 0 => dims.push(usize::try_from(d).map_err(|_| "dimension too large")?),
                _ => return Err(format!("new shape {target:?} is not valid")),
            }
        }
        let known = dims
            .iter()
            .try_fold(1usize, |p, &d| p.checked_mul(d))
            .unwrap_or(0);
        if let Some(k) = infer {
            if known == 0 || c.count() % known != 0 {
                return Err(format!("cannot reshape {:?} to {target:?}", c.dims));
            }
            dims[k] = c.count() / known;
        } else if known != c.count() {
            return Err(format!("cannot reshape {:?} to {target:?}", c.dims));
        }
        self.set(n, Value::Const(Const { dims, data: c.data }))
    }

    fn reshape(&mut self, n: &NodeProto) -> Step {
        if matches!(self.value(n, 0)?, Value::Const(_)) {
            return self.reshape_constant(n);
        }
        let x = self.any_tensor(n, 0)?;
        let target = self.dims(n, 1).map_err(|e| {
            format!("{e}; the new shape must be a constant or computed from Shape (export with a fixed shape or do_constant_folding=True)")
        })?;
        let Some((first, rest)) = target.dims.split_first() else {
            return Err("empty target shape".into());
        };
        let batch_ok = match first {
            Dim::Batch | Dim::Known(-1) | Dim::Known(0) => true,
            Dim::Known(b) => Some(*b) == self.batch,
        };
        if !batch_ok {
            return Err(format!(
                "reshapes to {:?}, whose first dimension is not the batch; sprig keeps the batch first",
                target.dims
            ));
        }
        if let Some(k) = rest.iter().position(|d| *d == Dim::Batch) {
            return Err(format!(
                "the batch dimension is dynamic and is used as dimension {} of the new shape, \
                 where sprig needs a fixed size; export with a fixed batch size",
                k + 1
            ));
        }
        // The per-sample shape as ONNX sees it (NHWC order for an NHWC tensor).
        let onnx_shape: Vec<usize> = match (x.nhwc, &x.shape[..]) {
            (true, &[c, h, w]) => vec![h, w, c],
            _ => x.shape.clone(),
        };
        let total: usize = onnx_shape.iter().product();
        let mut shape = Vec::with_capacity(rest.len());
        let mut infer = None;
        for (k, d) in rest.iter().enumerate() {
            match d {
                Dim::Known(-1) if infer.is_none() => {
                    infer = Some(k);
                    shape.push(1);
                }
                Dim::Known(0) => shape.push(
                    *onnx_shape
                        .get(k)
                        .ok_or("dimension 0 copies a dimension the input lacks")?,
                ),
                Dim::Known(v) if *v > 0 => shape.push(*v as usize),
                _ => return Err(format!("target shape {:?} is not valid", target.dims)),
            }
        }
        if let Some(k) = infer {
            let known = shape
                .iter()
                .try_fold(1usize, |p, &d| p.checked_mul(d))
                .unwrap_or(0);
            if known == 0 || !total.is_multiple_of(known) {
                return Err(format!(
                    "cannot reshape {onnx_shape:?} to {:?}",
                    target.dims
                ));
            }
            shape[k] = total / known;
        }
        if shape == onnx_shape {
            return self.set(n, Value::Tensor(x));
        }
        if shape == [total] {
            return self.flat(n, x);
        }
        Err(format!(
            "reshapes per-sample {onnx_shape:?} to {shape:?}; sprig maps a Reshape only as a flatten to [N, {total}] or a no-op"
        ))
    }

    fn squeeze(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        if let Value::Dims(d) = self.value(n, 0)?.clone() {
            if d.dims.len() != 1 || d.scalar {
                return Err("squeezes a shape vector of more than one entry".into());
            }
            return self.set(n, Value::Dims(Dims { scalar: true, ..d }));
        }
        let x = self.tensor(n, 0)?;
        let axes: Vec<i64> = match self.optional(n, 1)? {
            Some(_) => self
                .konst(n, 1)?
                .ints()
                .map(<[i64]>::to_vec)
                .unwrap_or_default(),
            None => a.ints("axes")?.map(<[i64]>::to_vec).unwrap_or_default(),
        };
        let mut axes: Vec<i64> = axes
            .into_iter()
            .map(|v| if v < 0 { v + 4 } else { v })
            .collect();
        axes.sort_unstable();
        match (&x.shape[..], axes.as_slice()) {
            ([_, 1, 1], [2, 3]) | ([_, 1, 1], []) => self.flat(n, x),
            _ => Err(format!(
                "squeezes axes {axes:?} of {:?}; sprig maps only [N, C, 1, 1] → [N, C]",
                x.shape
            )),
        }
    }

    fn unsqueeze(&mut self, n: &NodeProto, _a: &Attributes) -> Step {
        let d = self.dims(n, 0).map_err(|_| {
            "Unsqueeze is supported only on shape values (Shape → Gather → Unsqueeze → Concat)"
                .to_string()
        })?;
        let v = d.unsqueeze()?;
        self.set(n, Value::Dims(v))
    }

    fn transpose(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let mut x = self.any_tensor(n, 0)?;
        let perm = a.ints("perm")?.map(<[i64]>::to_vec).unwrap_or_default();
        match (x.nhwc, perm.as_slice(), x.shape.len()) {
            (false, [0, 2, 3, 1], 3) => x.nhwc = true,
            (true, [0, 3, 1, 2], 3) => x.nhwc = false,
            (_, p, r) if p.iter().copied().eq(0..=r as i64) => {}
            _ => {
                return Err(format!(
                    "perm {perm:?} is not supported; sprig maps the NCHW ↔ NHWC transposes around a flatten ([0, 2, 3, 1], [0, 3, 1, 2])"
                ))
            }
        }
        if x.hwc_columns.is_some() {
            return Err("transposes a flattened tensor".into());
        }
        self.set(n, Value::Tensor(x))
    }

    fn softmax(&mut self, n: &NodeProto) -> Step {
        let x = self.tensor(n, 0)?;
        if n.output.first() != Some(&self.output) || x.shape.len() != 1 {
            return Err(
                "Softmax is supported only as the last op of a classifier (it is left \
                        out: training wants logits, and argmax does not change)"
                    .into(),
            );
        }
        self.softmax_dropped = true;
        self.set(n, Value::Tensor(x))
    }

    fn cast(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let v = self.value(n, 0)?.clone();
        let to = a.int("to")?.unwrap_or(0) as i32;
        use crate::onnx_proto::data_type as dt;
        match (&v, to) {
            (Value::Tensor(_), dt::FLOAT) | (Value::Dims(_), dt::INT64 | dt::INT32) => {
                self.set(n, v)
            }
            (Value::Const(c), dt::FLOAT | dt::DOUBLE) => self.set(
                n,
                Value::Const(Const {
                    dims: c.dims.clone(),
                    data: ConstData::F32(c.floats()),
                }),
            ),
            (Value::Const(c), dt::INT64 | dt::INT32) if c.ints().is_some() => self.set(n, v),
            _ => Err(format!("cast to {} is not supported here", dt::name(to))),
        }
    }

    /// `CastLike(x, like)`: `x` in the element type of `like` (the dynamo exporter
    /// writes it for Clip's bounds).
    fn cast_like(&mut self, n: &NodeProto) -> Step {
        let v = self.value(n, 0)?.clone();
        let float_like = match self.value(n, 1)? {
            Value::Tensor(_) => true,
            Value::Const(c) => matches!(c.data, ConstData::F32(_)),
            Value::Dims(_) => false,
        };
        match (&v, float_like) {
            (Value::Tensor(_), true) | (Value::Dims(_), false) => self.set(n, v),
            (Value::Const(c), true) => self.set(
                n,
                Value::Const(Const {
                    dims: c.dims.clone(),
                    data: ConstData::F32(c.floats()),
                }),
            ),
            (Value::Const(c), false) if c.ints().is_some() => self.set(n, v),
            _ => Err("casts between float and integer values other than constants".into()),
        }
    }

    fn constant(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let c = if let Some(t) = a.tensor("value")? {
            t
        } else if let Some(f) = a.float("value_float")? {
            Const {
                dims: vec![],
                data: ConstData::F32(vec![f]),
            }
        } else if let Some(f) = a.floats("value_floats")? {
            Const {
                dims: vec![f.len()],
                data: ConstData::F32(f.to_vec()),
            }
        } else if let Some(i) = a.int("value_int")? {
            Const {
                dims: vec![],
                data: ConstData::I64(vec![i]),
            }
        } else if let Some(i) = a.ints("value_ints")? {
            Const {
                dims: vec![i.len()],
                data: ConstData::I64(i.to_vec()),
            }
        } else {
            return Err(
                "a Constant without a value, value_float(s) or value_int(s) attribute".into(),
            );
        };
        self.set(n, Value::Const(c))
    }

    fn shape(&mut self, n: &NodeProto) -> Step {
        let x = self.any_tensor(n, 0)?;
        let per_sample: Vec<usize> = match (x.nhwc, &x.shape[..]) {
            (true, &[c, h, w]) => vec![h, w, c],
            _ => x.shape.clone(),
        };
        let mut dims = vec![self.batch.map_or(Dim::Batch, Dim::Known)];
        dims.extend(per_sample.iter().map(|&d| Dim::Known(d as i64)));
        self.set(
            n,
            Value::Dims(Dims {
                dims,
                scalar: false,
            }),
        )
    }

    fn gather(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        let d = self.dims(n, 0)?;
        let idx = self.konst(n, 1)?;
        if a.int("axis")?.unwrap_or(0) != 0 {
            return Err("Gather on a shape vector must use axis 0".into());
        }
        let ints = idx.ints().ok_or("indices are not integers")?;
        let v = d.gather(ints, idx.dims.is_empty())?;
        self.set(n, Value::Dims(v))
    }

    fn slice(&mut self, n: &NodeProto, _a: &Attributes) -> Step {
        let d = self.dims(n, 0)?;
        let one = |k: usize, default: i64| -> Step<i64> {
            match self.optional(n, k)? {
                Some(_) => self
                    .konst(n, k)?
                    .ints()
                    .and_then(|v| (v.len() == 1).then(|| v[0]))
                    .ok_or_else(|| format!("input {k} is not one integer")),
                None => Ok(default),
            }
        };
        if one(3, 0)? != 0 {
            return Err("Slice on a shape vector must use axis 0".into());
        }
        let v = d.slice(one(1, 0)?, one(2, i64::MAX)?, one(4, 1)?)?;
        self.set(n, Value::Dims(v))
    }

    fn concat(&mut self, n: &NodeProto, a: &Attributes) -> Step {
        if a.int("axis")?.unwrap_or(0) != 0 {
            return Err("Concat is supported on shape vectors along axis 0 only".into());
        }
        let parts = (0..n.input.len())
            .map(|k| self.dims(n, k))
            .collect::<Step<Vec<_>>>()
            .map_err(|e| format!("{e} (sprig's Concat folds shape vectors only)"))?;
        self.set(n, Value::Dims(Dims::concat(&parts)))
    }
}

fn image(x: &TensorValue) -> Step<[usize; 3]> {
    match x.shape[..] {
        [c, h, w] => Ok([c, h, w]),
        _ => Err(format!(
            "input has per-sample shape {:?}; this op needs an image [C, H, W]",
            x.shape
        )),
    }
}

/// A 2-D attribute with equal entries (kernel, strides), default 1.
fn square(v: Option<&[i64]>, what: &str) -> Step<usize> {
    match v {
        None => Ok(1),
        Some(&[a, b]) if a == b && a > 0 => Ok(a as usize),
        Some(v) => Err(format!(
            "{what} {v:?} are not supported; sprig takes equal, positive {what} along H and W"
        )),
    }
}

/// Symmetric padding from `pads` or `auto_pad`.
fn padding(a: &Attributes, [h, w]: [usize; 2], k: usize, stride: usize) -> Step<usize> {
    let auto = a.string("auto_pad")?.unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => match a.ints("pads")? {
            None => Ok(0),
            Some(&[t, l, b, r]) if t == l && l == b && b == r && t >= 0 && (t as usize) < k => {
                Ok(t as usize)
            }
            // TensorFlow's SAME padding puts the odd pixel at the bottom/right (a
            // stride-2 conv on an even image); sprig's kernels pad all sides alike.
            Some(p) => Err(format!(
                "pads {p:?} are not supported; sprig pads symmetrically (all four equal, \
                 less than the kernel). TensorFlow's padding=\"same\" with stride 2 on an even \
                 size pads only bottom/right: use stride 1 + pooling, or an odd input size"
            )),
        },
        "VALID" => Ok(0),
        "SAME_UPPER" | "SAME_LOWER" => {
            let total = |n: usize| ((n.div_ceil(stride) - 1) * stride + k).saturating_sub(n);
            let (th, tw) = (total(h), total(w));
            if th == tw && th % 2 == 0 {
                Ok(th / 2)
            } else {
                Err(format!("auto_pad {auto} needs uneven padding ({th}, {tw}) here; sprig pads symmetrically"))
            }
        }
        other => Err(format!("auto_pad `{other}` is not valid")),
    }
}

/// `[r, s]` row-major → `[s, r]`.
fn transpose(v: &[f32], r: usize, s: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..s {
            t[j * r + i] = v[i * s + j];
        }
    }
    t
}
