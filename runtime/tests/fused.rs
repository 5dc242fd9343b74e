//! The fused conv + max pool op (`Conv2dMaxPool`, format 2.2): the fusion rewrite,
//! bit-exact runs against the unfused model, the smaller arena, and the load-time
//! checks of crafted fused blobs (shapes, encodings, window, arena overlap).

mod common;

use common::{cnn, cnn_expected, fused_cnn, packed_cnn, sparse_cnn, tensor, Built, Lcg};
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::format::FORMAT_MINOR;
use sprig_runtime::model::{op_set, OpKind};
use sprig_runtime::{Conv2d, Conv2dMaxPool, Padding, PoolWindow};
use sprig_runtime::{Encoding, Error, Model, Op, Pool2d, TensorKind};

fn fused_op(b: &mut Built) -> &mut sprig_runtime::Conv2dMaxPool {
    match b
        .graph
        .ops
        .iter_mut()
        .find(|op| op.kind() == OpKind::Conv2dMaxPool)
    {
        Some(Op::Conv2dMaxPool(p)) => p,
        _ => panic!("no fused op"),
    }
}

/// Build the fused test CNN, let `mutate` change it, encode and load.
fn crafted(mutate: impl FnOnce(&mut Built)) -> Error {
    let mut built = fused_cnn();
    mutate(&mut built);
    Model::from_bytes(&built.blob()).expect_err("crafted blob must be refused")
}

#[test]
fn fusion_removes_the_conv_output_and_halves_the_arena() {
    let unfused = cnn();
    let fused = fused_cnn();
    let kinds: Vec<OpKind> = fused.graph.ops.iter().map(Op::kind).collect();
    assert_eq!(
        kinds,
        [
            OpKind::Conv2dMaxPool,
            OpKind::Reshape,
            OpKind::FullyConnected
        ]
    );
    assert_eq!(fused.graph.tensors.len(), unfused.graph.tensors.len() - 1);
    // Unfused: conv output 72 B and input 36 B live together (108 B). Fused: input
    // (36 B, steps 0–1) at 0, pooled output (18 B, steps 1–3) over the input's tail at
    // 24, where each pool row (6 B) starts past the last input row (6 B) it reads
    // (format 2.6), fc output at 0.
    assert_eq!(unfused.graph.arena_size, 108);
    assert_eq!(fused.graph.tensors[1].arena_offset, 24);
    assert_eq!(fused.graph.arena_size, 42); // 24 + 18
    let blob = fused.blob();
    let model = Model::from_bytes(&blob).unwrap();
    // Written at the current minor, which knows `Conv2dMaxPool` (2.2 and later).
    assert_eq!(model.header().minor, FORMAT_MINOR);
    assert_eq!(model.arena_size(), 42);
}

#[test]
fn fused_model_is_bit_exact_with_the_unfused_one() {
    let unfused_built = cnn();
    let fused_built = fused_cnn();
    let (ub, fb) = (unfused_built.blob(), fused_built.blob());
    let unfused = Model::from_bytes(&ub).unwrap();
    let fused = Model::from_bytes(&fb).unwrap();
    let mut rng = Lcg::new(3);
    let (mut ua, mut fa) = (
        vec![0u8; unfused.arena_size()],
        vec![0u8; fused.arena_size()],
    );
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let input = rng.vec_i8(36);
        let (mut uo, mut fo) = ([0i8; 4], [0i8; 4]);
        unfused.run(&mut ua, &input, &mut uo).unwrap();
        fused.run(&mut fa, &input, &mut fo).unwrap();
        assert_eq!(fo, uo);
        assert_eq!(fo.as_slice(), cnn_expected(&fused_built, &input).as_slice());
        distinct.insert(fo);
    }
    assert!(distinct.len() > 20, "degenerate outputs");
}

