//! Where fake quantization happens in a graph with a quantizer bound.
//!
//! The int8 runtime gives every tensor one grid (scale, zero point). The plan makes the
//! float graph do the same, and the forward pass, the ONNX exporter and the packed-model
//! exporter all read it, so they agree by construction:
//!
//! - the graph input is on the grid of the first layer reading it whose config
//!   quantizes its `input` (a tracked range, as NNI does); without one, on the grid the
//!   graph declares ([`Graph::input_grid`]: the data pipeline's exact int8 grid, scale
//!   1/128, zero point 0), onto which the forward pass rounds it;
//! - a Conv2d / Linear runs its `input` hook only when its input is not on a grid yet
//!   (after layers that are not quantized);
//! - its `output` hook runs after its fused ReLU/ReLU6 (the activation that is its only
//!   consumer), or right after it when there is none; Add may own an output grid too;
//! - an Add that no config quantizes but whose inputs are all on grids owns one anyway
//!   (the chip cannot add without one): [`implicit_output_grids`] gives it the config
//!   `{"quant_types": ["output"]}` with the widest bits of its inputs when the quantizer
//!   is bound, so its range is tracked by the same `output` hook as any other;
//! - max pool, flatten and unfused activations keep their input's grid (their values
//!   stay on it); average pools keep it too but round back onto it.
//! - a layer whose `output` hook is a sign activation (BNN's 1-bit outputs,
//!   [`crate::quant::Quantizer::binary_output`]) owns its grid like any other, but its
//!   hook sees the pre-activation: a ReLU / ReLU6 fused after it is bypassed (passes its
//!   input through, [`bypassed_activation`]), since the ±1 replace the activation; the
//!   max pools and flattens that inherit the ±1 grid re-run the hook on the pooled
//!   pre-activation (equal values, the gradient of sign-after-pool).

use std::collections::BTreeMap;

use super::{Graph, Layer, OpType, Source};
use crate::config::{LayerConfig, QuantType};
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

/// Where the graph input's grid comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputGrid {
    /// No grid: no quantizer bound, or no grid declared and no `input` hook reads it.
    Float,
    /// Node `i`'s `input` hook tracks it (the first layer reading the graph input whose
    /// config quantizes `input`).
    Hook(usize),
    /// The grid the graph declares ([`Graph::input_grid`]); the forward pass rounds the
    /// input onto it (a no-op for the data pipeline's images, which lie on it).
    Declared(QParams),
}

/// The plan for the graph input and every node.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantPlan {
    pub input: InputGrid,
    pub nodes: Vec<NodeQuant>,
}

impl std::ops::Index<usize> for QuantPlan {
    type Output = NodeQuant;
    fn index(&self, i: usize) -> &NodeQuant {
        &self.nodes[i]
    }
}

/// Bits of an integer grid (8 for int8's 256 levels).
fn grid_bits(q: &QParams) -> u8 {
    let levels = i64::from(q.qmax) - i64::from(q.qmin) + 1;
    levels.max(1).ilog2() as u8
}

/// The plan for every node (all `Float`, no input hooks, when no quantizer is bound).
pub fn quant_plan(graph: &Graph) -> QuantPlan {
    let Some(binding) = graph.quant() else {
        let float = NodeQuant {
            quantize_input: false,
            output: OutputGrid::Float,
        };
        return QuantPlan {
            input: InputGrid::Float,
            nodes: vec![float; graph.nodes().len()],
        };
    };
    let bits = |i: usize, t: QuantType| {
        binding
            .layer(&graph.nodes()[i].name)
            .and_then(|l| l.config.bits(t))
    };
    walk(graph, &bits, None)
}

/// The configs the plan adds to `configs` (a quantizer's resolved `config_list`): an
/// output grid for every Add that no config quantizes but whose inputs all end up on
/// grids, with the widest bits among them. [`crate::quant::Quantizer::compress`] binds
/// them with the rest, marked implicit.
pub fn implicit_output_grids(graph: &Graph, configs: &[LayerConfig]) -> Vec<LayerConfig> {
    let by_name: BTreeMap<&str, &LayerConfig> =
        configs.iter().map(|c| (c.name.as_str(), c)).collect();
    let bits = |i: usize, t: QuantType| {
        by_name
            .get(graph.nodes()[i].name.as_str())
            .and_then(|c| c.bits(t))
    };
    let mut implicit = Vec::new();
    walk(graph, &bits, Some(&mut implicit));
    implicit
        .into_iter()
        .map(|(i, b)| {
            let node = &graph.nodes()[i];
            LayerConfig {
                name: node.name.clone(),
                op_type: node.layer.op_type(),
                // No dict of the config_list chose it.
                index: usize::MAX,
                sparsity: None,
                quant_bits: [(QuantType::Output, b)].into_iter().collect(),
                extra: BTreeMap::new(),
            }
        })
        .collect()
}

