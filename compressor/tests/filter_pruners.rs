//! The filter pruners (FPGM, L1, L2): on random weights every mask removes whole filters,
//! exactly `floor(filters × sparsity)` of them, in rank order; on LeNet-5 the removed
//! filters and their biases stay exactly zero through fine-tuning; the example plans in
//! `configs/` load and resolve.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use proptest::prelude::*;
use sprig_compressor::compress::Plan;
use sprig_compressor::config::{ConfigList, LayerConfig};
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{
    FPGMPruner, L1FilterPruner, L2FilterPruner, PruneTarget, Pruner, Registry,
};
use sprig_compressor::train::{self, OptimizerKind, TrainConfig};

const SEED: u64 = 17;

type Scores = fn(&Tensor) -> sprig_compressor::Result<Vec<f32>>;

/// Each pruner with the scores it ranks filters by (lowest pruned first).
fn pruners() -> [(Box<dyn Pruner>, Scores); 3] {
    [
        (Box::new(FPGMPruner), FPGMPruner::distance_sums),
        (
            Box::new(L1FilterPruner::default()),
            L1FilterPruner::filter_norms,
        ),
        (
            Box::new(L2FilterPruner::default()),
            L2FilterPruner::filter_norms,
        ),
    ]
}

fn layer_config(sparsity: f64) -> LayerConfig {
    LayerConfig {
        name: "conv".into(),
        op_type: OpType::Conv2d,
        index: 0,
        sparsity: Some(sparsity),
        quant_bits: Default::default(),
        extra: Default::default(),
    }
}

/// Per filter: `Some(keep)` if the filter's mask is uniformly 1 / 0, `None` if mixed or
/// not 0/1.
fn filter_states(mask: &[f32], filters: usize) -> Vec<Option<bool>> {
    let per = mask.len() / filters;
    mask.chunks(per.max(1))
        .take(filters)
        .map(|row| match row[0] {
            v if (v == 0.0 || v == 1.0) && row.iter().all(|&x| x == v) => Some(v == 1.0),
            _ => None,
        })
        .collect()
}