#[test]
fn only_a_conv_read_by_nothing_else_fuses() {
    // The conv output read a second time: no fusion.
    let mut built = cnn();
    let mut again = match built.graph.ops[1] {
        Op::MaxPool2d(p) => p,
        _ => unreachable!(),
    };
    built.graph.tensors.push(built.graph.tensors[2].clone());
    again.output = 5;
    built.graph.ops.push(Op::MaxPool2d(again));
    assert_eq!(built.graph.fuse_conv_max_pools(), 0);
    // A pool that clamps harder than the conv: no fusion (the fused op clamps once).
    let mut built = cnn();
    if let Op::MaxPool2d(p) = &mut built.graph.ops[1] {
        p.act_max = 100;
    }
    assert_eq!(built.graph.fuse_conv_max_pools(), 0);
    // An average pool: no fusion.
    let mut built = cnn();
    let Op::MaxPool2d(p) = built.graph.ops[1] else {
        unreachable!()
    };
    built.graph.ops[1] = Op::AvgPool2d(p);
    assert_eq!(built.graph.fuse_conv_max_pools(), 0);
}

#[test]
fn the_op_set_must_name_the_fused_op() {
    let blob = fused_cnn().blob();
    const WITHOUT: sprig_runtime::OpSet = op_set(&[
        OpKind::Conv2d,
        OpKind::MaxPool2d,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]);
    const WITH: sprig_runtime::OpSet = op_set(&[
        OpKind::Conv2dMaxPool,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]);
    let e = Model::<8, 8, WITHOUT>::parse(&blob).unwrap_err();
    assert_eq!(
        e,
        Error::OpNotInSet {
            op: 0,
            kind: OpKind::Conv2dMaxPool
        }
    );
    Model::<8, 8, WITH>::parse(&blob).unwrap();
}

#[test]
fn fused_output_overlapping_a_live_tensor_is_refused() {
    // Tensors: 0 input (36 B, steps 0–1), 1 pooled output (18 B, steps 1–3).
    // The pooled output on the input's bytes, exactly (as an in-place pool would be):
    // pool row 0 would overwrite input row 0, which it reads.
    let e = crafted(|b| {
        let o = b.graph.tensors[0].arena_offset;
        b.graph.tensors[1].arena_offset = o;
        b.graph.tensors[2].arena_offset = o; // its reshape alias
    });
    assert_eq!(e, Error::ArenaOverlap { a: 0, b: 1 });
    // Over the input's tail 4 bytes closer than the plan's 24: pool row 1 (bytes
    // 26–31) would overwrite input row 4 (24–29), which it reads.
    let e = crafted(|b| {
        let o = b.graph.tensors[0].arena_offset + 20;
        b.graph.tensors[1].arena_offset = o;
        b.graph.tensors[2].arena_offset = o; // its reshape alias
    });
    assert_eq!(e, Error::ArenaOverlap { a: 0, b: 1 });
    // A tensor that is neither its input nor its output but live across the fused
    // op: a 1×1 max pool copies the input before it, a second one reads the copy after
    // it. The fused output placed on the copy is refused.
    let e = crafted(|b| {
        let side = b.graph.tensors.len() as u32;
        let mut copy = b.graph.tensors[0].clone();
        copy.kind = TensorKind::Activation;
        copy.arena_offset = b.graph.arena_size;
        let mut dead = copy.clone();
        dead.arena_offset += 36;
        b.graph.arena_size += 72;
        b.graph.tensors.push(copy);
        b.graph.tensors.push(dead);
        b.graph.ops.insert(0, copy_op(0, side));
        b.graph.ops.push(copy_op(side, side + 1));
        let o = b.graph.tensors[side as usize].arena_offset;
        b.graph.tensors[1].arena_offset = o + 8;
        b.graph.tensors[2].arena_offset = o + 8;
    });
    assert_eq!(e, Error::ArenaOverlap { a: 1, b: 4 });
}

#[test]
fn the_same_side_tensor_placed_apart_loads() {
    // The control for the last case above: the copy kept apart, the model loads and
    // still computes the fused CNN's output.
    let mut built = fused_cnn();
    let side = built.graph.tensors.len() as u32;
    let mut copy = built.graph.tensors[0].clone();
    copy.kind = TensorKind::Activation;
    built.graph.tensors.push(copy.clone());
    built.graph.tensors.push(copy);
    built.graph.ops.insert(0, copy_op(0, side));
    built.graph.ops.push(copy_op(side, side + 1));
    built.graph.plan_arena().unwrap();
    let blob = built.blob();
    let model = Model::from_bytes(&blob).unwrap();
    let input = Lcg::new(9).vec_i8(36);
    let mut out = [0i8; 4];
    model
        .run(&mut vec![0u8; model.arena_size()], &input, &mut out)
        .unwrap();
    assert_eq!(out.as_slice(), cnn_expected(&built, &input).as_slice());
}

