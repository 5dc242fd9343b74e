//! Activation fake quantization shared by the trained quantizers (QAT, DoReFa, BNN's
//! 8-bit layers): asymmetric per tensor, the range tracked by an exponential moving
//! average in training forward passes and frozen in eval.

use candle_core::{Result, Tensor};

use super::{fake_quantize_tensor, QParams, QuantContext, QuantGrad, QuantState, Range};
use crate::config::QuantType;

/// EMA-tracked asymmetric activation quantization (Jacob et al. 2018, NNI's
/// `QAT_Quantizer`): in training the tracked range moves to
/// `decay · old + (1 − decay) · batch` (the first batch sets it), the grid is
/// [`QParams::asymmetric`] of that range, and an activation never calibrated (eval
/// before any training step) passes through unchanged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaActivations {
    /// Weight of the old range in the moving average (NNI uses 0.99).
    pub ema_decay: f32,
}

impl Default for EmaActivations {
    fn default() -> Self {
        Self { ema_decay: 0.99 }
    }
}

impl EmaActivations {
    pub fn new(ema_decay: f32) -> Self {
        Self { ema_decay }
    }

    /// Fake-quantizes a layer's input on its `input` bits, tracking `state.input_range`.
    pub fn quantize_input(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
        grad: &dyn QuantGrad,
    ) -> Result<Tensor> {
        self.quantize(
            x,
            ctx.training,
            ctx.bits(QuantType::Input),
            &mut state.input_range,
            &mut state.input_qparams,
            grad,
        )
    }

    /// Fake-quantizes a layer's output on its `output` bits, tracking
    /// `state.output_range`.
    pub fn quantize_output(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
        grad: &dyn QuantGrad,
    ) -> Result<Tensor> {
        self.quantize(
            x,
            ctx.training,
            ctx.bits(QuantType::Output),
            &mut state.output_range,
            &mut state.output_qparams,
            grad,
        )
    }

    /// Updates `range` with this batch (in training) and fake-quantizes `x` on the
    /// `bits`-bit grid covering it, recording that grid in `qparams`.
    pub fn quantize(
        &self,
        x: &Tensor,
        training: bool,
        bits: u8,
        range: &mut Option<Range>,
        qparams: &mut Option<QParams>,
        grad: &dyn QuantGrad,
    ) -> Result<Tensor> {
        if training {
            let (lo, hi) = super::min_max::min_max(x)?;
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
        fake_quantize_tensor(x, q, grad)
    }
}
