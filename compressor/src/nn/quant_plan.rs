//! Where fake quantization happens in a graph with a quantizer bound.
//!
//! The int8 runtime gives every tensor one grid (scale, zero point). The plan makes the
//! float graph do the same, and the forward pass, the ONNX exporter and the packed-model
//! exporter all read it, so they agree by construction:
//!
//! - a Conv2d / Linear runs its `input` hook only when its input is not on a grid yet
//!   (the graph input, or after layers that are not quantized);
//! - its `output` hook runs after its fused ReLU/ReLU6 (the activation that is its only
//!   consumer), or right after it when there is none; Add may own an output grid too;
//! - max pool, flatten and unfused activations keep their input's grid (their values
//!   stay on it); average pools keep it too but round back onto it.

use super::{Graph, Layer, Source};
use crate::config::QuantType;
use crate::quant::QParams;

/// What happens to one node's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputGrid {
    /// Not quantized.
    Float,
    /// The pre-activation output of a layer whose fused activation owns the grid.
    Fused,
    /// Fake-quantized by this layer's `output` hook (node index of the owner: itself, or
    /// the layer whose activation this node is).
    Owned(usize),
    /// On its input's grid already (max pool, flatten, activations).
    Inherited,
    /// Rounded back onto its input's grid (average pools).
    Rounded,
}

/// The plan for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeQuant {
    /// Run the layer's `input` hook.
    pub quantize_input: bool,
    pub output: OutputGrid,
}

/// The plan for every node (all `Float`, no input hooks, when no quantizer is bound).
pub fn quant_plan(graph: &Graph) -> Vec<NodeQuant> {
    let n = graph.nodes().len();
    let float = NodeQuant {
        quantize_input: false,
        output: OutputGrid::Float,
    };
    let Some(binding) = graph.quant() else {
        return vec![float; n];
    };
    let configured = |i: usize, t: QuantType| {
        binding
            .layer(&graph.nodes()[i].name)
            .is_some_and(|l| l.config.quantizes(t))
    };
    let mut plan: Vec<NodeQuant> = Vec::with_capacity(n);
    let mut on_grid: Vec<bool> = Vec::with_capacity(n);
    for (i, node) in graph.nodes().iter().enumerate() {
        let input_on_grid = match node.inputs.first() {
            Some(Source::Node(j)) => on_grid[*j],
            _ => false,
        };
        let owner = (0..i)
            .find(|&p| graph.fused_activation(p) == Some(i))
            .unwrap_or(i);
        let output = if graph.fused_activation(i).is_some() {
            OutputGrid::Fused
        } else if configured(owner, QuantType::Output) {
            OutputGrid::Owned(owner)
        } else {
            match node.layer {
                Layer::MaxPool2d(_) | Layer::Flatten(_) | Layer::ReLU(_) | Layer::ReLU6(_)
                    if input_on_grid =>
                {
                    OutputGrid::Inherited
                }
                Layer::AvgPool2d(_) | Layer::GlobalAvgPool(_) if input_on_grid => {
                    OutputGrid::Rounded
                }
                _ => OutputGrid::Float,
            }
        };
        let weighted = node.layer.op_type().has_weight();
        plan.push(NodeQuant {
            quantize_input: weighted && !input_on_grid && configured(i, QuantType::Input),
            output,
        });
        on_grid.push(!matches!(output, OutputGrid::Float | OutputGrid::Fused));
    }
    plan
}

/// The grid of every tensor as the bound quantizer's current state defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grids {
    /// The graph input's grid (its first quantized reader's input parameters).
    pub input: Option<QParams>,
    /// Each node's output grid.
    pub outputs: Vec<Option<QParams>>,
}

impl Grids {
    /// The grid of whatever `source` names.
    pub fn of(&self, source: Source) -> Option<QParams> {
        match source {
            Source::Input => self.input,
            Source::Node(j) => self.outputs.get(j).copied().flatten(),
        }
    }
}

/// Resolves [`quant_plan`] against the quantizer's state: which (scale, zero point) each
/// tensor is on. `None` where a tensor is float or its owner has not calibrated yet.
pub fn resolve_grids(graph: &Graph) -> Grids {
    let plan = quant_plan(graph);
    let layer = |i: usize| graph.quant().and_then(|q| q.layer(&graph.nodes()[i].name));
    let mut grids = Grids {
        input: None,
        outputs: Vec::with_capacity(plan.len()),
    };
    for (i, node) in graph.nodes().iter().enumerate() {
        if plan[i].quantize_input && node.inputs[0] == Source::Input && grids.input.is_none() {
            grids.input = layer(i).and_then(|l| l.input_qparams());
        }
        let in_grid = grids.of(node.inputs[0]);
        let grid = match plan[i].output {
            OutputGrid::Owned(owner) => layer(owner).and_then(|l| l.output_qparams()),
            OutputGrid::Inherited | OutputGrid::Rounded => in_grid,
            OutputGrid::Float | OutputGrid::Fused => None,
        };
        grids.outputs.push(grid);
    }
    grids
}
