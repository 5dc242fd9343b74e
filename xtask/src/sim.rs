//! `cargo xtask sim --board B | --all`: build a simulated board's firmware, boot it in
//! QEMU (the runner in the board's `.cargo/config.toml`), decode its defmt output with
//! the ELF's defmt table, and check the verdict.
//!
//! The firmware prints one `sprig result:` line of `key=value` pairs; a board passes
//! when QEMU exits 0 (semihosting exit), every vector's output is byte for byte the
//! host runtime's, and so the device's accuracy equals the host's on the same vectors.
//! Instructions per inference come from the firmware's counter: with `-icount shift=0`
//! QEMU advances virtual time by 1 ns per instruction, so they repeat exactly from run
//! to run (see `boards/common/src/counter.rs`). The firmware links the kernels of the
//! model's op kinds only, or every int8 kernel with `--all-ops`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use defmt_decoder::{DecodeError, Table};
use sprig_board_build::Kernels;

use crate::boards::{self, kib, Board, Kind};
use crate::firmware::{self, Input};
use crate::size::{self, Size};

#[derive(clap::Args)]
pub struct Args {
    /// Simulated board folder under boards/ (e.g. qemu-mps2-an386).
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    board: Option<String>,
    /// Every simulated board.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    input: Input,
    /// Link every int8 kernel, not only those of the model's op kinds.
    #[arg(long)]
    all_ops: bool,
    /// Seconds QEMU may run, per board (a run of 1,000 LeNet-5 vectors takes a few).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Run this int8 TensorFlow Lite model instead of a compress run: imported, fed
    /// `--inputs` seeded random inputs on the host, and compared byte for byte on the
    /// board (writes `runs/sim-tflite/<model>/`).
    #[arg(long, requires = "board", conflicts_with_all = ["all", "artifacts"])]
    tflite: Option<PathBuf>,
    /// Random inputs for `--tflite`.
    #[arg(long, default_value_t = 10, requires = "tflite")]
    inputs: usize,
    /// Seed of the random inputs for `--tflite`.
    #[arg(long, default_value_t = 1, requires = "tflite")]
    seed: u64,
    /// Profile one inference instead of checking: instructions per function and per
    /// basic block from QEMU's logs, the N largest of each (see `sim_profile.rs`).
    #[arg(long, value_name = "N", requires = "board", conflicts_with_all = ["all", "tflite"])]
    profile: Option<usize>,
}

/// What one simulated run found.
#[derive(Debug, Clone)]
pub struct SimResult {
    /// The board.
    pub board: Board,
    /// Vectors run.
    pub vectors: u64,
    /// Vectors in the run folder.
    pub total_vectors: u64,
    /// Vectors whose output differed from the host's.
    pub mismatches: u64,
    /// Correct labels on the device.
    pub correct: u64,
    /// Correct labels on the host (from the stored outputs).
    pub host_correct: u64,
    /// `instructions` (QEMU) or `cycles`.
    pub unit: String,
    /// Units per counter tick (the resolution of one measurement).
    pub units_per_tick: f64,
    /// Mean units per inference.
    pub per_inference: f64,
    /// Fewest and most units of one inference.
    pub min: f64,
    /// See `min`.
    pub max: f64,
    /// Peak stack bytes.
    pub stack: u64,
    /// Flash and static RAM.
    pub size: Size,
}

