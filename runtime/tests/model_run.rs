//! Valid models: load, plan, run, and agree with the reference kernels.

mod common;

use common::{
    binary_chain, binary_chain_expected, binary_cnn, binary_cnn_expected, cnn, cnn_expected,
    packed_cnn, sparse_cnn, tensor, zoo, zoo_expected, Lcg,
};
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::format::{FORMAT_MAJOR, FORMAT_MINOR};
use sprig_runtime::{ArgMax, Encoding, Error, FullyConnected, Model, Op, TensorKind};

/// The ops one at a time (`load_input`, then `run_op` for each, as a board's per-op
/// profile runs them) leave the same output as `run`; bad indices and arenas are errors.
#[test]
fn ops_one_at_a_time_match_run() {
    let built = cnn();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(7);
    for _ in 0..10 {
        let input = rng.vec_i8(36);
        // The same arena, byte for byte, both ways (from the same filler).
        arena.fill(0x55);
        let whole = model.run_in_arena(&mut arena, &input).unwrap().to_vec();
        assert_eq!(whole, cnn_expected(&built, &input));
        let after_run = arena.clone();
        arena.fill(0x55);
        model.load_input(&mut arena, &input).unwrap();
        for i in 0..model.ops().len() {
            model.run_op(i, &mut arena).unwrap();
        }
        assert_eq!(arena, after_run);
    }
    assert_eq!(
        model.run_op(model.ops().len(), &mut arena),
        Err(Error::KernelArgs)
    );
    let mut small = vec![0u8; model.arena_size() - 1];
    assert!(matches!(
        model.run_op(0, &mut small),
        Err(Error::ArenaTooSmall { .. })
    ));
    assert!(matches!(
        model.load_input(&mut arena, &[0i8; 35]),
        Err(Error::InputSizeMismatch { .. })
    ));
}

#[test]
fn cnn_runs_and_matches_reference() {
    let built = cnn();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.input_shape(), &[1, 6, 6, 1]);
    assert_eq!(model.output_shape(), &[1, 4]);
    assert_eq!(model.input_quant().zero_point, -3);
    assert_eq!(model.output_quant().scale, 0.2);
    assert_eq!(model.header().major, FORMAT_MAJOR);
    assert_eq!(model.header().minor, FORMAT_MINOR);
    // Planned by hand: conv out (72 B, steps 1–2) at 0, input (36 B, steps 0–1) at 72,
    // pool out/reshape (18 B, steps 2–4) at 72, fc out (4 B, steps 4–5) at 0.
    assert_eq!(model.arena_size(), 108);
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(1);
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let input = rng.vec_i8(36);
        let mut out = [0i8; 4];
        model.run(&mut arena, &input, &mut out).unwrap();
        let expected = cnn_expected(&built, &input);
        assert_eq!(out.as_slice(), expected.as_slice());
        distinct.insert(out);
        let class = model.predict(&mut arena, &input).unwrap();
        assert_eq!(class, sprig_runtime::model::first_argmax(&expected));
    }
    // The model is not degenerate: outputs vary with the input.
    assert!(distinct.len() > 10, "{distinct:?}");
}

#[test]
fn zoo_of_ops_matches_reference() {
    let built = zoo();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(2);
    let mut classes = std::collections::BTreeSet::new();
    for _ in 0..50 {
        // Per-channel levels plus noise, so that the global average varies.
        let (a, b) = (rng.range(-100, 100), rng.range(-100, 100));
        let input: Vec<i8> = (0..32)
            .map(|i| ((if i % 2 == 0 { a } else { b }) + rng.range(-20, 20)) as i8)
            .collect();
        let mut out = [0i8; 1];
        model.run(&mut arena, &input, &mut out).unwrap();
        let (probs, class) = zoo_expected(&built, &input);
        assert_eq!(out[0], class, "probabilities {probs:?}");
        assert_eq!(model.predict(&mut arena, &input).unwrap(), class as usize);
        classes.insert(class);
    }
    assert!(classes.len() > 1, "{classes:?}");
}

#[test]
fn tiny_fc_argmax_hand_case() {
    // x = [3, 4] (scale 1, zp 0); W = [[1, 2], [2, 0], [−1, 1]] (scale 1); bias [1, 0, 9];
    // M = 1·1/1 = 1.0 = (2^30, 1): y = [3 + 8 + 1, 6 + 0 + 0, −3 + 4 + 9] = [12, 6, 10];
    // argmax → 0. The same with the weights dense, in each sparse encoding, and packed
    // in 4 bits (the only width that holds a 2).
    for encoding in Encoding::ALL {
        if !matches!(encoding, Encoding::Packed2 | Encoding::Packed1) {
            tiny_fc_argmax(encoding);
        }
    }
}

