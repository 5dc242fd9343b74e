//! Malformed blobs: every one is an error with its own variant, never a panic.

mod common;

use common::{cnn, Built};
use sprig_runtime::format::write::seal;
use sprig_runtime::format::{FORMAT_MAJOR, FORMAT_MINOR, HEADER_LEN};
use sprig_runtime::{Error, GraphHeader, Model, Op, TensorKind};

fn load(blob: &[u8]) -> Result<(), Error> {
    Model::from_bytes(blob).map(|_| ())
}

/// Build the test CNN, let `mutate` change its description, encode (the writer does
/// not validate) and load.
fn crafted(mutate: impl FnOnce(&mut Built)) -> Error {
    let mut built = cnn();
    mutate(&mut built);
    let blob = built.blob();
    load(&blob).expect_err("crafted blob must be refused")
}

/// Patch bytes of a valid blob, re-seal the header (CRC recomputed) and load.
fn patched(mutate: impl FnOnce(&mut Vec<u8>)) -> Error {
    let mut blob = cnn().blob();
    mutate(&mut blob);
    seal(&mut blob, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
    load(&blob).expect_err("patched blob must be refused")
}

/// Byte offsets of graph items in the test CNN's blob.
struct Layout {
    /// The tensor-count varint.
    tensors: usize,
    /// Encoded length of tensor 0.
    tensor0_len: usize,
    /// The op-count varint.
    ops: usize,
    /// End of the graph.
    graph_end: usize,
    header: GraphHeader,
}

fn layout() -> Layout {
    let built = cnn();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let header = *model.graph();
    let gh = postcard::to_allocvec(&header).unwrap().len();
    let tensors = postcard::to_allocvec(model.tensors()).unwrap().len();
    let ops = postcard::to_allocvec(&model.ops().collect::<Vec<_>>())
        .unwrap()
        .len();
    Layout {
        tensors: HEADER_LEN + gh,
        tensor0_len: postcard::to_allocvec(&model.tensors()[0]).unwrap().len(),
        ops: HEADER_LEN + gh + tensors,
        graph_end: HEADER_LEN + gh + tensors + ops,
        header,
    }
}

#[test]
fn every_truncated_prefix_is_an_error() {
    let blob = cnn().blob();
    load(&blob).unwrap();
    for n in 0..blob.len() {
        let err = load(&blob[..n]).unwrap_err();
        if n < HEADER_LEN {
            assert!(matches!(err, Error::TooShort { .. }), "{n}: {err:?}");
        } else {
            assert!(matches!(err, Error::LengthMismatch { .. }), "{n}: {err:?}");
        }
    }
}

#[test]
fn every_single_bit_flip_is_an_error() {
    let blob = cnn().blob();
    let mut flipped = blob.clone();
    for byte in 0..blob.len() {
        for bit in 0..8 {
            flipped[byte] ^= 1 << bit;
            assert!(
                load(&flipped).is_err(),
                "flip of byte {byte} bit {bit} accepted"
            );
            flipped[byte] ^= 1 << bit;
        }
    }
}

#[test]
fn header_errors() {
    let blob = cnn().blob();
    let mut b = blob.clone();
    b[0] = b'X';
    assert_eq!(load(&b), Err(Error::BadMagic));
    for major in [0, FORMAT_MAJOR + 1] {
        let mut b = blob.clone();
        seal(&mut b, major, 0, 0).unwrap();
        assert_eq!(load(&b), Err(Error::UnsupportedVersion { major, minor: 0 }));
    }
    let mut b = blob.clone();
    seal(&mut b, FORMAT_MAJOR, FORMAT_MINOR, 0x0000_0004).unwrap();
    assert_eq!(load(&b), Err(Error::UnsupportedFlags { flags: 4 }));
    let mut b = blob.clone();
    let last = b.len() - 1;
    b[last] ^= 0x40;
    assert!(matches!(load(&b), Err(Error::CrcMismatch { .. })));
    let mut b = blob.clone();
    b.push(0);
    assert!(
        matches!(load(&b), Err(Error::LengthMismatch { declared, actual }) if actual == declared + 1)
    );
}

#[test]
fn trailing_bytes_are_refused() {
    // After the data section, zero or not.
    for extra in [0u8, 0xAA] {
        assert_eq!(
            patched(|b| b.push(extra)),
            Error::TrailingBytes {
                offset: (cnn().blob().len()) as u32
            }
        );
    }
    // Junk in the alignment padding between the graph and the data section.
    let l = layout();
    assert!(
        l.graph_end < l.header.data_offset as usize,
        "test needs some padding"
    );
    assert_eq!(
        patched(|b| b[l.graph_end] = 1),
        Error::TrailingBytes {
            offset: l.graph_end as u32
        }
    );
}

#[test]
fn misplaced_data_section_is_refused() {
    let l = layout();
    let old = postcard::to_allocvec(&l.header).unwrap();
    let moved = GraphHeader {
        data_offset: l.header.data_offset - 16,
        ..l.header
    };
    let new = postcard::to_allocvec(&moved).unwrap();
    assert_eq!(old.len(), new.len());
    assert_eq!(
        patched(|b| b[HEADER_LEN..HEADER_LEN + new.len()].copy_from_slice(&new)),
        Error::BadDataSection
    );
}

#[test]
fn unknown_op_tag() {
    let l = layout();
    // The op count is one byte; the first op's tag follows.
    assert_eq!(patched(|b| b[l.ops + 1] = 42), Error::UnknownOp { tag: 42 });
}

#[test]
fn unknown_weight_encoding() {
    let l = layout();
    // The Conv2d's filter encoding: after its tag, input, output and the filter's
    // offset and length (1 byte each).
    let encoding = l.ops + 2 + 4;
    // Tags 0..=5 are format 2.1's (dense, two sparse, three packed); 6 is unknown.
    assert_eq!(
        patched(|b| b[encoding] = 6),
        Error::UnknownEncoding { tag: 6 }
    );
    assert_eq!(
        patched(|b| b[encoding] = 0x7f),
        Error::UnknownEncoding { tag: 127 }
    );
}

#[test]
fn unknown_tensor_kind_and_rank_too_high() {
    let l = layout();
    let t0 = l.tensors + 1;
    assert_eq!(
        patched(|b| b[t0 + l.tensor0_len - 1] = 9),
        Error::UnknownTensorKind { tag: 9 }
    );
    assert_eq!(patched(|b| b[t0] = 5), Error::RankTooHigh { rank: 5 });
}

#[test]
fn undecodable_graph() {
    let l = layout();
    // Conv2d fields: input, output (1 byte each), filter (offset, len, encoding: 1 byte
    // each), then the `Option` tag of `bias`, which must be 0 or 1.
    let bias_tag = l.ops + 2 + 5;
    // The error names the start of the item that failed: the Conv2d after its tag.
    assert_eq!(
        patched(|b| b[bias_tag] = 2),
        Error::Decode {
            offset: (l.ops + 2) as u32
        }
    );
}

#[test]
fn tensor_index_out_of_range() {
    let e = crafted(|b| {
        if let Op::MaxPool2d(p) = &mut b.graph.ops[1] {
            p.input = 99;
        }
    });
    assert_eq!(
        e,
        Error::TensorIndexOutOfRange {
            index: 99,
            count: 5
        }
    );
    let e = crafted(|b| b.graph.output = 5);
    assert_eq!(e, Error::TensorIndexOutOfRange { index: 5, count: 5 });
}

#[test]
fn shape_product_overflow() {
    let e = crafted(|b| {
        b.graph.tensors[1].shape = heapless::Vec::from_slice(&[65536, 65536, 1, 2]).unwrap()
    });
    assert_eq!(e, Error::ShapeOverflow);
}

#[test]
fn bad_scales_and_zero_points() {
    for scale in [
        0.0f32,
        -0.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
    ] {
        let e = crafted(|b| b.graph.tensors[2].scale = scale);
        assert_eq!(e, Error::BadScale { tensor: 2 }, "scale {scale}");
    }
    for zp in [128, -129, i32::MIN] {
        let e = crafted(|b| b.graph.tensors[2].zero_point = zp);
        assert_eq!(e, Error::BadZeroPoint { tensor: 2 });
    }
}

fn with_conv(
    f: impl FnOnce(&mut sprig_runtime::Conv2d, &mut sprig_runtime::format::write::BlobBuilder),
) -> Error {
    crafted(|b| {
        if let Op::Conv2d(c) = &mut b.graph.ops[0] {
            f(c, &mut b.builder);
        }
    })
}

#[test]
fn requantization_out_of_range() {
    for shift in [31, -32, 127, -128] {
        let e = with_conv(|c, bb| {
            c.requant = bb.push_requant(&[(1 << 30, shift), (1 << 30, 0)]).unwrap()
        });
        assert_eq!(e, Error::ShiftOutOfRange { op: 0, shift });
    }
    for m in [-1, -(1 << 30), i32::MIN] {
        let e = with_conv(|c, bb| c.requant = bb.push_requant(&[(1 << 30, 0), (m, 0)]).unwrap());
        assert_eq!(
            e,
            Error::MultiplierOutOfRange {
                op: 0,
                multiplier: m
            }
        );
    }
}

/// Format 2.3: multipliers below 2^30 (unnormalized, single rounding) load.
#[test]
fn unnormalized_multipliers_load() {
    for m in [0, 1, 1 << 20, (1 << 30) - 1] {
        let mut built = cnn();
        if let Op::Conv2d(c) = &mut built.graph.ops[0] {
            c.requant = built.builder.push_requant(&[(m, 0), (m, 0)]).unwrap();
        }
        load(&built.blob()).unwrap_or_else(|e| panic!("multiplier {m}: {e}"));
    }
}

#[test]
fn conv_parameter_errors() {
    assert_eq!(
        with_conv(|c, _| c.stride_h = 0),
        Error::ZeroStride { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.stride_w = 0),
        Error::ZeroStride { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.padding.top = 3),
        Error::BadPadding { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.padding.right = 7),
        Error::BadPadding { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.kernel_w = 0),
        Error::BadParameter { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.stride_w = 2),
        Error::ShapeMismatch { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| (c.act_min, c.act_max) = (10, 5)),
        Error::BadActivationRange { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.act_max = 128),
        Error::BadActivationRange { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.filter.data.offset += 100_000),
        Error::DataOutOfBounds { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.filter.data.offset = u32::MAX),
        Error::DataOutOfBounds { op: 0 }
    );
    assert_eq!(
        with_conv(|c, _| c.filter.data.len -= 1),
        Error::DataLengthMismatch {
            op: 0,
            expected: 18,
            got: 17
        }
    );
    assert_eq!(
        with_conv(|c, bb| c.bias = Some(bb.push_i32(&[1, 2, 3]).unwrap())),
        Error::DataLengthMismatch {
            op: 0,
            expected: 8,
            got: 12
        }
    );
    let e =
        crafted(|b| b.graph.tensors[1].shape = heapless::Vec::from_slice(&[1, 5, 6, 2]).unwrap());
    assert_eq!(e, Error::ShapeMismatch { op: 0 });
}

#[test]
fn arena_offsets_out_of_bounds() {
    let e = crafted(|b| b.graph.tensors[4].arena_offset = b.graph.arena_size - 3);
    assert_eq!(e, Error::ArenaOffsetOutOfBounds { tensor: 4 });
    let e = crafted(|b| b.graph.tensors[4].arena_offset = u32::MAX);
    assert_eq!(e, Error::ArenaOffsetOutOfBounds { tensor: 4 });
    let e = crafted(|b| b.graph.arena_size = 100);
    assert!(matches!(e, Error::ArenaOffsetOutOfBounds { .. }), "{e:?}");
}

#[test]
fn arena_overlap_of_live_tensors() {
    // The input (steps 0–1) moved onto the conv output (steps 1–2): live together.
    let e = crafted(|b| b.graph.tensors[0].arena_offset = 10);
    assert_eq!(e, Error::ArenaOverlap { a: 0, b: 1 });
    // The fc output (steps 4–5) onto the pool output it reads (steps 2–4).
    let e = crafted(|b| b.graph.tensors[4].arena_offset = b.graph.tensors[2].arena_offset + 2);
    assert_eq!(e, Error::ArenaOverlap { a: 2, b: 4 });
    // Not live together: the fc output may reuse the input's bytes.
    let mut built = cnn();
    built.graph.tensors[4].arena_offset = built.graph.tensors[0].arena_offset - 4;
    Model::from_bytes(&built.blob()).unwrap();
}

#[test]
fn pool_aliasing_only_in_place() {
    // The planner puts the 2×2/2 max pool (op 1: tensor 1 → 2) in place.
    let built = cnn();
    assert_eq!(
        built.graph.tensors[1].arena_offset,
        built.graph.tensors[2].arena_offset
    );
    Model::from_bytes(&built.blob()).unwrap();
    // Overlapping but not at the same offset.
    let e = crafted(|b| {
        b.graph.tensors[2].arena_offset += 4;
        b.graph.tensors[3].arena_offset += 4; // its reshape alias
    });
    assert_eq!(e, Error::ArenaOverlap { a: 1, b: 2 });
    // Same offset, but with top padding the pool could overwrite values it still reads.
    let e = crafted(|b| {
        if let Op::MaxPool2d(p) = &mut b.graph.ops[1] {
            p.padding.top = 1;
            p.padding.bottom = 1;
        }
        let s = b.graph.tensors[2].shape.clone();
        b.graph.tensors[2].shape =
            heapless::Vec::from_slice(&[s[0], s[1] + 1, s[2], s[3]]).unwrap();
    });
    assert!(
        matches!(e, Error::ArenaOverlap { .. } | Error::ShapeMismatch { .. }),
        "{e:?}"
    );
    // The conv output read again later (here: by an extra max pool after the fc) must
    // not be overwritten in place.
    let e = crafted(|b| {
        let mut extra = b.graph.tensors[2].clone();
        extra.arena_offset = b.graph.arena_size;
        b.graph.arena_size += 64;
        b.graph.tensors.push(extra);
        let mut again = match b.graph.ops[1] {
            Op::MaxPool2d(p) => p,
            _ => unreachable!(),
        };
        again.output = 5;
        b.graph.ops.push(Op::MaxPool2d(again));
    });
    assert_eq!(e, Error::ArenaOverlap { a: 1, b: 2 });
}

#[test]
fn graph_structure_errors() {
    let e = crafted(|b| b.graph.tensors[3].arena_offset += 1);
    assert_eq!(e, Error::BadAlias { op: 2 });
    let e = crafted(|b| b.graph.tensors[2].zero_point = -19);
    assert_eq!(e, Error::QuantMismatch { op: 1 });
    let e = crafted(|b| b.graph.ops.swap(0, 1));
    assert_eq!(e, Error::TensorNotProduced { tensor: 1 });
    let e = crafted(|b| {
        let conv = b.graph.ops[0];
        b.graph.ops.push(conv);
    });
    assert_eq!(e, Error::TensorWrittenTwice { tensor: 1 });
    let e = crafted(|b| b.graph.tensors[2].kind = TensorKind::Output);
    assert_eq!(e, Error::BadTensorKind { tensor: 2 });
    let e = crafted(|b| b.graph.ops.pop().map(|_| ()).unwrap());
    assert_eq!(e, Error::OutputNotProduced);
}

#[test]
fn byte_mutations_with_valid_crc_never_panic() {
    let blob = cnn().blob();
    let mut accepted = 0;
    for pos in HEADER_LEN..blob.len() {
        let orig = blob[pos];
        for value in [
            0x00,
            0xFF,
            0x80,
            0x7F,
            orig ^ 1,
            orig.wrapping_add(1),
            orig.wrapping_sub(1),
        ] {
            if value == orig {
                continue;
            }
            let mut b = blob.clone();
            b[pos] = value;
            seal(&mut b, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
            if let Ok(model) = Model::from_bytes(&b) {
                accepted += 1;
                let mut arena = vec![0u8; model.arena_size()];
                let input = vec![0i8; model.input_len()];
                let mut output = vec![0i8; model.output_len()];
                model.run(&mut arena, &input, &mut output).unwrap();
            }
        }
    }
    // Weight bytes may take any value, so many mutations are legitimately accepted.
    assert!(accepted > 0);
}
