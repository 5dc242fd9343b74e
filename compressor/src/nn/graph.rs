//! A small dataflow graph of named layers in execution order.
//!
//! Each node reads the graph input or earlier nodes' outputs, so residual adds keep their
//! structure (what channel pruning across a skip connection needs later). Compression
//! attaches here: weight masks by layer name, and one quantizer binding whose hooks run in
//! the forward pass.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::{Module, Result, Tensor, Var};

use super::{bypassed_activation, quant_plan, InputGrid, Layer, OutputGrid, QuantPlan};
use crate::quant::{
    fake_quantize_tensor, requant, round_average_onto_grid, QParams, QuantBinding, StraightThrough,
};

/// Where a node's input comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The graph input.
    Input,
    /// The output of node `i`.
    Node(usize),
}

/// A named layer and its inputs.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub layer: Layer,
    pub inputs: Vec<Source>,
}

/// The model's layers in topological (execution) order; the last node is the output.
#[derive(Clone)]
pub struct Graph {
    nodes: Vec<Node>,
    /// `[C, H, W]` of one input sample.
    input_shape: [usize; 3],
    /// The int8 grid the graph's inputs arrive on, if one is declared.
    input_grid: Option<QParams>,
    masks: BTreeMap<String, Tensor>,
    bias_masks: BTreeMap<String, Tensor>,
    quant: Option<Arc<QuantBinding>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.name).collect::<Vec<_>>(),
            )
            .field("input_shape", &self.input_shape)
            .field("masks", &self.masks.keys().collect::<Vec<_>>())
            .field("quantized", &self.quant.is_some())
            .finish()
    }
}

impl Graph {
    pub fn new(input_shape: [usize; 3]) -> Self {
        Self {
            nodes: Vec::new(),
            input_shape,
            input_grid: Some(crate::data::INPUT_GRID),
            masks: BTreeMap::new(),
            bias_masks: BTreeMap::new(),
            quant: None,
        }
    }

    /// Appends a node and returns the source that reads its output.
    ///
    /// # Panics
    /// When an input refers to a later node or the arity is wrong: graphs are built by
    /// model code, so this is a programming error, not bad user input.
    pub fn push(&mut self, name: impl Into<String>, layer: Layer, inputs: &[Source]) -> Source {
        let name = name.into();
        assert_eq!(
            inputs.len(),
            layer.arity(),
            "node {name}: wrong number of inputs"
        );
        for s in inputs {
            if let Source::Node(i) = s {
                assert!(
                    *i < self.nodes.len(),
                    "node {name}: input {i} is not an earlier node"
                );
            }
        }
        assert!(self.node(&name).is_none(), "duplicate node name {name}");
        self.nodes.push(Node {
            name,
            layer,
            inputs: inputs.to_vec(),
        });
        Source::Node(self.nodes.len() - 1)
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    pub fn input_shape(&self) -> [usize; 3] {
        self.input_shape
    }
    /// The grid the graph's inputs arrive on: [`crate::data::INPUT_GRID`] by default,
    /// since every image the data pipeline hands over lies on it exactly. It becomes
    /// the graph input's int8 grid unless a layer reading the input runs its own `input`
    /// hook (see [`quant_plan`]).
    pub fn input_grid(&self) -> Option<QParams> {
        self.input_grid
    }
    /// Declares the grid inputs arrive on (`None`: arbitrary floats, so the graph input
    /// has a grid only where a layer's `input` hook tracks one).
    pub fn set_input_grid(&mut self, grid: Option<QParams>) {
        self.input_grid = grid;
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// `(op_name, op_type)` of every node, the view a `config_list` is resolved against.
    pub fn layer_infos(&self) -> Vec<crate::config::LayerInfo> {
        self.nodes
            .iter()
            .map(|n| crate::config::LayerInfo {
                name: n.name.clone(),
                op_type: n.layer.op_type(),
            })
            .collect()
    }

    /// Indices of the nodes that read node `i`.
    pub fn consumers(&self, i: usize) -> Vec<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.inputs.contains(&Source::Node(i)))
            .map(|(j, _)| j)
            .collect()
    }

