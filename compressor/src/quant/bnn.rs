//! Binarized neural networks (Courbariaux, Hubara et al. 2016; NNI's `BNNQuantizer`),
//! with the first and last layers kept at int8 in the same plan.
//!
//! Each dict gives its layers `quant_bits` 1 or 8 per quant type:
//!
//! - **1-bit weights**: `sign(w)` (`sign(0) = +1`) times a per-output-channel scale
//!   `mean |w_c|` ([`WeightIntegers::binary`], XNOR-Net's α). Plain ±1 weights, as in
//!   the BNN paper, rely on a batch norm after every layer to restore the magnitudes;
//!   LeNet-5 has none, and the scale keeps each channel's magnitude instead. It costs
//!   nothing on the chip: the per-channel scale folds into the requantization
//!   multiplier (or the sign threshold) that every layer has anyway. The gradient is
//!   straight-through to the real-valued latent weights, which are clipped to [-1, 1]
//!   after every optimizer step ([`Quantizer::after_step`]), as the paper does.
//! - **1-bit outputs**: the sign activation `sign(x)` (±1, `sign(0) = +1`) of the
//!   layer's pre-activation, replacing its activation: a ReLU / ReLU6 fused after the
//!   layer is bypassed ([`Quantizer::binary_output`]; sign ∘ ReLU would be constantly
//!   +1). The backward is the clipped straight-through estimator (the gradient passes
//!   where |x| ≤ 1, else 0), a [`QuantGrad`] applied with the range [-1, 1]. The output
//!   is on [`QParams::binary`]: the int8 values ±1 at scale 1, zero point 0. Max pools
//!   and flattens after the layer keep the ±1; the forward pass re-runs the sign on the
//!   pooled pre-activation there (the same values: the max commutes with the sign), so
//!   the gradient reaches each window's largest pre-activation, as in the paper's
//!   conv → pool → BN → sign order, instead of every tied +1 of the window (LeNet-5 on
//!   Fashion-MNIST, `configs/bnn.json`, 2 fine-tune epochs: 85.5 % against 84.1 %).
//! - **8 bits**: exactly as `QAT_Quantizer` (symmetric per-channel int8 weights,
//!   EMA-tracked asymmetric int8 activations, [`EmaActivations`]), for the first layer,
//!   which reads the real-valued image, and the last, whose logits must not be ±1.
//!   NNI's users write this split in the `config_list`, and so do ours
//!   (`configs/bnn.json`).
//!
//! Checked before anything trains (each a config error naming the layer): bit widths
//! other than 1 and 8; a 1-bit `input` (binarize the producer's output instead); 1 bit
//! on an op other than Conv2d / Linear; 1-bit weights on a depthwise Conv2d (its k×k
//! filter per channel is too small to binarize, and the chip's binary ops have no
//! depthwise form); a 1-bit output that reaches an Add, an average pool, an unfused
//! ReLU, a batch norm that does not fold, or the graph's output (none of which keep ±1
//! values binary: only max pooling and flattening do).

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::{
    fake_quantize_weight_recorded, ClippedStraightThrough, EmaActivations, QParams, QuantContext,
    QuantGrad, QuantRange, QuantState, Quantizer, Range, StraightThrough, WeightIntegers,
};
use crate::config::{ConfigError, LayerConfig, QuantType, Schema};
use crate::nn::{Graph, Layer, OpType};

const NAME: &str = "BNNQuantizer";

/// The bit widths a BNN dict may give: binary or int8.
pub const BNN_BITS: [u8; 2] = [1, 8];

/// Binary weights and sign activations where a dict says 1 bit, QAT's int8 where it
/// says 8.
#[derive(Clone)]
pub struct BnnQuantizer {
    activations: EmaActivations,
    /// Backward of weights (binary and int8) and of int8 activations.
    grad: Arc<dyn QuantGrad>,
    /// Backward of the sign activation.
    sign_grad: Arc<dyn QuantGrad>,
    /// Latent weights of binary layers are clipped to `[-clip, clip]` after each step.
    clip: f32,
}

impl Default for BnnQuantizer {
    fn default() -> Self {
        Self {
            activations: EmaActivations::default(),
            grad: Arc::new(StraightThrough),
            sign_grad: Arc::new(ClippedStraightThrough),
            clip: 1.0,
        }
    }
}

