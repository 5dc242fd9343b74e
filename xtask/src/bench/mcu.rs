//! `cargo xtask bench mcu`: the packed model of a compress run on every QEMU board:
//! instructions per inference and per MAC (QEMU with `-icount shift=0`, see
//! boards/README.md), runtime code size (flash minus model and vectors) with the
//! model's op set and with every int8 kernel linked, and peak RAM (static data + arena
//! + measured stack).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use sprig_board_build::Kernels;

use crate::boards::{self, kib};
use crate::firmware::{self, Input};
use crate::sim::{simulate, SimResult};
use crate::size;

/// Issue 4's targets for this first, portable-kernel version.
const TARGET_PER_MAC_M4: f64 = 6.0;
const TARGET_CODE_THUMBV7EM: u64 = 16 * 1024;

/// Dense multiply-accumulates per inference, from the run's summary.json.
fn macs(artifacts: &Path) -> anyhow::Result<u64> {
    let path = artifacts.join("summary.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {}; run `cargo xtask compress --out {}` first",
            path.display(),
            artifacts.display()
        )
    })?;
    let summary: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let layers = summary["layers"]
        .as_array()
        .with_context(|| format!("{}: no `layers`", path.display()))?;
    Ok(layers.iter().filter_map(|l| l["macs"].as_u64()).sum())
}

pub fn run(artifacts: &Path, output: &Path) -> anyhow::Result<()> {
    let macs = macs(artifacts)?;
    if macs == 0 {
        bail!(
            "{}: the model has no multiply-accumulates",
            artifacts.display()
        );
    }
    let input = Input {
        artifacts: artifacts.to_path_buf(),
        max_vectors: None,
    };
    // Each board's result, with its code size when every int8 kernel is linked.
    let mut results: Vec<(SimResult, u64)> = Vec::new();
    for board in boards::simulated()? {
        let all_ops = firmware::build_with(&board, &input, Kernels::All)?;
        let all_ops_code = size::measure(&all_ops.elf)?.code();
        let r = simulate(&board, &input, Kernels::OfModel, Duration::from_secs(300))?;
        if r.mismatches > 0 {
            bail!(
                "{board}: {} of {} vectors differ from the host; not benchmarking a wrong model",
                r.mismatches,
                r.vectors
            );
        }
        println!(
            "{board}: {:.0} {} per inference, {:.2} per MAC; code {} B ({all_ops_code} B with \
             every int8 kernel)",
            r.per_inference,
            r.unit,
            r.per_inference / macs as f64,
            r.size.code()
        );
        results.push((r, all_ops_code));
    }
    let mut md = String::new();
    md.push_str(&format!(
        "\n## Microcontrollers under QEMU, {} ({} MACs per inference)\n\n",
        artifacts.display(),
        macs
    ));
    md.push_str(&format!(
        "- command: `cargo xtask bench mcu --artifacts {}`\n",
        artifacts.display()
    ));
    md.push_str("- counting: QEMU `-icount shift=0` (one instruction per virtual ns) read through a timer or `minstret`; instructions, not cycles (boards/README.md)\n");
    md.push_str("- build: boards' release profile (opt-level \"s\", fat LTO), Arm boards linked by flip-link; every vector bit-exact with the host runtime before counting\n");
    md.push_str("- code: flash − model − vectors, with the kernels of the model's op kinds only (`Model`'s op set, as the firmware builds by default) and with every int8 kernel (`--all-ops`)\n");
    md.push_str(&format!(
        "- machine: {} (host running QEMU)\n",
        super::machine()
    ));
    md.push_str(&format!("- date: {}\n\n", super::today()));
    md.push_str("| board | target | instructions / inference | per MAC | code, model's ops | code, all int8 ops | model | peak RAM (static + stack) | accuracy on vectors |\n");
    md.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for (r, all_ops_code) in &results {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {} | {} | {} | {} ({} + {}) | {:.1} % ({} vectors) |\n",
            r.board,
            r.board.target,
            r.per_inference,
            r.per_inference / macs as f64,
            kib(r.size.code()),
            kib(*all_ops_code),
            kib(r.size.model),
            kib(r.peak_ram()),
            kib(r.size.ram()),
            kib(r.stack),
            r.accuracy(),
            r.vectors,
        ));
    }
    if let Some((m4, m4_all_ops)) = results
        .iter()
        .find(|(r, _)| r.board.name == "qemu-mps2-an386")
    {
        let per_mac = m4.per_inference / macs as f64;
        let verdict = |met: bool| if met { "met" } else { "**not met**" };
        md.push_str(&format!(
            "\nTargets (issue 4): ≤ {TARGET_PER_MAC_M4} instructions per MAC on Cortex-M4: {per_mac:.2}, {}; runtime code ≤ {} on thumbv7em: {} with the model's op set (as the firmware builds), {}; {} with every int8 kernel linked (`--all-ops`), {}. For reference, not measured by us: TFLite Micro with CMSIS-NN 6.8–9.6 cycles/MAC on a Cortex-M4 (MLPerf Tiny v0.5), TFLite Micro's framework alone ≈ 10–16 KB of flash.\n",
            verdict(per_mac <= TARGET_PER_MAC_M4),
            kib(TARGET_CODE_THUMBV7EM),
            kib(m4.size.code()),
            verdict(m4.size.code() <= TARGET_CODE_THUMBV7EM),
            kib(*m4_all_ops),
            verdict(*m4_all_ops <= TARGET_CODE_THUMBV7EM),
        ));
    }
    crate::bench::append_report(output, &md)
}