#[test]
fn fused_shapes_window_and_encoding_are_checked() {
    // The pooled tensor must have the pooled size of the conv's (unstored) output.
    let e = crafted(|b| {
        b.graph.tensors[1].shape = heapless::Vec::from_slice(&[1, 2, 3, 2]).unwrap();
        b.graph.tensors[2].shape = heapless::Vec::from_slice(&[1, 12]).unwrap();
    });
    assert_eq!(e, Error::ShapeMismatch { op: 0 });
    let e = crafted(|b| fused_op(b).pool.stride_w = 0);
    assert_eq!(e, Error::ZeroStride { op: 0 });
    let e = crafted(|b| fused_op(b).pool.filter_h = 0);
    assert_eq!(e, Error::BadParameter { op: 0 });
    let e = crafted(|b| fused_op(b).pool.pad_left = 2);
    assert_eq!(e, Error::BadPadding { op: 0 });
    // A conv stride that changes the conv's size changes the pooled size too.
    let e = crafted(|b| fused_op(b).conv.stride_h = 2);
    assert_eq!(e, Error::ShapeMismatch { op: 0 });
    // The filter bytes must be valid in the encoding the op names.
    let e = crafted(|b| fused_op(b).conv.filter.encoding = Encoding::SparseRel8);
    assert!(matches!(e, Error::SparseRowTooLong { op: 0, .. }), "{e:?}");
    // Filter, bias and requantization lengths as for a conv.
    let e = crafted(|b| fused_op(b).conv.filter.data.len -= 1);
    assert!(
        matches!(e, Error::DataLengthMismatch { op: 0, .. }),
        "{e:?}"
    );
    let e = crafted(|b| fused_op(b).conv.act_max = 128);
    assert!(matches!(e, Error::BadActivationRange { op: 0 }), "{e:?}");
    // A pooled tensor of another rank.
    let e = crafted(|b| {
        b.graph.tensors[1] = tensor(&[1, 18], 0.1, -20, TensorKind::Activation);
    });
    assert_eq!(e, Error::ShapeMismatch { op: 0 });
}

/// Sparse and packed filters fuse too, and run bit-exact with their unfused models.
#[test]
fn sparse_and_packed_filters_fuse_bit_exact() {
    let encodings = [
        Encoding::SparseRel8,
        Encoding::SparseRel4,
        Encoding::Packed4,
        Encoding::Packed2,
        Encoding::Packed1,
    ];
    for encoding in encodings {
        let unfused_built = match encoding {
            Encoding::SparseRel8 | Encoding::SparseRel4 => sparse_cnn(encoding),
            _ => packed_cnn(encoding),
        };
        let mut fused_built = match encoding {
            Encoding::SparseRel8 | Encoding::SparseRel4 => sparse_cnn(encoding),
            _ => packed_cnn(encoding),
        };
        assert_eq!(fused_built.graph.fuse_conv_max_pools(), 1, "{encoding:?}");
        fused_built.graph.plan_arena().unwrap();
        let (ub, fb) = (unfused_built.blob(), fused_built.blob());
        let unfused = Model::from_bytes(&ub).unwrap();
        let fused = Model::from_bytes(&fb).unwrap();
        assert!(fused.arena_size() < unfused.arena_size());
        let mut rng = Lcg::new(5);
        let (mut ua, mut fa) = (
            vec![0u8; unfused.arena_size()],
            vec![0u8; fused.arena_size()],
        );
        for _ in 0..100 {
            let input = rng.vec_i8(36);
            let (mut uo, mut fo) = ([0i8; 4], [0i8; 4]);
            unfused.run(&mut ua, &input, &mut uo).unwrap();
            fused.run(&mut fa, &input, &mut fo).unwrap();
            assert_eq!(fo, uo, "{encoding:?}");
        }
    }
}

