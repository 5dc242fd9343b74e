//! The speedup stage in the whole `cargo xtask compress` job: a filter pruner's plan
//! exports a smaller dense model (safetensors, ONNX, `model.sprig`) unless it says
//! `"speedup": false`, and the key is checked like any other stage key.

use std::path::Path;

use anyhow::{Context, Result};
use sprig_compressor::compress::{self, CompressOptions, Summary};
use sprig_compressor::data;

fn quick_options(root: &Path, plan: &str) -> Result<CompressOptions> {
    let mut opts = CompressOptions::new(root.join("run"));
    opts.data = Some(data::bundled_dir());
    opts.cache = root.join("cache");
    opts.epochs = 1;
    opts.ft_epochs = 1;
    opts.qat_epochs = 1;
    opts.train_limit = Some(1000);
    opts.progress = false;
    let path = root.join("plan.json");
    std::fs::write(&path, plan)?;
    opts.plan = Some(path);
    Ok(opts)
}

/// L1 filter pruning at 50 % on both convs, then QAT int8; `extra` goes into the pruner
/// stage.
fn plan(extra: &str) -> String {
    format!(
        r#"{{"pruner": {{"algorithm": "L1FilterPruner", {extra}
              "config_list": [{{"sparsity": 0.5, "op_types": ["Conv2d"]}}]}},
            "quantizer": {{"algorithm": "QAT_Quantizer",
              "config_list": [{{"op_types": ["Conv2d", "Linear"],
                                "quant_types": ["input", "weight", "output"], "quant_bits": 8}}]}}}}"#
    )
}

fn run(root: &Path, plan: &str) -> Result<Summary> {
    Ok(compress::run(&quick_options(root, plan)?)?)
}

/// The shape of `name` in a safetensors file.
fn shape(file: &Path, name: &str) -> Result<Vec<usize>> {
    let tensors = candle_core::safetensors::load(file, &candle_core::Device::Cpu)?;
    Ok(tensors.get(name).context(name.to_string())?.dims().to_vec())
}

#[test]
fn lenet5_filter_plan_exports_the_smaller_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fast = run(dir.path(), &plan(""))?;
    let out = dir.path().join("run");
    let report = fast.speedup.as_ref().context("the speedup ran")?;
    assert_eq!(
        (report.parameters_before, report.parameters_after),
        (61_706, 35_820)
    );
    assert!(
        report.max_output_change.is_some_and(|c| c <= 1e-5),
        "{report:?}"
    );
    assert_eq!(
        shape(&out.join("model.safetensors"), "conv1.weight")?,
        [3, 1, 5, 5]
    );
    assert_eq!(
        shape(&out.join("model.safetensors"), "fc1.weight")?,
        [120, 200]
    );
    let masks =
        candle_core::safetensors::load(out.join("masks.safetensors"), &candle_core::Device::Cpu)?;
    assert!(masks.is_empty(), "masks left: {:?}", masks.keys());
    let printed = fast.to_string();
    assert!(
        printed.contains("speedup: 61706 -> 35820 parameters"),
        "{printed}"
    );
    assert!(
        printed.contains("fc1") && printed.contains("in 400 -> 200"),
        "{printed}"
    );
    let conv1 = fast
        .layers
        .iter()
        .find(|l| l.name == "conv1")
        .context("conv1")?;
    assert_eq!((conv1.channels, conv1.channels_kept), (3, 3));
    assert!(
        fast.agreement.is_some_and(|a| a >= 0.95),
        "deployed: {:?}",
        fast.agreement
    );
    let fast_blob = fast.blob_bytes.context("model.sprig")?;
    let fast_onnx = std::fs::metadata(out.join("model.onnx"))?.len();

    // The same plan without the speedup: the pruned channels stay, as zeros.
    let dense = run(dir.path(), &plan(r#""speedup": false,"#))?;
    assert!(dense.speedup.is_none());
    assert_eq!(
        shape(&out.join("model.safetensors"), "conv1.weight")?,
        [6, 1, 5, 5]
    );
    assert_eq!(
        shape(&out.join("model.safetensors"), "fc1.weight")?,
        [120, 400]
    );
    let conv1 = dense
        .layers
        .iter()
        .find(|l| l.name == "conv1")
        .context("conv1")?;
    assert_eq!((conv1.channels, conv1.channels_kept), (6, 3));
    assert!(!dense.to_string().contains("speedup:"));
    let dense_blob = dense.blob_bytes.context("model.sprig")?;
    assert!(
        fast_blob + 20_000 < dense_blob,
        "{fast_blob} B vs {dense_blob} B"
    );
    assert!(fast_onnx < std::fs::metadata(out.join("model.onnx"))?.len());
    Ok(())
}

#[test]
fn the_speedup_key_is_checked_before_training() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let refused = |plan: &str| -> Result<String> {
        let opts = quick_options(dir.path(), plan)?;
        let err = match compress::run(&opts) {
            Ok(_) => anyhow::bail!("plan accepted: {plan}"),
            Err(e) => e.to_string(),
        };
        assert!(!opts.out.exists() && !opts.cache.exists(), "{err}");
        Ok(err)
    };
    let err = refused(&plan(r#""speedup": "no","#))?;
    assert!(
        err.contains("pruner.speedup") && err.contains("true or false"),
        "{err}"
    );
    // Unstructured pruners leave no whole channel to remove: the key is not theirs.
    let err = refused(
        r#"{"pruner": {"algorithm": "LevelPruner", "speedup": true,
            "config_list": [{"sparsity": 0.5, "op_types": ["default"]}]}}"#,
    )?;
    assert!(
        err.contains("speedup") && err.contains("LevelPruner"),
        "{err}"
    );
    Ok(())
}
