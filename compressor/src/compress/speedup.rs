//! Speedup (NNI's `ModelSpeedup`): after a channel pruner's fine-tuning, the channels its
//! masks removed leave the network for real, with the matching input channels of every
//! layer reading them, so a smaller dense model is what gets quantized and exported.
//!
//! A channel goes when it is zero in every tensor of its [`ChannelGroup`] whatever the
//! input: every producer's filter and bias are zero and every channel-wise layer maps
//! zero to zero (a batch norm's eval shift is 0, a depthwise conv has no bias there).
//! Removing such a channel changes no output, whichever layers of the group pruned it.
//! Where the members of a group disagree (one side of a residual `Add` pruned a channel,
//! the other kept it), the channel stays: the group keeps the union of its members'
//! channels (see `docs/ARCHITECTURE.md`, "Speedup").
//!
//! A pruned filter alone leaves a batch norm after it writing its shift, a constant that
//! a padded conv reading it would turn into a border pattern no bias can replace. So
//! before fine-tuning, [`align_masks`] masks the channel-wise layers of every channel all
//! producers of its group pruned: what fine-tunes is the network the speedup cuts.

use candle_core::{DType, Device, Tensor};
use serde::Serialize;

use crate::data::{Batcher, Dataset, Order};
use crate::models::Model;
use crate::nn::{channel_groups, ChannelGroup, Graph, Layer, Rewrite, Side};
use crate::prune::{apply_masks_to_weights, channel_mask};
use crate::Result;

/// What the speedup removed.
#[derive(Debug, Clone, Serialize)]
pub struct SpeedupReport {
    /// Trained parameters (weights, biases, batch-norm γ and β) before and after.
    pub parameters_before: usize,
    pub parameters_after: usize,
    /// Every layer whose channels changed.
    pub layers: Vec<ChannelChange>,
    /// The largest difference of any output from the masked model's over the test set,
    /// where measured ([`max_output_change`]).
    pub max_output_change: Option<f32>,
}

/// One layer's channels before and after the speedup.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelChange {
    pub name: String,
    pub op_type: String,
    /// Input channels (a Linear's input features) before and after.
    pub inputs: (usize, usize),
    /// Output channels (a Linear's output features) before and after.
    pub outputs: (usize, usize),
    /// Weights (a batch norm's γ) before and after.
    pub weights: (usize, usize),
}

/// Masks the channel-wise layers (batch norms, depthwise convs) of every channel that all
/// producers of its group have pruned (filter and bias masked whole), so the channel is
/// exactly zero through the whole group; call it after the pruner's `compress`, before
/// fine-tuning. Returns how many channels it masked that way.
pub fn align_masks(graph: &mut Graph) -> Result<usize> {
    let mut aligned = 0;
    for group in channel_groups(graph) {
        if !group.can_shrink() {
            continue;
        }
        let mut pruned = vec![true; group.channels];
        for &p in &group.producers {
            and(&mut pruned, masked_out(graph, p)?);
        }
        let channels: Vec<usize> = (0..group.channels).filter(|&c| pruned[c]).collect();
        if channels.is_empty() {
            continue;
        }
        for &i in &group.channelwise {
            mask_channels(graph, i, &channels)?;
        }
        if !group.channelwise.is_empty() {
            aligned += channels.len();
        }
    }
    apply_masks_to_weights(graph)?;
    Ok(aligned)
}

