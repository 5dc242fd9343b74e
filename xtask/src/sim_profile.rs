//! `cargo xtask sim --board B --profile N`: where one inference's instructions go, per
//! function and per basic block, from QEMU's own logs: `-d in_asm` gives each
//! translated block's instructions, `-d exec,nochain` one line per block executed (with
//! its start address and function), so instructions = executions × block length, exact
//! under `-icount shift=0` like the firmware's own counter. The firmware embeds one
//! vector; the log streams through a pipe (it runs to hundreds of MB per inference), so
//! nothing lands on disk.
//!
//! Everything the firmware runs is counted: the boot (RAM zeroing, stack painting), the
//! model's parse and validation, the inference and the board's check of the output
//! (stack measure included). The kernels are the `sprig_runtime::kernels::` entries.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sprig_board_build::Kernels;

use crate::boards::Board;
use crate::firmware::{self, Input};

/// Counts from one QEMU log.
#[derive(Debug, Default, PartialEq)]
struct Profile {
    /// Per block start address: its instruction count (from `in_asm`).
    block_len: HashMap<u64, u64>,
    /// Per block start address: executions and the function QEMU named.
    executed: HashMap<u64, (u64, String)>,
}

impl Profile {
    /// Reads a log as QEMU writes it with `-d in_asm,exec,nochain`.
    fn read(log: impl BufRead) -> std::io::Result<Self> {
        let mut profile = Profile::default();
        let mut block: Option<u64> = None;
        for line in log.lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("Trace ") {
                block = None;
                if let Some((pc, function)) = exec_line(rest) {
                    let entry = profile.executed.entry(pc).or_insert((0, function));
                    entry.0 += 1;
                }
            } else if line.starts_with("IN:") || line.trim().is_empty() {
                block = None;
            } else if let Some(pc) = instruction_address(&line) {
                // A block translated again is counted afresh (to the same length).
                let start = *block.get_or_insert_with(|| {
                    profile.block_len.insert(pc, 0);
                    pc
                });
                *profile.block_len.entry(start).or_insert(0) += 1;
            }
        }
        Ok(profile)
    }

    /// Instructions per block start: executions × length.
    fn per_block(&self) -> Vec<(u64, u64, u64, &str)> {
        let mut blocks: Vec<_> = (self.executed.iter())
            .map(|(&pc, (count, function))| {
                let len = self.block_len.get(&pc).copied().unwrap_or(0);
                (pc, count * len, *count, function.as_str())
            })
            .collect();
        blocks.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        blocks
    }

    /// Instructions per function, most first.
    fn per_function(&self) -> Vec<(String, u64)> {
        let mut functions: HashMap<String, u64> = HashMap::new();
        for (_, instructions, _, function) in self.per_block() {
            *functions.entry(demangle(function)).or_insert(0) += instructions;
        }
        let mut sorted: Vec<_> = functions.into_iter().collect();
        sorted.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        sorted
    }
}

/// `0x…: …` of an `in_asm` listing: the instruction's address.
fn instruction_address(line: &str) -> Option<u64> {
    let hex = line.strip_prefix("0x")?.split(':').next()?;
    u64::from_str_radix(hex, 16).ok()
}

/// After `Trace `: `N: HOST [a/PC/b/c] function` (Arm and RISC-V alike; the function
/// is empty where QEMU knows none).
fn exec_line(rest: &str) -> Option<(u64, String)> {
    let (_, fields) = rest.split_once('[')?;
    let (fields, function) = fields.split_once(']')?;
    let pc = fields.split('/').nth(1)?;
    let pc = u64::from_str_radix(pc, 16).ok()?;
    Some((pc, function.trim().to_string()))
}

/// A legacy Rust symbol (`_ZN4core3ptr…17h<hash>E`) as `core::ptr::…`, hash dropped;
/// anything else as it is.
fn demangle(symbol: &str) -> String {
    let Some(mut rest) = symbol.strip_prefix("_ZN") else {
        return symbol.to_string();
    };
    let mut parts = Vec::new();
    while let Some(digits) = rest.find(|c: char| !c.is_ascii_digit()).filter(|&n| n > 0) {
        let Ok(len) = rest[..digits].parse::<usize>() else {
            break;
        };
        let Some(part) = rest.get(digits..digits + len) else {
            break;
        };
        rest = &rest[digits + len..];
        let is_hash = part.len() == 17 && part.starts_with('h');
        if !is_hash {
            let part = (part.strip_prefix("_$").map(|p| format!("${p}")))
                .unwrap_or_else(|| part.to_string());
            parts.push(
                part.replace("$LT$", "<")
                    .replace("$GT$", ">")
                    .replace("$C$", ",")
                    .replace("$u7b$", "{")
                    .replace("$u7d$", "}"),
            );
        }
    }
    match parts.is_empty() {
        true => symbol.to_string(),
        false => parts.join("::"),
    }
}

