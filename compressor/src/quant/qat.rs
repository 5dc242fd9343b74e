//! Quantization-aware training after Jacob et al. 2018 (NNI's `QAT_Quantizer`).
//!
//! Weights: symmetric per output channel, 2–8 bits. Activations: asymmetric per tensor,
//! ranges tracked by an exponential moving average during training and frozen in eval.
//! Batch norm is folded into the preceding convolution before QAT starts
//! ([`crate::compress::fold_batch_norms`]), so the weights quantized here are the ones the
//! chip runs. The backward is a [`QuantGrad`], straight-through by default.

use std::sync::Arc;

use candle_core::{DType, Result, Tensor};

use super::{
    fake_quantize_tensor, fake_quantize_weight_recorded, QParams, QuantContext, QuantGrad,
    QuantState, Quantizer, Range, StraightThrough, WeightIntegers,
};
use crate::config::{QuantType, Schema};
use crate::nn::OpType;

/// QAT quantizer; `ema_decay` smooths tracked activation ranges (NNI uses 0.99).
#[derive(Clone)]
pub struct QatQuantizer {
    ema_decay: f32,
    grad: Arc<dyn QuantGrad>,
}

impl Default for QatQuantizer {
    fn default() -> Self {
        Self {
            ema_decay: 0.99,
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
        Self { ema_decay, ..self }
    }

    /// The weight's integers: symmetric per output channel (one function for the
    /// forward and the exporters).
    fn integers(&self, weight: &Tensor, ctx: &QuantContext) -> Result<WeightIntegers> {
        WeightIntegers::symmetric(weight, ctx.bits(QuantType::Weight))
    }

    /// Updates a tracked range with this batch (in training) and fake-quantizes `x`.
    fn activation(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        bits: u8,
        range: &mut Option<Range>,
        qparams: &mut Option<QParams>,
    ) -> Result<Tensor> {
        if ctx.training {
            let flat = x.detach().flatten_all()?.to_dtype(DType::F32)?;
            let (lo, hi) = (
                flat.min(0)?.to_scalar::<f32>()?,
                flat.max(0)?.to_scalar::<f32>()?,
            );
            *range = Some(match *range {
                None => Range { min: lo, max: hi },
                Some(r) => Range {
                    min: self.ema_decay * r.min + (1.0 - self.ema_decay) * lo,
                    max: self.ema_decay * r.max + (1.0 - self.ema_decay) * hi,
                },
            });
        }
        let Some(r) = *range else {
            // Never calibrated (eval before any training step): pass through.
            return Ok(x.clone());
        };
        let q = QParams::asymmetric(r.min, r.max, bits);
        *qparams = Some(q);
        fake_quantize_tensor(x, q, self.grad.as_ref())
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
        let bits = ctx.bits(QuantType::Input);
        self.activation(
            x,
            ctx,
            bits,
            &mut state.input_range,
            &mut state.input_qparams,
        )
    }

    fn quantize_output(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        let bits = ctx.bits(QuantType::Output);
        self.activation(
            x,
            ctx,
            bits,
            &mut state.output_range,
            &mut state.output_qparams,
        )
    }
}