/// One pass over the nodes in execution order. `bits(i, t)`: the configured width of
/// node `i`'s quant type `t`, if quantized. With `implicit`, an unconfigured Add whose
/// inputs are all on grids owns its output grid and is recorded with the widest of its
/// inputs' bits (without it such an Add's output stays float).
fn walk(
    graph: &Graph,
    bits: &dyn Fn(usize, QuantType) -> Option<u8>,
    mut implicit: Option<&mut Vec<(usize, u8)>>,
) -> QuantPlan {
    let n = graph.nodes().len();
    let hook = graph.nodes().iter().enumerate().position(|(i, node)| {
        node.inputs.first() == Some(&Source::Input)
            && node.layer.op_type().has_weight()
            && bits(i, QuantType::Input).is_some()
    });
    let (input, input_bits) = match (hook, graph.input_grid()) {
        (Some(i), _) => (InputGrid::Hook(i), None),
        (None, Some(q)) => (InputGrid::Declared(q), Some(grid_bits(&q))),
        (None, None) => (InputGrid::Float, None),
    };
    let mut nodes: Vec<NodeQuant> = Vec::with_capacity(n);
    // The bits of the grid each node's output is on (`None`: float, or fused).
    let mut on_grid: Vec<Option<u8>> = Vec::with_capacity(n);
    for (i, node) in graph.nodes().iter().enumerate() {
        let source_bits = |s: &Source| match s {
            Source::Node(j) => on_grid[*j],
            Source::Input => input_bits,
        };
        let in_bits = node.inputs.first().and_then(source_bits);
        let owner = (0..i)
            .find(|&p| graph.fused_activation(p) == Some(i))
            .unwrap_or(i);
        let owner_node = &graph.nodes()[owner];
        let implicit_bits = || {
            let add = owner_node.layer.op_type() == OpType::Add;
            let inputs: Option<Vec<u8>> = owner_node.inputs.iter().map(source_bits).collect();
            inputs.filter(|_| add).and_then(|b| b.into_iter().max())
        };
        let (output, grid) = if graph.fused_activation(i).is_some() {
            (OutputGrid::Fused, None)
        } else if let Some(b) = bits(owner, QuantType::Output) {
            (OutputGrid::Owned(owner), Some(b))
        } else if let (Some(list), Some(b)) = (implicit.as_deref_mut(), implicit_bits()) {
            list.push((owner, b));
            (OutputGrid::Owned(owner), Some(b))
        } else {
            match node.layer {
                Layer::MaxPool2d(_) | Layer::Flatten(_) | Layer::ReLU(_) | Layer::ReLU6(_)
                    if in_bits.is_some() =>
                {
                    (OutputGrid::Inherited, in_bits)
                }
                Layer::AvgPool2d(_) | Layer::GlobalAvgPool(_) if in_bits.is_some() => {
                    (OutputGrid::Rounded, in_bits)
                }
                _ => (OutputGrid::Float, None),
            }
        };
        let weighted = node.layer.op_type().has_weight();
        nodes.push(NodeQuant {
            quantize_input: weighted && in_bits.is_none() && bits(i, QuantType::Input).is_some(),
            output,
        });
        on_grid.push(grid);
    }
    QuantPlan { input, nodes }
}

/// Whether node `i` is a ReLU / ReLU6 fused after a layer whose `output` hook is a sign
/// activation ([`crate::quant::Quantizer::binary_output`]): the forward pass and the
/// exporters pass its input through unchanged, and the owner's hook binarizes the
/// pre-activation.
pub fn bypassed_activation(graph: &Graph, plan: &QuantPlan, i: usize) -> bool {
    match (graph.quant(), plan.nodes.get(i).map(|n| n.output)) {
        (Some(q), Some(OutputGrid::Owned(owner))) if owner != i => {
            q.binary_output(&graph.nodes()[owner].name)
        }
        _ => false,
    }
}

