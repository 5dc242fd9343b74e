//! The value of per-tensor asymmetric fake quantization in one pass over the tensor, as a
//! candle custom op, for `f32` on the CPU. It reproduces, operation for operation in
//! `f32`, the chain of candle ops it replaces (`x · (1/scale)`, round half away from
//! zero, `+ zero_point`, clamp to `[qmin, qmax]`, `− zero_point`, `· scale`), which took
//! seven passes and allocations per quantized activation. No gradient: the caller's
//! [`QuantGrad`](super::QuantGrad) supplies it, as before; the built-in straight-through
//! rules take the values from [`fake_quant_values`] inside their own op instead.

use std::mem::MaybeUninit;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::QParams;

struct FakeQuantValue(QParams);

impl CustomOp1 for FakeQuantValue {
    fn name(&self) -> &'static str {
        "sprig-fake-quant-value"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!(
                "{}: expects contiguous f32, got {:?}",
                self.name(),
                s.dtype()
            );
        };
        let values = fake_quant_values(&data[start..end], self.0);
        Ok((CpuStorage::F32(values), l.shape().clone()))
    }
}

/// Elements per parallel task: large activations (LeNet-5's conv1 output is 300 k
/// values a batch) split over the threads, small ones stay on the calling thread.
const TASK_LEN: usize = 1 << 14;

/// The fake-quantized values of `data` on grid `q`, over rayon's pool.
pub(super) fn fake_quant_values(data: &[f32], q: QParams) -> Vec<f32> {
    // Written once, not zero-filled first: the fill was a pass over every activation.
    let mut values = Vec::with_capacity(data.len());
    values.spare_capacity_mut()[..data.len()]
        .par_chunks_mut(TASK_LEN)
        .zip(data.par_chunks(TASK_LEN))
        .for_each(|(out, data)| fake_quantize_into(out, data, q));
    // SAFETY: the chunks above cover the first `data.len()` entries, and
    // `fake_quantize_into` writes every entry of its chunk (equal lengths).
    unsafe { values.set_len(data.len()) };
    values
}

/// `out[i]` = `data[i]` fake-quantized on grid `q`, for every `i` (the slices have the
/// same length). A function of its own, not a closure inside the parallel loop: there
/// LLVM reloaded the grid's constants for every element (three times the instructions).
fn fake_quantize_into(out: &mut [MaybeUninit<f32>], data: &[f32], q: QParams) {
    assert_eq!(out.len(), data.len(), "fake quantization: output length");
    // The same f32 constants candle's scalar ops derive from their f64 arguments.
    let inv_scale = (1.0 / f64::from(q.scale)) as f32;
    let zp = q.zero_point as f32;
    let (qmin, qmax, scale) = (q.qmin as f32, q.qmax as f32, q.scale);
    for (out, &x) in out.iter_mut().zip(data) {
        let level = round_half_away(x * inv_scale) + zp;
        // candle's maximum / minimum, NaN-preserving as they are.
        let level = if level < qmin { qmin } else { level };
        let level = if level > qmax { qmax } else { level };
        out.write((level - zp) * scale);
    }
}

/// `v.round()` (half away from zero), bit for bit, inline: without SSE4.1 `f32::round`
/// is a call to libm's `roundf` per element, which took 5 % of a QAT training profile
/// (about twice the instructions of this).
#[inline(always)]
pub(super) fn round_half_away(v: f32) -> f32 {
    // Every f32 of magnitude 2^23 or more is an integer already (NaN and ±∞ too).
    const ALL_INTEGERS: f32 = 8_388_608.0;
    let small = v.abs() < ALL_INTEGERS;
    let bounded = if small { v } else { 0.0 };
    // SAFETY: |bounded| < 2^23 fits an i32. `as i32` would saturate, a compare and
    // branch more per element (measured: 145 M against 112 M instructions).
    let truncated = unsafe { bounded.to_int_unchecked::<i32>() } as f32;
    // `bounded - truncated` is exact below 2^23.
    let away = if (bounded - truncated).abs() >= 0.5 {
        truncated + 1f32.copysign(v)
    } else {
        truncated
    };
    // copysign keeps round's sign on a zero result (`-0.3` rounds to `-0.0`).
    if small {
        away.copysign(v)
    } else {
        v
    }
}

/// The fake-quantized value of `x` (detached) on grid `q`.
pub fn fake_quant_value(x: &Tensor, q: QParams) -> Result<Tensor> {
    let xd = x.detach();
    if xd.device().is_cpu() && xd.dtype() == DType::F32 {
        return xd.contiguous()?.apply_op1_no_bwd(&FakeQuantValue(q));
    }
    let zp = f64::from(q.zero_point);
    let integer =
        ((xd / f64::from(q.scale))?.round()? + zp)?.clamp(q.qmin as f32, q.qmax as f32)?;
    (integer - zp)? * f64::from(q.scale)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{fake_quant_value, round_half_away, FakeQuantValue};
    use crate::quant::QParams;

    /// `f32::round` bit for bit: every 61st bit pattern (all exponents, both signs,
    /// NaNs and infinities among them), and the ties and near-ties around each integer
    /// up to 2^24.
    #[test]
    fn rounds_as_f32_round() {
        let same = |v: f32| {
            let (ours, std) = (round_half_away(v), v.round());
            assert!(
                ours.to_bits() == std.to_bits() || (ours.is_nan() && std.is_nan()),
                "{v:e} ({:#x}): {ours:e} vs {std:e}",
                v.to_bits()
            );
        };
        (0..=u32::MAX)
            .step_by(61)
            .map(f32::from_bits)
            .for_each(same);
        for i in 0..(1 << 24) {
            let tie = i as f32 + 0.5;
            for v in [tie, tie.next_down(), tie.next_up()] {
                same(v);
                same(-v);
            }
        }
    }

    /// Bit for bit the candle op chain it replaces, over values that straddle rounding
    /// ties, the clamp bounds and zero.
    #[test]
    fn matches_the_candle_op_chain_bit_for_bit() -> candle_core::Result<()> {
        let values: Vec<f32> = (-3000..3000).map(|i| i as f32 * 0.0137 + 0.004).collect();
        let x = Tensor::new(values.as_slice(), &Device::Cpu)?;
        for (lo, hi, bits) in [
            (-1.0, 1.0, 8),
            (0.0, 6.0, 8),
            (-0.3, 17.5, 4),
            (-40.0, 2.0, 2),
        ] {
            let q = QParams::asymmetric(lo, hi, bits);
            let zp = f64::from(q.zero_point);
            let chain = (((&x / f64::from(q.scale))?.round()? + zp)?
                .clamp(q.qmin as f32, q.qmax as f32)?
                - zp)?
                * f64::from(q.scale);
            let fused = x.apply_op1_no_bwd(&FakeQuantValue(q))?;
            let bits_of = |t: &Tensor| -> candle_core::Result<Vec<u32>> {
                Ok(t.to_vec1::<f32>()?
                    .iter()
                    .map(|v| (v + 0.0).to_bits())
                    .collect())
            };
            assert_eq!(
                bits_of(&chain?)?,
                bits_of(&fused)?,
                "grid {lo}..{hi} @ {bits} bits"
            );
            assert_eq!(fake_quant_value(&x, q)?.dims(), x.dims());
        }
        Ok(())
    }
}
