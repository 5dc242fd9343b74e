//! The ONNX importer's error: the file, where in it (a node with its index, name and op,
//! or a graph input, output or initializer), and what is wrong or what is supported.

use std::fmt;

/// Where in the model an [`OnnxError`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// The file as a whole (not protobuf, wrong opset, no graph).
    File,
    /// A graph input, output or initializer, by name.
    Value(String),
    /// Node `index` of the graph (0-based, file order).
    Node {
        index: usize,
        name: String,
        op: String,
    },
}

/// Why an ONNX model could not be imported. Displays as
/// `<file>: node 3 `/features/features.0/Conv` (Conv): <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnnxError {
    /// The file (or label) the bytes came from.
    pub file: String,
    pub place: Place,
    pub message: String,
}

impl fmt::Display for OnnxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        match &self.place {
            Place::File => {}
            Place::Value(name) => write!(f, "`{name}`: ")?,
            Place::Node { index, name, op } if name.is_empty() => {
                write!(f, "node {index} (unnamed, {op}): ")?
            }
            Place::Node { index, name, op } => write!(f, "node {index} `{name}` ({op}): ")?,
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for OnnxError {}
