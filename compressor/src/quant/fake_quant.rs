//! Fake quantization: round to the integer grid, then back to float, in the forward pass.
//!
//! Integers use TFLite's conventions so the exported int8 model computes the same values:
//! weights symmetric per output channel in `[-(2^(b-1)-1), 2^(b-1)-1]` with zero point 0;
//! activations asymmetric per tensor in `[-2^(b-1), 2^(b-1)-1]`. Rounding is half away
//! from zero (`f32::round`), as TFLite's converter rounds.

use super::fake_quant_value::round_half_away;
use super::{QParams, QuantGrad, QuantRange};
use candle_core::{DType, Result, Tensor, D};

/// Largest magnitude of a symmetric `bits`-bit weight: `2^(bits−1) − 1` (127 for 8
/// bits, 7 for 4, 1 for 2), and 1 for 1 bit, whose integers are the binary values ±1.
pub fn symmetric_qmax(bits: u8) -> i32 {
    ((1i32 << (bits.max(1) - 1)) - 1).max(1)
}

/// Per-tensor asymmetric fake quantization of an activation.
pub fn fake_quantize_tensor(x: &Tensor, q: QParams, grad: &dyn QuantGrad) -> Result<Tensor> {
    if let Some(y) = grad.fake_quantize(x, q)? {
        return Ok(y);
    }
    let dequant = super::fake_quant_value::fake_quant_value(x, q)?;
    grad.apply(x, &dequant, q.range())
}

/// Per-output-channel symmetric scales of a weight `[out, ...]`: `max|w_c| / qmax`
/// (1.0 for an all-zero channel, which quantizes to zeros either way).
pub fn weight_scales(weight: &Tensor, bits: u8) -> Result<Vec<f32>> {
    let qmax = symmetric_qmax(bits) as f32;
    Ok(channel_max_abs(weight)?
        .into_iter()
        .map(|m| if m > 0.0 { m / qmax } else { 1.0 })
        .collect())
}

/// `max |t_c|` per output channel of `t` `[out, ...]` (no gradient).
pub(super) fn channel_max_abs(t: &Tensor) -> Result<Vec<f32>> {
    t.detach()
        .abs()?
        .flatten_from(1)?
        .max(D::Minus1)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()
}

/// The integer weights (as f32 tensor) for the given per-channel scales.
pub fn quantize_weight_integers(weight: &Tensor, scales: &[f32], bits: u8) -> Result<Tensor> {
    let qmax = symmetric_qmax(bits) as f32;
    if weight.device().is_cpu() && weight.dtype() == DType::F32 {
        // One pass instead of four candle ops (each a tensor, and libm's `roundf` per
        // element), the same f32 operations: `w / scale`, round, clamp.
        let w = weight
            .detach()
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let per_channel = (w.len() / scales.len().max(1)).max(1);
        let mut integers = vec![0.0f32; w.len()];
        let channels = integers.chunks_mut(per_channel).zip(w.chunks(per_channel));
        for ((out, channel), &scale) in channels.zip(scales) {
            for (out, &v) in out.iter_mut().zip(channel) {
                let level = round_half_away(v / scale);
                // candle's clamp: its maximum with the low bound, then its minimum.
                let level = if level < -qmax { -qmax } else { level };
                *out = if level > qmax { qmax } else { level };
            }
        }
        return Tensor::from_vec(integers, weight.shape(), weight.device());
    }
    let scale = channel_tensor(weight, scales)?;
    weight
        .detach()
        .broadcast_div(&scale)?
        .round()?
        .clamp(-qmax, qmax)
}

/// A weight on its integer grid, as a quantizer puts it there: the fake-quantized
/// weight the forward pass computes with is exactly `integers[c, ...] · scales[c]`
/// ([`dequantize`](Self::dequantize)), and the exporters (packed model, ONNX,
/// calibration.json) write these integers and scales, never their own
/// ([`crate::quant::Quantizer::weight_integers`]).
#[derive(Debug, Clone)]
pub struct WeightIntegers {
    /// Bit width of the integers (symmetric: within `±(2^(bits−1) − 1)`; 1 bit: the
    /// values ±1, see [`binary`](Self::binary)).
    pub bits: u8,
    /// One scale per output channel.
    pub scales: Vec<f32>,
    /// The integers, exactly, in a float tensor shaped like the weight `[out, ...]`.
    pub integers: Tensor,
}

impl WeightIntegers {
    /// TFLite's weight scheme (QAT, naive): symmetric per output channel with
    /// [`weight_scales`], rounding half away from zero.
    pub fn symmetric(weight: &Tensor, bits: u8) -> Result<Self> {
        let scales = weight_scales(weight, bits)?;
        let integers = quantize_weight_integers(weight, &scales, bits)?;
        Ok(Self {
            bits,
            scales,
            integers,
        })
    }

    /// Binary weights (XNOR-Net, DoReFa's 1 bit, BNN): `sign(w)` with `sign(0) = +1`
    /// and per output channel the scale `mean |w_c|` (DoReFa's `E|w|`), so the
    /// binarized channel keeps the latent channel's magnitude. An all-zero channel
    /// (a pruned filter) gets integers 0 and scale 1.0, the one place a 1-bit layer
    /// holds a 0.
    pub fn binary(weight: &Tensor) -> Result<Self> {
        let w = weight.detach();
        let mean_abs = w
            .abs()?
            .flatten_from(1)?
            .mean(D::Minus1)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        let live: Vec<f32> = mean_abs
            .iter()
            .map(|&m| if m > 0.0 { 1.0 } else { 0.0 })
            .collect();
        let scales = mean_abs
            .iter()
            .map(|&m| if m > 0.0 { m } else { 1.0 })
            .collect();
        // 2·[w ≥ 0] − 1, zeroed on dead channels.
        let sign = ((w.ge(0f64)?.to_dtype(w.dtype())? * 2.0)? - 1.0)?;
        let integers = sign.broadcast_mul(&channel_tensor(&w, &live)?)?;
        Ok(Self {
            bits: 1,
            scales,
            integers,
        })
    }

