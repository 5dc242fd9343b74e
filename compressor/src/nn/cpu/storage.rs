//! Reading a custom op's CPU operands: contiguous `f32` only (the dispatchers in
//! [`super`] make operands contiguous and route every other dtype to candle's own ops).

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result};

/// The `f32` elements `layout` covers, which must be contiguous.
pub fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expects f32, got {:?}", storage.dtype());
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous operand"),
    }
}
