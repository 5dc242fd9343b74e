//! `--executor slurm`: the unfinished trials submitted as one Slurm job array
//! (`sbatch --array`), Slurm used as it is. Task `i` runs trial `i`'s `compress`
//! command line from its own script, writing the trial's `log.txt` as a local run does;
//! Slurm's own output per task goes to `slurm/<job>_<task>.out`. The run waits for
//! the array to leave the queue, then reads each trial's `summary.json`: a trial
//! without one is submitted again (`--retries` times, in a smaller array of just
//! those), and if it still has none it is reported failed with its log's last lines,
//! never dropped.
//!
//! The repository, the build (`target/`) and the output folder must be on a file
//! system every node sees (as for any Slurm job); the trials run the very xtask binary
//! that submitted them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::trials::{Common, Outcome, Trial, LOG_FILE};

/// How often the queue is polled.
const POLL: Duration = Duration::from_secs(2);
/// Failed `squeue` calls in a row before the run gives up waiting.
const MAX_QUEUE_ERRORS: usize = 30;

/// Submits the unfinished `trials` into `dir` (scripts and Slurm's logs), waits, and
/// returns every trial's outcome in `trials` order.
pub fn run_array(
    trials: &[Trial],
    common: &Common,
    dir: &Path,
    retries: usize,
) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let exe = super::trials::xtask_exe()?;
    let root = std::env::current_dir()?;
    let mut pending: Vec<usize> = (0..trials.len())
        .filter(|&i| trials[i].finished().is_none())
        .collect();
    for &i in &pending {
        let args = trials[i].prepare(common)?;
        write_task_script(
            &dir.join(format!("task-{i}.sh")),
            &root,
            &exe,
            &args,
            &trials[i],
        )?;
    }
    let mut attempt = 0;
    while !pending.is_empty() && attempt <= retries {
        let job = submit(dir, &pending)?;
        eprintln!(
            "slurm: job array {job} submitted ({} trial{}, attempt {})",
            pending.len(),
            if pending.len() == 1 { "" } else { "s" },
            attempt + 1
        );
        wait(&job)?;
        pending.retain(|&i| trials[i].finished().is_none());
        for &i in &pending {
            eprintln!(
                "slurm: trial {} has no summary after job {job}",
                trials[i].name
            );
        }
        attempt += 1;
    }
    Ok(trials
        .iter()
        .map(|t| match t.finished() {
            Some(_) => t.outcome("finished"),
            None => t.outcome(&format!("failed under Slurm after {attempt} attempt(s)")),
        })
        .collect())
}

/// Task `i`'s script: the trial's command line, its output into the trial's log.
fn write_task_script(
    path: &Path,
    root: &Path,
    exe: &Path,
    args: &[String],
    trial: &Trial,
) -> anyhow::Result<()> {
    let quoted: Vec<String> = std::iter::once(exe.to_string_lossy().into_owned())
        .chain(args.iter().cloned())
        .map(|a| shell_quote(&a))
        .collect();
    let log = trial.dir.join(LOG_FILE);
    let text = format!(
        "#!/bin/sh\n# trial {name}\ncd {root} || exit 1\nRAYON_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}} exec {cmd} > {log} 2>&1\n",
        name = trial.name,
        root = shell_quote(&root.to_string_lossy()),
        cmd = quoted.join(" "),
        log = shell_quote(&log.to_string_lossy()),
    );
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `sbatch --array` over `tasks` (indices into the task scripts); returns the job id.
fn submit(dir: &Path, tasks: &[usize]) -> anyhow::Result<String> {
    let dir = std::fs::canonicalize(dir)?;
    let indices: Vec<String> = tasks.iter().map(|i| i.to_string()).collect();
    let script = dir.join("array.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec sh {}/task-\"$SLURM_ARRAY_TASK_ID\".sh\n",
            shell_quote(&dir.to_string_lossy())
        ),
    )
    .with_context(|| format!("writing {}", script.display()))?;
    let output = slurm_command("sbatch")
        .arg("--parsable")
        .arg("--job-name=sprig-auto")
        .arg(format!("--array={}", indices.join(",")))
        .arg("--cpus-per-task=1")
        .arg(format!("--output={}/%A_%a.out", dir.display()))
        .arg(&script)
        .output()
        .context("running sbatch (is Slurm installed? `--executor local` runs trials here)")?;
    if !output.status.success() {
        bail!(
            "sbatch refused the job array: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let text = String::from_utf8_lossy(&output.stdout);
    let job = text.trim().split(';').next().unwrap_or("").to_string();
    if job.is_empty() || !job.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch printed no job id: `{}`", text.trim());
    }
    Ok(job)
}

/// Polls `squeue` until no task of `job` is queued or running.
fn wait(job: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = String::new();
    let mut errors = 0;
    loop {
        let output = slurm_command("squeue")
            .args(["-h", "-j", job, "-o", "%i %T"])
            .output()
            .context("running squeue")?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        // A finished job drops out of squeue, or, once the controller has forgotten it,
        // squeue calls its id invalid; any other error (the controller unreachable) is
        // retried for a while.
        let gone = stderr.contains("Invalid job id");
        if (output.status.success() && text.is_empty()) || gone {
            eprintln!(
                "slurm: job {job} done after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        if !output.status.success() {
            errors += 1;
            if errors > MAX_QUEUE_ERRORS {
                bail!("squeue keeps failing for job {job}: {}", stderr.trim());
            }
            std::thread::sleep(POLL);
            continue;
        }
        errors = 0;
        let summary = format!("{} task(s) queued or running", text.lines().count());
        if summary != last {
            eprintln!("slurm: job {job}: {summary}");
            last = summary;
        }
        std::thread::sleep(POLL);
    }
}

/// A Slurm client command (found on PATH, or in /usr/bin where Debian puts them).
fn slurm_command(name: &str) -> Command {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    Command::new(if on_path {
        PathBuf::from(name)
    } else {
        Path::new("/usr/bin").join(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("runs/a b"), "'runs/a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        let out = Command::new("sh")
            .args(["-c", &format!("printf %s {}", shell_quote("a 'b' $HOME"))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "a 'b' $HOME");
    }
}
