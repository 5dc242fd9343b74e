//! `cargo xtask ci`: the project's whole check, as the README gives it: formatting,
//! clippy with warnings denied, every test, and the runtime built for each embedded
//! target (with and without defmt), a short compress run whose model every board is
//! built with and every QEMU board runs bit-exact, every ONNX fixture compressed on `.npz`
//! data and run bit-exact on the simulated Cortex-M4, the TFLite Micro conformance run over
//! `../shared/models/tflite`, then a one-minute fuzz run of the blob loader.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

/// Embedded targets the `no_std` runtime must build for.
const RUNTIME_TARGETS: [&str; 3] = [
    "thumbv6m-none-eabi",
    "thumbv7em-none-eabihf",
    "riscv32imac-unknown-none-elf",
];

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    println!("$ cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Passed and failed test counts over every `cargo test` run.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test ...`, echoing its output and adding its `test result:` lines to `tally`.
fn cargo_test(args: &[&str], tally: &mut Tally) -> anyhow::Result<()> {
    println!("$ cargo {}", args.join(" "));
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `cargo {}`", args.join(" ")))?;
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(word)
                        })
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                tally.passed += count(" passed");
                tally.failed += count(" failed");
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    let mut tally = Tally::default();
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&[
        "clippy",
        "-p",
        "sprig-runtime",
        "--all-targets",
        "--features",
        "std",
        "--",
        "-D",
        "warnings",
    ])?;
    for target in RUNTIME_TARGETS {
        cargo(&["build", "-p", "sprig-runtime", "--target", target])?;
        cargo(&[
            "build",
            "-p",
            "sprig-runtime",
            "--target",
            target,
            "--features",
            "defmt",
        ])?;
    }
    cargo_test(&["test", "--workspace", "--all-targets"], &mut tally)?;
    cargo_test(&["test", "--workspace", "--doc"], &mut tally)?;
    firmware(&mut tally)?;
    onnx_fixtures_on_the_m4()?;
    crate::ci_auto::run()?;
    // Every int8 reference model imported and byte-identical with TensorFlow Lite Micro.
    cargo(&[
        "xtask",
        "conformance",
        "--tflite",
        "../shared/models/tflite",
    ])?;
    // The same kind of model through `sim --tflite` on the simulated Cortex-M4.
    cargo(&[
        "xtask",
        "sim",
        "--board",
        "qemu-mps2-an386",
        "--tflite",
        "../shared/models/tflite/kws_ref_model.tflite",
    ])?;
    crate::fuzz::run(crate::fuzz::Args { seconds: 60 })?;
    // One closing line over every test run above.
    println!("ci: {} passed, {} failed", tally.passed, tally.failed);
    Ok(())
}

/// A short compress run on the bundled subset, every board built with its model, and
/// every QEMU board checked bit-exact against the host on every vector.
fn firmware(tally: &mut Tally) -> anyhow::Result<()> {
    const ARTIFACTS: &str = "runs/ci";
    cargo(&[
        "fmt",
        "--all",
        "--check",
        "--manifest-path",
        "boards/Cargo.toml",
    ])?;
    cargo_test(
        &[
            "test",
            "--manifest-path",
            "boards/Cargo.toml",
            "-p",
            "sprig-board-build",
        ],
        tally,
    )?;
    cargo(&[
        "xtask",
        "compress",
        "--data",
        "data/fashion-mnist-subset",
        "--epochs",
        "1",
        "--ft-epochs",
        "1",
        "--qat-epochs",
        "1",
        "--out",
        ARTIFACTS,
    ])?;
    cargo(&["xtask", "build", "--all", "--artifacts", ARTIFACTS])?;
    cargo(&["xtask", "sim", "--all", "--artifacts", ARTIFACTS])
}

/// Every ONNX fixture (made by PyTorch and tf2onnx, `tools/onnx-fixtures`) compressed
/// under the default plan on `.npz` data (the bundled subset, written as keras' arrays),
/// then run on the simulated Cortex-M4 bit-exact with the host: a user's own model and
/// data, through the README's commands, onto a board.
fn onnx_fixtures_on_the_m4() -> anyhow::Result<()> {
    const OUT: &str = "runs/ci-fixtures";
    const FIXTURES: &str = "compressor/tests/fixtures/onnx";
    std::fs::create_dir_all(OUT).with_context(|| format!("creating {OUT}"))?;
    let npz = format!("{OUT}/fashion-subset.npz");
    let bundled = sprig_compressor::data::bundled_dir();
    let (train, test) = sprig_compressor::data::load_dir(&bundled)?;
    sprig_compressor::data::save_npz(npz.as_ref(), &train, &test)?;
    let mut models: Vec<_> = std::fs::read_dir(FIXTURES)
        .with_context(|| format!("reading {FIXTURES}"))?
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "onnx"))
        .collect();
    models.sort();
    if models.is_empty() {
        bail!("{FIXTURES}: no .onnx fixtures");
    }
    for model in models {
        let name = model
            .file_stem()
            .context("a fixture name")?
            .to_string_lossy();
        let out = format!("{OUT}/{name}");
        cargo(&[
            "xtask",
            "compress",
            "--model",
            &model.to_string_lossy(),
            "--data",
            &npz,
            "--ft-epochs",
            "2",
            "--qat-epochs",
            "1",
            "--out",
            &out,
        ])?;
        cargo(&[
            "xtask",
            "sim",
            "--board",
            "qemu-mps2-an386",
            "--artifacts",
            &out,
        ])?;
    }
    Ok(())
}