fn tiny_fc_argmax(encoding: Encoding) {
    let mut b = BlobBuilder::new();
    let weights = b
        .push_weights_as(&[1, 2, 2, 0, -1, 1], 3, encoding)
        .unwrap();
    let bias = b.push_i32(&[1, 0, 9]).unwrap();
    let requant = b.push_requant(&[(1 << 30, 1)]).unwrap();
    let mut graph = GraphDef {
        tensors: vec![
            tensor(&[1, 2], 1.0, 0, TensorKind::Input),
            tensor(&[1, 3], 1.0, 0, TensorKind::Activation),
            tensor(&[1, 1], 1.0, 0, TensorKind::Output),
        ],
        ops: vec![
            Op::FullyConnected(FullyConnected {
                input: 0,
                output: 1,
                weights,
                bias: Some(bias),
                requant,
                act_min: -128,
                act_max: 127,
            }),
            Op::ArgMax(ArgMax {
                input: 1,
                output: 2,
            }),
        ],
        input: 0,
        output: 2,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    let blob = b.finish(&graph).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.op(0).unwrap().weights().unwrap().encoding, encoding);
    let mut arena = vec![0u8; model.arena_size()];
    let out = model.run_in_arena(&mut arena, &[3, 4]).unwrap();
    assert_eq!(out, &[0]);
    // The FC output is still in the arena at its planned offset.
    let fc_out = model.tensors()[1].arena_offset as usize;
    let raw: Vec<i8> = arena[fc_out..fc_out + 3].iter().map(|&b| b as i8).collect();
    assert_eq!(raw, [12, 6, 10]);
    assert_eq!(model.predict(&mut arena, &[3, 4]).unwrap(), 0);
    assert_eq!(model.predict(&mut arena, &[-3, 4]).unwrap(), 2); // [6, −6, 16]
}

/// Pruned weights stored sparse give exactly what the dense reference computes.
#[test]
fn sparse_cnn_runs_and_matches_reference() {
    for encoding in [Encoding::SparseRel8, Encoding::SparseRel4] {
        let built = sparse_cnn(encoding);
        let blob = built.blob();
        let model = Model::from_bytes(&blob).unwrap();
        assert!(model
            .ops()
            .filter_map(|op| op.weights())
            .all(|w| w.encoding == encoding));
        let mut arena = vec![0u8; model.arena_size()];
        let mut rng = Lcg::new(5);
        for _ in 0..20 {
            let input = rng.vec_i8(36);
            let mut out = [0i8; 4];
            model.run(&mut arena, &input, &mut out).unwrap();
            assert_eq!(out.to_vec(), cnn_expected(&built, &input), "{encoding:?}");
        }
    }
}

/// Low-bit weights stored packed give exactly what the dense reference computes.
#[test]
fn packed_cnn_runs_and_matches_reference() {
    for encoding in [Encoding::Packed4, Encoding::Packed2, Encoding::Packed1] {
        let built = packed_cnn(encoding);
        let blob = built.blob();
        let model = Model::from_bytes(&blob).unwrap();
        let layers = model.layer_weights().unwrap();
        assert!(layers.iter().all(|l| l.encoding == encoding));
        // 18 conv weights in two rows of 9, 72 fc weights in rows of 18, byte-aligned.
        let expected = match encoding {
            Encoding::Packed4 => [2 * 5, 4 * 9],
            Encoding::Packed2 => [2 * 3, 4 * 5],
            _ => [2 * 2, 4 * 3],
        };
        assert_eq!([layers[0].bytes, layers[1].bytes], expected, "{encoding:?}");
        assert_eq!(layers[0].dense, built.layers[0].weights);
        let mut arena = vec![0u8; model.arena_size()];
        let mut rng = Lcg::new(6);
        for _ in 0..20 {
            let input = rng.vec_i8(36);
            let mut out = [0i8; 4];
            model.run(&mut arena, &input, &mut out).unwrap();
            assert_eq!(out.to_vec(), cnn_expected(&built, &input), "{encoding:?}");
        }
    }
}

