//! What `cargo xtask ci` checks of `cargo xtask auto`, on the bundled subset and the
//! simulated micro:bit: a search under a model budget tighter than the default plan's
//! model, its chosen plan readable and its model run bit-exact on the board; a run
//! killed after its first finished trial, resumed without running that trial again;
//! the two inputs no search can serve (a board that does not exist, a budget no
//! candidate meets) refused with a clear message; and the trials submitted as a job
//! array to a real one-node Slurm (`tools/slurm/start-local.sh`), one of them a plan
//! that fails on purpose, reported after its retry and not lost.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};

const OUT: &str = "runs/ci-auto";
const BOARD: &str = "qemu-microbit";
/// Bytes of `model.sprig` the search may use: below the default plan's 22 KB.
const MAX_FLASH: &str = "20000";

fn auto_args(out: &str, board: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "auto",
        "--data",
        "data/fashion-mnist-subset",
        "--epochs",
        "2",
        "--ft-epochs",
        "1",
        "--qat-epochs",
        "1",
        "--iterations",
        "25",
        "--trials",
        "2",
        "--board",
        board,
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn xtask(args: &[String]) -> Command {
    let exe = crate::auto::xtask_exe().unwrap_or_else(|_| PathBuf::from("xtask"));
    let mut cmd = Command::new(exe);
    cmd.args(args);
    cmd
}

/// Every trial folder's `summary.json` with its modification time.
fn finished_trials(out: &Path) -> anyhow::Result<Vec<(PathBuf, SystemTime)>> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(out.join("trials")) else {
        return Ok(found);
    };
    for entry in entries {
        let summary = entry?.path().join("summary.json");
        if let Ok(meta) = std::fs::metadata(&summary) {
            found.push((summary, meta.modified()?));
        }
    }
    found.sort();
    Ok(found)
}

pub fn run() -> anyhow::Result<()> {
    let out = Path::new(OUT);
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {OUT}"))?;
    }
    let args = auto_args(OUT, BOARD, &["--max-flash", MAX_FLASH]);

    // A run killed (with its trial processes) once its first trial has finished.
    println!("$ xtask {} (killed after its first trial)", args.join(" "));
    let mut child = xtask(&args)
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cargo xtask auto")?;
    let started = Instant::now();
    let first = loop {
        let done = finished_trials(out)?;
        if let Some(first) = done.first() {
            break first.clone();
        }
        if let Some(status) = child.try_wait()? {
            bail!("auto ended ({status}) before any trial finished");
        }
        ensure!(
            started.elapsed() < Duration::from_secs(900),
            "no trial finished in 15 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let group = format!("-{}", child.id());
    Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()?;
    child.wait()?;
    println!("killed; {} had finished", first.0.display());

    // Resumed: it finishes, and the finished trial was not run again.
    println!("$ xtask {}", args.join(" "));
    let status = xtask(&args).status()?;
    ensure!(status.success(), "the resumed auto run failed ({status})");
    let after = finished_trials(out)?;
    let kept = after
        .iter()
        .find(|(p, _)| *p == first.0)
        .context("the first trial's summary")?;
    ensure!(
        kept.1 == first.1,
        "{} was written again: the trial ran twice",
        first.0.display()
    );
    ensure!(
        after.len() >= 2,
        "the resumed run finished {} trials",
        after.len()
    );

    // Its choice: an ordinary plan, within the budget, bit-exact on the board.
    let chosen = out.join("chosen.json");
    sprig_compressor::compress::Plan::from_path(&chosen)
        .with_context(|| format!("{} is not a plan", chosen.display()))?;
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("pareto.json")).context("reading pareto.json")?,
    )?;
    let vectors = report["board_check"]["vectors"].as_u64().unwrap_or(0);
    ensure!(vectors > 0, "pareto.json has no board check");
    let chosen_name = report["chosen"].as_str().context("a chosen trial")?;
    let row = (report["trials"].as_array().context("trials")?.iter())
        .find(|t| t["name"] == chosen_name)
        .context("the chosen trial's row")?;
    let bytes = row["estimate"]["model_bytes"].as_u64().unwrap_or(u64::MAX);
    ensure!(
        bytes <= MAX_FLASH.parse()?,
        "the chosen model is {bytes} B, over {MAX_FLASH}"
    );
    println!("auto: chose {chosen_name} ({bytes} B), {vectors} vectors bit-exact on qemu-microbit");

    // Inputs nothing can serve.
    refused(
        &auto_args(OUT, BOARD, &["--max-flash", "1000"]),
        "no candidate fits",
    )?;
    refused(
        &auto_args("runs/ci-auto-bad", "no-such-board", &[]),
        "unknown board `no-such-board`",
    )?;
    slurm_array(out)
}

