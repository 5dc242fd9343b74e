//! Exports: weights and masks (safetensors), ONNX, calibration JSON, and the packed int8
//! model (`model.sprig`) with its test vectors (`vectors.bin`); [`layer_integers`] is
//! the lowering of a weighted layer's integers that the packed exporter and the TFLite
//! importer share.
//!
//! Every file is written atomically (temp file, fsync, rename), so a killed export never
//! leaves a half-written file where a good one was.

mod atomic;
mod calibration;
pub mod layer_integers;
mod onnx;
pub mod packed;
mod weights;

pub use atomic::write_atomic;
pub use calibration::{calibration_json, write_calibration};
pub use onnx::write_onnx;
pub use packed::{pack, write_packed, Packed};
pub use weights::{graph_tensors, write_masks, write_weights};

use std::path::Path;

use crate::nn::Graph;
use crate::Result;

/// NNI's `export_model`: `model_path` gets the weights (pruned entries are exact zeros,
/// batch norms as they stand), `mask_path` the masks, and `onnx_path` (if given) an ONNX
/// graph for inputs of `input_shape` `[N, C, H, W]`, with QuantizeLinear/DequantizeLinear
/// pairs where a quantizer is attached.
pub fn export_model(
    graph: &Graph,
    model_path: &Path,
    mask_path: &Path,
    onnx_path: Option<&Path>,
    input_shape: [usize; 4],
) -> Result<()> {
    graph.apply_masks_to_weights()?;
    write_weights(graph, model_path)?;
    write_masks(graph, mask_path)?;
    if let Some(path) = onnx_path {
        write_onnx(graph, path, input_shape)?;
    }
    Ok(())
}

/// A tensor's values as a flat `Vec<f32>` on the host (exporters read weights this way).
pub(crate) fn host_f32(t: &candle_core::Tensor) -> Result<Vec<f32>> {
    Ok(t.to_device(&candle_core::Device::Cpu)?
        .to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// An export error for `path`.
pub(crate) fn export_error(path: &Path, message: impl Into<String>) -> crate::Error {
    crate::Error::Export {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// An export error for `path` about node `i` of `graph`, naming the layer and its type.
pub(crate) fn layer_error(
    path: &Path,
    graph: &Graph,
    i: usize,
    message: impl std::fmt::Display,
) -> crate::Error {
    let node = &graph.nodes()[i];
    export_error(
        path,
        format!(
            "layer `{}` ({}): {message}",
            node.name,
            node.layer.op_type()
        ),
    )
}
