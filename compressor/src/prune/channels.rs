//! Whole output channels: the ranking and masks the filter pruners (FPGM, L1/L2, APoZ,
//! mean activation, Slim) share.

use candle_core::{DType, Tensor};

use super::{Mask, PruneTarget};
use crate::config::{ConfigError, LayerConfig, Schema};
use crate::nn::{Graph, Layer, OpType};
use crate::{Error, Result};

/// The channels to prune: the `floor(channels × sparsity)` lowest `scores` (NNI's count),
/// ties broken by lower index. Sorted ascending by index.
pub fn channels_to_prune(scores: &[f32], sparsity: f64) -> Vec<usize> {
    let n = scores.len();
    let count = ((n as f64 * sparsity).floor() as usize).min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    let mut pruned = order[..count].to_vec();
    pruned.sort_unstable();
    pruned
}

/// A mask removing output channels `pruned` of `weight` (dim 0) and of `bias`.
pub fn channel_mask(weight: &Tensor, bias: Option<&Tensor>, pruned: &[usize]) -> Result<Mask> {
    let channels = weight.dim(0)?;
    let mut keep = vec![1f32; channels];
    for &c in pruned {
        if let Some(k) = keep.get_mut(c) {
            *k = 0.0;
        }
    }
    let per_channel =
        Tensor::from_vec(keep, channels, weight.device())?.to_dtype(weight.dtype())?;
    let mut shape = vec![1usize; weight.rank()];
    shape[0] = channels;
    let weight_mask = per_channel
        .reshape(shape)?
        .broadcast_as(weight.shape())?
        .contiguous()?;
    Ok(match bias {
        Some(b) => Mask::with_bias(weight_mask, per_channel.to_dtype(b.dtype())?),
        None => Mask::new(weight_mask),
    })
}

/// The mask of a filter pruner's `calc_mask`: `layer`'s filters (and biases) with the
/// `floor(filters × sparsity)` lowest `scores` removed (see [`channels_to_prune`]).
pub(super) fn lowest_filters_mask(
    layer: &PruneTarget,
    scores: &[f32],
    sparsity: f64,
) -> Result<Mask> {
    channel_mask(
        layer.weight,
        layer.bias,
        &channels_to_prune(scores, sparsity),
    )
}

/// What every filter pruner accepts: Conv2d only, since a Linear's "filters" are single
/// neurons and NNI's filter pruners do not take them.
pub(super) fn filter_schema(algorithm: &'static str) -> Schema {
    Schema::pruning(algorithm, [OpType::Conv2d])
}

/// The dict's sparsity (the schema makes it required, so this only fails for dicts built
/// in code).
pub(super) fn required_sparsity(
    algorithm: &str,
    layer: &PruneTarget,
    config: &LayerConfig,
) -> Result<f64> {
    config.sparsity.ok_or_else(|| Error::Layer {
        layer: layer.name.to_string(),
        message: format!("{algorithm} needs a sparsity"),
    })
}

/// The weight as f32 values, filter after filter, and the number of filters (dim 0).
pub(super) fn flat_filters(weight: &Tensor) -> Result<(Vec<f32>, usize)> {
    let count = weight.dim(0)?;
    let data = weight
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?;
    Ok((data, count))
}

/// The `count` filters of `data` as slices (each `len / count` values).
pub(super) fn filter_rows(data: &[f32], count: usize) -> impl Iterator<Item = &[f32]> {
    let per = data.len().checked_div(count).unwrap_or(0);
    (0..count).map(move |i| &data[i * per..(i + 1) * per])
}

/// The check every filter pruner makes: each selected layer is a Conv2d whose filters can
/// be removed on their own (not depthwise: its channel count is tied to its input's).
pub fn filter_pruner_check(
    algorithm: &'static str,
    graph: &Graph,
    layers: &[LayerConfig],
    source: &str,
) -> Result<()> {
    for layer in layers {
        let depthwise = graph
            .node(&layer.name)
            .is_some_and(|n| matches!(&n.layer, Layer::Conv2d(c) if c.config().is_depthwise()));
        if depthwise {
            return Err(ConfigError::Rejected {
                file: source.to_string(),
                index: layer.index,
                algorithm,
                message: format!(
                    "`{}` is a depthwise Conv2d, whose filters follow its input channels; \
                     prune the convolution before it, or exclude this one \
                     ({{\"op_names\": [\"{}\"], \"exclude\": true}})",
                    layer.name, layer.name
                ),
            }
            .into());
        }
    }
    Ok(())
}

