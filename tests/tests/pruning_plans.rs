//! Pruning plans through the whole `cargo xtask compress` job: bad plans and weights
//! files are refused before anything trains or is written, `--weights` replaces the
//! baseline, and an iterative pruner reports every round.

use std::path::Path;

use anyhow::Result;
use sprig_compressor::compress::{self, CompressOptions};
use sprig_compressor::data;

fn quick_options(root: &Path) -> CompressOptions {
    let mut opts = CompressOptions::new(root.join("run"));
    opts.data = Some(data::bundled_dir());
    opts.cache = root.join("cache");
    opts.epochs = 1;
    opts.ft_epochs = 1;
    opts.qat_epochs = 1;
    opts.train_limit = Some(1000);
    opts.progress = false;
    opts
}

/// Runs `plan` and returns the error, checking nothing was trained or written.
fn refused(plan: &str, setup: impl FnOnce(&mut CompressOptions)) -> Result<String> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    let path = dir.path().join("plan.json");
    std::fs::write(&path, plan)?;
    opts.plan = Some(path);
    setup(&mut opts);
    let err = match compress::run(&opts) {
        Ok(_) => anyhow::bail!("plan accepted: {plan}"),
        Err(e) => e.to_string(),
    };
    assert!(!opts.out.exists(), "output folder written for: {err}");
    assert!(!opts.cache.exists(), "a baseline trained for: {err}");
    Ok(err)
}

fn pruner_plan(algorithm: &str, config_list: &str) -> String {
    format!(r#"{{"pruner": {{"algorithm": "{algorithm}", "config_list": {config_list}}}}}"#)
}

#[test]
fn bad_plans_are_refused_before_training() -> Result<()> {
    let err = refused(&pruner_plan("NoSuchPruner", "[]"), |_| {})?;
    assert!(
        err.contains("plan.json") && err.contains("NoSuchPruner"),
        "{err}"
    );
    for valid in ["LevelPruner", "AGP_Pruner", "LotteryTicketPruner"] {
        assert!(err.contains(valid), "valid choices listed: {err}");
    }

    let err = refused(
        &pruner_plan(
            "LevelPruner",
            r#"[{"op_types": ["default"], "final_sparsity": 0.8}]"#,
        ),
        |_| {},
    )?;
    assert!(
        err.contains("config_list[0]") && err.contains("final_sparsity"),
        "{err}"
    );
    assert!(
        err.contains("valid keys") || err.contains("sparsity"),
        "{err}"
    );

    let err = refused(
        &pruner_plan(
            "LevelPruner",
            r#"[{"op_types": ["default"], "sparsity": 1.5}]"#,
        ),
        |_| {},
    )?;
    assert!(err.contains("plan.json") && err.contains("1.5"), "{err}");

    let err = refused(
        &pruner_plan(
            "AGP_Pruner",
            r#"[{"final_sparsity": 0.8, "start_epoch": 3, "end_epoch": 1, "op_types": ["default"]}]"#,
        ),
        |_| {},
    )?;
    assert!(
        err.contains("config_list[0]") && err.contains("end_epoch"),
        "{err}"
    );

    // NNI's example schedule ends at epoch 10; one fine-tuning epoch cannot hold it.
    let err = refused(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agp80.json"),
        )?,
        |_| {},
    )?;
    assert!(err.contains("--ft-epochs") && err.contains("10"), "{err}");

    let err = refused(
        r#"{"pruner": {"algorithm": "LevelPruner", "statistics_batches": 4,
            "config_list": [{"op_types": ["default"], "sparsity": 0.5}]}}"#,
        |_| {},
    )?;
    assert!(
        err.contains("statistics_batches") && err.contains("LevelPruner"),
        "{err}"
    );

    let err = refused(
        &pruner_plan(
            "LevelPruner",
            r#"[{"op_names": ["conv9"], "sparsity": 0.5}]"#,
        ),
        |_| {},
    )?;
    assert!(err.contains("conv9") && err.contains("conv1"), "{err}");

    // Filter pruners prune Conv2d filters: a Linear by type or by name, and a depthwise
    // conv, are refused with the valid choice named.
    let err = refused(
        &pruner_plan(
            "L1FilterPruner",
            r#"[{"op_types": ["Linear"], "sparsity": 0.5}]"#,
        ),
        |_| {},
    )?;
    assert!(
        err.contains("config_list[0]") && err.contains("Conv2d"),
        "{err}"
    );
    let err = refused(
        &pruner_plan("FPGMPruner", r#"[{"op_names": ["fc1"], "sparsity": 0.5}]"#),
        |_| {},
    )?;
    assert!(err.contains("fc1") && err.contains("Conv2d"), "{err}");
    let err = refused(
        &pruner_plan(
            "L2FilterPruner",
            r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#,
        ),
        |o| o.model = "dscnn".into(),
    )?;
    assert!(
        err.contains("config_list[0]") && err.contains("depthwise"),
        "{err}"
    );

    // A per-step schedule longer than the fine-tuning (1 epoch of 1,000 images = 16 steps).
    let err = refused(
        r#"{"pruner": {"algorithm": "AGPPruner", "interval_steps": 10, "total_times": 5,
            "config_list": [{"op_types": ["default"], "sparsity": 0.8}]}}"#,
        |_| {},
    )?;
    assert!(
        err.contains("50 optimizer steps") && err.contains("16"),
        "{err}"
    );

    // Network Slimming needs batch norms.
    let err = refused(
        &pruner_plan(
            "SlimPruner",
            r#"[{"op_types": ["BatchNorm2d"], "sparsity": 0.5}]"#,
        ),
        |_| {},
    )?;
    assert!(
        err.contains("plan.json") && err.contains("BatchNorm2d"),
        "{err}"
    );
    assert!(
        err.contains("lenet5_bn"),
        "the model to use is named: {err}"
    );
    Ok(())
}

