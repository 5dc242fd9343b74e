//! `cargo xtask build --board B [--artifacts DIR]`: build a board's firmware with a
//! compress run's model and vectors embedded.
//!
//! Cargo runs in the board's folder, so its `.cargo/config.toml` (target, runner) and
//! `memory.x` apply; the run folder reaches the firmware's build scripts through
//! `SPRIG_ARTIFACTS`. Before building, the model and arena are checked against the
//! board's flash and RAM, and the vectors are capped to what fits beside the model
//! (`SPRIG_MAX_VECTORS`), which is said when it happens. The firmware links only the
//! kernels of the model's op kinds; `--all-ops` (`SPRIG_ALL_OPS=1`) links every one, to
//! measure what the op set saves.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use sprig_board_build::{
    read_artifacts, record_len, Artifacts, Kernels, ALL_OPS_ENV, ARTIFACTS_ENV, MAX_VECTORS_ENV,
};

use crate::boards::{self, kib, Board};

/// Flash kept free for the firmware's code and constants when deciding how many
/// vectors fit (runtime, defmt and startup code measured 33-41 KiB across the targets
/// before the issue 4 size work, 23-28 KiB after; the reserve keeps that headroom).
pub const CODE_RESERVE: u64 = 48 * 1024;
/// RAM kept free for the stack, beside the arena.
pub const STACK_RESERVE: u64 = 4 * 1024;
/// Where `cargo xtask compress` writes by default.
pub const DEFAULT_ARTIFACTS: &str = "runs/lenet5";

#[derive(clap::Args)]
pub struct Args {
    /// Board folder under boards/ (e.g. qemu-mps2-an386).
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    board: Option<String>,
    /// Every board.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    pub input: Input,
    /// Link every int8 kernel, not only those of the model's op kinds.
    #[arg(long)]
    all_ops: bool,
}

/// The kernels `--all-ops` asks for.
pub fn kernels(all_ops: bool) -> Kernels {
    if all_ops {
        Kernels::All
    } else {
        Kernels::OfModel
    }
}

/// Which artifacts to embed.
#[derive(clap::Args, Clone)]
pub struct Input {
    /// Compress run folder holding model.sprig and vectors.bin.
    #[arg(long, default_value = DEFAULT_ARTIFACTS)]
    pub artifacts: PathBuf,
    /// Embed at most this many vectors (default: all that fit the board's flash).
    #[arg(long)]
    pub max_vectors: Option<usize>,
}

/// A built firmware image.
pub struct Firmware {
    /// The linked ELF.
    pub elf: PathBuf,
    /// What was embedded (vectors capped).
    pub artifacts: Artifacts,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let boards = match &args.board {
        Some(name) => vec![boards::find(name)?],
        None => boards::all()?,
    };
    for board in boards {
        let firmware = build_with(&board, &args.input, kernels(args.all_ops))?;
        println!("{board}: {}", firmware.elf.display());
    }
    Ok(())
}

/// How many of `artifacts`' vectors fit `board`'s flash beside the model and code;
/// errors if the model or its arena cannot fit at all, naming both sizes.
pub fn vectors_that_fit(board: &Board, artifacts: &Artifacts) -> anyhow::Result<usize> {
    let model = artifacts.model.len() as u64;
    if model + CODE_RESERVE > board.flash {
        bail!(
            "the model does not fit {board}: it needs {} of flash ({} model + {} for code), \
             the board has {}",
            kib(model + CODE_RESERVE),
            kib(model),
            kib(CODE_RESERVE),
            kib(board.flash)
        );
    }
    let arena = artifacts.arena_size as u64;
    if arena + STACK_RESERVE > board.ram {
        bail!(
            "the model does not fit {board}: it needs {} of RAM ({} arena + {} stack), \
             the board has {}",
            kib(arena + STACK_RESERVE),
            kib(arena),
            kib(STACK_RESERVE),
            kib(board.ram)
        );
    }
    let record = record_len(artifacts.input_len, artifacts.output_len) as u64;
    let room = board.flash - model - CODE_RESERVE;
    let fit = room.saturating_sub(sprig_board_build::VECTORS_HEADER as u64) / record;
    Ok(usize::try_from(fit).unwrap_or(usize::MAX))
}

/// How to install a board linker that is not on PATH.
fn install_hint(linker: &str) -> String {
    match linker {
        "flip-link" => "install it with `cargo install flip-link --locked`".to_string(),
        other => format!("install `{other}` or change the board's linker"),
    }
}

/// Whether `program` is an existing file (a path) or found in a `PATH` directory.
fn on_path(program: &str) -> bool {
    if program.contains(std::path::MAIN_SEPARATOR) || program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            let candidate = dir.join(program);
            candidate.is_file() || candidate.with_extension("exe").is_file()
        })
    })
}

/// Fail early, naming the linker and how to install it, if `board` links with a
/// program (`flip-link` on the Cortex-M boards) that is not installed: otherwise cargo
/// fails late with a bare "linker `flip-link` not found".
pub fn check_linker(board: &Board) -> anyhow::Result<()> {
    match &board.linker {
        Some(linker) if !on_path(linker) => bail!(
            "{board} links with `{linker}` ({}/.cargo/config.toml), which is not on PATH: {}",
            shown(board),
            install_hint(linker)
        ),
        _ => Ok(()),
    }
}

