//! The activation-rank pruners (APoZ, mean activation): on random activations every mask
//! removes whole filters, exactly `floor(filters × sparsity)` of them, the most-zero (APoZ)
//! or weakest (mean) channels first, ties by lower index; on LeNet-5 the removed filters and
//! their biases stay exactly zero through SGD and AdamW fine-tuning; the example plans in
//! `configs/` load and resolve.

mod common;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{
    check_pruned_filters_stay_zero_through_training, example_plan_pruner, filter_states,
    layer_config,
};
use proptest::prelude::*;
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::nn::{Conv2d, Conv2dConfig, Graph, Layer, OpType, ReLU, Source};
use sprig_compressor::prune::{
    collect_statistics, ActivationAPoZRankFilterPruner, ActivationMeanRankFilterPruner,
    ActivationRankFilterPruner, ActivationStatistic, PruneTarget, Pruner,
};

const SEED: u64 = 23;

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

#[test]
fn pruned_filters_and_biases_stay_zero_through_training() -> Result<()> {
    check_pruned_filters_stay_zero_through_training(
        || -> Vec<Box<dyn Pruner>> {
            vec![
                Box::new(ActivationAPoZRankFilterPruner::new(2)),
                Box::new(ActivationMeanRankFilterPruner::new(2)),
            ]
        },
        |pruner, model, train_set| {
            let name = pruner.name();
            let images = collect_statistics(pruner, model, train_set, 32, SEED)?;
            assert_eq!(images, 64, "{name}");
            Ok(())
        },
        SEED,
    )
}

#[test]
fn example_plans_load_and_prune_every_conv() -> Result<()> {
    for (file, algorithm) in [
        ("apoz50.json", "ActivationAPoZRankFilterPruner"),
        ("mean-activation50.json", "ActivationMeanRankFilterPruner"),
    ] {
        let pruner = example_plan_pruner(file, algorithm, SEED)?;
        assert_eq!(pruner.statistics_batches(), 16, "{file}");
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
