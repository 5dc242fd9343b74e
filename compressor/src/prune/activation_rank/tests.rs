//! Unit tests of the activation-rank pruners: statistics on hand-made activations, masks,
//! the graph walk from a conv to its activation, stage keys, and LeNet-5 end to end.

use candle_core::Device;
use candle_nn::{VarBuilder, VarMap};

use super::*;
use crate::config::ConfigList;
use crate::data;
use crate::models::Model;
use crate::nn::{BatchNorm2d, Conv2d, Conv2dConfig, MaxPool2d, OpType, Pool2dConfig, ReLU, ReLU6};
use crate::prune::channels::testing::{conv_config, pruned_filters};
use crate::prune::{channels_to_prune, collect_statistics, Registry};

/// `conv` (1 → 4 channels, 1×1) → [`bn`] → `act` (ReLU, or ReLU6 after a batch norm),
/// and a conv `tail` feeding a max pool only.
fn tiny_graph(with_bn: bool) -> Graph {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let mut g = Graph::new([1, 2, 2]);
    let x = g.push(
        "conv",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(1, 4, 1), vb.pp("conv")).unwrap()),
        &[Source::Input],
    );
    let x = if with_bn {
        let x = g.push(
            "bn",
            Layer::BatchNorm2d(BatchNorm2d::new(4, vb.pp("bn")).unwrap()),
            &[x],
        );
        g.push("act", Layer::ReLU6(ReLU6), &[x])
    } else {
        g.push("act", Layer::ReLU(ReLU), &[x])
    };
    let x = g.push(
        "tail",
        Layer::Conv2d(Conv2d::new(Conv2dConfig::new(4, 4, 1), vb.pp("tail")).unwrap()),
        &[x],
    );
    g.push(
        "pool",
        Layer::MaxPool2d(MaxPool2d(Pool2dConfig {
            kernel_size: 1,
            stride: 1,
        })),
        &[x],
    );
    g
}

fn index(graph: &Graph, name: &str) -> usize {
    graph.nodes().iter().position(|n| n.name == name).unwrap()
}

/// Activations `[images, 4, 1, 2]` from per-channel rows of `2 × images` values.
fn activations(channels: [&[f32]; 4]) -> Tensor {
    let images = channels[0].len() / 2;
    // [C, N, 1, W] → [N, C, 1, W].
    let data: Vec<f32> = channels.iter().flat_map(|c| c.iter().copied()).collect();
    Tensor::from_vec(data, (4, images, 1, 2), &Device::Cpu)
        .unwrap()
        .transpose(0, 1)
        .unwrap()
        .contiguous()
        .unwrap()
}

fn prune<S: ActivationStatistic>(
    pruner: &mut ActivationRankFilterPruner<S>,
    graph: &Graph,
    sparsity: f64,
) -> Result<Vec<usize>> {
    let node = graph.node("conv").unwrap();
    let weight = node.layer.weight().unwrap();
    let target = PruneTarget {
        bias: node.layer.maskable_bias(),
        ..PruneTarget::new("conv", OpType::Conv2d, weight)
    };
    let mask = pruner.calc_mask(&target, &conv_config(sparsity))?;
    assert_eq!(mask.tensor().dims(), weight.dims());
    let pruned = pruned_filters(mask.tensor());
    let bias = mask.bias().expect("a bias mask").to_vec1::<f32>().unwrap();
    for (i, b) in bias.into_iter().enumerate() {
        assert_eq!(b == 0.0, pruned.contains(&i), "bias mask {i}");
    }
    Ok(pruned)
}

/// Channel 2 is always zero; channel 0 is zero in 4 of 8 values (all of the first,
/// 1-image batch and 2 of the second, 3-image one: the average of the two batches'
/// fractions would be 2/3, not 1/2); channel 3 in 2 of 8; channel 1 never.
fn observe_apoz_batches<S: ActivationStatistic>(
    pruner: &mut ActivationRankFilterPruner<S>,
    graph: &Graph,
) {
    let act = index(graph, "act");
    let first = activations([&[0., 0.], &[1., 2.], &[0., 0.], &[0., 3.]]);
    let second = activations([
        &[1., 0., 2., 3., 0., 4.],
        &[1., 1., 1., 1., 1., 1.],
        &[0.; 6],
        &[5., 5., 5., 0., 5., 5.],
    ]);
    pruner.observe(graph, act, &first).unwrap();
    pruner.observe(graph, act, &second).unwrap();
}

