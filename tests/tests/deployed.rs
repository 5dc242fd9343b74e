//! The deployed model: a compressed model packed to `model.sprig` and run by
//! `sprig-runtime` on the host must predict what the compressor's fake-quantized model
//! predicts (issue 3: agreement ≥ 99 %, accuracy within 0.5 point), for every layer
//! kind the zoo uses (lenet5: conv, max pool, flatten, linear; resnet8: residual Add,
//! global average pool; dscnn: depthwise conv). All on the bundled subset (3,000 train
//! / 1,000 test images), trained briefly.

use anyhow::{Context, Result};
use candle_core::Device;
use sprig_compressor::compress::fold_batch_norms;
use sprig_compressor::config::ConfigList;
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::export::packed::{self, DeployReport};
use sprig_compressor::models::Model;
use sprig_compressor::nn::Layer;
use sprig_compressor::prune::{LevelPruner, Pruner};
use sprig_compressor::quant::{self, QatQuantizer, Quantizer};
use sprig_compressor::train::{self, TrainConfig};
use sprig_runtime::vectors::Vectors;
use sprig_runtime::{Encoding, Op};

/// QAT int8 on every Conv2d and Linear, as the default plan quantizes.
const QAT8: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#;
/// NNI's own QAT config: weights and outputs only. The graph input is then on the data
/// pipeline's grid (scale 1/128, zero point 0) and residual adds get their grid by the
/// plan's rule.
const QAT8_NNI: &str =
    r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["weight", "output"], "quant_bits": 8}]"#;
/// QAT8 plus an explicit output grid for residual adds (what the plan's rule gives them
/// anyway).
const QAT8_ADD: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8},
                          {"op_types": ["Add"], "quant_types": ["output"], "quant_bits": 8}]"#;

fn bundled() -> Result<(Dataset, Dataset)> {
    Ok(data::load_dir(&data::bundled_dir())?)
}

/// A short training: baseline, optional Level pruning with one fine-tune epoch, batch
/// norms folded, then one QAT epoch.
struct Recipe {
    /// Baseline training images (the first N of the bundled training set).
    images: usize,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    sparsity: Option<f64>,
    /// QAT fine-tuning images.
    qat_images: usize,
}

fn fit(
    model: &mut Model,
    data: &Dataset,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    pruner: Option<&mut dyn Pruner>,
) -> Result<()> {
    let mut cfg = TrainConfig::new(epochs, 0);
    cfg.progress = false;
    cfg.batch_size = batch_size;
    cfg.lr = lr;
    // Training evaluates after each epoch; a token test set keeps that cheap.
    train::train(model, data, &data.subset(10), &cfg, pruner)?;
    Ok(())
}

fn compress(name: &str, train_set: &Dataset, r: &Recipe, qat: &str) -> Result<Model> {
    let mut model = Model::new(name, 10, &Device::Cpu, 0)?;
    let data = train_set.subset(r.images);
    fit(&mut model, &data, r.epochs, r.batch_size, r.lr, None)?;
    if let Some(s) = r.sparsity {
        let config = ConfigList::from_json_str(&format!(
            r#"[{{"op_types": ["Conv2d", "Linear"], "sparsity": {s}}}]"#
        ))?;
        let mut pruner = LevelPruner;
        pruner.compress(&mut model.graph, &config)?;
        fit(&mut model, &data, 1, r.batch_size, 3e-3, Some(&mut pruner))?;
    }
    fold_batch_norms(&mut model)?;
    QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(qat)?)?;
    let data = train_set.subset(r.qat_images);
    fit(&mut model, &data, 1, r.batch_size, 5e-4, None)?;
    Ok(model)
}

/// Issue 12's bars: ≥ 99 % top-1 agreement with the fake-quant model and deployed
/// accuracy within 0.3 point of it, on top of [`check_simulated_exact`].
fn check_agreement(name: &str, report: &DeployReport) {
    check_simulated_exact(name, report);
    assert!(
        report.agreement >= 0.99,
        "{name}: deployed/fake-quant agreement {:.2} % < 99 % ({report})",
        100.0 * report.agreement
    );
    let gap = (report.deployed_accuracy - report.fake_quant_accuracy).abs();
    assert!(
        gap <= 0.003,
        "{name}: deployed accuracy {:.2} % is {:.2} points from fake-quant {:.2} %",
        100.0 * report.deployed_accuracy,
        100.0 * gap,
        100.0 * report.fake_quant_accuracy
    );
}

