//! Trials: independent `cargo xtask compress` processes, each with its own plan and
//! output folder. A trial whose folder holds a `summary.json` is finished and is not run
//! again; an unfinished one continues from its checkpoints (`--resume`). Locally they
//! run `--jobs` at a time; `slurm.rs` submits the same command lines as a job array.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use anyhow::Context;
use serde::Deserialize;

/// One trial: a plan (`None`: the built-in default plan) run into `dir`.
#[derive(Debug, Clone)]
pub struct Trial {
    pub name: String,
    pub dir: PathBuf,
    pub plan: Option<serde_json::Value>,
}

/// The `compress` flags every trial shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub model: String,
    pub data: Option<PathBuf>,
    pub normalize: Option<String>,
    pub epochs: usize,
    pub ft_epochs: usize,
    pub qat_epochs: usize,
    pub seed: u64,
    pub train_limit: Option<usize>,
    pub cache: PathBuf,
}

/// What a finished trial's `summary.json` says.
#[derive(Debug, Clone, Deserialize)]
pub struct TrialSummary {
    pub float_accuracy: f32,
    pub deployed_accuracy: Option<f32>,
    /// Why no `model.sprig` was written (a plan without a quantizer...).
    pub packed_skipped: Option<String>,
    /// The weighted layers as the trial left them (a speedup changes their MACs).
    pub layers: Vec<TrialLayer>,
    pub arena_bytes: Option<usize>,
    pub seconds: f32,
}

/// One weighted layer of a trial's summary.
#[derive(Debug, Clone, Deserialize)]
pub struct TrialLayer {
    pub name: String,
    pub macs: usize,
}

/// A trial's end: its summary, or why it has none.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub trial: Trial,
    pub result: Result<TrialSummary, String>,
}

/// File names inside a trial folder.
pub const PLAN_FILE: &str = "plan.json";
pub const LOG_FILE: &str = "log.txt";
pub const SUMMARY_FILE: &str = "summary.json";

impl Trial {
    /// Writes the trial's plan (if it has one) and returns its `compress` arguments.
    pub fn prepare(&self, common: &Common) -> anyhow::Result<Vec<String>> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let mut args = vec![
            "compress".to_string(),
            "--model".into(),
            common.model.clone(),
            "--out".into(),
            path_arg(&self.dir),
            "--cache".into(),
            path_arg(&common.cache),
            "--epochs".into(),
            common.epochs.to_string(),
            "--ft-epochs".into(),
            common.ft_epochs.to_string(),
            "--qat-epochs".into(),
            common.qat_epochs.to_string(),
            "--seed".into(),
            common.seed.to_string(),
            "--resume".into(),
        ];
        if let Some(plan) = &self.plan {
            let path = self.dir.join(PLAN_FILE);
            let text = serde_json::to_string_pretty(plan)?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            args.extend(["--config".into(), path_arg(&path)]);
        }
        if let Some(data) = &common.data {
            args.extend(["--data".into(), path_arg(data)]);
        }
        if let Some(n) = &common.normalize {
            args.extend(["--normalize".into(), n.clone()]);
        }
        if let Some(n) = common.train_limit {
            args.extend(["--train-limit".into(), n.to_string()]);
        }
        Ok(args)
    }

    /// The finished trial's summary, if there is one.
    pub fn finished(&self) -> Option<TrialSummary> {
        read_summary(&self.dir.join(SUMMARY_FILE)).ok()
    }

    /// The outcome once the process has ended: its summary, or the log's last lines.
    pub fn outcome(&self, status: &str) -> Outcome {
        let result = match read_summary(&self.dir.join(SUMMARY_FILE)) {
            Ok(s) => Ok(s),
            Err(_) => Err(format!(
                "{status}; {}",
                log_tail(&self.dir.join(LOG_FILE), 3)
            )),
        };
        Outcome {
            trial: self.clone(),
            result,
        }
    }
}

/// A trial folder's name for `plan`: `plan-` and a hash of its text (FNV-1a, stable
/// across builds), so that the same plan always finds its earlier results.
pub fn folder_of(plan: &serde_json::Value) -> String {
    let text = plan.to_string();
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("plan-{hash:016x}")
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn read_summary(path: &Path) -> anyhow::Result<TrialSummary> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a summary", path.display()))
}

