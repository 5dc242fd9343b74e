//! Lowering a quantized NCHW [`Graph`] to the runtime's NHWC int8 graph
//! ([`GraphDef`] plus the data section in a [`BlobBuilder`]).
//!
//! Every tensor the runtime sees is on the grid [`resolve_grids`] gives it, which is
//! the grid the float graph's fake quantization uses; so the int8 model computes what
//! the fake-quantized model computes, up to the fixed-point rounding of TFLite's int8
//! scheme. Per layer:
//!
//! - Conv2d (groups 1) → `Conv2d`, filter `[OC, KH, KW, IC]`; depthwise (groups = in =
//!   out channels) → `DepthwiseConv2d`, filter `[KH, KW, OC]`; Linear →
//!   `FullyConnected` `[OUT, IN]`. Weights are the quantizer's own integers and scales
//!   ([`Graph::weight_integers`], what the forward pass computes with), stored in the
//!   smallest encoding that holds them (dense int8, sparse, or packed at 4, 2 or 1
//!   bits when the quantizer's width is that small); biases
//!   `round(b / (s_in · s_w[c]))` as `i32`, requantization per output channel from
//!   `s_in · s_w[c] / s_out`, single rounding, one pair per channel (never shared).
//!   Integers to bytes is the lowering shared with the TFLite importer
//!   ([`crate::export::layer_integers`]).
//! - A fused ReLU / ReLU6 ([`Graph::fused_activation`]) becomes the producing op's
//!   `act_min` / `act_max`; the activation node emits nothing.
//! - MaxPool2d / AvgPool2d map one to one; the global average pool becomes an
//!   `AvgPool2d` over the whole H×W (its rounding is what
//!   [`crate::quant::round_average_onto_grid`] emulates).
//! - Flatten becomes a `Reshape` (no copy). PyTorch flattens channel-major (c, h, w),
//!   the runtime's NHWC tensor flattens as (h, w, c), so the Linear that reads it gets
//!   its weight columns permuted to match.
//! - Add → `Add` with per-input requantization ([`AddQuant::from_scales`]).
//! - An unfused ReLU / ReLU6 on a grid becomes a 1×1 `MaxPool2d` that only clamps.
//! - Last, a dense Conv2d whose only reader is the MaxPool2d after it (ReLU fused or
//!   not) becomes one `Conv2dMaxPool` ([`GraphDef::fuse_conv_max_pools`], format 2.2),
//!   so the conv's full-size output is never planned in the arena.
//! - Then a binary op's output that only binary ops read (through flattens) is stored as
//!   packed bits ([`GraphDef::pack_sign_activations`], format 2.4): an eighth of the
//!   arena, and its reader does not binarize it again.

mod layers;
mod signs;

use std::path::Path;

use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::{Encoding, Op, Tensor as RtTensor, TensorKind};

use crate::config::QuantType;
use crate::nn::{quant_plan, resolve_grids, Graph, Grids, Layer, OutputGrid, QuantPlan, Source};
use crate::quant::QParams;
use crate::{Error, Result};
use signs::Signs;

/// The activation width the format stores, and the widest weights (weights of 4, 2
/// or 1 bits are also stored packed, see [`super::ENCODINGS`]).
pub const PACKED_BITS: u8 = 8;

/// A layer's int32 biases (if any) and requantization pairs (the int8 and the sign
/// lowerings both make one).
type OutputStage = (Option<Vec<i32>>, Vec<(i32, i32)>);

/// The lowered graph and its data section, with byte counts of what went in.
pub(super) struct Lowered {
    pub graph: GraphDef,
    pub data: BlobBuilder,
    /// Weight bytes as stored (dense or sparse).
    pub weight_bytes: usize,
    /// Layer names of the weighted ops, in op order.
    pub weighted_layers: Vec<String>,
    /// int32 bias bytes.
    pub bias_bytes: usize,
    /// Requantization bytes (multipliers and shifts).
    pub requant_bytes: usize,
}

/// A runtime tensor as the lowering tracks it.
#[derive(Debug, Clone)]
struct Value {
    /// Index in the runtime tensor table.
    index: u32,
    /// NHWC shape.
    shape: Vec<usize>,
    grid: QParams,
    /// For a flattened `[1, C·H·W]` tensor: the `[C, H, W]` it came from, whose NHWC
    /// flattening order the reading Linear must follow.
    flattened_from: Option<[usize; 3]>,
    /// Whether it holds a sign activation's ±1, and how.
    signs: Signs,
}