#[test]
fn apoz_prunes_the_channels_with_the_most_zeros() {
    let graph = tiny_graph(false);
    let mut pruner = ActivationAPoZRankFilterPruner::new(2);
    observe_apoz_batches(&mut pruner, &graph);
    assert_eq!(
        pruner.channel_statistics("conv").unwrap(),
        [0.5, 0.0, 1.0, 0.25]
    );
    assert_eq!(pruner.images_observed("conv"), Some(4));
    assert_eq!(prune(&mut pruner, &graph, 0.25).unwrap(), [2]);
    assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [0, 2]);
    assert_eq!(prune(&mut pruner, &graph, 0.75).unwrap(), [0, 2, 3]);
    // floor(4 × 0.2) = 0.
    assert!(prune(&mut pruner, &graph, 0.2).unwrap().is_empty());
}

#[test]
fn mean_rank_prunes_the_weakest_channels() {
    let graph = tiny_graph(false);
    let mut pruner = ActivationMeanRankFilterPruner::new(2);
    let act = index(&graph, "act");
    // Means 3, 1, 0.5, 2 over both batches (sums 12, 4, 2, 8 over 4 values).
    let first = activations([&[6., 6.], &[0., 0.], &[0., 0.], &[4., 4.]]);
    let second = activations([&[0., 0.], &[4., 0.], &[1., 1.], &[0., 0.]]);
    pruner.observe(&graph, act, &first).unwrap();
    pruner.observe(&graph, act, &second).unwrap();
    assert_eq!(
        pruner.channel_statistics("conv").unwrap(),
        [3.0, 1.0, 0.5, 2.0]
    );
    assert_eq!(prune(&mut pruner, &graph, 0.25).unwrap(), [2]);
    assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [1, 2]);
    assert_eq!(prune(&mut pruner, &graph, 0.75).unwrap(), [1, 2, 3]);
}

#[test]
fn the_same_activations_rank_differently_under_the_two_statistics() {
    // APoZ [0.5, 0, 1, 0.25]; means [1.25, 1.125, 0, 3.5] (sums 10, 9, 0, 28 over 8).
    let graph = tiny_graph(false);
    let mut apoz = ActivationAPoZRankFilterPruner::new(2);
    let mut mean = ActivationMeanRankFilterPruner::new(2);
    observe_apoz_batches(&mut apoz, &graph);
    observe_apoz_batches(&mut mean, &graph);
    assert_eq!(
        mean.channel_statistics("conv").unwrap(),
        [1.25, 1.125, 0.0, 3.5]
    );
    assert_eq!(prune(&mut apoz, &graph, 0.5).unwrap(), [0, 2]);
    assert_eq!(prune(&mut mean, &graph, 0.5).unwrap(), [1, 2]);
}

#[test]
fn ties_go_to_the_lower_index() {
    let graph = tiny_graph(false);
    let act = index(&graph, "act");
    let same = activations([&[0., 1.], &[2., 0.], &[0., 3.], &[4., 0.]]);
    let mut apoz = ActivationAPoZRankFilterPruner::new(1);
    apoz.observe(&graph, act, &same).unwrap();
    assert_eq!(prune(&mut apoz, &graph, 0.5).unwrap(), [0, 1]);
    let flat = activations([&[1., 1.], &[2., 0.], &[0., 2.], &[1., 1.]]);
    let mut mean = ActivationMeanRankFilterPruner::new(1);
    mean.observe(&graph, act, &flat).unwrap();
    assert_eq!(prune(&mut mean, &graph, 0.75).unwrap(), [0, 1, 2]);
}

#[test]
fn batch_norm_between_conv_and_relu6_is_looked_through() {
    let graph = tiny_graph(true);
    let mut pruner = ActivationAPoZRankFilterPruner::new(2);
    observe_apoz_batches(&mut pruner, &graph);
    assert_eq!(
        pruner.channel_statistics("conv").unwrap(),
        [0.5, 0.0, 1.0, 0.25]
    );
    assert_eq!(prune(&mut pruner, &graph, 0.5).unwrap(), [0, 2]);
}

#[test]
fn only_activations_after_a_conv_are_recorded() {
    let graph = tiny_graph(true);
    let mut pruner = ActivationMeanRankFilterPruner::new(1);
    let x = activations([&[1., 1.], &[1., 1.], &[1., 1.], &[1., 1.]]);
    for name in ["conv", "bn", "tail", "pool"] {
        pruner.observe(&graph, index(&graph, name), &x).unwrap();
    }
    assert!(pruner.stats.is_empty());
    assert_eq!(conv_before(&graph, index(&graph, "act")), Some(0));
    assert_eq!(activation_after(&graph, index(&graph, "tail")), None);

    // LeNet-5: relu1 and relu2 follow convs; relu3 and relu4 follow Linears.
    let model = Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
    let g = &model.graph;
    let found: Vec<(&str, &str)> = (0..g.nodes().len())
        .filter_map(|i| conv_before(g, i).map(|c| (&*g.nodes()[i].name, &*g.nodes()[c].name)))
        .collect();
    assert_eq!(found, [("relu1", "conv1"), ("relu2", "conv2")]);
}

