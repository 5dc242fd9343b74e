//! `cargo xtask fuzz [--seconds N]`: libFuzzer over the runtime's blob loader and
//! interpreter (`fuzz/`), seeded with valid blobs. Needs nightly and cargo-fuzz
//! (`rustup toolchain install nightly`, `cargo install cargo-fuzz`).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};

#[derive(clap::Args)]
pub struct Args {
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let fuzz_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    std::fs::create_dir_all(fuzz_dir.join("corpus/from_bytes_run"))
        .context("creating the fuzz corpus folder")?;
    let max_time = format!("-max_total_time={}", args.seconds);
    let fuzz_args = [
        "+nightly",
        "fuzz",
        "run",
        "from_bytes_run",
        "corpus/from_bytes_run",
        "seeds",
        "--",
        &max_time,
    ];
    println!("$ (cd fuzz && cargo {})", fuzz_args.join(" "));
    let status = Command::new("cargo")
        .args(fuzz_args)
        .current_dir(&fuzz_dir)
        // The outer cargo's toolchain choice must not leak into the nightly build.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .status()
        .context("could not start `cargo +nightly fuzz`; install it with `rustup toolchain install nightly && cargo install cargo-fuzz`")?;
    if !status.success() {
        bail!("fuzzing failed ({status}): a crash input is in fuzz/artifacts/from_bytes_run/");
    }
    Ok(())
}
