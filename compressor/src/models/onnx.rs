//! `--model path/to/model.onnx`: a [`Model`] imported from an ONNX file instead of
//! built from the zoo (see [`crate::import::onnx`]).

use std::path::Path;

use candle_core::Device;

use super::Model;
use crate::import::onnx;
use crate::{Error, Result};

impl Model {
    /// Imports `path`, checking it has `num_classes` outputs. The model's name is the
    /// file stem; its weights are the file's, as trainable variables.
    pub fn from_onnx(path: &Path, num_classes: usize, device: &Device) -> Result<Self> {
        let imported = onnx::read_file(path, device)?;
        if imported.num_classes != num_classes {
            return Err(Error::File {
                path: path.to_path_buf(),
                message: format!(
                    "the model has {} outputs, the data has {num_classes} classes",
                    imported.num_classes
                ),
            });
        }
        let name = path
            .file_stem()
            .map_or_else(|| "onnx".to_string(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            name,
            graph: imported.graph,
            varmap: imported.varmap,
            device: device.clone(),
        })
    }
}
