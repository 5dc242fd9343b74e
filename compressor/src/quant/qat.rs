//! Quantization-aware training after Jacob et al. 2018 (NNI's `QAT_Quantizer`).
//!
//! Weights: symmetric per output channel, 2–8 bits. Activations: asymmetric per tensor,
//! ranges tracked by an exponential moving average during training and frozen in eval.
//! Batch norm is folded into the preceding convolution before QAT starts
//! ([`crate::compress::fold_batch_norms`]), so the weights quantized here are the ones the
//! chip runs. The backward is a [`QuantGrad`], straight-through by default.

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::{
    fake_quantize_weight_recorded, EmaActivations, QuantContext, QuantGrad, QuantState, Quantizer,
    StraightThrough, WeightIntegers,
};
use crate::config::{QuantType, Schema};
use crate::nn::OpType;

/// QAT quantizer; `ema_decay` smooths tracked activation ranges (NNI uses 0.99).
#[derive(Clone)]
pub struct QatQuantizer {
    activations: EmaActivations,
    grad: Arc<dyn QuantGrad>,
}

impl Default for QatQuantizer {
    fn default() -> Self {
        Self {
            activations: EmaActivations::default(),
            grad: Arc::new(StraightThrough),
        }
    }
}

impl QatQuantizer {
    pub fn new() -> Self {
        Self::default()
    }
    /// Replaces the backward rule (straight-through by default).
    pub fn with_grad(self, grad: Arc<dyn QuantGrad>) -> Self {
        Self { grad, ..self }
    }
    pub fn with_ema_decay(self, ema_decay: f32) -> Self {
        Self {
            activations: EmaActivations::new(ema_decay),
            ..self
        }
    }

    /// The weight's integers: symmetric per output channel (one function for the
    /// forward and the exporters).
    fn integers(&self, weight: &Tensor, ctx: &QuantContext) -> Result<WeightIntegers> {
        WeightIntegers::symmetric(weight, ctx.bits(QuantType::Weight))
    }
}

impl Quantizer for QatQuantizer {
    fn name(&self) -> &'static str {
        "QAT_Quantizer"
    }

    fn schema(&self) -> Schema {
        Schema::quantization(self.name(), vec![OpType::Conv2d, OpType::Linear], 2..=8)
            .with_supported(vec![
                OpType::Conv2d,
                OpType::Linear,
                OpType::Add,
                OpType::ReLU,
                OpType::ReLU6,
            ])
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
        let q = self.integers(weight, ctx)?;
        fake_quantize_weight_recorded(weight, q, self.grad.as_ref(), state)
    }

    fn weight_integers(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
    ) -> Result<Option<WeightIntegers>> {
        self.integers(weight, ctx).map(Some)
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
        self.activations
            .quantize_output(x, ctx, state, self.grad.as_ref())
    }
}