/// The search of the run in `local` (kept: settings, baseline, sensitivity,
/// calibration, search) resumed in a new folder with its trials, and a plan that fails
/// on purpose, submitted to Slurm as one job array.
fn slurm_array(local: &Path) -> anyhow::Result<()> {
    const SLURM_OUT: &str = "runs/ci-auto-slurm";
    let out = Path::new(SLURM_OUT);
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("removing {SLURM_OUT}"))?;
    }
    for dir in ["", "baseline"] {
        std::fs::create_dir_all(out.join(dir))?;
        for entry in std::fs::read_dir(local.join(dir))? {
            let path = entry?.path();
            if path.is_file() {
                let to = out.join(dir).join(path.file_name().context("a file name")?);
                std::fs::copy(&path, &to).with_context(|| format!("copying {}", path.display()))?;
            }
        }
    }
    let broken = out.join("broken-plan.json");
    std::fs::write(
        &broken,
        r#"{"pruner": {"algorithm": "LevelPruner",
            "config_list": [{"op_names": ["no_such_layer"], "sparsity": 0.5}]}}"#,
    )?;
    let start = Command::new("tools/slurm/start-local.sh")
        .status()
        .context("starting Slurm (tools/slurm/start-local.sh; .ci/run installs slurm-wlm)")?;
    ensure!(
        start.success(),
        "tools/slurm/start-local.sh failed ({start})"
    );
    let broken_arg = broken.to_string_lossy().into_owned();
    let args = auto_args(
        SLURM_OUT,
        BOARD,
        &[
            "--max-flash",
            MAX_FLASH,
            "--executor",
            "slurm",
            "--retries",
            "1",
            "--compare",
            &broken_arg,
        ],
    );
    println!("$ xtask {}", args.join(" "));
    let status = xtask(&args).status()?;
    let stopped = Command::new("tools/slurm/stop-local.sh").status();
    ensure!(status.success(), "auto --executor slurm failed ({status})");
    stopped.context("stopping Slurm")?;

    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("pareto.json")).context("reading pareto.json")?,
    )?;
    let trials = report["trials"].as_array().context("trials")?;
    ensure!(
        trials.len() == 4,
        "{} trials in the table, 4 submitted",
        trials.len()
    );
    for t in trials {
        let name = t["name"].as_str().unwrap_or("?");
        let error = t["error"].as_str().unwrap_or("");
        if name == "broken-plan" {
            ensure!(
                error.contains("after 2 attempt(s)") && error.contains("no_such_layer"),
                "the failing trial is reported as: {error}"
            );
        } else {
            ensure!(
                t["estimate"].is_object(),
                "trial {name} has no result: {error}"
            );
        }
    }
    println!("slurm: 4 trials in one job array, 3 results gathered, the failing one reported after its retry");
    Ok(())
}

/// Runs `args`, which must fail with `message` in its error output.
fn refused(args: &[String], message: &str) -> anyhow::Result<()> {
    println!("$ xtask {} (must fail)", args.join(" "));
    let output = xtask(args).stdout(Stdio::null()).output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "it succeeded");
    ensure!(
        stderr.contains(message),
        "its error does not say `{message}`:\n{stderr}"
    );
    let error = (stderr.lines())
        .find(|l| l.starts_with("Error: "))
        .unwrap_or(message);
    println!("refused: {error}");
    Ok(())
}
