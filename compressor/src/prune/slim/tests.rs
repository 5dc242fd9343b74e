//! Unit tests of `SlimPruner`: the global ranking, masks on batch norms and their convs,
//! checks of the plan, and the L1 regularizer.

use candle_core::{Device, Var};
use candle_nn::{VarBuilder, VarMap};

use super::*;
use crate::compress::fold_batch_norms;
use crate::models::Model;
use crate::nn::{BatchNorm2d, Conv2d, Conv2dConfig, ReLU};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn set(t: &Tensor, data: &[f32]) {
    let var = Var::from_tensor(t).unwrap();
    var.set(&Tensor::from_vec(data.to_vec(), t.dims(), t.device()).unwrap())
        .unwrap();
}

fn layer<'g>(graph: &'g Graph, name: &str) -> &'g Layer {
    &graph.node(name).unwrap().layer
}

/// `conv_a (1→5) → bn_a → conv_b (5→5) → bn_b`, with γ_a = [0, 1, 2, 3, 4] and
/// γ_b = [0, −1, −2, −3, −4]; the other parameters random (no zeros).
fn two_bn_graph() -> (Graph, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut g = Graph::new([1, 4, 4]);
    let x = g.push(
        "conv_a",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(1, 5, 3).padding(1), vb.pp("conv_a")).unwrap()),
        &[Source::Input],
    );
    let x = g.push(
        "bn_a",
        Layer::BatchNorm2d(BatchNorm2d::new(5, vb.pp("bn_a")).unwrap()),
        &[x],
    );
    let x = g.push(
        "conv_b",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(5, 5, 3).padding(1), vb.pp("conv_b")).unwrap()),
        &[x],
    );
    g.push(
        "bn_b",
        Layer::BatchNorm2d(BatchNorm2d::new(5, vb.pp("bn_b")).unwrap()),
        &[x],
    );
    set(
        layer(&g, "bn_a").maskable_weight().unwrap(),
        &[0., 1., 2., 3., 4.],
    );
    set(
        layer(&g, "bn_b").maskable_weight().unwrap(),
        &[0., -1., -2., -3., -4.],
    );
    for bn in ["bn_a", "bn_b"] {
        set(
            layer(&g, bn).maskable_bias().unwrap(),
            &[0.5, 0.6, 0.7, 0.8, 0.9],
        );
    }
    (g, varmap)
}

fn config(json: &str) -> ConfigList {
    ConfigList::from_json_str(json).unwrap()
}

fn bn_config(sparsity: f64) -> ConfigList {
    config(&format!(
        r#"[{{"op_types": ["BatchNorm2d"], "sparsity": {sparsity}}}]"#
    ))
}

/// The channels a per-channel 0/1 mask (dim 0) removes; checks each is whole.
fn masked_channels(mask: &Tensor) -> Vec<usize> {
    let channels = mask.dim(0).unwrap();
    let data = values(mask);
    let per = data.len() / channels;
    (0..channels)
        .filter(|&c| {
            let row = &data[c * per..(c + 1) * per];
            assert!(
                row.iter().all(|&v| v == row[0]),
                "channel {c} partly masked"
            );
            row[0] == 0.0
        })
        .collect()
}

/// Every mask of the pair `bn`/`conv` removes exactly `expected`, and the removed
/// channels' γ, β, filters and biases are stored as exact zeros (the kept ones not).
fn assert_pruned(graph: &Graph, bn: &str, conv: &str, expected: &[usize]) {
    for name in [bn, conv] {
        assert_eq!(
            masked_channels(&graph.masks()[name]),
            expected,
            "{name} weight mask"
        );
        assert_eq!(
            masked_channels(&graph.bias_masks()[name]),
            expected,
            "{name} bias mask"
        );
        let l = layer(graph, name);
        for (what, param) in [
            ("weight", l.maskable_weight().unwrap()),
            ("bias", l.maskable_bias().unwrap()),
        ] {
            let channels = param.dim(0).unwrap();
            let data = values(param);
            let per = data.len() / channels;
            for c in 0..channels {
                let row = &data[c * per..(c + 1) * per];
                if expected.contains(&c) {
                    assert!(row.iter().all(|&v| v == 0.0), "{name} {what} {c} not zero");
                } else if !(name == bn && what == "weight" && c == 0) {
                    assert!(row.iter().any(|&v| v != 0.0), "{name} {what} {c} zeroed");
                }
            }
        }
    }
}