/// Every output byte of the deployed model is that of the compressor's simulation of
/// the integer arithmetic (int32 biases, fixed-point requantization).
fn check_simulated_exact(name: &str, report: &DeployReport) {
    eprintln!("{name}: {report}");
    assert_eq!(
        report.simulated_exact_outputs, 1.0,
        "{name}: outputs differ from the simulated integer model ({report})"
    );
}

#[test]
fn lenet5_deployed_matches_fake_quant() -> Result<()> {
    let (train_set, test) = bundled()?;
    let recipe = Recipe {
        images: 3000,
        epochs: 2,
        batch_size: 64,
        lr: 2e-3,
        sparsity: Some(0.7),
        qat_images: 3000,
    };
    let model = compress("lenet5", &train_set, &recipe, QAT8)?;
    let packed = packed::pack(&model.graph)?;
    eprintln!(
        "lenet5: blob {} B ({:.4} × weights + biases {} B), arena {} B, {} ops",
        packed.blob_bytes(),
        packed.overhead_ratio(),
        packed.weight_bytes + packed.bias_bytes,
        packed.arena_bytes,
        packed.ops
    );
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
    assert_eq!(report.images, test.len());
    check_agreement("lenet5", &report);
    assert!(report.fake_quant_accuracy > 0.6, "{report}");
    // Issue 3's size bars, on the dense layout they were set for; the arena is what the
    // greedy planner achieves with each conv and max pool fused into one op (FORMAT.md
    // §4; issue 13's bar 2,048 B; TFLite Micro: 5,888 B of activations).
    let dense = packed::pack_with(&model.graph, &[])?;
    assert!(
        dense.overhead_ratio() <= 1.03,
        "dense blob {}",
        dense.overhead_ratio()
    );
    // Pruned to 70 %, the layers are stored sparse: the blob shrinks.
    assert!(
        packed.blob_bytes() * 2 < dense.blob_bytes(),
        "sparse blob {} B, dense {} B",
        packed.blob_bytes(),
        dense.blob_bytes()
    );
    assert!(packed.arena_bytes <= 2_048, "arena {}", packed.arena_bytes);
    let fused = packed
        .model()?
        .ops()
        .filter(|op| matches!(op, Op::Conv2dMaxPool(_)))
        .count();
    assert_eq!(fused, 2, "both conv + pool pairs fused");

    // vectors.bin replays bit for bit through the runtime.
    let bytes = packed::test_vectors(&packed.blob, &test, packed::DEFAULT_VECTOR_COUNT)?;
    let vectors = Vectors::parse(&bytes)?;
    assert_eq!(vectors.len(), packed::DEFAULT_VECTOR_COUNT);
    let runtime = packed.model()?;
    let mut arena = vec![0u8; runtime.arena_size()];
    let mut out = vec![0i8; runtime.output_len()];
    for (i, v) in vectors.iter().enumerate() {
        assert_eq!(v.label, test.labels[i]);
        assert_eq!(
            v.input,
            packed::quantize_image(test.image(i), runtime.input_quant())
        );
        runtime.run(&mut arena, v.input, &mut out)?;
        assert_eq!(out, v.expected, "vector {i}");
    }
    Ok(())
}

/// The residual adds have no config of their own: their output grids come from the
/// plan's rule (`nn::implicit_output_grids`).
#[test]
fn resnet8_residual_adds_deploy() -> Result<()> {
    let (train_set, test) = bundled()?;
    // Deeper nets amplify the int8 rounding differences (int32 bias, TFLite's double
    // rounding) layer by layer, and a briefly trained net has many near-ties: small
    // batches give the most training per second.
    let recipe = Recipe {
        images: 1000,
        epochs: 1,
        batch_size: 16,
        lr: 3e-3,
        sparsity: None,
        qat_images: 200,
    };
    let model = compress("resnet8", &train_set, &recipe, QAT8)?;
    let packed = packed::pack(&model.graph)?;
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
    check_agreement("resnet8", &report);
    Ok(())
}

