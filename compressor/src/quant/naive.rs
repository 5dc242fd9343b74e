//! NNI's `NaiveQuantizer`: weights to 8 bits, symmetric per output channel, no training.

use candle_core::{Result, Tensor};

use super::{fake_quantize_weight_recorded, QuantContext, QuantState, Quantizer, StraightThrough};
use crate::config::{QuantType, Schema};
use crate::nn::OpType;

/// Post-training 8-bit weight quantization.
#[derive(Debug, Clone, Copy, Default)]
pub struct NaiveQuantizer;

impl Quantizer for NaiveQuantizer {
    fn name(&self) -> &'static str {
        "NaiveQuantizer"
    }

    fn schema(&self) -> Schema {
        Schema::quantization(self.name(), vec![OpType::Conv2d, OpType::Linear], 8..=8)
            .with_supported(vec![OpType::Conv2d, OpType::Linear])
    }

    fn quantize_weight(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        fake_quantize_weight_recorded(weight, ctx.bits(QuantType::Weight), &StraightThrough, state)
    }
}
