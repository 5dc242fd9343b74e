//! Speedup after channel pruning (issue 11, item 1): on lenet5, resnet8 (residual adds)
//! and dscnn (depthwise convs) a filter pruner at 50 % is followed by the speedup, which
//! removes the pruned channels with the inputs reading them; the smaller model computes
//! what the masked one did (within 1e-5 on real test images), then quantizes, packs and
//! runs in sprig-runtime.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use sprig_compressor::compress::{
    align_masks, fold_batch_norms, parameter_count, speed_up, Plan, SpeedupReport,
};
use sprig_compressor::config::ConfigList;
use sprig_compressor::data::{self, Batcher, Dataset, Order};
use sprig_compressor::export::packed;
use sprig_compressor::models::Model;
use sprig_compressor::nn::{Graph, Layer};
use sprig_compressor::prune::Registry;
use sprig_compressor::quant::{QatQuantizer, Quantizer};
use sprig_compressor::train::{self, TrainConfig};

const SEED: u64 = 5;
const QAT8: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#;
/// Test images the outputs are compared on.
const COMPARED: usize = 300;

fn bundled() -> Result<(Dataset, Dataset)> {
    Ok(data::load_dir(&data::bundled_dir())?)
}

fn fit(
    model: &mut Model,
    images: &Dataset,
    pruner: Option<&mut dyn sprig_compressor::prune::Pruner>,
) -> Result<()> {
    let mut cfg = TrainConfig::new(1, SEED);
    cfg.progress = false;
    cfg.batch_size = 32;
    train::train(model, images, &images.subset(10), &cfg, pruner)?;
    Ok(())
}

/// A model pruned by `plan`'s pruner (masks aligned for the speedup, as the job does),
/// one short fine-tuning epoch on `images`.
struct Pruned {
    model: Model,
    /// The masked model, before the speedup.
    masked: Graph,
}

fn prune(name: &str, plan: &str, images: &Dataset) -> Result<Pruned> {
    let plan = Plan::from_json_str(plan, "test plan")?;
    let stage = plan.pruner.context("a pruner stage")?;
    assert!(Registry::builtin().speedup(&stage.algorithm, &stage.options)?);
    let mut pruner = stage.make_pruner(&Registry::builtin())?;
    let mut model = Model::new(name, 10, &Device::Cpu, SEED)?;
    pruner.compress(&mut model.graph, &stage.config_list)?;
    align_masks(&mut model.graph)?;
    fit(&mut model, images, Some(pruner.as_mut()))?;
    let masked = model.graph.clone();
    Ok(Pruned { model, masked })
}

/// The largest output difference between two graphs over `data`, computed batch by batch.
fn output_change(a: &Graph, b: &Graph, data: &Dataset) -> Result<f32> {
    let mut worst = 0f32;
    for batch in Batcher::new(data, 100, Order::Sequential, &Device::Cpu) {
        let images = batch?.images;
        let (x, y) = (a.forward(&images)?, b.forward(&images)?);
        assert_eq!(x.dims(), y.dims());
        let diff: Vec<f32> = (x - y)?.abs()?.flatten_all()?.to_vec1()?;
        worst = diff.into_iter().fold(worst, f32::max);
    }
    Ok(worst)
}

/// Speeds `pruned` up and checks the outputs on `test` and that no mask is left to keep
/// pruned channels at zero. Returns the report.
fn speed_up_checked(pruned: &mut Pruned, test: &Dataset) -> Result<SpeedupReport> {
    let report = speed_up(&mut pruned.model)?;
    assert_eq!(
        report.parameters_after,
        parameter_count(&pruned.model.graph)
    );
    assert!(
        report.parameters_after < report.parameters_before,
        "{report:?}"
    );
    let change = output_change(&pruned.masked, &pruned.model.graph, &test.subset(COMPARED))?;
    assert!(change <= 1e-5, "outputs moved by {change}");
    // Every variable the optimizer and the checkpoints see is the graph's.
    let vars: BTreeMap<String, Tensor> = pruned
        .model
        .all_vars()
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().clone()))
        .collect();
    for node in pruned.model.graph.nodes() {
        for (suffix, t) in node.layer.state() {
            let key = format!("{}.{suffix}", node.name);
            assert_eq!(vars[&key].dims(), t.dims(), "{key}");
        }
    }
    Ok(report)
}

