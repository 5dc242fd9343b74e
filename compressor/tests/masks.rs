//! Mask invariants of pruning: exact per-layer sparsities from a `config_list` with
//! overrides and exclusions, pruned weights that stay exactly zero through optimizer
//! steps, and a forward pass that computes with the masked weights.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::config::ConfigList;
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::models::Model;
use sprig_compressor::prune::{sparsity_of, LevelPruner, Pruner};
use sprig_compressor::train::{self, OptimizerKind, TrainConfig};

const SEED: u64 = 11;

/// Default 0.8; `fc2` gets a sparsity whose product with its size rounds up
/// (0.66665 · 10080 = 6719.83 → 6720, where truncation would give 6719); `fc3` 0.5 from
/// a later dict; `conv1` excluded by the last dict.
const CONFIG: &str = r#"[
    {"op_types": ["default"], "sparsity": 0.8},
    {"op_names": ["fc2"], "sparsity": 0.66665},
    {"op_names": ["fc3"], "sparsity": 0.5},
    {"op_names": ["conv1"], "exclude": true}
]"#;

/// `(layer, weight elements, zeros expected)`, worked out by hand from LeNet-5's shapes:
/// conv2 16·6·5·5 = 2400 → 0.8·2400 = 1920; fc1 120·400 = 48000 → 38400;
/// fc2 84·120 = 10080 → round(6719.83) = 6720; fc3 10·84 = 840 → 420.
const EXPECTED: [(&str, usize, usize); 4] = [
    ("conv2", 2400, 1920),
    ("fc1", 48000, 38400),
    ("fc2", 10080, 6720),
    ("fc3", 840, 420),
];

fn weight_of(model: &Model, layer: &str) -> Result<Tensor> {
    let node = model
        .graph
        .node(layer)
        .with_context(|| format!("no layer {layer}"))?;
    Ok(node
        .layer
        .weight()
        .with_context(|| format!("{layer} has no weight"))?
        .clone())
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Weights of every weighted layer, by name, as plain vectors.
fn weight_values(model: &Model) -> Result<BTreeMap<String, Vec<f32>>> {
    let mut out = BTreeMap::new();
    for node in model.graph.nodes() {
        if let Some(w) = node.layer.weight() {
            out.insert(node.name.clone(), values(w)?);
        }
    }
    Ok(out)
}

fn pruned_lenet() -> Result<(Model, BTreeMap<String, Vec<f32>>)> {
    let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let before = weight_values(&model)?;
    let config = ConfigList::from_json_str(CONFIG)?;
    let resolved = LevelPruner.compress(&mut model.graph, &config)?;
    let names: Vec<&str> = resolved.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv2", "fc1", "fc2", "fc3"]);
    Ok((model, before))
}

#[test]
fn level_pruner_gives_each_layer_its_exact_sparsity() -> Result<()> {
    let (model, before) = pruned_lenet()?;
    // Freshly initialized weights have no exact zeros, so every zero below is a pruned one.
    for (name, w) in &before {
        assert!(
            w.iter().all(|&v| v != 0.0),
            "{name} starts with a zero weight"
        );
    }
    let masked: Vec<&String> = model.graph.masks().keys().collect();
    assert_eq!(
        masked,
        ["conv2", "fc1", "fc2", "fc3"],
        "masks are attached by layer name"
    );

    for (layer, n, zeros) in EXPECTED {
        let w = weight_of(&model, layer)?;
        let v = values(&w)?;
        assert_eq!(v.len(), n, "{layer}: weight size");
        assert_eq!(
            v.iter().filter(|&&x| x == 0.0).count(),
            zeros,
            "{layer}: zeros"
        );
        assert_eq!(
            sparsity_of(&w)?,
            zeros as f64 / n as f64,
            "{layer}: sparsity_of"
        );

        // The mask has the weight's shape, holds only 0 and 1, and is 0 exactly where
        // the stored weight is now 0; kept weights are untouched.
        let mask = &model.graph.masks()[layer];
        assert_eq!(mask.dims(), w.dims(), "{layer}: mask shape");
        let m = values(mask)?;
        let original = &before[layer];
        for i in 0..n {
            assert!(m[i] == 0.0 || m[i] == 1.0, "{layer}: mask value {}", m[i]);
            if m[i] == 0.0 {
                assert_eq!(v[i], 0.0, "{layer}[{i}] is pruned but not zero");
            } else {
                assert_eq!(v[i], original[i], "{layer}[{i}] is kept but changed");
            }
        }
        // Level pruning removes the smallest magnitudes.
        let largest_pruned = (0..n)
            .filter(|&i| m[i] == 0.0)
            .map(|i| original[i].abs())
            .fold(0f32, f32::max);
        let smallest_kept = (0..n)
            .filter(|&i| m[i] == 1.0)
            .map(|i| original[i].abs())
            .fold(f32::INFINITY, f32::min);
        assert!(
            largest_pruned <= smallest_kept,
            "{layer}: pruned {largest_pruned} > kept {smallest_kept}"
        );
    }

    // The excluded layer is neither masked nor changed.
    assert!(!model.graph.masks().contains_key("conv1"));
    assert_eq!(values(&weight_of(&model, "conv1")?)?, before["conv1"]);
    assert_eq!(sparsity_of(&weight_of(&model, "conv1")?)?, 0.0);

    // The varmap's variables are the graph's weights (checkpoints and exports read them).
    let vars: BTreeMap<String, Var> = model.all_vars().into_iter().collect();
    for (layer, _, zeros) in EXPECTED {
        let v = values(vars[&format!("{layer}.weight")].as_tensor())?;
        assert_eq!(
            v.iter().filter(|&&x| x == 0.0).count(),
            zeros,
            "varmap {layer}.weight"
        );
    }
    Ok(())
}

fn small_data() -> Result<(Dataset, Dataset)> {
    let (train, test) = data::resolve(None)?.load()?;
    Ok((train.subset(512), test.subset(100)))
}

fn pruned_positions_stay_zero(optimizer: OptimizerKind) -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let (mut model, _) = pruned_lenet()?;
    let pruned = weight_values(&model)?;
    let mut cfg = TrainConfig::new(1, SEED);
    cfg.batch_size = 64;
    cfg.optimizer = optimizer;
    cfg.progress = false;
    let mut pruner = LevelPruner;
    let report = train::train(&mut model, &train_set, &test_set, &cfg, Some(&mut pruner))?;
    assert!(report.finished);
    assert!(report.history[0].train_loss.is_finite());

    let trained = weight_values(&model)?;
    for (layer, n, zeros) in EXPECTED {
        let mask = values(&model.graph.masks()[layer])?;
        let (old, new) = (&pruned[layer], &trained[layer]);
        let mut changed = 0;
        for i in 0..n {
            if mask[i] == 0.0 {
                assert_eq!(new[i], 0.0, "{layer}[{i}] revived ({optimizer:?})");
            } else if new[i] != old[i] {
                changed += 1;
            }
        }
        let kept = n - zeros;
        // Weight decay alone moves every kept weight; allow for a rare rounding tie.
        assert!(
            changed * 100 >= kept * 95,
            "{layer}: only {changed} of {kept} kept weights changed ({optimizer:?})"
        );
    }
    // The unpruned layer trained freely.
    let changed = pruned["conv1"]
        .iter()
        .zip(&trained["conv1"])
        .filter(|(a, b)| a != b)
        .count();
    assert!(
        changed * 100 >= 150 * 95,
        "conv1: only {changed} of 150 weights changed"
    );
    Ok(())
}