#[test]
fn dscnn_depthwise_deploys() -> Result<()> {
    let (train_set, test) = bundled()?;
    let recipe = Recipe {
        images: 2000,
        epochs: 1,
        batch_size: 8,
        lr: 3e-3,
        sparsity: None,
        qat_images: 300,
    };
    let model = compress("dscnn", &train_set, &recipe, QAT8)?;
    let packed = packed::pack(&model.graph)?;
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
    check_agreement("dscnn", &report);
    Ok(())
}

/// A freshly initialized model with `config` bound by QAT and its ranges calibrated by
/// one training-mode forward pass (no optimizer step).
fn calibrated(name: &str, config: &str, fold: bool) -> Result<Model> {
    calibrated_with(name, &ConfigList::from_json_str(config)?, fold)
}

fn calibrated_with(name: &str, config: &ConfigList, fold: bool) -> Result<Model> {
    let (train_set, _) = bundled()?;
    let mut model = Model::new(name, 10, &Device::Cpu, 0)?;
    if fold {
        fold_batch_norms(&mut model)?;
    }
    QatQuantizer::new().compress(&mut model.graph, config)?;
    let batch = data::Batcher::new(
        &train_set.subset(32),
        32,
        data::Order::Sequential,
        &Device::Cpu,
    )
    .next()
    .expect("one batch")?;
    model.graph.forward_t(&batch.images, true)?;
    Ok(model)
}

fn pack_error(model: &Model) -> String {
    packed::pack(&model.graph).unwrap_err().to_string()
}

#[test]
fn unpackable_models_are_clear_errors() -> Result<()> {
    // No quantizer at all.
    let plain = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let err = pack_error(&plain);
    assert!(
        err.contains("not quantized") && err.contains("quant_types"),
        "{err}"
    );

    // Activations are 8-bit on the chip (weights may be fewer bits).
    let four = QAT8.replace(
        "\"quant_bits\": 8",
        "\"quant_bits\": {\"weight\": 8, \"input\": 8, \"output\": 4}",
    );
    let err = pack_error(&calibrated("lenet5", &four, false)?);
    assert!(
        err.contains("output to 4 bits") && err.contains("conv1") && err.contains("activations"),
        "{err}"
    );

    // Batch norms must be folded first.
    let err = pack_error(&calibrated("resnet8", QAT8_ADD, false)?);
    assert!(err.contains("batch norm") && err.contains("fold"), "{err}");

    // A conv whose output is left float: the Add after it cannot get a grid either, and
    // the message names the conv and the dict that fixes it.
    let no_output = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8},
                        {"op_names": ["stack1.block2.conv"], "quant_types": ["weight"], "quant_bits": 8}]"#;
    let err = pack_error(&calibrated("resnet8", no_output, true)?);
    assert!(
        err.contains("stack1.block2.conv") && err.contains(r#""quant_types": ["output"]"#),
        "{err}"
    );

    // NNI's config on a graph that declares no input grid: nothing tracks the input's.
    let mut undeclared = calibrated("lenet5", QAT8_NNI, false)?;
    undeclared.graph.set_input_grid(None);
    let err = pack_error(&undeclared);
    assert!(
        err.contains("conv1") && err.contains("graph input") && err.contains("\"input\""),
        "{err}"
    );

    // Quantizer bound but never calibrated.
    let mut fresh = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    QatQuantizer::new().compress(&mut fresh.graph, &ConfigList::from_json_str(QAT8)?)?;
    let err = pack_error(&fresh);
    assert!(err.contains("calibrated"), "{err}");
    Ok(())
}