    /// The activation fused after node `i` on export: its single consumer, if that is a
    /// ReLU / ReLU6 (and `i` is not itself an activation).
    pub fn fused_activation(&self, i: usize) -> Option<usize> {
        if self.nodes.get(i)?.layer.is_activation() {
            return None;
        }
        match self.consumers(i).as_slice() {
            [j] if self.nodes[*j].layer.is_activation() => Some(*j),
            _ => None,
        }
    }

    pub(crate) fn nodes_mut(&mut self) -> &mut Vec<Node> {
        &mut self.nodes
    }

    // ----- compression attachments -------------------------------------------------

    /// Weight masks by layer name (1 keeps a weight, 0 prunes it); a batch norm's mask
    /// covers its γ.
    pub fn masks(&self) -> &BTreeMap<String, Tensor> {
        &self.masks
    }
    pub fn set_mask(&mut self, name: &str, mask: Tensor) {
        self.masks.insert(name.to_string(), mask);
    }
    /// Bias masks by layer name (a filter pruner's removed channels; a batch norm's β).
    pub fn bias_masks(&self) -> &BTreeMap<String, Tensor> {
        &self.bias_masks
    }
    pub fn set_bias_mask(&mut self, name: &str, mask: Tensor) {
        self.bias_masks.insert(name.to_string(), mask);
    }
    /// Drops both masks of a layer (a folded batch norm, a layer that left the graph).
    pub fn remove_masks(&mut self, name: &str) {
        self.masks.remove(name);
        self.bias_masks.remove(name);
    }
    /// Multiplies every masked parameter by its mask, in place, so pruned weights,
    /// biases and batch-norm γ/β are exactly zero in checkpoints and exports and
    /// optimizer updates cannot revive them.
    pub fn apply_masks_to_weights(&self) -> Result<()> {
        let weights = self
            .masks
            .iter()
            .map(|(name, m)| (self.node(name).and_then(|n| n.layer.maskable_weight()), m));
        let biases = self
            .bias_masks
            .iter()
            .map(|(name, m)| (self.node(name).and_then(|n| n.layer.maskable_bias()), m));
        for (param, mask) in weights.chain(biases) {
            if let Some(param) = param {
                Var::from_tensor(param)?.set(&(param * mask)?)?;
            }
        }
        Ok(())
    }
    pub fn quant(&self) -> Option<&Arc<QuantBinding>> {
        self.quant.as_ref()
    }
    pub fn set_quant(&mut self, binding: Option<Arc<QuantBinding>>) {
        self.quant = binding;
    }

    /// The weight a layer computes with: stored weight × mask. (Fake quantization is
    /// applied on top in the forward pass.)
    pub fn masked_weight(&self, name: &str, weight: &Tensor) -> Result<Tensor> {
        match self.masks.get(name) {
            Some(m) => weight * m,
            None => Ok(weight.clone()),
        }
    }

    /// Layer `name`'s weight on the bound quantizer's integers: the masked weight
    /// through [`QuantBinding::weight_integers`], the same function the forward pass's
    /// weight hook uses. Every exporter reads quantized weights here. `None` where the
    /// layer has no weight, no quantizer quantizes it, or the quantizer has no integer
    /// form.
    pub fn weight_integers(&self, name: &str) -> Result<Option<crate::quant::WeightIntegers>> {
        let (Some(binding), Some(weight)) = (
            self.quant.as_deref(),
            self.node(name).and_then(|n| n.layer.weight()),
        ) else {
            return Ok(None);
        };
        binding.weight_integers(name, &self.masked_weight(name, weight)?)
    }

    // ----- forward ------------------------------------------------------------------

