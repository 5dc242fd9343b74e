//! `cargo xtask bench runtime`: a compress run's `model.sprig` on the host, through
//! `sprig-runtime` on one thread: µs per inference (median of several rounds), blob and
//! arena bytes, and the blob's overhead over its int8 weights and int32 biases; checked
//! first against the run's `vectors.bin` (every output bit-exact).

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use sprig_compressor::export::packed::sprig_runtime::vectors::Vectors;
use sprig_compressor::export::packed::sprig_runtime::{Model, Op};
use sprig_compressor::export::packed::{PACKED_FILE, VECTORS_FILE};

/// Issue 3's targets for lenet5.
const TARGET_OVERHEAD: f64 = 1.03;
const TARGET_ARENA: usize = 5_600;
const TARGET_US: f64 = 120.0;

/// What the blob stores, by kind.
struct Contents {
    weight_bytes: usize,
    bias_bytes: usize,
}

fn contents(model: &Model) -> Contents {
    let (mut weight_bytes, mut bias_bytes) = (0usize, 0usize);
    for op in model.ops() {
        let (weights, bias) = match op {
            Op::Conv2d(p) => (p.filter, p.bias),
            Op::Conv2dMaxPool(p) => (p.conv.filter, p.conv.bias),
            Op::DepthwiseConv2d(p) => (p.filter, p.bias),
            Op::FullyConnected(p) => (p.weights, p.bias),
            _ => continue,
        };
        weight_bytes += weights.data.len as usize;
        bias_bytes += bias.map_or(0, |b| b.len as usize);
    }
    Contents {
        weight_bytes,
        bias_bytes,
    }
}

