//! Tests of config_list parsing, matching and validation.

use std::collections::BTreeMap;

use super::*;
use crate::nn::OpType;

mod errors;
mod formats;
mod nni_keys;

fn layers() -> Vec<LayerInfo> {
    vec![
        LayerInfo::new("features.conv1", OpType::Conv2d),
        LayerInfo::new("features.bn1", OpType::BatchNorm2d),
        LayerInfo::new("features.relu1", OpType::ReLU),
        LayerInfo::new("features.conv2", OpType::Conv2d),
        LayerInfo::new("classifier.fc1", OpType::Linear),
        LayerInfo::new("classifier.fc2", OpType::Linear),
    ]
}

fn pruning() -> Schema {
    Schema::pruning("LevelPruner", [OpType::Conv2d, OpType::Linear])
}

fn quantization() -> Schema {
    Schema::quantization("QAT_Quantizer", [OpType::Conv2d, OpType::Linear], 2..=8)
        .with_supported([OpType::ReLU])
        .with_extra_keys(&["quant_start_step"])
}

fn resolve(json: &str, schema: &Schema) -> Vec<LayerConfig> {
    let config = ConfigList::from_json_str(json).unwrap_or_else(|e| panic!("{e}"));
    config
        .resolve(&layers(), schema)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn resolve_err(json: &str, schema: &Schema) -> ConfigError {
    let config = ConfigList::from_json_str(json).unwrap_or_else(|e| panic!("{e}"));
    match config.resolve(&layers(), schema) {
        Ok(out) => panic!("expected an error, resolved to {out:?}"),
        Err(e) => e,
    }
}

fn parse_err(json: &str) -> ConfigError {
    match ConfigList::from_json_str(json) {
        Ok(c) => panic!("expected a parse error, got {c:?}"),
        Err(e) => e,
    }
}

/// (name, dict index, sparsity) of each resolved layer.
fn summary(out: &[LayerConfig]) -> Vec<(&str, usize, Option<f64>)> {
    out.iter()
        .map(|l| (l.name.as_str(), l.index, l.sparsity))
        .collect()
}

// ---- matching ----

#[test]
fn later_dict_overrides_earlier_for_a_subset() {
    let out = resolve(
        r#"[{"op_types": ["Conv2d", "Linear"], "sparsity": 0.5},
            {"op_names": ["classifier.fc2", "features.conv1"], "sparsity": 0.9}]"#,
        &pruning(),
    );
    assert_eq!(
        summary(&out),
        [
            ("features.conv1", 1, Some(0.9)),
            ("features.conv2", 0, Some(0.5)),
            ("classifier.fc1", 0, Some(0.5)),
            ("classifier.fc2", 1, Some(0.9)),
        ]
    );
}

#[test]
fn later_broad_dict_overrides_earlier_specific_one() {
    let out = resolve(
        r#"[{"op_names": ["classifier.fc2"], "sparsity": 0.9},
            {"op_types": ["Linear"], "sparsity": 0.3}]"#,
        &pruning(),
    );
    assert_eq!(
        summary(&out),
        [
            ("classifier.fc1", 1, Some(0.3)),
            ("classifier.fc2", 1, Some(0.3))
        ]
    );
}

#[test]
fn winning_dict_replaces_fields_without_merging() {
    let out = resolve(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight", "output"], "quant_bits": 8, "quant_start_step": 100},
            {"op_names": ["features.conv1"], "quant_types": ["weight"], "quant_bits": 4}]"#,
        &quantization(),
    );
    assert_eq!(out.len(), 2);
    let (conv1, conv2) = (&out[0], &out[1]);
    assert_eq!(conv1.name, "features.conv1");
    assert_eq!(conv1.quant_bits, BTreeMap::from([(QuantType::Weight, 4)]));
    assert!(!conv1.quantizes(QuantType::Output));
    assert!(conv1.extra.is_empty());
    assert_eq!(conv2.bits(QuantType::Output), Some(8));
    assert_eq!(conv2.extra["quant_start_step"], serde_json::json!(100));
}

#[test]
fn exclude_by_name_and_by_type() {
    let out = resolve(
        r#"[{"op_types": ["default"], "sparsity": 0.5},
            {"op_names": ["features.conv1"], "exclude": true},
            {"op_types": ["Linear"], "exclude": true}]"#,
        &pruning(),
    );
    assert_eq!(summary(&out), [("features.conv2", 0, Some(0.5))]);
}

