//! The activation-rank pruners (APoZ, mean activation): on random activations every mask
//! removes whole filters, exactly `floor(filters × sparsity)` of them, the most-zero (APoZ)
//! or weakest (mean) channels first, ties by lower index; on LeNet-5 the removed filters and
//! their biases stay exactly zero through SGD and AdamW fine-tuning; the example plans in
//! `configs/` load and resolve.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use proptest::prelude::*;
use sprig_compressor::compress::Plan;
use sprig_compressor::config::{ConfigList, LayerConfig};
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::nn::{Conv2d, Conv2dConfig, Graph, Layer, OpType, ReLU, Source};
use sprig_compressor::prune::{
    collect_statistics, ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
    ActivationRankFilterPruner, ActivationStatistic, PruneTarget, Pruner, Registry,
};
use sprig_compressor::train::{self, OptimizerKind, TrainConfig};

const SEED: u64 = 23;

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

/// `conv` (1 → `channels`, 1×1, with or without bias) → `relu`.
fn conv_relu(channels: usize, bias: bool) -> Graph {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut cfg = Conv2dConfig::new(1, channels, 1);
    cfg.bias = bias;
    let mut g = Graph::new([1, 3, 3]);
    let x = g.push(
        "conv",
        Layer::Conv2d(Conv2d::new(cfg, vb.pp("conv")).unwrap()),
        &[Source::Input],
    );
    g.push("relu", Layer::ReLU(ReLU), &[x]);
    g
}

/// Per filter: `Some(keep)` if the filter's mask is uniformly 1 / 0, `None` if mixed.
fn filter_states(mask: &[f32], filters: usize) -> Vec<Option<bool>> {
    mask.chunks(mask.len() / filters)
        .map(|row| match row[0] {
            v if (v == 0.0 || v == 1.0) && row.iter().all(|&x| x == v) => Some(v == 1.0),
            _ => None,
        })
        .collect()
}

/// One batch of ReLU outputs: its shape `[n, c, h, w]` and values.
type Batch = (Vec<usize>, Vec<f32>);

/// Batches of ReLU outputs `[n, channels, h, w]` (same channels, h and w in every batch),
/// values often exactly zero and often tied.
fn batches() -> impl Strategy<Value = (usize, Vec<Batch>)> {
    (1usize..=8, 1usize..=3, 1usize..=3).prop_flat_map(|(c, h, w)| {
        let value = prop_oneof![Just(0f32), 0f32..4f32, (0u8..=2).prop_map(f32::from)];
        let batch = (1usize..=4).prop_flat_map(move |n| {
            (
                Just(vec![n, c, h, w]),
                proptest::collection::vec(value.clone(), n * c * h * w),
            )
        });
        (Just(c), proptest::collection::vec(batch, 1..=3))
    })
}

/// Per channel, the fraction of zeros and the mean over all batches, worked out directly.
fn reference(channels: usize, batches: &[Batch]) -> (Vec<f64>, Vec<f64>) {
    let (mut zeros, mut sums, mut counts) = (
        vec![0f64; channels],
        vec![0f64; channels],
        vec![0f64; channels],
    );
    for (shape, values) in batches {
        let plane = shape[2] * shape[3];
        for (i, &v) in values.iter().enumerate() {
            let c = (i / plane) % channels;
            zeros[c] += f64::from(u8::from(v == 0.0));
            sums[c] += f64::from(v);
            counts[c] += 1.0;
        }
    }
    let per = |t: Vec<f64>| t.iter().zip(&counts).map(|(t, n)| t / n).collect();
    (per(zeros), per(sums))
}

/// Observes `batches` at the ReLU, computes the mask at `sparsity` and checks its shape,
/// whole filters, bias mask and count; returns per filter whether it is kept.
fn kept_filters<S: ActivationStatistic>(
    graph: &Graph,
    batches: &[Batch],
    sparsity: f64,
) -> std::result::Result<(Vec<bool>, Vec<f64>), TestCaseError> {
    let mut pruner = ActivationRankFilterPruner::<S>::new(batches.len());
    for (shape, values) in batches {
        let t = Tensor::from_vec(values.clone(), shape.as_slice(), &Device::Cpu).unwrap();
        pruner.observe(graph, 1, &t).unwrap();
    }
    let images: usize = batches.iter().map(|(s, _)| s[0]).sum();
    prop_assert_eq!(pruner.images_observed("conv"), Some(images as u64));
    let node = graph.node("conv").unwrap();
    let weight = node.layer.weight().unwrap();
    let n = weight.dim(0).unwrap();
    let target = PruneTarget {
        bias: node.layer.maskable_bias(),
        ..PruneTarget::new("conv", OpType::Conv2d, weight)
    };
    let mask = pruner.calc_mask(&target, &layer_config(sparsity)).unwrap();
    prop_assert_eq!(mask.tensor().dims(), weight.dims());
    let m = mask
        .tensor()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let states = filter_states(&m, n);
    prop_assert!(states.iter().all(Option::is_some), "{:?}", states);
    let keep: Vec<bool> = states.into_iter().flatten().collect();
    let expected = (n as f64 * sparsity).floor() as usize;
    prop_assert_eq!(keep.iter().filter(|&&k| !k).count(), expected);
    match (mask.bias(), target.bias) {
        (Some(b), Some(_)) => {
            let per_filter: Vec<f32> = keep.iter().map(|&k| f32::from(u8::from(k))).collect();
            prop_assert_eq!(b.to_vec1::<f32>().unwrap(), per_filter);
        }
        (None, None) => {}
        (b, _) => prop_assert!(false, "bias mask {:?} without a bias", b),
    }
    Ok((keep, pruner.channel_statistics("conv").unwrap()))
}

