//! Whole output channels: the ranking and masks the filter pruners (FPGM, L1/L2, APoZ,
//! mean activation, Slim) share.

use candle_core::Tensor;

use super::Mask;
use crate::config::{ConfigError, LayerConfig};
use crate::nn::{Graph, Layer};
use crate::Result;

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
