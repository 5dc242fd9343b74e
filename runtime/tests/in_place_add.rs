//! In-place Adds and stream chains that end in an Add (format 2.5, FORMAT.md §4): a
//! residual block `x → conv → conv → Add(x, ·)` runs bit-exact whether its Add writes
//! a tensor of its own, writes over `x`, or ends a streamed chain over `x`; the planner
//! and the validator allow the write over `x` only where no later window reads a row it
//! has overwritten.

mod common;

use common::{bit_flips_refused_or_run, requant, tensor, Lcg};
use sprig_runtime::fixed_point::AddQuant;
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::{Add, Conv2d, Encoding, Error, Model, Op, Padding, TensorKind};

const H: u32 = 7;
const W: u32 = 5;
const C: u32 = 3;

/// A conv's channels `(in, out)`, square kernel, stride and padding.
struct ConvShape {
    channels: (u32, u32),
    kernel: u32,
    stride: u32,
    padding: Padding,
}

/// A conv from tensor `io.0` to `io.1` with random weights and biases, requantized
/// from `scales.0` to `scales.1`.
fn conv_op(
    builder: &mut BlobBuilder,
    rng: &mut Lcg,
    io: (u32, u32),
    shape: ConvShape,
    scales: (f32, f32),
) -> Op {
    let (in_c, out_c) = shape.channels;
    let k = shape.kernel;
    let weights = rng.vec_i8((out_c * k * k * in_c) as usize);
    let bias: Vec<i32> = (0..out_c).map(|_| rng.range(-300, 300)).collect();
    let w_scales: Vec<f32> = (0..out_c).map(|c| 0.004 + 0.001 * (c % 4) as f32).collect();
    let filter = builder
        .push_weights_as(&weights, out_c as usize, Encoding::Dense)
        .unwrap();
    Op::Conv2d(Conv2d {
        input: io.0,
        output: io.1,
        filter,
        bias: Some(builder.push_i32(&bias).unwrap()),
        requant: builder
            .push_requant(&requant(scales.0, &w_scales, scales.1))
            .unwrap(),
        kernel_h: k,
        kernel_w: k,
        stride_h: shape.stride,
        stride_w: shape.stride,
        padding: shape.padding,
        act_min: -128,
        act_max: 127,
    })
}

/// An Add of `input1` and `input2` into `output`, TFLite's parameters for the scales.
fn add_op((input1, input2, output): (u32, u32, u32), (s1, s2, s_y): (f32, f32, f32)) -> Op {
    let q = AddQuant::from_scales(f64::from(s1), f64::from(s2), f64::from(s_y));
    Op::Add(Add {
        input1,
        input2,
        output,
        input1_multiplier: q.input1_multiplier,
        input1_shift: q.input1_shift,
        input2_multiplier: q.input2_multiplier,
        input2_shift: q.input2_shift,
        output_multiplier: q.output_multiplier,
        output_shift: q.output_shift,
        act_min: -128,
        act_max: 127,
    })
}