#[test]
fn calibrated_models_pack_and_load() -> Result<()> {
    // Every zoo model packs with the default plan's quantizer config and with NNI's
    // weight + output config, and the runtime accepts it.
    let plan = sprig_compressor::compress::Plan::default_plan()?;
    let default = plan
        .quantizer
        .expect("the default plan quantizes")
        .config_list;
    let nni = ConfigList::from_json_str(QAT8_NNI)?;
    for name in sprig_compressor::models::MODEL_NAMES {
        for (label, config) in [("default plan", &default), ("NNI", &nni)] {
            let model = calibrated_with(name, config, true)?;
            let packed = packed::pack(&model.graph)
                .map_err(|e| anyhow::anyhow!("{name} with the {label} config: {e}"))?;
            let runtime = packed.model()?;
            assert_eq!(runtime.input_shape(), [1, 28, 28, 1], "{name}");
            assert_eq!(runtime.output_shape(), [1, 10], "{name}");
            assert_eq!(runtime.arena_size(), packed.arena_bytes, "{name}");
            if label == "NNI" {
                // The data pipeline's grid: q = pixel − 128.
                let q = runtime.input_quant();
                assert_eq!((q.scale, q.zero_point), (data::INPUT_SCALE, 0), "{name}");
            }
        }
    }
    // The rule's grid for a residual Add is the one an explicit Add dict asks for.
    let implicit = packed::pack(&calibrated("resnet8", QAT8, true)?.graph)?;
    let explicit = packed::pack(&calibrated("resnet8", QAT8_ADD, true)?.graph)?;
    assert!(
        implicit.blob == explicit.blob,
        "implicit and explicit Add grids differ"
    );
    Ok(())
}

