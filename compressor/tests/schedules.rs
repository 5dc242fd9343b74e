//! The pruners with a schedule: AGP's sparsity against NNI's formula at every epoch, an
//! AGP run stopped mid-schedule and resumed ending bit-identical to an uninterrupted one,
//! and Lottery Ticket's rewind (surviving weights equal their initial values bit for bit
//! before each retraining).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use sprig_compressor::config::{ConfigList, LayerConfig, Schema};
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::export::graph_tensors;
use sprig_compressor::models::Model;
use sprig_compressor::nn::Graph;
use sprig_compressor::prune::{
    agp_sparsity, agp_step_sparsity, round_sparsity, sparsity_of, AgpPruner, AgpSchedule,
    LotteryTicketPruner, Mask, PruneTarget, Pruner, StepSchedule,
};
use sprig_compressor::train::{self, TrainConfig};

const SEED: u64 = 3;
const AGP: &str = r#"[{"initial_sparsity": 0.1, "final_sparsity": 0.8, "start_epoch": 1,
    "end_epoch": 5, "frequency": 1, "op_types": ["default"]}]"#;

fn small_data() -> Result<(Dataset, Dataset)> {
    let (train, test) = data::DataSource::Bundled(data::bundled_dir()).load()?;
    Ok((train.subset(256), test.subset(64)))
}

fn config(epochs: usize, dir: Option<&std::path::Path>) -> TrainConfig {
    let mut cfg = TrainConfig::new(epochs, SEED);
    cfg.progress = false;
    cfg.run_key = "agp".into();
    cfg.checkpoint_dir = dir.map(|d| d.to_path_buf());
    cfg.resume = true;
    cfg
}

fn bits(model: &Model) -> Result<BTreeMap<String, Vec<u32>>> {
    graph_tensors(&model.graph)
        .into_iter()
        .map(|(k, t)| {
            let v = t.flatten_all()?.to_vec1::<f32>()?;
            Ok((k, v.iter().map(|x| x.to_bits()).collect()))
        })
        .collect()
}

/// AGP, recording each layer's mask sparsity after every `update_epoch` and `step`.
struct Recorder {
    inner: AgpPruner,
    seen: Vec<(usize, BTreeMap<String, f64>)>,
    after_steps: Vec<BTreeMap<String, f64>>,
}

fn mask_sparsities(graph: &Graph) -> sprig_compressor::Result<BTreeMap<String, f64>> {
    let mut sparsities = BTreeMap::new();
    for (name, mask) in graph.masks() {
        sparsities.insert(name.clone(), sparsity_of(mask)?);
    }
    Ok(sparsities)
}

impl Pruner for Recorder {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn schema(&self) -> Schema {
        self.inner.schema()
    }
    fn calc_mask(
        &mut self,
        layer: &PruneTarget,
        config: &LayerConfig,
    ) -> sprig_compressor::Result<Mask> {
        self.inner.calc_mask(layer, config)
    }
    fn compress(
        &mut self,
        graph: &mut Graph,
        config: &ConfigList,
    ) -> sprig_compressor::Result<Vec<LayerConfig>> {
        self.inner.compress(graph, config)
    }
    fn update_epoch(&mut self, epoch: usize, graph: &mut Graph) -> sprig_compressor::Result<()> {
        self.inner.update_epoch(epoch, graph)?;
        self.seen.push((epoch, mask_sparsities(graph)?));
        Ok(())
    }
    fn step(&mut self, graph: &mut Graph, grads: &GradStore) -> sprig_compressor::Result<()> {
        self.inner.step(graph, grads)?;
        self.after_steps.push(mask_sparsities(graph)?);
        Ok(())
    }
}

/// Every weighted layer's mask prunes exactly `round(target · n)` of its `n` weights.
fn assert_every_layer_at(
    model: &Model,
    sparsities: &BTreeMap<String, f64>,
    target: f64,
    when: &str,
) {
    for node in model.graph.nodes() {
        let Some(w) = node.layer.weight() else {
            continue;
        };
        let n = w.elem_count();
        let expected = (target * n as f64).round() / n as f64;
        let got = sparsities[&node.name];
        assert!(
            (got - expected).abs() < 1e-9,
            "{when}, {}: sparsity {got}, schedule {expected}",
            node.name
        );
    }
}

