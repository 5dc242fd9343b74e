//! One test (at least) per error variant, checking the dict index and valid choices.

use super::*;

#[test]
fn unknown_key_lists_valid_keys_for_the_schema() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}, {"op_types": ["Linear"], "spasity": 0.5}]"#,
        &pruning(),
    );
    let ConfigError::UnknownKey {
        ref file,
        index,
        ref key,
        algorithm,
        ref valid,
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (file.as_str(), index, key.as_str(), algorithm),
        ("<inline>", 1, "spasity", "LevelPruner")
    );
    assert_eq!(
        valid,
        &[
            "op_types",
            "op_names",
            "op_partial_names",
            "exclude",
            "exclude_op_names",
            "exclude_op_types",
            "target_names",
            "sparsity",
            "sparsity_per_layer",
            "sparse_ratio",
            "total_sparsity",
            "max_sparsity_per_layer",
            "max_sparse_ratio"
        ]
    );
    let msg = e.to_string();
    assert!(
        msg.contains("<inline>")
            && msg.contains("config_list[1]")
            && msg.contains("sparsity_per_layer"),
        "{msg}"
    );
}

#[test]
fn sparsity_is_unknown_to_quantizers_and_quant_keys_to_pruners() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 8, "sparsity": 0.5}]"#,
        &quantization(),
    );
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, valid, .. }
            if key == "sparsity" && valid.contains(&"quant_start_step".to_string()) && !valid.contains(&"sparsity".to_string())),
        "{e:?}"
    );
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "sparsity": 0.5, "quant_bits": 8}]"#,
        &pruning(),
    );
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "quant_bits"),
        "{e:?}"
    );
    // An extra key only passes when the schema lists it.
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "sparsity": 0.5, "quant_start_step": 3}]"#,
        &pruning(),
    );
    assert!(
        matches!(&e, ConfigError::UnknownKey { key, .. } if key == "quant_start_step"),
        "{e:?}"
    );
}

#[test]
fn dict_without_op_types_or_op_names() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}, {"sparsity": 0.5}]"#,
        &pruning(),
    );
    assert!(matches!(e, ConfigError::NoTarget { index: 1, .. }), "{e:?}");
    // An exclude dict needs a target too.
    let e = resolve_err(r#"[{"exclude": true}]"#, &pruning());
    assert!(matches!(e, ConfigError::NoTarget { index: 0, .. }), "{e:?}");
}

#[test]
fn unknown_op_type_lists_valid_ones_with_default() {
    let e = resolve_err(r#"[{"op_types": ["Conv2D"], "sparsity": 0.5}]"#, &pruning());
    let ConfigError::UnknownOpType {
        ref name,
        ref valid,
        index: 0,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(name, "Conv2D");
    assert_eq!(valid.len(), OpType::ALL.len() + 1);
    assert!(valid.contains(&"default".to_string()) && valid.contains(&"Conv2d".to_string()));
    assert!(e.to_string().contains("default, Conv2d, Linear"), "{e}");
}

#[test]
fn op_type_not_supported_by_the_algorithm() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d", "BatchNorm2d"], "sparsity": 0.5}]"#,
        &pruning(),
    );
    let ConfigError::UnsupportedOpType {
        ref op_type,
        ref supported,
        algorithm,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (op_type.as_str(), algorithm),
        ("BatchNorm2d", "LevelPruner")
    );
    assert_eq!(supported, &["Conv2d", "Linear"]);
    assert!(e.to_string().contains("supported: Conv2d, Linear"), "{e}");
}

#[test]
fn layer_of_unsupported_type_selected_by_name() {
    let e = resolve_err(
        r#"[{"op_names": ["features.conv1", "features.bn1"], "sparsity": 0.5}]"#,
        &pruning(),
    );
    assert!(
        matches!(&e, ConfigError::UnsupportedLayer { name, op_type, index: 0, .. }
            if name == "features.bn1" && op_type == "BatchNorm2d"),
        "{e:?}"
    );
    // Fine when a later dict excludes it.
    let out = resolve(
        r#"[{"op_names": ["features.conv1", "features.bn1"], "sparsity": 0.5},
            {"op_names": ["features.bn1"], "exclude": true}]"#,
        &pruning(),
    );
    assert_eq!(summary(&out), [("features.conv1", 0, Some(0.5))]);
}