/// A binarized network (binary conv, max pool, binary fully connected) runs as the
/// reference computes, and its op set needs no weight encoding's kernels (neither the
/// packed int8 nor the dense ones).
#[test]
fn binary_cnn_runs_and_matches_reference() {
    let b = binary_cnn();
    let blob = b.built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(
        sprig_runtime::model::used_by(model.ops()),
        sprig_runtime::kind_set(&[
            sprig_runtime::OpKind::BinaryConv2d,
            sprig_runtime::OpKind::MaxPool2d,
            sprig_runtime::OpKind::Reshape,
            sprig_runtime::OpKind::BinaryFullyConnected,
        ])
    );
    // The stored ±1 rows read back as written (conv rows are windows of KH·KW·C).
    let layers = model.layer_weights().unwrap();
    assert_eq!(layers[0].dense, b.built.layers[0].weights);
    assert_eq!(layers[1].dense, b.built.layers[1].weights);
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(21);
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..50 {
        let input = rng.vec_i8(36);
        let mut out = [0i8; 4];
        model.run(&mut arena, &input, &mut out).unwrap();
        assert_eq!(out.to_vec(), binary_cnn_expected(&b, &input));
        assert!(out.iter().all(|&v| v == 1 || v == -1), "{out:?}");
        distinct.insert(out);
    }
    assert!(distinct.len() > 2, "{distinct:?}");
}

/// The binary conv's signs max-pooled and flattened as packed bits (the pool in place)
/// give what the int8 `±1` do.
#[test]
fn binary_cnn_pooling_packed_bits_matches_reference() {
    let mut b = binary_cnn();
    let int8_arena = b.built.graph.arena_size;
    assert_eq!(b.built.graph.pack_sign_activations(), 3);
    b.built.graph.plan_arena().unwrap();
    let blob = b.built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let t = model.tensors();
    assert!(t[1].is_bits() && t[2].is_bits() && t[3].is_bits());
    assert_eq!(
        t[1].arena_offset, t[2].arena_offset,
        "the pool runs in place"
    );
    assert!(model.arena_size() < int8_arena as usize);
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(22);
    for _ in 0..50 {
        let input = rng.vec_i8(36);
        let mut out = [0i8; 4];
        model.run(&mut arena, &input, &mut out).unwrap();
        assert_eq!(out.to_vec(), binary_cnn_expected(&b, &input));
    }
}

/// A depthwise filter packed in 4 bits, one row per tap, runs as the reference
/// computes with its weights.
#[test]
fn packed_depthwise_matches_reference() {
    let mut built = zoo();
    let op = built
        .graph
        .ops
        .iter()
        .position(|op| matches!(op, Op::DepthwiseConv2d(_)))
        .unwrap();
    let weights: Vec<i8> = built.layers[0].weights.iter().map(|&w| w >> 4).collect();
    let packed = built
        .builder
        .push_weights_as(&weights, 9, Encoding::Packed4)
        .unwrap();
    if let Op::DepthwiseConv2d(d) = &mut built.graph.ops[op] {
        d.filter = packed;
    }
    built.layers[0].weights = weights;
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut rng = Lcg::new(9);
    for _ in 0..50 {
        let input = rng.vec_i8(32);
        let mut out = [0i8; 1];
        model.run(&mut arena, &input, &mut out).unwrap();
        assert_eq!(out[0], zoo_expected(&built, &input).1);
    }
}

#[test]
fn run_checks_arena_input_and_output_sizes() {
    let blob = cnn().blob();
    let model = Model::from_bytes(&blob).unwrap();
    let input = [0i8; 36];
    let mut out = [0i8; 4];
    let mut small = vec![0u8; 107];
    assert_eq!(
        model.run(&mut small, &input, &mut out),
        Err(Error::ArenaTooSmall {
            needed: 108,
            got: 107
        })
    );
    assert_eq!(
        model.run(&mut [], &input, &mut out),
        Err(Error::ArenaTooSmall {
            needed: 108,
            got: 0
        })
    );
    let mut arena = vec![0u8; 200]; // larger than needed is fine
    assert_eq!(
        model.run(&mut arena, &input[..35], &mut out),
        Err(Error::InputSizeMismatch {
            expected: 36,
            got: 35
        })
    );
    assert_eq!(
        model.run(&mut arena, &input, &mut out[..3]),
        Err(Error::OutputSizeMismatch {
            expected: 4,
            got: 3
        })
    );
    model.run(&mut arena, &input, &mut out).unwrap();
}