#[test]
fn agp_follows_the_cubic_schedule_at_every_epoch() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let mut pruner = Recorder {
        inner: AgpPruner::default(),
        seen: Vec::new(),
        after_steps: Vec::new(),
    };
    let list = ConfigList::from_json_str(AGP)?;
    pruner.compress(&mut model.graph, &list)?;
    // Before start_epoch nothing is pruned.
    for mask in model.graph.masks().values() {
        assert_eq!(sparsity_of(mask)?, 0.0);
    }
    train::train(
        &mut model,
        &train_set,
        &test_set,
        &config(7, None),
        Some(&mut pruner),
    )?;

    let layers = list.resolve(&model.graph.layer_infos(), &pruner.schema())?;
    let schedule = AgpSchedule::from_config(&layers[0], "test")?;
    assert_eq!(schedule.span(), 3, "NNI: ((5 - 1 - 1) // 1) * 1");
    let formula = |t: usize| -> f64 {
        match t {
            0 => 0.0,
            t if t >= 5 => 0.8,
            t => 0.8 + (0.1 - 0.8) * (1.0 - (t as f64 - 1.0) / 3.0).powi(3),
        }
    };
    assert_eq!(pruner.seen.len(), 7);
    for (epoch, sparsities) in &pruner.seen {
        let target = formula(*epoch);
        assert!((agp_sparsity(&schedule, *epoch) - target).abs() < 1e-12);
        assert_every_layer_at(&model, sparsities, target, &format!("epoch {epoch}"));
    }
    // Masked weights are exactly zero at the end.
    for (name, mask) in model.graph.masks() {
        let w = model
            .graph
            .node(name)
            .and_then(|n| n.layer.weight())
            .context("weight")?;
        let stray = (w * (1.0 - mask)?)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(stray, 0.0, "{name}");
    }
    Ok(())
}

/// Fresh model, AGP (per epoch, or per step with `steps`) compressed at epoch 0, trained
/// `epochs` in total with checkpoints in `dir`, stopping after `stop_after` epochs of this
/// invocation.
fn agp_run(
    steps: Option<StepSchedule>,
    list: &str,
    epochs: usize,
    dir: &std::path::Path,
    stop_after: Option<usize>,
) -> Result<Model> {
    let (train_set, test_set) = small_data()?;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let mut pruner = AgpPruner::new(steps);
    pruner.compress(&mut model.graph, &ConfigList::from_json_str(list)?)?;
    let mut cfg = config(epochs, Some(dir));
    cfg.max_epochs_this_run = stop_after;
    train::train(&mut model, &train_set, &test_set, &cfg, Some(&mut pruner))?;
    Ok(model)
}

#[test]
fn agp_stopped_at_epoch_four_and_resumed_matches_an_uninterrupted_run() -> Result<()> {
    let whole = tempfile::tempdir()?;
    let uninterrupted = bits(&agp_run(None, AGP, 6, whole.path(), None)?)?;

    let split = tempfile::tempdir()?;
    let stopped = agp_run(None, AGP, 6, split.path(), Some(3))?;
    // Mid-schedule: epoch 4 (index 3) has not run, so sparsity is that of epoch index 2.
    let conv2 = stopped.graph.masks().get("conv2").context("conv2 mask")?;
    let mid = sparsity_of(conv2)?;
    assert!(mid > 0.1 && mid < 0.8, "mid-schedule sparsity {mid}");
    let resumed = bits(&agp_run(None, AGP, 6, split.path(), None)?)?;
    assert_eq!(resumed, uninterrupted);
    Ok(())
}

const LOTTERY: &str = r#"[{"prune_iterations": 3, "sparsity": 0.8, "op_types": ["default"]}]"#;

/// Every pruned parameter (by its layer's weight mask) is zero and every other one equals
/// its initial value bit for bit.
fn assert_rewound(model: &Model, pruner: &LotteryTicketPruner) -> Result<()> {
    for (name, current) in graph_tensors(&model.graph) {
        let initial = pruner.initial().get(&name).context("initial value")?;
        let (layer, param) = name.rsplit_once('.').context("dotted name")?;
        let now = current.flatten_all()?.to_vec1::<f32>()?;
        let then = initial.flatten_all()?.to_vec1::<f32>()?;
        let mask = match (param, model.graph.masks().get(layer)) {
            ("weight", Some(m)) => m.flatten_all()?.to_vec1::<f32>()?,
            _ => vec![1.0; now.len()],
        };
        for i in 0..now.len() {
            if mask[i] == 0.0 {
                assert_eq!(now[i], 0.0, "{name}[{i}] pruned but nonzero");
            } else {
                assert_eq!(
                    now[i].to_bits(),
                    then[i].to_bits(),
                    "{name}[{i}] not rewound"
                );
            }
        }
    }
    Ok(())
}

