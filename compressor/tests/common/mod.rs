//! Helpers the filter-pruner tests (`filter_pruners.rs`, `activation_pruners.rs`) share:
//! the dict for a conv named `conv`, per-filter readings of a mask, LeNet-5's zeroed
//! filters through fine-tuning, and the example plans in `configs/`.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::Device;
use sprig_compressor::compress::Plan;
use sprig_compressor::config::{ConfigList, LayerConfig};
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::models::Model;
use sprig_compressor::nn::OpType;
use sprig_compressor::prune::{Pruner, Registry};
use sprig_compressor::train::{self, OptimizerKind, TrainConfig};

/// The convolutions of LeNet-5 and their filter counts.
const LENET5_CONVS: [(&str, usize); 2] = [("conv1", 6), ("conv2", 16)];

/// A dict selecting the Conv2d `conv` at `sparsity`.
pub fn layer_config(sparsity: f64) -> LayerConfig {
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
pub fn filter_states(mask: &[f32], filters: usize) -> Vec<Option<bool>> {
    let per = mask.len() / filters;
    mask.chunks(per.max(1))
        .take(filters)
        .map(|row| match row[0] {
            v if (v == 0.0 || v == 1.0) && row.iter().all(|&x| x == v) => Some(v == 1.0),
            _ => None,
        })
        .collect()
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

/// `layer`'s weights, flattened.
fn weights_of(model: &Model, layer: &str) -> Result<Vec<f32>> {
    let node = model.graph.node(layer).context(layer.to_string())?;
    Ok(node
        .layer
        .weight()
        .context("weight")?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// For SGD and AdamW, and each pruner `pruners()` makes: LeNet-5 (seed `seed`), then
/// `before_compress` (a statistics pass, say) on 96 training images, then `compress` at
/// sparsity 0.5 on the convs. Checks that half of each conv's filters are zero, trains one
/// epoch (batches of 32) with the pruner attached, then checks those filters and their
/// biases are still exactly zero and that the convs did train.
pub fn check_pruned_filters_stay_zero_through_training(
    pruners: impl Fn() -> Vec<Box<dyn Pruner>>,
    before_compress: impl Fn(&mut dyn Pruner, &Model, &Dataset) -> Result<()>,
    seed: u64,
) -> Result<()> {
    let (train_set, test_set) = data::resolve(None)?.load()?;
    let (train_set, test_set) = (train_set.subset(96), test_set.subset(32));
    let config = ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#)?;
    for optimizer in [OptimizerKind::sgd(), OptimizerKind::adamw()] {
        for mut pruner in pruners() {
            let name = pruner.name();
            let mut model = Model::new("lenet5", 10, &Device::Cpu, seed)?;
            before_compress(pruner.as_mut(), &model, &train_set)?;
            pruner.compress(&mut model.graph, &config)?;
            let before: Vec<Vec<f32>> = LENET5_CONVS
                .iter()
                .map(|(l, _)| weights_of(&model, l))
                .collect::<Result<_>>()?;
            let pruned: Vec<Vec<bool>> = LENET5_CONVS
                .iter()
                .map(|(l, _)| zero_filters(&model, l))
                .collect::<Result<_>>()?;
            for ((layer, filters), zeros) in LENET5_CONVS.iter().zip(&pruned) {
                let count = zeros.iter().filter(|&&z| z).count();
                assert_eq!(count, filters / 2, "{name}: {layer} after compress");
            }

            let mut cfg = TrainConfig::new(1, seed);
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

            for (i, (layer, _)) in LENET5_CONVS.iter().enumerate() {
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

/// The example plan `configs/<file>`: a pruner stage only, naming `algorithm`, whose
/// config list selects both LeNet-5 convs at sparsity 0.5. Returns its pruner.
pub fn example_plan_pruner(file: &str, algorithm: &str, seed: u64) -> Result<Box<dyn Pruner>> {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let plan = Plan::from_path(&configs.join(file))?;
    assert!(plan.quantizer.is_none(), "{file}");
    let stage = plan.pruner.context("a pruner stage")?;
    let pruner = stage.make_pruner(&Registry::builtin())?;
    assert_eq!(pruner.name(), algorithm, "{file}");
    let model = Model::new("lenet5", 10, &Device::Cpu, seed)?;
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
    Ok(pruner)
}
