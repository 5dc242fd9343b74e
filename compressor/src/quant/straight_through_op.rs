//! The built-in straight-through rules ([`StraightThrough`](super::StraightThrough),
//! [`ClippedStraightThrough`](super::ClippedStraightThrough)) as one candle custom op on
//! the CPU: the forward hands out the quantized value, the backward passes `dy` (inside
//! the range only, when clipped). Spelled with candle's own ops the same rule took three
//! to seven passes forward and twice that backward per quantized tensor, which made QAT
//! training half as fast as plain training. Where the quantized value is per-tensor fake
//! quantization, [`fake_quantize_straight_through`] computes it inside the same op
//! (one pass and one tensor fewer per quantized activation).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::{QParams, QuantRange};

/// Value of `quantized`, gradient `dy` (or `dy · [low ≤ x ≤ high]`) into `x`.
struct StraightThroughOp {
    clip: Option<QuantRange>,
}

/// Value: `x` fake-quantized on grid `q`; gradient: as [`StraightThroughOp`]'s.
struct FakeQuantStraightThrough {
    q: QParams,
    clip: Option<QuantRange>,
}

/// The backward of the straight-through ops: `dy · [low ≤ x ≤ high]`.
struct ClippedGrad(QuantRange);

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(data), Some((start, end))) => Ok(&data[start..end]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 operand"),
    }
}

impl CustomOp2 for StraightThroughOp {
    fn name(&self) -> &'static str {
        "sprig-straight-through"
    }

    fn cpu_fwd(
        &self,
        _xs: &CpuStorage,
        xl: &Layout,
        qs: &CpuStorage,
        ql: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let q = contiguous(qs, ql, self.name())?;
        if xl.shape() != ql.shape() {
            candle_core::bail!(
                "{}: x {:?} but quantized {:?}",
                self.name(),
                xl.shape(),
                ql.shape()
            );
        }
        Ok((CpuStorage::F32(q.to_vec()), ql.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _quantized: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(passed_gradient(x, dy, self.clip)?), None))
    }
}

impl CustomOp1 for FakeQuantStraightThrough {
    fn name(&self) -> &'static str {
        "sprig-fake-quant-straight-through"
    }

    fn cpu_fwd(&self, xs: &CpuStorage, xl: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl, self.name())?;
        let values = super::fake_quant_value::fake_quant_values(x, self.q);
        Ok((CpuStorage::F32(values), xl.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(passed_gradient(x, dy, self.clip)?))
    }
}

/// `dy`, or `dy · [low ≤ x ≤ high]` when clipped.
fn passed_gradient(x: &Tensor, dy: &Tensor, clip: Option<QuantRange>) -> Result<Tensor> {
    match clip {
        None => Ok(dy.clone()),
        Some(range) => x.apply_op2_no_bwd(&dy.contiguous()?, &ClippedGrad(range)),
    }
}

impl CustomOp2 for ClippedGrad {
    fn name(&self) -> &'static str {
        "sprig-clipped-straight-through-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(xs, xl, self.name())?;
        let dy = contiguous(dys, dyl, self.name())?;
        // The same f32 bounds candle's `ge(f64)` / `le(f64)` compare against.
        let (low, high) = (self.0.low as f32, self.0.high as f32);
        let dx = x
            .iter()
            .zip(dy)
            .map(|(&x, &g)| if x >= low && x <= high { g } else { 0.0 })
            .collect();
        Ok((CpuStorage::F32(dx), xl.shape().clone()))
    }
}

/// The op where it applies (f32 on the CPU, same shapes); `None` sends the caller to its
/// candle-op spelling.
pub fn straight_through(
    x: &Tensor,
    quantized: &Tensor,
    clip: Option<QuantRange>,
) -> Result<Option<Tensor>> {
    let cpu_f32 = |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32;
    if !(cpu_f32(x) && cpu_f32(quantized) && x.dims() == quantized.dims()) {
        return Ok(None);
    }
    let op = StraightThroughOp { clip };
    Ok(Some(
        x.contiguous()?
            .apply_op2(&quantized.detach().contiguous()?, op)?,
    ))
}

/// `x` fake-quantized per tensor on grid `q`, with the straight-through gradient
/// (clipped to `q`'s range when `clip`), in one op where it applies (f32 on the CPU);
/// `None` sends the caller to the value and then [`straight_through`].
pub fn fake_quantize_straight_through(
    x: &Tensor,
    q: QParams,
    clip: bool,
) -> Result<Option<Tensor>> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return Ok(None);
    }
    let op = FakeQuantStraightThrough {
        q,
        clip: clip.then(|| q.range()),
    };
    Ok(Some(x.contiguous()?.apply_op1(op)?))
}
