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
use crate::model::lifetimes::{self, Live, NONE};
use crate::model::ALL_OPS;

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

impl GraphDef {
    /// Assign every tensor's `arena_offset` and set `arena_size`, greedily by size as
    /// TensorFlow Lite Micro's `GreedyMemoryPlanner` does: the largest buffer first,
    /// each at the lowest offset (aligned to [`ARENA_ALIGN`]) that no buffer live at
    /// the same time occupies. Reshape outputs get their input's offset. A MaxPool2d or
    /// AvgPool2d without top/left padding that is the last reader of its input writes
    /// its output in place: the two are placed together, at one offset (FORMAT.md §4).
    /// Tensors no op touches are put at offset 0. Returns the arena size.
    pub fn plan_arena(&mut self) -> Result<u32, Error> {
        let n = self.tensors.len();
        let mut live = std::vec![Live::UNSET; n];
        lifetimes::compute(&self.ops, &self.tensors, self.input, self.output, &mut live)?;
        struct Buf {
            size: u64,
            live: Live,
            offset: u64,
        }
        let mut bufs = Vec::with_capacity(n);
        for (t, l) in self.tensors.iter().zip(&live) {
            bufs.push(Buf {
                size: u64::from(t.bytes()?),
                live: *l,
                offset: 0,
            });
        }
        // In-place pools and Adds (FORMAT.md §4): the output joins its input root's
        // group when the op is that root's last reader; a group is placed at one offset.
        let mut leader: Vec<usize> = (0..n).collect();
        for (i, op) in self.ops.iter().enumerate() {
            let allowed = |&(x, y): &(u32, u32)| {
                let rx = live.get(x as usize).map_or(NONE, |l| l.root);
                let size = |t: u32| bufs.get(t as usize).map(|b| b.size);
                size(rx).is_some()
                    && size(rx) >= size(y)
                    && lifetimes::in_place_allowed::<ALL_OPS>(
                        &self.ops,
                        &self.tensors,
                        &live,
                        i,
                        (x, y),
                    )
            };
            let in_place = lifetimes::in_place::<ALL_OPS>(op);
            let Some((x, y)) = in_place.into_iter().flatten().find(allowed) else {
                continue;
            };
            let rx = live.get(x as usize).map_or(NONE, |l| l.root);
            let group = leader.get(rx as usize).copied().unwrap_or(rx as usize);
            if let Some(l) = leader.get_mut(y as usize) {
                *l = group;
            }
        }
        // Groups of live roots, largest member first (ties: earliest first).
        let is_root = |i: usize, b: &Buf| b.live.first != NONE && b.live.root as usize == i;
        let mut groups: Vec<(u64, u32, usize, Vec<usize>)> = Vec::new();
        for (i, b) in bufs.iter().enumerate().filter(|(i, b)| is_root(*i, b)) {
            let g = leader.get(i).copied().unwrap_or(i);
            match groups.iter_mut().find(|e| e.2 == g) {
                Some(e) => {
                    e.0 = e.0.max(b.size);
                    e.1 = e.1.min(b.live.first);
                    e.3.push(i);
                }
                None => groups.push((b.size, b.live.first, g, std::vec![i])),
            }
        }
        groups.sort_by_key(|e| (std::cmp::Reverse(e.0), e.1, e.2));
        let mut placed: Vec<(u64, u64, Live)> = Vec::new(); // (start, end, lifetime)
        let mut arena: u64 = 0;
        for (_, _, _, members) in &groups {
            let member = |m: &usize| bufs.get(*m).map(|b| (b.size, b.live));
            let members: Vec<(usize, u64, Live)> = members
                .iter()
                .filter_map(|m| member(m).map(|(s, l)| (*m, s, l)))
                .collect();
            // Lowest aligned offset at which no member meets a placed buffer that is
            // live at the same time: jump past every conflict until none is left.
            let mut offset = 0u64;
            loop {
                let mut moved = false;
                for &(_, size, l) in &members {
                    for &(s, e, pl) in &placed {
                        if l.overlaps(&pl) && offset < e && s < offset + size {
                            offset = offset.max(e.next_multiple_of(u64::from(ARENA_ALIGN)));
                            moved = true;
                        }
                    }
                }
                if !moved {
                    break;
                }
            }
            for &(m, size, l) in &members {
                if let Some(b) = bufs.get_mut(m) {
                    b.offset = offset;
                }
                placed.push((offset, offset + size, l));
                arena = arena.max(offset + size);
            }
        }
        // Aliases take their root's offset; untouched tensors sit at 0.
        let root_offsets: Vec<u64> = bufs
            .iter()
            .map(|b| bufs.get(b.live.root as usize).map_or(0, |r| r.offset))
            .collect();
        for ((t, b), root_offset) in self.tensors.iter_mut().zip(&bufs).zip(root_offsets) {
            let offset = if b.live.first != NONE {
                root_offset
            } else {
                arena = arena.max(b.size);
                0
            };
            t.arena_offset = u32::try_from(offset).map_err(|_| Error::Encode)?;
        }
        self.arena_size = u32::try_from(arena).map_err(|_| Error::Encode)?;
        Ok(self.arena_size)
    }
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
