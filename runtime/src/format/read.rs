//! Decoding a blob into its header, graph and borrowed data section.
//!
//! Only structure is checked here (header, postcard well-formedness, capacities, tags,
//! padding, placement of the data section); the meaning of the graph is checked by
//! `model::validate`.

use serde::Deserialize;

use super::{
    align_up, ArgMax, Conv2d, DepthwiseConv2d, FullyConnected, GlobalAvgPool, GraphHeader, Header,
    Op, Pool2d, Reshape, Softmax, Tensor, TensorKind, HEADER_LEN,
};
use crate::error::{sat_u32, Error};

/// A structurally sound blob.
#[derive(Debug)]
pub(crate) struct Parsed<'a, const MAX_OPS: usize, const MAX_TENSORS: usize> {
    pub header: Header,
    pub graph: GraphHeader,
    pub tensors: heapless::Vec<Tensor, MAX_TENSORS>,
    pub ops: heapless::Vec<Op, MAX_OPS>,
    pub data: &'a [u8],
}

/// Reads postcard items one after another, remembering where it is in the blob.
struct Cursor<'a> {
    rest: &'a [u8],
    /// Blob offset of `rest[0]`.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take<T: Deserialize<'a>>(&mut self) -> Result<T, Error> {
        let offset = sat_u32(self.pos);
        let (value, rest) =
            postcard::take_from_bytes::<T>(self.rest).map_err(|_| Error::Decode { offset })?;
        self.pos += self.rest.len() - rest.len();
        self.rest = rest;
        Ok(value)
    }
}

/// Check the header, decode the graph and locate the data section of `blob`.
pub(crate) fn parse<const MAX_OPS: usize, const MAX_TENSORS: usize>(
    blob: &[u8],
) -> Result<Parsed<'_, MAX_OPS, MAX_TENSORS>, Error> {
    let header = Header::check(blob)?;
    let payload = blob.get(HEADER_LEN..).ok_or(Error::TooShort {
        needed: HEADER_LEN as u32,
        got: sat_u32(blob.len()),
    })?;
    let mut cur = Cursor {
        rest: payload,
        pos: HEADER_LEN,
    };
    let graph: GraphHeader = cur.take()?;

    let n_tensors: u32 = cur.take()?;
    if usize::try_from(n_tensors).map_or(true, |n| n > MAX_TENSORS) {
        return Err(Error::TooManyTensors {
            count: n_tensors,
            capacity: sat_u32(MAX_TENSORS),
        });
    }
    let mut tensors = heapless::Vec::new();
    for _ in 0..n_tensors {
        let tensor = read_tensor(&mut cur)?;
        tensors.push(tensor).map_err(|_| Error::TooManyTensors {
            count: n_tensors,
            capacity: sat_u32(MAX_TENSORS),
        })?;
    }

    let n_ops: u32 = cur.take()?;
    if usize::try_from(n_ops).map_or(true, |n| n > MAX_OPS) {
        return Err(Error::TooManyOps {
            count: n_ops,
            capacity: sat_u32(MAX_OPS),
        });
    }
    let mut ops = heapless::Vec::new();
    for _ in 0..n_ops {
        let op = read_op(&mut cur)?;
        ops.push(op).map_err(|_| Error::TooManyOps {
            count: n_ops,
            capacity: sat_u32(MAX_OPS),
        })?;
    }

    let data = data_section(blob, cur.pos, &graph)?;
    Ok(Parsed {
        header,
        graph,
        tensors,
        ops,
        data,
    })
}

/// The data section must start at the first 16-byte boundary after the graph, the gap
/// must be zeros, and the section must end exactly at the end of the blob.
fn data_section<'a>(
    blob: &'a [u8],
    graph_end: usize,
    graph: &GraphHeader,
) -> Result<&'a [u8], Error> {
    let expected = align_up(graph_end).ok_or(Error::BadDataSection)?;
    let offset = usize::try_from(graph.data_offset).map_err(|_| Error::BadDataSection)?;
    let len = usize::try_from(graph.data_len).map_err(|_| Error::BadDataSection)?;
    let end = offset.checked_add(len).ok_or(Error::BadDataSection)?;
    // Junk between the graph and the next boundary is "trailing bytes", whatever the
    // data section fields say.
    let gap_end = expected.min(blob.len());
    if let Some(gap) = blob.get(graph_end..gap_end) {
        if let Some(i) = gap.iter().position(|&b| b != 0) {
            return Err(Error::TrailingBytes {
                offset: sat_u32(graph_end + i),
            });
        }
    }
    if offset != expected || end > blob.len() {
        return Err(Error::BadDataSection);
    }
    if end < blob.len() {
        return Err(Error::TrailingBytes {
            offset: sat_u32(end),
        });
    }
    blob.get(offset..end).ok_or(Error::BadDataSection)
}

fn read_tensor(cur: &mut Cursor<'_>) -> Result<Tensor, Error> {
    // Same bytes as postcard's encoding of `Tensor`, read field by field so that a bad
    // rank or kind gets its own error.
    let rank: u32 = cur.take()?;
    if rank > 4 {
        return Err(Error::RankTooHigh { rank });
    }
    let mut shape = heapless::Vec::new();
    for _ in 0..rank {
        let dim: u32 = cur.take()?;
        shape.push(dim).map_err(|_| Error::RankTooHigh { rank })?;
    }
    let scale: f32 = cur.take()?;
    let zero_point: i32 = cur.take()?;
    let arena_offset: u32 = cur.take()?;
    let tag: u32 = cur.take()?;
    let kind = match tag {
        0 => TensorKind::Activation,
        1 => TensorKind::Input,
        2 => TensorKind::Output,
        tag => return Err(Error::UnknownTensorKind { tag }),
    };
    Ok(Tensor {
        shape,
        scale,
        zero_point,
        arena_offset,
        kind,
    })
}

fn read_op(cur: &mut Cursor<'_>) -> Result<Op, Error> {
    // postcard encodes an enum as a varint variant index followed by the variant's
    // fields; dispatching on the index ourselves gives unknown ops their own error.
    let tag: u32 = cur.take()?;
    Ok(match tag {
        0 => Op::Conv2d(cur.take::<Conv2d>()?),
        1 => Op::DepthwiseConv2d(cur.take::<DepthwiseConv2d>()?),
        2 => Op::FullyConnected(cur.take::<FullyConnected>()?),
        3 => Op::MaxPool2d(cur.take::<Pool2d>()?),
        4 => Op::AvgPool2d(cur.take::<Pool2d>()?),
        5 => Op::GlobalAvgPool(cur.take::<GlobalAvgPool>()?),
        6 => Op::Add(cur.take::<super::Add>()?),
        7 => Op::Reshape(cur.take::<Reshape>()?),
        8 => Op::Softmax(cur.take::<Softmax>()?),
        9 => Op::ArgMax(cur.take::<ArgMax>()?),
        tag => return Err(Error::UnknownOp { tag }),
    })
}
