//! NNI's `L1FilterPruner` and `L2FilterPruner` (Li et al. 2017, "Pruning Filters for
//! Efficient ConvNets"): in each selected Conv2d, remove the `floor(filters × sparsity)`
//! filters whose flattened weights have the smallest L1 (or L2) norm, with their biases.
//!
//! Both are one implementation, [`NormFilterPruner`], told apart by the norm's order.

use candle_core::{DType, Tensor};

use super::{channel_mask, channels_to_prune, filter_pruner_check, PruneTarget, Pruner};
use super::{Mask, PrunerEntry};
use crate::config::{LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

pub(super) const L1_ENTRY: PrunerEntry = PrunerEntry {
    name: "L1FilterPruner",
    aliases: &["L1NormPruner"],
    stage_keys: &[],
    make: |_| Ok(Box::new(L1FilterPruner::default())),
};

pub(super) const L2_ENTRY: PrunerEntry = PrunerEntry {
    name: "L2FilterPruner",
    aliases: &["L2NormPruner"],
    stage_keys: &[],
    make: |_| Ok(Box::new(L2FilterPruner::default())),
};

/// Filter pruning by the Lp norm of each filter, `P` being 1 or 2 (checked at compile
/// time); use it through [`L1FilterPruner`] or [`L2FilterPruner`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NormFilterPruner<const P: u8>;

/// Prunes the filters with the smallest sum of absolute weights.
pub type L1FilterPruner = NormFilterPruner<1>;
/// Prunes the filters with the smallest Euclidean norm.
pub type L2FilterPruner = NormFilterPruner<2>;

impl<const P: u8> NormFilterPruner<P> {
    const NAME: &'static str = match P {
        1 => "L1FilterPruner",
        2 => "L2FilterPruner",
        _ => panic!("NormFilterPruner supports the L1 and L2 norms only"),
    };

    /// Each filter's norm, in filter order.
    pub fn filter_norms(weight: &Tensor) -> Result<Vec<f32>> {
        let (data, count) = flat_filters(weight)?;
        Ok(filter_rows(&data, count)
            .map(|row| {
                let norm = match P {
                    1 => row.iter().map(|&w| f64::from(w).abs()).sum::<f64>(),
                    _ => row
                        .iter()
                        .map(|&w| f64::from(w).powi(2))
                        .sum::<f64>()
                        .sqrt(),
                };
                norm as f32
            })
            .collect())
    }
}

impl<const P: u8> Pruner for NormFilterPruner<P> {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn schema(&self) -> Schema {
        filter_schema(Self::NAME)
    }

    fn check(&self, graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        filter_pruner_check(Self::NAME, graph, layers, source)
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let sparsity = required_sparsity(Self::NAME, layer, config)?;
        let norms = Self::filter_norms(layer.weight)?;
        channel_mask(
            layer.weight,
            layer.bias,
            &channels_to_prune(&norms, sparsity),
        )
    }
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

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;