/// Build `board`'s firmware with `input`'s artifacts and the kernels of its model's
/// op kinds; returns the ELF.
pub fn build(board: &Board, input: &Input) -> anyhow::Result<Firmware> {
    build_with(board, input, Kernels::OfModel)
}

/// [`build`], linking `kernels`.
pub fn build_with(board: &Board, input: &Input, kernels: Kernels) -> anyhow::Result<Firmware> {
    check_linker(board)?;
    let dir = std::path::absolute(&input.artifacts)
        .with_context(|| format!("bad artifacts path {}", input.artifacts.display()))?;
    let all = read_artifacts(&dir, None).map_err(|e| {
        anyhow::anyhow!(
            "{e}\n  `cargo xtask compress --out {}` writes the model and its vectors there; \
             or pass --artifacts DIR",
            input.artifacts.display()
        )
    })?;
    let fit = vectors_that_fit(board, &all)?;
    let keep = input
        .max_vectors
        .unwrap_or(usize::MAX)
        .min(fit)
        .min(all.total_vectors);
    if keep == 0 {
        bail!("no vectors to run on {board}: {} holds none", dir.display());
    }
    if keep < all.total_vectors {
        let why = if keep == fit {
            format!(
                "fit its {} of flash beside the model ({}) and code",
                kib(board.flash),
                kib(all.model.len() as u64)
            )
        } else {
            "were asked for (--max-vectors)".to_string()
        };
        println!(
            "{board}: embedding {keep} of the {} vectors: as many as {why}",
            all.total_vectors
        );
    }
    let artifacts = read_artifacts(&dir, Some(keep)).map_err(anyhow::Error::msg)?;
    let elf = cargo_build(board, &dir, keep, kernels)?;
    Ok(Firmware { elf, artifacts })
}

fn shown(board: &Board) -> String {
    board
        .dir
        .strip_prefix(boards::repo_root())
        .unwrap_or(&board.dir)
        .display()
        .to_string()
}

/// `cargo build --release` in the board folder; returns the executable's path.
fn cargo_build(
    board: &Board,
    artifacts: &Path,
    keep: usize,
    kernels: Kernels,
) -> anyhow::Result<PathBuf> {
    // Always set, so that a value left in the caller's shell cannot change the build.
    let all_ops = match kernels {
        Kernels::OfModel => "0",
        Kernels::All => "1",
    };
    let command = format!(
        "cd {} && {ARTIFACTS_ENV}={} {MAX_VECTORS_ENV}={keep} {ALL_OPS_ENV}={all_ops} \
         cargo build --release",
        shown(board),
        artifacts.display()
    );
    println!("$ {command}");
    let mut child = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&board.dir)
        .env(ARTIFACTS_ENV, artifacts)
        .env(MAX_VECTORS_ENV, keep.to_string())
        .env(ALL_OPS_ENV, all_ops)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{command}`"))?;
    let mut elf = None;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if message["reason"] == "compiler-artifact" {
                if let Some(path) = message["executable"].as_str() {
                    elf = Some(PathBuf::from(path));
                }
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{command}` failed ({status})");
    }
    elf.with_context(|| format!("`{command}` built no executable"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boards::Kind;

    fn board(flash: u64, ram: u64) -> Board {
        Board {
            name: "test-board".into(),
            dir: PathBuf::from("boards/test-board"),
            target: "thumbv6m-none-eabi".into(),
            runner: vec!["qemu-system-arm".into()],
            linker: None,
            flash,
            ram,
            kind: Kind::Simulated,
        }
    }

    fn artifacts(model: usize, arena: usize, vectors: usize) -> Artifacts {
        Artifacts {
            dir: PathBuf::new(),
            model: vec![0; model],
            vectors: Vec::new(),
            total_vectors: vectors,
            kept_vectors: vectors,
            arena_size: arena,
            ops: 1,
            tensors: 2,
            op_set: sprig_compressor::export::packed::sprig_runtime::ALL_OPS,
            input_len: 784,
            output_len: 10,
        }
    }

    #[test]
    fn vectors_are_capped_to_the_flash_left_by_model_and_code() {
        // 256 KiB flash − 64 KiB model − 48 KiB code reserve − 20 header = 147,436 bytes
        // of 795-byte records.
        let fit = vectors_that_fit(
            &board(256 * 1024, 16 * 1024),
            &artifacts(64 * 1024, 4096, 1000),
        );
        assert_eq!(fit.unwrap(), 185);
    }

    #[test]
    fn a_model_too_big_names_both_sizes() {
        let e = vectors_that_fit(
            &board(128 * 1024, 16 * 1024),
            &artifacts(120 * 1024, 4096, 10),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("168.0 KiB") && e.contains("128.0 KiB"), "{e}");
        let e = vectors_that_fit(&board(1 << 20, 16 * 1024), &artifacts(1024, 14 * 1024, 10))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("18.0 KiB of RAM") && e.contains("16.0 KiB"),
            "{e}"
        );
    }

    #[test]
    fn a_missing_linker_is_named_with_its_install_command() {
        let mut b = board(1 << 20, 1 << 20);
        assert!(check_linker(&b).is_ok());
        b.linker = Some("flip-link-that-is-not-installed".into());
        let e = check_linker(&b).unwrap_err().to_string();
        assert!(
            e.contains("flip-link-that-is-not-installed") && e.contains("not on PATH"),
            "{e}"
        );
        assert!(install_hint("flip-link").contains("cargo install flip-link --locked"));
    }
}