/// Folds, quantizes (QAT 8-bit, one epoch on `images`), packs and runs the model in
/// sprig-runtime; returns the blob's bytes.
fn deploy(model: &mut Model, images: &Dataset, test: &Dataset) -> Result<usize> {
    fold_batch_norms(model)?;
    QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(QAT8)?)?;
    fit(model, images, None)?;
    let packed = packed::pack(&model.graph)?;
    let report = packed::deployed_eval(&model.graph, &packed.blob, &test.subset(COMPARED))?;
    assert_eq!(report.images, COMPARED);
    assert!(report.agreement >= 0.95, "{report}");
    Ok(packed.blob_bytes())
}

fn out_channels(graph: &Graph, name: &str) -> usize {
    match &graph.node(name).unwrap().layer {
        Layer::Conv2d(c) => c.config().out_channels,
        Layer::Linear(l) => l.out_features(),
        Layer::BatchNorm2d(b) => b.num_features(),
        other => panic!("{name} is a {}", other.op_type()),
    }
}

fn in_channels(graph: &Graph, name: &str) -> usize {
    match &graph.node(name).unwrap().layer {
        Layer::Conv2d(c) => c.config().in_channels,
        Layer::Linear(l) => l.in_features(),
        other => panic!("{name} is a {}", other.op_type()),
    }
}

/// Output channels of `name` that its weight mask keeps (not entirely zero).
fn kept_by_mask(graph: &Graph, name: &str) -> Result<Vec<bool>> {
    let mask = &graph.masks()[name];
    let rows = mask.dim(0)?;
    let largest: Vec<f32> = mask.reshape((rows, ()))?.max(1)?.to_vec1()?;
    Ok(largest.into_iter().map(|m| m > 0.0).collect())
}

#[test]
fn lenet5_l1_filter50_matches_nni_parameter_count() -> Result<()> {
    let (train_set, test) = bundled()?;
    let images = train_set.subset(256);
    let plan = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/l1-filter50.json"),
    )?;
    let mut pruned = prune("lenet5", &plan, &images)?;
    let report = speed_up_checked(&mut pruned, &test)?;
    // NNI 2.10's ModelSpeedup on the same LeNet-5 and config list.
    assert_eq!(
        (report.parameters_before, report.parameters_after),
        (61_706, 35_820)
    );
    let g = &pruned.model.graph;
    assert_eq!((out_channels(g, "conv1"), in_channels(g, "conv2")), (3, 3));
    assert_eq!(out_channels(g, "conv2"), 8);
    // Each of conv2's channels was 5×5 = 25 of fc1's columns.
    assert_eq!(in_channels(g, "fc1"), 200);
    assert!(g.masks().is_empty() && g.bias_masks().is_empty());
    let changed: Vec<&str> = report.layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(changed, ["conv1", "conv2", "fc1"]);

    let mut dense = prune("lenet5", &plan, &images)?.model;
    let dense_bytes = deploy(&mut dense, &images, &test)?;
    let bytes = deploy(&mut pruned.model, &images, &test)?;
    // fc1 alone loses 24,000 int8 weights.
    assert!(
        bytes + 20_000 < dense_bytes,
        "model.sprig {bytes} B after speedup, {dense_bytes} B without"
    );
    Ok(())
}