/// Every pruned channel ranks before every kept one: `first` says whether statistic `a`
/// goes before `b`, ties going to the lower index.
fn assert_ranked(
    keep: &[bool],
    statistic: &[f64],
    first: fn(f64, f64) -> bool,
) -> std::result::Result<(), TestCaseError> {
    for p in (0..keep.len()).filter(|&i| !keep[i]) {
        for k in (0..keep.len()).filter(|&i| keep[i]) {
            let (a, b) = (statistic[p], statistic[k]);
            prop_assert!(
                first(a, b) || (a == b && p < k),
                "pruned {} ({}) after kept {} ({}): {:?}",
                p,
                a,
                k,
                b,
                statistic
            );
        }
    }
    Ok(())
}

fn close(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + y.abs()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn masks_remove_exactly_floor_n_s_whole_filters_in_rank_order(
        (channels, batches) in batches(),
        sparsity in 0f64..1.0,
        bias in any::<bool>(),
    ) {
        let graph = conv_relu(channels, bias);
        let (apoz, mean) = reference(channels, &batches);

        let (keep, stats) = kept_filters::<sprig_compressor::prune::APoZ>(&graph, &batches, sparsity)?;
        prop_assert!(close(&stats, &apoz), "{:?} vs {:?}", stats, apoz);
        // Fractions k/m with m ≤ 108 are far apart, so f64 order is the pruner's order.
        assert_ranked(&keep, &apoz, |a, b| a > b)?;

        let (keep, stats) =
            kept_filters::<sprig_compressor::prune::MeanActivation>(&graph, &batches, sparsity)?;
        prop_assert!(close(&stats, &mean), "{:?} vs {:?}", stats, mean);
        // The pruner ranks in f32: compare at that precision.
        let mean32: Vec<f64> = stats.iter().map(|&m| f64::from(m as f32)).collect();
        assert_ranked(&keep, &mean32, |a, b| a < b)?;
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
fn pruned_filters_and_biases_stay_zero_through_training() -> Result<()> {
    let (train_set, test_set) = data::resolve(None)?.load()?;
    let (train_set, test_set) = (train_set.subset(96), test_set.subset(32));
    let config = ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#)?;
    for optimizer in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        let pruners: [Box<dyn Pruner>; 2] = [
            Box::new(ActivationAPoZRankFilterPruner::new(2)),
            Box::new(ActivationMeanRankFilterPruner::new(2)),
        ];
        for mut pruner in pruners {
            let name = pruner.name();
            let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
            let images = collect_statistics(pruner.as_mut(), &model, &train_set, 32, SEED)?;
            assert_eq!(images, 64, "{name}");
            pruner.compress(&mut model.graph, &config)?;
            let layers = ["conv1", "conv2"];
            let before: Vec<Vec<f32>> = layers
                .iter()
                .map(|l| weights_of(&model, l))
                .collect::<Result<_>>()?;
            let pruned: Vec<Vec<bool>> = layers
                .iter()
                .map(|l| zero_filters(&model, l))
                .collect::<Result<_>>()?;
            for (layer, (zeros, filters)) in layers.iter().zip(pruned.iter().zip([6, 16])) {
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

            for (i, layer) in layers.iter().enumerate() {
                let after = zero_filters(&model, layer)?;
                for (f, &gone) in pruned[i].iter().enumerate() {
                    assert!(
                        !gone || after[f],
                        "{name}: {layer} filter {f} revived ({optimizer:?})"
                    );
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

#[test]
fn example_plans_load_and_prune_every_conv() -> Result<()> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let registry = Registry::builtin();
    for (file, algorithm) in [
        ("apoz50.json", "ActivationAPoZRankFilterPruner"),
        ("mean-activation50.json", "ActivationMeanRankFilterPruner"),
    ] {
        let plan = Plan::from_path(&configs.join(file))?;
        assert!(plan.quantizer.is_none(), "{file}");
        let stage = plan.pruner.context("a pruner stage")?;
        let pruner = stage.make_pruner(&registry)?;
        assert_eq!(pruner.name(), algorithm, "{file}");
        assert_eq!(pruner.statistics_batches(), 16, "{file}");
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
fn the_pipeline_default_sees_at_least_a_thousand_images() -> Result<()> {
    let (train_set, _) = data::resolve(None)?.load()?;
    let model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let mut pruner = ActivationAPoZRankFilterPruner::default();
    let images = collect_statistics(&mut pruner, &model, &train_set, 64, SEED)?;
    assert_eq!(images, 16 * 64);
    assert_eq!(pruner.images_observed("conv2"), Some(1024));
    Ok(())
}