#[test]
fn unaligned_blob_loads_and_runs_the_same() {
    let blob = cnn().blob();
    let mut shifted = vec![0u8; blob.len() + 3];
    shifted[3..].copy_from_slice(&blob);
    let a = Model::from_bytes(&blob).unwrap();
    let b = Model::from_bytes(&shifted[3..]).unwrap();
    let input: Vec<i8> = (0..36).map(|i| (i * 7 - 100) as i8).collect();
    let (mut oa, mut ob) = ([0i8; 4], [0i8; 4]);
    let mut arena = vec![0u8; 108];
    a.run(&mut arena, &input, &mut oa).unwrap();
    b.run(&mut arena, &input, &mut ob).unwrap();
    assert_eq!(oa, ob);
}

#[test]
fn capacity_limits_are_errors() {
    let blob = cnn().blob();
    assert_eq!(
        Model::<1, 64>::parse(&blob).unwrap_err(),
        Error::TooManyOps {
            count: 4,
            capacity: 1
        }
    );
    assert_eq!(
        Model::<64, 4>::parse(&blob).unwrap_err(),
        Error::TooManyTensors {
            count: 5,
            capacity: 4
        }
    );
    let small = Model::<4, 5>::parse(&blob).unwrap();
    assert_eq!(small.ops().len(), 4);
}

#[test]
fn graph_roundtrips_through_the_blob() {
    let built = cnn();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.tensors(), built.graph.tensors.as_slice());
    let ops: Vec<Op> = model.ops().collect();
    assert_eq!(ops, built.graph.ops);
    // The ops stay in the blob: each decodes alike by index, from either end.
    for (i, op) in ops.iter().enumerate() {
        assert_eq!(model.op(i).as_ref(), Some(op));
    }
    assert_eq!(model.op(ops.len()), None);
    assert_eq!(model.ops().len(), ops.len());
    assert_eq!(
        model.ops().rev().collect::<Vec<_>>(),
        ops.iter().rev().copied().collect::<Vec<_>>()
    );
    assert_eq!(model.ops().last().as_ref(), ops.last());
    assert_eq!(model.data(), built.builder.data());
    assert_eq!(model.graph().data_offset % 16, 0);
    // The graph bytes are exactly postcard's encoding of `Graph`.
    let graph = sprig_runtime::Graph {
        header: *model.graph(),
        tensors: model.tensors(),
        ops: &ops,
    };
    let bytes = postcard::to_allocvec(&graph).unwrap();
    assert_eq!(&blob[20..20 + bytes.len()], bytes.as_slice());
    // Weights borrowed in place: the data section is the blob's tail.
    let data = model.data();
    assert_eq!(data.as_ptr(), blob[blob.len() - data.len()..].as_ptr());
}

#[test]
fn newer_minor_and_optional_flags_are_accepted() {
    let mut blob = cnn().blob();
    sprig_runtime::format::write::seal(&mut blob, FORMAT_MAJOR, FORMAT_MINOR + 3, 0x8000_0000)
        .unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.header().minor, FORMAT_MINOR + 3);
}

#[test]
fn error_messages_are_readable() {
    let e = Error::ArenaTooSmall {
        needed: 108,
        got: 7,
    };
    assert_eq!(e.to_string(), "arena too small: need 108 bytes, got 7");
    let boxed: Box<dyn std::error::Error> = Box::new(Error::BadMagic);
    assert!(boxed.to_string().contains("magic"));
}

/// Writes the test models as fuzzing seeds into `$SPRIG_FUZZ_SEEDS` (a directory):
/// `SPRIG_FUZZ_SEEDS=fuzz/corpus/from_bytes_run cargo test -p sprig-runtime
/// --features std --test model_run -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes files; run by hand to seed the fuzzer"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(std::env::var("SPRIG_FUZZ_SEEDS").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cnn.sprig"), cnn().blob()).unwrap();
    std::fs::write(dir.join("zoo.sprig"), zoo().blob()).unwrap();
    std::fs::write(
        dir.join("cnn-sparse-rel8.sprig"),
        sparse_cnn(Encoding::SparseRel8).blob(),
    )
    .unwrap();
    std::fs::write(
        dir.join("cnn-sparse-rel4.sprig"),
        sparse_cnn(Encoding::SparseRel4).blob(),
    )
    .unwrap();
    std::fs::write(dir.join("cnn-binary.sprig"), binary_cnn().built.blob()).unwrap();
    let chain = binary_chain(true).built.blob();
    std::fs::write(dir.join("binary-bits.sprig"), chain).unwrap();
    std::fs::write(dir.join("cnn-fused.sprig"), common::fused_cnn().blob()).unwrap();
    for encoding in [Encoding::Packed4, Encoding::Packed2, Encoding::Packed1] {
        let name = format!("cnn-{}.sprig", encoding.name());
        std::fs::write(dir.join(name), packed_cnn(encoding).blob()).unwrap();
    }
}

