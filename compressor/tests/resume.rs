//! Checkpoint and resume: a run stopped at an epoch boundary and resumed ends with the
//! weights of an uninterrupted run, bit for bit; a checkpoint of another run, a corrupt
//! checkpoint and a diverging run are clear errors that leave the checkpoint alone.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::models::Model;
use sprig_compressor::train::{self, checkpoint_path, TrainConfig, STATE_FILE};
use sprig_compressor::Error;

const SEED: u64 = 21;
const RUN_KEY: &str = "lenet5-resume-test";

fn small_data() -> Result<(Dataset, Dataset)> {
    let (train, test) = data::resolve(None)?.load()?;
    Ok((train.subset(640), test.subset(200)))
}

fn config(dir: &Path) -> TrainConfig {
    let mut cfg = TrainConfig::new(2, SEED);
    cfg.checkpoint_dir = Some(dir.to_path_buf());
    cfg.run_key = RUN_KEY.into();
    cfg.progress = false;
    cfg
}

fn lenet() -> Result<Model> {
    Ok(Model::new("lenet5", 10, &Device::Cpu, SEED)?)
}

/// Every variable as raw bits, by name.
fn weights(model: &Model) -> Result<Vec<(String, Vec<u32>)>> {
    model
        .all_vars()
        .into_iter()
        .map(|(k, v)| {
            let bits = v
                .as_tensor()
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|x| x.to_bits())
                .collect();
            Ok((k, bits))
        })
        .collect()
}

/// Trains one epoch of a two-epoch run into `dir` and stops, as a killed run would.
fn first_epoch(dir: &Path, train_set: &Dataset, test_set: &Dataset) -> Result<Model> {
    let mut model = lenet()?;
    let mut cfg = config(dir);
    cfg.max_epochs_this_run = Some(1);
    let report = train::train(&mut model, train_set, test_set, &cfg, None)?;
    assert!(!report.finished, "stopped after one of two epochs");
    assert_eq!(report.history.len(), 1);
    assert!(
        checkpoint_path(dir).is_file(),
        "no checkpoint after epoch 1"
    );
    Ok(model)
}

#[test]
fn resumed_run_matches_an_uninterrupted_one_bit_for_bit() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let tmp = tempfile::tempdir()?;

    // A: two epochs in one go.
    let dir_a = tmp.path().join("a");
    let mut a = lenet()?;
    let report_a = train::train(&mut a, &train_set, &test_set, &config(&dir_a), None)?;
    assert!(report_a.finished);
    assert_eq!(report_a.history.len(), 2);

    // B: one epoch, "killed", then a fresh process (a new model from the same seed)
    // resumes from the checkpoint and does the second epoch.
    let dir_b = tmp.path().join("b");
    let stopped = first_epoch(&dir_b, &train_set, &test_set)?;
    assert_ne!(
        weights(&stopped)?,
        weights(&a)?,
        "one epoch should not equal two"
    );
    drop(stopped);
    let mut b = lenet()?;
    let mut cfg = config(&dir_b);
    cfg.resume = true;
    let report_b = train::train(&mut b, &train_set, &test_set, &cfg, None)?;
    assert!(report_b.finished);
    assert_eq!(
        report_b.history.len(),
        2,
        "the resumed run keeps the first epoch's stats"
    );

    let (wa, wb) = (weights(&a)?, weights(&b)?);
    assert_eq!(wa.len(), wb.len());
    for ((name_a, va), (name_b, vb)) in wa.iter().zip(&wb) {
        assert_eq!(name_a, name_b);
        let differing = va.iter().zip(vb).filter(|(x, y)| x != y).count();
        assert_eq!(
            differing,
            0,
            "{name_a}: {differing} of {} values differ after resume",
            va.len()
        );
    }
    for (ha, hb) in report_a.history.iter().zip(&report_b.history) {
        assert_eq!(
            (ha.epoch, ha.train_loss, ha.test_accuracy),
            (hb.epoch, hb.train_loss, hb.test_accuracy)
        );
    }
    // Both runs left the same final checkpoint state.
    let state = |dir: &Path| -> Result<serde_json::Value> {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(STATE_FILE))?)?;
        for h in v["history"].as_array_mut().context("history")? {
            let h = h.as_object_mut().context("epoch stats")?;
            h.remove("seconds");
            h.remove("images_per_second");
        }
        Ok(v)
    };
    assert_eq!(state(&dir_a)?, state(&dir_b)?);

    // Resuming a finished run trains nothing and changes nothing.
    let report = train::train(&mut b, &train_set, &test_set, &cfg, None)?;
    assert!(report.finished);
    assert_eq!(weights(&b)?, wa);
    Ok(())
}