fn pruned_fraction(model: &Model, layer: &str) -> Result<f64> {
    Ok(sparsity_of(
        model.graph.masks().get(layer).context("mask")?,
    )?)
}

#[test]
fn lottery_ticket_rewinds_survivors_to_their_initial_values_each_round() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let mut pruner = LotteryTicketPruner::default();
    pruner.on_init(&model.graph)?;
    let initial = bits(&model)?;
    train::train(&mut model, &train_set, &test_set, &config(1, None), None)?;
    assert_ne!(bits(&model)?, initial, "the baseline trained");

    pruner.compress(&mut model.graph, &ConfigList::from_json_str(LOTTERY)?)?;
    assert_eq!(pruner.rounds(), 3);
    for round in 0..3 {
        if round > 0 {
            pruner.start_round(round, &mut model.graph)?;
        }
        assert_rewound(&model, &pruner)?;
        // NNI's per-round sparsity 1 − (1 − s)^(k/n), exact per layer (round(s·n)).
        let target = round_sparsity(0.8, round + 1, 3);
        let n = 10 * 84;
        let expected = (target * n as f64).round() / n as f64;
        assert!(
            (pruned_fraction(&model, "fc3")? - expected).abs() < 1e-9,
            "round {round}"
        );
        train::train(
            &mut model,
            &train_set,
            &test_set,
            &config(1, None),
            Some(&mut pruner),
        )?;
    }
    assert!((round_sparsity(0.8, 3, 3) - 0.8).abs() < 1e-12);
    assert!((pruned_fraction(&model, "fc1")? - 0.8).abs() < 1e-6);
    Ok(())
}

#[test]
fn schedule_errors_name_the_dict() -> Result<()> {
    let model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let cases = [
        (
            r#"[{"final_sparsity": 0.8, "start_epoch": 5, "end_epoch": 2, "op_types": ["default"]}]"#,
            "before `start_epoch`",
        ),
        (
            r#"[{"final_sparsity": 1.2, "start_epoch": 0, "end_epoch": 4, "op_types": ["default"]}]"#,
            "[0, 1)",
        ),
        (
            r#"[{"start_epoch": 0, "end_epoch": 4, "op_types": ["default"]}]"#,
            "final_sparsity",
        ),
    ];
    for (list, expected) in cases {
        let err = AgpPruner::default()
            .resolve(&model.graph, &ConfigList::from_json_str(list)?)
            .expect_err(list)
            .to_string();
        assert!(
            err.contains("config_list[0]") && err.contains(expected),
            "{err}"
        );
    }
    let err = LotteryTicketPruner::default()
        .resolve(
            &model.graph,
            &ConfigList::from_json_str(r#"[{"sparsity": 0.8, "op_types": ["default"]}]"#)?,
        )
        .expect_err("no prune_iterations")
        .to_string();
    assert!(err.contains("prune_iterations"), "{err}");
    // A key another algorithm owns.
    let err = sprig_compressor::prune::LevelPruner
        .resolve(
            &model.graph,
            &ConfigList::from_json_str(r#"[{"final_sparsity": 0.8, "op_types": ["default"]}]"#)?,
        )
        .expect_err("final_sparsity on Level")
        .to_string();
    assert!(
        err.contains("final_sparsity") && err.contains("sparsity"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_masked_tensor_is_what_the_schedule_says_on_hand_weights() -> Result<()> {
    // 10 weights 1..=10: AGP at 30 % prunes the three smallest.
    let w = Tensor::arange(1f32, 11f32, &Device::Cpu)?.reshape((2, 5))?;
    let mut pruner = AgpPruner::default();
    let list = ConfigList::from_json_str(
        r#"[{"initial_sparsity": 0.3, "final_sparsity": 0.6, "start_epoch": 0, "end_epoch": 3, "op_names": ["fc"]}]"#,
    )?;
    let layers = list.resolve(
        &[sprig_compressor::config::LayerInfo::new(
            "fc",
            sprig_compressor::nn::OpType::Linear,
        )],
        &pruner.schema(),
    )?;
    let mask = pruner.calc_mask(&PruneTarget::new("fc", layers[0].op_type, &w), &layers[0])?;
    assert_eq!(
        mask.tensor().flatten_all()?.to_vec1::<f32>()?,
        [0., 0., 0., 1., 1., 1., 1., 1., 1., 1.]
    );
    Ok(())
}

#[test]
fn nni_v1_agp_example_loads_unchanged_from_json_toml_and_yaml() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let files = [
        (
            "agp.json",
            r#"[{"start_epoch": 0, "end_epoch": 10, "frequency": 1, "initial_sparsity": 0.05,
                "final_sparsity": 0.8, "op_types": ["default"]}]"#,
        ),
        (
            "agp.toml",
            "[[config_list]]\nstart_epoch = 0\nend_epoch = 10\nfrequency = 1\n\
             initial_sparsity = 0.05\nfinal_sparsity = 0.8\nop_types = [\"default\"]\n",
        ),
        (
            "agp.yaml",
            "- start_epoch: 0\n  end_epoch: 10\n  frequency: 1\n  initial_sparsity: 0.05\n  \
             final_sparsity: 0.8\n  op_types: [default]\n",
        ),
    ];
    let model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let expected = AgpSchedule {
        initial_sparsity: 0.05,
        final_sparsity: 0.8,
        start_epoch: 0,
        end_epoch: 10,
        frequency: 1,
    };
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text)?;
        let list = ConfigList::from_path(&path)?;
        let layers = AgpPruner::default().resolve(&model.graph, &list)?;
        assert_eq!(layers.len(), 5, "{name}: every Conv2d and Linear");
        for layer in &layers {
            assert_eq!(AgpSchedule::from_config(layer, name)?, expected, "{name}");
        }
    }
    Ok(())
}