#[test]
fn later_non_exclude_dict_re_includes() {
    let out = resolve(
        r#"[{"op_types": ["default"], "sparsity": 0.5},
            {"op_types": ["Linear"], "exclude": true},
            {"op_names": ["classifier.fc2"], "sparsity": 0.7}]"#,
        &pruning(),
    );
    assert_eq!(
        summary(&out),
        [
            ("features.conv1", 0, Some(0.5)),
            ("features.conv2", 0, Some(0.5)),
            ("classifier.fc2", 2, Some(0.7)),
        ]
    );
}

#[test]
fn exclude_dict_may_name_unsupported_types_and_skip_settings() {
    // BatchNorm2d is not prunable, but excluding it is harmless; no sparsity needed.
    let out = resolve(
        r#"[{"op_types": ["Linear"], "sparsity": 0.5},
            {"op_types": ["BatchNorm2d", "Linear"], "op_names": ["classifier.fc1"], "exclude": true}]"#,
        &pruning(),
    );
    assert_eq!(summary(&out), [("classifier.fc2", 0, Some(0.5))]);
}

#[test]
fn default_expands_to_schema_defaults() {
    let conv_only = Schema::pruning("FPGMPruner", [OpType::Conv2d]);
    let out = resolve(
        r#"[{"op_types": ["default"], "sparsity": 0.25}]"#,
        &conv_only,
    );
    assert_eq!(
        summary(&out),
        [
            ("features.conv1", 0, Some(0.25)),
            ("features.conv2", 0, Some(0.25))
        ]
    );

    let out = resolve(
        r#"[{"op_types": ["default", "ReLU"], "quant_types": ["output"], "quant_bits": 8}]"#,
        &quantization(),
    );
    let names: Vec<&str> = out.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "features.conv1",
            "features.relu1",
            "features.conv2",
            "classifier.fc1",
            "classifier.fc2"
        ]
    );
}

#[test]
fn op_types_and_op_names_intersect() {
    let out = resolve(
        r#"[{"op_types": ["Linear"], "op_names": ["features.conv1", "classifier.fc1"], "sparsity": 0.4}]"#,
        &pruning(),
    );
    assert_eq!(summary(&out), [("classifier.fc1", 0, Some(0.4))]);
}

#[test]
fn quant_bits_int_applies_to_every_listed_type() {
    let out = resolve(
        r#"[{"op_types": ["Linear"], "quant_types": ["weight", "input"], "quant_bits": 6}]"#,
        &quantization(),
    );
    assert_eq!(out.len(), 2);
    for layer in &out {
        assert_eq!(layer.bits(QuantType::Weight), Some(6));
        assert_eq!(layer.bits(QuantType::Input), Some(6));
        assert_eq!(layer.bits(QuantType::Output), None);
        assert!(!layer.quantizes(QuantType::Output));
        assert_eq!(layer.sparsity, None);
    }
}

#[test]
fn quant_bits_map_gives_per_type_widths() {
    let out = resolve(
        r#"[{"op_names": ["features.conv1"], "quant_types": ["weight", "output"],
             "quant_bits": {"weight": 4, "output": 8}}]"#,
        &quantization(),
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bits(QuantType::Weight), Some(4));
    assert_eq!(out[0].bits(QuantType::Output), Some(8));
    assert!(!out[0].quantizes(QuantType::Input));
}

#[test]
fn sparsity_per_layer_is_an_alias() {
    let a = ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity_per_layer": 0.3}]"#)
        .unwrap();
    let b = ConfigList::from_json_str(r#"[{"op_types": ["Conv2d"], "sparsity": 0.3}]"#).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.entries[0].sparsity, Some(0.3));
}

#[test]
fn from_entries_resolves_like_parsed() {
    let entries = vec![ConfigEntry {
        op_types: Some(vec!["default".into()]),
        sparsity: Some(0.5),
        ..Default::default()
    }];
    let built = ConfigList::from_entries(entries)
        .resolve(&layers(), &pruning())
        .unwrap();
    let parsed = resolve(
        r#"[{"op_types": ["default"], "sparsity": 0.5}]"#,
        &pruning(),
    );
    assert_eq!(built, parsed);
}

#[test]
fn entries_serialize_back_to_an_equal_config() {
    let config = ConfigList::from_json_str(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 4, "output": 8}},
            {"op_names": ["classifier.fc1"], "quant_types": ["weight"], "quant_bits": 8, "quant_start_step": 10},
            {"op_names": ["classifier.fc2"], "exclude": true}]"#,
    )
    .unwrap();
    let json = serde_json::to_string(&config.entries).unwrap();
    assert_eq!(ConfigList::from_json_str(&json).unwrap(), config);
}
