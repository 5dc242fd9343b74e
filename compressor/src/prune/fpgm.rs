//! NNI's `FPGMPruner` (He et al. 2019, "Filter Pruning via Geometric Median"): in each
//! selected Conv2d, remove the `floor(filters × sparsity)` filters nearest the geometric
//! median of all its filters, with their biases. Such filters are the ones the others can
//! best stand in for, whatever their norm.
//!
//! As in NNI, nearness is each filter's summed Euclidean distance to every filter of the
//! layer (flattened); the smallest sums go, ties to the lower index.

use candle_core::Tensor;

use super::norm_filter::{filter_rows, filter_schema, flat_filters, required_sparsity};
use super::{channel_mask, channels_to_prune, filter_pruner_check, PruneTarget, Pruner};
use super::{Mask, PrunerEntry};
use crate::config::{LayerConfig, Schema};
use crate::nn::Graph;
use crate::Result;

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "FPGMPruner",
    aliases: &[],
    stage_keys: &[],
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
        let sums = Self::distance_sums(layer.weight)?;
        channel_mask(
            layer.weight,
            layer.bias,
            &channels_to_prune(&sums, sparsity),
        )
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::config::ConfigList;
    use crate::models::Model;
    use crate::nn::OpType;

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

    /// The filters a mask removes (checking each filter is masked whole or not at all).
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

    fn prune(weight: &Tensor, sparsity: f64) -> Vec<usize> {
        let target = PruneTarget::new("conv", OpType::Conv2d, weight);
        let mask = FPGMPruner.calc_mask(&target, &config(sparsity)).unwrap();
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
        let mask = FPGMPruner.calc_mask(&target, &config(0.4)).unwrap();
        assert_eq!(pruned_filters(mask.tensor()), [1, 2]);
        let bias = mask.bias().expect("a bias mask").to_vec1::<f32>().unwrap();
        assert_eq!(bias, [1.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn compress_removes_whole_filters_of_lenet5() {
        let mut model = Model::new("lenet5", 10, &Device::Cpu, 5).unwrap();
        let config =
            ConfigList::from_json_str(r#"[{"op_types": ["default"], "sparsity": 0.5}]"#).unwrap();
        let sums: Vec<Vec<f32>> = ["conv1", "conv2"]
            .iter()
            .map(|n| {
                let w = model.graph.node(n).unwrap().layer.weight().unwrap();
                FPGMPruner::distance_sums(w).unwrap()
            })
            .collect();
        let layers = FPGMPruner.compress(&mut model.graph, &config).unwrap();
        let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            ["conv1", "conv2"],
            "default op types are Conv2d only"
        );
        let bias_masked: Vec<&String> = model.graph.bias_masks().keys().collect();
        assert_eq!(bias_masked, ["conv1", "conv2"]);
        for ((name, filters), sums) in [("conv1", 6), ("conv2", 16)].into_iter().zip(&sums) {
            let node = model.graph.node(name).unwrap();
            let pruned = pruned_filters(&model.graph.masks()[name]);
            assert_eq!(pruned, channels_to_prune(sums, 0.5), "{name}");
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
