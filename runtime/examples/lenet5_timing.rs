//! Host timing of an int8 LeNet-5-style model (random weights; 28×28×1 → conv 5×5×6
//! → max pool → conv 5×5×16 → max pool → FC 256→120→84→10, valid padding):
//! prints blob bytes, arena bytes and µs per inference on one thread.
//!
//! `cargo run --release -p sprig-runtime --features std --example lenet5_timing`

use std::time::Instant;

use sprig_runtime::fixed_point::quantize_multiplier;
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::{Conv2d, DataRef, FullyConnected, Model, Op, Padding, Pool2d, Reshape};
use sprig_runtime::{Tensor, TensorKind, Weights};

struct Rng(u64);

impl Rng {
    fn i8(&mut self) -> i8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 56) as u8 as i8
    }
}

fn tensor(shape: &[u32], kind: TensorKind) -> Tensor {
    Tensor {
        shape: heapless::Vec::from_slice(shape).expect("rank ≤ 4"),
        scale: 0.05,
        zero_point: -10,
        arena_offset: 0,
        kind,
    }
}

fn layer(
    b: &mut BlobBuilder,
    rng: &mut Rng,
    weights: usize,
    channels: usize,
) -> (Weights, DataRef, DataRef) {
    let w: Vec<i8> = (0..weights).map(|_| rng.i8()).collect();
    let bias: Vec<i32> = (0..channels as i32).map(|c| c * 37 - 100).collect();
    let rq = vec![quantize_multiplier(0.05 * 0.004 / 0.05); channels];
    (
        Weights::dense(b.push_i8(&w).unwrap()),
        b.push_i32(&bias).unwrap(),
        b.push_requant(&rq).unwrap(),
    )
}

fn main() {
    let mut rng = Rng(42);
    let mut b = BlobBuilder::new();
    let conv = |input, output, (filter, bias, requant): (Weights, DataRef, DataRef)| {
        Op::Conv2d(Conv2d {
            input,
            output,
            filter,
            bias: Some(bias),
            requant,
            kernel_h: 5,
            kernel_w: 5,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::default(),
            act_min: -10,
            act_max: 127,
        })
    };
    let pool = |input, output| {
        Op::MaxPool2d(Pool2d {
            input,
            output,
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            padding: Padding::default(),
            act_min: -128,
            act_max: 127,
        })
    };
    let fc = |input, output, (weights, bias, requant): (Weights, DataRef, DataRef), relu: bool| {
        Op::FullyConnected(FullyConnected {
            input,
            output,
            weights,
            bias: Some(bias),
            requant,
            act_min: if relu { -10 } else { -128 },
            act_max: 127,
        })
    };
    let c1 = layer(&mut b, &mut rng, 6 * 25, 6);
    let c2 = layer(&mut b, &mut rng, 16 * 25 * 6, 16);
    let f1 = layer(&mut b, &mut rng, 120 * 256, 120);
    let f2 = layer(&mut b, &mut rng, 84 * 120, 84);
    let f3 = layer(&mut b, &mut rng, 10 * 84, 10);
    let weight_bytes = 6 * 25 + 16 * 150 + 120 * 256 + 84 * 120 + 10 * 84;
    let bias_bytes = 4 * (6 + 16 + 120 + 84 + 10);
    let a = TensorKind::Activation;
    let mut graph = GraphDef {
        tensors: vec![
            tensor(&[1, 28, 28, 1], TensorKind::Input),
            tensor(&[1, 24, 24, 6], a),
            tensor(&[1, 12, 12, 6], a),
            tensor(&[1, 8, 8, 16], a),
            tensor(&[1, 4, 4, 16], a),
            tensor(&[1, 256], a),
            tensor(&[1, 120], a),
            tensor(&[1, 84], a),
            tensor(&[1, 10], TensorKind::Output),
        ],
        ops: vec![
            conv(0, 1, c1),
            pool(1, 2),
            conv(2, 3, c2),
            pool(3, 4),
            Op::Reshape(Reshape {
                input: 4,
                output: 5,
            }),
            fc(5, 6, f1, true),
            fc(6, 7, f2, true),
            fc(7, 8, f3, false),
        ],
        input: 0,
        output: 8,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    let blob = b.finish(&graph).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let input: Vec<i8> = (0..784).map(|_| rng.i8()).collect();
    let mut out = [0i8; 10];
    for _ in 0..200 {
        model.run(&mut arena, &input, &mut out).unwrap();
    }
    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        model
            .run(&mut arena, std::hint::black_box(&input), &mut out)
            .unwrap();
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "blob {} bytes ({:.4} x int8 weights + int32 biases = {}), arena {} bytes, {us:.1} us/inference",
        blob.len(),
        blob.len() as f64 / (weight_bytes + bias_bytes) as f64,
        weight_bytes + bias_bytes,
        model.arena_size(),
    );
}