    /// Eval-mode forward: batch norm uses running statistics, range trackers are frozen.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_t(x, false)
    }

    /// Forward pass; `train` selects batch statistics and lets quantizers update ranges.
    /// With a quantizer bound, fake quantization happens where [`quant_plan`] says.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_observed(x, train, &mut |_, _| Ok(()))
    }

    /// [`forward_t`](Self::forward_t), handing every node's output (by node index) to
    /// `observe` as it is computed: activation statistics (APoZ, mean activation) read
    /// the graph this way.
    pub fn forward_observed(
        &self,
        x: &Tensor,
        train: bool,
        observe: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        self.forward_inner(x, train, false, observe)
    }

    /// The eval forward as the int8 runtime computes it: every quantized Conv2d /
    /// Linear output goes through the deployed op's output stage (int32 bias, the
    /// fixed-point requantization, clamps; [`crate::quant::requant`]) instead of the
    /// float arithmetic of [`forward`](Self::forward), which keeps plain QDQ semantics
    /// (what QAT trains with and the ONNX export computes). The two agree but for float
    /// error: both add the bias on its int32 grid and round once.
    /// [`crate::export::packed::deployed_eval`] checks the packed model against this one
    /// output for output, and against [`forward`](Self::forward) image for image.
    pub fn forward_deployed(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_inner(x, false, true, &mut |_, _| Ok(()))
    }

    fn forward_inner(
        &self,
        x: &Tensor,
        train: bool,
        deployed: bool,
        observe: &mut dyn FnMut(usize, &Tensor) -> Result<()>,
    ) -> Result<Tensor> {
        let quant = self.quant.as_deref();
        let plan = quant_plan(self);
        let mut values: Vec<Tensor> = Vec::with_capacity(self.nodes.len());
        // The grid each value is on (known once its owner has calibrated).
        let mut grids: Vec<Option<QParams>> = Vec::with_capacity(self.nodes.len());
        let mut input_grid: Option<QParams> = None;
        // Inputs on a declared grid are rounded onto it, as the chip's input
        // quantization does (exact for the data pipeline's images).
        let declared;
        let x = match (quant, plan.input) {
            (Some(_), InputGrid::Declared(g)) => {
                input_grid = Some(g);
                declared = fake_quantize_tensor(x, g, &StraightThrough)?;
                &declared
            }
            _ => x,
        };
        // Per node: for a sign output and the max pools / flattens after it, the owner
        // and the pre-activation (pooled and flattened alike), see below.
        let mut pre_sign: Vec<Option<(usize, Tensor)>> = Vec::with_capacity(self.nodes.len());
        // Per node: the bias an eval forward adds in place of the float one (on its int32
        // grid, `deployed_bias`); `forward_deployed`'s output stage reuses it.
        let mut eval_biases: Vec<Option<Tensor>> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let input = |k: usize| -> &Tensor {
                match node.inputs[k] {
                    Source::Input => x,
                    Source::Node(j) => &values[j],
                }
            };
            let in_grid = match node.inputs[0] {
                Source::Input => input_grid,
                Source::Node(j) => grids[j],
            };
            let quant_input = |t: &Tensor| -> Result<Tensor> {
                match quant {
                    Some(q) if plan[i].quantize_input => q.quantize_input(&node.name, t, train),
                    _ => Ok(t.clone()),
                }
            };
            // After the weight hook has recorded this forward's weight scales.
            let bias_on_grid = || -> Result<Option<Tensor>> {
                if train {
                    return Ok(None);
                }
                self.deployed_bias(&plan, i, self.layer_input_grid(&plan, i, in_grid))
            };
            let mut eval_bias = None;
            let effective_weight = |w: &Tensor| -> Result<Tensor> {
                let w = self.masked_weight(&node.name, w)?;
                match quant {
                    Some(q) => q.quantize_weight(&node.name, &w, train),
                    None => Ok(w),
                }
            };
            let y = match &node.layer {
                // A sign activation owns this output: it binarizes the pre-activation.
                Layer::ReLU(_) | Layer::ReLU6(_) if bypassed_activation(self, &plan, i) => {
                    input(0).clone()
                }
                Layer::Conv2d(c) => {
                    let xin = quant_input(input(0))?;
                    let w = effective_weight(c.weight())?;
                    eval_bias = bias_on_grid()?;
                    c.forward_with(&xin, &w, eval_bias.as_ref().or(c.bias()))?
                }
                Layer::Linear(l) => {
                    let xin = quant_input(input(0))?;
                    let w = effective_weight(l.weight())?;
                    eval_bias = bias_on_grid()?;
                    l.forward_with(&xin, &w, eval_bias.as_ref().or(l.bias()))?
                }
                Layer::BatchNorm2d(b) => b.forward_t(input(0), train)?,
                Layer::ReLU(a) => a.forward(input(0))?,
                Layer::ReLU6(a) => a.forward(input(0))?,
                Layer::MaxPool2d(p) => p.forward(input(0))?,
                Layer::AvgPool2d(p) => p.forward(input(0))?,
                Layer::GlobalAvgPool(p) => p.forward(input(0))?,
                Layer::Flatten(f) => f.forward(input(0))?,
                Layer::Add(a) => a.forward(input(0), input(1))?,
            };
            let carried = match node.inputs[0] {
                Source::Node(j) => pre_sign[j].as_ref(),
                Source::Input => None,
            };
            let mut carry = None;
            let (y, grid) = match (quant, plan[i].output) {
                (Some(q), OutputGrid::Owned(owner)) => {
                    let name = &self.nodes[owner].name;
                    let binary = q.binary_output(name);
                    if binary {
                        carry = Some((owner, y.clone()));
                    }
                    let fq = q.quantize_output(name, &y, train)?;
                    let grid = q.layer(name).and_then(|l| l.output_qparams());
                    // `forward_deployed` (eval only, so no gradient to keep): the value
                    // the deployed op computes, its int32 bias and fixed-point
                    // requantization. Nothing of it runs in the training forward.
                    let y = if deployed && !binary {
                        let producer = match self.nodes[owner].inputs[0] {
                            Source::Input => input_grid,
                            Source::Node(j) => grids[j],
                        };
                        let owner_in = self.layer_input_grid(&plan, owner, producer);
                        let (pre, bias) = if owner == i {
                            (&y, eval_bias.as_ref())
                        } else {
                            (&values[owner], eval_biases[owner].as_ref())
                        };
                        match (owner_in, grid) {
                            (Some(g_in), Some(g_out)) => self
                                .deployed_output(owner, i, pre, bias, g_in, g_out)?
                                .unwrap_or(fq),
                            _ => fq,
                        }
                    } else {
                        fq
                    };
                    (y, grid)
                }
                // After a sign output, a max pool (or flatten) re-runs the owner's hook on
                // the pooled pre-activation: the same ±1 (the max commutes with the
                // sign), but the backward reaches each window's largest pre-activation
                // only, as in the BNN paper's conv → pool → sign order, instead of every
                // tied +1 of the window.
                (Some(q), OutputGrid::Inherited) if carried.is_some() => {
                    let pooled = match (&node.layer, carried) {
                        (Layer::MaxPool2d(p), Some((owner, pre))) => {
                            Some((*owner, p.forward(pre)?))
                        }
                        (Layer::Flatten(f), Some((owner, pre))) => Some((*owner, f.forward(pre)?)),
                        _ => None,
                    };
                    match pooled {
                        Some((owner, pre)) => {
                            let y = q.quantize_output(&self.nodes[owner].name, &pre, train)?;
                            carry = Some((owner, pre));
                            (y, in_grid)
                        }
                        None => (y, in_grid),
                    }
                }
                (_, OutputGrid::Inherited) => (y, in_grid),
                (_, OutputGrid::Rounded) => match (in_grid, average_count(&node.layer, input(0))) {
                    (Some(g), Some(count)) => (
                        round_average_onto_grid(&y, g, count, &StraightThrough)?,
                        Some(g),
                    ),
                    _ => (y, None),
                },
                _ => (y, None),
            };
            if let (Some(q), true, Source::Input) = (quant, plan[i].quantize_input, node.inputs[0])
            {
                input_grid = q.layer(&node.name).and_then(|l| l.input_qparams());
            }
            observe(i, &y)?;
            eval_biases.push(eval_bias);
            pre_sign.push(carry);
            values.push(y);
            grids.push(grid);
        }
        values
            .pop()
            .ok_or_else(|| candle_core::Error::Msg("empty graph".into()))
    }
}

