//! NNI's `FPGMPruner` (He et al. 2019, "Filter Pruning via Geometric Median"): in each
//! selected Conv2d, remove the `floor(filters × sparsity)` filters nearest the geometric
//! median of all its filters, with their biases. Such filters are the ones the others can
//! best stand in for, whatever their norm.
//!
//! As in NNI, nearness is each filter's summed Euclidean distance to every filter of the
//! layer (flattened); the smallest sums go, ties to the lower index.

use candle_core::Tensor;

use super::channels::{
    filter_rows, filter_schema, flat_filters, lowest_filters_mask, required_sparsity,
};
use super::{filter_pruner_check, Mask, PruneTarget, Pruner, PrunerEntry, SPEEDUP};
use crate::config::{LayerConfig, Schema};
use crate::nn::Graph;
use crate::Result;

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "FPGMPruner",
    aliases: &[],
    stage_keys: &[SPEEDUP],
    make: |_| Ok(Box::new(FPGMPruner)),
};

const NAME: &str = "FPGMPruner";

/// Filter pruning by distance to the geometric median.
#[derive(Debug, Clone, Copy, Default)]
pub struct FPGMPruner;

impl FPGMPruner {
    /// Each filter's summed Euclidean distance to all filters, in filter order (computed
    /// in f64 so that near-equal sums keep their order).
    pub fn distance_sums(weight: &Tensor) -> Result<Vec<f32>> {
        let (data, count) = flat_filters(weight)?;
        let rows: Vec<&[f32]> = filter_rows(&data, count).collect();
        let mut sums = vec![0f64; count];
        for i in 0..count {
            for j in i + 1..count {
                let d = rows[i]
                    .iter()
                    .zip(rows[j])
                    .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
                    .sum::<f64>()
                    .sqrt();
                sums[i] += d;
                sums[j] += d;
            }
        }
        Ok(sums.into_iter().map(|s| s as f32).collect())
    }
}

impl Pruner for FPGMPruner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        filter_schema(NAME)
    }

    fn check(&self, graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        filter_pruner_check(NAME, graph, layers, source)
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let sparsity = required_sparsity(NAME, layer, config)?;
        lowest_filters_mask(layer, &Self::distance_sums(layer.weight)?, sparsity)
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

    fn prune(weight: &Tensor, sparsity: f64) -> Vec<usize> {
        let target = PruneTarget::new("conv", OpType::Conv2d, weight);
        let mask = FPGMPruner
            .calc_mask(&target, &conv_config(sparsity))
            .unwrap();
        assert_eq!(mask.tensor().dims(), weight.dims());
        pruned_filters(mask.tensor())
    }

    #[test]
    fn prunes_the_filters_nearest_the_median() {
        // Filter k is all k+1 (k = 0..9): ‖w_k − w_j‖ = 3·|k − j| over 9 weights, so the
        // sums are 3·Σ_j |k − j| = 135, 111, 93, 81, 75, 75, 81, ...: the middle two,
        // values 5 and 6, are nearest the median.
        let w = constant_filters(&[1., 2., 3., 4., 5., 6., 7., 8., 9., 10.]);
        let sums = FPGMPruner::distance_sums(&w).unwrap();
        assert_eq!(sums, [135., 111., 93., 81., 75., 75., 81., 93., 111., 135.]);
        assert_eq!(prune(&w, 0.2), [4, 5]);
        // floor(10 × 0.39) = 3: the third is a tie between
        // indices 3 and 6 (values 4 and 7), and 3 goes.
        assert_eq!(prune(&w, 0.39), [3, 4, 5]);
    }

    #[test]
    fn ranks_by_distance_not_norm() {
        // The largest filter sits in the middle of the others; the smallest is an outlier.
        let w = constant_filters(&[0.0, 9.0, 10.0, 11.0, 10.5]);
        assert_eq!(prune(&w, 0.2), [2]);
    }

    #[test]
    fn ties_go_to_the_lower_index() {
        // Symmetric values: filters 1 and 3 tie, as do 0 and 4.
        let w = constant_filters(&[-2.0, -1.0, 0.0, 1.0, 2.0]);
        assert_eq!(prune(&w, 0.4), [1, 2]);
        assert_eq!(prune(&w, 0.8), [0, 1, 2, 3]);
    }

    #[test]
    fn sparsity_zero_masks_nothing() {
        let w = constant_filters(&[1.0, 2.0, 3.0]);
        assert!(prune(&w, 0.0).is_empty());
    }

    #[test]
    fn the_bias_is_masked_with_its_filter() {
        let w = constant_filters(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        let b = Tensor::new(&[1f32, 2., 3., 4., 5.], &Device::Cpu).unwrap();
        let target = PruneTarget {
            bias: Some(&b),
            ..PruneTarget::new("conv", OpType::Conv2d, &w)
        };
        let mask = FPGMPruner.calc_mask(&target, &conv_config(0.4)).unwrap();
        assert_eq!(pruned_filters(mask.tensor()), [1, 2]);
        let bias = mask.bias().expect("a bias mask").to_vec1::<f32>().unwrap();
        assert_eq!(bias, [1.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn compress_removes_whole_filters_of_lenet5() {
        let (model, names) = compress_lenet5_halves(
            &mut FPGMPruner,
            5,
            r#"[{"op_types": ["default"], "sparsity": 0.5}]"#,
            FPGMPruner::distance_sums,
        );
        assert_eq!(
            names,
            ["conv1", "conv2"],
            "default op types are Conv2d only"
        );
        let bias_masked: Vec<&String> = model.graph.bias_masks().keys().collect();
        assert_eq!(bias_masked, ["conv1", "conv2"]);
    }

    #[test]
    fn depthwise_convs_are_rejected_before_any_mask() {
        let mut model = Model::new("dscnn", 10, &Device::Cpu, 5).unwrap();
        let mut config = ConfigList::from_json_str(
            r#"[
                {"op_names": ["stem.conv"], "sparsity": 0.5},
                {"op_names": ["block1.pw.conv", "block2.dw.conv"], "sparsity": 0.25}
            ]"#,
        )
        .unwrap();
        config.source = "plans/fpgm.json".into();
        let err = FPGMPruner
            .compress(&mut model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("plans/fpgm.json: config_list[1]"), "{err}");
        assert!(err.contains("FPGMPruner"), "{err}");
        assert!(
            err.contains("`block2.dw.conv` is a depthwise Conv2d"),
            "{err}"
        );
        assert!(model.graph.masks().is_empty(), "nothing is pruned");
    }

    #[test]
    fn linear_op_types_are_rejected_with_the_valid_ones() {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 5).unwrap();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["Linear"], "sparsity": 0.5}]"#).unwrap();
        let err = FPGMPruner
            .compress(&mut model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config_list[0]"), "{err}");
        assert!(
            err.contains("FPGMPruner does not support op type `Linear`"),
            "{err}"
        );
        assert!(err.contains("supported: Conv2d"), "{err}");
        // A Linear named directly is rejected too.
        let config =
            ConfigList::from_json_str(r#"[{"op_names": ["fc1"], "sparsity": 0.5}]"#).unwrap();
        let err = FPGMPruner
            .compress(&mut model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`fc1`"), "{err}");
        assert!(err.contains("supported: Conv2d"), "{err}");
        assert!(model.graph.masks().is_empty());
    }
}
