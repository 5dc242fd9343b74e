//! ONNX export (being written).

use std::path::Path;

use crate::nn::Graph;
use crate::{Error, Result};

/// Writes `graph` as an ONNX model for inputs of `input_shape`.
pub fn write_onnx(_graph: &Graph, path: &Path, _input_shape: [usize; 4]) -> Result<()> {
    Err(Error::Export { path: path.to_path_buf(), message: "ONNX export is not written yet".into() })
}
