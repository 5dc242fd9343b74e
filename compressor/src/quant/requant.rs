//! The int8 output stage of a conv / fully connected op, as the runtime computes it,
//! simulated on the float model's pre-activation.
//!
//! The deployed op adds an int32 bias `round(b / (s_in · s_w[c]))` to its integer
//! accumulator and requantizes with a fixed-point multiplier for `s_in · s_w[c] / s_out`
//! that rounds **once** ([`Rounding::Single`]), as the float fake quantization rounds
//! `(acc + b / (s_in · s_w)) · M` once. TFLite Micro's own pairs round twice, the first
//! time to `2^shift` output steps, which moved 0.05 %, 1 % and 5 % of one LeNet-5
//! layer's outputs by a step at 8-, 4- and 2-bit weights (the multiplier grows with the
//! weight step); sprig's layers therefore use the single-rounding form, and imported
//! TFLite models keep TFLite's. What remains between the two forwards is the int32 bias
//! grid and float error. [`Graph::forward_deployed`](crate::nn::Graph::forward_deployed)
//! computes a quantized Conv2d / Linear's output exactly as the runtime does
//! ([`simulate_output_stage`]); the packed exporter reads the same parameters from the
//! shared lowering ([`bias_steps`], [`requant_pairs`] with [`Rounding::Single`]) and
//! [`activation_clamps`]. The plain eval forward keeps the float arithmetic of QDQ
//! (ONNX) semantics.

use candle_core::{DType, Device, Result, Tensor};
use sprig_runtime::fixed_point::multiply_by_quantized_multiplier;

use super::QParams;
use crate::export::layer_integers::{bias_steps, requant_pairs, Rounding};

/// `bias` moved onto its int32 grid, channel by channel: [`bias_steps`]` · s_in · s_w[c]`,
/// the value the deployed op adds. The eval forward and the ONNX export use it, so the
/// fake-quant model adds the same bias as the chip (off by up to half an accumulator
/// step otherwise, i.e. half the multiplier in output steps: a tenth of a step at 2-bit
/// weights). The rounding is the packed exporter's ([`bias_steps`]), unchecked: a
/// channel with no finite step count keeps its float bias, one beyond int32 is snapped
/// all the same (a training forward must not fail on it; the packed export refuses it,
/// [`bias_integers`](crate::export::layer_integers::bias_integers)). Same device and
/// dtype as `bias`; no gradient.
pub fn bias_on_grid(bias: &Tensor, in_scale: f32, weight_scales: &[f32]) -> Result<Tensor> {
    let values = bias
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    if values.len() != weight_scales.len() {
        candle_core::bail!(
            "bias on grid: {} biases, {} weight scales",
            values.len(),
            weight_scales.len()
        );
    }
    let snapped: Vec<f32> = values
        .iter()
        .zip(weight_scales)
        .map(|(&b, &sw)| {
            let step = f64::from(in_scale) * f64::from(sw);
            let q = bias_steps(b, in_scale, sw);
            if q.is_finite() && step > 0.0 {
                (q * step) as f32
            } else {
                b
            }
        })
        .collect();
    Tensor::from_vec(snapped, values.len(), &Device::Cpu)?
        .to_dtype(bias.dtype())?
        .to_device(bias.device())
}

/// The integer clamp `(act_min, act_max)` of an op writing to `grid` with a fused ReLU
/// (`Some(None)`), ReLU6 (`Some(Some(6.0))`) or no activation (`None`), within int8.
pub fn activation_clamps(activation: Option<Option<f32>>, grid: QParams) -> (i32, i32) {
    let (lo, hi) = (i32::from(i8::MIN), i32::from(i8::MAX));
    match activation {
        Some(None) => (grid.zero_point.clamp(lo, hi), hi),
        Some(Some(cap)) => {
            let top = (f64::from(cap) / f64::from(grid.scale)).round();
            let top = (f64::from(grid.zero_point) + top).min(f64::from(hi)) as i32;
            (grid.zero_point.clamp(lo, hi), top.max(grid.zero_point))
        }
        None => (lo, hi),
    }
}

/// The grids and parameters of one op's output stage.
#[derive(Debug, Clone, Copy)]
pub struct OutputStage<'a> {
    /// Grid of the op's input.
    pub input: QParams,
    /// Per-output-channel weight scales.
    pub weight_scales: &'a [f32],
    /// Grid of the op's output.
    pub output: QParams,
    /// [`activation_clamps`] of the fused activation.
    pub clamps: (i32, i32),
}

