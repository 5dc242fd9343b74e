//! sprig-compressor: NNI-style pruning and quantization on candle, exported for microcontrollers.

pub mod auto;
pub mod chart;
pub mod compress;
pub mod config;
pub mod cpu_threads;
pub mod data;
mod error;
pub mod export;
pub mod freed_memory;
pub mod import;
pub mod models;
pub mod nn;
pub mod onnx_proto;
pub mod prune;
pub mod quant;
pub mod train;

pub use error::{Error, Result};