#[test]
fn unknown_op_name_lists_all_names_of_a_small_model() {
    let e = resolve_err(
        r#"[{"op_names": ["features.conv3"], "exclude": true}]"#,
        &pruning(),
    );
    let ConfigError::UnknownOpName {
        ref name,
        ref available,
        total,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!((name.as_str(), total), ("features.conv3", 6));
    assert_eq!(available.len(), 6);
    assert!(
        e.to_string()
            .contains("available layers: features.conv1, features.bn1"),
        "{e}"
    );
}

#[test]
fn unknown_op_name_suggests_closest_names_of_a_large_model() {
    let many: Vec<LayerInfo> = (0..50)
        .map(|i| LayerInfo::new(format!("blocks.{i}.conv"), OpType::Conv2d))
        .collect();
    let config =
        ConfigList::from_json_str(r#"[{"op_names": ["blocks.42.cnv"], "sparsity": 0.5}]"#).unwrap();
    let e = config.resolve(&many, &pruning()).unwrap_err();
    let ConfigError::UnknownOpName {
        ref available,
        total,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(total, 50);
    assert!(available.len() < 20);
    assert_eq!(available[0], "blocks.42.conv");
    assert!(
        e.to_string()
            .contains("closest of the 50 layers: blocks.42.conv"),
        "{e}"
    );
}

#[test]
fn sparsity_missing() {
    let e = resolve_err(r#"[{"op_types": ["Conv2d"]}]"#, &pruning());
    assert!(
        matches!(
            e,
            ConfigError::MissingSparsity {
                index: 0,
                algorithm: "LevelPruner",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn sparsity_out_of_range() {
    for bad in ["1.0", "-0.1", "1", "2.5"] {
        let e = resolve_err(
            &format!(r#"[{{"op_types": ["Conv2d"], "sparsity": {bad}}}]"#),
            &pruning(),
        );
        assert!(
            matches!(e, ConfigError::SparsityOutOfRange { index: 0, .. }),
            "{bad}: {e:?}"
        );
        assert!(e.to_string().contains("[0, 1)"), "{e}");
    }
    // JSON has no NaN; TOML and YAML do.
    let toml =
        ConfigList::from_toml_str("[[config_list]]\nop_types = [\"Conv2d\"]\nsparsity = nan\n")
            .unwrap();
    let yaml = ConfigList::from_yaml_str("- op_types: [Conv2d]\n  sparsity: .nan\n").unwrap();
    for config in [toml, yaml] {
        let e = config.resolve(&layers(), &pruning()).unwrap_err();
        assert!(
            matches!(e, ConfigError::SparsityOutOfRange { value, .. } if value.is_nan()),
            "{e:?}"
        );
    }
    // 0 is allowed.
    assert_eq!(
        resolve(r#"[{"op_types": ["Linear"], "sparsity": 0}]"#, &pruning())[0].sparsity,
        Some(0.0)
    );
}

#[test]
fn quantization_dict_without_quant_types() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_bits": 8}]"#,
        &quantization(),
    );
    assert!(
        matches!(e, ConfigError::MissingQuantTypes { index: 0, .. }),
        "{e:?}"
    );
}

#[test]
fn quant_bits_missing_entirely_or_for_a_listed_type() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"]}]"#,
        &quantization(),
    );
    assert!(
        matches!(
            e,
            ConfigError::MissingQuantBits {
                quant_type: None,
                ..
            }
        ),
        "{e:?}"
    );
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 8}}]"#,
        &quantization(),
    );
    assert!(
        matches!(
            e,
            ConfigError::MissingQuantBits {
                quant_type: Some(QuantType::Output),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn bits_outside_the_schema_range() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 16}]"#,
        &quantization(),
    );
    let ConfigError::BitsOutOfRange {
        bits,
        quant_type,
        ref range,
        ..
    } = e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (bits, quant_type, range.clone()),
        (16, QuantType::Weight, 2..=8)
    );
    assert!(e.to_string().contains("2..=8"), "{e}");
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 4, "output": 1}}]"#,
        &quantization(),
    );
    assert!(
        matches!(
            e,
            ConfigError::BitsOutOfRange {
                bits: 1,
                quant_type: QuantType::Output,
                ..
            }
        ),
        "{e:?}"
    );
    // Wider than u8 fails while parsing.
    let e =
        parse_err(r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 300}]"#);
    assert!(
        matches!(&e, ConfigError::InvalidValue { key, .. } if key == "quant_bits"),
        "{e:?}"
    );
}

