//! The backward pass of fake quantization, replaceable as NNI's `QuantGrad`.
//!
//! Rounding has a zero gradient almost everywhere, so training through a quantizer needs
//! a surrogate. A `QuantGrad` builds a tensor whose *value* is the quantized tensor and
//! whose *gradient* is whatever the surrogate says, using `detach` to cut the graph.

use candle_core::{Result, Tensor};

/// What a backward rule may look at besides the tensors: the representable float range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantRange {
    /// Smallest representable value, `(qmin - zero_point) · scale` (per-tensor; for
    /// per-channel weights the widest channel's range).
    pub low: f64,
    pub high: f64,
}

/// Backward rule of fake quantization.
pub trait QuantGrad: Send + Sync {
    /// Returns a tensor equal in value to `quantized` whose gradient with respect to `x`
    /// is this rule's. `quantized` was computed from `x` without gradient tracking.
    fn apply(&self, x: &Tensor, quantized: &Tensor, range: QuantRange) -> Result<Tensor>;
}

/// The straight-through estimator: the gradient passes through unchanged (identity).
#[derive(Debug, Clone, Copy, Default)]
pub struct StraightThrough;

impl QuantGrad for StraightThrough {
    fn apply(&self, x: &Tensor, quantized: &Tensor, _range: QuantRange) -> Result<Tensor> {
        // value: (x - x) + q = q exactly (no float cancellation, even far outside the
        // range); gradient: d/dx x = 1.
        (x - x.detach())? + quantized.detach()
    }
}

/// Straight-through inside the representable range, zero outside it (the "clipped"
/// STE of Jacob et al. and NNI's default QAT backward).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClippedStraightThrough;

impl QuantGrad for ClippedStraightThrough {
    fn apply(&self, x: &Tensor, quantized: &Tensor, range: QuantRange) -> Result<Tensor> {
        let inside = x
            .ge(range.low)?
            .mul(&x.le(range.high)?)?
            .to_dtype(x.dtype())?;
        let passed = (x * inside)?;
        (&passed - passed.detach())? + quantized.detach()
    }
}
