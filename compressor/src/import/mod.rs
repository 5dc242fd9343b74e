//! Importing int8 TensorFlow Lite models (`.tflite`) into the sprig format; float ONNX
//! models into the compressor's graph are [`onnx`]'s, a separate path.
//!
//! [`tflite_to_sprig`] reads the flatbuffer with a small bounds-checked reader
//! (`tflite.rs`, no generated code), maps each operator onto a sprig op (`lower.rs`),
//! plans the arena with the runtime's planner (TFLite Micro's greedy-by-size strategy)
//! and loads the blob back with [`sprig_runtime::Model::from_bytes`].
//!
//! Mapped: CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED, AVERAGE_POOL_2D, MAX_POOL_2D,
//! ADD (same shapes), RESHAPE, SQUEEZE, SOFTMAX; fused NONE, RELU, RELU6, RELU_N1_TO_1;
//! int8 activations per tensor, int8 symmetric weights per tensor or per output channel
//! (scales along the op's output-channel dimension; equal scales along any dimension are
//! per tensor), int32 biases; SAME/VALID padding computed as TFLite does; dilation 1.
//! Anything else is an [`ImportError`] naming the operator index, the op and the reason;
//! a malformed file is an error, never a panic.
//!
//! Requantization multipliers follow TFLite Micro's `Prepare` functions
//! (`input_scale · filter_scale[c] / output_scale` in double, for conv, depthwise and
//! fully connected alike). Checked by hand once against the `tflite-micro` Python
//! package (not in CI yet; issue 5, item 3): 100 seeded random inputs per reference
//! model gave byte-identical outputs.

mod error;
mod lower;
pub mod onnx;
pub mod tflite;

pub use error::ImportError;
use sprig_runtime::Quant;

/// The importer's result type.
pub type Result<T, E = ImportError> = std::result::Result<T, E>;

/// One sprig op of an imported model.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedOp {
    /// Index of the TFLite operator it comes from.
    pub index: usize,
    /// TFLite operator name.
    pub tflite: String,
    /// sprig op name.
    pub sprig: &'static str,
    /// Output shape.
    pub output_shape: Vec<u32>,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Weights and biases (elements).
    pub parameters: u64,
}

/// An imported model: the validated `.sprig` blob and its summary.
#[derive(Debug, Clone)]
pub struct Imported {
    /// The name given to [`tflite_to_sprig`].
    pub name: String,
    /// The `.sprig` blob (loads with `Model::from_bytes`).
    pub blob: Vec<u8>,
    /// Size of the `.tflite` file.
    pub tflite_bytes: usize,
    /// Arena bytes the runtime needs.
    pub arena_bytes: usize,
    /// Number of TFLite operators.
    pub tflite_ops: usize,
    /// sprig ops, in execution order.
    pub ops: Vec<ImportedOp>,
    /// Multiply-accumulates per inference (conv, depthwise, fully connected).
    pub macs: u64,
    /// Weight and bias elements.
    pub parameters: u64,
    /// Input shape.
    pub input_shape: Vec<u32>,
    /// Output shape.
    pub output_shape: Vec<u32>,
    /// Input quantization.
    pub input: Quant,
    /// Output quantization.
    pub output: Quant,
}

/// Import an int8 `.tflite` model (see the module docs); `name` labels the result.
pub fn tflite_to_sprig(bytes: &[u8], name: &str) -> Result<Imported> {
    let model = tflite::parse(bytes)?;
    lower::lower(&model, bytes.len(), name)
}
