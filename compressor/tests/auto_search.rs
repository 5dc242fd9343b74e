//! The library half of `cargo xtask auto`: a candidate is an ordinary plan the
//! compressor reads with the per-layer sparsities and bit widths it names; the probe
//! prices candidates with the real exporter (sparse and packed encodings shrink the
//! blob) and scores them one-shot; the sensitivity table covers every layer and choice.

use anyhow::{Context, Result};
use candle_core::Device;
use sprig_compressor::auto::{
    layers_of_blob, Candidate, Choice, FineTune, FreshCopy, Probe, SearchSpace, Sensitivity,
};
use sprig_compressor::compress::{fold_batch_norms, Plan, QuantizerKind};
use sprig_compressor::config::QuantType;
use sprig_compressor::data::{self, Dataset};
use sprig_compressor::models::Model;
use sprig_compressor::prune::LevelPruner;
use sprig_compressor::prune::Pruner;
use sprig_compressor::train::{self, TrainConfig};

fn bundled() -> Result<(Dataset, Dataset)> {
    Ok(data::load_dir(&data::bundled_dir())?)
}

/// LeNet-5 trained one epoch on the bundled subset, as the probe takes it.
fn trained_lenet5(train_set: &Dataset, test: &Dataset) -> Result<Model> {
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let mut cfg = TrainConfig::new(1, 0);
    cfg.progress = false;
    train::train(&mut model, train_set, test, &cfg, None)?;
    Ok(model)
}

/// `model`'s weights in a temporary `model.safetensors` (kept while the folder lives).
fn saved(model: &Model) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    sprig_compressor::export::write_weights(&model.graph, &path)?;
    Ok((dir, path))
}

/// Fresh copies of LeNet-5 with the weights in `path`.
fn fresh_from(path: &std::path::Path) -> FreshCopy {
    let path = path.to_path_buf();
    Box::new(move || {
        let fresh = Model::new("lenet5", 10, &Device::Cpu, 0)?;
        fresh.load_weights(&path)?;
        Ok(fresh)
    })
}

fn choice(sparsity: f64, bits: u8) -> Choice {
    Choice::level(sparsity, bits)
}

