//! Weights and masks as safetensors, keyed `<op_name>.weight` like PyTorch state dicts.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use super::write_atomic;
use crate::nn::Graph;
use crate::{Error, Result};

fn serialize(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<Vec<u8>> {
    let views: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, v)| {
            Ok((
                k.clone(),
                v.to_device(&candle_core::Device::Cpu)?.contiguous()?,
            ))
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views.iter().map(|(k, v)| (k.as_str(), v)), None).map_err(|e| {
        Error::Export {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    })
}

/// Every parameter and running statistic of the graph's layers, by state-dict name.
pub fn graph_tensors(graph: &Graph) -> BTreeMap<String, Tensor> {
    graph
        .nodes()
        .iter()
        .flat_map(|node| {
            node.layer
                .state()
                .into_iter()
                .map(|(suffix, t)| (format!("{}.{suffix}", node.name), t.clone()))
        })
        .collect()
}

/// `model.safetensors`: the graph's tensors (pruned weights are exact zeros).
pub fn write_weights(graph: &Graph, path: &Path) -> Result<()> {
    write_atomic(path, &serialize(&graph_tensors(graph), path)?)
}

/// `masks.safetensors`: `<op_name>.weight` (and `<op_name>.bias` where a structured
/// pruner removed channels) → 0/1 mask, for every pruned layer.
pub fn write_masks(graph: &Graph, path: &Path) -> Result<()> {
    let weights = graph
        .masks()
        .iter()
        .map(|(k, v)| (format!("{k}.weight"), v.clone()));
    let biases = graph
        .bias_masks()
        .iter()
        .map(|(k, v)| (format!("{k}.bias"), v.clone()));
    let masks = weights.chain(biases).collect();
    write_atomic(path, &serialize(&masks, path)?)
}