#[test]
fn the_ranking_is_global_with_ties_by_layer_then_index() {
    let m = vec![vec![0., 1., 2., 3., 4.], vec![0., 1., 2., 3., 4.]];
    // floor(10 × 0.2) = 2: both zeros.
    assert_eq!(global_channels_to_prune(&m, 0.2), [vec![0], vec![0]]);
    // floor(10 × 0.5) = 5: a0, b0, a1, b1, then the tie at 2 goes to the first layer.
    assert_eq!(
        global_channels_to_prune(&m, 0.5),
        [vec![0, 1, 2], vec![0, 1]]
    );
    // floor(10 × 0.39) = 3.
    assert_eq!(global_channels_to_prune(&m, 0.39), [vec![0, 1], vec![0]]);
    assert_eq!(
        global_channels_to_prune(&m, 0.0),
        [vec![], vec![]] as [Vec<usize>; 2]
    );
    // Not per layer: the small layer gives up more than its share.
    let m = vec![vec![9., 8., 7., 6.], vec![0.1, 0.3, 0.2, 5.]];
    assert_eq!(global_channels_to_prune(&m, 0.25), [vec![], vec![0, 2]]);
}

#[test]
fn every_layer_keeps_a_channel() {
    // floor(10 × 0.5) = 5: a0, a1, (a2 would empty a) b0, b1, b2.
    let m = vec![vec![0., 0., 0.], vec![5., 6., 7., 8., 9., 10., 11.]];
    assert_eq!(
        global_channels_to_prune(&m, 0.5),
        [vec![0, 1], vec![0, 1, 2]]
    );
    // Two one-channel layers: nothing can go.
    let m = vec![vec![0.], vec![0.]];
    assert_eq!(
        global_channels_to_prune(&m, 0.5),
        [vec![], vec![]] as [Vec<usize>; 2]
    );
    // Near-total sparsity leaves one channel per layer.
    let m = vec![vec![1., 2., 3.], vec![4., 5.]];
    assert_eq!(global_channels_to_prune(&m, 0.99), [vec![0, 1], vec![0]]);
}

#[test]
fn compress_masks_both_batch_norms_and_their_convolutions() {
    for (sparsity, a, b) in [(0.2, vec![0], vec![0]), (0.5, vec![0, 1, 2], vec![0, 1])] {
        let (mut g, _vars) = two_bn_graph();
        let layers = SlimPruner::default()
            .compress(&mut g, &bn_config(sparsity))
            .unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["bn_a", "bn_b"]);
        assert_pruned(&g, "bn_a", "conv_a", &a);
        assert_pruned(&g, "bn_b", "conv_b", &b);
        let keys: Vec<&String> = g.masks().keys().collect();
        assert_eq!(keys, ["bn_a", "bn_b", "conv_a", "conv_b"]);
    }
}

#[test]
fn calc_mask_alone_ranks_one_layer() {
    let (g, _vars) = two_bn_graph();
    let l = layer(&g, "bn_b");
    let target = PruneTarget {
        bias: l.maskable_bias(),
        ..PruneTarget::new("bn_b", OpType::BatchNorm2d, l.maskable_weight().unwrap())
    };
    let resolved = SlimPruner::default().resolve(&g, &bn_config(0.4)).unwrap();
    let mask = SlimPruner::default()
        .calc_mask(&target, &resolved[1])
        .unwrap();
    assert_eq!(values(mask.tensor()), [0., 0., 1., 1., 1.]);
    assert_eq!(values(mask.bias().unwrap()), [0., 0., 1., 1., 1.]);
}

#[test]
fn the_regularizer_is_l1_on_gamma() {
    let (g, _vars) = two_bn_graph();
    set(
        layer(&g, "bn_a").maskable_weight().unwrap(),
        &[0.5, -1., 2., -3., 4.],
    );
    let lambda = 0.01;
    let pruner = SlimPruner::new(lambda);
    let penalty = pruner.regularizer(&g).unwrap().expect("a penalty");
    assert_eq!(penalty.rank(), 0);
    // Σ|γ_a| = 10.5, Σ|γ_b| = 10.
    let value = penalty.to_scalar::<f32>().unwrap();
    assert!((value - 0.205).abs() < 1e-6, "{value}");
    let grads = penalty.backward().unwrap();
    let expected = [
        ("bn_a", [0.01f32, -0.01, 0.01, -0.01, 0.01]),
        // γ_b[0] = 0: |γ| has no slope there; candle takes +1 (PyTorch 0).
        ("bn_b", [0.01, -0.01, -0.01, -0.01, -0.01]),
    ];
    for (bn, want) in expected {
        let gamma = layer(&g, bn).maskable_weight().unwrap();
        let grad = values(grads.get(gamma).expect("a gradient for γ"));
        for (c, (got, want)) in grad.iter().zip(want).enumerate() {
            if bn == "bn_b" && c == 0 {
                continue;
            }
            assert!((got - want).abs() < 1e-7, "{bn}[{c}]: {got} vs {want}");
        }
        // β is not penalized.
        assert!(grads.get(layer(&g, bn).maskable_bias().unwrap()).is_none());
    }
}