/// Every conv at 50 %: a block's inner channels have one producer and halve; the
/// channels of a residual sum stay where any producer of the sum kept them.
#[test]
fn resnet8_keeps_the_union_of_an_adds_channels() -> Result<()> {
    let (train_set, test) = bundled()?;
    let images = train_set.subset(64);
    let plan = r#"{"pruner": {"algorithm": "L1FilterPruner",
        "config_list": [{"op_types": ["Conv2d"], "sparsity": 0.5}]}}"#;
    let mut pruned = prune("resnet8", plan, &images)?;
    let sums = [
        ("stack1", ["stem.conv", "stack1.block2.conv"]),
        ("stack2", ["stack2.block2.conv", "stack2.shortcut.conv"]),
        ("stack3", ["stack3.block2.conv", "stack3.shortcut.conv"]),
    ];
    let mut union = Vec::new();
    for (_, [a, b]) in &sums {
        let (a, b) = (
            kept_by_mask(&pruned.masked, a)?,
            kept_by_mask(&pruned.masked, b)?,
        );
        union.push(a.iter().zip(&b).filter(|(x, y)| **x || **y).count());
    }
    speed_up_checked(&mut pruned, &test)?;
    let g = &pruned.model.graph;
    for ((stack, producers), kept) in sums.iter().zip(&union) {
        for p in producers {
            assert_eq!(out_channels(g, p), *kept, "{stack}: {p}");
        }
        let full = out_channels(&pruned.masked, producers[0]);
        assert_eq!(
            out_channels(g, &format!("{stack}.block1.conv")),
            full / 2,
            "{stack}"
        );
    }
    assert!(
        union.iter().any(|&k| k < 64),
        "some sum lost channels: {union:?}"
    );
    deploy(&mut pruned.model, &images, &test)?;
    Ok(())
}

/// The pointwise and stem convs at 50 %, depthwise convs excluded (their filters follow
/// their input): every width halves, the depthwise convs with it.
#[test]
fn dscnn_depthwise_convs_follow_their_input() -> Result<()> {
    let (train_set, test) = bundled()?;
    let images = train_set.subset(64);
    let plan = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/dscnn-fpgm50.json"),
    )?;
    let mut pruned = prune("dscnn", &plan, &images)?;
    let report = speed_up_checked(&mut pruned, &test)?;
    assert_eq!(
        (report.parameters_before, report.parameters_after),
        (5_002, 1_738)
    );
    let g = &pruned.model.graph;
    for i in 1..=3 {
        let dw = format!("block{i}.dw.conv");
        assert_eq!(
            (in_channels(g, &dw), out_channels(g, &dw)),
            (16, 16),
            "{dw}"
        );
        match &g.node(&dw).unwrap().layer {
            Layer::Conv2d(c) => assert!(c.config().is_depthwise(), "{dw}"),
            _ => unreachable!(),
        }
    }
    assert_eq!(in_channels(g, "fc"), 16);
    deploy(&mut pruned.model, &images, &test)?;
    Ok(())
}

/// Network Slimming masks a batch norm's γ and β with its conv's filters: those channels
/// go, and nothing else.
#[test]
fn lenet5_bn_slim_channels_leave() -> Result<()> {
    let (train_set, test) = bundled()?;
    let images = train_set.subset(64);
    let plan = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/slim50.json"),
    )?;
    let mut pruned = prune("lenet5_bn", &plan, &images)?;
    let kept: Vec<usize> = ["bn1", "bn2"]
        .iter()
        .map(|bn| {
            Ok(kept_by_mask(&pruned.masked, bn)?
                .into_iter()
                .filter(|&k| k)
                .count())
        })
        .collect::<Result<_>>()?;
    let report = speed_up_checked(&mut pruned, &test)?;
    let g = &pruned.model.graph;
    assert_eq!(
        [out_channels(g, "conv1"), out_channels(g, "conv2")],
        [kept[0], kept[1]]
    );
    assert_eq!(
        [out_channels(g, "bn1"), out_channels(g, "bn2")],
        [kept[0], kept[1]]
    );
    assert_eq!(in_channels(g, "fc1"), 25 * kept[1]);
    // Slim's global threshold takes 11 of the 22 channels.
    assert_eq!(kept[0] + kept[1], 11, "{report:?}");
    deploy(&mut pruned.model, &images, &test)?;
    Ok(())
}