#[test]
fn compress_run_writes_the_packed_model_or_says_why_not() -> Result<()> {
    use sprig_compressor::compress::{self, CompressOptions};
    let dir = tempfile::tempdir()?;
    let mut opts = CompressOptions::new(dir.path().join("run"));
    opts.data = Some(data::bundled_dir());
    opts.cache = dir.path().join("cache");
    opts.epochs = 1;
    opts.qat_epochs = 1;
    opts.train_limit = Some(500);
    opts.progress = false;
    let plan = dir.path().join("plan.json");
    let qat = |config: &str| {
        format!(r#"{{"quantizer": {{"algorithm": "QAT_Quantizer", "config_list": {config}}}}}"#)
    };
    std::fs::write(&plan, qat(QAT8))?;
    opts.plan = Some(plan.clone());
    let summary = compress::run(&opts)?;
    let sprig = opts.out.join(packed::PACKED_FILE);
    let vectors = opts.out.join(packed::VECTORS_FILE);
    let blob = std::fs::read(&sprig)?;
    assert_eq!(summary.blob_bytes, Some(blob.len()));
    assert!(summary.arena_bytes.is_some_and(|a| a > 0));
    let (deployed, agreement) = (
        summary.deployed_accuracy.unwrap(),
        summary.agreement.unwrap(),
    );
    assert!(agreement >= 0.99, "agreement {agreement}");
    let fake = summary.quantized_accuracy.unwrap();
    assert!(
        (deployed - fake).abs() <= 0.01,
        "deployed {deployed} vs fake-quant {fake}"
    );
    let bytes = std::fs::read(&vectors)?;
    assert_eq!(Vectors::parse(&bytes)?.len(), packed::DEFAULT_VECTOR_COUNT);
    assert!(summary.to_string().contains("deployed int8"));

    // 4-bit activations (weights may be 4-bit, activations not): the run still
    // succeeds, says why, and leaves no stale blob behind.
    std::fs::write(
        &plan,
        qat(&QAT8.replace(
            "\"quant_bits\": 8",
            "\"quant_bits\": {\"weight\": 8, \"input\": 8, \"output\": 4}",
        )),
    )?;
    let summary = compress::run(&opts)?;
    let why = summary.packed_skipped.clone().unwrap_or_default();
    assert!(why.contains("4 bits"), "{why}");
    assert!(summary.blob_bytes.is_none() && summary.deployed_accuracy.is_none());
    assert!(!sprig.exists() && !vectors.exists());
    assert!(summary.to_string().contains("not written"));
    Ok(())
}

/// The fake-quant model's integer weights: what the forward pass's weight hook computes
/// (`integer · scale[c]`), divided back by the scales the hook recorded.
fn fake_quant_integers(
    model: &Model,
    name: &str,
    bits: u8,
) -> Result<(Vec<i8>, Vec<usize>, Vec<f32>)> {
    let graph = &model.graph;
    let binding = graph.quant().context("no quantizer bound")?;
    let node = graph.node(name).context("no such layer")?;
    let w = graph.masked_weight(name, node.layer.weight().context("no weight")?)?;
    let fake = binding.quantize_weight(name, &w, false)?;
    let state = binding.layer(name).context("not quantized")?.state();
    assert_eq!(state.weight_bits, Some(bits), "{name}");
    let scales = state.weight_scales;
    let dims = fake.dims().to_vec();
    let per_channel = fake.elem_count() / dims[0];
    let mut ints = Vec::with_capacity(fake.elem_count());
    for (k, v) in fake
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .enumerate()
    {
        let q = v / scales[k / per_channel];
        let qmax = ((1i32 << (bits - 1)) - 1).max(1) as f32;
        assert!(
            (q - q.round()).abs() < 1e-3 && q.round().abs() <= qmax,
            "{name}: {v} is not on the grid ({q}, scale {})",
            scales[k / per_channel]
        );
        ints.push(q.round() as i8);
    }
    Ok((ints, dims, scales))
}

/// PyTorch-layout integers in the layout the runtime stores for `op` (conv filters
/// `[OC, KH, KW, IC]`; a fully connected op reading a flattened `[1, H, W, C]` tensor
/// has its columns in (h, w, c) order).
fn runtime_layout(ints: &[i8], dims: &[usize], op: &Op, runtime: &sprig_runtime::Model) -> Vec<i8> {
    match op {
        Op::Conv2d(_) | Op::Conv2dMaxPool(_) => {
            let (oc, ic, kk) = (dims[0], dims[1], dims[2] * dims[3]);
            let mut f = vec![0i8; ints.len()];
            for o in 0..oc {
                for c in 0..ic {
                    for t in 0..kk {
                        f[(o * kk + t) * ic + c] = ints[(o * ic + c) * kk + t];
                    }
                }
            }
            f
        }
        Op::FullyConnected(fc) => {
            let reshape = runtime.ops().find_map(|op| match op {
                Op::Reshape(r) if r.output == fc.input => Some(r.input),
                _ => None,
            });
            let shape = reshape.map(|t| runtime.tensors()[t as usize].shape.clone());
            match shape.as_deref() {
                Some(&[1, h, w, c]) if h * w > 1 => {
                    let (hw, c, n_in) = ((h * w) as usize, c as usize, dims[1]);
                    let mut p = vec![0i8; ints.len()];
                    for o in 0..dims[0] {
                        for ch in 0..c {
                            for pix in 0..hw {
                                p[o * n_in + pix * c + ch] = ints[o * n_in + ch * hw + pix];
                            }
                        }
                    }
                    p
                }
                _ => ints.to_vec(),
            }
        }
        other => panic!("unexpected op {other:?}"),
    }
}

/// Issue 12, item 7: the packed model, calibration.json and the quantizer agree on
/// every weight integer and scale, after a QAT fine-tune at 8 bits (weights int8,
/// dense or sparse).
#[test]
fn deployed_weights_are_the_quantizers_integers() -> Result<()> {
    let report = deployed_weights_match(
        8,
        &[Encoding::Dense, Encoding::SparseRel8, Encoding::SparseRel4],
    )?;
    check_agreement("lenet5, 8-bit weights", &report);
    Ok(())
}

/// The same at 4 and 2 bits: the weights are stored packed (smaller than sparse at
/// 50 % sparsity), still exactly the quantizer's integers, and the deployed model
/// computes exactly the simulated integer model.
#[test]
fn low_bit_weights_deploy_packed() -> Result<()> {
    for (bits, encoding) in [(4, Encoding::Packed4), (2, Encoding::Packed2)] {
        let report = deployed_weights_match(bits, &[encoding])?;
        check_simulated_exact(&format!("lenet5, {bits}-bit weights"), &report);
    }
    Ok(())
}

/// Issue 12's bars on this small model at 4 and 2 bits: ≥ 99 % of images classified
/// alike by the deployed model and the fake-quant one, accuracy within 0.3 point. Met
/// since sprig's layers requantize with one rounding and the eval forward adds the
/// int32-grid bias (100 % agreement, 2026-12-06); TFLite's double rounding gave 98.6 to
/// 99.2 %.
#[test]
fn low_bit_deployed_agrees_with_fake_quant() -> Result<()> {
    for (bits, encoding) in [(4, Encoding::Packed4), (2, Encoding::Packed2)] {
        let report = deployed_weights_match(bits, &[encoding])?;
        check_agreement(&format!("lenet5, {bits}-bit weights"), &report);
    }
    Ok(())
}

fn deployed_weights_match(bits: u8, encodings: &[Encoding]) -> Result<DeployReport> {
    let (train_set, test) = bundled()?;
    let recipe = Recipe {
        images: 600,
        epochs: 1,
        batch_size: 32,
        lr: 2e-3,
        sparsity: Some(0.5),
        qat_images: 300,
    };
    let config = QAT8.replace(
        "\"quant_bits\": 8",
        &format!("\"quant_bits\": {{\"weight\": {bits}, \"input\": 8, \"output\": 8}}"),
    );
    let model = compress("lenet5", &train_set, &recipe, &config)?;
    // The fake-quant model as deployed_eval runs it: an eval forward (the last optimizer
    // step moved the weights after the last recorded scales).
    let batch = data::Batcher::new(&test.subset(8), 8, data::Order::Sequential, &Device::Cpu)
        .next()
        .expect("one batch")?;
    model.graph.forward(&batch.images)?;

    let packed = packed::pack(&model.graph)?;
    let runtime = packed.model()?;
    let calibration = sprig_compressor::export::calibration_json(&model.graph)?;
    let blob_data = runtime.data();
    let bytes = |r: sprig_runtime::DataRef| &blob_data[r.offset as usize..][..r.len as usize];
    let weighted: Vec<_> = model
        .graph
        .nodes()
        .iter()
        .filter(|n| n.layer.weight().is_some())
        .collect();
    let ops: Vec<Op> = runtime
        .ops()
        .filter(|op| {
            matches!(
                op,
                Op::Conv2d(_) | Op::Conv2dMaxPool(_) | Op::FullyConnected(_)
            )
        })
        .collect();
    assert_eq!(weighted.len(), ops.len());
    assert_eq!(ops.len(), 5, "lenet5: 2 conv + 3 fully connected");
    let layer_weights = runtime.layer_weights()?;
    for ((node, op), stored) in weighted.into_iter().zip(ops).zip(&layer_weights) {
        let name = node.name.as_str();
        let (ints, dims, scales) = fake_quant_integers(&model, name, bits)?;
        assert!(ints.iter().any(|&q| q != 0), "{name}: all zero");

        // The quantizer's export form is what the forward computed with.
        let q = model.graph.weight_integers(name)?.context("no integers")?;
        assert_eq!(q.bits, bits);
        assert_eq!(q.scales, scales, "{name}: scales");
        assert_eq!(q.to_i8()?, ints, "{name}: integers");

        // model.sprig holds exactly those integers ...
        let (bias, input) = match op {
            Op::Conv2d(c) => (c.bias, c.input),
            Op::Conv2dMaxPool(p) => (p.conv.bias, p.conv.input),
            Op::FullyConnected(f) => (f.bias, f.input),
            _ => unreachable!(),
        };
        assert_eq!(
            stored.dense,
            runtime_layout(&ints, &dims, &op, &runtime),
            "{name}: deployed weights"
        );
        assert!(
            encodings.contains(&stored.encoding),
            "{name}: {bits}-bit weights stored {:?}",
            stored.encoding
        );
        // ... and biases on the grid of those scales: round(b / (s_in · s_w[c])).
        let float_bias = match &node.layer {
            Layer::Conv2d(c) => c.bias(),
            Layer::Linear(l) => l.bias(),
            _ => None,
        }
        .context("lenet5's layers have biases")?
        .to_vec1::<f32>()?;
        let s_in = f64::from(runtime.tensors()[input as usize].scale);
        let expected: Vec<i32> = float_bias
            .iter()
            .zip(&scales)
            .map(|(&b, &s)| (f64::from(b) / (s_in * f64::from(s))).round() as i32)
            .collect();
        let deployed: Vec<i32> = bytes(bias.context("a bias")?)
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(deployed, expected, "{name}: deployed biases");

        // calibration.json reports the same scales.
        let reported: Vec<f32> = calibration["layers"][name]["weight"]["scales"]
            .as_array()
            .context("calibration scales")?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
            .collect();
        assert_eq!(reported, scales, "{name}: calibration.json scales");
    }
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test)?;
    Ok(report)
}