#[test]
fn a_checkpoint_of_another_run_is_refused() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let train_set = train_set.subset(128);
    let tmp = tempfile::tempdir()?;
    first_epoch(tmp.path(), &train_set, &test_set)?;
    let bytes = std::fs::read(checkpoint_path(tmp.path()))?;

    for (run_key, seed) in [("another-run", SEED), (RUN_KEY, SEED + 1)] {
        let mut cfg = config(tmp.path());
        cfg.resume = true;
        cfg.run_key = run_key.into();
        cfg.seed = seed;
        let err = train::train(&mut lenet()?, &train_set, &test_set, &cfg, None)
            .expect_err("resumed a foreign run");
        let message = err.to_string();
        assert!(matches!(err, Error::File { .. }), "{message}");
        assert!(
            message.contains(&checkpoint_path(tmp.path()).display().to_string()),
            "no path in: {message}"
        );
        assert!(
            message.contains(RUN_KEY),
            "the checkpoint's run is not named in: {message}"
        );
        assert_eq!(
            std::fs::read(checkpoint_path(tmp.path()))?,
            bytes,
            "the refused checkpoint changed"
        );
    }
    Ok(())
}

#[test]
fn a_corrupt_checkpoint_is_an_error_naming_the_file() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let train_set = train_set.subset(128);
    let tmp = tempfile::tempdir()?;
    first_epoch(tmp.path(), &train_set, &test_set)?;
    let path = checkpoint_path(tmp.path());
    let good = std::fs::read(&path)?;

    let not_sprig = safetensors::serialize(
        [(
            "x",
            &Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu)?,
        )],
        None,
    )?;
    let corruptions: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("truncated header", good[..6].to_vec()),
        ("truncated data", good[..good.len() / 2].to_vec()),
        ("one byte too many", [good.as_slice(), &[0]].concat()),
        ("not a sprig checkpoint", not_sprig),
    ];
    for (what, bytes) in corruptions {
        std::fs::write(&path, &bytes)?;
        let mut cfg = config(tmp.path());
        cfg.resume = true;
        let err = train::train(&mut lenet()?, &train_set, &test_set, &cfg, None)
            .err()
            .with_context(|| format!("{what}: a corrupt checkpoint was accepted"))?;
        let message = err.to_string();
        assert!(
            message.contains(&path.display().to_string()),
            "{what}: no path in: {message}"
        );
        assert_eq!(
            std::fs::read(&path)?,
            bytes,
            "{what}: the checkpoint was overwritten"
        );
    }
    Ok(())
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let train_set = train_set.subset(256);
    let tmp = tempfile::tempdir()?;
    first_epoch(tmp.path(), &train_set, &test_set)?;
    let path = checkpoint_path(tmp.path());
    let (checkpoint, state) = (
        std::fs::read(&path)?,
        std::fs::read(tmp.path().join(STATE_FILE))?,
    );
    let unchanged = || -> Result<()> {
        assert_eq!(std::fs::read(&path)?, checkpoint, "checkpoint changed");
        assert_eq!(
            std::fs::read(tmp.path().join(STATE_FILE))?,
            state,
            "state.json changed"
        );
        Ok(())
    };

    // Resumed with an absurd learning rate, the second epoch blows up within a few steps.
    let mut cfg = config(tmp.path());
    cfg.resume = true;
    cfg.lr = 1e30;
    match train::train(&mut lenet()?, &train_set, &test_set, &cfg, None) {
        Err(Error::NonFiniteLoss { loss, epoch, step }) => {
            assert!(!loss.is_finite());
            assert_eq!(epoch, 1, "diverged in the resumed epoch");
            assert!(
                step >= 4,
                "step {step} is before the resumed epoch (4 steps per epoch)"
            );
        }
        other => panic!("expected NonFiniteLoss, got {:?}", other.map(|r| r.history)),
    }
    unchanged()?;

    // A NaN weight: the very first loss is NaN.
    let model = lenet()?;
    let (name, var) = model
        .all_vars()
        .into_iter()
        .find(|(k, _)| k == "fc3.weight")
        .context("fc3.weight")?;
    var.set(&var.as_tensor().affine(0.0, f64::NAN)?)?;
    let mut model = model;
    let err = train::train(&mut model, &train_set, &test_set, &config(tmp.path()), None)
        .expect_err(&format!("trained with NaN in {name}"));
    assert!(
        matches!(
            err,
            Error::NonFiniteLoss {
                epoch: 0,
                step: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("checkpoint was left untouched"),
        "{err}"
    );
    unchanged()
}

/// Divergence in an epoch's last optimizer step leaves a finite loss for that step but
/// non-finite weights; they must not be saved over the last good checkpoint.
#[test]
fn divergence_in_the_last_step_of_an_epoch_is_not_checkpointed() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let train_set = train_set.subset(64); // one step per epoch
    let tmp = tempfile::tempdir()?;
    first_epoch(tmp.path(), &train_set, &test_set)?;
    let path = checkpoint_path(tmp.path());
    let good = std::fs::read(&path)?;
    let mut cfg = config(tmp.path());
    cfg.resume = true;
    cfg.lr = 1e39; // overflows every updated weight to ±inf (or NaN) in one step
    let mut model = lenet()?;
    let result = train::train(&mut model, &train_set, &test_set, &cfg, None);
    let finite = weights(&model)?
        .iter()
        .all(|(_, v)| v.iter().all(|b| f32::from_bits(*b).is_finite()));
    assert!(
        finite || result.is_err(),
        "training diverged and reported success"
    );
    assert_eq!(
        std::fs::read(&path)?,
        good,
        "the last good checkpoint was overwritten"
    );
    Ok(())
}
