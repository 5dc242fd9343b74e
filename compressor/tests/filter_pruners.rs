//! The filter pruners (FPGM, L1, L2): on random weights every mask removes whole filters,
//! exactly `floor(filters × sparsity)` of them, in rank order; on LeNet-5 the removed
//! filters and their biases stay exactly zero through fine-tuning; the example plans in
//! `configs/` load and resolve.

mod common;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use common::{
    check_pruned_filters_stay_zero_through_training, example_plan_pruner, filter_states,
    layer_config,
};
use proptest::prelude::*;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{
    FPGMPruner, L1FilterPruner, L2FilterPruner, PruneTarget, Pruner, Registry,
};

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

#[test]
fn pruned_filters_and_biases_stay_zero_through_training() -> Result<()> {
    check_pruned_filters_stay_zero_through_training(
        || pruners().into_iter().map(|(pruner, _)| pruner).collect(),
        |_, _, _| Ok(()),
        SEED,
    )
}

#[test]
fn example_plans_load_and_prune_every_conv() -> Result<()> {
    for (file, algorithm) in [
        ("fpgm50.json", "FPGMPruner"),
        ("l1-filter50.json", "L1FilterPruner"),
        ("l2-filter50.json", "L2FilterPruner"),
    ] {
        example_plan_pruner(file, algorithm, SEED)?;
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
