//! Writing blobs (feature `std`): the compressor's exporter fills a [`GraphDef`],
//! pushes weights into a [`BlobBuilder`], plans the arena, and calls
//! [`BlobBuilder::finish`].
//!
//! ```
//! # use sprig_runtime::format::write::{BlobBuilder, GraphDef};
//! # use sprig_runtime::{Model, Op, Reshape, Tensor, TensorKind};
//! let t = |shape: &[u32], kind| Tensor {
//!     shape: heapless::Vec::from_slice(shape).unwrap(),
//!     scale: 0.5,
//!     zero_point: 0,
//!     arena_offset: 0,
//!     kind,
//! };
//! let mut graph = GraphDef {
//!     tensors: vec![t(&[1, 2, 2, 1], TensorKind::Input), t(&[1, 4], TensorKind::Output)],
//!     ops: vec![Op::Reshape(Reshape { input: 0, output: 1 })],
//!     input: 0,
//!     output: 1,
//!     arena_size: 0,
//! };
//! graph.plan_arena().unwrap();
//! let blob = BlobBuilder::new().finish(&graph).unwrap();
//! let model = Model::from_bytes(&blob).unwrap();
//! assert_eq!(model.arena_size(), 4);
//! ```

use std::vec::Vec;

use super::{
    align_up, DataRef, Encoding, Graph, GraphHeader, Header, Op, Tensor, Weights, FORMAT_MAJOR,
    FORMAT_MINOR, HEADER_LEN, REQUIRED_FLAGS_MASK,
};
use crate::error::Error;

/// Alignment of every tensor offset the planner assigns (bytes).
pub const ARENA_ALIGN: u32 = 4;
/// Alignment of every item pushed into the data section (bytes, from its start).
pub const DATA_ITEM_ALIGN: usize = 4;

/// The graph to write: tensors, ops in execution order, input/output tensor indices and
/// the arena size (set by [`GraphDef::plan_arena`] or by hand).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GraphDef {
    /// Tensor table.
    pub tensors: Vec<Tensor>,
    /// Ops in execution order.
    pub ops: Vec<Op>,
    /// Graph input tensor.
    pub input: u32,
    /// Graph output tensor.
    pub output: u32,
    /// Arena bytes.
    pub arena_size: u32,
}

/// The bytes of `rows` rows of int8 weights in `encoding`.
fn encode_weights(values: &[i8], rows: usize, encoding: Encoding) -> Result<Vec<u8>, Error> {
    match encoding {
        Encoding::Dense => Ok(values.iter().map(|&v| v as u8).collect()),
        Encoding::SparseRel8 | Encoding::SparseRel4 => {
            super::sparse::encode(values, rows, encoding).ok_or(Error::Encode)
        }
        Encoding::Packed4 | Encoding::Packed2 | Encoding::Packed1 => {
            super::packed::encode(values, rows, encoding).ok_or(Error::Encode)
        }
    }
}

/// Collects the data section and writes the blob.
#[derive(Debug, Clone, Default)]
pub struct BlobBuilder {
    data: Vec<u8>,
    flags: u32,
}