/// A quantizer whose weight grid is not max-abs: every scale is twice max|w_c| / 127, so
/// its integers stay within ±64 (activations as QAT does them).
struct HalfRangeWeights(QatQuantizer);

impl HalfRangeWeights {
    fn integers(weight: &candle_core::Tensor) -> candle_core::Result<quant::WeightIntegers> {
        let scales: Vec<f32> = quant::weight_scales(weight, 8)?
            .into_iter()
            .map(|s| 2.0 * s)
            .collect();
        let integers = quant::quantize_weight_integers(weight, &scales, 8)?;
        Ok(quant::WeightIntegers {
            bits: 8,
            scales,
            integers,
        })
    }
}

impl Quantizer for HalfRangeWeights {
    fn name(&self) -> &'static str {
        "HalfRangeWeights"
    }
    fn schema(&self) -> sprig_compressor::config::Schema {
        self.0.schema()
    }
    fn weight_integers(
        &self,
        weight: &candle_core::Tensor,
        _ctx: &quant::QuantContext,
    ) -> candle_core::Result<Option<quant::WeightIntegers>> {
        Self::integers(weight).map(Some)
    }
    fn quantize_weight(
        &self,
        weight: &candle_core::Tensor,
        _ctx: &quant::QuantContext,
        state: &mut quant::QuantState,
    ) -> candle_core::Result<candle_core::Tensor> {
        let q = Self::integers(weight)?;
        quant::fake_quantize_weight_recorded(weight, q, &quant::StraightThrough, state)
    }
    fn quantize_input(
        &self,
        x: &candle_core::Tensor,
        ctx: &quant::QuantContext,
        state: &mut quant::QuantState,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0.quantize_input(x, ctx, state)
    }
    fn quantize_output(
        &self,
        x: &candle_core::Tensor,
        ctx: &quant::QuantContext,
        state: &mut quant::QuantState,
    ) -> candle_core::Result<candle_core::Tensor> {
        self.0.quantize_output(x, ctx, state)
    }
}