/// The deployed op's dequantized output `(q − zp) · s_out` for every element of `pre`,
/// the float pre-activation `conv(x, w_q) + b` (`[N, C, ...]`, channels on axis 1) of an
/// op whose input lies on `stage.input` and whose weights are `integers · scales`: the
/// integer accumulator is recovered as `round((pre − b) / (s_in · s_w[c]))` (exact while
/// the float sum is within half an accumulator step of it), then the int32 bias, the
/// fixed-point requantization, the zero point and the clamps are applied as the runtime
/// applies them. No gradient; same device and dtype as `pre`.
pub fn simulate_output_stage(
    pre: &Tensor,
    bias: Option<&Tensor>,
    stage: &OutputStage<'_>,
) -> Result<Tensor> {
    let dims = pre.dims().to_vec();
    let channels = *dims.get(1).unwrap_or(&0);
    if channels != stage.weight_scales.len() {
        candle_core::bail!(
            "output stage: {channels} channels, {} weight scales",
            stage.weight_scales.len()
        );
    }
    let per_channel: usize = dims[2..].iter().product();
    let bias = match bias {
        Some(b) => b.to_device(&Device::Cpu)?.to_dtype(DType::F32)?.to_vec1()?,
        None => vec![0f32; channels],
    };
    let s_in = stage.input.scale;
    let pairs = requant_pairs(
        s_in,
        stage.weight_scales,
        stage.output.scale,
        Rounding::Single,
    );
    let params: Vec<(f64, f64, f64, i32, i32)> = stage
        .weight_scales
        .iter()
        .zip(&bias)
        .zip(pairs)
        .map(|((&sw, &b), (m, shift))| {
            let step = f64::from(s_in) * f64::from(sw);
            (f64::from(b), step, bias_steps(b, s_in, sw), m, shift)
        })
        .collect();
    let q = stage.output;
    let lo = stage.clamps.0.max(q.qmin);
    let hi = stage.clamps.1.min(q.qmax);
    let zp = q.zero_point;
    let values = pre
        .detach()
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let out: Vec<f32> = values
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let (b, step, b_int, m, shift) = params[(k / per_channel.max(1)) % channels];
            let acc = ((f64::from(v) - b) / step).round() + b_int;
            let acc = acc.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32;
            let level = multiply_by_quantized_multiplier(acc, m, shift)
                .saturating_add(zp)
                .clamp(lo, hi);
            // As the fake quantization dequantizes: `(level − zp) · scale` in f32.
            (level - zp) as f32 * q.scale
        })
        .collect();
    Tensor::from_vec(out, dims, &Device::Cpu)?
        .to_dtype(pre.dtype())?
        .to_device(pre.device())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    /// A linear op of one output with `M = 0.25` (2-bit-weight sized): the accumulator 6
    /// is 1.5 output steps exactly, a tie the single rounding sends to 2; 5 is 1.25,
    /// which rounds to 1 as the float fake quantization does (TFLite's double rounding
    /// gave 2: `round(5 · 0.5) = 3`, then `round(3 / 2) = 2`).
    #[test]
    fn single_rounding_as_deployed() -> Result<()> {
        let input = QParams::asymmetric(-1.0, 1.0, 8);
        // s_in · s_w / s_out = 0.25 exactly: s_w = 2^-3, s_out = s_in / 2.
        let output = QParams {
            scale: input.scale / 2.0,
            zero_point: 0,
            qmin: -128,
            qmax: 127,
        };
        let scales = [0.125f32];
        let step = f64::from(input.scale) * 0.125;
        let accs = [5.0, 6.0, 7.0, -5.0, 1000.0];
        let pre: Vec<f32> = accs.iter().map(|&a| (a * step) as f32).collect();
        let pre = Tensor::from_vec(pre, (5, 1), &Device::Cpu)?;
        let stage = OutputStage {
            input,
            weight_scales: &scales,
            output,
            clamps: activation_clamps(None, output),
        };
        let levels: Vec<f32> = (simulate_output_stage(&pre, None, &stage)?
            / f64::from(output.scale))?
        .round()?
        .to_vec2::<f32>()?
        .concat();
        assert_eq!(levels, [1.0, 2.0, 2.0, -1.0, 127.0]);
        // And the fused ReLU clamps at the zero point.
        let relu = OutputStage {
            clamps: activation_clamps(Some(None), output),
            ..stage
        };
        let levels = (simulate_output_stage(&pre, None, &relu)? / f64::from(output.scale))?
            .round()?
            .to_vec2::<f32>()?
            .concat();
        assert_eq!(levels, [1.0, 2.0, 2.0, 0.0, 127.0]);
        Ok(())
    }

    /// The bias on its grid is the deployed int32 bias times the accumulator step, and
    /// moving it again changes nothing.
    #[test]
    fn bias_on_grid_is_the_deployed_integer() -> Result<()> {
        let (s_in, scales) = (0.02f32, [0.1f32, 0.003]);
        let bias = Tensor::new(&[0.0123f32, -0.5], &Device::Cpu)?;
        let on_grid = bias_on_grid(&bias, s_in, &scales)?;
        let values = on_grid.to_vec1::<f32>()?;
        for ((&b, &g), &sw) in [0.0123f32, -0.5].iter().zip(&values).zip(&scales) {
            let step = f64::from(s_in) * f64::from(sw);
            assert_eq!(g, (bias_steps(b, s_in, sw) * step) as f32);
            assert_eq!(bias_steps(g, s_in, sw), bias_steps(b, s_in, sw));
            assert!((f64::from(g) - f64::from(b)).abs() <= 0.5 * step + 1e-9);
        }
        // 0.0123 / 0.002 = 6.15 → 6 steps.
        assert_eq!(bias_steps(0.0123, s_in, scales[0]), 6.0);
        assert_eq!(
            bias_on_grid(&on_grid, s_in, &scales)?.to_vec1::<f32>()?,
            values
        );
        assert!(bias_on_grid(&bias, s_in, &scales[..1]).is_err());
        Ok(())
    }
}