#[test]
fn a_candidate_is_a_plan_with_its_per_layer_sparsity_and_bits() -> Result<()> {
    let model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let space = SearchSpace::of(&model.graph);
    assert_eq!(space.layers, ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    let candidate = Candidate(vec![
        choice(0.0, 8),
        choice(0.5, 8),
        choice(0.9, 4),
        choice(0.0, 2),
        choice(0.0, 8),
    ]);
    assert_eq!(
        candidate.key(&space),
        "conv1=s0b8,conv2=s50b8,fc1=s90b4,fc2=s0b2,fc3=s0b8"
    );
    let plan = Plan::from_json_str(&candidate.plan(&space).to_string(), "candidate")?;
    let pruner = plan.pruner.context("a pruner stage")?;
    assert_eq!(pruner.algorithm, "LevelPruner");
    let pruned = pruner
        .config_list
        .resolve(&model.graph.layer_infos(), &LevelPruner.schema())?;
    let sparsity: Vec<(String, f64)> = (pruned.iter())
        .map(|l| (l.name.clone(), l.sparsity.unwrap_or(0.0)))
        .collect();
    assert_eq!(
        sparsity,
        [("conv2".to_string(), 0.5), ("fc1".to_string(), 0.9)]
    );
    let quantizer = plan.quantizer.context("a quantizer stage")?;
    let layers = QuantizerKind::parse(&quantizer.algorithm)?
        .make()
        .resolve(&model.graph, &quantizer.config_list)?;
    let bits: Vec<(String, Option<u8>, Option<u8>)> = (layers.iter())
        .map(|l| {
            let b = |t| l.bits(t);
            (l.name.clone(), b(QuantType::Weight), b(QuantType::Output))
        })
        .collect();
    assert_eq!(
        bits,
        [
            ("conv1".to_string(), Some(8), Some(8)),
            ("conv2".to_string(), Some(8), Some(8)),
            ("fc1".to_string(), Some(4), Some(8)),
            ("fc2".to_string(), Some(2), Some(8)),
            ("fc3".to_string(), Some(8), Some(8)),
        ]
    );
    // Nothing pruned: no pruner stage at all.
    let dense = Plan::from_json_str(&space.uncompressed().plan(&space).to_string(), "dense")?;
    assert!(dense.pruner.is_none() && dense.quantizer.is_some());
    Ok(())
}

#[test]
fn the_probe_prices_candidates_with_the_real_exporter() -> Result<()> {
    let (train_set, test) = bundled()?;
    let model = trained_lenet5(&train_set, &test)?;
    let space = SearchSpace::of(&model.graph);
    let probe = Probe::new(
        model,
        space.clone(),
        train_set.subset(256),
        test.subset(500),
    )?;
    let dense = probe.measure(&space.uncompressed())?;
    assert!(dense.accuracy > 0.5, "trained: {}", dense.accuracy);
    assert!(dense.layers.iter().all(|l| l.encoding == "dense"));
    let macs: Vec<usize> = dense.layers.iter().map(|l| l.macs).collect();
    assert_eq!(macs, [117_600, 240_000, 48_000, 10_080, 840]);
    let kinds: Vec<&str> = dense.layers.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["conv", "conv", "fc", "fc", "fc"]);

    let sparse = probe.measure(&Candidate(vec![choice(0.9, 8); 5]))?;
    assert!(sparse
        .layers
        .iter()
        .all(|l| l.encoding.starts_with("sparse")));
    assert!(
        sparse.model_bytes * 3 < dense.model_bytes,
        "{} vs {}",
        sparse.model_bytes,
        dense.model_bytes
    );
    let fc1 = &sparse.layers[2];
    assert!((fc1.nonzero_macs as f64 / fc1.macs as f64 - 0.1).abs() < 0.01);

    let packed = probe.measure(&Candidate(vec![choice(0.0, 4); 5]))?;
    assert!(packed.layers.iter().all(|l| l.encoding == "packed4"));
    assert!(packed.model_bytes < dense.model_bytes * 6 / 10);
    // The arena depends on activations only.
    assert_eq!(packed.arena_bytes, dense.arena_bytes);
    // Measured once each; a repeat comes from memory.
    assert_eq!(probe.measured(), 3);
    assert_eq!(probe.measure(&space.uncompressed())?, dense);
    assert_eq!(probe.measured(), 3);
    // The blob a trial writes is priced the same way, from its own layers' MACs.
    let (packed, layers) = probe.pack(&Candidate(vec![choice(0.9, 8); 5]))?;
    assert_eq!(layers, sparse.layers);
    let macs: Vec<(String, usize)> = layers.iter().map(|l| (l.name.clone(), l.macs)).collect();
    assert_eq!(layers_of_blob(&packed.blob, &macs)?, sparse.layers);
    assert!(layers_of_blob(&packed.blob, &macs[1..]).is_err());
    Ok(())
}

#[test]
fn the_sensitivity_table_covers_every_layer_and_choice() -> Result<()> {
    let (train_set, test) = bundled()?;
    let model = trained_lenet5(&train_set, &test)?;
    let mut space = SearchSpace::of(&model.graph);
    space.sparsities = vec![0.0, 0.98];
    space.bits = vec![8, 2];
    space.filter_sparsities = Vec::new(); // no fresh copies here to cut filters from
    let probe = Probe::new(
        model,
        space.clone(),
        train_set.subset(256),
        test.subset(500),
    )?;
    let table = Sensitivity::analyse(&probe)?;
    assert_eq!(table.rows.len(), space.layers.len() * 3);
    for layer in &space.layers {
        assert_eq!(table.rows.iter().filter(|r| &r.layer == layer).count(), 3);
    }
    // Everything allowed at a 100-point drop; dense int8 always, whatever the drop.
    let all = table.allowed(&space.layers, 1.0);
    assert!(all.iter().all(|choices| choices.len() == 4));
    let none = table.allowed(&space.layers, -1.0);
    assert!(none.iter().all(|choices| choices == &[Choice::DENSE_INT8]));
    // Pruning conv1 to 98 % alone costs accuracy; the table shows every layer.
    let conv1 = (table.rows.iter())
        .find(|r| r.layer == "conv1" && r.choice == choice(0.98, 8))
        .context("conv1 at 98 %")?;
    assert!(conv1.measurement.accuracy < table.reference.accuracy);
    let markdown = table.table(&space.layers);
    for layer in &space.layers {
        assert!(markdown.contains(&format!("| {layer} |")));
    }
    // A prediction from the table alone is the reference for the uncompressed model.
    let predicted = table.predict(&space, &space.uncompressed(), &|m| {
        sprig_compressor::auto::Estimate {
            accuracy: m.accuracy,
            model_bytes: m.model_bytes,
            ram_bytes: m.arena_bytes,
            instructions: 0.0,
        }
    });
    assert_eq!(predicted.model_bytes, table.reference.model_bytes);
    Ok(())
}

