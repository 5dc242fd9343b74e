//! Sub-8-bit plans end to end (issue 12): the example plans in `configs/` load and
//! resolve, and `compress::run` takes LeNet-5 through DoReFa 4- and 2-bit, BNN and mixed
//! 8/4-bit QAT on a few hundred images of the bundled subset, keeping accuracy well
//! above chance. For every layer of every result the exporters' contract holds: the
//! fake-quantized weight the forward pass computes with is exactly
//! `WeightIntegers::dequantize()`, the integers lie within ±qmax, and 1-bit integers
//! are ±1.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::Device;
use sprig_compressor::compress::{self, CompressOptions, Plan, QuantizerKind};
use sprig_compressor::config::QuantType;
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::prune::Registry;
use sprig_compressor::quant::{bind, symmetric_qmax};

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

/// A layer's name with its weight and output bits.
type LayerBits = (String, Option<u8>, Option<u8>);

/// Per LeNet-5 layer: (weight bits, output bits) that `file`'s quantizer resolves to.
fn resolved_bits(file: &str) -> Result<(QuantizerKind, Vec<LayerBits>)> {
    let plan = Plan::from_path(&configs().join(file))?;
    let stage = plan.quantizer.context("a quantizer stage")?;
    let kind = QuantizerKind::parse(&stage.algorithm)?;
    let model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let layers = kind.make().resolve(&model.graph, &stage.config_list)?;
    Ok((
        kind,
        layers
            .into_iter()
            .map(|l| {
                let (w, o) = (l.bits(QuantType::Weight), l.bits(QuantType::Output));
                (l.name, w, o)
            })
            .collect(),
    ))
}

fn expected(bits: &[(&str, u8, u8)]) -> Vec<LayerBits> {
    bits.iter()
        .map(|&(n, w, o)| (n.to_string(), Some(w), Some(o)))
        .collect()
}

#[test]
fn low_bit_example_plans_resolve_to_their_bit_widths() -> Result<()> {
    let all = |w: u8| -> Vec<(&str, u8, u8)> {
        ["conv1", "conv2", "fc1", "fc2", "fc3"]
            .into_iter()
            .map(|n| (n, w, 8))
            .collect()
    };
    assert_eq!(
        resolved_bits("dorefa4.json")?,
        (QuantizerKind::DoReFa, expected(&all(4)))
    );
    assert_eq!(
        resolved_bits("dorefa2.json")?,
        (QuantizerKind::DoReFa, expected(&all(2)))
    );
    assert_eq!(
        resolved_bits("bnn.json")?,
        (
            QuantizerKind::Bnn,
            expected(&[
                ("conv1", 8, 8),
                ("conv2", 1, 1),
                ("fc1", 1, 1),
                ("fc2", 1, 1),
                ("fc3", 8, 8)
            ])
        )
    );
    assert_eq!(
        resolved_bits("bnn-binary-conv.json")?,
        (
            QuantizerKind::Bnn,
            expected(&[
                ("conv1", 8, 1),
                ("conv2", 1, 1),
                ("fc1", 1, 1),
                ("fc2", 1, 1),
                ("fc3", 8, 8)
            ])
        )
    );
    assert_eq!(
        resolved_bits("mixed-8-4.json")?,
        (
            QuantizerKind::Qat,
            expected(&[
                ("conv1", 8, 8),
                ("conv2", 8, 8),
                ("fc1", 4, 8),
                ("fc2", 4, 8),
                ("fc3", 4, 8)
            ])
        )
    );
    Ok(())
}

/// Every plan in `configs/` loads, and its stages resolve against the model it is for
/// (`dscnn-*` plans: dscnn; `slim*`: lenet5_bn; the rest: lenet5), as `compress`
/// checks before training.
#[test]
fn every_example_plan_loads_and_resolves() -> Result<()> {
    let mut seen = 0;
    for entry in std::fs::read_dir(configs())? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let plan = Plan::from_path(&path).with_context(|| name.to_string())?;
        let model_name = match name.split(['-', '.']).next() {
            Some("dscnn") => "dscnn",
            Some(slim) if slim.starts_with("slim") => "lenet5_bn",
            _ => "lenet5",
        };
        let model = Model::new(model_name, 10, &Device::Cpu, 0)?;
        if let Some(stage) = &plan.pruner {
            let pruner = stage.make_pruner(&Registry::builtin())?;
            pruner
                .resolve(&model.graph, &stage.config_list)
                .with_context(|| name.to_string())?;
        }
        if let Some(stage) = &plan.quantizer {
            QuantizerKind::parse(&stage.algorithm)?
                .make()
                .resolve(&model.graph, &stage.config_list)
                .with_context(|| name.to_string())?;
        }
        seen += 1;
    }
    ensure!(seen >= 21, "only {seen} plans in configs/");
    Ok(())
}

