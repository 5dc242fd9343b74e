//! NNI's `L1FilterPruner` and `L2FilterPruner` (Li et al. 2017, "Pruning Filters for
//! Efficient ConvNets"): in each selected Conv2d, remove the `floor(filters × sparsity)`
//! filters whose flattened weights have the smallest L1 (or L2) norm, with their biases.
//!
//! Both are one implementation, [`NormFilterPruner`], told apart by the norm's order.

use candle_core::Tensor;

use super::channels::{
    filter_rows, filter_schema, flat_filters, lowest_filters_mask, required_sparsity,
};
use super::{filter_pruner_check, Mask, PruneTarget, Pruner, PrunerEntry, SPEEDUP};
use crate::config::{LayerConfig, Schema};
use crate::nn::Graph;
use crate::Result;

pub(super) const L1_ENTRY: PrunerEntry = PrunerEntry {
    name: "L1FilterPruner",
    aliases: &["L1NormPruner"],
    stage_keys: &[SPEEDUP],
    make: |_| Ok(Box::new(L1FilterPruner::default())),
};

pub(super) const L2_ENTRY: PrunerEntry = PrunerEntry {
    name: "L2FilterPruner",
    aliases: &["L2NormPruner"],
    stage_keys: &[SPEEDUP],
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
        lowest_filters_mask(layer, &Self::filter_norms(layer.weight)?, sparsity)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::nn::OpType;
    use crate::prune::channels::testing::{
        compress_lenet5_halves, constant_filters, conv_config, pruned_filters,
    };

    fn prune<P: Pruner>(mut pruner: P, weight: &Tensor, sparsity: f64) -> Vec<usize> {
        let target = PruneTarget::new("conv", OpType::Conv2d, weight);
        let mask = pruner.calc_mask(&target, &conv_config(sparsity)).unwrap();
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
            let mask = pruner.calc_mask(&target, &conv_config(0.5)).unwrap();
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
        let (_, names) = compress_lenet5_halves(
            &mut L2FilterPruner::default(),
            3,
            r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}]"#,
            L2FilterPruner::filter_norms,
        );
        assert_eq!(names, ["conv1", "conv2"]);
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
