//! `cargo xtask bench binary`: one binary conv layer (XNOR + popcount) against the
//! int8 conv of the same shape, in QEMU instructions per inference on every simulated
//! board. Each layer is a one-op model with random weights and inputs, written as a run
//! folder (`model.sprig` + `vectors.bin`, expected outputs from the host runtime) under
//! `runs/bench-binary/`, so the boards check it bit-exact as they check any model.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use sprig_board_build::Kernels;
use sprig_compressor::export::packed::sprig_runtime::{
    fixed_point::quantize_multiplier, format::write::BlobBuilder, format::write::GraphDef,
    vectors::write_vectors, BinaryConv2d, Conv2d, Encoding, Model, Op, Padding, Tensor, TensorKind,
    Weights,
};

use crate::boards::{self, Board};
use crate::firmware::Input;
use crate::sim::simulate;

/// Test vectors per model (instructions are a mean over them).
const VECTORS: usize = 4;

/// A conv layer's shape: input `h × w × c`, `k × k` kernel, padding `k / 2`, `oc`
/// output channels.
#[derive(Debug, Clone, Copy)]
struct Shape {
    name: &'static str,
    h: u32,
    w: u32,
    c: u32,
    k: u32,
    oc: u32,
}

const SHAPES: [Shape; 2] = [
    // LeNet-5's conv2 (valid padding here too: k / 2 = 2 pads it to "same").
    Shape {
        name: "14x14x6 5x5 16",
        h: 14,
        w: 14,
        c: 6,
        k: 5,
        oc: 16,
    },
    // A typical inner layer of a binarized CNN.
    Shape {
        name: "8x8x64 3x3 64",
        h: 8,
        w: 8,
        c: 64,
        k: 3,
        oc: 64,
    },
];

impl Shape {
    fn macs(&self) -> u64 {
        u64::from(self.h * self.w * self.oc) * u64::from(self.k * self.k * self.c)
    }
}

/// xorshift64: deterministic weights and inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn i8(&mut self) -> i8 {
        self.next() as i8
    }
    fn sign(&mut self) -> i8 {
        if self.next() & 1 == 1 {
            1
        } else {
            -1
        }
    }
}

fn tensor(shape: &[u32], scale: f32, zero_point: i32, kind: TensorKind) -> Tensor {
    Tensor {
        shape: shape.iter().copied().collect(),
        scale,
        zero_point,
        arena_offset: 0,
        kind,
    }
}

/// The one-op model of `shape`, binary or int8.
fn layer(s: &Shape, binary: bool, rng: &mut Rng) -> anyhow::Result<Vec<u8>> {
    let weights = (s.oc * s.k * s.k * s.c) as usize;
    let p = s.k / 2;
    let padding = Padding {
        top: p,
        left: p,
        bottom: p,
        right: p,
    };
    let mut b = BlobBuilder::new();
    let input = tensor(&[1, s.h, s.w, s.c], 0.02, 0, TensorKind::Input);
    let (op, out) = if binary {
        let w: Vec<i8> = (0..weights).map(|_| rng.sign()).collect();
        let filter = b.push_weights_as(&w, s.oc as usize, Encoding::Packed1)?;
        let t: Vec<i32> = (0..s.oc).map(|_| (rng.next() % 9) as i32 - 4).collect();
        let op = Op::BinaryConv2d(BinaryConv2d {
            input: 0,
            output: 1,
            filter,
            thresholds: b.push_i32(&t)?,
            kernel_h: s.k,
            kernel_w: s.k,
            stride_h: 1,
            stride_w: 1,
            padding,
        });
        (op, tensor(&[1, s.h, s.w, s.oc], 1.0, 0, TensorKind::Output))
    } else {
        let w: Vec<i8> = (0..weights).map(|_| rng.i8()).collect();
        let filter = Weights::dense(b.push_i8(&w)?);
        let bias: Vec<i32> = (0..s.oc)
            .map(|_| (rng.next() % 2001) as i32 - 1000)
            .collect();
        let m = quantize_multiplier(0.02 * 0.01 / 0.5);
        let op = Op::Conv2d(Conv2d {
            input: 0,
            output: 1,
            filter,
            bias: Some(b.push_i32(&bias)?),
            requant: b.push_requant(&vec![m; s.oc as usize])?,
            kernel_h: s.k,
            kernel_w: s.k,
            stride_h: 1,
            stride_w: 1,
            padding,
            act_min: -128,
            act_max: 127,
        });
        (op, tensor(&[1, s.h, s.w, s.oc], 0.5, 0, TensorKind::Output))
    };
    let mut graph = GraphDef {
        tensors: vec![input, out],
        ops: vec![op],
        input: 0,
        output: 1,
        arena_size: 0,
    };
    graph.plan_arena()?;
    Ok(b.finish(&graph)?)
}