impl Graph {
    /// The output of Conv2d / Linear node `owner` as the int8 runtime computes it from
    /// its float pre-activation `pre` ([`crate::quant::requant`]), with the activation
    /// node `act` fused when it is not `owner` itself; `on_grid` is the bias the eval
    /// forward added in place of the float one, if any. `None` where the layer's
    /// weights have no recorded integer scales (not quantized).
    fn deployed_output(
        &self,
        owner: usize,
        act: usize,
        pre: &Tensor,
        on_grid: Option<&Tensor>,
        input: QParams,
        output: QParams,
    ) -> Result<Option<Tensor>> {
        let Some(q) = self.quant.as_deref() else {
            return Ok(None);
        };
        let bias = match &self.nodes[owner].layer {
            Layer::Conv2d(c) => on_grid.or(c.bias()),
            Layer::Linear(l) => on_grid.or(l.bias()),
            _ => return Ok(None),
        };
        let Some(state) = q.layer(&self.nodes[owner].name).map(|l| l.state()) else {
            return Ok(None);
        };
        if state.weight_bits.is_none() || state.weight_scales.is_empty() {
            return Ok(None);
        }
        let activation = match (act != owner).then(|| &self.nodes[act].layer) {
            Some(Layer::ReLU(_)) => Some(None),
            Some(Layer::ReLU6(_)) => Some(Some(6.0)),
            _ => None,
        };
        let stage = requant::OutputStage {
            input,
            weight_scales: &state.weight_scales,
            output,
            clamps: requant::activation_clamps(activation, output),
        };
        requant::simulate_output_stage(pre, bias, &stage).map(Some)
    }
}

