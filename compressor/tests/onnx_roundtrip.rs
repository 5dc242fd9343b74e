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
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::config::ConfigList;
use sprig_compressor::export::write_onnx;
use sprig_compressor::models::Model;
use sprig_compressor::nn::{
    Add, AvgPool2d, BatchNorm2d, Conv2d, Conv2dConfig, Flatten, GlobalAvgPool, Graph, Layer,
    Linear, Pool2dConfig, ReLU6, Source,
};
use sprig_compressor::prune::{LevelPruner, Pruner};
use sprig_compressor::quant::{bind, BnnQuantizer, DoReFaQuantizer, QatQuantizer, Quantizer};

const BATCH: usize = 8;

fn uniform(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// A zoo model with seeded parameters, see [`seed_parameters`].
fn seeded_model(name: &str, seed: u64) -> Result<Model> {
    let model = Model::new(name, 10, &Device::Cpu, seed)?;
    seed_parameters(&model, seed)?;
    Ok(model)
}

/// The layers the zoo does not use (ReLU6, AvgPool2d, a strided conv with bias, a
/// depthwise conv) in one small residual graph: conv 8@3×3 /2 → ReLU6 → avg pool 2 →
/// depthwise 3×3 → BN → ReLU6 → + pool output → global pool → flatten → fc 10.
fn custom_model(seed: u64) -> Result<Model> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut g = Graph::new([1, 28, 28]);
    let stem = Conv2dConfig::new(1, 8, 3).stride(2).padding(1);
    let x = g.push(
        "stem",
        Layer::Conv2d(Conv2d::new(stem, vb.pp("stem"))?),
        &[Source::Input],
    );
    let x = g.push("stem_relu", Layer::ReLU6(ReLU6), &[x]);
    let pool = Pool2dConfig {
        kernel_size: 2,
        stride: 2,
    };
    let skip = g.push("pool", Layer::AvgPool2d(AvgPool2d(pool)), &[x]);
    let dw = Conv2dConfig::new(8, 8, 3).padding(1).groups(8).no_bias();
    let x = g.push("dw", Layer::Conv2d(Conv2d::new(dw, vb.pp("dw"))?), &[skip]);
    let x = g.push(
        "dw_bn",
        Layer::BatchNorm2d(BatchNorm2d::new(8, vb.pp("dw_bn"))?),
        &[x],
    );
    let x = g.push("dw_relu", Layer::ReLU6(ReLU6), &[x]);
    let x = g.push("add", Layer::Add(Add), &[x, skip]);
    let x = g.push("gap", Layer::GlobalAvgPool(GlobalAvgPool), &[x]);
    let x = g.push("flatten", Layer::Flatten(Flatten), &[x]);
    g.push("fc", Layer::Linear(Linear::new(8, 10, vb.pp("fc"))?), &[x]);
    let model = Model {
        name: "custom".into(),
        graph: g,
        varmap,
        device: Device::Cpu,
    };
    seed_parameters(&model, seed)?;
    Ok(model)
}

