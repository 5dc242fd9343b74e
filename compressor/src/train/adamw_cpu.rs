//! One AdamW update of one `f32` variable on the CPU in a single pass: spelled with
//! candle's tensor ops ([`adamw_with_tensor_ops`](super::optim::adamw_with_tensor_ops))
//! it is fourteen ops, each a pass and a fresh tensor, all on the calling thread while
//! the other cores wait. Each element goes through the same `f32` operations in the same
//! order as that spelling (candle's scalar ops are `v · mul + add` with `f32` constants
//! cast from `f64`), so both give the same bits.

use std::ops::{Deref, Range};

use candle_core::{CpuStorage, DType, Result, Storage, Tensor};

/// AdamW's hyper-parameters and this step's factors.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdamWStep {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub lr: f64,
    /// The step number, from 1 (bias correction).
    pub t: i32,
}

/// New `(w, m, v)` from weight `w`, gradient `g` and the moments (`None` before the first
/// step); `None` where an operand is not contiguous `f32` on the CPU.
pub(super) fn adamw_update(
    step: AdamWStep,
    w: &Tensor,
    g: &Tensor,
    m: Option<&Tensor>,
    v: Option<&Tensor>,
) -> Result<Option<(Tensor, Tensor, Tensor)>> {
    let operands = [Some(w), Some(g), m, v];
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !operands
        .iter()
        .flatten()
        .all(|t| cpu_f32(t) && t.shape() == w.shape())
    {
        return Ok(None);
    }
    let (w, g) = (w.contiguous()?, g.contiguous()?);
    let (m, v) = (
        m.map(Tensor::contiguous).transpose()?,
        v.map(Tensor::contiguous).transpose()?,
    );
    let (w_in, g_in) = (values_of(&w)?, values_of(&g)?);
    let (m_in, v_in) = (
        m.as_ref().map(values_of).transpose()?,
        v.as_ref().map(values_of).transpose()?,
    );
    let n = w_in.slice().len();
    let (mut w_new, mut m_new, mut v_new) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let s = step;
    // The f32 constants of candle's scalar ops in the tensor-op spelling.
    let (b1, c1) = (s.beta1 as f32, (1.0 - s.beta1) as f32);
    let (b2, c2) = (s.beta2 as f32, (1.0 - s.beta2) as f32);
    let m_correction = (1.0 / (1.0 - s.beta1.powi(s.t))) as f32;
    let v_correction = (1.0 / (1.0 - s.beta2.powi(s.t))) as f32;
    let (eps, lr) = (s.eps as f32, s.lr as f32);
    let decay = (1.0 - s.lr * s.weight_decay) as f32;
    let zeros = vec![0.0; n];
    let m_old = m_in.as_ref().map_or(zeros.as_slice(), Values::slice);
    let v_old = v_in.as_ref().map_or(zeros.as_slice(), Values::slice);
    let (first_m, first_v) = (m_in.is_none(), v_in.is_none());
    let old = w_in.slice().iter().zip(g_in.slice()).zip(m_old).zip(v_old);
    let new = w_new.iter_mut().zip(&mut m_new).zip(&mut v_new);
    for ((((&w, &g), &m_old), &v_old), ((w_new, m_new), v_new)) in old.zip(new) {
        let g_part = g * c1 + 0.0;
        let m = if first_m {
            g_part
        } else {
            (m_old * b1 + 0.0) + g_part
        };
        let g2_part = (g * g) * c2 + 0.0;
        let v = if first_v {
            g2_part
        } else {
            (v_old * b2 + 0.0) + g2_part
        };
        let m_hat = m * m_correction + 0.0;
        let v_hat = v * v_correction + 0.0;
        let update = m_hat / (v_hat.sqrt() * 1.0 + eps);
        (*w_new, *m_new, *v_new) = ((w * decay + 0.0) - (update * lr + 0.0), m, v);
    }
    let tensor = |data: Vec<f32>| Tensor::from_vec(data, w.shape(), w.device());
    Ok(Some((tensor(w_new)?, tensor(m_new)?, tensor(v_new)?)))
}

/// A contiguous `f32` CPU tensor's values, read in place (`S`: the storage's read guard).
struct Values<S> {
    storage: S,
    range: Range<usize>,
}

impl<S: Deref<Target = Storage>> Values<S> {
    fn slice(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(data)) => &data[self.range.clone()],
            _ => unreachable!("checked in values_of"),
        }
    }
}

fn values_of(t: &Tensor) -> Result<Values<impl Deref<Target = Storage> + '_>> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(_)), Some((start, end))) => Ok(Values {
            storage,
            range: start..end,
        }),
        _ => candle_core::bail!("adamw: expects a contiguous f32 CPU tensor"),
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::{adamw_update, AdamWStep};
    use crate::train::optim::adamw_with_tensor_ops;

    /// Five steps of both spellings from the same start give the same bits, weight and
    /// moments, over values that include zeros and large and tiny gradients.
    #[test]
    fn one_pass_matches_the_tensor_ops_bit_for_bit() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let n = 1000;
        let w0 = Tensor::arange(0f32, n as f32, &dev)?
            .affine(0.013, -6.0)?
            .sin()?;
        let bits = |t: &Tensor| -> candle_core::Result<Vec<u32>> {
            Ok(t.flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|v| v.to_bits())
                .collect())
        };
        let mut fused = (w0.clone(), None::<Tensor>, None::<Tensor>);
        let mut ops = (w0, None::<Tensor>, None::<Tensor>);
        for t in 1..=5 {
            let g = Tensor::arange(0f32, n as f32, &dev)?
                .affine(0.7 * t as f64, 1.0)?
                .cos()?
                .affine(10f64.powi(t - 3), 0.0)?
                .reshape((20, 50))?;
            let step = AdamWStep {
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 1e-4,
                lr: 1e-3 * t as f64,
                t,
            };
            let w = fused.0.reshape((20, 50))?;
            let (w, m, v) =
                adamw_update(step, &w, &g, fused.1.as_ref(), fused.2.as_ref())?.expect("CPU f32");
            fused = (w, Some(m), Some(v));
            let w = ops.0.reshape((20, 50))?;
            let (w, m, v) = adamw_with_tensor_ops(step, &w, &g, ops.1.as_ref(), ops.2.as_ref())?;
            ops = (w, Some(m), Some(v));
            assert_eq!(bits(&fused.0)?, bits(&ops.0)?, "w after step {t}");
            for (a, b) in [(&fused.1, &ops.1), (&fused.2, &ops.2)] {
                assert_eq!(bits(a.as_ref().unwrap())?, bits(b.as_ref().unwrap())?);
            }
        }
        Ok(())
    }
}