impl BnnQuantizer {
    pub fn new() -> Self {
        Self::default()
    }
    /// Replaces the backward rule of the weights and of int8 activations
    /// (straight-through by default).
    pub fn with_grad(self, grad: Arc<dyn QuantGrad>) -> Self {
        Self { grad, ..self }
    }
    /// Replaces the backward rule of the sign activation (clipped straight-through
    /// over [-1, 1] by default).
    pub fn with_sign_grad(self, sign_grad: Arc<dyn QuantGrad>) -> Self {
        Self { sign_grad, ..self }
    }
    /// The EMA decay of tracked int8 activation ranges (0.99 by default, as QAT).
    pub fn with_ema_decay(self, ema_decay: f32) -> Self {
        Self {
            activations: EmaActivations::new(ema_decay),
            ..self
        }
    }

    /// The weight's integers: binary (±1, scale `mean |w_c|`) at 1 bit, symmetric int8
    /// otherwise (one function for the forward pass and the exporters).
    fn integers(weight: &Tensor, ctx: &QuantContext) -> Result<WeightIntegers> {
        match ctx.bits(QuantType::Weight) {
            1 => WeightIntegers::binary(weight),
            bits => WeightIntegers::symmetric(weight, bits),
        }
    }

    /// The sign activation: ±1 (`sign(0) = +1`) with `grad`'s gradient over [-1, 1].
    pub fn sign(x: &Tensor, grad: &dyn QuantGrad) -> Result<Tensor> {
        let xd = x.detach();
        let sign = ((xd.ge(0f64)?.to_dtype(xd.dtype())? * 2.0)? - 1.0)?;
        grad.apply(
            x,
            &sign,
            QuantRange {
                low: -1.0,
                high: 1.0,
            },
        )
    }
}

/// The Conv2d and Linear layers (node indices, in the order found) that read layer
/// `start`'s ±1 output through max pools and flattens only, or why its output would not
/// stay binary on the way to them.
pub fn sign_readers(graph: &Graph, start: usize) -> std::result::Result<Vec<usize>, String> {
    let nodes = graph.nodes();
    let mut owner_end = start;
    // A batch norm the layer alone feeds folds into it before quantization.
    while let [j] = graph.consumers(owner_end).as_slice() {
        match nodes[*j].layer {
            Layer::BatchNorm2d(_) if matches!(nodes[owner_end].layer, Layer::Conv2d(_)) => {
                owner_end = *j
            }
            _ => break,
        }
    }
    // The fused activation is replaced by the sign.
    if let [j] = graph.consumers(owner_end).as_slice() {
        if nodes[*j].layer.is_activation() {
            owner_end = *j;
        }
    }
    let mut readers = Vec::new();
    let mut stack = vec![owner_end];
    while let Some(k) = stack.pop() {
        let consumers = graph.consumers(k);
        if consumers.is_empty() {
            return Err(
                "its ±1 output would be the graph's output (the logits); keep the last \
                 layer's output at 8 bits"
                    .to_string(),
            );
        }
        for c in consumers {
            let name = &nodes[c].name;
            let why = match nodes[c].layer {
                Layer::MaxPool2d(_) | Layer::Flatten(_) => {
                    stack.push(c);
                    continue;
                }
                Layer::Conv2d(_) | Layer::Linear(_) => {
                    readers.push(c);
                    continue;
                }
                Layer::Add(_) => format!("the Add `{name}`, whose sums of ±1 values"),
                Layer::AvgPool2d(_) | Layer::GlobalAvgPool(_) => {
                    format!("the average pool `{name}`, whose averages of ±1 values")
                }
                Layer::ReLU(_) | Layer::ReLU6(_) => format!(
                    "the activation `{name}` (not the layer's only consumer, so not replaced \
                     by the sign), whose 0 and 1"
                ),
                Layer::BatchNorm2d(_) => {
                    format!(
                        "the batch norm `{name}` (not folded into a convolution), whose outputs"
                    )
                }
            };
            return Err(format!(
                "its ±1 output reaches {why} are not binary; binarize outputs only where \
                 max pooling or flattening leads to Conv2d / Linear layers, and give this \
                 one 8 bits"
            ));
        }
    }
    Ok(readers)
}

