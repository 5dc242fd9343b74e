//! Mask invariants of the magnitude pruners (Level, AGP, Lottery Ticket) on random
//! weights: the mask has the weight's shape, holds only 0 and 1, prunes exactly
//! `round(s·n)` weights for the sparsity the algorithm targets, and prunes no weight
//! larger than one it keeps; and what they prune stays exactly zero through SGD and
//! AdamW fine-tuning.

use candle_core::{Device, Tensor};
use proptest::prelude::*;
use sprig_compressor::config::{ConfigList, LayerConfig, LayerInfo};
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{
    agp_sparsity, round_sparsity, AgpPruner, AgpSchedule, LevelPruner, LotteryTicketPruner,
    PruneTarget, Pruner,
};
use sprig_compressor::train::{self, OptimizerKind, TrainConfig};

fn resolve(pruner: &dyn Pruner, list: &str) -> LayerConfig {
    let layers = [LayerInfo::new("fc", OpType::Linear)];
    let config = ConfigList::from_json_str(list).expect("config");
    config
        .resolve(&layers, &pruner.schema())
        .expect("resolves")
        .remove(0)
}

/// Checks the invariants and returns the number of pruned weights.
fn check_mask(values: &[f32], mask: &Tensor) -> usize {
    let m = mask
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("mask values");
    assert_eq!(m.len(), values.len());
    assert!(m.iter().all(|&x| x == 0.0 || x == 1.0));
    let largest_pruned = values
        .iter()
        .zip(&m)
        .filter(|(_, &k)| k == 0.0)
        .map(|(v, _)| v.abs())
        .fold(f32::NEG_INFINITY, f32::max);
    let smallest_kept = values
        .iter()
        .zip(&m)
        .filter(|(_, &k)| k == 1.0)
        .map(|(v, _)| v.abs())
        .fold(f32::INFINITY, f32::min);
    assert!(largest_pruned <= smallest_kept);
    m.iter().filter(|&&x| x == 0.0).count()
}

fn weights() -> impl Strategy<Value = (Vec<f32>, usize)> {
    (1usize..8, 1usize..40)
        .prop_flat_map(|(rows, cols)| (prop::collection::vec(-4f32..4f32, rows * cols), Just(cols)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn level_prunes_exactly_round_s_n((values, cols) in weights(), s in 0f64..0.999) {
        let w = Tensor::from_vec(values.clone(), (values.len() / cols, cols), &Device::Cpu).unwrap();
        let config = resolve(&LevelPruner, &format!(r#"[{{"op_types": ["Linear"], "sparsity": {s}}}]"#));
        let mask = LevelPruner.calc_mask(&PruneTarget::new("fc", OpType::Linear, &w), &config).unwrap();
        prop_assert_eq!(mask.tensor().dims(), w.dims());
        let pruned = check_mask(&values, mask.tensor());
        prop_assert_eq!(pruned, (s * values.len() as f64).round() as usize);
    }

    #[test]
    fn agp_prunes_the_scheduled_count(
        (values, cols) in weights(),
        initial in 0f64..0.5,
        extra in 0f64..0.49,
        end in 3usize..12,
    ) {
        let final_sparsity = initial + extra;
        let w = Tensor::from_vec(values.clone(), (values.len() / cols, cols), &Device::Cpu).unwrap();
        let list = format!(
            r#"[{{"op_types": ["Linear"], "initial_sparsity": {initial},
                 "final_sparsity": {final_sparsity}, "start_epoch": 0, "end_epoch": {end}}}]"#
        );
        let mut pruner = AgpPruner::default();
        let config = resolve(&pruner, &list);
        let schedule = AgpSchedule::from_config(&config, "test").unwrap();
        // calc_mask without compress targets epoch 0: the initial sparsity.
        let mask = pruner.calc_mask(&PruneTarget::new("fc", OpType::Linear, &w), &config).unwrap();
        let pruned = check_mask(&values, mask.tensor());
        let target = agp_sparsity(&schedule, 0);
        prop_assert!((target - initial).abs() < 1e-12);
        prop_assert_eq!(pruned, (target * values.len() as f64).round() as usize);
        // The schedule is monotone and ends at the final sparsity.
        let mut last = 0.0;
        for epoch in 0..=end {
            let s = agp_sparsity(&schedule, epoch);
            prop_assert!(s + 1e-12 >= last);
            last = s;
        }
        prop_assert!((last - final_sparsity).abs() < 1e-12);
    }

    #[test]
    fn lottery_ticket_rounds_compound_to_the_final_sparsity(s in 0f64..0.99, n in 1usize..8) {
        let mut keep = 1.0;
        for k in 1..=n {
            let this = round_sparsity(s, k, n);
            let before = round_sparsity(s, k - 1, n);
            prop_assert!(this + 1e-12 >= before);
            // Each round removes the same fraction of what the last one kept.
            keep *= (1.0 - this) / (1.0 - before);
        }
        prop_assert!((1.0 - keep - s).abs() < 1e-9);
    }
}

/// Trains lenet5 for two epochs under `pruner` with `optimizer` and checks every masked
/// weight is exactly zero afterwards (and the masks did prune something).
fn zeros_stay_zero(mut pruner: Box<dyn Pruner>, list: &str, optimizer: OptimizerKind) {
    let (train_set, test_set) = data::DataSource::Bundled(data::bundled_dir())
        .load()
        .expect("bundled data");
    let (train_set, test_set) = (train_set.subset(256), test_set.subset(32));
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 9).expect("model");
    pruner.on_init(&model.graph).expect("on_init");
    pruner
        .compress(
            &mut model.graph,
            &ConfigList::from_json_str(list).expect("list"),
        )
        .expect("compress");
    let mut cfg = TrainConfig::new(2, 9);
    cfg.optimizer = optimizer;
    cfg.progress = false;
    for round in 0..pruner.rounds() {
        if round > 0 {
            pruner.start_round(round, &mut model.graph).expect("round");
        }
        train::train(
            &mut model,
            &train_set,
            &test_set,
            &cfg,
            Some(pruner.as_mut()),
        )
        .expect("train");
    }
    assert_eq!(model.graph.masks().len(), 5, "{}", pruner.name());
    for (name, mask) in model.graph.masks() {
        let w = model
            .graph
            .node(name)
            .and_then(|n| n.layer.weight())
            .expect("weight");
        let m = mask
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("mask");
        let v = w
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("weight");
        assert!(m.contains(&0.0), "{name}: nothing pruned");
        for (i, (m, v)) in m.iter().zip(&v).enumerate() {
            assert!(
                *m == 1.0 || *v == 0.0,
                "{} {optimizer:?}: {name}[{i}] revived",
                pruner.name()
            );
        }
    }
}

const AGP: &str = r#"[{"initial_sparsity": 0.3, "final_sparsity": 0.7, "start_epoch": 0,
    "end_epoch": 2, "op_types": ["default"]}]"#;
const LOTTERY: &str = r#"[{"prune_iterations": 2, "sparsity": 0.7, "op_types": ["default"]}]"#;

#[test]
fn agp_zeros_stay_zero_through_sgd_and_adamw() {
    for optimizer in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        zeros_stay_zero(Box::new(AgpPruner::default()), AGP, optimizer);
    }
}

#[test]
fn lottery_ticket_zeros_stay_zero_through_sgd_and_adamw() {
    for optimizer in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        zeros_stay_zero(Box::new(LotteryTicketPruner::default()), LOTTERY, optimizer);
    }
}
