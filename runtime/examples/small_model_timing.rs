//! Nanosecond timing of one small model's fixed costs (`runs/conformance/sine` by
//! default): `Model::run` as a whole, `run_in_arena` without the output copy, and each
//! fully connected op's kernel called directly with its arguments prepared once, so the
//! difference is the run loop's and the dispatch's share. Medians of rounds; pin it to
//! one core (`taskset -c 1`) and repeat, the figures are a few ns apart.
//!
//! `cargo run --release -p sprig-runtime --features std --example small_model_timing [DIR]`
//!
//! With a second argument `N`, it only runs the model `N` times (no timing), for
//! counting instructions: `valgrind --tool=callgrind … small_model_timing DIR 100000`.

use std::hint::black_box;
use std::time::Instant;

use sprig_runtime::kernels::fully_connected::{fully_connected, FcShape};
use sprig_runtime::kernels::OutputStage;
use sprig_runtime::vectors::Vectors;
use sprig_runtime::{DataRef, Model, Op};

/// Median ns per call of `f` over 15 rounds of about 20 ms each.
fn ns(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    let mut calls = 0u64;
    while t.elapsed().as_secs_f64() < 0.02 {
        for _ in 0..100 {
            f();
        }
        calls += 100;
    }
    let mut rounds: Vec<f64> = (0..15)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                f();
            }
            t.elapsed().as_secs_f64() * 1e9 / calls as f64
        })
        .collect();
    rounds.sort_by(f64::total_cmp);
    rounds[rounds.len() / 2]
}

fn bytes(data: &[u8], r: DataRef) -> &[u8] {
    &data[r.offset as usize..(r.offset + r.len) as usize]
}

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "runs/conformance/sine".into());
    let count: Option<usize> = std::env::args().nth(2).map(|n| n.parse().unwrap());
    let dir = std::path::Path::new(&dir);
    let blob = std::fs::read(dir.join("model.sprig")).unwrap();
    let vec_bytes = std::fs::read(dir.join("vectors.bin")).unwrap();
    let model = Model::from_bytes(&blob).unwrap();
    let vectors = Vectors::parse(&vec_bytes).unwrap();
    let inputs: Vec<&[i8]> = vectors.iter().map(|v| v.input).collect();
    let mut arena = vec![0u8; model.arena_size()];
    let mut out = vec![0i8; model.output_len()];
    for v in vectors.iter() {
        model.run(&mut arena, v.input, &mut out).unwrap();
        assert_eq!(out, v.expected, "output differs from the stored one");
    }
    let mut i = 0;
    let mut next = || {
        i = (i + 1) % inputs.len();
        inputs[i]
    };
    if let Some(count) = count {
        for _ in 0..count {
            model.run(&mut arena, black_box(next()), &mut out).unwrap();
            black_box(&out);
        }
        return;
    }
    let run = ns(|| {
        model.run(&mut arena, black_box(next()), &mut out).unwrap();
        black_box(&out);
    });
    let run_in_arena = ns(|| {
        black_box(model.run_in_arena(&mut arena, black_box(next())).unwrap());
    });
    println!("Model::run          {run:7.1} ns");
    println!("run_in_arena        {run_in_arena:7.1} ns");

    let data = model.data();
    let tensors = model.tensors();
    let mut kernels = 0.0;
    for (k, op) in model.ops().enumerate() {
        let Op::FullyConnected(p) = op else { continue };
        let (x, y) = (&tensors[p.input as usize], &tensors[p.output as usize]);
        let shape = FcShape {
            batch: 1,
            in_features: *x.shape.last().unwrap() as usize,
            out_features: *y.shape.last().unwrap() as usize,
        };
        let stage = OutputStage {
            bias: p.bias.map(|b| bytes(data, b)),
            requant: bytes(data, p.requant),
            channels: shape.out_features,
            output_offset: y.zero_point,
            act_min: p.act_min,
            act_max: p.act_max,
        };
        let weights: Vec<i8> = bytes(data, p.weights.data)
            .iter()
            .map(|&b| b as i8)
            .collect();
        let input: Vec<i8> = (0..shape.in_features).map(|i| (i * 37) as i8).collect();
        let mut output = vec![0i8; shape.out_features];
        let offset = x.zero_point.wrapping_neg();
        let t = ns(|| {
            fully_connected(
                black_box(&shape),
                offset,
                &stage,
                &weights,
                black_box(&input),
                &mut output,
            )
            .unwrap();
            black_box(&output);
        });
        kernels += t;
        println!(
            "op {k} fc {:3}→{:<3}     {t:7.1} ns",
            shape.in_features, shape.out_features
        );
    }
    println!("kernels together    {kernels:7.1} ns");
    println!(
        "run loop + dispatch {:7.1} ns (run_in_arena − kernels)",
        run_in_arena - kernels
    );
}
