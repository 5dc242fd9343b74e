//! ReLU on the CPU as a custom op whose backward is one pass (`dy` where `x > 0`, as in
//! PyTorch) instead of candle's compare, cast and multiply over the whole activation.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use super::storage::contiguous_f32;

/// Elements per parallel task: LeNet-5's largest activation (conv1's, 300 k values a
/// batch) splits over the threads, small ones stay on one.
const TASK_LEN: usize = 1 << 14;

/// `y = max(x, 0)`.
pub struct ReluForward;

/// `dx = dy · [x > 0]`.
pub struct ReluGrad;

impl CustomOp1 for ReluForward {
    fn name(&self) -> &'static str {
        "sprig-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        // `max` would turn NaN into 0 and hide a diverging run from the NaN stop.
        let y = x
            .par_iter()
            .with_min_len(TASK_LEN)
            .map(|&v| if v < 0.0 { 0.0 } else { v })
            .collect();
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &ReluGrad)?))
    }
}

impl CustomOp2 for ReluGrad {
    fn name(&self) -> &'static str {
        "sprig-relu-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(xs, xl, self.name())?;
        let dy = contiguous_f32(dys, dyl, self.name())?;
        if x.len() != dy.len() {
            candle_core::bail!(
                "{}: {} inputs, {} gradients",
                self.name(),
                x.len(),
                dy.len()
            );
        }
        let dx = x
            .par_iter()
            .zip(dy)
            .with_min_len(TASK_LEN)
            .map(|(&x, &g)| if x > 0.0 { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}