#[test]
fn weights_files_are_checked_before_training() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let level = pruner_plan(
        "LevelPruner",
        r#"[{"op_types": ["default"], "sparsity": 0.5}]"#,
    );

    let missing = dir.path().join("missing.safetensors");
    let err = refused(&level, |o| o.weights = Some(missing.clone()))?;
    assert!(err.contains("missing.safetensors"), "{err}");

    // A lenet5 state dict without fc3.bias, then one with a misshapen conv1.weight.
    let device = candle_core::Device::Cpu;
    let model = sprig_compressor::models::Model::new("lenet5", 10, &device, 0)?;
    let mut tensors = sprig_compressor::export::graph_tensors(&model.graph);
    tensors.remove("fc3.bias");
    let partial = dir.path().join("partial.safetensors");
    candle_core::safetensors::save(&tensors.clone().into_iter().collect(), &partial)?;
    let err = refused(&level, |o| o.weights = Some(partial.clone()))?;
    assert!(
        err.contains("partial.safetensors") && err.contains("fc3.bias"),
        "{err}"
    );

    tensors.insert(
        "fc3.bias".into(),
        candle_core::Tensor::zeros(10, candle_core::DType::F32, &device)?,
    );
    tensors.insert(
        "conv1.weight".into(),
        candle_core::Tensor::zeros((6, 1, 3, 3), candle_core::DType::F32, &device)?,
    );
    let misshapen = dir.path().join("misshapen.safetensors");
    candle_core::safetensors::save(&tensors.into_iter().collect(), &misshapen)?;
    let err = refused(&level, |o| o.weights = Some(misshapen.clone()))?;
    assert!(
        err.contains("conv1.weight") && err.contains("[6, 1, 5, 5]"),
        "{err}"
    );
    Ok(())
}

#[test]
fn given_weights_replace_the_baseline() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    let none = dir.path().join("none.json");
    std::fs::write(&none, "{}")?;
    opts.plan = Some(none);
    let trained = compress::run(&opts)?;

    let mut again = quick_options(&dir.path().join("second"));
    again.weights = Some(opts.out.join("model.safetensors"));
    again.epochs = 0;
    let level = dir.path().join("level.json");
    std::fs::write(
        &level,
        pruner_plan(
            "LevelPruner",
            r#"[{"op_types": ["default"], "sparsity": 0.5}]"#,
        ),
    )?;
    again.plan = Some(level);
    let summary = compress::run(&again)?;
    assert_eq!(summary.float_accuracy, trained.float_accuracy);
    assert!(summary.baseline_history.is_empty(), "no baseline training");
    assert!(summary.one_shot_accuracy.is_some() && summary.pruned_accuracy.is_some());

    // `--ft-epochs 0` exports the one-shot result.
    let mut one_shot = quick_options(&dir.path().join("third"));
    one_shot.weights = again.weights.clone();
    one_shot.plan = again.plan.clone();
    (one_shot.epochs, one_shot.ft_epochs) = (0, 0);
    let summary = compress::run(&one_shot)?;
    assert_eq!(summary.pruned_accuracy, summary.one_shot_accuracy);
    let conv2 = summary.layers.iter().find(|r| r.name == "conv2");
    assert!(conv2.is_some_and(|r| r.sparsity == 0.5), "{conv2:?}");
    Ok(())
}

#[test]
fn lottery_ticket_reports_every_round() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    opts.train_limit = Some(512);
    opts.plan =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/lottery-ticket80.json"));
    let summary = compress::run(&opts)?;
    let rounds: Vec<f64> = summary.prune_rounds.iter().map(|r| r.sparsity).collect();
    assert_eq!(rounds.len(), 3, "{rounds:?}");
    assert!(rounds[0] < rounds[1] && rounds[1] < rounds[2], "{rounds:?}");
    assert!((rounds[2] - 0.8).abs() < 1e-3, "{rounds:?}");
    assert!(summary.prune_rounds.iter().all(|r| r.accuracy > 0.2));
    Ok(())
}
