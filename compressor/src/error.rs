//! The compressor's error type: every message says which file, layer or dict it is about.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::data::DataError;

/// Anything that can go wrong while training, compressing or exporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Boxed: the largest of these, it would make every `Result` of the crate large.
    #[error(transparent)]
    Config(Box<ConfigError>),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("unknown model `{name}`; valid models: {valid}")]
    UnknownModel { name: String, valid: String },
    #[error("device `cuda` requested, but this build has no CUDA support; rebuild with `--features cuda`")]
    CudaNotBuilt,
    #[error(
        "device `cuda`: no usable CUDA device ({0}); check the NVIDIA driver (`nvidia-smi`), \
         or train with `--device cpu`"
    )]
    CudaUnavailable(String),
    #[error("device `{0}` is not valid; choose `cpu` or `cuda`")]
    UnknownDevice(String),
    #[error(
        "training diverged: loss is {loss} at epoch {epoch}, step {step}; the last good checkpoint was left untouched"
    )]
    NonFiniteLoss {
        loss: f32,
        epoch: usize,
        step: usize,
    },
    #[error(
        "training diverged: weights became non-finite at epoch {epoch}, step {step}; the last good checkpoint was left untouched"
    )]
    NonFiniteWeights { epoch: usize, step: usize },
    #[error("layer `{layer}`: {message}")]
    Layer { layer: String, message: String },
    #[error("export failed for {path}: {message}")]
    Export { path: PathBuf, message: String },
    /// The search of `cargo xtask auto` (a budget, a calibration, a trial table).
    #[error("auto-compression: {0}")]
    Auto(String),
    /// Boxed like `Config`: an ONNX model that cannot be imported (names file and node).
    #[error(transparent)]
    Onnx(Box<crate::import::onnx::OnnxError>),
}

impl From<crate::import::onnx::OnnxError> for Error {
    fn from(e: crate::import::onnx::OnnxError) -> Self {
        Error::Onnx(Box::new(e))
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

impl Error {
    /// Wraps an io error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
