//! NNI's `NaiveQuantizer`: weights to 8 bits, symmetric per output channel, no training.

use candle_core::{Result, Tensor};

use super::{
    fake_quantize_weight_recorded, QuantContext, QuantState, Quantizer, StraightThrough,
    WeightIntegers,
};
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
        let q = integers(weight, ctx)?;
        fake_quantize_weight_recorded(weight, q, &StraightThrough, state)
    }

    fn weight_integers(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
    ) -> Result<Option<WeightIntegers>> {
        integers(weight, ctx).map(Some)
    }
}

/// The weight's integers: symmetric per output channel (one function for the forward
/// and the exporters).
fn integers(weight: &Tensor, ctx: &QuantContext) -> Result<WeightIntegers> {
    WeightIntegers::symmetric(weight, ctx.bits(QuantType::Weight))
}