    /// `integers · scales[c]`: the fake-quantized weight.
    pub fn dequantize(&self) -> Result<Tensor> {
        self.integers
            .broadcast_mul(&channel_tensor(&self.integers, &self.scales)?)
    }

    /// The float interval the widest channel's grid covers.
    pub fn range(&self) -> QuantRange {
        let widest = self.scales.iter().copied().fold(0f32, f32::max);
        let qmax = f64::from(symmetric_qmax(self.bits));
        QuantRange {
            low: -qmax * f64::from(widest),
            high: qmax * f64::from(widest),
        }
    }

    /// The integers as `i8`, row-major (PyTorch's layout); an error if one is not an
    /// integer in `[-128, 127]`.
    pub fn to_i8(&self) -> Result<Vec<i8>> {
        let values = self
            .integers
            .to_device(&candle_core::Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        values
            .into_iter()
            .map(|v| {
                let fits = v.fract() == 0.0 && (-128.0..=127.0).contains(&v);
                if fits {
                    Ok(v as i8)
                } else {
                    Err(candle_core::Error::Msg(format!(
                        "weight integer {v} is not an int8 value"
                    )))
                }
            })
            .collect()
    }
}

/// Per-channel symmetric fake quantization of a weight `[out, ...]`; returns the
/// fake-quantized weight and the scales used.
pub fn fake_quantize_weight(
    weight: &Tensor,
    bits: u8,
    grad: &dyn QuantGrad,
) -> Result<(Tensor, Vec<f32>)> {
    let q = WeightIntegers::symmetric(weight, bits)?;
    Ok((fake_quantize_weight_as(weight, &q, grad)?, q.scales))
}

/// The fake-quantized weight for integers `q` of `weight`: equal to
/// [`WeightIntegers::dequantize`] in value, with `grad`'s gradient.
pub fn fake_quantize_weight_as(
    weight: &Tensor,
    q: &WeightIntegers,
    grad: &dyn QuantGrad,
) -> Result<Tensor> {
    grad.apply(weight, &q.dequantize()?, q.range())
}

/// [`fake_quantize_weight_as`] that also records the scales and bits in a layer's state.
pub fn fake_quantize_weight_recorded(
    weight: &Tensor,
    q: WeightIntegers,
    grad: &dyn QuantGrad,
    state: &mut super::QuantState,
) -> Result<Tensor> {
    let fq = fake_quantize_weight_as(weight, &q, grad)?;
    state.weight_scales = q.scales;
    state.weight_bits = Some(q.bits);
    Ok(fq)
}

/// `scales` shaped `[out, 1, 1, ...]` to broadcast against `weight` (in its dtype).
pub(super) fn channel_tensor(weight: &Tensor, scales: &[f32]) -> Result<Tensor> {
    let mut shape = vec![1usize; weight.rank()];
    shape[0] = scales.len();
    Tensor::from_slice(scales, shape, weight.device())?.to_dtype(weight.dtype())
}

/// Rounds the output of an average over `count` values of grid `q` back onto `q` exactly
/// as the int8 average pool does: the integer sum of the raw values (zero point
/// included) divided by `count` with ties away from zero. The float average is first
/// snapped to `sum / count` so float error cannot decide a tie (ties are common here).
pub fn round_average_onto_grid(
    x: &Tensor,
    q: QParams,
    count: usize,
    grad: &dyn QuantGrad,
) -> Result<Tensor> {
    let n = count as f64;
    let half = (count / 2) as f64;
    let raw = ((x.detach() / f64::from(q.scale))? + f64::from(q.zero_point))?;
    let sum = (raw * n)?.round()?;
    let magnitude = ((sum.abs()? + half)? / n)?.floor()?;
    let integer = (sum.sign()? * magnitude)?.clamp(q.qmin as f32, q.qmax as f32)?;
    let dequant = ((integer - f64::from(q.zero_point))? * f64::from(q.scale))?;
    grad.apply(x, &dequant, q.range())
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{channel_tensor, quantize_weight_integers, symmetric_qmax};

    /// The one-pass integers are the candle op chain's, bit for bit: ties, values past
    /// the grid (scales below the channel's largest magnitude) and 2- to 8-bit grids.
    #[test]
    fn weight_integers_match_the_candle_op_chain() -> candle_core::Result<()> {
        let w = Tensor::arange(0f32, 4.0 * 3.0 * 5.0 * 5.0, &Device::Cpu)?
            .affine(0.125, -37.5)?
            .reshape((4, 3, 5, 5))?;
        for bits in [2, 4, 8] {
            let scales = [0.25f32, 0.1, 3.0, 0.5];
            let qmax = symmetric_qmax(bits) as f32;
            let chain = w
                .broadcast_div(&channel_tensor(&w, &scales)?)?
                .round()?
                .clamp(-qmax, qmax)?;
            let ours = quantize_weight_integers(&w, &scales, bits)?;
            let bits_of = |t: &Tensor| -> candle_core::Result<Vec<u32>> {
                Ok(t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|v| v.to_bits())
                    .collect())
            };
            assert_eq!(ours.dims(), w.dims());
            assert_eq!(bits_of(&ours)?, bits_of(&chain)?, "{bits} bits");
        }
        Ok(())
    }
}