/// Builds `board`'s firmware with one vector of `input`, runs it under QEMU's logs and
/// prints the `top` functions and blocks by instructions.
pub fn run(
    board: &Board,
    input: &Input,
    kernels: Kernels,
    top: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let one = Input {
        artifacts: input.artifacts.clone(),
        max_vectors: Some(1),
    };
    let firmware = firmware::build_with(board, &one, kernels)?;
    let (program, args) = (board.runner.split_first()).context("the board's runner is empty")?;
    // The log options go first: a runner's arguments end with the one the ELF follows.
    let log_args = ["-d", "in_asm,exec,nochain", "-D", "/dev/stderr"];
    println!(
        "$ {program} {} {} {}",
        log_args.join(" "),
        args.join(" "),
        firmware.elf.display()
    );
    let mut child = Command::new(program)
        .args(log_args)
        .args(args)
        .arg(&firmware.elf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting `{program}`"))?;
    let log = child.stderr.take().context("no stderr pipe")?;
    let reader = thread::spawn(move || Profile::read(BufReader::new(log)));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{board}: the profiled run passed the {}-second timeout",
                timeout.as_secs()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    let profile = (reader.join())
        .map_err(|_| anyhow::anyhow!("the log reader panicked"))?
        .context("reading QEMU's log")?;
    if !status.success() {
        bail!("{board}: the profiled firmware exited with {status}");
    }
    print(&profile, top);
    Ok(())
}

fn print(profile: &Profile, top: usize) {
    let functions = profile.per_function();
    let total: u64 = functions.iter().map(|(_, n)| n).sum();
    let share = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
    let kernels: u64 = (functions.iter())
        .filter(|(f, _)| f.starts_with("sprig_runtime::kernels::"))
        .map(|(_, n)| n)
        .sum();
    println!(
        "{total} instructions in all, {kernels} in sprig_runtime::kernels ({:.1} %)",
        share(kernels)
    );
    println!("\n| instructions | share | function |\n|---:|---:|---|");
    for (function, n) in functions.iter().take(top) {
        println!("| {n} | {:.1} % | `{function}` |", share(*n));
    }
    println!(
        "\n| instructions | block | length | executions | function |\n|---:|---|---:|---:|---|"
    );
    for (pc, n, count, function) in profile.per_block().into_iter().take(top) {
        let len = profile.block_len.get(&pc).copied().unwrap_or(0);
        println!(
            "| {n} | 0x{pc:08x} | {len} | {count} | `{}` |",
            demangle(function)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARM_LOG: &str = "\
IN: _ZN13sprig_runtime7kernels3dot17h0123456789abcdefE
0x00000100:  f000 f8d6  bl       #0x2b0
0x00000104:  4770       bx       lr

Trace 0: 0x7fc02c000100 [00800408/00000100/00000110/ff020200] _ZN13sprig_runtime7kernels3dot17h0123456789abcdefE
Trace 0: 0x7fc02c000100 [00800408/00000100/00000110/ff020200] _ZN13sprig_runtime7kernels3dot17h0123456789abcdefE
IN: Reset
0x00000040:  2000       movs     r0, #0
Trace 0: 0x7fc02c000200 [00800408/00000040/00000110/ff020200] Reset
";

    #[test]
    fn blocks_are_executions_times_length() {
        let profile = Profile::read(ARM_LOG.as_bytes()).unwrap();
        assert_eq!(profile.block_len[&0x100], 2);
        assert_eq!(profile.block_len[&0x40], 1);
        let blocks = profile.per_block();
        assert_eq!(
            blocks[0],
            (
                0x100,
                4,
                2,
                "_ZN13sprig_runtime7kernels3dot17h0123456789abcdefE"
            )
        );
        assert_eq!(
            profile.per_function(),
            [
                ("sprig_runtime::kernels::dot".to_string(), 4),
                ("Reset".to_string(), 1)
            ]
        );
    }

    #[test]
    fn risc_v_lines_read_the_same() {
        let line = "0: 0x7f0000001000 [00000000/0000000080000abc/00000000/00000000] main";
        assert_eq!(exec_line(line), Some((0x8000_0abc, "main".to_string())));
        assert_eq!(
            instruction_address("0x80000abc:  00000297          auipc t0,0"),
            Some(0x8000_0abc)
        );
    }

    #[test]
    fn symbols_demangle_without_their_hash() {
        assert_eq!(
            demangle("_ZN13sprig_runtime5model22Model$LT$_$C$_$C$_$GT$5parse17h8ec81dbabd811c99E"),
            "sprig_runtime::model::Model<_,_,_>::parse"
        );
        assert_eq!(
            demangle("_ZN4core4iter8closures28_$u7b$$u7b$closure$u7d$$u7d$17h105049c45b6e8408E"),
            "core::iter::closures::{{closure}}"
        );
        assert_eq!(demangle("memset"), "memset");
    }
}
