//! Batch-norm folding preserves the eval-mode function of the models that have batch
//! norms, and seeded initialization is repeatable.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::compress::fold_batch_norms;
use sprig_compressor::models::{Model, MODEL_NAMES};
use sprig_compressor::nn::{Layer, OpType};

fn random(rng: &mut ChaCha8Rng, dims: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let n = dims.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Ok(Tensor::from_vec(v, dims, &Device::Cpu)?)
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn count_op(model: &Model, op: OpType) -> usize {
    model
        .graph
        .nodes()
        .iter()
        .filter(|n| n.layer.op_type() == op)
        .count()
}

fn check_fold(name: &str, batch_norms: usize) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut model = Model::new(name, 10, &Device::Cpu, 3)?;
    assert_eq!(
        count_op(&model, OpType::BatchNorm2d),
        batch_norms,
        "{name}: batch norms"
    );
    // Non-trivial γ and β, and running statistics from three training-mode forwards.
    for (var_name, var) in model.all_vars() {
        if var_name.contains(".bn.")
            && (var_name.ends_with(".weight") || var_name.ends_with(".bias"))
        {
            let lo = if var_name.ends_with(".weight") {
                0.5
            } else {
                -0.5
            };
            var.set(&random(&mut rng, var.dims(), lo, lo + 1.0)?)?;
        }
    }
    for _ in 0..3 {
        model
            .graph
            .forward_t(&random(&mut rng, &[8, 1, 28, 28], -1.0, 1.0)?, true)?;
    }
    let vars: BTreeMap<String, _> = model.all_vars().into_iter().collect();
    let means = values(vars["stem.bn.running_mean"].as_tensor())?;
    let variances = values(vars["stem.bn.running_var"].as_tensor())?;
    assert!(
        means.iter().any(|&m| m.abs() > 1e-3),
        "{name}: running means stayed at 0"
    );
    assert!(
        variances.iter().any(|&v| (v - 1.0).abs() > 1e-3),
        "{name}: running variances stayed at 1"
    );

    let x = random(&mut rng, &[4, 1, 28, 28], -1.0, 1.0)?;
    let before = values(&model.graph.forward(&x)?)?;
    let folded = fold_batch_norms(&mut model)?;
    assert_eq!(folded.len(), batch_norms, "{name}: folded {folded:?}");
    let after = values(&model.graph.forward(&x)?)?;

    let scale = before.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = before
        .iter()
        .zip(&after)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(scale > 0.0);
    assert!(
        diff <= 1e-4 * scale,
        "{name}: eval outputs differ by {diff} (largest output {scale})"
    );

    assert_eq!(
        count_op(&model, OpType::BatchNorm2d),
        0,
        "{name}: batch norms left"
    );
    let vars: BTreeMap<String, _> = model.all_vars().into_iter().collect();
    let leftovers: Vec<&String> = vars.keys().filter(|k| k.contains(".bn.")).collect();
    assert!(
        leftovers.is_empty(),
        "{name}: batch-norm variables left: {leftovers:?}"
    );
    for node in model.graph.nodes() {
        if let Layer::Conv2d(conv) = &node.layer {
            let bias = conv
                .bias()
                .with_context(|| format!("{name}: {} has no bias", node.name))?;
            assert!(
                conv.config().bias,
                "{name}: {} config says no bias",
                node.name
            );
            // The graph computes with the varmap's variables, so training after folding
            // updates the folded parameters.
            let w = vars
                .get(&format!("{}.weight", node.name))
                .context("weight var")?;
            let b = vars
                .get(&format!("{}.bias", node.name))
                .context("bias var")?;
            assert_eq!(
                w.as_tensor().id(),
                conv.weight().id(),
                "{name}: {} weight is not its var",
                node.name
            );
            assert_eq!(
                b.as_tensor().id(),
                bias.id(),
                "{name}: {} bias is not its var",
                node.name
            );
        }
    }
    // Nothing is left to fold, and the graph still trains.
    assert!(fold_batch_norms(&mut model)?.is_empty());
    model.graph.forward_t(&x, true)?;
    Ok(())
}

#[test]
fn folding_resnet8_keeps_its_eval_function() -> Result<()> {
    // stem + 3 stacks × 2 blocks + 2 projection shortcuts.
    check_fold("resnet8", 9)
}

#[test]
fn folding_dscnn_keeps_its_eval_function() -> Result<()> {
    // stem + 3 × (depthwise, pointwise).
    check_fold("dscnn", 7)
}

fn all_values(model: &Model) -> Result<BTreeMap<String, Vec<f32>>> {
    model
        .all_vars()
        .into_iter()
        .map(|(k, v)| Ok((k, values(v.as_tensor())?)))
        .collect()
}

#[test]
fn initialization_depends_on_the_seed_only() -> Result<()> {
    assert_eq!(
        MODEL_NAMES,
        ["mlp", "lenet5", "lenet5_bn", "resnet8", "dscnn"]
    );
    for name in MODEL_NAMES {
        let model = Model::new(name, 10, &Device::Cpu, 42)?;
        let a = all_values(&model)?;
        let b = all_values(&Model::new(name, 10, &Device::Cpu, 42)?)?;
        let c = all_values(&Model::new(name, 10, &Device::Cpu, 43)?)?;
        assert!(!a.is_empty());
        assert_eq!(a, b, "{name}: same seed, different weights");
        assert_eq!(a.keys().collect::<Vec<_>>(), c.keys().collect::<Vec<_>>());
        for (var, va) in &a {
            // Randomly initialized: conv/linear weights and biases (batch norms start at
            // constants, which no seed changes).
            let layer = var.rsplit_once('.').map_or(var.as_str(), |(l, _)| l);
            let batch_norm = model
                .graph
                .node(layer)
                .is_some_and(|n| matches!(n.layer, Layer::BatchNorm2d(_)));
            if !batch_norm {
                assert_ne!(
                    va, &c[var],
                    "{name}: {var} is the same under seeds 42 and 43"
                );
            }
        }
    }
    Ok(())
}