/// What a failed trial's log says: its `Error:` report with the causes (without a
/// backtrace), or else its last `n` non-empty lines.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let report: Vec<&str> = match lines.iter().position(|l| l.starts_with("Error: ")) {
        Some(at) => (lines[at..].iter())
            .take_while(|l| !l.starts_with("Stack backtrace:"))
            .copied()
            .collect(),
        None => lines[lines.len().saturating_sub(n)..].to_vec(),
    };
    format!("{}: {}", path.display(), report.join(" "))
}

/// Runs the unfinished `trials` on this machine, `jobs` at a time, each a process of
/// this same xtask binary with the CPU's threads shared out; finished ones are taken as
/// they are. Outcomes come back in `trials` order.
pub fn run_local(trials: &[Trial], common: &Common, jobs: usize) -> anyhow::Result<Vec<Outcome>> {
    let exe = xtask_exe()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cores / jobs.max(1)).max(1);
    let mut prepared = Vec::new();
    for trial in trials {
        if trial.finished().is_none() {
            prepared.push((trial, trial.prepare(common)?));
        }
    }
    let queue = Mutex::new(prepared.into_iter());
    let ended = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some((trial, args)) = next else { break };
                eprintln!("trial {}: started ({})", trial.name, trial.dir.display());
                let status = run_one(&exe, &args, &trial.dir, threads);
                let outcome = trial.outcome(&status);
                match &outcome.result {
                    Ok(s) => eprintln!(
                        "trial {}: done in {:.0} s, deployed {}",
                        trial.name,
                        s.seconds,
                        s.deployed_accuracy
                            .map_or("-".into(), |a| format!("{:.2} %", 100.0 * a))
                    ),
                    Err(e) => eprintln!("trial {}: FAILED: {e}", trial.name),
                }
                ended
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(outcome);
            });
        }
    });
    let ended = ended.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(trials
        .iter()
        .map(|t| {
            ended
                .iter()
                .find(|o| o.trial.name == t.name)
                .cloned()
                .unwrap_or_else(|| t.outcome("finished in an earlier run"))
        })
        .collect())
}

/// The xtask binary that trials run: this process's own, or, when a rebuild has
/// replaced it while the search ran (Linux then names the old one `… (deleted)`), the
/// new one at the same path.
pub fn xtask_exe() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    if exe.exists() {
        return Ok(exe);
    }
    let text = exe.to_string_lossy();
    match text.strip_suffix(" (deleted)") {
        Some(path) if Path::new(path).exists() => Ok(PathBuf::from(path)),
        _ => anyhow::bail!(
            "the xtask binary {} is gone; rebuild it and rerun",
            exe.display()
        ),
    }
}

/// Runs one trial process with its output in the trial's log; returns its exit status
/// in words.
fn run_one(exe: &Path, args: &[String], dir: &Path, threads: usize) -> String {
    let log = match std::fs::File::create(dir.join(LOG_FILE)) {
        Ok(f) => f,
        Err(e) => return format!("cannot create {}: {e}", dir.join(LOG_FILE).display()),
    };
    let err = match log.try_clone() {
        Ok(f) => f,
        Err(e) => return format!("cannot share the log: {e}"),
    };
    match Command::new(exe)
        .args(args)
        .env("RAYON_NUM_THREADS", threads.to_string())
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .status()
    {
        Ok(status) => format!("exited with {status}"),
        Err(e) => format!("could not start {}: {e}", exe.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_keeps_its_folder_and_another_plan_gets_another() {
        let a = serde_json::json!({ "pruner": { "algorithm": "LevelPruner" } });
        let b = serde_json::json!({ "pruner": { "algorithm": "AGP_Pruner" } });
        assert_eq!(folder_of(&a), folder_of(&a.clone()));
        assert_ne!(folder_of(&a), folder_of(&b));
        // Pinned: a folder name must not change between builds, or resumed runs would
        // redo their trials.
        assert_eq!(folder_of(&serde_json::json!({})), "plan-08f44b07b5901a25");
    }

    #[test]
    fn a_failed_trial_is_told_by_its_error_report_not_its_backtrace() {
        let dir = std::env::temp_dir().join(format!("sprig-log-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(LOG_FILE);
        std::fs::write(
            &log,
            "data: subset\nError: compress failed\n\nCaused by:\n    plan.json: op name `x` matches no layer\n\nStack backtrace:\n   0: main\n",
        )
        .unwrap();
        let told = log_tail(&log, 3);
        assert!(
            told.ends_with(
                "Error: compress failed Caused by: plan.json: op name `x` matches no layer"
            ),
            "{told}"
        );
        std::fs::write(&log, "one\ntwo\n\nthree\nfour\n").unwrap();
        assert!(log_tail(&log, 2).ends_with(": three four"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
