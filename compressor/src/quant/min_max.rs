//! A tensor's minimum and maximum in one pass, for the activation range observers (every
//! quantized activation, every training step): candle spelled it as a flatten, a dtype
//! copy and two reductions. CPU `f32` only; anything else takes that candle route.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

struct MinMax;

impl CustomOp1 for MinMax {
    fn name(&self) -> &'static str {
        "sprig-min-max"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("{}: expects a contiguous f32 tensor", self.name());
        };
        let Some((&first, rest)) = data[start..end].split_first() else {
            candle_core::bail!("{}: empty tensor", self.name());
        };
        // candle's reductions: start from the first element, replace on strict `<` / `>`.
        let (mut lo, mut hi) = (first, first);
        for &v in rest {
            if v < lo {
                lo = v;
            }
            if v > hi {
                hi = v;
            }
        }
        Ok((CpuStorage::F32(vec![lo, hi]), Shape::from(2)))
    }
}

/// `(min, max)` over all elements of `x` (detached), as `f32`.
pub fn min_max(x: &Tensor) -> Result<(f32, f32)> {
    let x = x.detach();
    if x.device().is_cpu() && x.dtype() == DType::F32 && x.elem_count() > 0 {
        let both = x
            .contiguous()?
            .apply_op1_no_bwd(&MinMax)?
            .to_vec1::<f32>()?;
        return Ok((both[0], both[1]));
    }
    let flat = x.flatten_all()?.to_dtype(DType::F32)?;
    Ok((
        flat.min(0)?.to_scalar::<f32>()?,
        flat.max(0)?.to_scalar::<f32>()?,
    ))
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::min_max;

    #[test]
    fn matches_candle_reductions_on_strided_and_other_dtypes() -> candle_core::Result<()> {
        let x = Tensor::arange(0f32, 60.0, &Device::Cpu)?
            .affine(0.37, -9.0)?
            .reshape((3, 4, 5))?
            .sin()?
            .transpose(0, 2)?;
        let flat = x.flatten_all()?;
        let expected = (
            flat.min(0)?.to_scalar::<f32>()?,
            flat.max(0)?.to_scalar::<f32>()?,
        );
        assert_eq!(min_max(&x)?, expected);
        assert_eq!(min_max(&x.to_dtype(DType::F64)?)?, expected);
        Ok(())
    }
}