#[test]
fn a_conv_without_statistics_is_an_error_that_says_why() {
    let graph = tiny_graph(false);
    let mut pruner = ActivationAPoZRankFilterPruner::new(1);
    let err = prune(&mut pruner, &graph, 0.5).unwrap_err().to_string();
    assert!(err.contains("`conv`"), "{err}");
    assert!(err.contains("ActivationAPoZRankFilterPruner"), "{err}");
    assert!(err.contains("no statistics pass ran"), "{err}");

    // Statistics for another conv only.
    pruner.stats.insert(
        "other".into(),
        ChannelTotals {
            totals: vec![0.0; 4],
            values: 8,
            images: 4,
        },
    );
    let err = prune(&mut pruner, &graph, 0.5).unwrap_err().to_string();
    assert!(err.contains("`conv`"), "{err}");
    assert!(err.contains("no ReLU or ReLU6 after it"), "{err}");
}

#[test]
fn statistics_of_the_wrong_width_are_refused() {
    let graph = tiny_graph(false);
    let mut pruner = ActivationMeanRankFilterPruner::new(1);
    let act = index(&graph, "act");
    pruner
        .observe(&graph, act, &activations([&[1., 1.]; 4]))
        .unwrap();
    let narrow = Tensor::ones((1, 3, 1, 2), DType::F32, &Device::Cpu).unwrap();
    assert!(pruner.observe(&graph, act, &narrow).is_err());
}

#[test]
fn stage_keys_and_the_default_batch_count() {
    let options = |pairs: &[(&str, serde_json::Value)]| StageOptions {
        source: "plan.json".into(),
        values: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    };
    let registry = Registry::builtin();
    for (name, canonical) in [
        ("ActivationAPoZRankFilterPruner", APoZ::PRUNER),
        ("ActivationAPoZRankPruner", APoZ::PRUNER),
        ("ActivationMeanRankFilterPruner", MeanActivation::PRUNER),
        ("ActivationMeanRankPruner", MeanActivation::PRUNER),
    ] {
        let make = |pairs: &[(&str, serde_json::Value)]| registry.make(name, &options(pairs));
        let pruner = make(&[]).unwrap();
        assert_eq!(pruner.name(), canonical);
        assert_eq!(pruner.statistics_batches(), DEFAULT_STATISTICS_BATCHES);
        let pruner = make(&[("statistics_batches", 3.into())]).unwrap();
        assert_eq!(pruner.statistics_batches(), 3);
        let pruner = make(&[("statistics_batch_num", 5.into())]).unwrap();
        assert_eq!(pruner.statistics_batches(), 5);

        let both = [
            ("statistics_batches", 3.into()),
            ("statistics_batch_num", 3.into()),
        ];
        let err = make(&both).err().unwrap().to_string();
        assert!(err.contains("plan.json"), "{err}");
        assert!(err.contains("only one"), "{err}");
        for bad in [0.into(), (-1).into(), 2.5.into(), "4".into()] {
            let err = make(&[("statistics_batches", bad)]).err().unwrap();
            assert!(err.to_string().contains("positive integer"), "{err}");
        }
        let err = make(&[("sparsity", 0.5.into())]).err().unwrap();
        assert!(err.to_string().contains("statistics_batch_num"), "{err}");
    }
    // Enough images at the pipeline's batch size.
    const _: () = assert!(DEFAULT_STATISTICS_BATCHES * 64 >= 1000);
}