struct Lowering<'a> {
    graph: &'a Graph,
    /// The encodings besides dense a layer may take ([`super::ENCODINGS`] or fewer).
    allowed: &'a [Encoding],
    path: &'a Path,
    plan: QuantPlan,
    grids: Grids,
    tensors: Vec<RtTensor>,
    ops: Vec<Op>,
    data: BlobBuilder,
    /// The runtime value each node's output is (activations fused into their producer
    /// share its value).
    values: Vec<Option<Value>>,
    input: Option<Value>,
    weighted_layers: Vec<String>,
    weight_bytes: usize,
    bias_bytes: usize,
    requant_bytes: usize,
}

/// Lowers `graph`, each layer's weights stored in the smallest of dense and the
/// `allowed` encodings that suit it; `path` is only used in error messages.
pub(super) fn lower(graph: &Graph, allowed: &[Encoding], path: &Path) -> Result<Lowered> {
    let mut l = Lowering {
        graph,
        allowed,
        path,
        plan: quant_plan(graph),
        grids: int8_grids(resolve_grids(graph)),
        tensors: Vec::new(),
        ops: Vec::new(),
        data: BlobBuilder::new(),
        values: Vec::with_capacity(graph.nodes().len()),
        input: None,
        weighted_layers: Vec::new(),
        weight_bytes: 0,
        bias_bytes: 0,
        requant_bytes: 0,
    };
    l.check_graph()?;
    for i in 0..graph.nodes().len() {
        let value = l.lower_node(i)?;
        l.values.push(value);
    }
    let last = graph.nodes().len() - 1;
    let output = l.values[last]
        .clone()
        .ok_or_else(|| l.fail("the graph's last node produces no tensor"))?;
    let input = l
        .input
        .clone()
        .ok_or_else(|| l.fail("no layer reads the graph input"))?;
    if output.index == input.index {
        return Err(l.fail("the graph computes nothing (its output is its input)"));
    }
    l.tensors[output.index as usize].kind = TensorKind::Output;
    let mut def = GraphDef {
        tensors: l.tensors,
        ops: l.ops,
        input: input.index,
        output: output.index,
        arena_size: 0,
    };
    // Conv → (ReLU) → max pool as one op: the conv's full output never takes arena.
    def.fuse_conv_max_pools();
    // Signs passed from binary op to binary op as bits: an eighth of the bytes.
    def.pack_sign_activations();
    // A conv's output that only the next conv (or Add) reads, as a band of rows where
    // that lowers the arena.
    def.stream_rows();
    def.plan_arena().map_err(|e| Error::Export {
        path: path.to_path_buf(),
        message: format!("planning the arena failed (an exporter bug): {e}"),
    })?;
    Ok(Lowered {
        graph: def,
        data: l.data,
        weighted_layers: l.weighted_layers,
        weight_bytes: l.weight_bytes,
        bias_bytes: l.bias_bytes,
        requant_bytes: l.requant_bytes,
    })
}

/// `grids` with each sign activation's grid ([`QParams::binary`], integers ±1) widened
/// to int8's range: the runtime stores the ±1 as int8 at scale 1, zero point 0.
fn int8_grids(mut grids: Grids) -> Grids {
    for grid in grids.outputs.iter_mut().flatten() {
        if *grid == QParams::binary() {
            grid.qmin = i32::from(i8::MIN);
            grid.qmax = i32::from(i8::MAX);
        }
    }
    grids
}

