//! `cargo xtask <command>`: the project's entry points. This file only dispatches; each
//! command lives in its own module.

mod auto;
mod bench;
mod boards;
mod ci;
mod ci_auto;
mod compress;
mod conformance;
mod firmware;
mod flash;
mod fuzz;
mod import;
mod sim;
mod sim_profile;
mod sim_tflite;
mod size;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "sprig's tasks: compress models, build and run firmware, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train (cached), prune, quantize, fine-tune and export a model.
    Compress(compress::Args),
    /// Search per-layer pruning (Level or filters) and bit width for the most accurate
    /// model that fits a board's flash, RAM and instruction budget; fine-tune the best
    /// as trials.
    Auto(auto::Args),
    /// Build a board's firmware with a compress run's model and vectors embedded.
    Build(firmware::Args),
    /// Run simulated boards in QEMU: every vector bit-exact with the host, accuracy,
    /// instructions per inference, flash and RAM.
    Sim(sim::Args),
    /// Flash a hardware board with probe-rs and run it (defmt log over RTT).
    Flash(flash::Args),
    /// A firmware's flash and RAM: code, model, vectors, arena.
    Size(size::Args),
    /// Measure and record figures in BENCHMARKS.md.
    Bench(bench::Args),
    /// Formatting, clippy, all tests, embedded builds, a short fuzz run: what CI runs.
    Ci,
    /// Fuzz the runtime's blob loader (nightly + cargo-fuzz).
    Fuzz(fuzz::Args),
    /// Import an int8 TensorFlow Lite model (.tflite) into the sprig format.
    Import(import::Args),
    /// Every .tflite model in a folder through sprig and TensorFlow Lite Micro, compared
    /// byte for byte; sizes, arenas and host latency side by side.
    Conformance(conformance::Args),
}

fn main() -> anyhow::Result<()> {
    sprig_compressor::cpu_threads::configure();
    sprig_compressor::freed_memory::keep_for_reuse();
    let command = Cli::parse().command;
    sprig_compressor::cpu_threads::run_on_pool(|| dispatch(command))
}

fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Compress(args) => compress::run(args),
        Command::Auto(args) => auto::run(args),
        Command::Build(args) => firmware::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Flash(args) => flash::run(args),
        Command::Size(args) => size::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Ci => ci::run(),
        Command::Fuzz(args) => fuzz::run(args),
        Command::Import(args) => import::run(args),
        Command::Conformance(args) => conformance::run(args),
    }
}