#[test]
fn schema_is_conv2d_only_and_linear_is_rejected() {
    let pruner = ActivationMeanRankFilterPruner::default();
    let schema = pruner.schema();
    assert_eq!(schema.default_op_types, [OpType::Conv2d]);
    assert_eq!(schema.supported_op_types, [OpType::Conv2d]);
    let model = Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
    let config =
        ConfigList::from_json_str(r#"[{"op_types": ["Linear"], "sparsity": 0.5}]"#).unwrap();
    let err = pruner
        .resolve(&model.graph, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("config_list[0]"), "{err}");
    assert!(err.contains("ActivationMeanRankFilterPruner"), "{err}");
    assert!(err.contains("`Linear`"), "{err}");
    assert!(err.contains("supported: Conv2d"), "{err}");
}

#[test]
fn check_rejects_a_conv_with_no_activation_after_it() {
    let pruner = ActivationAPoZRankFilterPruner::default();
    // resnet8: a block's second conv goes conv → bn → add → relu.
    let model = Model::new("resnet8", 10, &Device::Cpu, 0).unwrap();
    let config = ConfigList::from_json_str(
        r#"[{"op_names": ["stack1.block1.conv"], "sparsity": 0.5},
            {"op_names": ["stack1.block2.conv"], "sparsity": 0.5}]"#,
    )
    .unwrap();
    let err = pruner
        .resolve(&model.graph, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&config.source), "{err}");
    assert!(err.contains("config_list[1]"), "{err}");
    assert!(err.contains("`stack1.block2.conv`"), "{err}");
    assert!(err.contains("not followed by a ReLU or ReLU6"), "{err}");
    assert!(err.contains("stack1.block2.bn"), "{err}");

    // The first conv of a block (conv → bn → relu) and DS-CNN's pointwise convs pass.
    let ok = ConfigList::from_json_str(
        r#"[{"op_names": ["stem.conv", "stack1.block1.conv"], "sparsity": 0.5}]"#,
    )
    .unwrap();
    assert_eq!(pruner.resolve(&model.graph, &ok).unwrap().len(), 2);
    let dscnn = Model::new("dscnn", 10, &Device::Cpu, 0).unwrap();
    let pw = ConfigList::from_json_str(
        r#"[{"op_names": ["stem.conv", "block1.pw.conv"], "sparsity": 0.5}]"#,
    )
    .unwrap();
    assert_eq!(pruner.resolve(&dscnn.graph, &pw).unwrap().len(), 2);
    // Depthwise convs keep the filter pruners' refusal.
    let dw = ConfigList::from_json_str(r#"[{"op_names": ["block1.dw.conv"], "sparsity": 0.5}]"#)
        .unwrap();
    let err = pruner.resolve(&dscnn.graph, &dw).unwrap_err().to_string();
    assert!(err.contains("depthwise"), "{err}");
}

/// For each filter of `layer`: whether its weights and bias are all exactly zero.
fn zero_filters(model: &Model, layer: &str) -> Vec<bool> {
    let node = model.graph.node(layer).unwrap();
    let w = node.layer.weight().unwrap();
    let filters = w.dim(0).unwrap();
    let w = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = node
        .layer
        .maskable_bias()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    w.chunks(w.len() / filters)
        .zip(b)
        .map(|(row, bias)| row.iter().all(|&v| v == 0.0) && bias == 0.0)
        .collect()
}

fn end_to_end<S: ActivationStatistic>() {
    let (train, _) = data::resolve(None).unwrap().load().unwrap();
    let train = train.subset(150);
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 5).unwrap();
    let mut pruner = ActivationRankFilterPruner::<S>::new(2);
    let images = collect_statistics(&mut pruner, &model, &train, 64, 5).unwrap();
    assert_eq!(images, 128, "{}", S::PRUNER);
    for conv in ["conv1", "conv2"] {
        assert_eq!(pruner.images_observed(conv), Some(128), "{}", S::PRUNER);
    }
    let ranks: Vec<Vec<f32>> = ["conv1", "conv2"]
        .iter()
        .map(|c| {
            let s = pruner.channel_statistics(c).unwrap();
            s.into_iter().map(S::rank).collect()
        })
        .collect();
    let config =
        ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#).unwrap();
    let layers = pruner.compress(&mut model.graph, &config).unwrap();
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2"]);
    for ((conv, filters), ranks) in [("conv1", 6), ("conv2", 16)].into_iter().zip(&ranks) {
        let zeros = zero_filters(&model, conv);
        let pruned: Vec<usize> = (0..filters).filter(|&i| zeros[i]).collect();
        assert_eq!(pruned.len(), filters / 2, "{} {conv}", S::PRUNER);
        assert_eq!(
            pruned,
            channels_to_prune(ranks, 0.5),
            "{} {conv}",
            S::PRUNER
        );
        assert_eq!(pruned_filters(&model.graph.masks()[conv]), pruned);
        let bias_mask = model.graph.bias_masks()[conv].to_vec1::<f32>().unwrap();
        for (i, m) in bias_mask.into_iter().enumerate() {
            assert_eq!(m == 0.0, pruned.contains(&i), "{conv} bias mask {i}");
        }
    }
}

#[test]
fn apoz_end_to_end_on_lenet5_zeroes_whole_filters() {
    end_to_end::<APoZ>();
}

#[test]
fn mean_activation_end_to_end_on_lenet5_zeroes_whole_filters() {
    end_to_end::<MeanActivation>();
}