/// The exporters' contract on every layer of `model` with its plan's quantizer bound.
fn check_integers(model: &Model, file: &str) -> Result<()> {
    let binding = model.graph.quant().context("no quantizer bound")?;
    for node in model.graph.nodes() {
        let Some(w) = node.layer.weight() else {
            continue;
        };
        let name = &node.name;
        let q = model
            .graph
            .weight_integers(name)?
            .with_context(|| format!("{file}: {name} has no integers"))?;
        let fake = binding.quantize_weight(name, &model.graph.masked_weight(name, w)?, false)?;
        let fake: Vec<f32> = fake.flatten_all()?.to_vec1()?;
        let dequantized: Vec<f32> = q.dequantize()?.flatten_all()?.to_vec1()?;
        ensure!(
            fake == dequantized,
            "{file}: {name}: fake quant != dequantize"
        );
        let qmax = symmetric_qmax(q.bits) as f32;
        let ints: Vec<f32> = q.integers.flatten_all()?.to_vec1()?;
        for v in &ints {
            ensure!(
                v.fract() == 0.0 && v.abs() <= qmax,
                "{file}: {name}: integer {v} outside ±{qmax} at {} bits",
                q.bits
            );
            ensure!(
                q.bits != 1 || v.abs() == 1.0,
                "{file}: {name}: 1-bit integer {v}"
            );
        }
        ensure!(
            q.scales.iter().all(|s| s.is_finite() && *s > 0.0),
            "{file}: {name}: scales {:?}",
            q.scales
        );
        let expected = binding
            .layer(name)
            .and_then(|l| l.config.bits(QuantType::Weight));
        ensure!(Some(q.bits) == expected, "{file}: {name}: {} bits", q.bits);
    }
    Ok(())
}

#[test]
fn low_bit_plans_compress_lenet5_above_chance_on_exact_integers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for (file, floor) in [
        ("dorefa4.json", 0.6),
        ("dorefa2.json", 0.5),
        ("bnn.json", 0.4),
        ("mixed-8-4.json", 0.6),
    ] {
        let mut opts = CompressOptions::new(dir.path().join(file));
        opts.data = Some(data::bundled_dir());
        opts.plan = Some(configs().join(file));
        opts.cache = dir.path().join("cache");
        opts.train_limit = Some(600);
        opts.epochs = 2;
        opts.qat_epochs = 1;
        opts.batch_size = 32;
        opts.progress = false;
        let summary = compress::run(&opts)?;
        let accuracy = summary
            .quantized_accuracy
            .context("no quantized accuracy")?;
        eprintln!(
            "{file}: float {:.1} %, quantized {:.1} %, deployed {}",
            100.0 * summary.float_accuracy,
            100.0 * accuracy,
            summary
                .deployed_accuracy
                .map_or("-".to_string(), |a| format!("{:.1} %", 100.0 * a))
        );
        // Chance is 10 %.
        ensure!(accuracy > floor, "{file}: {accuracy}");

        // The summary shows each layer's widths.
        let plan_bits = resolved_bits(file)?.1;
        let rows: Vec<LayerBits> = summary
            .layers
            .iter()
            .map(|r| (r.name.clone(), r.weight_bits, r.output_bits))
            .collect();
        assert_eq!(rows, plan_bits, "{file}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(opts.out.join("summary.json"))?)?;
        assert_eq!(
            json["layers"][1]["weight_bits"],
            plan_bits[1].1.unwrap_or(0)
        );

        // The trained weights, with the plan's quantizer bound as the run bound it.
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
        model.load_weights(&opts.out.join("model.safetensors"))?;
        let plan = Plan::from_path(&configs().join(file))?;
        let stage = plan.quantizer.context("quantizer")?;
        let kind = QuantizerKind::parse(&stage.algorithm)?;
        bind(kind.make(), &mut model.graph, &stage.config_list)?;
        check_integers(&model, file)?;

        if kind == QuantizerKind::Bnn {
            // Latent weights of binary layers stay within [-1, 1].
            for name in ["conv2", "fc1", "fc2"] {
                let w = model.graph.node(name).and_then(|n| n.layer.weight());
                let max = w.context(name)?.abs()?.max_all()?.to_scalar::<f32>()?;
                ensure!(max <= 1.0, "{name}: latent |w| up to {max}");
            }
        } else {
            // DoReFa and QAT store their 4- and 2-bit weights packed, on the chip's
            // integers, and the deployed model agrees with the fake-quantized one.
            ensure!(
                summary.packed_skipped.is_none(),
                "{file}: {:?}",
                summary.packed_skipped
            );
            let agreement = summary.agreement.unwrap_or(0.0);
            ensure!(agreement >= 0.97, "{file}: agreement {agreement}");
        }
    }
    Ok(())
}
