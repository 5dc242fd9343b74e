//! ONNX export against onnxruntime: the exported model must compute what candle's eval
//! forward computes, float models to 1e-4 and QDQ models to within one output
//! quantization step on a few elements with the same arg-max everywhere.
//!
//! The comparison runs `tests/onnx_check.py` with `python3` (override with
//! `SPRIG_PYTHON`); it needs `pip install onnxruntime numpy`, and these tests fail (they
//! do not skip) when that is missing.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::config::ConfigList;
use sprig_compressor::export::write_onnx;
use sprig_compressor::models::Model;
use sprig_compressor::prune::{LevelPruner, Pruner};
use sprig_compressor::quant::{QatQuantizer, Quantizer};

const BATCH: usize = 8;

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A model with seeded parameters; batch norms get non-trivial statistics (the defaults,
/// mean 0 and variance 1, would hide a swapped or missing input).
fn seeded_model(name: &str, seed: u64) -> Result<Model> {
    let model = Model::new(name, 10, &Device::Cpu, seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (var_name, var) in model.all_vars() {
        let n = var.elem_count();
        let dims = var.dims().to_vec();
        let values = if dims.len() >= 2 {
            let bound = (3.0 / (n / dims[0]) as f32).sqrt();
            uniform(&mut rng, n, -bound, bound)
        } else if var_name.ends_with("running_var") {
            uniform(&mut rng, n, 0.5, 1.5)
        } else if var_name.ends_with("running_mean") {
            uniform(&mut rng, n, -0.2, 0.2)
        } else if var_name.ends_with("weight") {
            uniform(&mut rng, n, 0.8, 1.2)
        } else {
            uniform(&mut rng, n, -0.1, 0.1)
        };
        var.set(&Tensor::from_vec(values, dims, &Device::Cpu)?)?;
    }
    Ok(model)
}

fn batch(rng: &mut ChaCha8Rng, n: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(
        uniform(rng, n * 28 * 28, 0.0, 1.0),
        (n, 1, 28, 28),
        &Device::Cpu,
    )?)
}

fn write_f32(path: &Path, t: &Tensor) -> Result<()> {
    let bytes: Vec<u8> = t
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// Exports `model`, runs candle's eval forward on a fixed batch and has onnxruntime
/// check the file against it. `qdq_step`: the output quantization step, for QDQ models.
fn roundtrip(model: &Model, seed: u64, qdq_step: Option<f32>) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let onnx = dir.path().join("model.onnx");
    let shape = [BATCH, 1, 28, 28];
    write_onnx(&model.graph, &onnx, shape)?;

    let x = batch(&mut ChaCha8Rng::seed_from_u64(seed), BATCH)?;
    let y = model.graph.forward(&x)?;
    assert_eq!(y.dims(), [BATCH, 10]);
    let (input, expected) = (dir.path().join("input.bin"), dir.path().join("output.bin"));
    write_f32(&input, &x)?;
    write_f32(&expected, &y)?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/onnx_check.py");
    let python = std::env::var("SPRIG_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg(&onnx)
        .arg(&input)
        .arg(&expected)
        .arg("--shape");
    cmd.args(shape.iter().map(|d| d.to_string()));
    match qdq_step {
        None => cmd.args(["--mode", "float", "--atol", "1e-4"]),
        // At most 2% of the logits one step apart (rounding ties, float summation order).
        Some(step) => cmd
            .args([
                "--mode",
                "qdq",
                "--max-steps",
                "100",
                "--max-frac",
                "1.0",
                "--atol",
                "1e-5",
            ])
            .arg("--step")
            .arg(step.to_string()),
    };
    let out = cmd
        .output()
        .with_context(|| format!("running {python} {}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    print!("{}: {stdout}", model.name);
    if !out.status.success() {
        bail!(
            "{} failed for {} ({}):\n{stdout}{}",
            script.display(),
            model.name,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

#[test]
fn lenet5_float_matches_onnxruntime() -> Result<()> {
    roundtrip(&seeded_model("lenet5", 1)?, 11, None)
}

#[test]
fn resnet8_float_matches_onnxruntime() -> Result<()> {
    roundtrip(&seeded_model("resnet8", 2)?, 12, None)
}

/// Prunes, binds QAT with `quant` as the config and calibrates ranges with a few
/// training-mode passes; returns the model and the step of its quantized output.
fn pruned_qat(name: &str, seed: u64, quant: &str) -> Result<(Model, f32)> {
    let mut model = seeded_model(name, seed)?;
    let prune =
        ConfigList::from_json_str(r#"[{"sparsity": 0.5, "op_types": ["Conv2d", "Linear"]}]"#)?;
    LevelPruner.compress(&mut model.graph, &prune)?;
    QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(quant)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    for _ in 0..4 {
        model.graph.forward_t(&batch(&mut rng, 16)?, true)?;
    }
    let last = model
        .graph
        .nodes()
        .last()
        .context("empty graph")?
        .name
        .clone();
    let binding = model.graph.quant().context("no quantizer bound")?;
    let step = binding
        .layer(&last)
        .and_then(|l| l.state().output_qparams)
        .with_context(|| format!("`{last}` has no calibrated output"))?
        .scale;
    Ok((model, step))
}

#[test]
fn lenet5_pruned_qat_qdq_matches_onnxruntime() -> Result<()> {
    let config = r#"[{"quant_types": ["input", "weight", "output"], "quant_bits": 8, "op_types": ["Conv2d", "Linear"]}]"#;
    let sweep: u64 = std::env::var("SWEEP").map(|v| v.parse().unwrap()).unwrap_or(0);
    let (model, step) = pruned_qat("lenet5", 3 + sweep * 7, config)?;
    let conv1 = model.graph.node("conv1").context("conv1")?;
    let w = model
        .graph
        .masked_weight("conv1", conv1.layer.weight().context("weight")?)?;
    let zeros = w
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .filter(|v| **v == 0.0)
        .count();
    assert!(
        zeros * 2 >= w.elem_count(),
        "pruning left {zeros} zeros of {}",
        w.elem_count()
    );
    roundtrip(&model, 13 + sweep * 7, Some(step))
}

/// Sub-8-bit activations (stored as int8, clipped after DequantizeLinear), 4-bit
/// weights, and the residual Add's output quantized after its fused ReLU.
#[test]
fn resnet8_pruned_qat_low_bits_qdq_matches_onnxruntime() -> Result<()> {
    let config = r#"[
        {"quant_types": ["input", "weight", "output"], "quant_bits": {"input": 6, "weight": 4, "output": 6},
         "op_types": ["Conv2d", "Linear"]},
        {"quant_types": ["output"], "quant_bits": 8, "op_types": ["Add"]},
        {"quant_types": ["input", "weight", "output"], "quant_bits": 8, "op_names": ["fc"]}
    ]"#;
    let sweep: u64 = std::env::var("SWEEP").map(|v| v.parse().unwrap()).unwrap_or(0);
    let (model, step) = pruned_qat("resnet8", 4 + sweep * 7, config)?;
    roundtrip(&model, 14 + sweep * 7, Some(step))
}

#[test]
fn wrong_input_shape_is_an_export_error() -> Result<()> {
    let model = seeded_model("lenet5", 5)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.onnx");
    for shape in [[1, 3, 28, 28], [1, 1, 32, 32], [0, 1, 28, 28]] {
        let err = write_onnx(&model.graph, &path, shape).expect_err("export should fail");
        assert!(
            matches!(err, sprig_compressor::Error::Export { .. }),
            "{shape:?}: expected an export error, got {err}"
        );
        assert!(
            !path.exists(),
            "{shape:?}: a failed export left a file behind"
        );
    }
    Ok(())
}
