//! End to end: the `cargo xtask compress` job on the bundled Fashion-MNIST subset, small
//! enough for CI, checking what a user relies on in the run folder.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Result;
use candle_core::{Device, Tensor};
use sprig_compressor::compress::{self, CompressOptions};
use sprig_compressor::data;

fn quick_options(root: &Path) -> CompressOptions {
    let mut opts = CompressOptions::new(root.join("run"));
    opts.data = Some(data::bundled_dir());
    opts.cache = root.join("cache");
    opts.epochs = 1;
    opts.ft_epochs = 1;
    opts.qat_epochs = 1;
    opts.progress = false;
    opts
}

fn load(path: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(path, &Device::Cpu)?)
}

#[test]
fn default_plan_prunes_quantizes_and_exports() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let opts = quick_options(dir.path());
    let summary = compress::run(&opts)?;

    for file in [
        "model.safetensors",
        "masks.safetensors",
        "model.onnx",
        "calibration.json",
        "summary.json",
    ] {
        assert!(opts.out.join(file).is_file(), "{file} missing");
    }
    // Well above chance (10 %) after one short epoch, and compression keeps it there.
    assert!(
        summary.float_accuracy > 0.5,
        "float accuracy {}",
        summary.float_accuracy
    );
    assert!(summary.pruned_accuracy.is_some_and(|a| a > 0.4));
    assert!(summary.quantized_accuracy.is_some_and(|a| a > 0.4));

    // Level 80 % on every Conv2d and Linear: exact per-layer sparsity, and the exported
    // weights are zero exactly where the masks are.
    let weights = load(&opts.out.join("model.safetensors"))?;
    let masks = load(&opts.out.join("masks.safetensors"))?;
    assert_eq!(masks.len(), 5, "lenet5 has 2 conv + 3 linear layers");
    for row in &summary.layers {
        let expected = (0.8 * row.weights as f64).round() as usize;
        assert_eq!(row.weights - row.nonzero_weights, expected, "{}", row.name);
        let key = format!("{}.weight", row.name);
        let w = weights[&key].flatten_all()?.to_vec1::<f32>()?;
        let m = masks[&key].flatten_all()?.to_vec1::<f32>()?;
        assert!(
            w.iter().zip(&m).all(|(w, m)| *m != 0.0 || *w == 0.0),
            "{key}: pruned weight not zero"
        );
    }

    // calibration.json holds per-layer int8 parameters.
    let calib: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.out.join("calibration.json"))?)?;
    assert_eq!(calib["quantizer"], "QAT_Quantizer");
    let conv1 = &calib["layers"]["conv1"];
    assert_eq!(conv1["bits"]["weight"], 8);
    assert_eq!(conv1["weight"]["scales"].as_array().map(Vec::len), Some(6));
    assert!(conv1["output"]["scale"].as_f64().is_some_and(|s| s > 0.0));
    Ok(())
}

#[test]
fn baseline_is_cached_between_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    opts.plan = Some(dir.path().join("none.json"));
    std::fs::write(dir.path().join("none.json"), "{}")?;
    let first = compress::run(&opts)?;
    let second = compress::run(&opts)?;
    assert_eq!(first.baseline_history, second.baseline_history);
    assert_eq!(first.float_accuracy, second.float_accuracy);
    assert!(first.pruned_accuracy.is_none() && first.quantized_accuracy.is_none());
    Ok(())
}

#[test]
fn broken_plan_names_the_file_and_the_problem() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"pruner": {"algorithm": "LevelPruner", "config_list": [{"op_types": ["Conv2d"], "sparsity": 1.5}]}}"#,
    )?;
    opts.plan = Some(plan.clone());
    let err = compress::run(&opts).unwrap_err().to_string();
    assert!(err.contains("plan.json"), "{err}");
    assert!(err.contains("sparsity"), "{err}");

    std::fs::write(
        &plan,
        r#"{"pruner": {"algorithm": "NoSuchPruner", "config_list": []}}"#,
    )?;
    let err = compress::run(&opts).unwrap_err().to_string();
    assert!(err.contains("LevelPruner"), "valid choices listed: {err}");
    Ok(())
}

#[test]
fn missing_dataset_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = quick_options(dir.path());
    opts.data = Some(dir.path().join("no-such-folder"));
    let err = compress::run(&opts).unwrap_err().to_string();
    assert!(err.contains("no-such-folder"), "{err}");
}
