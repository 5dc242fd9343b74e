//! The importer's error: every malformed file or unmappable operator gets its own
//! variant, naming where in the file (byte offset, tensor, buffer or operator index) it is.

/// Why a `.tflite` file could not be imported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// The file ends before a structure it references (a truncated or corrupt file).
    #[error(
        "truncated or corrupt flatbuffer: {what} at byte {offset} lies outside the {len}-byte file"
    )]
    OutOfBounds {
        what: &'static str,
        offset: usize,
        len: usize,
    },
    /// Bytes 4..8 are not TFLite's file identifier `TFL3`.
    #[error("not a TensorFlow Lite model: file identifier is {found:?}, expected \"TFL3\"")]
    BadIdentifier { found: [u8; 4] },
    /// A required table or field is absent.
    #[error("malformed model: {what} is missing")]
    Missing { what: String },
    /// The model has no subgraph, or a subgraph without exactly one input and output.
    #[error("unsupported graph: {reason}")]
    Graph { reason: String },
    /// A tensor names a buffer that does not exist.
    #[error(
        "tensor {tensor} (`{name}`) refers to buffer {buffer}, but the model has {count} buffers"
    )]
    BufferIndexOutOfRange {
        tensor: usize,
        name: String,
        buffer: u32,
        count: usize,
    },
    /// An operator or the subgraph names a tensor that does not exist.
    #[error("{place} refers to tensor {index}, but the subgraph has {count} tensors")]
    TensorIndexOutOfRange {
        place: String,
        index: i64,
        count: usize,
    },
    /// An operator names an operator code that does not exist.
    #[error("operator {op} refers to operator code {code}, but the model has {count}")]
    OpcodeIndexOutOfRange { op: usize, code: u32, count: usize },
    /// An int8 (or int32 bias) tensor without scale and zero point.
    #[error("tensor {tensor} (`{name}`) is {dtype} but has no quantization parameters")]
    MissingQuantization {
        tensor: usize,
        name: String,
        dtype: &'static str,
    },
    /// A float (or otherwise non-int8) activation: sprig imports fully int8 models only.
    #[error(
        "tensor {tensor} (`{name}`) is {dtype}: only fully int8-quantized models can be imported \
         (quantize it with the TFLite converter's full-integer post-training quantization)"
    )]
    NotInt8 {
        tensor: usize,
        name: String,
        dtype: &'static str,
    },
    /// An operator, option or quantization the sprig format cannot express.
    #[error("operator {index} ({op}): {reason}")]
    Op {
        index: usize,
        op: String,
        reason: String,
    },
    /// The lowered graph was refused by the runtime's planner, writer or loader (a bug
    /// in the importer, or a model beyond the runtime's limits).
    #[error("sprig-runtime refuses the imported model: {0}")]
    Runtime(String),
}
