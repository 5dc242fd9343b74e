//! The value of per-tensor asymmetric fake quantization in one pass over the tensor, as a
//! candle custom op, for `f32` on the CPU. It reproduces, operation for operation in
//! `f32`, the chain of candle ops it replaces (`x · (1/scale)`, round half away from
//! zero, `+ zero_point`, clamp to `[qmin, qmax]`, `− zero_point`, `· scale`), which took
//! seven passes and allocations per quantized activation. No gradient: the caller's
//! [`QuantGrad`](super::QuantGrad) supplies it, as before.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

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
        let q = self.0;
        // The same f32 constants candle's scalar ops derive from their f64 arguments.
        let inv_scale = (1.0 / f64::from(q.scale)) as f32;
        let zp = q.zero_point as f32;
        let (qmin, qmax) = (q.qmin as f32, q.qmax as f32);
        let values = data[start..end]
            .iter()
            .map(|&x| {
                let level = (x * inv_scale).round() + zp;
                // candle's maximum / minimum, NaN-preserving as they are.
                let level = if level < qmin { qmin } else { level };
                let level = if level > qmax { qmax } else { level };
                (level - zp) * q.scale
            })
            .collect();
        Ok((CpuStorage::F32(values), l.shape().clone()))
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

    use super::{fake_quant_value, FakeQuantValue};
    use crate::quant::QParams;

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
