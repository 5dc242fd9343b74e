//! The same config in JSON, TOML and YAML, and reading files.

use std::io::Write;

use super::*;

const JSON: &str = r#"[
  {"op_types": ["default"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 4, "output": 8}, "quant_start_step": 100},
  {"op_names": ["classifier.fc2"], "quant_types": ["weight"], "quant_bits": 8},
  {"op_types": ["Conv2d"], "op_names": ["features.conv2"], "exclude": true}
]"#;

const TOML: &str = r#"
[[config_list]]
op_types = ["default"]
quant_types = ["weight", "output"]
quant_bits = { weight = 4, output = 8 }
quant_start_step = 100

[[config_list]]
op_names = ["classifier.fc2"]
quant_types = ["weight"]
quant_bits = 8

[[config_list]]
op_types = ["Conv2d"]
op_names = ["features.conv2"]
exclude = true
"#;

const YAML: &str = r#"
- op_types: [default]
  quant_types: [weight, output]
  quant_bits: {weight: 4, output: 8}
  quant_start_step: 100
- op_names: [classifier.fc2]
  quant_types: [weight]
  quant_bits: 8
- op_types: [Conv2d]
  op_names: [features.conv2]
  exclude: true
"#;

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    path
}

#[test]
fn json_toml_and_yaml_files_give_equal_results() {
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for (name, text) in [
        ("c.json", JSON),
        ("c.toml", TOML),
        ("c.yaml", YAML),
        ("c.YML", YAML),
    ] {
        let path = write_temp(&dir, name, text);
        let config = ConfigList::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.source, path.display().to_string());
        let resolved = config
            .resolve(&layers(), &quantization())
            .unwrap_or_else(|e| panic!("{e}"));
        results.push((config.entries, resolved));
    }
    for other in &results[1..] {
        assert_eq!(other, &results[0]);
    }
    let (entries, resolved) = &results[0];
    assert_eq!(entries.len(), 3);
    let names: Vec<&str> = resolved.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        ["features.conv1", "classifier.fc1", "classifier.fc2"]
    );
    assert_eq!(resolved[0].bits(QuantType::Weight), Some(4));
    assert_eq!(
        resolved[0].extra["quant_start_step"],
        serde_json::json!(100)
    );
    assert_eq!(
        resolved[2].quant_bits,
        BTreeMap::from([(QuantType::Weight, 8)])
    );
}

#[test]
fn config_list_key_wraps_the_list_in_json_and_yaml() {
    let plain = ConfigList::from_json_str(JSON).unwrap();
    let wrapped_json =
        ConfigList::from_json_str(&format!(r#"{{"epochs": 3, "config_list": {JSON}}}"#)).unwrap();
    let indented: String = YAML.lines().map(|l| format!("  {l}\n")).collect();
    let wrapped_yaml =
        ConfigList::from_yaml_str(&format!("epochs: 3\nconfig_list:\n{indented}")).unwrap();
    assert_eq!(wrapped_json, plain);
    assert_eq!(wrapped_yaml.entries, plain.entries);
    assert_eq!(
        ConfigList::from_yaml_str(YAML).unwrap().entries,
        plain.entries
    );
    assert_eq!(
        ConfigList::from_toml_str(TOML).unwrap().entries,
        plain.entries
    );
}

#[test]
fn errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(
        &dir,
        "bad.yaml",
        "- op_types: [Conv2d]\n  sparsity: 0.5\n- op_types: [Linear]\n  sparsity: 1.5\n",
    );
    let config = ConfigList::from_path(&path).unwrap();
    let e = config.resolve(&layers(), &pruning()).unwrap_err();
    assert!(
        matches!(&e, ConfigError::SparsityOutOfRange { file, index: 1, .. } if *file == path.display().to_string())
    );
    assert!(
        e.to_string()
            .starts_with(&format!("{}: config_list[1]: sparsity 1.5", path.display())),
        "{e}"
    );

    let path = write_temp(&dir, "broken.toml", "[[config_list]\n");
    let e = ConfigList::from_path(&path).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Parse { format: "TOML", file, .. } if *file == path.display().to_string()),
        "{e:?}"
    );
}

#[test]
fn unsupported_extension_lists_the_supported_ones() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.txt", "config"] {
        let path = write_temp(&dir, name, JSON);
        let e = ConfigList::from_path(&path).unwrap_err();
        assert!(
            matches!(&e, ConfigError::UnsupportedExtension { path: p, .. } if *p == path),
            "{e:?}"
        );
        assert!(e.to_string().contains(".json, .toml, .yaml, .yml"), "{e}");
    }
}

#[test]
fn missing_file_is_an_io_error_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.json");
    let e = ConfigList::from_path(&path).unwrap_err();
    assert!(
        matches!(&e, ConfigError::Io { path: p, .. } if *p == path),
        "{e:?}"
    );
    assert!(e.to_string().contains("absent.json"), "{e}");
}
