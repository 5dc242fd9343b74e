//! sprig-compressor: NNI-style pruning and quantization on candle, exported for microcontrollers.

pub mod config;
pub mod data;
mod error;
pub mod export;
pub mod models;
pub mod nn;
pub mod prune;
pub mod quant;

pub use error::{Error, Result};
