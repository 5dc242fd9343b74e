//! The PyTorch side of `bench train --pytorch PYTHON`: runs `docs/bench_train_pytorch.py`
//! (the same LeNet-5, batch, AdamW step and images) with the given interpreter and
//! reads back its images/s and torch version.

use std::path::Path;
use std::process::Command;

use anyhow::Context;

/// One PyTorch measurement.
pub struct PytorchRun {
    pub images_per_s: f64,
    pub torch: String,
}

/// Runs the script over the IDX folder `data` with `threads` intra-op threads.
pub fn measure(
    python: &Path,
    data: &Path,
    images: usize,
    batch_size: usize,
    threads: usize,
) -> anyhow::Result<PytorchRun> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/bench_train_pytorch.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script)
        .arg("--data")
        .arg(data)
        .args(["--images", &images.to_string()])
        .args(["--batch-size", &batch_size.to_string()])
        .args(["--threads", &threads.to_string()]);
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).context("PyTorch script output is not UTF-8")?;
    let line = stdout
        .lines()
        .last()
        .with_context(|| format!("{cmd:?} printed nothing"))?;
    let json: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("parsing `{line}` from {cmd:?}"))?;
    Ok(PytorchRun {
        images_per_s: json["images_per_s"]
            .as_f64()
            .with_context(|| format!("no images_per_s in `{line}`"))?,
        torch: json["torch"].as_str().unwrap_or("unknown").to_string(),
    })
}