#[test]
fn the_probe_refuses_batch_norms_it_would_move() -> Result<()> {
    let (train_set, test) = bundled()?;
    let mut model = Model::new("lenet5_bn", 10, &Device::Cpu, 0)?;
    let space = SearchSpace::of(&model.graph);
    let err = Probe::new(
        model.clone(),
        space.clone(),
        train_set.subset(64),
        test.subset(64),
    )
    .err()
    .context("an unfolded batch norm is refused")?;
    assert!(err.to_string().contains("fold batch norms"), "{err}");
    fold_batch_norms(&mut model)?;
    Probe::new(model, space, train_set.subset(64), test.subset(64))?;
    Ok(())
}

#[test]
fn a_short_fine_tune_recovers_what_one_shot_pruning_loses_and_leaves_the_baseline_alone(
) -> Result<()> {
    let (train_set, test) = bundled()?;
    let model = trained_lenet5(&train_set, &test)?;
    let (_weights, path) = saved(&model)?;
    let before = model
        .graph
        .node("fc1")
        .context("fc1")?
        .layer
        .weight()
        .context("w")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let space = SearchSpace::of(&model.graph);
    let sparse = Candidate(vec![
        choice(0.0, 8),
        choice(0.7, 8),
        choice(0.95, 8),
        choice(0.9, 8),
        choice(0.7, 8),
    ]);
    let one_shot = Probe::new(
        model.clone(),
        space.clone(),
        train_set.subset(256),
        test.subset(500),
    )?;
    let tuned = Probe::new(
        model.clone(),
        space,
        train_set.subset(256),
        test.subset(500),
    )?
    .with_fresh_copies(fresh_from(&path))
    .with_fine_tune(FineTune {
        images: train_set.subset(20 * 64),
        lr: 1e-3,
        seed: 0,
    });
    let (a, b) = (one_shot.measure(&sparse)?, tuned.measure(&sparse)?);
    eprintln!("one-shot {:.3}, fine-tuned {:.3}", a.accuracy, b.accuracy);
    assert!(
        b.accuracy > a.accuracy + 0.05,
        "fine-tuned {} vs one-shot {}",
        b.accuracy,
        a.accuracy
    );
    assert!(
        a.model_bytes.abs_diff(b.model_bytes) < 200,
        "{} vs {}",
        a.model_bytes,
        b.model_bytes
    );
    let after = model
        .graph
        .node("fc1")
        .context("fc1")?
        .layer
        .weight()
        .context("w")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(before, after, "the probe's baseline was trained");
    Ok(())
}

#[test]
fn filter_candidates_cut_channels_out_as_compress_does() -> Result<()> {
    let (train_set, test) = bundled()?;
    let model = trained_lenet5(&train_set, &test)?;
    let (_weights, path) = saved(&model)?;
    let space = SearchSpace::of(&model.graph);
    assert_eq!(space.filterable, [true, true, false, false, false]);
    // conv1 may lose filters, fc1 may not: 7 sparsities × 3 widths, + 2 filter
    // fractions; and binary (dense) for both.
    assert_eq!(space.choices(0).len(), 7 * 3 + 2 * 3 + 1);
    assert_eq!(space.choices(2).len(), 7 * 3 + 1);

    // A plan has one pruner: choosing filters clears Level sparsity, and back.
    let level = space.uncompressed().with(2, choice(0.9, 8));
    let both = level
        .with(0, Choice::filters(0.5, 8))
        .with(1, Choice::filters(0.5, 4));
    assert_eq!(both.0[2], choice(0.0, 8));
    assert!(both.prunes_filters());
    assert_eq!(
        both.key(&space),
        "conv1=f50b8,conv2=f50b4,fc1=s0b8,fc2=s0b8,fc3=s0b8"
    );
    let plan = Plan::from_json_str(&both.plan(&space).to_string(), "filters")?;
    assert_eq!(plan.pruner.context("a pruner")?.algorithm, "L1FilterPruner");
    assert!(!both.with(3, choice(0.5, 8)).prunes_filters());

    let probe = Probe::new(
        model.clone(),
        space.clone(),
        train_set.subset(256),
        test.subset(500),
    )?
    .with_fresh_copies(fresh_from(&path));
    let dense = probe.measure(&space.uncompressed())?;
    let cut = probe.measure(&both)?;
    let macs: Vec<usize> = cut.layers.iter().map(|l| l.macs).collect();
    // conv1 keeps 3 of 6 filters, conv2 8 of 16 on 3 input channels, fc1 200 inputs.
    assert_eq!(macs, [58_800, 60_000, 24_000, 10_080, 840]);
    // The calibration builds are priced with the cut MACs too.
    assert_eq!(probe.pack(&both)?.1, cut.layers);
    assert!(
        cut.model_bytes < dense.model_bytes * 6 / 10,
        "{} vs {}",
        cut.model_bytes,
        dense.model_bytes
    );
    assert!(cut.arena_bytes < dense.arena_bytes);
    // Without fresh copies there is nothing to cut from: a clear error, not a cut baseline.
    let bare = Probe::new(model.clone(), space, train_set.subset(64), test.subset(64))?;
    let err = bare.measure(&both).err().context("refused")?;
    assert!(err.to_string().contains("fresh copies"), "{err}");
    assert_eq!(
        model
            .graph
            .node("conv1")
            .context("conv1")?
            .layer
            .weight()
            .context("w")?
            .dim(0)?,
        6
    );
    Ok(())
}

