//! `cargo xtask bench train`: training throughput (images/s) for lenet5 plain, with
//! masks, and with QAT, beside PyTorch's with `--pytorch PYTHON`; `cargo xtask bench runtime`: the packed int8 model of a
//! compress run (`model.sprig` + `vectors.bin`) on the host: µs per inference on one
//! thread, blob and arena bytes; `cargo xtask bench mcu`: instructions per inference and
//! per MAC on every QEMU board, runtime code size, peak RAM; `cargo xtask bench prune`:
//! every pruner's accuracy on lenet5 / Fashion-MNIST beside NNI 2.10's, and a sparsity
//! sweep charted as SVG; `cargo xtask bench sparse`: lenet5's blob bytes and QEMU
//! instructions at Level 0–95 % and L1-filter 50 % after speedup; `cargo xtask bench
//! binary`: a binary conv layer against the int8 conv of the same shape in QEMU
//! instructions. All append to BENCHMARKS.md with machine, command and date.

mod binary;
mod mcu;
mod prune;
mod pytorch;
mod runtime;
mod sparse;

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::Device;
use sprig_compressor::config::ConfigList;
use sprig_compressor::data::{Batcher, DataSource, Order};
use sprig_compressor::models::Model;
use sprig_compressor::prune::{LevelPruner, Pruner};
use sprig_compressor::quant::{QatQuantizer, Quantizer};
use sprig_compressor::train::{Optimizer, OptimizerKind};

#[derive(clap::Args)]
pub struct Args {
    /// What to measure: train, runtime, mcu, prune, sparse or binary.
    what: String,
    #[arg(long, default_value = "lenet5")]
    model: String,
    #[arg(long)]
    data: Option<PathBuf>,
    /// Training images per measurement.
    #[arg(long, default_value_t = 6400)]
    images: usize,
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Where to append the results.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// runtime, mcu: the run folder holding model.sprig and vectors.bin.
    #[arg(long, default_value = "runs/lenet5")]
    artifacts: PathBuf,
    /// runtime, train: timing rounds (the median is reported).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// train: also time the same training step in PyTorch with this Python interpreter
    /// (runs docs/bench_train_pytorch.py; needs torch and numpy).
    #[arg(long)]
    pytorch: Option<PathBuf>,
    /// runtime: inferences per round.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// prune, sparse: float baseline epochs.
    #[arg(long, default_value_t = 5)]
    epochs: usize,
    /// prune, sparse: fine-tuning epochs after pruning (per round for Lottery Ticket;
    /// sparse: also the QAT epochs).
    #[arg(long, default_value_t = 2)]
    ft_epochs: usize,
    /// prune, sparse: train on the first N training images only (quick checks).
    #[arg(long)]
    train_limit: Option<usize>,
    /// prune: where the sweep's SVG chart goes.
    #[arg(long, default_value = "docs/prune-accuracy.svg")]
    chart: PathBuf,
    /// prune: only these rows (level, agp, fpgm, l1, l2, apoz, mean, slim, lottery);
    /// train: only these variants (plain, masks, qat), e.g. to profile one.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// prune: skip the sparsity sweep and its chart.
    #[arg(long)]
    no_sweep: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what.as_str() {
        "train" => bench_train(&args),
        "runtime" => runtime::run(&args.artifacts, args.rounds, args.iterations, &args.output),
        "mcu" => mcu::run(&args.artifacts, &args.output),
        "prune" => prune::run(&args),
        "sparse" => sparse::run(&args),
        "binary" => binary::run(&args.output),
        other => anyhow::bail!(
            "unknown benchmark `{other}`; valid: train, runtime, mcu, prune, sparse, binary"
        ),
    }
}

/// Images per second over `images` training images (after one warm-up batch).
fn throughput(
    model: &Model,
    data: &sprig_compressor::data::Dataset,
    batch_size: usize,
) -> anyhow::Result<f64> {
    let mut opt = Optimizer::new(OptimizerKind::adamw(), model.trainable_vars());
    let mut step = |batch: sprig_compressor::data::Batch| -> anyhow::Result<()> {
        let logits = model.graph.forward_t(&batch.images, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &batch.labels)?;
        opt.step(&loss.backward()?, 1e-3)?;
        if !model.graph.masks().is_empty() {
            sprig_compressor::prune::apply_masks_to_weights(&model.graph)?;
        }
        Ok(())
    };
    let mut batches = Batcher::new(
        data,
        batch_size,
        Order::Shuffled { seed: 0, epoch: 0 },
        &model.device,
    );
    step(batches.next().context("empty dataset")??)?;
    let started = Instant::now();
    let mut seen = 0;
    for batch in batches {
        let batch = batch?;
        seen += batch.len;
        step(batch)?;
    }
    Ok(seen as f64 / started.elapsed().as_secs_f64())
}