/// The grid of every tensor as the bound quantizer's current state defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grids {
    /// The graph input's grid (see [`InputGrid`]).
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
        input: match plan.input {
            InputGrid::Float => None,
            InputGrid::Hook(i) => layer(i).and_then(|l| l.input_qparams()),
            InputGrid::Declared(q) => Some(q),
        },
        outputs: Vec::with_capacity(plan.nodes.len()),
    };
    for (i, node) in graph.nodes().iter().enumerate() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::quant::{QatQuantizer, Quantizer};
    use candle_core::Device;

    fn bound(name: &str, config: &str) -> Model {
        let mut model = Model::new(name, 10, &Device::Cpu, 0).unwrap();
        crate::compress::fold_batch_norms(&mut model).unwrap();
        let config = ConfigList::from_json_str(config).unwrap();
        QatQuantizer::new()
            .compress(&mut model.graph, &config)
            .unwrap();
        model
    }

    const ALL: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#;
    const NNI: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 8, "output": 6}}]"#;

    #[test]
    fn the_graph_input_is_on_the_first_input_hook_or_the_declared_grid() {
        let model = bound("lenet5", ALL);
        let conv1 = model.graph.nodes().iter().position(|n| n.name == "conv1");
        assert_eq!(
            quant_plan(&model.graph).input,
            InputGrid::Hook(conv1.unwrap())
        );
        assert!(quant_plan(&model.graph)[conv1.unwrap()].quantize_input);

        let mut model = bound("lenet5", NNI);
        let plan = quant_plan(&model.graph);
        assert_eq!(plan.input, InputGrid::Declared(crate::data::INPUT_GRID));
        assert!(plan.nodes.iter().all(|n| !n.quantize_input));
        assert_eq!(
            resolve_grids(&model.graph).input,
            Some(crate::data::INPUT_GRID)
        );
        model.graph.set_input_grid(None);
        assert_eq!(quant_plan(&model.graph).input, InputGrid::Float);

        // mlp flattens the input first: the flatten keeps the declared grid, so fc1's
        // input hook has nothing to do.
        let model = bound("mlp", ALL);
        let plan = quant_plan(&model.graph);
        assert!(matches!(plan.input, InputGrid::Declared(_)));
        assert_eq!(plan[0].output, OutputGrid::Inherited);
        assert!(plan.nodes.iter().all(|n| !n.quantize_input));
    }

    #[test]
    fn residual_adds_get_implicit_output_grids() {
        let model = bound("resnet8", NNI);
        let binding = model.graph.quant().unwrap();
        let implicit: Vec<(&str, Option<u8>)> = binding
            .layers()
            .iter()
            .filter(|(_, l)| l.is_implicit())
            .map(|(name, l)| (name.as_str(), l.config.bits(QuantType::Output)))
            .collect();
        // The widest of the inputs' bits: 6 (conv outputs), not the input grid's 8.
        assert_eq!(
            implicit,
            [
                ("stack1.add", Some(6)),
                ("stack2.add", Some(6)),
                ("stack3.add", Some(6))
            ]
        );
        let plan = quant_plan(&model.graph);
        let add = model
            .graph
            .nodes()
            .iter()
            .position(|n| n.name == "stack1.add");
        let relu = model
            .graph
            .nodes()
            .iter()
            .position(|n| n.name == "stack1.relu2");
        assert_eq!(plan[add.unwrap()].output, OutputGrid::Fused);
        assert_eq!(plan[relu.unwrap()].output, OutputGrid::Owned(add.unwrap()));

        // An explicit Add dict wins, and an Add whose input is float gets nothing.
        let explicit = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
                           {"op_names": ["stack1.add"], "quant_types": ["output"], "quant_bits": 7},
                           {"op_names": ["stack2.block2.conv"], "quant_types": ["weight"], "quant_bits": 8}]"#;
        let model = bound("resnet8", explicit);
        let binding = model.graph.quant().unwrap();
        let stack1 = binding.layer("stack1.add").unwrap();
        assert!(!stack1.is_implicit());
        assert_eq!(stack1.config.bits(QuantType::Output), Some(7));
        assert!(binding.layer("stack2.add").is_none());
        assert!(binding.layer("stack3.add").unwrap().is_implicit());
    }
}
