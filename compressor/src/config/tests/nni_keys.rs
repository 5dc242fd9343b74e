//! The keys NNI 2.x and 3.x added: selection by partial and excluded names, global
//! sparsity, target names and dtypes; and their bad values.

use super::*;

/// A PyTorch `nn.Sequential` CNN as `named_modules()` names it.
fn torch_layers() -> Vec<LayerInfo> {
    vec![
        LayerInfo::new("features.0", OpType::Conv2d),
        LayerInfo::new("features.1", OpType::BatchNorm2d),
        LayerInfo::new("features.2", OpType::ReLU),
        LayerInfo::new("features.3", OpType::Conv2d),
        LayerInfo::new("features.4", OpType::ReLU),
        LayerInfo::new("classifier.0", OpType::Linear),
        LayerInfo::new("classifier.2", OpType::Linear),
    ]
}

fn torch_resolve(json: &str, schema: &Schema) -> Result<Vec<LayerConfig>, ConfigError> {
    ConfigList::from_json_str(json)?.resolve(&torch_layers(), schema)
}

fn names(out: &[LayerConfig]) -> Vec<&str> {
    out.iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn pytorch_module_names_select_exactly_the_layers_named() {
    let out = torch_resolve(
        r#"[{"op_names": ["features.0", "classifier.2"], "sparsity_per_layer": 0.5}]"#,
        &pruning(),
    )
    .unwrap();
    assert_eq!(names(&out), ["features.0", "classifier.2"]);

    // v1's exclude dict after a broad one.
    let out = torch_resolve(
        r#"[{"op_types": ["Conv2d", "Linear"], "sparsity": 0.5},
            {"op_names": ["features.3"], "exclude": true}]"#,
        &pruning(),
    )
    .unwrap();
    assert_eq!(names(&out), ["features.0", "classifier.0", "classifier.2"]);

    // NNI 2.x: op_partial_names adds every layer whose name contains a part.
    let out = torch_resolve(
        r#"[{"op_partial_names": ["classifier."], "op_names": ["features.3"], "sparsity": 0.5}]"#,
        &pruning(),
    )
    .unwrap();
    assert_eq!(names(&out), ["features.3", "classifier.0", "classifier.2"]);

    // NNI 3.x: exclude_op_names / exclude_op_types narrow the dict itself.
    let out = torch_resolve(
        r#"[{"op_types": ["Conv2d", "Linear"], "exclude_op_names": ["classifier.2"],
             "exclude_op_types": ["Conv2d"], "sparse_ratio": 0.3}]"#,
        &pruning(),
    )
    .unwrap();
    assert_eq!(names(&out), ["classifier.0"]);
    assert_eq!(out[0].sparsity, Some(0.3));
}

#[test]
fn partial_names_combine_with_op_types() {
    let out = torch_resolve(
        r#"[{"op_partial_names": ["features"], "op_types": ["Conv2d"], "sparsity": 0.4}]"#,
        &pruning(),
    )
    .unwrap();
    assert_eq!(names(&out), ["features.0", "features.3"]);
}

fn level() -> Schema {
    pruning().with_global_sparsity()
}