#[test]
fn the_penalty_and_tag_need_a_positive_lambda_and_end_with_compress() {
    let (mut g, _vars) = two_bn_graph();
    let plain = SlimPruner::default();
    assert!(plain.regularizer(&g).unwrap().is_none());
    assert_eq!(plain.baseline_tag(), None);
    assert_eq!(SlimPruner::new(0.0).baseline_tag(), None);

    let mut sparse = SlimPruner::new(1e-4);
    assert_eq!(sparse.baseline_tag().as_deref(), Some("slim-l1-0.0001"));
    assert!(sparse.regularizer(&g).unwrap().is_some());
    sparse.compress(&mut g, &bn_config(0.2)).unwrap();
    assert!(
        sparse.regularizer(&g).unwrap().is_none(),
        "fine-tuning is plain"
    );
}

#[test]
fn the_registry_builds_it_from_slim_l1() {
    let registry = crate::prune::Registry::builtin();
    let mut options = crate::prune::StageOptions::default();
    options.values.insert("slim_l1".into(), 0.001.into());
    let pruner = registry.make("SlimPruner", &options).unwrap();
    assert_eq!(pruner.name(), "SlimPruner");
    assert_eq!(pruner.baseline_tag().as_deref(), Some("slim-l1-0.001"));
    options.values.insert("slim_l1".into(), (-1.0).into());
    assert!(registry.make("SlimPruner", &options).is_err());
    let schema = SlimPruner::default().schema();
    assert_eq!(schema.default_op_types, [OpType::BatchNorm2d]);
    assert_eq!(schema.supported_op_types, [OpType::BatchNorm2d]);
}

#[test]
fn compress_prunes_lenet5_bn() {
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 5).unwrap();
    // Distinct γ so the ranking is not all ties: bn1 gets the small ones.
    set(
        layer(&model.graph, "bn1").maskable_weight().unwrap(),
        &[0.3, 0.1, 0.9, 0.2, 0.8, 0.05],
    );
    let gamma2: Vec<f32> = (0..16).map(|i| 0.15 + 0.1 * i as f32).collect();
    set(
        layer(&model.graph, "bn2").maskable_weight().unwrap(),
        &gamma2,
    );
    for bn in ["bn1", "bn2"] {
        let beta = layer(&model.graph, bn).maskable_bias().unwrap();
        let n = beta.dim(0).unwrap();
        set(
            beta,
            &(0..n).map(|i| 0.01 * (i + 1) as f32).collect::<Vec<_>>(),
        );
    }
    let layers = SlimPruner::new(1e-4)
        .compress(&mut model.graph, &bn_config(0.5))
        .unwrap();
    assert_eq!(layers.len(), 2);
    // 22 channels, 11 go: 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.55, 0.65, 0.75
    // (bn1: 5, 1, 3, 0; bn2: 0–6).
    let g = &model.graph;
    assert_pruned(g, "bn1", "conv1", &[0, 1, 3, 5]);
    assert_pruned(g, "bn2", "conv2", &[0, 1, 2, 3, 4, 5, 6]);
    let bias_masks: Vec<&String> = g.bias_masks().keys().collect();
    assert_eq!(bias_masks, ["bn1", "bn2", "conv1", "conv2"]);
}

#[test]
fn a_model_without_batch_norms_is_refused() {
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 5).unwrap();
    let err = SlimPruner::default()
        .compress(&mut model.graph, &bn_config(0.5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no BatchNorm2d layers"), "{err}");
    assert!(err.contains("<inline>"), "{err}");
    assert!(err.contains("SlimPruner"), "{err}");
    assert!(model.graph.masks().is_empty());
    // Batch norms there, but all excluded.
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 5).unwrap();
    let list = config(
        r#"[{"op_types": ["BatchNorm2d"], "sparsity": 0.5},
            {"op_names": ["bn1", "bn2"], "exclude": true}]"#,
    );
    let err = SlimPruner::default()
        .compress(&mut model.graph, &list)
        .unwrap_err()
        .to_string();
    assert!(err.contains("selects no BatchNorm2d layer"), "{err}");
}

#[test]
fn different_sparsities_are_refused() {
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 5).unwrap();
    let list = config(
        r#"[{"op_types": ["BatchNorm2d"], "sparsity": 0.5},
            {"op_names": ["bn2"], "sparsity": 0.3}]"#,
    );
    let err = SlimPruner::default()
        .compress(&mut model.graph, &list)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("<inline>: config_list[1]: SlimPruner"),
        "{err}"
    );
    assert!(err.contains("one sparsity"), "{err}");
    assert!(model.graph.masks().is_empty());
    // An excluded layer is no disagreement.
    let list = config(
        r#"[{"op_types": ["BatchNorm2d"], "sparsity": 0.5},
            {"op_names": ["bn2"], "exclude": true}]"#,
    );
    let layers = SlimPruner::default()
        .compress(&mut model.graph, &list)
        .unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(masked_channels(&model.graph.masks()["conv1"]).len(), 3);
}