fn u32_of(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// The config dict that makes a layer type own an 8-bit output grid.
fn output_dict(op_type: &str) -> String {
    format!(
        r#"{{"op_types": ["{op_type}"], "quant_types": ["output"], "quant_bits": {PACKED_BITS}}}"#
    )
}

impl<'a> Lowering<'a> {
    fn fail(&self, message: impl Into<String>) -> Error {
        crate::export::export_error(self.path, message)
    }

    fn layer_fail(&self, i: usize, message: impl std::fmt::Display) -> Error {
        crate::export::layer_error(self.path, self.graph, i, message)
    }

    /// What can be refused before looking at any layer.
    fn check_graph(&self) -> Result<()> {
        let graph = self.graph;
        if graph.nodes().is_empty() {
            return Err(self.fail("the graph has no layers"));
        }
        let Some(binding) = graph.quant() else {
            return Err(self.fail(format!(
                "the model is not quantized: the int8 format needs a quantizer with \
                 quant_types weight and output, e.g. QAT_Quantizer with \
                 {{\"op_types\": [\"Conv2d\", \"Linear\"], \"quant_types\": [\"weight\", \
                 \"output\"], \"quant_bits\": {PACKED_BITS}}}"
            )));
        };
        if let Some(bn) = graph
            .nodes()
            .iter()
            .find(|n| matches!(n.layer, Layer::BatchNorm2d(_)))
        {
            return Err(self.fail(format!(
                "batch norm `{}` is not folded; fold batch norms into their convolutions \
                 (compress::fold_batch_norms) before quantizing",
                bn.name
            )));
        }
        for (name, layer) in binding.layers() {
            for t in [QuantType::Input, QuantType::Output] {
                let sign = t == QuantType::Output && binding.binary_output(name);
                match layer.config.bits(t) {
                    Some(bits) if layer.config.quantizes(t) && bits != PACKED_BITS && !sign => {
                        return Err(self.fail(format!(
                            "layer `{name}` quantizes its {t} to {bits} bits; the packed format \
                             stores {PACKED_BITS}-bit activations only, and 1-bit sign \
                             activations (weights may be 1 to 8 bits)"
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Registers a runtime tensor of NHWC `shape` on `grid`.
    fn new_tensor(
        &mut self,
        i: Option<usize>,
        shape: Vec<usize>,
        grid: QParams,
        flattened_from: Option<[usize; 3]>,
    ) -> Result<Value> {
        let what = || match i {
            Some(i) => format!("layer `{}`", self.graph.nodes()[i].name),
            None => "the graph input".to_string(),
        };
        if grid.qmin != i32::from(i8::MIN) || grid.qmax != i32::from(i8::MAX) {
            return Err(self.fail(format!(
                "{}: its grid spans [{}, {}], not int8's [-128, 127] ({PACKED_BITS}-bit \
                 activations only)",
                what(),
                grid.qmin,
                grid.qmax
            )));
        }
        let valid = grid.scale.is_finite()
            && grid.scale > 0.0
            && (grid.qmin..=grid.qmax).contains(&grid.zero_point);
        if !valid {
            return Err(self.fail(format!(
                "{}: invalid grid (scale {}, zero point {})",
                what(),
                grid.scale,
                grid.zero_point
            )));
        }
        if shape.is_empty() || shape.len() > 4 || shape.contains(&0) {
            return Err(self.fail(format!("{}: unsupported shape {shape:?}", what())));
        }
        let dims: Vec<u32> = shape.iter().map(|&d| u32_of(d)).collect();
        let dims = dims
            .as_slice()
            .try_into()
            .map_err(|_| self.fail(format!("{}: rank {} above 4", what(), shape.len())))?;
        let index = u32_of(self.tensors.len());
        self.tensors.push(RtTensor {
            shape: dims,
            scale: grid.scale,
            zero_point: grid.zero_point,
            arena_offset: 0,
            kind: if i.is_none() {
                TensorKind::Input
            } else {
                TensorKind::Activation
            },
        });
        Ok(Value {
            index,
            shape,
            grid,
            flattened_from,
            signs: Signs::No,
        })
    }

    /// The runtime value node `i` reads as its input `k`.
    fn input(&mut self, i: usize, k: usize) -> Result<Value> {
        match self.graph.nodes()[i].inputs[k] {
            Source::Node(j) => self.values[j].clone().ok_or_else(|| {
                self.layer_fail(i, "reads a layer that produced no tensor (an exporter bug)")
            }),
            Source::Input => {
                if let Some(v) = &self.input {
                    return Ok(v.clone());
                }
                let Some(grid) = self.grids.input else {
                    let calibrating = self.plan[i].quantize_input;
                    return Err(self.layer_fail(
                        i,
                        if calibrating {
                            "reads the graph input, whose range the quantizer has not \
                             calibrated yet (run at least one training pass with the \
                             quantizer bound)"
                                .to_string()
                        } else {
                            format!(
                                "reads the graph input, which has no int8 grid (the graph \
                                 declares none): add \"input\" to this layer's quant_types \
                                 (e.g. {{\"op_names\": [\"{}\"], \"quant_types\": \
                                 [\"input\", \"weight\", \"output\"], \"quant_bits\": \
                                 {PACKED_BITS}}}) or declare the grid inputs arrive on \
                                 (Graph::set_input_grid)",
                                self.graph.nodes()[i].name
                            )
                        },
                    ));
                };
                let [c, h, w] = self.graph.input_shape();
                let v = self.new_tensor(None, vec![1, h, w, c], grid, None)?;
                self.input = Some(v.clone());
                Ok(v)
            }
        }
    }

    /// The grid of node `i`'s op output (its fused activation's, if it has one) and
    /// that activation.
    fn output_grid(&self, i: usize) -> Result<(QParams, Option<usize>)> {
        let act = self.graph.fused_activation(i);
        let j = act.unwrap_or(i);
        match self.grids.outputs[j] {
            Some(g) => Ok((g, act)),
            None => Err(self.missing_grid(i, j)),
        }
    }

    /// Why node `j`'s output (produced by node `i`'s op) has no grid, and what to change.
    fn missing_grid(&self, i: usize, j: usize) -> Error {
        let nodes = self.graph.nodes();
        if let OutputGrid::Owned(owner) = self.plan[j].output {
            return self.layer_fail(
                owner,
                "the quantizer has not calibrated its output range yet (run at least one \
                 training pass with the quantizer bound)",
            );
        }
        let layer = &nodes[i].layer;
        let op_type = layer.op_type().to_string();
        match layer {
            Layer::Conv2d(_) | Layer::Linear(_) | Layer::Add(_) => self.layer_fail(
                i,
                format!(
                    "its output has no int8 grid; add {} (or the same with \"op_names\": \
                     [\"{}\"]) to the quantizer's config_list",
                    output_dict(&op_type),
                    nodes[i].name
                ),
            ),
            _ if i != j => self.layer_fail(
                i,
                format!(
                    "the {} `{}` after it has no int8 grid: only Conv2d, Linear and Add own \
                     output grids, so an activation can only follow one of them",
                    nodes[j].layer.op_type(),
                    nodes[j].name
                ),
            ),
            _ => self.layer_fail(
                i,
                "its input is not on an int8 grid, so neither is its output; quantize the \
                 output of the layer that feeds it",
            ),
        }
    }

    /// [`clamps`](Self::clamps), or `[−1, 1]` for a sign output (which replaces the
    /// fused activation).
    fn clamps_or_sign(&self, act: Option<usize>, grid: QParams, sign: bool) -> (i32, i32) {
        if sign {
            (-1, 1)
        } else {
            self.clamps(act, grid)
        }
    }

    /// `act_min`, `act_max` of an op whose output is on `grid`, with activation `act`
    /// fused.
    fn clamps(&self, act: Option<usize>, grid: QParams) -> (i32, i32) {
        let activation = match act.map(|j| &self.graph.nodes()[j].layer) {
            Some(Layer::ReLU(_)) => Some(None),
            Some(Layer::ReLU6(_)) => Some(Some(6.0)),
            _ => None,
        };
        crate::quant::requant::activation_clamps(activation, grid)
    }

    /// `[1, H, W, C]` of a value, or an error naming the layer.
    fn nhwc(&self, i: usize, v: &Value) -> Result<[usize; 3]> {
        match *v.shape.as_slice() {
            [1, h, w, c] => Ok([h, w, c]),
            ref s => Err(self.layer_fail(i, format!("expects a [1, H, W, C] input, gets {s:?}"))),
        }
    }

    /// Emits node `i`'s op(s); returns the value its output is.
    fn lower_node(&mut self, i: usize) -> Result<Option<Value>> {
        let graph = self.graph;
        let node = &graph.nodes()[i];
        // An activation fused into its producer: the producer's output is this node's.
        if node.layer.is_activation() {
            if let Source::Node(p) = node.inputs[0] {
                if graph.fused_activation(p) == Some(i) {
                    return Ok(self.values[p].clone());
                }
            }
        }
        match &node.layer {
            Layer::Conv2d(conv) => self.conv(i, conv).map(Some),
            Layer::Linear(lin) => self.linear(i, lin).map(Some),
            Layer::MaxPool2d(p) => {
                let c = p.0;
                self.pool(i, false, [c.kernel_size; 2], [c.stride; 2])
                    .map(Some)
            }
            Layer::AvgPool2d(p) => {
                let c = p.0;
                self.pool(i, true, [c.kernel_size; 2], [c.stride; 2])
                    .map(Some)
            }
            Layer::GlobalAvgPool(_) => {
                let x = self.input(i, 0)?;
                let [h, w, _] = self.nhwc(i, &x)?;
                self.pool(i, true, [h, w], [1, 1]).map(Some)
            }
            Layer::Flatten(_) => self.flatten(i).map(Some),
            Layer::Add(_) => self.add(i).map(Some),
            Layer::ReLU(_) | Layer::ReLU6(_) => self.unfused_activation(i).map(Some),
            Layer::BatchNorm2d(_) => Err(self.layer_fail(i, "batch norm is not folded")),
        }
    }
}
