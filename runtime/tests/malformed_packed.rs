//! Malformed packed low-bit weights and binary ops: each fault has its own error, and
//! no blob with packed or binary layers (truncated, bit-flipped) makes the loader or a
//! run panic.

mod common;

use common::{binary_chain, binary_cnn, bit_flips_refused_or_run, packed_cnn, tensor, zoo};
use sprig_runtime::format::write::seal;
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::format::{FORMAT_MAJOR, FORMAT_MINOR};
use sprig_runtime::model::OpKind;
use sprig_runtime::{op_set, BinaryFullyConnected, Encoding, Error, Model, Op, TensorKind};

const PACKED: [Encoding; 3] = [Encoding::Packed4, Encoding::Packed2, Encoding::Packed1];

fn load(blob: &[u8]) -> Result<(), Error> {
    Model::from_bytes(blob).map(|_| ())
}

/// Blob offset of op 0's (the conv's) packed filter, its length, and the blob.
fn conv_filter(encoding: Encoding) -> (usize, usize, Vec<u8>) {
    let blob = packed_cnn(encoding).blob();
    let model = Model::from_bytes(&blob).unwrap();
    let Some(w) = model.op(0).unwrap().weights() else {
        panic!("op 0 is the conv")
    };
    assert_eq!(w.encoding, encoding);
    let start = model.graph().data_offset as usize + w.data.offset as usize;
    (start, w.data.len as usize, blob)
}

#[test]
fn a_section_whose_length_disagrees_with_the_shape() {
    // The conv's rows are 3×3×1 = 9 weights: 5, 3 or 2 bytes each, two rows.
    for (encoding, expected) in PACKED.into_iter().zip([10u32, 6, 4]) {
        for delta in [-1i32, 1] {
            let mut built = packed_cnn(encoding);
            if let Op::Conv2d(c) = &mut built.graph.ops[0] {
                c.filter.data.len = (c.filter.data.len as i32 + delta) as u32;
            }
            assert_eq!(
                load(&built.blob()).unwrap_err(),
                Error::DataLengthMismatch {
                    op: 0,
                    expected,
                    got: (expected as i32 + delta) as u32
                },
                "{encoding:?} {delta:+}"
            );
        }
    }
}