#[test]
fn a_batch_norm_not_after_a_conv_is_refused() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut g = Graph::new([1, 4, 4]);
    let x = g.push(
        "conv",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(1, 3, 1), vb.pp("conv")).unwrap()),
        &[Source::Input],
    );
    let x = g.push("relu", Layer::ReLU(ReLU), &[x]);
    g.push(
        "late_bn",
        Layer::BatchNorm2d(BatchNorm2d::new(3, vb.pp("late_bn")).unwrap()),
        &[x],
    );
    let err = SlimPruner::default()
        .resolve(&g, &bn_config(0.5))
        .unwrap_err()
        .to_string();
    assert!(err.contains("config_list[0]"), "{err}");
    assert!(
        err.contains("`late_bn` reads `relu`, a ReLU, not a Conv2d"),
        "{err}"
    );
}

#[test]
fn folding_keeps_pruned_channels_zero_and_the_function() {
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 8).unwrap();
    // Non-trivial batch-norm state: γ, β, running mean and variance.
    let mut seed = 0u32;
    let mut next = |lo: f32, hi: f32| {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        lo + (hi - lo) * (seed >> 8) as f32 / (1u32 << 24) as f32
    };
    for (name, var) in model.all_vars() {
        if name.starts_with("bn") {
            let n = var.elem_count();
            let (lo, hi) = match name.rsplit('.').next() {
                Some("running_var") => (0.5, 2.0),
                Some("weight") => (0.1, 1.5),
                _ => (-0.5, 0.5),
            };
            let data: Vec<f32> = (0..n).map(|_| next(lo, hi)).collect();
            set(var.as_tensor(), &data);
        }
    }
    SlimPruner::default()
        .compress(&mut model.graph, &bn_config(0.5))
        .unwrap();
    let pruned: Vec<(&str, Vec<usize>)> = ["conv1", "conv2"]
        .into_iter()
        .map(|c| (c, masked_channels(&model.graph.masks()[c])))
        .collect();
    assert_eq!(pruned.iter().map(|(_, p)| p.len()).sum::<usize>(), 11);
    let x: Vec<f32> = (0..2 * 28 * 28).map(|_| next(0.0, 1.0)).collect();
    let x = Tensor::from_vec(x, (2, 1, 28, 28), &Device::Cpu).unwrap();
    let before = values(&model.graph.forward(&x).unwrap());

    let folded = fold_batch_norms(&mut model).unwrap();
    assert_eq!(folded, ["bn1", "bn2"]);
    for bn in ["bn1", "bn2"] {
        assert!(
            !model.graph.masks().contains_key(bn),
            "{bn} weight mask left"
        );
        assert!(
            !model.graph.bias_masks().contains_key(bn),
            "{bn} bias mask left"
        );
    }
    for (conv, channels) in &pruned {
        let l = layer(&model.graph, conv);
        assert_eq!(masked_channels(&model.graph.masks()[*conv]), *channels);
        let w = l.maskable_weight().unwrap();
        let b = values(l.maskable_bias().unwrap());
        let per = w.elem_count() / w.dim(0).unwrap();
        let w = values(w);
        for c in 0..b.len() {
            let gone = channels.contains(&c);
            let row = &w[c * per..(c + 1) * per];
            assert_eq!(row.iter().all(|&v| v == 0.0), gone, "{conv} filter {c}");
            assert_eq!(b[c] == 0.0, gone, "{conv} bias {c}");
        }
    }
    let after = values(&model.graph.forward(&x).unwrap());
    for (i, (a, b)) in before.iter().zip(&after).enumerate() {
        assert!(
            (a - b).abs() < 1e-4,
            "output {i}: {a} unfolded vs {b} folded"
        );
    }
}

#[test]
fn normal_mode_ranks_each_layer_on_its_own() -> Result<()> {
    use crate::prune::{Registry, StageOptions};
    let options = |mode: &str| StageOptions {
        source: "plan.json".into(),
        values: serde_json::json!({ "mode": mode })
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let registry = Registry::builtin();
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 0)?;
    let mut pruner = registry.make("SlimPruner", &options("normal"))?;
    let list = ConfigList::from_json_str(r#"[{"op_types": ["BatchNorm2d"], "sparsity": 0.5}]"#)?;
    pruner.compress(&mut model.graph, &list)?;
    for (bn, pruned) in [("bn1", 3), ("bn2", 8)] {
        let mask = model.graph.masks()[bn].to_vec1::<f32>()?;
        assert_eq!(mask.iter().filter(|&&k| k == 0.0).count(), pruned, "{bn}");
    }
    let err = registry
        .make("SlimPruner", &options("layerwise"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("global") && err.contains("normal"), "{err}");
    Ok(())
}