impl SimResult {
    /// Device accuracy in percent.
    pub fn accuracy(&self) -> f64 {
        percent(self.correct, self.vectors)
    }
    /// Host accuracy on the same vectors, in percent.
    pub fn host_accuracy(&self) -> f64 {
        percent(self.host_correct, self.vectors)
    }
    /// Static RAM plus peak stack.
    pub fn peak_ram(&self) -> u64 {
        self.size.ram() + self.stack
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let boards = match &args.board {
        Some(name) => {
            let board = boards::find(name)?;
            if board.kind != Kind::Simulated {
                bail!("{board} is a hardware board: use `cargo xtask flash --board {board}`");
            }
            vec![board]
        }
        None => boards::simulated()?,
    };
    let timeout = Duration::from_secs(args.timeout);
    if let (Some(model), [board]) = (&args.tflite, boards.as_slice()) {
        return run_tflite(board, model, &args, timeout);
    }
    let kernels = firmware::kernels(args.all_ops);
    if let (Some(top), [board]) = (args.profile, boards.as_slice()) {
        return crate::sim_profile::run(board, &args.input, kernels, top, timeout);
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for board in &boards {
        match simulate(board, &args.input, kernels, timeout) {
            Ok(result) => results.push(result),
            Err(e) => {
                eprintln!("{board}: FAILED: {e:#}");
                failures.push(format!("{board}: {e:#}"));
            }
        }
    }
    if boards.len() > 1 {
        print_table(&results);
    }
    if !failures.is_empty() {
        bail!(
            "{} of {} boards failed:\n{}",
            failures.len(),
            boards.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// `--tflite`: import, run on the host, then on the board; instructions per MAC too.
fn run_tflite(board: &Board, model: &Path, args: &Args, timeout: Duration) -> anyhow::Result<()> {
    let prepared = crate::sim_tflite::prepare(model, args.inputs, args.seed)?;
    println!("(random inputs carry no labels: the check is the byte comparison, not the accuracy)");
    let input = Input {
        artifacts: prepared.artifacts,
        max_vectors: args.input.max_vectors,
    };
    let result = simulate(board, &input, firmware::kernels(args.all_ops), timeout)?;
    if prepared.macs > 0 {
        println!(
            "  {:.2} {} per MAC ({} MACs per inference)",
            result.per_inference / prepared.macs as f64,
            result.unit,
            prepared.macs
        );
    }
    Ok(())
}

fn print_table(results: &[SimResult]) {
    println!(
        "\n| board | vectors | mismatches | accuracy (host) | per inference | flash (code + model + vectors) | RAM (static + stack) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in results {
        println!(
            "| {} | {} | {} | {:.1} % ({:.1} %) | {:.0} {} | {} ({} + {} + {}) | {} ({} + {}) |",
            r.board,
            r.vectors,
            r.mismatches,
            r.accuracy(),
            r.host_accuracy(),
            r.per_inference,
            r.unit,
            kib(r.size.flash()),
            kib(r.size.code()),
            kib(r.size.model),
            kib(r.size.vectors),
            kib(r.peak_ram()),
            kib(r.size.ram()),
            kib(r.stack),
        );
    }
}

/// One booted firmware's figures, before they are judged.
pub struct Booted {
    /// The parsed `sprig result:` line.
    pub result: SimResult,
    /// Whether QEMU exited 0 (the firmware exits non-zero on a mismatch).
    pub exited_ok: bool,
    /// QEMU's exit status, in words.
    pub status: String,
    /// Vectors embedded in the firmware.
    pub embedded: usize,
    /// The runner command line.
    pub command: String,
    /// Seconds QEMU ran.
    pub seconds: f64,
}

/// Build (linking `kernels`), boot and check one simulated board.
pub fn simulate(
    board: &Board,
    input: &Input,
    kernels: Kernels,
    timeout: Duration,
) -> anyhow::Result<SimResult> {
    let Booted {
        result,
        exited_ok,
        status,
        embedded,
        command,
        seconds,
    } = boot_with(board, input, kernels, timeout)?;
    if !exited_ok {
        bail!(
            "`{command}` exited with {status} ({} of {} vectors differ from the host)",
            result.mismatches,
            result.vectors
        );
    }
    if result.mismatches > 0 || result.correct != result.host_correct {
        bail!(
            "`{command}`: {} of {} vectors differ from the host (device accuracy {:.1} %, host {:.1} %)",
            result.mismatches,
            result.vectors,
            result.accuracy(),
            result.host_accuracy()
        );
    }
    if result.vectors as usize != embedded {
        bail!(
            "`{command}` ran {} vectors, {embedded} were embedded",
            result.vectors
        );
    }
    let of_total = if result.vectors == result.total_vectors {
        String::new()
    } else {
        format!(
            " (of {}; the rest do not fit its flash)",
            result.total_vectors
        )
    };
    println!(
        "{board}: {} vectors{of_total} bit-exact with the host in {seconds:.1} s; \
         accuracy {:.1} % (host {:.1} %)",
        result.vectors,
        result.accuracy(),
        result.host_accuracy()
    );
    println!(
        "  {:.0} {} per inference (min {:.0}, max {:.0}; counted in steps of {})",
        result.per_inference, result.unit, result.min, result.max, result.units_per_tick
    );
    println!(
        "  {}; stack peak {}",
        size::summary(board, &result.size).replace('\n', "\n  "),
        kib(result.stack)
    );
    Ok(result)
}

/// Build and boot one simulated board with the kernels of its model's op kinds;
/// returns its figures without judging them.
pub fn boot(board: &Board, input: &Input, timeout: Duration) -> anyhow::Result<Booted> {
    boot_with(board, input, Kernels::OfModel, timeout)
}

/// [`boot`], linking `kernels`.
pub fn boot_with(
    board: &Board,
    input: &Input,
    kernels: Kernels,
    timeout: Duration,
) -> anyhow::Result<Booted> {
    let firmware = firmware::build_with(board, input, kernels)?;
    let size = size::measure(&firmware.elf)?;
    let (program, args) = board
        .runner
        .split_first()
        .context("the board's runner is empty")?;
    let command = format!("{} {}", board.runner.join(" "), firmware.elf.display());
    println!("$ {command}");
    let started = Instant::now();
    let output = run_with_timeout(Command::new(program).args(args).arg(&firmware.elf), timeout)
        .map_err(|e| match e {
            RunError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::anyhow!(
                "`{program}` is not installed: `apt-get install {}`",
                if program.contains("riscv") {
                    "qemu-system-misc"
                } else {
                    "qemu-system-arm"
                }
            ),
            RunError::Spawn(e) => anyhow::anyhow!("could not start `{command}`: {e}"),
            RunError::Timeout { stdout, stderr } => {
                let lines = decode(&firmware.elf, &stdout).unwrap_or_default();
                anyhow::anyhow!(
                    "`{command}` ran past the {}-second timeout; its output:\n{}{}",
                    timeout.as_secs(),
                    lines.join("\n"),
                    stderr
                )
            }
            RunError::Io(e) => anyhow::anyhow!("`{command}`: {e}"),
        })?;
    let lines = decode(&firmware.elf, &output.stdout)
        .with_context(|| format!("decoding the defmt output of `{command}`"))?;
    for line in &lines {
        println!("  {line}");
    }
    if !output.stderr.trim().is_empty() {
        println!("  (QEMU's stderr) {}", output.stderr.trim());
    }
    let result_line = lines
        .iter()
        .rev()
        .find_map(|l| l.split_once("sprig result:").map(|(_, rest)| rest))
        .with_context(|| {
            format!(
                "`{command}` printed no `sprig result:` line (exit status {})",
                output.status
            )
        })?;
    let result = parse_result(board, result_line, size)?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(Booted {
        result,
        exited_ok: output.status.success(),
        status: output.status.to_string(),
        embedded: firmware.artifacts.kept_vectors,
        command,
        seconds,
    })
}

fn parse_result(board: &Board, line: &str, size: Size) -> anyhow::Result<SimResult> {
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let number = |key: &str| -> anyhow::Result<u64> {
        fields
            .get(key)
            .with_context(|| format!("the result line has no `{key}`: {line}"))?
            .parse()
            .with_context(|| format!("`{key}` is not a number: {line}"))
    };
    let vectors = number("vectors")?;
    let units_per_tick: f64 = fields
        .get("units_per_tick")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("the result line has no number `units_per_tick`: {line}"))?;
    let ticks = number("ticks")?;
    Ok(SimResult {
        board: board.clone(),
        vectors,
        total_vectors: number("total_vectors")?,
        mismatches: number("mismatches")?,
        correct: number("correct")?,
        host_correct: number("host_correct")?,
        unit: fields.get("unit").unwrap_or(&"ticks").to_string(),
        units_per_tick,
        per_inference: if vectors == 0 {
            0.0
        } else {
            ticks as f64 * units_per_tick / vectors as f64
        },
        min: number("min_ticks")? as f64 * units_per_tick,
        max: number("max_ticks")? as f64 * units_per_tick,
        stack: number("stack")?,
        size,
    })
}

/// The firmware's defmt frames as `LEVEL message` lines.
pub fn decode(elf: &Path, bytes: &[u8]) -> anyhow::Result<Vec<String>> {
    let elf_bytes = std::fs::read(elf).with_context(|| format!("cannot read {}", elf.display()))?;
    let table = Table::parse(&elf_bytes)?
        .with_context(|| format!("{} has no defmt table", elf.display()))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let level = frame
                    .level()
                    .map(|l| l.as_str().to_uppercase())
                    .unwrap_or_else(|| "PRINT".to_string());
                lines.push(format!("{level:<5} {}", frame.display_message()));
            }
            Err(DecodeError::UnexpectedEof) => break,
            Err(DecodeError::Malformed) if table.encoding().can_recover() => {
                lines.push("(malformed defmt frame skipped)".to_string());
            }
            Err(DecodeError::Malformed) => bail!("malformed defmt frame"),
        }
    }
    Ok(lines)
}

struct Output {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

enum RunError {
    Spawn(std::io::Error),
    Io(std::io::Error),
    Timeout { stdout: Vec<u8>, stderr: String },
}

/// Run `command` with its output captured, killing it after `timeout`.
fn run_with_timeout(command: &mut Command, timeout: Duration) -> Result<Output, RunError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RunError::Spawn)?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| RunError::Io(std::io::Error::other("no stdout pipe")))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| RunError::Io(std::io::Error::other("no stderr pipe")))?;
    let out_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(RunError::Io)? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(RunError::Timeout { stdout, stderr }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_to_figures() {
        let board = boards::find("qemu-mps2-an386").unwrap();
        let line = " board=qemu-mps2-an386 vectors=200 total_vectors=1000 mismatches=0 \
                    correct=133 host_correct=133 unit=instructions units_per_tick=62.5 \
                    ticks=1000 min_ticks=4 max_ticks=6 stack=4356 arena=4320 model=46606";
        let r = parse_result(&board, line, Size::default()).unwrap();
        assert_eq!((r.vectors, r.total_vectors, r.mismatches), (200, 1000, 0));
        assert_eq!((r.correct, r.host_correct, r.stack), (133, 133, 4356));
        assert_eq!(r.unit, "instructions");
        assert_eq!(r.per_inference, 312.5);
        assert_eq!((r.min, r.max), (250.0, 375.0));
        assert_eq!(r.accuracy(), 66.5);
        assert!(parse_result(&board, "vectors=1", Size::default()).is_err());
    }
}