const AGP_STEPS: &str =
    r#"[{"initial_sparsity": 0.2, "final_sparsity": 0.8, "op_types": ["default"]}]"#;
const STEPS: StepSchedule = StepSchedule {
    interval_steps: 3,
    total_times: 4,
};

#[test]
fn agp_per_step_follows_the_cubic_schedule_at_every_step() -> Result<()> {
    let (train_set, test_set) = small_data()?;
    let mut model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let mut pruner = Recorder {
        inner: AgpPruner::new(Some(STEPS)),
        seen: Vec::new(),
        after_steps: Vec::new(),
    };
    let list = ConfigList::from_json_str(AGP_STEPS)?;
    let layers = pruner.compress(&mut model.graph, &list)?;
    assert_eq!(pruner.inner.schedule_steps(&layers), 12);
    // 256 images in batches of 64: 4 steps an epoch, 16 in all.
    train::train(
        &mut model,
        &train_set,
        &test_set,
        &config(4, None),
        Some(&mut pruner),
    )?;
    assert_eq!(pruner.after_steps.len(), 16);
    let schedule = AgpSchedule::from_config_per_step(&layers[0], "test")?;
    for (i, sparsities) in pruner.after_steps.iter().enumerate() {
        let times = ((i + 1) / 3).min(4);
        let target = agp_step_sparsity(&schedule, times, 4);
        let by_hand = 0.8 + (0.2 - 0.8) * (1.0 - times as f64 / 4.0).powi(3);
        assert!((target - by_hand).abs() < 1e-12);
        assert_every_layer_at(&model, sparsities, target, &format!("step {}", i + 1));
    }
    Ok(())
}

#[test]
fn agp_per_step_resumes_mid_schedule_bit_identical() -> Result<()> {
    let run =
        |dir: &std::path::Path, stop_after| agp_run(Some(STEPS), AGP_STEPS, 4, dir, stop_after);
    let whole = tempfile::tempdir()?;
    let uninterrupted = bits(&run(whole.path(), None)?)?;
    let split = tempfile::tempdir()?;
    run(split.path(), Some(2))?;
    assert_eq!(bits(&run(split.path(), None)?)?, uninterrupted);
    Ok(())
}

#[test]
fn agp_per_step_refuses_epoch_keys() -> Result<()> {
    let model = Model::new("lenet5", 10, &Device::Cpu, SEED)?;
    let err = AgpPruner::new(Some(STEPS))
        .resolve(&model.graph, &ConfigList::from_json_str(AGP)?)
        .expect_err("epoch keys with a step schedule")
        .to_string();
    assert!(
        err.contains("start_epoch") && err.contains("interval_steps"),
        "{err}"
    );
    Ok(())
}