/// A weight shape `[filters, in, kh, kw]` and its values: either continuous, or drawn
/// from a few integers so that filters often tie.
fn weights() -> impl Strategy<Value = (Vec<usize>, Vec<f32>)> {
    (1usize..=12, 1usize..=3, 1usize..=3, 1usize..=3).prop_flat_map(|(n, c, kh, kw)| {
        let len = n * c * kh * kw;
        let value = prop_oneof![-2f32..2f32, (-2i8..=2).prop_map(f32::from)];
        (
            Just(vec![n, c, kh, kw]),
            proptest::collection::vec(value, len),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn masks_remove_exactly_floor_n_s_whole_filters(
        (shape, values) in weights(),
        sparsity in 0f64..1.0,
        with_bias in any::<bool>(),
    ) {
        let n = shape[0];
        let weight = Tensor::from_vec(values, shape.as_slice(), &Device::Cpu).unwrap();
        let bias_values: Vec<f32> = (1..=n).map(|i| i as f32).collect();
        let bias = Tensor::from_vec(bias_values, n, &Device::Cpu).unwrap();
        let target = PruneTarget {
            bias: with_bias.then_some(&bias),
            ..PruneTarget::new("conv", OpType::Conv2d, &weight)
        };
        let expected = (n as f64 * sparsity).floor() as usize;
        for (mut pruner, scores) in pruners() {
            let name = pruner.name();
            let mask = pruner.calc_mask(&target, &layer_config(sparsity)).unwrap();
            prop_assert_eq!(mask.tensor().dims(), weight.dims(), "{}", name);
            let m = mask.tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let states = filter_states(&m, n);
            prop_assert!(states.iter().all(Option::is_some), "{}: {:?}", name, states);
            let keep: Vec<bool> = states.into_iter().flatten().collect();
            prop_assert_eq!(keep.iter().filter(|&&k| !k).count(), expected, "{}", name);

            match (mask.bias(), with_bias) {
                (Some(b), true) => {
                    let b = b.to_vec1::<f32>().unwrap();
                    let per_filter: Vec<f32> =
                        keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
                    prop_assert_eq!(b, per_filter, "{}: bias mask", name);
                }
                (None, false) => {}
                (b, _) => prop_assert!(false, "{}: bias mask {:?} for bias {}", name, b, with_bias),
            }

            // Every pruned filter ranks no higher than every kept one.
            let s = scores(&weight).unwrap();
            let highest_pruned = (0..n).filter(|&i| !keep[i]).map(|i| s[i]).fold(f32::MIN, f32::max);
            let lowest_kept = (0..n).filter(|&i| keep[i]).map(|i| s[i]).fold(f32::MAX, f32::min);
            prop_assert!(highest_pruned <= lowest_kept, "{}: {:?} {:?}", name, s, keep);
        }
    }
}

/// For each filter of `layer`: whether its weights and its bias are all exactly zero.
fn zero_filters(model: &Model, layer: &str) -> Result<Vec<bool>> {
    let node = model.graph.node(layer).context(layer.to_string())?;
    let w = node.layer.weight().context("weight")?;
    let filters = w.dim(0)?;
    let w = w.flatten_all()?.to_vec1::<f32>()?;
    let b = node
        .layer
        .maskable_bias()
        .context("bias")?
        .to_vec1::<f32>()?;
    Ok(w.chunks(w.len() / filters)
        .zip(b)
        .map(|(row, bias)| row.iter().all(|&v| v == 0.0) && bias == 0.0)
        .collect())
}

#[test]
fn pruned_filters_and_biases_stay_zero_through_training() -> Result<()> {
    let (train_set, test_set) = data::resolve(None)?.load()?;
    let (train_set, test_set) = (train_set.subset(96), test_set.subset(32));
    let config = ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#)?;
    for optimizer in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        for (mut pruner, _) in pruners() {
            let name = pruner.name();
            let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
            pruner.compress(&mut model.graph, &config)?;
            let before: Vec<Vec<f32>> = ["conv1", "conv2"]
                .iter()
                .map(|l| weights_of(&model, l))
                .collect::<Result<_>>()?;
            let pruned: Vec<Vec<bool>> = ["conv1", "conv2"]
                .iter()
                .map(|l| zero_filters(&model, l))
                .collect::<Result<_>>()?;
            for (layer, (zeros, filters)) in
                ["conv1", "conv2"].iter().zip(pruned.iter().zip([6, 16]))
            {
                let count = zeros.iter().filter(|&&z| z).count();
                assert_eq!(count, filters / 2, "{name}: {layer} after compress");
            }

            let mut cfg = TrainConfig::new(1, SEED);
            cfg.batch_size = 32;
            cfg.optimizer = optimizer;
            cfg.progress = false;
            let report = train::train(
                &mut model,
                &train_set,
                &test_set,
                &cfg,
                Some(pruner.as_mut()),
            )?;
            assert!(report.finished);

            for (i, layer) in ["conv1", "conv2"].iter().enumerate() {
                let after = zero_filters(&model, layer)?;
                for (f, &gone) in pruned[i].iter().enumerate() {
                    if gone {
                        assert!(
                            after[f],
                            "{name}: {layer} filter {f} revived ({optimizer:?})"
                        );
                    }
                }
                assert!(
                    weights_of(&model, layer)? != before[i],
                    "{name}: {layer} did not train ({optimizer:?})"
                );
            }
        }
    }
    Ok(())
}

fn weights_of(model: &Model, layer: &str) -> Result<Vec<f32>> {
    let node = model.graph.node(layer).context(layer.to_string())?;
    Ok(node
        .layer
        .weight()
        .context("weight")?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

#[test]
fn example_plans_load_and_prune_every_conv() -> Result<()> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let registry = Registry::builtin();
    for (file, algorithm) in [
        ("fpgm50.json", "FPGMPruner"),
        ("l1-filter50.json", "L1FilterPruner"),
        ("l2-filter50.json", "L2FilterPruner"),
    ] {
        let plan = Plan::from_path(&configs.join(file))?;
        assert!(plan.quantizer.is_none(), "{file}");
        let stage = plan.pruner.context("a pruner stage")?;
        let pruner = stage.make_pruner(&registry)?;
        assert_eq!(pruner.name(), algorithm, "{file}");
        let model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
        let layers = pruner.resolve(&model.graph, &stage.config_list)?;
        let resolved: Vec<(&str, Option<f64>)> = layers
            .iter()
            .map(|l| (l.name.as_str(), l.sparsity))
            .collect();
        assert_eq!(
            resolved,
            [("conv1", Some(0.5)), ("conv2", Some(0.5))],
            "{file}"
        );
    }
    Ok(())
}

#[test]
fn registry_names_and_aliases() -> Result<()> {
    let registry = Registry::builtin();
    for (name, expected) in [
        ("FPGMPruner", "FPGMPruner"),
        ("L1FilterPruner", "L1FilterPruner"),
        ("L1NormPruner", "L1FilterPruner"),
        ("L2FilterPruner", "L2FilterPruner"),
        ("L2NormPruner", "L2FilterPruner"),
    ] {
        let pruner = registry.make(name, &Default::default())?;
        assert_eq!(pruner.name(), expected);
    }
    let names = registry.names();
    assert!(names.contains(&"L1FilterPruner (or L1NormPruner)".to_string()));
    assert!(names.contains(&"FPGMPruner".to_string()));
    // No stage keys of their own.
    let mut options = sprig_compressor::prune::StageOptions::default();
    options
        .values
        .insert("statistics_batches".into(), serde_json::json!(4));
    let err = registry
        .make("FPGMPruner", &options)
        .err()
        .context("FPGMPruner took a stage key")?;
    assert!(err
        .to_string()
        .contains("unknown key `pruner.statistics_batches`"));
    Ok(())
}