/// What the filter pruners' unit tests share: a Conv2d dict, hand-made filters, and the
/// filters a mask removes.
#[cfg(test)]
pub(super) mod testing {
    use candle_core::{Device, Tensor};

    use super::{channels_to_prune, filter_rows, flat_filters};
    use crate::config::{ConfigList, LayerConfig};
    use crate::models::Model;
    use crate::nn::OpType;
    use crate::prune::Pruner;
    use crate::Result;

    /// A dict selecting the Conv2d `conv` at `sparsity`.
    pub fn conv_config(sparsity: f64) -> LayerConfig {
        LayerConfig {
            name: "conv".into(),
            op_type: OpType::Conv2d,
            index: 0,
            sparsity: Some(sparsity),
            quant_bits: Default::default(),
            extra: Default::default(),
        }
    }

    /// `values[k]` for every weight of filter `k`, shape `[n, 1, 3, 3]`.
    pub fn constant_filters(values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|&v| [v; 9]).collect();
        Tensor::from_vec(data, (values.len(), 1, 3, 3), &Device::Cpu).unwrap()
    }

    /// The filters a mask removes (those whose mask is all zero; checks each filter is
    /// masked whole or not at all).
    pub fn pruned_filters(mask: &Tensor) -> Vec<usize> {
        let (data, count) = flat_filters(mask).unwrap();
        filter_rows(&data, count)
            .enumerate()
            .filter_map(|(i, row)| {
                assert!(row.iter().all(|&v| v == row[0]), "filter {i} partly masked");
                (row[0] == 0.0).then_some(i)
            })
            .collect()
    }

    /// LeNet-5 (seed `seed`) compressed by `pruner` under the config list `json`, which
    /// must prune half of each conv's filters: checks that conv1 and conv2 each lost
    /// exactly the half with the lowest `scores` (taken before pruning), whole filters,
    /// their biases and bias masks with them. Returns the model and the resolved layer
    /// names.
    pub fn compress_lenet5_halves(
        pruner: &mut dyn Pruner,
        seed: u64,
        json: &str,
        scores: fn(&Tensor) -> Result<Vec<f32>>,
    ) -> (Model, Vec<String>) {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, seed).unwrap();
        let config = ConfigList::from_json_str(json).unwrap();
        let before: Vec<Vec<f32>> = ["conv1", "conv2"]
            .iter()
            .map(|n| {
                let w = model.graph.node(n).unwrap().layer.weight().unwrap();
                scores(w).unwrap()
            })
            .collect();
        let layers = pruner.compress(&mut model.graph, &config).unwrap();
        for ((name, filters), scores) in [("conv1", 6), ("conv2", 16)].into_iter().zip(&before) {
            let node = model.graph.node(name).unwrap();
            let pruned = pruned_filters(&model.graph.masks()[name]);
            assert_eq!(pruned, channels_to_prune(scores, 0.5), "{name}");
            assert_eq!(pruned.len(), filters / 2, "{name}");
            let (w, _) = flat_filters(node.layer.weight().unwrap()).unwrap();
            let bias = node
                .layer
                .maskable_bias()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let bias_mask = model.graph.bias_masks()[name].to_vec1::<f32>().unwrap();
            for (i, row) in filter_rows(&w, filters).enumerate() {
                let gone = pruned.contains(&i);
                assert_eq!(row.iter().all(|&v| v == 0.0), gone, "{name} filter {i}");
                assert_eq!(bias[i] == 0.0, gone, "{name} bias {i}");
                assert_eq!(
                    bias_mask[i],
                    f32::from(u8::from(!gone)),
                    "{name} bias mask {i}"
                );
            }
        }
        (model, layers.into_iter().map(|l| l.name).collect())
    }
}
