//! A compression plan: which pruner and which quantizer to run, each with its NNI
//! `config_list`. The default is `configs/level80-qat8.json` (Level 80 % on Conv2d and
//! Linear, then QAT int8).
//!
//! ```json
//! { "pruner":    { "algorithm": "LevelPruner",   "config_list": [ ... ] },
//!   "quantizer": { "algorithm": "QAT_Quantizer", "config_list": [ ... ], "lr": 0.0005 } }
//! ```
//! Either stage may be left out. TOML (`[pruner]`, `[[pruner.config_list]]`) and YAML
//! carry the same structure.

use std::path::Path;

use serde_json::Value;

use crate::config::{ConfigError, ConfigList};
use crate::prune::{LevelPruner, Pruner};
use crate::{Error, Result};

/// The bundled default plan.
pub const DEFAULT_PLAN: &str = include_str!("../../../configs/level80-qat8.json");

pub const PRUNERS: [&str; 1] = ["LevelPruner"];
pub const QUANTIZERS: [&str; 2] = ["NaiveQuantizer", "QAT_Quantizer"];

/// One stage of a plan.
#[derive(Debug, Clone)]
pub struct Stage {
    pub algorithm: String,
    pub config_list: ConfigList,
    /// Fine-tuning learning rate for this stage (a default per stage otherwise).
    pub lr: Option<f64>,
}

/// What `cargo xtask compress` does after the baseline.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: String,
    pub pruner: Option<Stage>,
    pub quantizer: Option<Stage>,
}

impl Plan {
    pub fn default_plan() -> Result<Self> {
        let value: Value =
            serde_json::from_str(DEFAULT_PLAN).map_err(|e| plan_err("<default plan>", e))?;
        Self::from_value(value, "configs/level80-qat8.json (built in)")
    }

    /// Reads a plan from `.json`, `.toml`, `.yaml` or `.yml`.
    pub fn from_path(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let shown = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let value: Value = match ext {
            "json" => serde_json::from_str(&text).map_err(|e| plan_err(&shown, e))?,
            "toml" => toml::from_str(&text).map_err(|e| plan_err(&shown, e))?,
            "yaml" | "yml" => serde_yaml::from_str(&text).map_err(|e| plan_err(&shown, e))?,
            other => {
                return Err(plan_err(
                    &shown,
                    format!("unsupported extension `{other}`; use .json, .toml, .yaml or .yml"),
                ));
            }
        };
        Self::from_value(value, &shown)
    }

    fn from_value(value: Value, source: &str) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(plan_err(
                source,
                "a plan is a map with `pruner` and/or `quantizer`",
            ));
        };
        for key in map.keys() {
            if key != "pruner" && key != "quantizer" {
                return Err(plan_err(
                    source,
                    format!("unknown key `{key}`; valid keys: pruner, quantizer"),
                ));
            }
        }
        let stage = |name: &str, valid: &[&str]| -> Result<Option<Stage>> {
            let Some(v) = map.get(name) else {
                return Ok(None);
            };
            let algorithm = v.get("algorithm").and_then(Value::as_str).ok_or_else(|| {
                plan_err(
                    source,
                    format!("`{name}.algorithm` is missing; valid: {}", valid.join(", ")),
                )
            })?;
            if !valid.contains(&algorithm) {
                return Err(plan_err(
                    source,
                    format!("unknown {name} `{algorithm}`; valid: {}", valid.join(", ")),
                ));
            }
            let list = v
                .get("config_list")
                .ok_or_else(|| plan_err(source, format!("`{name}.config_list` is missing")))?;
            let mut config_list = ConfigList::from_json_str(&list.to_string())
                .map_err(|e| relabel(e, source, name))?;
            config_list.source = format!("{source} ({name}.config_list)");
            let lr = v.get("lr").and_then(Value::as_f64);
            if let Some(obj) = v.as_object() {
                if let Some(k) = obj
                    .keys()
                    .find(|k| !["algorithm", "config_list", "lr"].contains(&k.as_str()))
                {
                    return Err(plan_err(
                        source,
                        format!("unknown key `{name}.{k}`; valid: algorithm, config_list, lr"),
                    ));
                }
            }
            Ok(Some(Stage {
                algorithm: algorithm.to_string(),
                config_list,
                lr,
            }))
        };
        Ok(Self {
            source: source.to_string(),
            pruner: stage("pruner", &PRUNERS)?,
            quantizer: stage("quantizer", &QUANTIZERS)?,
        })
    }
}

fn plan_err(source: &str, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: source.into(),
        message: e.to_string(),
    }
}

fn relabel(e: ConfigError, source: &str, stage: &str) -> Error {
    plan_err(source, format!("{stage}.config_list: {e}"))
}

/// The pruner named in a plan.
pub fn make_pruner(algorithm: &str) -> Result<Box<dyn Pruner>> {
    match algorithm {
        "LevelPruner" => Ok(Box::new(LevelPruner)),
        other => Err(plan_err(
            "plan",
            format!("unknown pruner `{other}`; valid: {}", PRUNERS.join(", ")),
        )),
    }
}

/// Which quantizer a plan names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizerKind {
    Naive,
    Qat,
}

impl QuantizerKind {
    pub fn parse(algorithm: &str) -> Result<Self> {
        match algorithm {
            "NaiveQuantizer" => Ok(Self::Naive),
            "QAT_Quantizer" => Ok(Self::Qat),
            other => Err(plan_err(
                "plan",
                format!(
                    "unknown quantizer `{other}`; valid: {}",
                    QUANTIZERS.join(", ")
                ),
            )),
        }
    }
}
