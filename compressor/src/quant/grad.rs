//! The backward pass of fake quantization, replaceable as NNI's `QuantGrad`.
//!
//! Rounding has a zero gradient almost everywhere, so training through a quantizer needs
//! a surrogate. A `QuantGrad` builds a tensor whose *value* is the quantized tensor and
//! whose *gradient* is whatever the surrogate says, using `detach` to cut the graph.

use candle_core::{Result, Tensor};

use super::straight_through_op::{fake_quantize_straight_through, straight_through};
use super::{QParams, QuantRange};

/// Backward rule of fake quantization.
pub trait QuantGrad: Send + Sync {
    /// Returns a tensor equal in value to `quantized` whose gradient with respect to `x`
    /// is this rule's. `quantized` was computed from `x` without gradient tracking.
    fn apply(&self, x: &Tensor, quantized: &Tensor, range: QuantRange) -> Result<Tensor>;

    /// Per-tensor fake quantization of `x` on grid `q` with this rule's gradient, in one
    /// step where the rule has one; `None` (the default) computes the value and then
    /// calls [`apply`](Self::apply) with `q.range()`. The built-in rules override it on
    /// the CPU: the value inside their own op saves a pass and a tensor per activation.
    fn fake_quantize(&self, _x: &Tensor, _q: QParams) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The straight-through estimator: the gradient passes through unchanged (identity).
#[derive(Debug, Clone, Copy, Default)]
pub struct StraightThrough;

impl QuantGrad for StraightThrough {
    fn apply(&self, x: &Tensor, quantized: &Tensor, _range: QuantRange) -> Result<Tensor> {
        if let Some(y) = straight_through(x, quantized, None)? {
            return Ok(y);
        }
        // value: (x - x) + q = q exactly (no float cancellation, even far outside the
        // range); gradient: d/dx x = 1.
        (x - x.detach())? + quantized.detach()
    }

    fn fake_quantize(&self, x: &Tensor, q: QParams) -> Result<Option<Tensor>> {
        fake_quantize_straight_through(x, q, false)
    }
}

/// Straight-through inside the representable range, zero outside it (the "clipped"
/// STE of Jacob et al. and NNI's default QAT backward).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClippedStraightThrough;

impl QuantGrad for ClippedStraightThrough {
    fn apply(&self, x: &Tensor, quantized: &Tensor, range: QuantRange) -> Result<Tensor> {
        if let Some(y) = straight_through(x, quantized, Some(range))? {
            return Ok(y);
        }
        let inside = x
            .ge(range.low)?
            .mul(&x.le(range.high)?)?
            .to_dtype(x.dtype())?;
        let passed = (x * inside)?;
        (&passed - passed.detach())? + quantized.detach()
    }

    fn fake_quantize(&self, x: &Tensor, q: QParams) -> Result<Option<Tensor>> {
        fake_quantize_straight_through(x, q, true)
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

    /// The built-in rules' one-op fake quantization gives the value and the gradient of
    /// the value followed by `apply`, clipped and not, over a tensor large enough to
    /// split into parallel tasks.
    #[test]
    fn one_op_fake_quantization_matches_value_then_apply() -> candle_core::Result<()> {
        use crate::quant::fake_quant_value::fake_quant_value;
        use crate::quant::QParams;

        let n = 40_000;
        let x = Var::from_tensor(
            &Tensor::arange(0f32, n as f32, &Device::Cpu)?.affine(3.0 / n as f64, -1.2)?,
        )?;
        let dy = Tensor::arange(0f32, n as f32, &Device::Cpu)?.affine(0.01, 1.0)?;
        let q = QParams::asymmetric(-0.7, 1.1, 8);
        let rules: [&dyn QuantGrad; 2] = [&StraightThrough, &ClippedStraightThrough];
        for rule in rules {
            let fused = rule.fake_quantize(x.as_tensor(), q)?.expect("CPU f32");
            let value = fake_quant_value(x.as_tensor(), q)?;
            let split = rule.apply(x.as_tensor(), &value, q.range())?;
            assert_eq!(fused.to_vec1::<f32>()?, split.to_vec1::<f32>()?);
            let grad = |y: Tensor| -> candle_core::Result<Vec<f32>> {
                let grads = (y * &dy)?.sum_all()?.backward()?;
                grads.get(x.as_tensor()).expect("dx").to_vec1::<f32>()
            };
            assert_eq!(grad(fused)?, grad(split)?);
        }
        Ok(())
    }
}
