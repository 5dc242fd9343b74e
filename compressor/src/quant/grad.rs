//! The backward pass of fake quantization, replaceable as NNI's `QuantGrad`.
//!
//! Rounding has a zero gradient almost everywhere, so training through a quantizer needs
//! a surrogate. A `QuantGrad` builds a tensor whose *value* is the quantized tensor and
//! whose *gradient* is whatever the surrogate says, using `detach` to cut the graph.

use candle_core::{Result, Tensor};

use super::QuantRange;

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
        if let Some(y) = super::straight_through_op::straight_through(x, quantized, None)? {
            return Ok(y);
        }
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
        if let Some(y) = super::straight_through_op::straight_through(x, quantized, Some(range))? {
            return Ok(y);
        }
        let inside = x
            .ge(range.low)?
            .mul(&x.le(range.high)?)?
            .to_dtype(x.dtype())?;
        let passed = (x * inside)?;
        (&passed - passed.detach())? + quantized.detach()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{ClippedStraightThrough, QuantGrad, QuantRange, StraightThrough};

    /// The custom-op path (CPU f32) gives the value and gradient of the candle-op
    /// spelling, which other devices still take; checked against it by hand here.
    #[test]
    fn built_in_rules_pass_the_value_and_the_gradient() -> candle_core::Result<()> {
        let x = Var::from_tensor(&Tensor::new(
            &[-2.0f32, -0.5, 0.0, 0.7, 1.0, 3.0],
            &Device::Cpu,
        )?)?;
        let q = Tensor::new(&[-1.0f32, -0.5, 0.0, 0.75, 1.0, 1.0], &Device::Cpu)?;
        let dy = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &Device::Cpu)?;
        let range = QuantRange {
            low: -1.0,
            high: 1.0,
        };
        let rules: [(&dyn QuantGrad, [f32; 6]); 2] = [
            (&StraightThrough, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
            (&ClippedStraightThrough, [0.0, 2.0, 3.0, 4.0, 5.0, 0.0]),
        ];
        for (rule, expected) in rules {
            let y = rule.apply(x.as_tensor(), &q, range)?;
            assert_eq!(y.to_vec1::<f32>()?, q.to_vec1::<f32>()?);
            let grads = (y * &dy)?.sum_all()?.backward()?;
            let dx = grads.get(x.as_tensor()).expect("dx").to_vec1::<f32>()?;
            assert_eq!(dx, expected);
        }
        Ok(())
    }
}