/// The packed exporter writes the quantizer's integers, not a max-abs re-quantization
/// of its own (which would span ±127 here).
#[test]
fn packed_weights_follow_the_quantizer_not_max_abs() -> Result<()> {
    let (train_set, _) = bundled()?;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    HalfRangeWeights(QatQuantizer::new())
        .compress(&mut model.graph, &ConfigList::from_json_str(QAT8)?)?;
    let batch = data::Batcher::new(
        &train_set.subset(32),
        32,
        data::Order::Sequential,
        &Device::Cpu,
    )
    .next()
    .expect("one batch")?;
    model.graph.forward_t(&batch.images, true)?;
    let packed = packed::pack(&model.graph)?;
    let runtime = packed.model()?;
    let ops: Vec<Op> = runtime
        .ops()
        .filter(|op| {
            matches!(
                op,
                Op::Conv2d(_) | Op::Conv2dMaxPool(_) | Op::FullyConnected(_)
            )
        })
        .collect();
    let names = ["conv1", "conv2", "fc1", "fc2", "fc3"];
    let layer_weights = runtime.layer_weights()?;
    for ((name, op), stored) in names.into_iter().zip(ops).zip(&layer_weights) {
        let (ints, dims, _) = fake_quant_integers(&model, name, 8)?;
        let widest = ints.iter().map(|q| q.unsigned_abs()).max().unwrap_or(0);
        assert!(
            (60..=64).contains(&widest),
            "{name}: widest integer {widest}"
        );
        assert_eq!(
            stored.dense,
            runtime_layout(&ints, &dims, &op, &runtime),
            "{name}"
        );
    }
    // The deployed model computes what the fake-quant one does.
    let (_, test) = bundled()?;
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test.subset(200))?;
    assert!(report.agreement >= 0.99, "{report}");
    Ok(())
}
