//! A training process killed (SIGKILL) in the middle of an epoch and started again with
//! resume ends with exactly the weights of a run that was never interrupted.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

const EPOCHS: &str = "3";
const IMAGES: &str = "3000";

fn trainer(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_train_resumable"));
    cmd.args([dir.to_str().unwrap_or_default(), EPOCHS, IMAGES]);
    cmd
}

fn run_to_end(dir: &Path) -> Result<()> {
    let status = trainer(dir).status().context("starting train_resumable")?;
    if !status.success() {
        bail!("train_resumable failed: {status}");
    }
    Ok(())
}

fn final_weights(dir: &Path) -> Result<Vec<(String, Vec<u32>)>> {
    let mut tensors: Vec<(String, Tensor)> =
        candle_core::safetensors::load(dir.join("final.safetensors"), &Device::Cpu)?
            .into_iter()
            .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
        .into_iter()
        .map(|(k, t)| {
            Ok((
                k,
                t.flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .map(|x| x.to_bits())
                    .collect(),
            ))
        })
        .collect()
}

#[test]
fn killed_mid_epoch_then_resumed_matches_an_uninterrupted_run() -> Result<()> {
    let whole = tempfile::tempdir()?;
    run_to_end(whole.path())?;

    // Start again elsewhere and kill the process once the first epoch's checkpoint is
    // on disk, i.e. somewhere inside the second epoch.
    let killed = tempfile::tempdir()?;
    let mut child = trainer(killed.path()).spawn()?;
    let started = Instant::now();
    while !killed.path().join("state.json").exists() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill()?;
            bail!("no checkpoint after 120 s");
        }
        if let Some(status) = child.try_wait()? {
            bail!("train_resumable ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill()?; // SIGKILL: no cleanup runs
    child.wait()?;
    assert!(
        !killed.path().join("final.safetensors").exists(),
        "the run finished before the kill"
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(killed.path().join("state.json"))?)?;
    let done = state["epochs_completed"]
        .as_u64()
        .context("epochs_completed")?;
    assert!(done < 3, "killed after {done} epochs");

    run_to_end(killed.path())?;
    assert_eq!(final_weights(killed.path())?, final_weights(whole.path())?);
    Ok(())
}