#[test]
fn model_footprint() {
    // Documented in the crate docs; keep an eye on it (host, 64-bit).
    let op = std::mem::size_of::<Op>();
    let model = std::mem::size_of::<Model<'static>>();
    eprintln!("size_of::<Op>() = {op}, size_of::<Model>() = {model}");
    assert!(op <= 96, "{op}");
}

/// The exported lenet5 (if a `cargo xtask compress` run left one in `runs/lenet5`),
/// re-planned by this planner: pools write in place, the arena shrinks, and the
/// re-planned blob runs bit-exact with the original.
#[test]
#[ignore = "needs runs/lenet5/model.sprig from `cargo xtask compress`"]
fn lenet5_replanned_in_place() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../runs/lenet5/model.sprig");
    let blob = std::fs::read(path).expect("run `cargo xtask compress` first");
    let model = Model::from_bytes(&blob).unwrap();
    let mut graph = GraphDef {
        tensors: model.tensors().to_vec(),
        ops: model.ops().collect(),
        input: model.graph().input,
        output: model.graph().output,
        arena_size: 0,
    };
    let arena = graph.plan_arena().unwrap();
    let mut builder = BlobBuilder::new();
    builder.push_bytes(model.data()).unwrap();
    let replanned_blob = builder.finish(&graph).unwrap();
    let replanned = Model::from_bytes(&replanned_blob).unwrap();
    println!("lenet5 arena: {} B -> {arena} B", model.arena_size());
    assert!(arena <= 5_600, "arena {arena}");
    let mut a1 = vec![0u8; model.arena_size()];
    let mut a2 = vec![0u8; replanned.arena_size()];
    let mut rng = Lcg::new(7);
    for _ in 0..20 {
        let input = rng.vec_i8(model.input_len());
        let (mut o1, mut o2) = (vec![0i8; model.output_len()], vec![0i8; model.output_len()]);
        model.run(&mut a1, &input, &mut o1).unwrap();
        replanned.run(&mut a2, &input, &mut o2).unwrap();
        assert_eq!(o1, o2);
    }
}

/// Binary ops passing packed bits compute what they compute on int8 `±1`, in a smaller
/// arena.
#[test]
fn binary_ops_passing_packed_bits_match_their_int8_form() {
    let (int8, bits) = (binary_chain(false), binary_chain(true));
    let (blob8, blob1) = (int8.built.blob(), bits.built.blob());
    let (m8, m1) = (
        Model::from_bytes(&blob8).unwrap(),
        Model::from_bytes(&blob1).unwrap(),
    );
    let kinds: Vec<TensorKind> = m1.tensors().iter().map(|t| t.kind).collect();
    assert_eq!(
        kinds[1..4],
        [
            TensorKind::PackedBits,
            TensorKind::PackedBits,
            TensorKind::PackedBits
        ]
    );
    // 18 signs in 3 bytes beside the 36-byte input, against 18 bytes.
    assert!(
        m1.arena_size() < m8.arena_size(),
        "{} vs {}",
        m1.arena_size(),
        m8.arena_size()
    );
    let (mut a8, mut a1) = (vec![0u8; m8.arena_size()], vec![0xA5u8; m1.arena_size()]);
    let mut rng = Lcg::new(33);
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..100 {
        let input = rng.vec_i8(36);
        let (mut o8, mut o1) = ([0i8; 4], [0i8; 4]);
        m8.run(&mut a8, &input, &mut o8).unwrap();
        m1.run(&mut a1, &input, &mut o1).unwrap();
        assert_eq!(o1, o8);
        assert_eq!(o1.to_vec(), binary_chain_expected(&bits, &input));
        distinct.insert(o1);
    }
    assert!(distinct.len() > 2, "{distinct:?}");
}