fn read(path: &Path, artifacts: &Path) -> anyhow::Result<Vec<u8>> {
    if !path.is_file() {
        bail!(
            "{} not found; make it first with `cargo xtask compress --out {}` (or pass \
             --artifacts with the folder of a compress run)",
            path.display(),
            artifacts.display()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(
    artifacts: &Path,
    rounds: usize,
    iterations: usize,
    output: &Path,
) -> anyhow::Result<()> {
    if rounds == 0 || iterations == 0 {
        bail!("--rounds and --iterations must be at least 1");
    }
    let blob_path = artifacts.join(PACKED_FILE);
    let vectors_path = artifacts.join(VECTORS_FILE);
    let blob = read(&blob_path, artifacts)?;
    let vector_bytes = read(&vectors_path, artifacts)?;
    let model = Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: sprig-runtime refuses it: {e}", blob_path.display()))?;
    let vectors = Vectors::parse(&vector_bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", vectors_path.display()))?;
    if vectors.is_empty()
        || vectors.input_len() != model.input_len()
        || vectors.output_len() != model.output_len()
    {
        bail!(
            "{} ({} vectors of {} → {}) does not fit {} ({} → {}); rerun the compress run",
            vectors_path.display(),
            vectors.len(),
            vectors.input_len(),
            vectors.output_len(),
            blob_path.display(),
            model.input_len(),
            model.output_len()
        );
    }
    let model_name = std::fs::read(artifacts.join("summary.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["model"].as_str().map(String::from))
        .unwrap_or_else(|| "model".into());

    // Bit-exact replay first: time only a model that computes what the host recorded.
    let mut arena = vec![0u8; model.arena_size()];
    let mut out = vec![0i8; model.output_len()];
    let inputs: Vec<&[i8]> = vectors.iter().map(|v| v.input).collect();
    for (i, v) in vectors.iter().enumerate() {
        model
            .run(&mut arena, v.input, &mut out)
            .map_err(|e| anyhow::anyhow!("vector {i}: {e}"))?;
        if out != v.expected {
            bail!(
                "vector {i}: output {out:?} differs from the recorded {:?}; {} and {} are \
                 from different runs or the runtime changed",
                v.expected,
                blob_path.display(),
                vectors_path.display()
            );
        }
    }

    // Timing: one warm-up round, then `rounds` rounds of `iterations` inferences
    // cycling through the vectors; the median round.
    let mut time_round = || -> anyhow::Result<f64> {
        let started = Instant::now();
        for k in 0..iterations {
            let input = inputs[k % inputs.len()];
            model
                .run(&mut arena, black_box(input), &mut out)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            black_box(&out);
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / iterations as f64)
    };
    time_round()?;
    let per_round = (0..rounds)
        .map(|_| time_round())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    let us = median(per_round.clone());
    let (fastest, slowest) = per_round
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));

    let c = contents(&model);
    let payload = c.weight_bytes + c.bias_bytes;
    let ratio = blob.len() as f64 / payload.max(1) as f64;
    let arena_bytes = model.arena_size();
    let mark = |ok: bool| if ok { "yes" } else { "**no**" };
    println!(
        "{model_name}: {us:.1} µs/inference (median of {rounds} × {iterations}; {fastest:.1}–{slowest:.1}), \
         blob {} B = {ratio:.4} × (int8 weights {} B + int32 biases {} B), arena {arena_bytes} B; \
         {} vectors bit-exact",
        blob.len(),
        c.weight_bytes,
        c.bias_bytes,
        vectors.len()
    );

    let command = format!(
        "cargo xtask bench runtime --artifacts {}{}",
        artifacts.display(),
        if (rounds, iterations) == (7, 2000) {
            String::new()
        } else {
            format!(" --rounds {rounds} --iterations {iterations}")
        }
    );
    let mut md = String::new();
    md.push_str(&format!(
        "\n## Runtime, {model_name} int8 on the host (sprig-runtime, one thread)\n\n"
    ));
    md.push_str(&format!("- command: `{command}`\n"));
    md.push_str(&format!(
        "- model: `{}` from a `cargo xtask compress` run; {} ops; all {} vectors of `{}` \
         replayed bit-exact before timing\n",
        blob_path.display(),
        model.ops().len(),
        vectors.len(),
        vectors_path.display()
    ));
    md.push_str(&format!(
        "- build: xtask's dev profile with sprig-runtime as it ships (opt-level 3, no overflow checks); median of {rounds} \
         rounds × {iterations} inferences (rounds ranged {fastest:.1}–{slowest:.1} µs)\n"
    ));
    md.push_str(&format!("- machine: {}\n", super::machine()));
    md.push_str(&format!("- date: {}\n\n", super::today()));
    md.push_str("| figure | measured | target (issue 3, lenet5) | met |\n|---|---:|---:|:-:|\n");
    md.push_str(&format!(
        "| host latency | {us:.1} µs/inference | ≤ {TARGET_US:.0} µs | {} |\n",
        mark(us <= TARGET_US)
    ));
    md.push_str(&format!(
        "| blob (`model.sprig`) | {} B | ≤ {TARGET_OVERHEAD} × weights + biases = {:.0} B | {} |\n",
        blob.len(),
        TARGET_OVERHEAD * payload as f64,
        mark(ratio <= TARGET_OVERHEAD)
    ));
    md.push_str(&format!(
        "| int8 weights + int32 biases | {} B + {} B = {payload} B | | |\n",
        c.weight_bytes, c.bias_bytes
    ));
    md.push_str(&format!(
        "| blob / (weights + biases) | {ratio:.4} | ≤ {TARGET_OVERHEAD} | {} |\n",
        mark(ratio <= TARGET_OVERHEAD)
    ));
    md.push_str(&format!(
        "| arena | {arena_bytes} B | ≤ {TARGET_ARENA} B | {} |\n\n",
        mark(arena_bytes <= TARGET_ARENA)
    ));
    md.push_str(
        "Reference, **not measured by us** (figures quoted in issue 3 for the same int8 \
         LeNet-5 shapes in TensorFlow Lite Micro, reference kernels, called through its \
         Python package; `cargo xtask conformance` measures TFLite Micro itself on the imported models): ≈ 1.2 ms per inference, `.tflite` 73,240 B, \
         arena 10,688 B (5,888 B of it activations).\n",
    );
    crate::bench::append_report(output, &md)
}
