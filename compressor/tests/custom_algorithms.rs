//! The user-written algorithms of `examples/custom_algorithms.rs` do what they claim, on
//! tiny hand-checked inputs (the example's code is compiled in here as a module).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use sprig_compressor::config::{ConfigList, LayerConfig, QuantType};
use sprig_compressor::models::Model;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{PruneTarget, Pruner};
use sprig_compressor::quant::{QuantContext, QuantGrad, QuantRange, QuantState, Quantizer};

#[allow(dead_code)] // the example's `main`
#[path = "../examples/custom_algorithms.rs"]
mod example;

use example::{registry, ClippedIdentity, FilterPruner, TernaryQuantizer, TERNARY_CLIP};

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn layer_config(op_type: OpType, sparsity: Option<f64>, bits: Option<u8>) -> LayerConfig {
    LayerConfig {
        name: "layer".into(),
        op_type,
        index: 0,
        sparsity,
        quant_bits: bits
            .map(|b| BTreeMap::from([(QuantType::Weight, b)]))
            .unwrap_or_default(),
        extra: BTreeMap::new(),
    }
}

#[test]
fn clipped_identity_has_the_quantized_value_and_a_clipped_gradient() -> Result<()> {
    // Values far outside the range too: the value must still be exactly `q`.
    let x = Var::from_slice(&[-3.0f32, -1.0, -0.3, 0.0, 0.7, 1.0, 1e8], 7, &Device::Cpu)?;
    let q = Tensor::from_slice(&[-1.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0], 7, &Device::Cpu)?;
    let y = ClippedIdentity.apply(
        x.as_tensor(),
        &q,
        QuantRange {
            low: -1.0,
            high: 1.0,
        },
    )?;
    assert_eq!(values(&y)?, values(&q)?);
    let grads = y.sum_all()?.backward()?;
    let g = grads.get(x.as_tensor()).context("no gradient")?;
    assert_eq!(values(g)?, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    Ok(())
}

#[test]
fn filter_pruner_removes_the_weakest_channels() -> Result<()> {
    // Row L1 norms: 0.6, 3.0, 0.3, 1.5 → at sparsity 0.5 rows 2 and 0 go.
    let w = Tensor::from_slice(
        &[0.1f32, -0.5, 1.0, 2.0, 0.3, 0.0, -1.0, 0.5],
        (4, 2),
        &Device::Cpu,
    )?;
    let target = PruneTarget::new("layer", OpType::Linear, &w);
    let mask = FilterPruner.calc_mask(&target, &layer_config(OpType::Linear, Some(0.5), None))?;
    assert_eq!(
        values(mask.tensor())?,
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]
    );
    // Sparsity 0.9 of 4 channels rounds to 4, but one channel is always kept.
    let mask = FilterPruner.calc_mask(&target, &layer_config(OpType::Linear, Some(0.9), None))?;
    assert_eq!(
        values(mask.tensor())?,
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    );
    // No sparsity: an error naming the layer.
    let err = FilterPruner
        .calc_mask(&target, &layer_config(OpType::Linear, None, None))
        .expect_err("no sparsity accepted");
    assert!(err.to_string().contains("layer"), "{err}");

    // Through `compress`, whole conv filters of LeNet-5 go.
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 1)?;
    let config = ConfigList::from_json_str(r#"[{"op_names": ["conv2"], "sparsity": 0.25}]"#)?;
    FilterPruner.compress(&mut model.graph, &config)?;
    let conv2 = model
        .graph
        .node("conv2")
        .and_then(|n| n.layer.weight())
        .context("conv2")?;
    let filters = conv2.flatten_from(1)?.to_vec2::<f32>()?;
    let zero_filters = filters
        .iter()
        .filter(|f| f.iter().all(|&v| v == 0.0))
        .count();
    let untouched = filters
        .iter()
        .filter(|f| f.iter().all(|&v| v != 0.0))
        .count();
    assert_eq!(
        (zero_filters, untouched),
        (4, 12),
        "16 filters, round(0.25·16) = 4 pruned"
    );
    Ok(())
}

#[test]
fn ternary_quantizer_matches_hand_computation() -> Result<()> {
    // Row 0: mean|w| = 1.7/4 = 0.425, Δ = 0.2975; above it 0.5 and -0.9 → α = 0.7.
    // Row 1: all zero (a pruned channel) → α = 0, everything 0 (no division by zero).
    let w = Var::from_slice(
        &[0.5f32, -0.1, -0.9, 0.2, 0.0, 0.0, 0.0, 0.0],
        (2, 4),
        &Device::Cpu,
    )?;
    let config = layer_config(OpType::Linear, None, Some(2));
    let ctx = QuantContext {
        config: &config,
        training: true,
    };
    let mut state = QuantState::default();
    let q = TernaryQuantizer.quantize_weight(w.as_tensor(), &ctx, &mut state)?;
    let expected = [0.7f32, 0.0, -0.7, 0.0, 0.0, 0.0, 0.0, 0.0];
    for (a, e) in values(&q)?.iter().zip(expected) {
        assert!((a - e).abs() < 1e-6, "{a} vs {e}");
    }
    assert_eq!(state.weight_scales.len(), 2);
    assert!((state.weight_scales[0] - 0.7).abs() < 1e-6 && state.weight_scales[1] == 0.0);
    assert_eq!((state.weight_bits, state.steps), (Some(2), 1));
    // Every weight is inside [-1, 1], so the gradient of the sum is all ones.
    let grads = q.sum_all()?.backward()?;
    assert_eq!(
        values(grads.get(w.as_tensor()).context("no gradient")?)?,
        [1.0; 8]
    );
    assert_eq!((TERNARY_CLIP.low, TERNARY_CLIP.high), (-1.0, 1.0));

    // The schema takes 2 bits only.
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 1)?;
    let eight = r#"[{"op_types": ["Linear"], "quant_types": ["weight"], "quant_bits": 8}]"#;
    let err = TernaryQuantizer
        .compress(&mut model.graph, &ConfigList::from_json_str(eight)?)
        .expect_err("8-bit ternary accepted");
    assert!(err.to_string().contains("2..=2"), "{err}");
    Ok(())
}

#[test]
fn a_registered_pruner_is_nameable_in_a_plan_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        r#"{"pruner": {"algorithm": "ExampleFilterPruner",
            "config_list": [{"op_names": ["conv2"], "sparsity": 0.25}]}}"#,
    )?;
    // Unknown to the built-in registry, with the valid names listed.
    let err = sprig_compressor::compress::Plan::from_path(&plan)
        .expect_err("not built in")
        .to_string();
    assert!(
        err.contains("ExampleFilterPruner") && err.contains("LevelPruner"),
        "{err}"
    );

    // Registered, the whole job runs it.
    let mut opts = sprig_compressor::compress::CompressOptions::new(dir.path().join("run"));
    opts.registry = registry();
    opts.plan = Some(plan);
    opts.data = Some(sprig_compressor::data::bundled_dir());
    opts.cache = dir.path().join("cache");
    (opts.epochs, opts.ft_epochs, opts.train_limit) = (1, 1, Some(256));
    opts.progress = false;
    let summary = sprig_compressor::compress::run(&opts)?;
    let conv2 = summary
        .layers
        .iter()
        .find(|r| r.name == "conv2")
        .context("conv2 row")?;
    assert_eq!((conv2.channels_kept, conv2.channels), (12, 16));
    Ok(())
}