impl BlobBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set optional header flags (bits 16..32; required bits are refused by readers
    /// that do not know them, and this runtime knows none).
    pub fn with_optional_flags(mut self, flags: u32) -> Self {
        self.flags = flags & !REQUIRED_FLAGS_MASK;
        self
    }

    /// The data section so far.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Append raw bytes (at a 4-byte aligned offset) and return their reference.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> Result<DataRef, Error> {
        let start = self.data.len().next_multiple_of(DATA_ITEM_ALIGN);
        self.data.resize(start, 0);
        self.data.extend_from_slice(bytes);
        Ok(DataRef {
            offset: u32::try_from(start).map_err(|_| Error::Encode)?,
            len: u32::try_from(bytes.len()).map_err(|_| Error::Encode)?,
        })
    }

    /// Append int8 weights.
    pub fn push_i8(&mut self, values: &[i8]) -> Result<DataRef, Error> {
        let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
        self.push_bytes(&bytes)
    }

    /// Append a layer's int8 weights, `rows` rows (output channels; a depthwise
    /// filter's taps) of equal length, in whichever of dense and the `candidates`
    /// ([`Encoding`]s, see [`super::sparse`] and [`super::packed`]) that can hold them
    /// takes the fewest bytes; the earlier on a tie, dense first (its kernels are the
    /// fastest).
    pub fn push_weights(
        &mut self,
        values: &[i8],
        rows: usize,
        candidates: &[Encoding],
    ) -> Result<Weights, Error> {
        let mut best = (
            Encoding::Dense,
            encode_weights(values, rows, Encoding::Dense)?,
        );
        for &encoding in candidates {
            if let Ok(bytes) = encode_weights(values, rows, encoding) {
                if bytes.len() < best.1.len() {
                    best = (encoding, bytes);
                }
            }
        }
        Ok(Weights {
            data: self.push_bytes(&best.1)?,
            encoding: best.0,
        })
    }

    /// Append a layer's int8 weights, `rows` rows of equal length, in `encoding`
    /// ([`Error::Encode`] if they cannot be: rows of unequal length, a sparse row of
    /// more than 65,535 entries, or a value a packed width cannot hold).
    pub fn push_weights_as(
        &mut self,
        values: &[i8],
        rows: usize,
        encoding: Encoding,
    ) -> Result<Weights, Error> {
        let bytes = encode_weights(values, rows, encoding)?;
        Ok(Weights {
            data: self.push_bytes(&bytes)?,
            encoding,
        })
    }

    /// Append little-endian `i32`s (biases).
    pub fn push_i32(&mut self, values: &[i32]) -> Result<DataRef, Error> {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.push_bytes(&bytes)
    }

    /// Append requantization parameters: one `(multiplier, shift)` per output channel,
    /// or a single pair shared by all channels.
    pub fn push_requant(&mut self, pairs: &[(i32, i32)]) -> Result<DataRef, Error> {
        let bytes = encode_requant(pairs)?;
        self.push_bytes(&bytes)
    }

    /// Encode the blob: header, graph (with `data_offset`/`data_len` filled in), zero
    /// padding to a 16-byte boundary, data section. Does not validate the graph;
    /// [`crate::Model::from_bytes`] on the result does.
    pub fn finish(&self, graph: &GraphDef) -> Result<Vec<u8>, Error> {
        let mut header = GraphHeader {
            input: graph.input,
            output: graph.output,
            arena_size: graph.arena_size,
            data_offset: 0,
            data_len: u32::try_from(self.data.len()).map_err(|_| Error::Encode)?,
        };
        // `data_offset` is a varint inside the graph, so its own size can move the
        // data section: iterate to the fixed point (two or three rounds).
        let mut encoded = None;
        for _ in 0..8 {
            let bytes = postcard::to_allocvec(&Graph {
                header,
                tensors: &graph.tensors,
                ops: &graph.ops,
            })
            .map_err(|_| Error::Encode)?;
            let offset = align_up(HEADER_LEN + bytes.len()).ok_or(Error::Encode)?;
            let offset = u32::try_from(offset).map_err(|_| Error::Encode)?;
            if offset == header.data_offset {
                encoded = Some(bytes);
                break;
            }
            header.data_offset = offset;
        }
        let graph_bytes = encoded.ok_or(Error::Encode)?;
        let mut blob = std::vec![0u8; HEADER_LEN];
        blob.extend_from_slice(&graph_bytes);
        blob.resize(header.data_offset as usize, 0);
        blob.extend_from_slice(&self.data);
        seal(&mut blob, FORMAT_MAJOR, FORMAT_MINOR, self.flags)?;
        Ok(blob)
    }
}

/// Write the header of `blob` (whose first [`HEADER_LEN`] bytes are reserved for it)
/// with the given version and flags, the payload length and the CRC. Tests use it to
/// re-seal deliberately corrupted blobs.
pub fn seal(blob: &mut [u8], major: u16, minor: u16, flags: u32) -> Result<(), Error> {
    let payload_len = blob
        .len()
        .checked_sub(HEADER_LEN)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or(Error::Encode)?;
    let mut header = Header {
        major,
        minor,
        flags,
        payload_len,
        crc32: 0,
    };
    let (head, payload) = blob
        .split_first_chunk_mut::<HEADER_LEN>()
        .ok_or(Error::Encode)?;
    *head = header.to_bytes();
    header.crc32 = Header::crc_of(head, payload);
    *head = header.to_bytes();
    Ok(())
}

/// The requantization bytes for `pairs`: all multipliers (LE `i32`), then all shifts
/// (`i8`). Errors if a shift does not fit an `i8`.
pub fn encode_requant(pairs: &[(i32, i32)]) -> Result<Vec<u8>, Error> {
    let mut bytes = Vec::with_capacity(pairs.len() * 5);
    for &(m, _) in pairs {
        bytes.extend_from_slice(&m.to_le_bytes());
    }
    for &(_, s) in pairs {
        bytes.push(i8::try_from(s).map_err(|_| Error::Encode)? as u8);
    }
    Ok(bytes)
}
