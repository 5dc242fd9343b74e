//! Decoding a blob into its header, graph and borrowed data section.
//!
//! Only structure is checked here (header, postcard well-formedness, capacities, tags,
//! padding, placement of the data section); the meaning of the graph is checked by
//! `model::validate`.

use serde::Deserialize;

use super::{
    align_up, Add, ArgMax, BinaryConv2d, BinaryFullyConnected, Conv2d, Conv2dMaxPool, DataRef,
    DepthwiseConv2d, Encoding, FullyConnected, GlobalAvgPool, GraphHeader, Header, Op, Padding,
    Pool2d, PoolWindow, Reshape, Softmax, Tensor, TensorKind, Weights, HEADER_LEN,
};
use crate::error::{sat_u32, Error};

/// What a structurally sound blob holds besides its tensor and op tables: those are
/// decoded into the caller's vectors, in place (they are most of a `Model`, and a
/// moved copy would double the loader's stack).
#[derive(Debug)]
pub(crate) struct Decoded<'a> {
    pub header: Header,
    pub graph: GraphHeader,
    pub data: &'a [u8],
}

/// Reads postcard items one after another, remembering where it is in the blob.
///
/// Only three item types are ever decoded (`u32`, `f32` and `bool`), each with
/// `postcard::take_from_bytes`: every graph field is one of them (`i32` is postcard's
/// zigzag varint of a `u32`, an `Option` a `bool` tag then the value), and three
/// instantiations of postcard's deserializer cost far less flash than one per struct.
struct Cursor<'a> {
    rest: &'a [u8],
    /// Blob offset of `rest[0]`.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take<T: Deserialize<'a>>(&mut self) -> Option<T> {
        let (value, rest) = postcard::take_from_bytes::<T>(self.rest).ok()?;
        self.pos += self.rest.len() - rest.len();
        self.rest = rest;
        Some(value)
    }

    /// `N` raw bytes: postcard's encoding of `N` consecutive `u8` fields.
    fn bytes<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.pos += N;
        self.rest = rest;
        Some(*head)
    }

    /// [`Error::Decode`] for an item starting where the cursor stands (a failed
    /// `take` does not move it).
    fn fail(&self) -> Error {
        Error::Decode {
            offset: sat_u32(self.pos),
        }
    }

    /// One `u32` item. (`Option`, not `Result`: it comes back in registers, and the
    /// callers build the error.)
    #[inline(never)]
    fn u32(&mut self) -> Option<u32> {
        self.take::<u32>()
    }

    /// The fields of one struct into `words`: `u32`s, and `i32`s (the fields whose
    /// bit is set in `signed`) as postcard's zigzag `u32`, stored as the `i32`'s bits;
    /// where `option` is set, field `option` is an `Option<DataRef>` (a `bool` tag,
    /// then two `u32`s if set), stored as 0/1 and the two words (0 if absent). `None`
    /// if any field fails to decode; the caller reports [`Error::Decode`] at the
    /// struct's start, as if it were decoded in one piece.
    #[inline(never)]
    fn fields(&mut self, words: &mut [u32], option: Option<usize>, signed: u32) -> Option<()> {
        let mut i = 0;
        while let Some(slot) = words.get_mut(i) {
            if option == Some(i) {
                let present = self.take::<bool>()?;
                *slot = u32::from(present);
                i += if present { 1 } else { 3 };
                continue;
            }
            let n = self.take::<u32>()?;
            *slot = if signed >> i & 1 != 0 {
                zigzag(n) as u32
            } else {
                n
            };
            i += 1;
        }
        Some(())
    }
}

/// postcard's zigzag: the `i32` a `u32` varint encodes.
fn zigzag(n: u32) -> i32 {
    ((n >> 1) as i32) ^ -((n & 1) as i32)
}

