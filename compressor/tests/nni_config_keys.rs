//! NNI 2.x/3.x config keys on a real model: `total_sparsity` prunes the globally
//! smallest weights of LeNet-5 to the requested count (to the weight), and a
//! PyTorch-style `config_list` selects exactly the layers it names.

use anyhow::Result;
use candle_core::{DType, Device};
use sprig_compressor::config::ConfigList;
use sprig_compressor::models::Model;
use sprig_compressor::prune::{LevelPruner, Pruner};

/// `(name, |w| before pruning, mask)` of one masked layer.
type Pruned = (String, Vec<f32>, Vec<f32>);

/// Every masked layer of LeNet-5 after LevelPruner runs `config`.
fn prune(config: &str) -> Result<Vec<Pruned>> {
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 7)?;
    let before: Vec<(String, Vec<f32>)> = model
        .graph
        .nodes()
        .iter()
        .filter_map(|n| Some((n.name.clone(), n.layer.weight()?.clone())))
        .map(|(name, w)| {
            Ok((
                name,
                w.abs()?.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            ))
        })
        .collect::<Result<_>>()?;
    let config = ConfigList::from_json_str(config)?;
    let layers = LevelPruner.compress(&mut model.graph, &config)?;
    let masks = model.graph.masks();
    layers
        .iter()
        .map(|l| {
            let w = before.iter().find(|(n, _)| n == &l.name).unwrap().1.clone();
            let m = masks[&l.name].flatten_all()?.to_vec1::<f32>()?;
            Ok((l.name.clone(), w, m))
        })
        .collect()
}

#[test]
fn total_sparsity_prunes_the_requested_count_of_globally_smallest_weights() -> Result<()> {
    let layers = prune(r#"[{"op_types": ["default"], "total_sparsity": 0.8}]"#)?;
    let names: Vec<&str> = layers.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names, ["conv1", "conv2", "fc1", "fc2", "fc3"]);
    let total: usize = layers.iter().map(|l| l.2.len()).sum();
    let pruned: usize = layers
        .iter()
        .map(|l| l.2.iter().filter(|&&m| m == 0.0).count())
        .sum();
    let want = (0.8 * total as f64).round() as usize;
    eprintln!("total_sparsity 0.8: {pruned} of {total} weights pruned (asked {want})");
    assert_eq!(pruned, want, "global count is exact");

    // One threshold: no kept weight is smaller than a pruned one, in any layer.
    let (mut max_pruned, mut min_kept) = (0f32, f32::INFINITY);
    for (_, w, m) in &layers {
        for (&w, &m) in w.iter().zip(m) {
            if m == 0.0 {
                max_pruned = max_pruned.max(w);
            } else {
                min_kept = min_kept.min(w);
            }
        }
    }
    assert!(max_pruned <= min_kept, "{max_pruned} > {min_kept}");
    let per_layer: Vec<f64> = layers
        .iter()
        .map(|(_, _, m)| m.iter().filter(|&&x| x == 0.0).count() as f64 / m.len() as f64)
        .collect();
    eprintln!("per-layer sparsities: {per_layer:?}");
    assert!(
        per_layer.iter().any(|&s| (s - 0.8).abs() > 0.01),
        "a global ranking gives layers different sparsities: {per_layer:?}"
    );

    // With a cap, no layer goes beyond it and the total is still met.
    let capped = prune(
        r#"[{"op_types": ["default"], "total_sparsity": 0.8, "max_sparsity_per_layer": 0.82}]"#,
    )?;
    let mut pruned = 0;
    for (name, _, m) in &capped {
        let zeros = m.iter().filter(|&&x| x == 0.0).count();
        assert!(
            zeros <= (0.82 * m.len() as f64) as usize,
            "{name}: {zeros} of {}",
            m.len()
        );
        pruned += zeros;
    }
    assert_eq!(pruned, want);
    Ok(())
}

#[test]
fn a_pytorch_style_config_list_selects_exactly_the_layers_it_names() -> Result<()> {
    let layers = prune(
        r#"[{"op_types": ["Conv2d", "Linear"], "sparsity_per_layer": 0.5},
            {"op_names": ["fc3", "conv1"], "exclude": true}]"#,
    )?;
    let names: Vec<&str> = layers.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names, ["conv2", "fc1", "fc2"]);
    let layers = prune(
        r#"[{"op_partial_names": ["fc"], "exclude_op_names": ["fc2"], "sparse_ratio": 0.5}]"#,
    )?;
    let names: Vec<&str> = layers.iter().map(|l| l.0.as_str()).collect();
    assert_eq!(names, ["fc1", "fc3"]);
    Ok(())
}
