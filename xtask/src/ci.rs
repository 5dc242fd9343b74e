//! `cargo xtask ci`: the project's whole check, as the README gives it: formatting,
//! clippy with warnings denied, every test, and the runtime built for each embedded
//! target (with and without defmt), a short compress run whose model every board is
//! built with and every QEMU board runs bit-exact, then a one-minute fuzz run of the blob
//! loader.

use std::process::Command;

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

pub fn run() -> anyhow::Result<()> {
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
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])?;
    firmware()?;
    crate::fuzz::run(crate::fuzz::Args { seconds: 60 })
}

/// A short compress run on the bundled subset, every board built with its model, and
/// every QEMU board checked bit-exact against the host on every vector.
fn firmware() -> anyhow::Result<()> {
    const ARTIFACTS: &str = "runs/ci";
    cargo(&[
        "fmt",
        "--all",
        "--check",
        "--manifest-path",
        "boards/Cargo.toml",
    ])?;
    cargo(&[
        "test",
        "--manifest-path",
        "boards/Cargo.toml",
        "-p",
        "sprig-board-build",
    ])?;
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
