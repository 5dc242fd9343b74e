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
        "report.svg",
    ] {
        assert!(opts.out.join(file).is_file(), "{file} missing");
    }
    // The chart names every layer and shows what each stored in model.sprig.
    let report = std::fs::read_to_string(opts.out.join("report.svg"))?;
    assert!(report.starts_with("<svg"));
    for row in &summary.layers {
        assert!(report.contains(&row.name), "{} not in report.svg", row.name);
        assert!(row.stored_bytes.is_some_and(|b| b > 0), "{}", row.name);
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

/// The first `train` / `test` images of the bundled subset as a dataset folder, for runs
/// that only need to finish.
fn small_data(root: &Path, train: usize, test: usize) -> Result<std::path::PathBuf> {
    let (full_train, full_test) = data::load_dir(&data::bundled_dir())?;
    let dir = root.join("data");
    std::fs::create_dir_all(&dir)?;
    for (set, n, (images, labels)) in [
        (full_train, train, data::TRAIN_FILES),
        (full_test, test, data::TEST_FILES),
    ] {
        let set = set.subset(n);
        let pixels = data::Images {
            count: set.len(),
            rows: set.rows,
            cols: set.cols,
            pixels: set.images.clone(),
        };
        data::write_images(&dir.join(format!("{images}.gz")), &pixels)?;
        data::write_labels(&dir.join(format!("{labels}.gz")), &set.labels)?;
    }
    Ok(dir)
}

/// Issue 12, item 3: every model of the zoo deploys with the default plan (the residual
/// adds of resnet8 get their output grids by the plan's rule, mlp's leading flatten
/// keeps the data pipeline's input grid).
#[test]
fn every_zoo_model_writes_model_sprig_with_the_default_plan() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let data_dir = small_data(dir.path(), 300, 100)?;
    for name in sprig_compressor::models::MODEL_NAMES {
        let mut opts = quick_options(&dir.path().join(name));
        opts.model = name.to_string();
        opts.data = Some(data_dir.clone());
        opts.batch_size = 32;
        let summary = compress::run(&opts)?;
        assert_eq!(summary.packed_skipped, None, "{name}");
        let blob = std::fs::read(opts.out.join("model.sprig"))?;
        assert_eq!(summary.blob_bytes, Some(blob.len()), "{name}");
        assert!(opts.out.join("vectors.bin").is_file(), "{name}");
        let agreement = summary.agreement.unwrap_or(0.0);
        eprintln!(
            "{name}: fake-quant {:.1} %, deployed {:.1} %, agreement {:.1} % ({} test images)",
            100.0 * summary.quantized_accuracy.unwrap_or(0.0),
            100.0 * summary.deployed_accuracy.unwrap_or(0.0),
            100.0 * agreement,
            summary.test_images
        );
        // A barely trained model has many near-ties; the ≥ 99 % bar on trained models is
        // checked in deployed.rs and by nni_weight_output_plan_deploys.
        assert!(agreement >= 0.9, "{name}: agreement {agreement}");
    }
    Ok(())
}

/// Issue 12, item 3: NNI's own QAT config (`quant_types: ["weight", "output"]`, no
/// `input`) deploys: the graph input is on the data pipeline's grid, q = pixel − 128.
#[test]
fn nni_weight_output_plan_deploys() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut opts = quick_options(dir.path());
    opts.plan =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/level80-qat8-nni.json"));
    opts.train_limit = Some(1000);
    let summary = compress::run(&opts)?;
    assert_eq!(summary.packed_skipped, None);
    let (deployed, fake) = (
        summary.deployed_accuracy.unwrap_or(0.0),
        summary.quantized_accuracy.unwrap_or(0.0),
    );
    let agreement = summary.agreement.unwrap_or(0.0);
    eprintln!(
        "lenet5, NNI weight+output: fake-quant {:.2} %, deployed {:.2} %, agreement {:.2} %",
        100.0 * fake,
        100.0 * deployed,
        100.0 * agreement
    );
    assert!(agreement >= 0.99, "agreement {agreement}");
    assert!(
        (deployed - fake).abs() <= 0.01,
        "deployed {deployed} vs {fake}"
    );

    // The runtime's input grid is the data pipeline's, and calibration.json says so.
    let blob = std::fs::read(opts.out.join("model.sprig"))?;
    let model = sprig_runtime::Model::from_bytes(&blob)?;
    let q = model.input_quant();
    assert_eq!(
        (q.scale, q.zero_point),
        (data::INPUT_SCALE, data::INPUT_ZERO_POINT)
    );
    let calib: serde_json::Value =
        serde_json::from_slice(&std::fs::read(opts.out.join("calibration.json"))?)?;
    assert_eq!(calib["input"]["source"], "declared");
    assert_eq!(calib["input"]["scale"], f64::from(data::INPUT_SCALE));
    assert!(calib["layers"]["conv1"]["input_range"].is_null());
    assert!(calib["layers"]["conv1"]["bits"].get("input").is_none());
    let vectors = std::fs::read(opts.out.join("vectors.bin"))?;
    let vectors = sprig_runtime::vectors::Vectors::parse(&vectors)?;
    let (_, test) = data::load_dir(&data::bundled_dir())?;
    for (i, v) in vectors.iter().enumerate() {
        let expected: Vec<i8> = test
            .image(i)
            .iter()
            .map(|&p| data::pixel_to_int8(p))
            .collect();
        assert_eq!(v.input, expected.as_slice(), "vector {i}");
    }
    Ok(())
}