fn bench_train(args: &Args) -> anyhow::Result<()> {
    let source = sprig_compressor::data::resolve(args.data.as_deref())?;
    let data = source.load()?.0.subset(args.images);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pytorch_data = match (&args.pytorch, &source) {
        (None, _) => None,
        (Some(_), DataSource::Npz(path)) => anyhow::bail!(
            "--pytorch reads IDX folders; {} is an .npz file",
            path.display()
        ),
        (
            Some(python),
            DataSource::Dir(dir) | DataSource::System(dir) | DataSource::Bundled(dir),
        ) => Some((python.clone(), dir.clone())),
    };
    let device = Device::Cpu;
    let level =
        ConfigList::from_json_str(r#"[{"op_types": ["Conv2d", "Linear"], "sparsity": 0.8}]"#)?;
    let qat = ConfigList::from_json_str(
        r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#,
    )?;
    let plain = Model::new(&args.model, 10, &device, 0)?;
    let mut masked = Model::new(&args.model, 10, &device, 0)?;
    LevelPruner.compress(&mut masked.graph, &level)?;
    let mut quantized = Model::new(&args.model, 10, &device, 0)?;
    QatQuantizer::new().compress(&mut quantized.graph, &qat)?;
    let all = [
        ("plain", "plain", &plain),
        ("masks", "Level 80% masks", &masked),
        ("qat", "QAT int8", &quantized),
    ];
    if let Some(bad) = args
        .only
        .iter()
        .find(|n| !all.iter().any(|(key, _, _)| key == n))
    {
        anyhow::bail!("unknown variant `{bad}` in --only; valid: plain, masks, qat");
    }
    let variants: Vec<(&str, &Model)> = all
        .iter()
        .filter(|(key, _, _)| args.only.is_empty() || args.only.iter().any(|n| n == key))
        .map(|&(_, label, model)| (label, model))
        .collect();

    // Rounds alternate between the variants (and PyTorch), so a slow stretch of a shared
    // machine hits all of them alike; each figure is the median over the rounds.
    let rounds = args.rounds.max(1);
    let mut samples = vec![Vec::new(); variants.len() + 1];
    let mut torch_version = None;
    for round in 0..rounds {
        for (i, (label, model)) in variants.iter().enumerate() {
            let ips = throughput(model, &data, args.batch_size)?;
            println!(
                "round {}/{rounds}: {label:<18} {ips:>8.0} images/s",
                round + 1
            );
            samples[i].push(ips);
        }
        if let Some((python, dir)) = &pytorch_data {
            let run = pytorch::measure(python, dir, data.len(), args.batch_size, threads)?;
            println!(
                "round {}/{rounds}: {:<18} {:>8.0} images/s",
                round + 1,
                "PyTorch",
                run.images_per_s
            );
            samples[variants.len()].push(run.images_per_s);
            torch_version = Some(run.torch);
        }
    }
    let medians: Vec<f64> = samples.iter_mut().map(|s| median(s)).collect();
    let base = medians[0];
    let mut md = String::new();
    md.push_str(&format!(
        "\n## Training throughput, {} (batch {}, {} images, CPU, {threads} threads)\n\n",
        args.model,
        args.batch_size,
        data.len(),
    ));
    let mut command = format!(
        "cargo xtask bench train --images {} --rounds {rounds}",
        args.images
    );
    if !args.only.is_empty() {
        command.push_str(&format!(" --only {}", args.only.join(",")));
    }
    if let Some(python) = &args.pytorch {
        command.push_str(&format!(" --pytorch {}", python.display()));
    }
    md.push_str(&format!("- command: `{command}`\n"));
    md.push_str(&format!(
        "- median of {rounds} rounds; each round times every variant once (one warm-up batch each)\n"
    ));
    if let Some(version) = &torch_version {
        md.push_str(&format!(
            "- PyTorch {version} (`docs/bench_train_pytorch.py`, same model, batch, AdamW and images, {threads} threads), in the same rounds\n"
        ));
    }
    md.push_str(&format!("- machine: {}\n", machine()));
    md.push_str(&format!("- date: {}\n\n", today()));
    md.push_str(&format!(
        "| variant | images/s | relative to {} |",
        variants[0].0
    ));
    if torch_version.is_some() {
        md.push_str(" relative to PyTorch |\n|---|---:|---:|---:|\n");
    } else {
        md.push_str("\n|---|---:|---:|\n");
    }
    let torch = torch_version.as_ref().map(|_| medians[variants.len()]);
    for ((label, _), ips) in variants.iter().zip(&medians) {
        md.push_str(&format!("| {label} | {ips:.0} | {:.2} |", ips / base));
        match torch {
            Some(t) => md.push_str(&format!(" {:.2} |\n", ips / t)),
            None => md.push('\n'),
        }
    }
    if let Some(t) = torch {
        md.push_str(&format!("| PyTorch | {t:.0} | {:.2} | 1.00 |\n", t / base));
    }
    print!("{md}");
    append_report(&args.output, &md)
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Appends a report section to `path` (BENCHMARKS.md by default) and says so.
pub(crate) fn append_report(path: &std::path::Path, md: &str) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(md.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("appended to {}", path.display());
    Ok(())
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!(
        "{cpu}, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    )
}

pub(crate) fn today() -> String {
    std::process::Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}