/// A one-op model: input `[1, 3, 3, c]` → conv 3×3 (pad 1, `oc` channels, weights
/// in `encoding`) fused with a 2×2 max pool → `[1, 2, 2, oc]`, as a blob.
fn wide_blob(c: u32, encoding: Encoding) -> Vec<u8> {
    let oc = 2u32;
    let weights: Vec<i8> = (0..oc * 9 * c).map(|i| (i % 3) as i8 - 1).collect();
    let mut b = BlobBuilder::new();
    let filter = b.push_weights_as(&weights, oc as usize, encoding).unwrap();
    let requant = b.push_requant(&[(1 << 30, -3)]).unwrap();
    let op = Op::Conv2dMaxPool(Conv2dMaxPool {
        conv: Conv2d {
            input: 0,
            output: 1,
            filter,
            bias: None,
            requant,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            padding: Padding {
                top: 1,
                left: 1,
                bottom: 1,
                right: 1,
            },
            act_min: -128,
            act_max: 127,
        },
        pool: PoolWindow {
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            pad_bottom: 1,
            pad_right: 1,
            ..PoolWindow::default()
        },
    });
    let mut graph = GraphDef {
        tensors: vec![
            tensor(&[1, 3, 3, c], 0.1, 0, TensorKind::Input),
            tensor(&[1, 2, 2, oc], 0.1, 0, TensorKind::Output),
        ],
        ops: vec![op],
        input: 0,
        output: 1,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    b.finish(&graph).unwrap()
}

#[test]
fn sparse_fused_windows_are_capped() {
    // 3·3·56 = 504 values per window: within the cap, sparse or dense.
    Model::from_bytes(&wide_blob(56, Encoding::SparseRel8)).unwrap();
    // 3·3·57 = 513: dense only.
    Model::from_bytes(&wide_blob(57, Encoding::Dense)).unwrap();
    for encoding in [Encoding::SparseRel4, Encoding::Packed4] {
        let e = Model::from_bytes(&wide_blob(57, encoding)).unwrap_err();
        assert_eq!(
            e,
            Error::EncodingNotSupported {
                op: 0,
                encoding: encoding as u32
            }
        );
    }
}

/// Re-export a blob with its conv + max pool pairs fused and the arena re-planned,
/// same weights: `SPRIG_UNFUSED=runs/x/model.sprig SPRIG_FUSED=out.sprig cargo test -p
/// sprig-runtime --features std --test fused -- --ignored fuse_a_blob` (how
/// BENCHMARKS.md compares fused and unfused LeNet-5 on identical weights).
#[test]
#[ignore = "reads and writes files named by the environment"]
fn fuse_a_blob() {
    let input = std::env::var("SPRIG_UNFUSED").unwrap();
    let output = std::env::var("SPRIG_FUSED").unwrap();
    let blob = std::fs::read(input).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut graph = GraphDef {
        tensors: model.tensors().to_vec(),
        ops: model.ops().collect(),
        input: model.graph().input,
        output: model.graph().output,
        arena_size: 0,
    };
    let pairs = graph.fuse_conv_max_pools();
    graph.plan_arena().unwrap();
    let mut builder = BlobBuilder::new();
    builder.push_bytes(model.data()).unwrap();
    let fused_blob = builder.finish(&graph).unwrap();
    let fused = Model::from_bytes(&fused_blob).unwrap();
    println!(
        "{pairs} pairs fused; arena {} B -> {} B",
        model.arena_size(),
        fused.arena_size()
    );
    std::fs::write(output, fused_blob).unwrap();
}

/// A 1×1 max pool with the full int8 range: an op that only copies `input` to `output`.
fn copy_op(input: u32, output: u32) -> Op {
    Op::MaxPool2d(Pool2d {
        input,
        output,
        filter_h: 1,
        filter_w: 1,
        stride_h: 1,
        stride_w: 1,
        padding: Default::default(),
        act_min: -128,
        act_max: 127,
    })
}