/// Writes `blob` and its vectors (outputs from the host runtime) to `dir`.
fn write_run(dir: &Path, blob: &[u8], rng: &mut Rng) -> anyhow::Result<()> {
    let model = Model::from_bytes(blob).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut arena = vec![0u8; model.arena_size()];
    let mut records = Vec::new();
    for _ in 0..VECTORS {
        // ±1-ish inputs around the zero point, as a binarized layer receives them.
        let input: Vec<i8> = (0..model.input_len()).map(|_| rng.i8()).collect();
        let mut out = vec![0i8; model.output_len()];
        model
            .run(&mut arena, &input, &mut out)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        records.push((0u8, input, out));
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("model.sprig"), blob)?;
    let vectors = write_vectors(model.input_len(), model.output_len(), &records)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(dir.join("vectors.bin"), vectors)?;
    Ok(())
}

fn instructions(board: &Board, dir: &Path) -> anyhow::Result<f64> {
    let input = Input {
        artifacts: dir.to_path_buf(),
        max_vectors: Some(VECTORS),
    };
    let r = simulate(board, &input, Kernels::OfModel, Duration::from_secs(300))
        .with_context(|| format!("{board} on {}", dir.display()))?;
    Ok(r.per_inference)
}

pub fn run(output: &Path) -> anyhow::Result<()> {
    let boards = boards::simulated()?;
    let root = PathBuf::from("runs/bench-binary");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::new();
    for s in SHAPES {
        let slug = s.name.replace(' ', "-");
        let int8_dir = root.join(format!("{slug}-int8"));
        let binary_dir = root.join(format!("{slug}-binary"));
        write_run(&int8_dir, &layer(&s, false, &mut rng)?, &mut rng)?;
        write_run(&binary_dir, &layer(&s, true, &mut rng)?, &mut rng)?;
        for board in &boards {
            let int8 = instructions(board, &int8_dir)?;
            let binary = instructions(board, &binary_dir)?;
            eprintln!(
                "bench binary: {board}, {}: int8 {int8:.0}, binary {binary:.0} ({:.1}×)",
                s.name,
                int8 / binary
            );
            rows.push(format!(
                "| {} | {board} | {} | {int8:.0} | {binary:.0} | {:.1}× | {:.2} |",
                s.name,
                s.macs(),
                int8 / binary,
                binary / s.macs() as f64
            ));
        }
    }
    let table = format!(
        "\n## Binary conv vs int8 conv: QEMU instructions per inference\n\n\
         `cargo xtask bench binary` · {} · {}\n\n\
         One conv layer (stride 1, \"same\" padding), random weights and inputs, as a \
         one-op model; every board bit-exact with the host runtime.\n\n\
         | layer (input, kernel, out channels) | board | MACs | int8 conv | binary conv | \
         speedup | binary instr / MAC |\n|---|---|---:|---:|---:|---:|---:|\n{}\n",
        super::machine(),
        super::today(),
        rows.join("\n")
    );
    println!("{table}");
    super::append_report(output, &table)
}
