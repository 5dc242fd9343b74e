//! `cargo xtask <command>`: the project's entry points. This file only dispatches; each
//! command lives in its own module.

mod bench;
mod ci;
mod compress;
mod fuzz;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "sprig's tasks: compress models, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (cached), prune, quantize, fine-tune and export a model.
    Compress(compress::Args),
    /// Measure and record figures in BENCHMARKS.md.
    Bench(bench::Args),
    /// Formatting, clippy, all tests, embedded builds, a short fuzz run: what CI runs.
    Ci,
    /// Fuzz the runtime's blob loader (nightly + cargo-fuzz).
    Fuzz(fuzz::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Compress(args) => compress::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Ci => ci::run(),
        Command::Fuzz(args) => fuzz::run(args),
    }
}