impl Quantizer for BnnQuantizer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        Schema::quantization(NAME, vec![OpType::Conv2d, OpType::Linear], 1..=8).with_supported(
            vec![
                OpType::Conv2d,
                OpType::Linear,
                OpType::Add,
                OpType::ReLU,
                OpType::ReLU6,
            ],
        )
    }

    fn check(&self, graph: &Graph, layers: &[LayerConfig], source: &str) -> crate::Result<()> {
        for layer in layers {
            let reject = |message: String| -> crate::Error {
                ConfigError::Rejected {
                    file: source.to_string(),
                    index: layer.index,
                    algorithm: NAME,
                    message: format!("`{}`: {message}", layer.name),
                }
                .into()
            };
            for (&t, &bits) in &layer.quant_bits {
                if !BNN_BITS.contains(&bits) {
                    return Err(reject(format!(
                        "{bits} bits for `{t}`; {NAME} takes quant_bits 1 (binary) or 8 \
                         (int8, as QAT_Quantizer)"
                    )));
                }
            }
            if layer.bits(QuantType::Input) == Some(1) {
                return Err(reject(
                    "a 1-bit `input`; BNNQuantizer binarizes a tensor where it is produced: \
                     give the layer before it a 1-bit `output`, and this one's input 8 bits"
                        .to_string(),
                ));
            }
            let binary = |t| layer.bits(t) == Some(1);
            if !(binary(QuantType::Weight) || binary(QuantType::Output)) {
                continue;
            }
            let Some(i) = graph.nodes().iter().position(|n| n.name == layer.name) else {
                continue;
            };
            match &graph.nodes()[i].layer {
                Layer::Conv2d(c) if c.config().is_depthwise() && binary(QuantType::Weight) => {
                    return Err(reject(
                        "a depthwise Conv2d cannot have binary weights (one k×k filter per \
                         channel is too small to binarize, and the chip's binary ops have \
                         no depthwise form); give it 8 bits"
                            .to_string(),
                    ));
                }
                Layer::Conv2d(_) | Layer::Linear(_) => {}
                other => {
                    return Err(reject(format!(
                        "{} layers cannot be binary; only Conv2d and Linear layers take 1 \
                         bit (8 bits for Add and activations)",
                        other.op_type()
                    )));
                }
            }
            if binary(QuantType::Output) {
                if let Err(why) = sign_readers(graph, i) {
                    return Err(reject(why));
                }
            }
        }
        Ok(())
    }

    fn binary_output(&self, ctx: &QuantContext) -> bool {
        ctx.config.bits(QuantType::Output) == Some(1)
    }

    fn after_step(&self, weight: &Tensor, ctx: &QuantContext) -> Result<Option<Tensor>> {
        if ctx.config.bits(QuantType::Weight) != Some(1) {
            return Ok(None);
        }
        Ok(Some(weight.detach().clamp(-self.clip, self.clip)?))
    }

    fn quantize_weight(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        if ctx.training {
            state.steps += 1;
        }
        let q = Self::integers(weight, ctx)?;
        fake_quantize_weight_recorded(weight, q, self.grad.as_ref(), state)
    }

    fn weight_integers(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
    ) -> Result<Option<WeightIntegers>> {
        Self::integers(weight, ctx).map(Some)
    }

    fn quantize_input(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        self.activations
            .quantize_input(x, ctx, state, self.grad.as_ref())
    }

    fn quantize_output(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        if ctx.bits(QuantType::Output) != 1 {
            return self
                .activations
                .quantize_output(x, ctx, state, self.grad.as_ref());
        }
        state.output_range = Some(Range {
            min: -1.0,
            max: 1.0,
        });
        state.output_qparams = Some(QParams::binary());
        Self::sign(x, self.sign_grad.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::quant::bind;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// conv2, fc1, fc2 binary (weights and outputs); conv1 and fc3 at int8.
    const LENET5_BNN: &str = r#"[
        {"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
        {"op_names": ["conv2", "fc1", "fc2"], "quant_types": ["weight", "output"], "quant_bits": 1}
    ]"#;

    fn bound(model: &str, config: &str) -> crate::Result<Model> {
        let mut model = Model::new(model, 10, &Device::Cpu, 3)?;
        crate::compress::fold_batch_norms(&mut model)?;
        let config = ConfigList::from_json_str(config)?;
        bind(Box::new(BnnQuantizer::new()), &mut model.graph, &config)?;
        Ok(model)
    }

    fn error(model: &str, config: &str) -> String {
        let mut m = Model::new(model, 10, &Device::Cpu, 3).unwrap();
        let config = ConfigList::from_json_str(config).unwrap();
        // Checked on the unfolded graph, as the pipeline checks a plan before training.
        let err = BnnQuantizer::new()
            .resolve(&m.graph, &config)
            .unwrap_err()
            .to_string();
        crate::compress::fold_batch_norms(&mut m).unwrap();
        let again = BnnQuantizer::new()
            .compress(&mut m.graph, &config)
            .unwrap_err();
        assert_eq!(
            again.to_string(),
            err,
            "checked alike before and after folding"
        );
        assert!(m.graph.quant().is_none());
        err
    }

    #[test]
    fn binary_weights_are_sign_times_mean_magnitude_and_int8_layers_are_qat() {
        let model = bound("lenet5", LENET5_BNN).unwrap();
        let w = Tensor::from_slice(
            &[0.5f32, -1.0, 0.25, 0.0, 2.0, -0.1, 0.0, 1.0],
            (2, 4),
            &Device::Cpu,
        )
        .unwrap();
        let binding = model.graph.quant().unwrap();
        let q = binding.weight_integers("fc1", &w).unwrap().unwrap();
        assert_eq!(q.bits, 1);
        // sign(0) = +1; scales (0.5 + 1 + 0.25 + 0) / 4 and (2 + 0.1 + 0 + 1) / 4.
        assert_eq!(values(&q.integers), [1., -1., 1., 1., 1., -1., 1., 1.]);
        assert_eq!(q.scales, [0.4375, 0.775]);
        // int8: max|w| / 127 per channel, as QAT.
        let q = binding.weight_integers("fc3", &w).unwrap().unwrap();
        let symmetric = WeightIntegers::symmetric(&w, 8).unwrap();
        assert_eq!((q.bits, &q.scales), (8, &symmetric.scales));
        assert_eq!(values(&q.integers), values(&symmetric.integers));
    }

    #[test]
    fn sign_is_plus_minus_one_with_the_clipped_straight_through_gradient() {
        let x = [-2.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
        let var = Var::from_slice(&x, x.len(), &Device::Cpu).unwrap();
        let y = BnnQuantizer::sign(var.as_tensor(), &ClippedStraightThrough).unwrap();
        assert_eq!(values(&y), [-1., -1., -1., 1., 1., 1., 1.]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        // Passes where |x| ≤ 1 (bounds included), zero outside.
        assert_eq!(
            values(grads.get(var.as_tensor()).unwrap()),
            [0., 1., 1., 1., 1., 1., 0.]
        );
    }

    #[test]
    fn binary_outputs_replace_the_relu_and_sit_on_the_binary_grid() {
        let model = bound("lenet5", LENET5_BNN).unwrap();
        let batch = Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu).unwrap();
        let mut seen = std::collections::BTreeMap::new();
        model
            .graph
            .forward_observed(&batch, true, &mut |i, y| {
                seen.insert(model.graph.nodes()[i].name.clone(), values(y));
                Ok(())
            })
            .unwrap();
        // relu2 / pool2 / fc1's relu hold the sign of the pre-activation: both ±1 occur.
        for name in ["relu2", "pool2", "relu3", "relu4"] {
            let v = &seen[name];
            assert!(v.iter().all(|&x| x == 1.0 || x == -1.0), "{name}");
            assert!(v.contains(&-1.0) && v.contains(&1.0), "{name}");
        }
        // conv1's output is an int8 ReLU output: non-negative, not binary.
        assert!(seen["relu1"].iter().all(|&x| x >= 0.0));
        let binding = model.graph.quant().unwrap();
        let fc1 = binding.layer("fc1").unwrap().state();
        assert_eq!(fc1.output_qparams, Some(QParams::binary()));
        assert_eq!(fc1.weight_bits, Some(1));
        assert!(binding.binary_output("fc1") && !binding.binary_output("fc3"));
        let fc3 = binding.layer("fc3").unwrap().state();
        assert_eq!(
            fc3.output_qparams.map(|q| (q.qmin, q.qmax)),
            Some((-128, 127))
        );
    }

    /// conv 1×1 (weight 1, binary) → ReLU → max pool 2 → flatten → fc: the sign's
    /// gradient after the pool reaches only the window's largest pre-activation, not
    /// every tied +1.
    #[test]
    fn the_sign_gradient_after_a_max_pool_reaches_the_largest_pre_activation() {
        use crate::nn::{
            Conv2d, Conv2dConfig, Flatten, Graph, Linear, MaxPool2d, Pool2dConfig, ReLU, Source,
        };
        let varmap = candle_nn::VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        let mut g = Graph::new([1, 2, 2]);
        g.set_input_grid(None);
        let conv = Conv2d::new(Conv2dConfig::new(1, 1, 1).no_bias(), vb.pp("conv")).unwrap();
        let x = g.push("conv", Layer::Conv2d(conv), &[Source::Input]);
        let x = g.push("relu", Layer::ReLU(ReLU), &[x]);
        let pool = Pool2dConfig {
            kernel_size: 2,
            stride: 2,
        };
        let x = g.push("pool", Layer::MaxPool2d(MaxPool2d(pool)), &[x]);
        let x = g.push("flatten", Layer::Flatten(Flatten), &[x]);
        let fc = Linear::new(1, 1, vb.pp("fc")).unwrap();
        g.push("fc", Layer::Linear(fc), &[x]);
        for var in varmap.all_vars() {
            var.set(&var.ones_like().unwrap()).unwrap();
        }
        let config = ConfigList::from_json_str(
            r#"[{"op_names": ["conv"], "quant_types": ["weight", "output"], "quant_bits": 1}]"#,
        )
        .unwrap();
        BnnQuantizer::new().compress(&mut g, &config).unwrap();
        let x =
            Var::from_slice(&[0.5f32, 0.25, -0.375, 0.875], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = g.forward_t(x.as_tensor(), true).unwrap();
        // max(sign) = sign(max) = +1, through fc (1·1 + 1).
        assert_eq!(values(&y), [2.0]);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let g = values(grads.get(x.as_tensor()).unwrap());
        // Only 0.875, the window's maximum (inside the clipped STE's [-1, 1]); the sign
        // before the pool would send it to the three tied +1 instead. (candle's max-pool
        // backward scales a window's gradient by maxima / k², hence 1/4 here.)
        assert_eq!(g[..3], [0.0, 0.0, 0.0]);
        assert!(g[3] > 0.0, "{g:?}");
    }

    #[test]
    fn latent_weights_of_binary_layers_are_clipped_after_a_step() {
        let model = bound("lenet5", LENET5_BNN).unwrap();
        for name in ["conv1", "conv2"] {
            let w = model.graph.node(name).unwrap().layer.weight().unwrap();
            Var::from_tensor(w)
                .unwrap()
                .set(&(w * 50.0).unwrap())
                .unwrap();
        }
        let before = values(model.graph.node("conv1").unwrap().layer.weight().unwrap());
        let conv2 = values(model.graph.node("conv2").unwrap().layer.weight().unwrap());
        assert!(conv2.iter().any(|v| v.abs() > 1.0));
        model
            .graph
            .quant()
            .unwrap()
            .after_step(&model.graph)
            .unwrap();
        let clipped = values(model.graph.node("conv2").unwrap().layer.weight().unwrap());
        for (c, v) in clipped.iter().zip(&conv2) {
            assert_eq!(*c, v.clamp(-1.0, 1.0));
        }
        // The int8 layer keeps its latent weights.
        let after = values(model.graph.node("conv1").unwrap().layer.weight().unwrap());
        assert_eq!(before, after);
    }

    #[test]
    fn layers_that_cannot_be_binary_are_config_errors_naming_them() {
        let cases = [
            (
                "lenet5",
                r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 4}]"#,
                "4 bits for `weight`",
            ),
            (
                "lenet5",
                r#"[{"op_names": ["conv2"], "quant_types": ["input", "weight"], "quant_bits": 1}]"#,
                "1-bit `input`",
            ),
            (
                "lenet5",
                r#"[{"op_names": ["fc3"], "quant_types": ["weight", "output"], "quant_bits": 1}]"#,
                "`fc3`: its ±1 output would be the graph's output",
            ),
            (
                "dscnn",
                r#"[{"op_names": ["block1.dw.conv"], "quant_types": ["weight"], "quant_bits": 1}]"#,
                "`block1.dw.conv`: a depthwise Conv2d",
            ),
            (
                "resnet8",
                r#"[{"op_names": ["stack1.block2.conv"], "quant_types": ["weight", "output"], "quant_bits": 1}]"#,
                "reaches the Add `stack1.add`",
            ),
            (
                "dscnn",
                r#"[{"op_names": ["block3.pw.conv"], "quant_types": ["weight", "output"], "quant_bits": 1}]"#,
                "reaches the average pool `pool`",
            ),
            (
                "resnet8",
                r#"[{"op_types": ["Add"], "quant_types": ["output"], "quant_bits": 1}]"#,
                "Add layers cannot be binary",
            ),
        ];
        for (model, config, expected) in cases {
            let err = error(model, config);
            assert!(
                err.contains(expected)
                    && err.contains("BNNQuantizer")
                    && err.contains("config_list[0]"),
                "{model} {config}: {err}"
            );
        }
        // BN folds and the ReLU after it is replaced: lenet5_bn's conv2 may be binary.
        bound(
            "lenet5_bn",
            r#"[{"op_names": ["conv2"], "quant_types": ["weight", "output"], "quant_bits": 1}]"#,
        )
        .unwrap();
    }
}