/// Check the header, decode the graph (its tensors into `tensors`, its ops into
/// `ops` and where each op starts in `blob` into `starts`, all emptied first) and
/// locate the data section of `blob`.
pub(crate) fn parse<'a, const MAX_OPS: usize, const MAX_TENSORS: usize>(
    blob: &'a [u8],
    tensors: &mut heapless::Vec<Tensor, MAX_TENSORS>,
    ops: &mut heapless::Vec<Op, MAX_OPS>,
    starts: &mut heapless::Vec<u32, MAX_OPS>,
) -> Result<Decoded<'a>, Error> {
    tensors.clear();
    ops.clear();
    starts.clear();
    let header = Header::check(blob)?;
    let payload = blob.get(HEADER_LEN..).ok_or(Error::TooShort {
        needed: HEADER_LEN as u32,
        got: sat_u32(blob.len()),
    })?;
    let mut cur = Cursor {
        rest: payload,
        pos: HEADER_LEN,
    };
    let mut w = [0u32; 5];
    cur.fields(&mut w, None, 0).ok_or(Error::Decode {
        offset: HEADER_LEN as u32,
    })?;
    let [input, output, arena_size, data_offset, data_len] = w;
    let graph = GraphHeader {
        input,
        output,
        arena_size,
        data_offset,
        data_len,
    };

    let n_tensors = cur.u32().ok_or_else(|| cur.fail())?;
    if usize::try_from(n_tensors).map_or(true, |n| n > MAX_TENSORS) {
        return Err(Error::TooManyTensors {
            count: n_tensors,
            capacity: sat_u32(MAX_TENSORS),
        });
    }
    for _ in 0..n_tensors {
        let tensor = read_tensor(&mut cur)?;
        tensors.push(tensor).map_err(|_| Error::TooManyTensors {
            count: n_tensors,
            capacity: sat_u32(MAX_TENSORS),
        })?;
    }

    let n_ops = cur.u32().ok_or_else(|| cur.fail())?;
    if usize::try_from(n_ops).map_or(true, |n| n > MAX_OPS) {
        return Err(Error::TooManyOps {
            count: n_ops,
            capacity: sat_u32(MAX_OPS),
        });
    }
    let too_many = Error::TooManyOps {
        count: n_ops,
        capacity: sat_u32(MAX_OPS),
    };
    for _ in 0..n_ops {
        starts.push(sat_u32(cur.pos)).map_err(|_| too_many)?;
        let op = read_op(&mut cur)?;
        ops.push(op).map_err(|_| too_many)?;
    }

    let data = data_section(blob, cur.pos, &graph)?;
    Ok(Decoded {
        header,
        graph,
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
    let rank = cur.u32().ok_or_else(|| cur.fail())?;
    if rank > 4 {
        return Err(Error::RankTooHigh { rank });
    }
    let mut shape = heapless::Vec::new();
    for _ in 0..rank {
        let dim = cur.u32().ok_or_else(|| cur.fail())?;
        shape.push(dim).map_err(|_| Error::RankTooHigh { rank })?;
    }
    let scale: f32 = cur.take().ok_or_else(|| cur.fail())?;
    let zero_point = zigzag(cur.u32().ok_or_else(|| cur.fail())?);
    let arena_offset = cur.u32().ok_or_else(|| cur.fail())?;
    let tag = cur.u32().ok_or_else(|| cur.fail())?;
    let kind = match tag {
        0 => TensorKind::Activation,
        1 => TensorKind::Input,
        2 => TensorKind::Output,
        3 => TensorKind::PackedBits,
        4 => TensorKind::Streamed {
            rows: cur.take().ok_or_else(|| cur.fail())?,
        },
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

/// Fields of the op with wire tag `tag`: (count, position of the `Option<DataRef>`,
/// bit mask of the `i32` fields). Counts and positions are in words, an
/// `Option<DataRef>` taking three (tag and two `u32`s), `Weights` three (offset, length,
/// encoding tag). `ops_read_as_postcard_writes_them` below checks every row against
/// postcard's own encoding of every variant.
fn op_layout(tag: u32) -> Option<(usize, Option<usize>, u32)> {
    Some(match tag {
        0 | 12 => (20, Some(5), 3 << 18), // Conv2d (and Conv2dMaxPool's conv): act_min, act_max
        1 => (21, Some(5), 3 << 19),      // DepthwiseConv2d: act_min, act_max
        2 => (12, Some(5), 3 << 10),      // FullyConnected: act_min, act_max
        3 | 4 => (12, None, 3 << 10),     // MaxPool2d, AvgPool2d: act_min, act_max
        5 => (6, None, 0b1111 << 2),      // GlobalAvgPool: all but input, output
        6 => (11, None, 0xff << 3),       // Add: all but the three tensors
        7 | 9 => (2, None, 0),            // Reshape, ArgMax
        8 => (5, None, 0b111 << 2),       // Softmax: all but input, output
        10 => (15, None, 0),              // BinaryConv2d
        11 => (7, None, 0),               // BinaryFullyConnected
        _ => return None,
    })
}

/// The op whose encoding starts at byte `start` of `blob` (where [`parse`] found it).
pub(crate) fn op_at(blob: &[u8], start: u32) -> Result<Op, Error> {
    let pos = start as usize;
    let rest = blob.get(pos..).ok_or(Error::Decode { offset: start })?;
    read_op(&mut Cursor { rest, pos })
}

fn read_op(cur: &mut Cursor<'_>) -> Result<Op, Error> {
    // postcard encodes an enum as a varint variant index followed by the variant's
    // fields; dispatching on the index ourselves gives unknown ops their own error.
    // The fields are read as words (see `Cursor::fields`), then laid out in the
    // variant's struct: the bytes are exactly postcard's encoding of `Op`.
    let tag = cur.u32().ok_or_else(|| cur.fail())?;
    let (n, option, signed) = op_layout(tag).ok_or(Error::UnknownOp { tag })?;
    let mut w = [0u32; 21];
    let words = w.get_mut(..n).ok_or(Error::UnknownOp { tag })?;
    // A failure anywhere in the fields is reported at their start (the op's first
    // field), as when the struct was decoded in one piece.
    let at_start = cur.fail();
    cur.fields(words, option, signed).ok_or(at_start)?;
    let d = |i: usize| DataRef {
        offset: w.get(i).copied().unwrap_or(0),
        len: w.get(i + 1).copied().unwrap_or(0),
    };
    let u = |i: usize| w.get(i).copied().unwrap_or(0);
    let s = |i: usize| u(i) as i32;
    let pad = |i: usize| Padding {
        top: u(i),
        left: u(i + 1),
        bottom: u(i + 2),
        right: u(i + 3),
    };
    // Conv2d, DepthwiseConv2d and FullyConnected: weights at words 2..5, the bias
    // option at 5..8.
    let weights = || -> Result<Weights, Error> {
        let tag = u(4);
        Ok(Weights {
            data: d(2),
            encoding: Encoding::from_tag(tag).ok_or(Error::UnknownEncoding { tag })?,
        })
    };
    let bias = (u(5) != 0).then(|| d(6));
    let conv = || -> Result<Conv2d, Error> {
        Ok(Conv2d {
            input: u(0),
            output: u(1),
            filter: weights()?,
            bias,
            requant: d(8),
            kernel_h: u(10),
            kernel_w: u(11),
            stride_h: u(12),
            stride_w: u(13),
            padding: pad(14),
            act_min: s(18),
            act_max: s(19),
        })
    };
    Ok(match tag {
        0 => Op::Conv2d(conv()?),
        12 => {
            // The conv's fields, then the pool window's eight `u8`s.
            let [filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right] =
                cur.bytes::<8>().ok_or_else(|| cur.fail())?;
            Op::Conv2dMaxPool(Conv2dMaxPool {
                conv: conv()?,
                pool: PoolWindow {
                    filter_h,
                    filter_w,
                    stride_h,
                    stride_w,
                    pad_top,
                    pad_left,
                    pad_bottom,
                    pad_right,
                },
            })
        }
        1 => Op::DepthwiseConv2d(DepthwiseConv2d {
            input: u(0),
            output: u(1),
            filter: weights()?,
            bias,
            requant: d(8),
            kernel_h: u(10),
            kernel_w: u(11),
            stride_h: u(12),
            stride_w: u(13),
            padding: pad(14),
            depth_multiplier: u(18),
            act_min: s(19),
            act_max: s(20),
        }),
        2 => Op::FullyConnected(FullyConnected {
            input: u(0),
            output: u(1),
            weights: weights()?,
            bias,
            requant: d(8),
            act_min: s(10),
            act_max: s(11),
        }),
        3 | 4 => {
            let p = Pool2d {
                input: u(0),
                output: u(1),
                filter_h: u(2),
                filter_w: u(3),
                stride_h: u(4),
                stride_w: u(5),
                padding: pad(6),
                act_min: s(10),
                act_max: s(11),
            };
            if tag == 3 {
                Op::MaxPool2d(p)
            } else {
                Op::AvgPool2d(p)
            }
        }
        5 => Op::GlobalAvgPool(GlobalAvgPool {
            input: u(0),
            output: u(1),
            multiplier: s(2),
            shift: s(3),
            act_min: s(4),
            act_max: s(5),
        }),
        6 => Op::Add(Add {
            input1: u(0),
            input2: u(1),
            output: u(2),
            input1_multiplier: s(3),
            input1_shift: s(4),
            input2_multiplier: s(5),
            input2_shift: s(6),
            output_multiplier: s(7),
            output_shift: s(8),
            act_min: s(9),
            act_max: s(10),
        }),
        7 => Op::Reshape(Reshape {
            input: u(0),
            output: u(1),
        }),
        8 => Op::Softmax(Softmax {
            input: u(0),
            output: u(1),
            input_multiplier: s(2),
            input_left_shift: s(3),
            diff_min: s(4),
        }),
        9 => Op::ArgMax(ArgMax {
            input: u(0),
            output: u(1),
        }),
        10 => Op::BinaryConv2d(BinaryConv2d {
            input: u(0),
            output: u(1),
            filter: weights()?,
            thresholds: d(5),
            kernel_h: u(7),
            kernel_w: u(8),
            stride_h: u(9),
            stride_w: u(10),
            padding: pad(11),
        }),
        _ => Op::BinaryFullyConnected(BinaryFullyConnected {
            input: u(0),
            output: u(1),
            weights: weights()?,
            thresholds: d(5),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-wise reader decodes exactly postcard's encoding of every op variant.
    #[test]
    fn ops_read_as_postcard_writes_them() {
        let r = |offset, len| DataRef { offset, len };
        let dense = |offset, len| Weights::dense(r(offset, len));
        let sparse = |offset, len, encoding| Weights {
            data: r(offset, len),
            encoding,
        };
        let pad = Padding {
            top: 1,
            left: 2,
            bottom: 3,
            right: 300,
        };
        let conv = Conv2d {
            input: 1,
            output: 200,
            filter: sparse(16, 70000, Encoding::SparseRel4),
            bias: Some(r(4, 8)),
            requant: r(9, 10),
            kernel_h: 3,
            kernel_w: 5,
            stride_h: 1,
            stride_w: 2,
            padding: pad,
            act_min: -128,
            act_max: 127,
        };
        let depthwise = DepthwiseConv2d {
            input: 3,
            output: 4,
            filter: dense(1, 2),
            bias: None,
            requant: r(5, 6),
            kernel_h: 7,
            kernel_w: 8,
            stride_h: 9,
            stride_w: 10,
            padding: pad,
            depth_multiplier: 11,
            act_min: -5,
            act_max: 6,
        };
        let pool = Pool2d {
            input: 0,
            output: 1,
            filter_h: 2,
            filter_w: 3,
            stride_h: 4,
            stride_w: 5,
            padding: pad,
            act_min: -100,
            act_max: 100,
        };
        let ops = [
            Op::Conv2dMaxPool(Conv2dMaxPool {
                conv,
                pool: PoolWindow {
                    filter_h: 2,
                    filter_w: 3,
                    stride_h: 4,
                    stride_w: 255,
                    pad_top: 1,
                    pad_left: 0,
                    pad_bottom: 200,
                    pad_right: 7,
                },
            }),
            Op::Conv2d(conv),
            Op::Conv2d(Conv2d {
                bias: None,
                filter: dense(3, 4),
                ..conv
            }),
            Op::DepthwiseConv2d(depthwise),
            Op::DepthwiseConv2d(DepthwiseConv2d {
                bias: Some(r(u32::MAX, 0)),
                ..depthwise
            }),
            Op::FullyConnected(FullyConnected {
                input: 5,
                output: 6,
                weights: sparse(7, 8, Encoding::SparseRel8),
                bias: Some(r(9, 10)),
                requant: r(11, 12),
                act_min: -13,
                act_max: 14,
            }),
            Op::MaxPool2d(pool),
            Op::AvgPool2d(pool),
            Op::GlobalAvgPool(GlobalAvgPool {
                input: 1,
                output: 2,
                multiplier: i32::MAX,
                shift: -31,
                act_min: i32::MIN,
                act_max: 3,
            }),
            Op::Add(Add {
                input1: 1,
                input2: 2,
                output: 3,
                input1_multiplier: 1 << 30,
                input1_shift: -1,
                input2_multiplier: -4,
                input2_shift: 5,
                output_multiplier: 6,
                output_shift: -7,
                act_min: -8,
                act_max: 9,
            }),
            Op::Reshape(Reshape {
                input: 4,
                output: 5,
            }),
            Op::Softmax(Softmax {
                input: 6,
                output: 7,
                input_multiplier: 123_456_789,
                input_left_shift: 30,
                diff_min: -987_654,
            }),
            Op::ArgMax(ArgMax {
                input: 8,
                output: 9,
            }),
            Op::BinaryConv2d(BinaryConv2d {
                input: 10,
                output: 11,
                filter: sparse(12, 13, Encoding::Packed1),
                thresholds: r(14, 70_000),
                kernel_h: 3,
                kernel_w: 2,
                stride_h: 1,
                stride_w: 4,
                padding: pad,
            }),
            Op::BinaryFullyConnected(BinaryFullyConnected {
                input: 15,
                output: 16,
                weights: sparse(17, 300, Encoding::Packed1),
                thresholds: r(19, 20),
            }),
        ];
        for op in ops {
            let mut buf = [0u8; 128];
            let bytes = postcard::to_slice(&op, &mut buf).unwrap();
            let len = bytes.len();
            let mut cur = Cursor {
                rest: bytes,
                pos: 0,
            };
            assert_eq!(read_op(&mut cur).unwrap(), op);
            assert!(cur.rest.is_empty());
            assert_eq!(cur.pos, len);
        }
    }
}
