//! `cargo xtask ci`: the project's whole check, as the README gives it: formatting,
//! clippy with warnings denied, every test, and the runtime built for each embedded
//! target (with and without defmt), then a one-minute fuzz run of the blob loader.

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
    crate::fuzz::run(crate::fuzz::Args { seconds: 60 })
}
