//! `--weights`: a zoo model's parameters from a safetensors file, named and shaped as
//! `model.safetensors` exports them (`<op_name>.weight`, `.bias`, `.running_mean`,
//! `.running_var`), which is also a PyTorch `state_dict` of the same architecture.

use std::path::Path;

use candle_core::Var;

use super::Model;
use crate::export::graph_tensors;
use crate::{Error, Result};

impl Model {
    /// Replaces every parameter with the file's. Everything is checked before anything
    /// changes: a missing, extra or misshapen tensor is an error naming it, and the model
    /// is left as it was. Returns the file's content fingerprint (it keys the baseline
    /// cache), so the file is read once.
    pub fn load_weights(&self, path: &Path) -> Result<String> {
        let bad = |message: String| Error::File {
            path: path.to_path_buf(),
            message,
        };
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        let loaded = candle_core::safetensors::load_buffer(&bytes, &self.device)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let current = graph_tensors(&self.graph);
        for (name, tensor) in &current {
            match loaded.get(name) {
                None => {
                    return Err(bad(format!(
                        "no tensor `{name}`, which {} needs (shape {:?}); the file has: {}",
                        self.name,
                        tensor.dims(),
                        sorted_names(loaded.keys())
                    )))
                }
                Some(t) if t.dims() != tensor.dims() => {
                    return Err(bad(format!(
                        "tensor `{name}` has shape {:?}; {} needs {:?}",
                        t.dims(),
                        self.name,
                        tensor.dims()
                    )))
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = loaded.keys().find(|k| !current.contains_key(*k)) {
            return Err(bad(format!(
                "tensor `{extra}` is not a parameter of {}; its tensors are: {}",
                self.name,
                sorted_names(current.keys())
            )));
        }
        for (name, tensor) in &current {
            let value = loaded[name].to_dtype(tensor.dtype())?;
            Var::from_tensor(tensor)?.set(&value)?;
        }
        Ok(crate::data::content_fingerprint(&bytes))
    }
}

fn sorted_names<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut names: Vec<&str> = names.map(String::as_str).collect();
    names.sort_unstable();
    names.join(", ")
}