impl Graph {
    /// The grid node `i`'s layer reads its input on: its own `input` hook's, where the
    /// plan quantizes its input, else `producer`, the grid of the value it reads.
    pub fn layer_input_grid(
        &self,
        plan: &QuantPlan,
        i: usize,
        producer: Option<QParams>,
    ) -> Option<QParams> {
        if plan[i].quantize_input {
            self.quant
                .as_deref()
                .and_then(|q| q.layer(&self.nodes[i].name))
                .and_then(|l| l.input_qparams())
        } else {
            producer
        }
    }

    /// The bias of Conv2d / Linear node `i` on its int32 grid
    /// ([`requant::bias_on_grid`]) where the node deploys as an int8 output stage: its
    /// weights have recorded integer scales, its input lies on `in_grid`, and it owns an
    /// int8 output grid (its own, or its fused activation's). `None` anywhere else (no
    /// bias, float, binary outputs, whose sign thresholds use the float bias).
    pub fn deployed_bias(
        &self,
        plan: &QuantPlan,
        i: usize,
        in_grid: Option<QParams>,
    ) -> Result<Option<Tensor>> {
        let (Some(q), Some(in_grid)) = (self.quant.as_deref(), in_grid) else {
            return Ok(None);
        };
        let node = &self.nodes[i];
        let Some(bias) = (match &node.layer {
            Layer::Conv2d(c) => c.bias(),
            Layer::Linear(l) => l.bias(),
            _ => None,
        }) else {
            return Ok(None);
        };
        let owns_output = plan.nodes.iter().any(|n| n.output == OutputGrid::Owned(i));
        let Some(layer) = q.layer(&node.name) else {
            return Ok(None);
        };
        let state = layer.state();
        if !owns_output
            || q.binary_output(&node.name)
            || state.weight_bits.is_none()
            || state.weight_scales.is_empty()
        {
            return Ok(None);
        }
        requant::bias_on_grid(bias, in_grid.scale, &state.weight_scales).map(Some)
    }
}

/// How many values an average pool averages (window area; all of H×W for the global one).
pub fn average_count(layer: &Layer, input: &Tensor) -> Option<usize> {
    match layer {
        Layer::AvgPool2d(p) => Some(p.0.kernel_size * p.0.kernel_size),
        Layer::GlobalAvgPool(_) => input.dims4().ok().map(|(_, _, h, w)| h * w),
        _ => None,
    }
}

impl Module for Graph {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Graph::forward(self, x)
    }
}