#[test]
fn pruned_weights_stay_zero_through_sgd_steps() -> Result<()> {
    pruned_positions_stay_zero(OptimizerKind::sgd())
}

#[test]
fn pruned_weights_stay_zero_through_adamw_steps() -> Result<()> {
    pruned_positions_stay_zero(OptimizerKind::adamw())
}

#[test]
fn forward_computes_with_the_masked_weights() -> Result<()> {
    let (pruned, before) = pruned_lenet()?;
    // The same network without masks, its weights multiplied by the masks by hand.
    let reference = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let dense = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let vars: BTreeMap<String, Var> = reference.all_vars().into_iter().collect();
    for (layer, mask) in pruned.graph.masks() {
        let w = Tensor::from_vec(before[layer].clone(), mask.dims(), &Device::Cpu)?;
        vars[&format!("{layer}.weight")].set(&(w * mask)?)?;
    }
    assert!(reference.graph.masks().is_empty());

    let mut rng = ChaCha8Rng::seed_from_u64(SEED);
    let x: Vec<f32> = (0..4 * 28 * 28)
        .map(|_| rng.random_range(-1f32..1f32))
        .collect();
    let x = Tensor::from_vec(x, (4, 1, 28, 28), &Device::Cpu)?;
    let y = values(&pruned.graph.forward(&x)?)?;
    assert_eq!(y, values(&reference.graph.forward(&x)?)?);
    assert_ne!(
        y,
        values(&dense.graph.forward(&x)?)?,
        "pruning should change the output"
    );

    // The mask acts in the forward pass: a value written into a pruned position of the
    // stored weight (as an optimizer might) does not reach the output.
    let fc1 = Var::from_tensor(&weight_of(&pruned, "fc1")?)?;
    let mut w = values(fc1.as_tensor())?;
    let hole = w
        .iter()
        .position(|&v| v == 0.0)
        .context("fc1 has no pruned weight")?;
    w[hole] = 5.0;
    fc1.set(&Tensor::from_vec(w, fc1.dims(), &Device::Cpu)?)?;
    assert_eq!(values(&pruned.graph.forward(&x)?)?, y);
    Ok(())
}