    fn config(sparsity: f64) -> LayerConfig {
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
    fn constant_filters(values: &[f32]) -> Tensor {
        let data = values.iter().flat_map(|&v| [v; 9]).collect();
        Tensor::from_vec(data, (values.len(), 1, 3, 3), &Device::Cpu).unwrap()
    }

    /// The filters a mask removes (those whose mask is all zero; checks it is whole).
    fn pruned_filters(mask: &Tensor) -> Vec<usize> {
        let (data, count) = flat_filters(mask).unwrap();
        filter_rows(&data, count)
            .enumerate()
            .filter_map(|(i, row)| {
                assert!(row.iter().all(|&v| v == row[0]), "filter {i} partly masked");
                (row[0] == 0.0).then_some(i)
            })
            .collect()
    }

    fn prune<P: Pruner>(mut pruner: P, weight: &Tensor, sparsity: f64) -> Vec<usize> {
        let target = PruneTarget::new("conv", OpType::Conv2d, weight);
        let mask = pruner.calc_mask(&target, &config(sparsity)).unwrap();
        assert_eq!(mask.tensor().dims(), weight.dims());
        pruned_filters(mask.tensor())
    }

    #[test]
    fn l1_prunes_the_smallest_filters() {
        let w = constant_filters(&[0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.2), [0]);
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.6), [0, 1, 2]);
        // floor(5 × 0.39) = 1: NNI truncates.
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.39), [0]);
    }

    #[test]
    fn l1_ranks_by_magnitude_not_sign() {
        let w = constant_filters(&[-4.0, 1.0, -0.5, 3.0]);
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.5), [1, 2]);
    }

    #[test]
    fn l1_and_l2_rank_differently() {
        // Filter 0 is one 3 (L1 3, L2 3); filter 1 is four 1s (L1 4, L2 2); filter 2 is
        // large under both.
        let w = Tensor::from_vec(
            vec![3f32, 0., 0., 0., 1., 1., 1., 1., 5., 5., 5., 5.],
            (3, 1, 2, 2),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(L1FilterPruner::filter_norms(&w).unwrap(), [3.0, 4.0, 20.0]);
        assert_eq!(L2FilterPruner::filter_norms(&w).unwrap(), [3.0, 2.0, 10.0]);
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.4), [0]);
        assert_eq!(prune(L2FilterPruner::default(), &w, 0.4), [1]);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        let w = constant_filters(&[2.0, 1.0, -1.0, 1.0, 2.0]);
        assert_eq!(prune(L1FilterPruner::default(), &w, 0.4), [1, 2]);
        assert_eq!(prune(L2FilterPruner::default(), &w, 0.8), [0, 1, 2, 3]);
    }

    #[test]
    fn sparsity_zero_masks_nothing() {
        let w = constant_filters(&[0.0, 1.0, 2.0]);
        assert!(prune(L1FilterPruner::default(), &w, 0.0).is_empty());
        assert!(prune(L2FilterPruner::default(), &w, 0.0).is_empty());
    }

    #[test]
    fn the_bias_is_masked_with_its_filter() {
        let w = constant_filters(&[3.0, 1.0, 2.0, 0.5]);
        let b = Tensor::new(&[1f32, 2., 3., 4.], &Device::Cpu).unwrap();
        let target = PruneTarget {
            bias: Some(&b),
            ..PruneTarget::new("conv", OpType::Conv2d, &w)
        };
        for mut pruner in [
            Box::new(L1FilterPruner::default()) as Box<dyn Pruner>,
            Box::new(L2FilterPruner::default()),
        ] {
            let mask = pruner.calc_mask(&target, &config(0.5)).unwrap();
            assert_eq!(pruned_filters(mask.tensor()), [1, 3]);
            let bias = mask.bias().expect("a bias mask").to_vec1::<f32>().unwrap();
            assert_eq!(bias, [1.0, 0.0, 1.0, 0.0]);
        }
    }

    #[test]
    fn names_and_schema() {
        assert_eq!(L1FilterPruner::default().name(), "L1FilterPruner");
        assert_eq!(L2FilterPruner::default().name(), "L2FilterPruner");
        let schema = L2FilterPruner::default().schema();
        assert_eq!(schema.default_op_types, [OpType::Conv2d]);
        assert_eq!(schema.supported_op_types, [OpType::Conv2d]);
    }

    #[test]
    fn compress_removes_whole_filters_of_lenet5() {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 3).unwrap();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#).unwrap();
        let before: Vec<Vec<f32>> = ["conv1", "conv2"]
            .iter()
            .map(|n| {
                let w = model.graph.node(n).unwrap().layer.weight().unwrap();
                L2FilterPruner::filter_norms(w).unwrap()
            })
            .collect();
        let layers = L2FilterPruner::default()
            .compress(&mut model.graph, &config)
            .unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["conv1", "conv2"]);
        for (name, (filters, norms)) in ["conv1", "conv2"]
            .into_iter()
            .zip([6, 16].iter().zip(&before))
        {
            let node = model.graph.node(name).unwrap();
            let pruned = pruned_filters(&model.graph.masks()[name]);
            assert_eq!(pruned, channels_to_prune(norms, 0.5), "{name}");
            assert_eq!(pruned.len(), filters / 2, "{name}");
            let (w, _) = flat_filters(node.layer.weight().unwrap()).unwrap();
            let bias = node
                .layer
                .maskable_bias()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            let bias_mask = model.graph.bias_masks()[name].to_vec1::<f32>().unwrap();
            for (i, row) in filter_rows(&w, *filters).enumerate() {
                let gone = pruned.contains(&i);
                assert_eq!(row.iter().all(|&v| v == 0.0), gone, "{name} filter {i}");
                assert_eq!(bias[i] == 0.0, gone, "{name} bias {i}");
                assert_eq!(
                    bias_mask[i],
                    if gone { 0.0 } else { 1.0 },
                    "{name} bias mask {i}"
                );
            }
        }
    }

    #[test]
    fn linear_op_types_are_rejected_with_the_valid_ones() {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 3).unwrap();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["Linear"], "sparsity": 0.5}]"#).unwrap();
        let err = L1FilterPruner::default()
            .compress(&mut model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config_list[0]"), "{err}");
        assert!(err.contains("L1FilterPruner"), "{err}");
        assert!(err.contains("`Linear`"), "{err}");
        assert!(err.contains("supported: Conv2d"), "{err}");
        assert!(model.graph.masks().is_empty());
    }
}