/// Removes every channel that is zero throughout its group (see the module docs), with
/// the matching inputs of the layers reading it; masks shrink alike, and those left
/// keeping everything are dropped.
pub fn speed_up(model: &mut Model) -> Result<SpeedupReport> {
    let before = channel_counts(&model.graph);
    let parameters_before = parameter_count(&model.graph);
    let mut cuts = Vec::new();
    for group in channel_groups(&model.graph) {
        if let Some(keep) = kept_channels(&model.graph, &group)? {
            cuts.push((group, keep));
        }
    }
    let mut rewrite = Rewrite::new(&mut model.graph, &model.varmap)?;
    for (group, keep) in &cuts {
        for &i in group.producers.iter().chain(&group.channelwise) {
            rewrite.keep_channels(i, Side::Outputs, keep)?;
        }
        for reader in &group.readers {
            let columns: Vec<usize> = keep
                .iter()
                .flat_map(|&c| c * reader.width..(c + 1) * reader.width)
                .collect();
            rewrite.keep_channels(reader.node, Side::Inputs, &columns)?;
        }
    }
    drop_full_masks(&mut model.graph)?;
    let after = channel_counts(&model.graph);
    let layers = before
        .into_iter()
        .zip(after)
        .filter(|(b, a)| b != a)
        .map(
            |((name, op_type, inputs, outputs, weights), (_, _, i, o, w))| ChannelChange {
                name,
                op_type,
                inputs: (inputs, i),
                outputs: (outputs, o),
                weights: (weights, w),
            },
        )
        .collect();
    Ok(SpeedupReport {
        parameters_before,
        parameters_after: parameter_count(&model.graph),
        layers,
        max_output_change: None,
    })
}

