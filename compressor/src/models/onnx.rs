//! `--model path/to/model.onnx`: a [`Model`] imported from an ONNX file instead of
//! built from the zoo (see [`crate::import::onnx`]).

use std::path::Path;

use candle_core::Device;

use super::Model;
use crate::import::onnx;
use crate::{Error, Result};

impl Model {
    /// Imports `path`, checking it has at least `num_classes` outputs (the data's
    /// largest label + 1: a model may have classes the data never shows, as a 10-class
    /// model on a subset of its classes does; every label is checked against the
    /// model's outputs before training). The model's name is the file stem; its
    /// weights are the file's, as trainable variables.
    pub fn from_onnx(path: &Path, num_classes: usize, device: &Device) -> Result<Self> {
        let imported = onnx::read_file(path, device)?;
        if imported.num_classes < num_classes {
            return Err(Error::File {
                path: path.to_path_buf(),
                message: format!(
                    "the model has {} outputs, but the data has labels up to {} \
                     ({num_classes} classes)",
                    imported.num_classes,
                    num_classes.saturating_sub(1)
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
