//! The model zoo: small networks for 28×28×1 images (MNIST, Fashion-MNIST).
//!
//! Layer names are stable dotted `op_name`s (`conv1`, `stack2.conv1`, ...) that
//! `config_list`s, checkpoints and exports refer to. `--model file.onnx` imports a
//! model instead (`onnx.rs`).

mod dscnn;
mod lenet5;
mod mlp;
mod onnx;
mod pretrained;
mod resnet8;
mod seeded_init;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use crate::nn::Graph;
use crate::{Error, Result};
pub use seeded_init::SeededVarMap;

/// Names accepted by [`build`].
pub const MODEL_NAMES: [&str; 5] = ["mlp", "lenet5", "lenet5_bn", "resnet8", "dscnn"];

/// A graph together with the variables that hold its parameters.
#[derive(Clone)]
pub struct Model {
    pub name: String,
    pub graph: Graph,
    pub varmap: VarMap,
    pub device: Device,
}

impl Model {
    /// A freshly initialized model; the same `seed` gives the same weights. A `name`
    /// ending in `.onnx` is a file to import instead ([`Model::from_onnx`], `seed`
    /// unused: the weights are the file's).
    pub fn new(name: &str, num_classes: usize, device: &Device, seed: u64) -> Result<Self> {
        if crate::import::onnx::is_onnx_path(name) {
            return Self::from_onnx(std::path::Path::new(name), num_classes, device);
        }
        let varmap = VarMap::new();
        let backend = SeededVarMap {
            varmap: varmap.clone(),
            seed,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), DType::F32, device.clone());
        let graph = build(name, num_classes, vb)?;
        Ok(Self {
            name: name.to_string(),
            graph,
            varmap,
            device: device.clone(),
        })
    }

    /// `(name, var)` of every trainable parameter, sorted by name (running statistics of
    /// batch norms are state, not parameters).
    pub fn trainable_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<_> = data
            .iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Every variable, sorted by name.
    pub fn all_vars(&self) -> Vec<(String, candle_core::Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }
}

/// Builds the named model's graph, creating its variables through `vb`.
pub fn build(name: &str, num_classes: usize, vb: VarBuilder) -> Result<Graph> {
    let graph = match name {
        "mlp" => mlp::build(num_classes, vb)?,
        "lenet5" => lenet5::build(num_classes, vb)?,
        "lenet5_bn" => lenet5::build_bn(num_classes, vb)?,
        "resnet8" => resnet8::build(num_classes, vb)?,
        "dscnn" => dscnn::build(num_classes, vb)?,
        other => {
            return Err(Error::UnknownModel {
                name: other.to_string(),
                valid: MODEL_NAMES.join(", "),
            });
        }
    };
    Ok(graph)
}