/// `x [1, 7, 5, 3]` → conv k×k (same padding) → conv 3×3 (same padding) → Add with
/// `x` (as input 1 when `x_first`, else input 2) → output. Returns the graph, planned,
/// and its builder.
fn residual(seed: u64, k: u32, x_first: bool) -> (GraphDef, BlobBuilder) {
    let mut rng = Lcg::new(seed);
    let mut builder = BlobBuilder::new();
    let pad = |k: u32| {
        let p = (k - 1) / 2;
        Padding {
            top: p,
            left: p,
            bottom: p,
            right: p,
        }
    };
    let mut conv = |input: u32, output: u32, k: u32, scales: (f32, f32)| {
        let shape = ConvShape {
            channels: (C, C),
            kernel: k,
            stride: 1,
            padding: pad(k),
        };
        conv_op(&mut builder, &mut rng, (input, output), shape, scales)
    };
    let (s_x, s_a, s_b, s_y) = (0.05, 0.08, 0.11, 0.09);
    let shape = [1, H, W, C];
    let tensors = vec![
        tensor(&shape, s_x, 3, TensorKind::Input),
        tensor(&shape, s_a, -7, TensorKind::Activation),
        tensor(&shape, s_b, 11, TensorKind::Activation),
        tensor(&shape, s_y, -2, TensorKind::Output),
    ];
    let first = conv(0, 1, k, (s_x, s_a));
    let second = conv(1, 2, 3, (s_a, s_b));
    let (input1, input2, s1, s2) = match x_first {
        true => (0, 2, s_x, s_b),
        false => (2, 0, s_b, s_x),
    };
    let add = add_op((input1, input2, 3), (s1, s2, s_y));
    let mut graph = GraphDef {
        tensors,
        ops: vec![first, second, add],
        input: 0,
        output: 3,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    (graph, builder)
}

/// The same graph with the Add's output moved past everything else: no in-place write.
fn apart(graph: &GraphDef) -> GraphDef {
    let mut apart = graph.clone();
    let end = graph.arena_size.next_multiple_of(4);
    apart.tensors[3].arena_offset = end;
    apart.arena_size = end + H * W * C;
    apart
}

fn outputs(graph: &GraphDef, builder: &BlobBuilder, inputs: &[Vec<i8>]) -> Vec<Vec<i8>> {
    let blob = builder.finish(graph).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    inputs
        .iter()
        .map(|x| {
            let mut y = vec![0i8; model.output_len()];
            model.run(&mut arena, x, &mut y).unwrap();
            y
        })
        .collect()
}

#[test]
fn residual_blocks_are_bit_exact_stored_in_place_and_streamed() {
    let mut rng = Lcg::new(40);
    let inputs: Vec<Vec<i8>> = (0..20).map(|_| rng.vec_i8((H * W * C) as usize)).collect();
    for (seed, x_first) in [(1, true), (2, false), (3, true), (4, false)] {
        let (stored, builder) = residual(seed, 3, x_first);
        // The planner writes the Add over one of its inputs (it is the last reader of
        // both): input 1 when it may.
        let over = if x_first { 0 } else { 2 };
        assert_eq!(
            stored.tensors[3].arena_offset,
            stored.tensors[over].arena_offset
        );
        let mut streamed = stored.clone();
        assert_eq!(streamed.stream_rows(), 2, "seed {seed}");
        assert!(matches!(
            streamed.tensors[1].kind,
            TensorKind::Streamed { rows: 3 }
        ));
        assert!(matches!(
            streamed.tensors[2].kind,
            TensorKind::Streamed { rows: 1 }
        ));
        // x and the output share 105 B; the bands hold 3 rows and 1 row of 15 B.
        assert_eq!(stored.arena_size, 108 + 108 + 105); // x|y, a, b (4-aligned starts)
        assert_eq!(streamed.arena_size, 108 + 48 + 15); // x|y, band a, band b
        assert_eq!(
            streamed.tensors[3].arena_offset,
            streamed.tensors[0].arena_offset
        );
        let expected = outputs(&apart(&stored), &builder, &inputs);
        let distinct: std::collections::BTreeSet<_> = expected.iter().collect();
        assert!(distinct.len() > 10, "degenerate outputs");
        assert_eq!(outputs(&stored, &builder, &inputs), expected, "seed {seed}");
        // Over input 2 instead (the kernel then exchanges the inputs' roles).
        let mut over_second = stored.clone();
        over_second.tensors[3].arena_offset = stored.tensors[2 - over].arena_offset;
        assert_eq!(
            outputs(&over_second, &builder, &inputs),
            expected,
            "seed {seed}"
        );
        assert_eq!(
            outputs(&streamed, &builder, &inputs),
            expected,
            "seed {seed}"
        );
    }
}

/// A 5×5 first conv reads two rows above the one being produced: once the Add has
/// written output row `r` over `x`, the next row of the first conv still reads `x`'s
/// rows `r − 1` and `r`. So the streamed Add must not write over `x`.
#[test]
fn a_chain_that_reads_behind_the_add_gets_no_in_place_write() {
    let (stored, builder) = residual(5, 5, true);
    // Streaming the 5×5 conv's output would cost the write over `x`: the planner
    // streams only the second conv's (x|y 108 + a 108 + band b 15 B).
    let mut planned = stored.clone();
    assert_eq!(planned.stream_rows(), 1);
    assert!(planned.tensors[1].streamed_rows().is_none());
    assert_eq!(planned.arena_size, 108 + 108 + 15);
    assert_eq!(
        planned.tensors[3].arena_offset,
        planned.tensors[0].arena_offset
    );
    // Both streamed by hand: the planner keeps the Add's output apart from `x`.
    let mut streamed = planned.clone();
    streamed.tensors[1].kind = TensorKind::Streamed { rows: 5 };
    streamed.plan_arena().unwrap();
    assert_ne!(
        streamed.tensors[3].arena_offset,
        streamed.tensors[0].arena_offset
    );
    let mut rng = Lcg::new(41);
    let inputs: Vec<Vec<i8>> = (0..10).map(|_| rng.vec_i8((H * W * C) as usize)).collect();
    let expected = outputs(&apart(&stored), &builder, &inputs);
    assert_eq!(outputs(&planned, &builder, &inputs), expected);
    assert_eq!(outputs(&streamed, &builder, &inputs), expected);
    // Forced over `x` anyway, the blob is refused.
    let mut forced = streamed.clone();
    forced.tensors[3].arena_offset = forced.tensors[0].arena_offset;
    let blob = builder.finish(&forced).unwrap();
    assert_eq!(
        Model::from_bytes(&blob).unwrap_err(),
        Error::ArenaOverlap { a: 0, b: 3 }
    );
}

/// An Add whose input is read again later may not write over it.
#[test]
fn an_input_read_after_the_add_is_not_written_over() {
    let (mut graph, builder) = residual(6, 3, true);
    // A fourth op reads x after the Add: x's last reader is no longer the Add.
    let tail = match graph.ops[1] {
        Op::Conv2d(c) => Op::Conv2d(Conv2d {
            input: 0,
            output: 4,
            ..c
        }),
        _ => unreachable!(),
    };
    graph.ops.push(tail);
    graph.tensors[3].kind = TensorKind::Activation;
    graph
        .tensors
        .push(tensor(&[1, H, W, C], 0.1, 0, TensorKind::Output));
    graph.output = 4;
    graph.plan_arena().unwrap();
    assert_ne!(graph.tensors[3].arena_offset, graph.tensors[0].arena_offset);
    let mut forced = graph.clone();
    forced.tensors[3].arena_offset = forced.tensors[0].arena_offset;
    let blob = builder.finish(&forced).unwrap();
    assert!(matches!(
        Model::from_bytes(&blob).unwrap_err(),
        Error::ArenaOverlap { .. }
    ));
}

/// Every bit flip of a streamed residual block with its Add in place (re-sealed) is
/// refused or loads and runs: the in-place and stream checks leave nothing for `run`
/// to fail on.
#[test]
fn every_bit_flip_of_a_streamed_in_place_block_is_refused_or_runs() {
    let (mut graph, builder) = residual(7, 3, false);
    assert_eq!(graph.stream_rows(), 2);
    let blob = builder.finish(&graph).unwrap();
    let input: Vec<i8> = (0..H * W * C).map(|i| (i * 3) as i8).collect();
    let loaded = bit_flips_refused_or_run(&blob, &input);
    assert!(
        loaded > 100,
        "too few flips load ({loaded}) to exercise run"
    );
}

/// A downsampling residual block as TFLite writes ResNet's: `x [1, 8, 6, 4]` → conv
/// 3×3 stride 2 → conv 3×3 → (shortcut: conv 1×1 stride 2 of `x`) → Add(shortcut,
/// second conv). Streaming the first conv's output alone, or the shortcut's alone,
/// leaves `x` and two whole outputs live at the other conv; `stream_rows` finds the
/// pair, and the Add then writes over the second conv's output.
#[test]
fn a_downsampling_block_streams_a_pair_that_pays_only_together() {
    let mut rng = Lcg::new(8);
    let mut builder = BlobBuilder::new();
    let same = Padding {
        top: 1,
        left: 1,
        bottom: 1,
        right: 1,
    };
    let down = Padding {
        top: 0,
        left: 0,
        bottom: 1,
        right: 1,
    };
    let shape = |channels, kernel, stride, padding| ConvShape {
        channels,
        kernel,
        stride,
        padding,
    };
    let (s_x, s_a, s_b, s_c, s_y) = (0.05, 0.07, 0.1, 0.06, 0.12);
    let ops = vec![
        conv_op(
            &mut builder,
            &mut rng,
            (0, 1),
            shape((4, 8), 3, 2, down),
            (s_x, s_a),
        ),
        conv_op(
            &mut builder,
            &mut rng,
            (1, 2),
            shape((8, 8), 3, 1, same),
            (s_a, s_b),
        ),
        conv_op(
            &mut builder,
            &mut rng,
            (0, 3),
            shape((4, 8), 1, 2, Padding::default()),
            (s_x, s_c),
        ),
        add_op((3, 2, 4), (s_c, s_b, s_y)),
    ];
    let tensors = vec![
        tensor(&[1, 8, 6, 4], s_x, 3, TensorKind::Input),
        tensor(&[1, 4, 3, 8], s_a, -7, TensorKind::Activation),
        tensor(&[1, 4, 3, 8], s_b, 11, TensorKind::Activation),
        tensor(&[1, 4, 3, 8], s_c, -4, TensorKind::Activation),
        tensor(&[1, 4, 3, 8], s_y, -2, TensorKind::Output),
    ];
    let mut stored = GraphDef {
        tensors,
        ops,
        input: 0,
        output: 4,
        arena_size: 0,
    };
    // x 192 B, each conv output 96 B: x, a and b live at the second conv, x, b and c
    // at the shortcut.
    assert_eq!(stored.plan_arena().unwrap(), 192 + 96 + 96);
    for alone in [1, 3] {
        let mut one = stored.clone();
        let rows = if alone == 1 { 3 } else { 1 };
        one.tensors[alone].kind = TensorKind::Streamed { rows };
        assert_eq!(
            one.plan_arena().unwrap(),
            192 + 96 + 96,
            "tensor {alone} alone"
        );
    }
    let mut streamed = stored.clone();
    assert_eq!(streamed.stream_rows(), 2);
    assert!(matches!(
        streamed.tensors[1].kind,
        TensorKind::Streamed { rows: 3 }
    ));
    // The shortcut's band grows into the room its step has (x 192 + b 96 + 24 B a
    // row, within 360 B), to 3 rows: more rows per kernel call.
    assert!(matches!(
        streamed.tensors[3].kind,
        TensorKind::Streamed { rows: 3 }
    ));
    // x, a's 3-row band (72 B) and b, which the Add's output then takes.
    assert_eq!(streamed.arena_size, 192 + 72 + 96);
    assert_eq!(
        streamed.tensors[4].arena_offset,
        streamed.tensors[2].arena_offset
    );
    let inputs: Vec<Vec<i8>> = (0..20).map(|_| rng.vec_i8(8 * 6 * 4)).collect();
    let expected = outputs(&stored, &builder, &inputs);
    let distinct: std::collections::BTreeSet<_> = expected.iter().collect();
    assert!(distinct.len() > 10, "degenerate outputs");
    assert_eq!(outputs(&streamed, &builder, &inputs), expected);
}