#[test]
fn total_sparsity_ranks_weights_across_the_dicts_layers() {
    let config = ConfigList::from_json_str(
        r#"[{"op_types": ["Linear"], "total_sparsity": 0.5},
            {"op_names": ["features.0"], "sparsity": 0.25}]"#,
    )
    .unwrap();
    let mut out = config.resolve(&torch_layers(), &level()).unwrap();
    assert!(config.has_global_sparsity(&out));
    assert_eq!(names(&out), ["features.0", "classifier.0", "classifier.2"]);
    assert_eq!(out[1].sparsity, None);
    // classifier.0 has small weights, classifier.2 large: half of all 12 weights are
    // the 6 smallest, 5 of them in classifier.0.
    let scores = |l: &LayerConfig| -> Result<Vec<f32>, ConfigError> {
        Ok(match l.name.as_str() {
            "classifier.0" => vec![0.1, 0.2, 0.3, 0.4, 0.5, 9.0],
            "classifier.2" => vec![0.05, 7.0, 8.0, 6.0, 5.0, 4.0],
            other => panic!("{other} is not in the global group"),
        })
    };
    config.allocate_global(&mut out, scores).unwrap();
    assert_eq!(
        out[0].sparsity,
        Some(0.25),
        "per-layer dicts are left alone"
    );
    assert_eq!(out[1].sparsity, Some(5.0 / 6.0));
    assert_eq!(out[2].sparsity, Some(1.0 / 6.0));

    // max_sparsity_per_layer 0.5: classifier.0 gives 3, the rest comes from classifier.2.
    let capped = ConfigList::from_json_str(
        r#"[{"op_types": ["Linear"], "total_sparsity": 0.5, "max_sparsity_per_layer": 0.5}]"#,
    )
    .unwrap();
    let mut out = capped.resolve(&torch_layers(), &level()).unwrap();
    capped.allocate_global(&mut out, scores).unwrap();
    assert_eq!((out[0].sparsity, out[1].sparsity), (Some(0.5), Some(0.5)));

    // NNI 2.x's per-layer map of caps.
    let mapped = ConfigList::from_json_str(
        r#"[{"op_types": ["Linear"], "total_sparsity": 0.5,
             "max_sparse_ratio": {"classifier.0": 0.34}}]"#,
    )
    .unwrap();
    let mut out = mapped.resolve(&torch_layers(), &level()).unwrap();
    mapped.allocate_global(&mut out, scores).unwrap();
    assert_eq!(out[0].sparsity, Some(2.0 / 6.0));
    assert_eq!(out[1].sparsity, Some(4.0 / 6.0));

    // Caps that leave too few weights to prune.
    let tight = ConfigList::from_json_str(
        r#"[{"op_types": ["Linear"], "total_sparsity": 0.9, "max_sparsity_per_layer": 0.5}]"#,
    )
    .unwrap();
    let mut out = tight.resolve(&torch_layers(), &level()).unwrap();
    let e = tight.allocate_global(&mut out, scores).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::GlobalSparsityUnreachable {
                want: 11,
                reachable: 6,
                weights: 12,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("config_list[0]"), "{e}");
}

fn quant_resolve(json: &str) -> Result<Vec<LayerConfig>, ConfigError> {
    torch_resolve(json, &quantization())
}

#[test]
fn quant_dtype_and_target_names_of_nni_3() {
    let out = quant_resolve(
        r#"[{"op_types": ["Conv2d"], "target_names": ["weight", "_output_"], "quant_dtype": "int4"},
            {"op_names": ["classifier.0"], "quant_dtype": "uint8"},
            {"op_names": ["classifier.2"], "quant_types": ["weight"], "quant_bits": 6, "quant_dtype": "int"}]"#,
    )
    .unwrap();
    assert_eq!(
        names(&out),
        ["features.0", "features.3", "classifier.0", "classifier.2"]
    );
    let bits = |l: &LayerConfig| {
        QuantType::ALL
            .iter()
            .map(|&t| l.bits(t))
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&out[0]), [Some(4), None, Some(4)]);
    // No targets: NNI 3.x's default setting quantizes input, weight and output.
    assert_eq!(bits(&out[2]), [Some(8), Some(8), Some(8)]);
    // NNI 2.x: a bare `int` leaves the width to quant_bits.
    assert_eq!(bits(&out[3]), [Some(6), None, None]);
}

fn err_of(r: Result<Vec<LayerConfig>, ConfigError>) -> String {
    let e = r.expect_err("expected an error");
    e.to_string()
}