/// The largest absolute difference between `before`'s and `after`'s eval-mode outputs
/// over `data`, run on `device`.
pub fn max_output_change(
    before: &Graph,
    after: &Graph,
    data: &Dataset,
    device: &Device,
) -> Result<f32> {
    let mut worst = 0f32;
    for batch in Batcher::new(data, 500, Order::Sequential, device) {
        let images = batch?.images;
        let change = (before.forward(&images)? - after.forward(&images)?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        worst = worst.max(change);
    }
    Ok(worst)
}

/// Trained parameters of the graph (no running statistics).
pub fn parameter_count(graph: &Graph) -> usize {
    graph
        .nodes()
        .iter()
        .map(|n| n.layer.parameter_count())
        .sum()
}

/// The channels of `group` to keep, or `None` when none go: those some member may write
/// nonzero (at least one, so no tensor ends up empty).
fn kept_channels(graph: &Graph, group: &ChannelGroup) -> Result<Option<Vec<usize>>> {
    if !group.can_shrink() {
        return Ok(None);
    }
    let mut zero = vec![true; group.channels];
    for &p in &group.producers {
        and(&mut zero, writes_zero(graph, p)?);
    }
    for &i in &group.channelwise {
        and(&mut zero, keeps_zero(graph, i)?);
    }
    let mut keep: Vec<usize> = (0..group.channels).filter(|&c| !zero[c]).collect();
    if keep.is_empty() {
        keep.push(0);
    }
    Ok((keep.len() < group.channels).then_some(keep))
}

/// Per output channel of producer `i`: whether its masks remove the filter and its bias.
fn masked_out(graph: &Graph, i: usize) -> Result<Vec<bool>> {
    let node = &graph.nodes()[i];
    let Some(mask) = graph.masks().get(&node.name) else {
        return Ok(vec![false; channels_of(&node.layer)]);
    };
    let mut out = zero_rows(mask)?;
    if node.layer.maskable_bias().is_some() {
        match graph.bias_masks().get(&node.name) {
            Some(b) => and(&mut out, zero_rows(b)?),
            None => out.fill(false),
        }
    }
    Ok(out)
}

/// Per output channel of producer `i`: whether it is zero whatever its input (the
/// masked filter and the bias are exactly zero).
fn writes_zero(graph: &Graph, i: usize) -> Result<Vec<bool>> {
    let node = &graph.nodes()[i];
    let Some(weight) = node.layer.weight() else {
        return Ok(vec![false; channels_of(&node.layer)]);
    };
    let mut zero = zero_rows(&graph.masked_weight(&node.name, weight)?)?;
    if let Some(bias) = node.layer.maskable_bias() {
        and(&mut zero, zero_rows(bias)?);
    }
    Ok(zero)
}

/// Per channel of channel-wise layer `i`: whether a zero input channel stays zero.
fn keeps_zero(graph: &Graph, i: usize) -> Result<Vec<bool>> {
    match &graph.nodes()[i].layer {
        Layer::BatchNorm2d(b) => zero_rows(&b.eval_scale_shift()?.1),
        Layer::Conv2d(c) => match c.bias() {
            Some(bias) => zero_rows(bias),
            None => Ok(vec![true; c.config().out_channels]),
        },
        other => Ok(vec![true; channels_of(other)]),
    }
}

/// Masks channels `channels` of channel-wise layer `i` (its weight or γ, its bias or β),
/// on top of any mask it has.
fn mask_channels(graph: &mut Graph, i: usize, channels: &[usize]) -> Result<()> {
    let node = &graph.nodes()[i];
    let name = node.name.clone();
    let Some(weight) = node.layer.maskable_weight() else {
        return Ok(());
    };
    let (weight_mask, bias_mask) =
        channel_mask(weight, node.layer.maskable_bias(), channels)?.into_parts();
    let combine = |new: Tensor, old: Option<&Tensor>| match old {
        Some(old) => new * old,
        None => Ok(new),
    };
    let weight_mask = combine(weight_mask, graph.masks().get(&name))?;
    let bias_mask = bias_mask
        .map(|b| combine(b, graph.bias_masks().get(&name)))
        .transpose()?;
    graph.set_mask(&name, weight_mask);
    if let Some(b) = bias_mask {
        graph.set_bias_mask(&name, b);
    }
    Ok(())
}

/// Drops the masks of every layer whose masks keep everything.
fn drop_full_masks(graph: &mut Graph) -> Result<()> {
    let full = |m: Option<&Tensor>| -> Result<bool> {
        match m {
            None => Ok(true),
            Some(m) => Ok(m
                .flatten_all()?
                .min(0)?
                .to_dtype(DType::F32)?
                .to_scalar::<f32>()?
                == 1.0),
        }
    };
    let names: std::collections::BTreeSet<String> = graph
        .masks()
        .keys()
        .chain(graph.bias_masks().keys())
        .cloned()
        .collect();
    for name in names {
        if full(graph.masks().get(&name))? && full(graph.bias_masks().get(&name))? {
            graph.remove_masks(&name);
        }
    }
    Ok(())
}

/// `(name, op type, input channels, output channels)` of every layer with parameters.
/// Per Conv2d, Linear and BatchNorm2d: name, op type, input and output channels, weights.
fn channel_counts(graph: &Graph) -> Vec<(String, String, usize, usize, usize)> {
    graph
        .nodes()
        .iter()
        .filter_map(|n| {
            let (inputs, outputs) = match &n.layer {
                Layer::Conv2d(c) => (c.config().in_channels, c.config().out_channels),
                Layer::Linear(l) => (l.in_features(), l.out_features()),
                Layer::BatchNorm2d(b) => (b.num_features(), b.num_features()),
                _ => return None,
            };
            let weights = n.layer.maskable_weight().map_or(0, |w| w.elem_count());
            Some((
                n.name.clone(),
                n.layer.op_type().to_string(),
                inputs,
                outputs,
                weights,
            ))
        })
        .collect()
}

fn channels_of(layer: &Layer) -> usize {
    layer
        .maskable_weight()
        .and_then(|w| w.dim(0).ok())
        .unwrap_or(0)
}

/// Per row (index along dim 0): whether every value in it is zero.
fn zero_rows(t: &Tensor) -> Result<Vec<bool>> {
    let rows = t.dim(0)?;
    let largest = t
        .reshape((rows, ()))?
        .abs()?
        .max(1)?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    Ok(largest.into_iter().map(|m| m == 0.0).collect())
}

/// `into[c] &= other[c]` for every channel.
fn and(into: &mut [bool], other: Vec<bool>) {
    for (a, b) in into.iter_mut().zip(other) {
        *a &= b;
    }
}