#[test]
fn quant_bits_map_names_a_type_not_in_quant_types() {
    let e = resolve_err(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": {"weight": 8, "input": 8}}]"#,
        &quantization(),
    );
    assert!(
        matches!(&e, ConfigError::QuantBitsNotInQuantTypes { quant_type: QuantType::Input, quant_types, .. }
            if quant_types == &[QuantType::Weight]),
        "{e:?}"
    );
}

#[test]
fn unknown_quant_type_in_list_or_map() {
    for json in [
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weights"], "quant_bits": 8}]"#,
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": {"weights": 8}}]"#,
    ] {
        let e = parse_err(json);
        assert!(
            matches!(&e, ConfigError::UnknownQuantType { name, index: 0, .. } if name == "weights"),
            "{e:?}"
        );
        assert!(e.to_string().contains("weight, input, output"), "{e}");
    }
}

#[test]
fn empty_config_list() {
    for e in [
        parse_err("[]"),
        parse_err(r#"{"config_list": []}"#),
        ConfigList::from_yaml_str("").unwrap_err(),
        ConfigList::from_toml_str("").unwrap_err(),
        ConfigList::from_entries(vec![])
            .resolve(&layers(), &pruning())
            .unwrap_err(),
    ] {
        assert!(matches!(e, ConfigError::Empty { .. }), "{e:?}");
    }
}

#[test]
fn malformed_documents_and_values() {
    let e = parse_err(r#"[{"op_types": ["Conv2d"],}]"#);
    assert!(
        matches!(&e, ConfigError::Parse { format: "JSON", file, .. } if file == "<inline>"),
        "{e:?}"
    );
    let e = parse_err(r#""Conv2d""#);
    assert!(matches!(e, ConfigError::NotAList { .. }), "{e:?}");
    let e = parse_err(r#"{"config_list": {"op_types": ["Conv2d"]}}"#);
    assert!(matches!(e, ConfigError::NotAList { .. }), "{e:?}");
    let e = ConfigList::from_toml_str("[[config]]\nop_types = [\"Conv2d\"]\n").unwrap_err();
    assert!(
        matches!(&e, ConfigError::MissingConfigList { keys, .. } if keys == &["config"]),
        "{e:?}"
    );
    assert!(e.to_string().contains("[[config_list]]"), "{e}");
    let e = parse_err(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5}, ["Linear"]]"#);
    assert!(matches!(e, ConfigError::NotADict { index: 1, .. }), "{e:?}");

    for (json, bad_key) in [
        (r#"[{"op_types": "Conv2d"}]"#, "op_types"),
        (r#"[{"op_types": []}]"#, "op_types"),
        (r#"[{"op_names": [1]}]"#, "op_names"),
        (r#"[{"op_types": ["Conv2d"], "exclude": "yes"}]"#, "exclude"),
        (
            r#"[{"op_types": ["Conv2d"], "sparsity": "half"}]"#,
            "sparsity",
        ),
        (
            r#"[{"op_types": ["Conv2d"], "quant_bits": 4.5}]"#,
            "quant_bits",
        ),
    ] {
        let e = parse_err(json);
        assert!(
            matches!(&e, ConfigError::InvalidValue { key, index: 0, .. } if key == bad_key),
            "{json}: {e:?}"
        );
    }
    let e = parse_err(r#"[{"op_types": ["Conv2d"], "exclude": "yes"}]"#);
    assert!(
        e.to_string()
            .contains("`exclude` must be true or false, found the string \"yes\""),
        "{e}"
    );
}

#[test]
fn duplicate_keys_and_alias_clash() {
    let e = parse_err(r#"[{"op_types": ["Conv2d"], "sparsity": 0.5, "sparsity_per_layer": 0.6}]"#);
    assert!(
        matches!(&e, ConfigError::DuplicateKey { key, other, .. } if key == "sparsity" && other == "sparsity_per_layer"),
        "{e:?}"
    );
    let e = parse_err(r#"[{"op_types": ["Conv2d"], "op_types": ["Linear"]}]"#);
    assert!(
        matches!(&e, ConfigError::DuplicateKey { key, .. } if key == "op_types"),
        "{e:?}"
    );
}