#[test]
fn bad_new_keys_and_values_say_what_is_wrong() {
    let cases: Vec<(&str, Schema, &str)> = vec![
        (
            r#"[{"op_partial_names": ["feature."], "sparsity": 0.5}]"#,
            pruning(),
            "op name `feature.` matches no layer",
        ),
        (
            r#"[{"op_types": ["Linear"], "exclude_op_names": ["classifier.9"], "sparsity": 0.5}]"#,
            pruning(),
            "op name `classifier.9` matches no layer",
        ),
        (
            r#"[{"op_types": ["Linear"], "exclude_op_types": ["Dense"], "sparsity": 0.5}]"#,
            pruning(),
            "unknown op type `Dense`",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 0.5}]"#,
            pruning(),
            "LevelPruner does not rank weights across layers",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 0.5, "sparsity": 0.5}]"#,
            level(),
            "`total_sparsity` and `sparsity`",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 1.0}]"#,
            level(),
            "`total_sparsity` 1 is outside [0, 1)",
        ),
        (
            r#"[{"op_types": ["Linear"], "sparsity": 0.5, "max_sparsity_per_layer": 0.6}]"#,
            level(),
            "only caps layers under `total_sparsity`",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 0.5, "max_sparsity_per_layer": 0}]"#,
            level(),
            "0 is outside (0, 1]",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 0.5, "max_sparsity_per_layer": {"fc9": 0.5}}]"#,
            level(),
            "names `fc9`, which is no layer",
        ),
        (
            r#"[{"op_types": ["Linear"], "target_names": ["_input_"], "sparsity": 0.5}]"#,
            pruning(),
            "cannot compress target `_input_`; it compresses: weight, bias",
        ),
        (
            r#"[{"op_types": ["Linear"], "target_names": ["bias"], "quant_dtype": "int8"}]"#,
            quantization(),
            "cannot compress target `bias`",
        ),
        (
            r#"[{"op_types": ["Linear"], "target_names": ["input"], "quant_dtype": "int8"}]"#,
            quantization(),
            "unknown target `input`",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "float16"}]"#,
            quantization(),
            "`quant_dtype`",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "int16"}]"#,
            quantization(),
            "16 bits for `weight` is outside the range QAT_Quantizer supports: 2..=8",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "int8", "quant_bits": 8, "quant_types": ["weight"]}]"#,
            quantization(),
            "`quant_dtype` gives a bit width and so does `quant_bits`",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "int", "quant_types": ["weight"], "target_names": ["weight"], "quant_bits": 8}]"#,
            quantization(),
            "`target_names` and `quant_types`",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "uint"}]"#,
            quantization(),
            "needs `quant_types`",
        ),
        (
            r#"[{"op_types": ["Linear"], "total_sparsity": 0.5, "quant_dtype": "int8"}]"#,
            quantization(),
            "unknown key `total_sparsity`",
        ),
        (
            r#"[{"op_types": ["Linear"], "quant_dtype": "int8", "sparsity": 0.5}]"#,
            level(),
            "unknown key `quant_dtype`",
        ),
        (
            r#"[{"op_types": ["Linear"], "sparsity": 0.5, "sparse_ratio": 0.5}]"#,
            pruning(),
            "`sparsity` and `sparse_ratio`",
        ),
    ];
    for (json, schema, want) in cases {
        let msg = match ConfigList::from_json_str(json) {
            Err(e) => e.to_string(),
            Ok(c) => err_of(c.resolve(&torch_layers(), &schema)),
        };
        assert!(
            msg.contains(want) && msg.contains("config_list[0]"),
            "{json}\n  want: {want}\n  got: {msg}"
        );
    }
}

#[test]
fn new_keys_serialize_back_to_an_equal_config() {
    let config = ConfigList::from_json_str(
        r#"[{"op_partial_names": ["classifier"], "exclude_op_names": ["classifier.2"], "total_sparsity": 0.5,
             "max_sparsity_per_layer": {"classifier.0": 0.7}},
            {"op_types": ["Conv2d"], "exclude_op_types": ["Linear"], "target_names": ["weight", "bias"], "sparsity": 0.2}]"#,
    )
    .unwrap();
    let json = serde_json::to_string(&config.entries).unwrap();
    assert_eq!(ConfigList::from_json_str(&json).unwrap(), config);
    let quant = ConfigList::from_json_str(
        r#"[{"op_types": ["Conv2d"], "target_names": ["_input_", "weight"], "quant_dtype": "uint4"}]"#,
    )
    .unwrap();
    let json = serde_json::to_string(&quant.entries).unwrap();
    assert!(
        json.contains(r#""quant_dtype":"uint4""#) && json.contains("_input_"),
        "{json}"
    );
    assert_eq!(ConfigList::from_json_str(&json).unwrap(), quant);
}