/// Overwrites every parameter from a seeded generator; batch norms get non-trivial
/// statistics (the defaults, mean 0 and variance 1, would hide a swapped or missing input).
fn seed_parameters(model: &Model, seed: u64) -> Result<()> {
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
    Ok(())
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
        // Plain ONNX semantics: measured bit-exact (0 of 80 logits differ over 12
        // seeds); one logit one step off is allowed for a rounding tie. onnxruntime's
        // optimized run executes QDQ as int8 kernels that requantize per layer:
        // measured up to 2 steps on up to 35% of lenet5's logits.
        Some(step) => cmd
            .args([
                "--mode",
                "qdq",
                "--atol",
                "1e-5",
                "--max-steps",
                "1",
                "--max-frac",
                "0.02",
            ])
            .args(["--opt-max-steps", "3", "--opt-max-frac", "0.5"])
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
/// training-mode passes on images scaled by `brightness` (below 1, the test batch
/// overshoots the tracked ranges, so saturation at the grid's ends matters); returns the model and the step of its quantized output.
fn pruned_qat(mut model: Model, seed: u64, quant: &str, brightness: f32) -> Result<(Model, f32)> {
    let prune =
        ConfigList::from_json_str(r#"[{"sparsity": 0.5, "op_types": ["Conv2d", "Linear"]}]"#)?;
    LevelPruner.compress(&mut model.graph, &prune)?;
    QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(quant)?)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    for _ in 0..4 {
        let x = (batch(&mut rng, 16)? * f64::from(brightness))?;
        model.graph.forward_t(&x, true)?;
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
    let (model, step) = pruned_qat(seeded_model("lenet5", 3)?, 3, config, 1.0)?;
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
    roundtrip(&model, 13, Some(step))
}

/// Sub-8-bit activations (stored as int8, clipped after DequantizeLinear) that overshoot
/// their calibrated ranges, 4-bit weights, batch norms left unfolded, and the residual
/// Add's output quantized after its fused ReLU.
#[test]
fn resnet8_pruned_qat_low_bits_qdq_matches_onnxruntime() -> Result<()> {
    let config = r#"[
        {"quant_types": ["input", "weight", "output"], "quant_bits": {"input": 6, "weight": 4, "output": 6},
         "op_types": ["Conv2d", "Linear"]},
        {"quant_types": ["output"], "quant_bits": 8, "op_types": ["Add"]},
        {"quant_types": ["input", "weight", "output"], "quant_bits": 8, "op_names": ["fc"]}
    ]"#;
    let (model, step) = pruned_qat(seeded_model("resnet8", 4)?, 4, config, 0.5)?;
    roundtrip(&model, 14, Some(step))
}

/// Binds `quantizer` with `config` (no pruning) and calibrates as [`pruned_qat`] does.
fn calibrated(
    mut model: Model,
    seed: u64,
    quantizer: Box<dyn Quantizer>,
    config: &str,
) -> Result<(Model, f32)> {
    bind(
        quantizer,
        &mut model.graph,
        &ConfigList::from_json_str(config)?,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    for _ in 0..4 {
        model.graph.forward_t(&batch(&mut rng, 16)?, true)?;
    }
    let binding = model.graph.quant().context("no quantizer bound")?;
    let step = binding
        .layer("fc3")
        .and_then(|l| l.state().output_qparams)
        .context("`fc3` has no calibrated output")?
        .scale;
    Ok((model, step))
}

/// DoReFa's 2-bit weights (int8 values −1, 0, 1 with per-channel scales), and BNN's
/// binary weights and sign outputs: `Where(x ≥ 0, 1, −1)` on the pre-activation, the
/// fused ReLUs left out.
#[test]
fn lenet5_dorefa_and_bnn_match_onnxruntime() -> Result<()> {
    let dorefa = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 2, "output": 8}}]"#;
    let (model, step) = calibrated(
        seeded_model("lenet5", 21)?,
        21,
        Box::new(DoReFaQuantizer::new()),
        dorefa,
    )?;
    roundtrip(&model, 22, Some(step))?;
    let bnn = r#"[
        {"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8},
        {"op_names": ["conv2", "fc1", "fc2"], "quant_types": ["weight", "output"], "quant_bits": 1}
    ]"#;
    let (model, step) = calibrated(
        seeded_model("lenet5", 23)?,
        23,
        Box::new(BnnQuantizer::new()),
        bnn,
    )?;
    roundtrip(&model, 24, Some(step))
}

#[test]
fn custom_graph_float_matches_onnxruntime() -> Result<()> {
    roundtrip(&custom_model(6)?, 16, None)
}

/// Output quantization after fused ReLU6s, the Add's and the fc's; weight scales that
/// must follow the current weights.
#[test]
fn custom_graph_pruned_qat_qdq_matches_onnxruntime() -> Result<()> {
    let config = r#"[
        {"quant_types": ["input", "weight", "output"], "quant_bits": 8, "op_types": ["Conv2d", "Linear"]},
        {"quant_types": ["output"], "quant_bits": 8, "op_types": ["Add"]}
    ]"#;
    let (model, step) = pruned_qat(custom_model(7)?, 7, config, 1.0)?;
    // Weights change after the last forward, as an optimizer step leaves them: the
    // export must quantize the weights as they are, like the eval forward does.
    for (_, var) in model.all_vars().into_iter().filter(|(_, v)| v.rank() >= 2) {
        var.set(&(var.as_tensor() * 1.25)?)?;
    }
    roundtrip(&model, 17, Some(step))
}

#[test]
fn dscnn_and_mlp_float_match_onnxruntime() -> Result<()> {
    roundtrip(&seeded_model("dscnn", 8)?, 18, None)?;
    roundtrip(&seeded_model("mlp", 9)?, 19, None)
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
