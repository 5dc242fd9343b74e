//! Quantizers in NNI's shape: `quantize_weight`, `quantize_input`, `quantize_output`
//! hooks called from the forward pass, with a replaceable backward ([`QuantGrad`]).
//!
//! A quantizer is bound to a graph with [`Quantizer::compress`]: its `config_list` is
//! resolved against the graph's layers, and every layer it selects gets a
//! [`QuantState`] (tracked ranges, last scales) that export reads back.
//!
//! The built-in quantizers: [`NaiveQuantizer`] (8-bit weights, no training),
//! [`QatQuantizer`] (2–8-bit symmetric weights, EMA-tracked activations),
//! [`DoReFaQuantizer`] (1–8-bit weights through tanh, activations as QAT) and
//! [`BnnQuantizer`] (binary weights and sign activations, int8 layers as QAT).

mod activation;
mod binding;
mod bnn;
mod dorefa;
mod fake_quant;
mod fake_quant_value;
mod grad;
mod min_max;
mod naive;
mod qat;
mod qparams;
pub mod requant;
mod straight_through_op;

use candle_core::{Result, Tensor};

pub use activation::EmaActivations;
pub use binding::{LayerQuant, QuantBinding};
pub use bnn::{sign_readers, BnnQuantizer};
pub use dorefa::DoReFaQuantizer;
pub use fake_quant::{
    fake_quantize_tensor, fake_quantize_weight, fake_quantize_weight_as,
    fake_quantize_weight_recorded, quantize_weight_integers, round_average_onto_grid,
    symmetric_qmax, weight_scales, WeightIntegers,
};
pub use grad::{ClippedStraightThrough, QuantGrad, StraightThrough};
pub use naive::NaiveQuantizer;
pub use qat::QatQuantizer;
pub use qparams::{QParams, QuantRange};

use crate::config::{ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a hook knows about the call: the layer's resolved config and the mode.
#[derive(Debug, Clone, Copy)]
pub struct QuantContext<'a> {
    pub config: &'a LayerConfig,
    /// True in training forward passes (range trackers update only then).
    pub training: bool,
}

impl QuantContext<'_> {
    /// The bit width configured for a quant type (8 if the dict gave none for it).
    pub fn bits(&self, t: crate::config::QuantType) -> u8 {
        self.config.bits(t).unwrap_or(8)
    }
}

/// A tracked float interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Range {
    pub min: f32,
    pub max: f32,
}

/// Per-layer quantization state: what the hooks tracked and last computed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuantState {
    pub input_range: Option<Range>,
    pub output_range: Option<Range>,
    /// Per-output-channel weight scales from the last forward.
    pub weight_scales: Vec<f32>,
    pub weight_bits: Option<u8>,
    pub input_qparams: Option<QParams>,
    pub output_qparams: Option<QParams>,
    /// Training forward passes seen.
    pub steps: u64,
}

/// A quantization algorithm. Every hook defaults to the identity, so a quantizer
/// implements only the tensors it quantizes.
pub trait Quantizer: Send + Sync {
    /// The algorithm's name as in NNI (used in errors and `calibration.json`).
    fn name(&self) -> &'static str;

    /// Which op types, bit widths and extra keys its `config_list` accepts.
    fn schema(&self) -> Schema;

    /// Fake-quantizes a layer's (already masked) weight.
    fn quantize_weight(
        &self,
        weight: &Tensor,
        _ctx: &QuantContext,
        _state: &mut QuantState,
    ) -> Result<Tensor> {
        Ok(weight.clone())
    }

    /// The integers and per-output-channel scales this quantizer's `weight` hook puts
    /// `weight` (already masked) on; the hook's fake-quantized weight must equal
    /// [`WeightIntegers::dequantize`] of it. Every exporter (packed model, ONNX,
    /// calibration.json) reads weights from here, so what the chip runs is what the
    /// forward pass computed with. `None` (the default): no integer form; the ONNX
    /// exporter then writes the fake-quantized weight as floats and the packed
    /// exporter refuses the layer.
    fn weight_integers(
        &self,
        _weight: &Tensor,
        _ctx: &QuantContext,
    ) -> Result<Option<WeightIntegers>> {
        Ok(None)
    }

    /// Fake-quantizes a layer's input activation.
    fn quantize_input(
        &self,
        x: &Tensor,
        _ctx: &QuantContext,
        _state: &mut QuantState,
    ) -> Result<Tensor> {
        Ok(x.clone())
    }

    /// Fake-quantizes a layer's output (after its fused activation, if any).
    fn quantize_output(
        &self,
        x: &Tensor,
        _ctx: &QuantContext,
        _state: &mut QuantState,
    ) -> Result<Tensor> {
        Ok(x.clone())
    }

    /// Whether this layer's `output` hook is a sign activation (BNN): it sees the
    /// layer's pre-activation and its ±1 replace the activation, so the forward pass and
    /// the exporters skip a ReLU / ReLU6 fused after the layer (sign ∘ ReLU would be
    /// constantly +1). Default: false (the hook quantizes the activation's output).
    fn binary_output(&self, _ctx: &QuantContext) -> bool {
        false
    }

    /// Called by the training loop after every optimizer step (after masks are
    /// re-applied) for each layer this quantizer holds, with the layer's stored (latent)
    /// weight; returns the weight to store instead, or `None` to keep it. BNN clips its
    /// binary layers' latent weights to [-1, 1] here. Default: `None`.
    fn after_step(&self, _weight: &Tensor, _ctx: &QuantContext) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Checks the resolved layers against the graph before anything trains (a layer
    /// the algorithm cannot quantize as configured); `source` names the config list.
    /// The graph may still hold batch norms (they fold into their convolutions before
    /// quantization). Default: nothing to check.
    fn check(&self, _graph: &Graph, _layers: &[LayerConfig], _source: &str) -> crate::Result<()> {
        Ok(())
    }

    /// Resolves `config` against `graph` with this quantizer's schema and runs
    /// [`check`](Self::check): every error of the config list, before any training.
    fn resolve(&self, graph: &Graph, config: &ConfigList) -> crate::Result<Vec<LayerConfig>> {
        let layers = config.resolve(&graph.layer_infos(), &self.schema())?;
        self.check(graph, &layers, &config.source)?;
        Ok(layers)
    }

    /// Resolves `config` against `graph` and attaches this quantizer to it ([`bind`]).
    fn compress(self, graph: &mut Graph, config: &ConfigList) -> crate::Result<()>
    where
        Self: Sized + 'static,
    {
        bind(Box::new(self), graph, config)
    }
}

/// [`Quantizer::compress`] for a quantizer chosen at run time: resolves `config` against
/// `graph` ([`Quantizer::resolve`]) and attaches the quantizer. A quantizer that may
/// quantize Add outputs also gets the output grids the chip needs and no dict names
/// ([`crate::nn::implicit_output_grids`]: residual Adds). On error nothing is attached.
pub fn bind(
    quantizer: Box<dyn Quantizer>,
    graph: &mut Graph,
    config: &ConfigList,
) -> crate::Result<()> {
    let layers = quantizer.resolve(graph, config)?;
    let implicit = if quantizer.schema().supported_op_types.contains(&OpType::Add) {
        crate::nn::implicit_output_grids(graph, &layers)
    } else {
        Vec::new()
    };
    let binding = QuantBinding::new(quantizer, layers).with_implicit(implicit);
    graph.set_quant(Some(Arc::new(binding)));
    Ok(())
}