#[test]
fn binary_candidates_are_bnn_plans_that_every_mix_of_layers_can_deploy() -> Result<()> {
    let (train_set, test) = bundled()?;
    let model = Model::new("lenet5", 10, &Device::Cpu, 0)?;
    let space = SearchSpace::of(&model.graph);
    assert_eq!(space.binarizable, [true; 5]);
    // conv1's signs reach conv2, conv2's fc1 (through pool and flatten); fc3 is the output.
    let readers: Vec<Option<Vec<usize>>> = space.sign_readers.clone();
    assert_eq!(
        readers,
        [
            Some(vec![1]),
            Some(vec![2]),
            Some(vec![3]),
            Some(vec![4]),
            None
        ]
    );
    let binary = choice(0.0, 1);
    assert_eq!(space.choices(2).last(), Some(&binary));

    // One quantizer per plan: binary widens 4- and 2-bit layers to 8, and back.
    let low = space
        .uncompressed()
        .with(2, choice(0.0, 4))
        .with(3, choice(0.9, 2));
    let bnn = low.with(1, binary);
    assert_eq!(bnn.0[2], choice(0.0, 8));
    assert_eq!(bnn.0[3], choice(0.9, 8));
    assert!(bnn.binarizes());
    assert!(!bnn.with(4, choice(0.0, 2)).binarizes());
    // Level sparsity stays beside binary layers (one pruner, one quantizer).
    assert_eq!(bnn.with(0, choice(0.5, 8)).0[1], binary);

    // configs/bnn.json's choice: conv2, fc1, fc2 binary; conv2 reads int8, so its sign
    // (clamped int8) goes only to binary ops; fc2's sign is exact, so fc3 may read it.
    let bnn_json = Candidate(vec![choice(0.0, 8), binary, binary, binary, choice(0.0, 8)]);
    assert_eq!(
        bnn_json.sign_outputs(&space),
        [false, true, true, true, false]
    );
    let plan = Plan::from_json_str(&bnn_json.plan(&space).to_string(), "binary")?;
    let quantizer = plan.quantizer.context("a quantizer stage")?;
    assert_eq!(quantizer.algorithm, "BNNQuantizer");
    assert_eq!(quantizer.lr, Some(sprig_compressor::auto::BNN_LR));
    // A lone binary layer reading int8 keeps an int8 output (an int8 layer reads it).
    let alone = space.uncompressed().with(2, binary);
    assert_eq!(alone.sign_outputs(&space), [false; 5]);

    // Every mix of binary layers binds and deploys: no int8 op reads a clamped sign.
    let probe = Probe::new(model, space.clone(), train_set.subset(64), test.subset(64))?;
    for mask in 1u32..32 {
        let candidate = Candidate(
            (0..5)
                .map(|i| match mask >> i & 1 {
                    1 => binary,
                    _ => choice(0.0, 8),
                })
                .collect(),
        );
        let key = candidate.key(&space);
        let (_, layers) = probe.pack(&candidate).with_context(|| key.clone())?;
        let sign = candidate.sign_outputs(&space);
        for (i, layer) in layers.iter().enumerate() {
            let reads_signs = i > 0 && sign[i - 1];
            let expected = match (candidate.0[i].bits, sign[i] && reads_signs) {
                (1, true) => "binary",
                (1, false) => "packed1",
                _ => "dense",
            };
            assert_eq!(layer.encoding, expected, "{key}: {}", layer.name);
        }
    }
    let (_, layers) = probe.pack(&bnn_json)?;
    let ops: Vec<&str> = layers.iter().map(|l| l.encoding.as_str()).collect();
    assert_eq!(ops, ["dense", "packed1", "binary", "binary", "dense"]);
    Ok(())
}
