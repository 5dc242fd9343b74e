//! A tensor's minimum and maximum in one pass, for the activation range observers (every
//! quantized activation, every training step): candle spelled it as a flatten, a dtype
//! copy and two reductions. CPU `f32` only; anything else takes that candle route.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

struct MinMax;

/// Elements per parallel task.
const TASK_LEN: usize = 1 << 14;

/// `(lo, hi)` with `v` taken in where it is strictly below or above.
fn keep((lo, hi): (f32, f32), v: f32) -> (f32, f32) {
    (if v < lo { v } else { lo }, if v > hi { v } else { hi })
}

/// Minimum and maximum of `first` and `data`, in eight lanes folded at the end.
fn lanes_min_max(first: f32, data: &[f32]) -> (f32, f32) {
    let (chunks, tail) = data.as_chunks::<8>();
    let (mut lanes_lo, mut lanes_hi) = ([first; 8], [first; 8]);
    for chunk in chunks {
        for i in 0..8 {
            (lanes_lo[i], lanes_hi[i]) = keep((lanes_lo[i], lanes_hi[i]), chunk[i]);
        }
    }
    let lanes = lanes_lo.into_iter().chain(lanes_hi);
    lanes.chain(tail.iter().copied()).fold((first, first), keep)
}

impl CustomOp1 for MinMax {
    fn name(&self) -> &'static str {
        "sprig-min-max"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("{}: expects a contiguous f32 tensor", self.name());
        };
        let data = &data[start..end];
        let Some(&first) = data.first() else {
            candle_core::bail!("{}: empty tensor", self.name());
        };
        // candle's reductions: start from the first element, replace on strict `<` / `>`.
        // Folds that each start from the first element, over any split of the data, and
        // are then folded the same way give the same minimum and maximum (a NaN never
        // replaces, and min and max of numbers do not depend on order; only the sign of
        // a zero extreme may differ). So the data splits over the threads, and each
        // task keeps eight lanes, which vectorize where one running pair does not.
        let (lo, hi) = data
            .par_chunks(TASK_LEN)
            .map(|task| lanes_min_max(first, task))
            .reduce(|| (first, first), |a, b| keep(keep(a, b.0), b.1));
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
        // A NaN after the first element is skipped, as candle's reductions skip it.
        let mut with_nan = flat.to_vec1::<f32>()?;
        with_nan[21] = f32::NAN;
        with_nan[58] = f32::NAN;
        let with_nan = Tensor::new(with_nan.as_slice(), &Device::Cpu)?;
        let expected = (
            with_nan.min(0)?.to_scalar::<f32>()?,
            with_nan.max(0)?.to_scalar::<f32>()?,
        );
        assert_eq!(min_max(&with_nan)?, expected);
        // Large enough to split into tasks, with the extremes late and NaNs inside.
        let n = 3 * super::TASK_LEN + 17;
        let mut big: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
        big[n - 2] = -7.5;
        big[2 * super::TASK_LEN + 5] = 9.25;
        big[super::TASK_LEN] = f32::NAN;
        big[n - 1] = f32::NAN;
        let big = Tensor::new(big.as_slice(), &Device::Cpu)?;
        assert_eq!(min_max(&big)?, (-7.5, 9.25));
        Ok(())
    }
}
