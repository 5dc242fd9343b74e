//! The packed int8 model (`model.sprig`) that `sprig-runtime` runs, its test vectors
//! (`vectors.bin`), and the deployed model's evaluation on the host.
//!
//! [`pack`] lowers a quantized graph (batch norms folded, 8-bit activations, weights
//! of 8 bits or fewer, every tensor on a grid) to the runtime's NHWC int8 graph (see
//! `lower.rs` for the per-layer rules), plans the arena, writes the blob and loads it
//! back with [`sprig_runtime::Model::from_bytes`]: an exporter bug is an error here,
//! never a bad file. [`deployed_eval`] runs the blob over a dataset with the same
//! runtime code the chip runs and compares it with the fake-quantized float model.
//!
//! ```no_run
//! # fn main() -> sprig_compressor::Result<()> {
//! # let (graph, test): (sprig_compressor::nn::Graph, sprig_compressor::data::Dataset) = todo!();
//! use sprig_compressor::export::packed;
//! let packed = packed::write_packed(&graph, "runs/lenet5/model.sprig".as_ref())?;
//! let report = packed::deployed_eval(&graph, &packed.blob, &test)?;
//! println!("deployed {:.2} %, agreement {:.2} %", 100.0 * report.deployed_accuracy,
//!          100.0 * report.agreement);
//! # Ok(()) }
//! ```

mod deploy;
mod lower;
mod weights_table;

use std::path::Path;

use sprig_runtime::{Encoding, Model, Quant};

pub use deploy::{
    deployed_eval, quantize_image, test_vectors, write_vectors, DeployReport, DEFAULT_VECTOR_COUNT,
};
pub use lower::PACKED_BITS;
pub use weights_table::weights_table;

/// The runtime this exporter writes for (the same version the compressor evaluates with).
pub use sprig_runtime;

use super::write_atomic;
use crate::nn::Graph;
use crate::{Error, Result};

/// File name of the packed model in a run folder.
pub const PACKED_FILE: &str = "model.sprig";
/// File name of the test vectors in a run folder.
pub const VECTORS_FILE: &str = "vectors.bin";

/// A packed model and what it is made of.
#[derive(Debug, Clone)]
pub struct Packed {
    /// The `.sprig` blob, validated by the runtime.
    pub blob: Vec<u8>,
    /// Arena bytes the runtime needs.
    pub arena_bytes: usize,
    /// Activations passed between binary ops as packed bits (format 2.4).
    pub packed_bit_tensors: usize,
    /// Weight bytes as stored (each layer dense or sparse, whichever is smaller).
    pub weight_bytes: usize,
    /// int32 bias bytes.
    pub bias_bytes: usize,
    /// Requantization bytes (per-channel multipliers and shifts).
    pub requant_bytes: usize,
    /// Number of runtime ops.
    pub ops: usize,
    /// Names of the graph layers behind the weighted runtime ops, in op order.
    pub weighted_layers: Vec<String>,
    /// NHWC input shape.
    pub input_shape: Vec<usize>,
    /// Output shape.
    pub output_shape: Vec<usize>,
    /// Input quantization (`q = round(x / scale) + zero_point`).
    pub input: Quant,
    /// Output quantization.
    pub output: Quant,
}

impl Packed {
    /// Length of the blob.
    pub fn blob_bytes(&self) -> usize {
        self.blob.len()
    }

    /// Blob bytes over stored weight + int32 bias bytes (1.0 would be no overhead at all).
    pub fn overhead_ratio(&self) -> f64 {
        self.blob.len() as f64 / (self.weight_bytes + self.bias_bytes).max(1) as f64
    }

    /// Each weighted layer's encoding, bytes and density ([`weights_table`]).
    pub fn weights_table(&self) -> Result<String> {
        weights_table(&self.model()?, &self.weighted_layers)
    }

    /// The blob loaded by the runtime.
    pub fn model(&self) -> Result<Model<'_>> {
        load(&self.blob, Path::new(PACKED_FILE))
    }
}

/// Loads a blob, as an export error naming `path` if the runtime refuses it.
pub(crate) fn load<'a>(blob: &'a [u8], path: &Path) -> Result<Model<'a>> {
    Model::from_bytes(blob).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        message: format!("sprig-runtime refuses the packed model: {e}"),
    })
}

/// The encodings besides dense that [`pack`] may store a layer in: each conv filter
/// and fully connected matrix takes the smallest of dense, the sparse encodings (so
/// pruned layers shrink) and, for a layer the quantizer gave 4, 2 or 1-bit weights,
/// the packed widths that hold them; a depthwise filter only the packed ones.
pub const ENCODINGS: [Encoding; 5] = [
    Encoding::SparseRel8,
    Encoding::SparseRel4,
    Encoding::Packed4,
    Encoding::Packed2,
    Encoding::Packed1,
];

/// Lowers `graph` to the packed int8 format (see the module docs).
pub fn pack(graph: &Graph) -> Result<Packed> {
    pack_with(graph, &ENCODINGS)
}

/// [`pack`] with only the `allowed` encodings besides dense (`&[]`: every layer dense
/// int8, as before format 2.0).
pub fn pack_with(graph: &Graph, allowed: &[Encoding]) -> Result<Packed> {
    pack_for(graph, allowed, Path::new(PACKED_FILE))
}

/// [`pack`], then writes the blob to `path` atomically.
pub fn write_packed(graph: &Graph, path: &Path) -> Result<Packed> {
    let packed = pack_for(graph, &ENCODINGS, path)?;
    write_atomic(path, &packed.blob)?;
    Ok(packed)
}

fn pack_for(graph: &Graph, allowed: &[Encoding], path: &Path) -> Result<Packed> {
    let lowered = lower::lower(graph, allowed, path)?;
    let blob = lowered
        .data
        .finish(&lowered.graph)
        .map_err(|e| Error::Export {
            path: path.to_path_buf(),
            message: format!("encoding the packed model failed: {e}"),
        })?;
    let model = Model::from_bytes(&blob).map_err(|e| Error::Export {
        path: path.to_path_buf(),
        message: format!(
            "the exporter wrote a blob that sprig-runtime refuses ({e}); this is a bug in \
             the exporter"
        ),
    })?;
    let dims = |s: &[u32]| s.iter().map(|&d| d as usize).collect::<Vec<_>>();
    let facts = Packed {
        arena_bytes: model.arena_size(),
        packed_bit_tensors: model.tensors().iter().filter(|t| t.is_bits()).count(),
        weight_bytes: lowered.weight_bytes,
        bias_bytes: lowered.bias_bytes,
        requant_bytes: lowered.requant_bytes,
        ops: model.ops().len(),
        weighted_layers: lowered.weighted_layers,
        input_shape: dims(model.input_shape()),
        output_shape: dims(model.output_shape()),
        input: model.input_quant(),
        output: model.output_quant(),
        blob: Vec::new(),
    };
    Ok(Packed { blob, ..facts })
}
