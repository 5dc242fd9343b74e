//! `cargo xtask bench sparse`: what pruning buys on the chip. lenet5 at several Level
//! sparsities (QAT int8 after pruning) and L1-filter 50 % with speedup: deployed
//! accuracy, `model.sprig` bytes with each layer's encoding, and QEMU instructions per
//! inference on the Cortex-M4, Cortex-M0 and RISC-V boards, every vector bit-exact with
//! the host (a mismatch fails the bench).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use sprig_board_build::Kernels;
use sprig_compressor::compress::Summary;
use sprig_compressor::export::packed::{self, sprig_runtime::Model};

use super::prune::Setup;
use super::Args;
use crate::boards::{self, Board};
use crate::firmware::Input;
use crate::sim::simulate;

/// Level sparsities of the table (0: the dense model, quantized the same way).
const SPARSITIES: [f64; 6] = [0.0, 0.5, 0.7, 0.8, 0.9, 0.95];
/// The boards measured: one per instruction set.
const BOARDS: [&str; 3] = ["qemu-mps2-an386", "qemu-microbit", "qemu-riscv32-virt"];
/// Test vectors embedded per firmware (instructions are a mean over them).
const VECTORS: usize = 20;
const RUNS: &str = "runs/bench-sparse";

fn qat8() -> Value {
    json!({
        "algorithm": "QAT_Quantizer",
        "config_list": [{
            "op_types": ["Conv2d", "Linear"],
            "quant_types": ["input", "weight", "output"],
            "quant_bits": 8
        }]
    })
}

/// One row: a name, its plan.
fn rows() -> Vec<(String, Value)> {
    let mut rows: Vec<(String, Value)> = SPARSITIES
        .iter()
        .map(|&s| {
            let name = format!("level {:.0} %", 100.0 * s);
            let plan = if s == 0.0 {
                json!({ "quantizer": qat8() })
            } else {
                json!({
                    "pruner": {
                        "algorithm": "LevelPruner",
                        "config_list": [{ "op_types": ["Conv2d", "Linear"], "sparsity": s }]
                    },
                    "quantizer": qat8()
                })
            };
            (name, plan)
        })
        .collect();
    rows.push((
        "L1 filter 50 % + speedup".into(),
        json!({
            "pruner": {
                "algorithm": "L1FilterPruner",
                "config_list": [{ "op_types": ["Conv2d"], "sparsity": 0.5 }]
            },
            "quantizer": qat8()
        }),
    ));
    rows
}

/// What one row measured.
struct Measured {
    accuracy: Option<f32>,
    blob: usize,
    weights: usize,
    encodings: String,
    /// Instructions per inference, per board of [`BOARDS`].
    instructions: Vec<f64>,
}

fn measure(summary: &Summary, dir: &Path, boards: &[Board]) -> anyhow::Result<Measured> {
    let path = dir.join(packed::PACKED_FILE);
    let blob = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let model = Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: sprig-runtime refuses it: {e}", path.display()))?;
    let layers = model
        .layer_weights()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let encodings = layers
        .iter()
        .map(|l| format!("{} {:.0} %", l.encoding.name(), 100.0 * l.density()))
        .collect::<Vec<_>>()
        .join(", ");
    let weights = summary.layers.iter().map(|l| l.weights).sum();
    let input = Input {
        artifacts: dir.to_path_buf(),
        max_vectors: Some(VECTORS),
    };
    let mut instructions = Vec::new();
    for board in boards {
        let r = simulate(board, &input, Kernels::OfModel, Duration::from_secs(600))
            .with_context(|| format!("{board} on {}", dir.display()))?;
        eprintln!(
            "bench sparse: {board}: {:.0} {} per inference, {} vectors bit-exact",
            r.per_inference, r.unit, r.vectors
        );
        instructions.push(r.per_inference);
    }
    Ok(Measured {
        accuracy: summary.deployed_accuracy,
        blob: blob.len(),
        weights,
        encodings,
        instructions,
    })
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let boards: Vec<Board> = BOARDS
        .iter()
        .map(|b| boards::find(b))
        .collect::<anyhow::Result<_>>()?;
    let setup = Setup {
        data: args.data.as_deref(),
        epochs: args.epochs,
        ft_epochs: args.ft_epochs,
        qat_epochs: args.ft_epochs,
        train_limit: args.train_limit,
        batch_size: args.batch_size,
    };
    let mut measured = Vec::new();
    for (i, (name, plan)) in rows().into_iter().enumerate() {
        let dir = PathBuf::from(RUNS).join(format!("row{i}"));
        eprintln!("bench sparse: {name} in {}", dir.display());
        let summary = setup
            .run(&args.model, &dir, &plan)
            .with_context(|| format!("compressing {name}"))?;
        let m = measure(&summary, &dir, &boards)?;
        measured.push((name, m));
    }
    let md = render(args, &measured);
    println!("{md}");
    super::append_report(&args.output, &md)
}

fn render(args: &Args, rows: &[(String, Measured)]) -> String {
    let mut md = String::new();
    let dense = rows.first().map(|(_, m)| m);
    let _ = writeln!(
        md,
        "\n## Sparse deployment: lenet5 blob bytes and QEMU instructions per inference\n\n\
         `cargo xtask bench sparse --epochs {} --ft-epochs {}{}` · {} · {}\n\n\
         Level pruning (every Conv2d and Linear) then QAT int8 ({} epochs each after the \
         {}-epoch float baseline); each layer stored in the smallest of dense, sparse-rel8 and \
         sparse-rel4. Instructions: mean over {VECTORS} test vectors, every output \
         bit-exact with the host; ratios against the dense row of the same run.\n",
        args.epochs,
        args.ft_epochs,
        args.train_limit
            .map_or(String::new(), |n| format!(" --train-limit {n}")),
        super::machine(),
        super::today(),
        args.ft_epochs,
        args.epochs,
    );
    let _ = writeln!(
        md,
        "| model | deployed top-1 | weights | model.sprig B | × dense | M4 instr | × dense | M0 instr | × dense | RISC-V instr | × dense | layers (encoding, density) |\n\
         |---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"
    );
    for (name, m) in rows {
        let ratio = |a: f64, b: Option<f64>| b.map_or("–".into(), |b| format!("{:.3}", a / b));
        let mut line = format!(
            "| {name} | {} | {} | {} | {} |",
            m.accuracy
                .map_or("–".into(), |a| format!("{:.2} %", 100.0 * a)),
            m.weights,
            m.blob,
            ratio(m.blob as f64, dense.map(|d| d.blob as f64)),
        );
        for (i, n) in m.instructions.iter().enumerate() {
            let base = dense.and_then(|d| d.instructions.get(i).copied());
            line += &format!(" {n:.0} | {} |", ratio(*n, base));
        }
        line += &format!(" {} |", m.encodings);
        let _ = writeln!(md, "{line}");
    }
    md
}