#[test]
fn padding_bits_after_a_row() {
    // Row 1's last byte: 9 values leave 4, 6 or 7 bits of it spare.
    for encoding in PACKED {
        let (at, len, mut blob) = conv_filter(encoding);
        blob[at + len - 1] |= 0x80;
        seal(&mut blob, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
        assert_eq!(
            load(&blob).unwrap_err(),
            Error::PackedPaddingNotZero { op: 0, row: 1 },
            "{encoding:?}"
        );
    }
}

#[test]
fn an_encoding_outside_the_op_set() {
    const DENSE_CNN: sprig_runtime::OpSet = op_set(&[
        OpKind::Conv2d,
        OpKind::MaxPool2d,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]);
    for encoding in PACKED {
        let blob = packed_cnn(encoding).blob();
        assert_eq!(
            Model::<8, 8, DENSE_CNN>::parse(&blob).unwrap_err(),
            Error::EncodingNotInSet {
                op: 0,
                encoding: encoding as u32
            }
        );
    }
    // The set must name the blob's own width.
    const WITH_PACKED4: sprig_runtime::OpSet = DENSE_CNN | Encoding::Packed4.bit();
    let four = packed_cnn(Encoding::Packed4).blob();
    let two = packed_cnn(Encoding::Packed2).blob();
    assert!(Model::<8, 8, WITH_PACKED4>::parse(&four).is_ok());
    assert_eq!(
        Model::<8, 8, WITH_PACKED4>::parse(&two).unwrap_err(),
        Error::EncodingNotInSet { op: 0, encoding: 4 }
    );
}

#[test]
fn depthwise_filters_pack_but_never_sparse() {
    // zoo's depthwise is 3×3: one packed row per tap.
    let mut built = zoo();
    let op = built
        .graph
        .ops
        .iter()
        .position(|op| matches!(op, Op::DepthwiseConv2d(_)))
        .unwrap();
    let ones = vec![1i8; 9 * 2];
    let packed = built
        .builder
        .push_weights_as(&ones, 9, Encoding::Packed1)
        .unwrap();
    if let Op::DepthwiseConv2d(d) = &mut built.graph.ops[op] {
        d.filter = packed;
    }
    load(&built.blob()).unwrap();
    if let Op::DepthwiseConv2d(d) = &mut built.graph.ops[op] {
        d.filter.encoding = Encoding::SparseRel4;
    }
    assert_eq!(
        load(&built.blob()).unwrap_err(),
        Error::EncodingNotSupported {
            op: op as u32,
            encoding: 2
        }
    );
}

#[test]
fn every_truncation_and_bit_flip_of_a_packed_blob() {
    for encoding in PACKED {
        let (at, len, blob) = conv_filter(encoding);
        load(&blob).unwrap();
        for prefix in 0..blob.len() {
            assert!(
                load(&blob[..prefix]).is_err(),
                "{encoding:?}: prefix {prefix} accepted"
            );
        }
        // Flips inside the filter, re-sealed so the CRC does not catch them: whatever
        // loads must run without panicking.
        let input: Vec<i8> = (0..36).map(|i| (i * 7) as i8).collect();
        let mut out = [0i8; 4];
        for byte in at..at + len {
            for bit in 0..8 {
                let mut flipped = blob.clone();
                flipped[byte] ^= 1 << bit;
                seal(&mut flipped, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
                if let Ok(model) = Model::from_bytes(&flipped) {
                    let mut arena = vec![0u8; model.arena_size()];
                    model.run(&mut arena, &input, &mut out).unwrap();
                }
            }
        }
    }
}

#[test]
fn binary_ops_refuse_other_encodings_short_thresholds_and_long_rows() {
    // The conv's filter must be Packed1.
    let mut b = binary_cnn();
    if let Op::BinaryConv2d(c) = &mut b.built.graph.ops[0] {
        c.filter.encoding = Encoding::Packed2;
    }
    assert_eq!(
        load(&b.built.blob()).unwrap_err(),
        Error::EncodingNotSupported { op: 0, encoding: 4 }
    );
    // One i32 threshold per output.
    let mut b = binary_cnn();
    if let Op::BinaryFullyConnected(f) = &mut b.built.graph.ops[3] {
        f.thresholds.len -= 4;
    }
    assert_eq!(
        load(&b.built.blob()).unwrap_err(),
        Error::DataLengthMismatch {
            op: 3,
            expected: 16,
            got: 12
        }
    );
    // Rows longer than the kernel's bit buffer (4,096 weights): a 4,097-input layer.
    let k = 4097u32;
    let mut builder = BlobBuilder::new();
    let weights = builder
        .push_weights_as(&vec![1i8; 2 * k as usize], 2, Encoding::Packed1)
        .unwrap();
    let thresholds = builder.push_i32(&[0, 0]).unwrap();
    let mut graph = GraphDef {
        tensors: vec![
            tensor(&[1, k], 1.0, 0, TensorKind::Input),
            tensor(&[1, 2], 1.0, 0, TensorKind::Output),
        ],
        ops: vec![Op::BinaryFullyConnected(BinaryFullyConnected {
            input: 0,
            output: 1,
            weights,
            thresholds,
        })],
        input: 0,
        output: 1,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    let err = load(&builder.finish(&graph).unwrap()).unwrap_err();
    assert_eq!(err, Error::BadParameter { op: 0 }, "{err}");
}

/// Every truncation of `blob` is refused, and every bit flip past the header
/// (re-sealed, so the CRC does not catch it) either is refused or loads and runs on a
/// 36-value input without panicking.
fn truncations_and_bit_flips_never_panic(blob: &[u8]) {
    load(blob).unwrap();
    for prefix in 0..blob.len() {
        assert!(load(&blob[..prefix]).is_err(), "prefix {prefix} accepted");
    }
    let input: Vec<i8> = (0..36).map(|i| (i * 5) as i8).collect();
    bit_flips_refused_or_run(blob, &input);
}

#[test]
fn every_truncation_and_bit_flip_of_a_binary_blob() {
    truncations_and_bit_flips_never_panic(&binary_cnn().built.blob());
}

#[test]
fn packed_bits_outside_binary_ops_are_refused() {
    let with_kind = |tensor: usize, kind: TensorKind| {
        let mut b = binary_cnn();
        b.built.graph.tensors[tensor].kind = kind;
        b.built.graph.plan_arena().unwrap();
        load(&b.built.blob())
    };
    // The conv's output read by the max pool (an int8 op): op 1.
    assert_eq!(
        with_kind(1, TensorKind::PackedBits).unwrap_err(),
        Error::PackedBitsOperand { op: 1 }
    );
    // The pool's output written as bits: op 1 again.
    assert_eq!(
        with_kind(2, TensorKind::PackedBits).unwrap_err(),
        Error::PackedBitsOperand { op: 1 }
    );
    // A reshape from int8 to bits: op 2.
    assert_eq!(
        with_kind(3, TensorKind::PackedBits).unwrap_err(),
        Error::PackedBitsOperand { op: 2 }
    );
    // The graph output (and input) are int8.
    assert_eq!(
        with_kind(4, TensorKind::PackedBits).unwrap_err(),
        Error::BadTensorKind { tensor: 4 }
    );
    // A max pool on bits whose clamp would turn −1 into 0: op 1, and the exporter's
    // pass leaves such a pool's input as int8.
    let mut b = binary_cnn();
    if let Op::MaxPool2d(p) = &mut b.built.graph.ops[1] {
        p.act_min = 0;
    }
    let mut bits = b.built.graph.clone();
    assert_eq!(b.built.graph.pack_sign_activations(), 0);
    for t in 1..=3 {
        bits.tensors[t].kind = TensorKind::PackedBits;
    }
    bits.plan_arena().unwrap();
    let blob = b.built.builder.finish(&bits).unwrap();
    assert_eq!(load(&blob).unwrap_err(), Error::PackedBitsOperand { op: 1 });
}

/// A tensor kind past `Streamed` is unknown, as a newer minor's would be.
#[test]
fn an_unknown_tensor_kind_is_refused() {
    let blob = binary_chain(true).built.blob();
    // Tensor 1's kind byte: the graph's postcard bytes hold kind 3 only for bits.
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.tensors()[1].kind, TensorKind::PackedBits);
    let graph_end = model.graph().data_offset as usize;
    let mut hits = 0;
    for at in 20..graph_end {
        if blob[at] != 3 {
            continue;
        }
        let mut changed = blob.clone();
        changed[at] = 5;
        seal(&mut changed, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
        if load(&changed) == Err(Error::UnknownTensorKind { tag: 5 }) {
            hits += 1;
        }
    }
    assert_eq!(hits, 3, "one kind byte per packed-bit tensor");
}

#[test]
fn every_truncation_and_bit_flip_of_a_packed_bits_blob() {
    truncations_and_bit_flips_never_panic(&binary_chain(true).built.blob());
}
