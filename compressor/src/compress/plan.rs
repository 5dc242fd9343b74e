//! A compression plan: which pruner and which quantizer to run, each with its NNI
//! `config_list`. The default is `configs/level80-qat8.json` (Level 80 % on Conv2d and
//! Linear, then QAT int8).
//!
//! ```json
//! { "pruner":    { "algorithm": "LevelPruner",   "config_list": [ ... ] },
//!   "quantizer": { "algorithm": "QAT_Quantizer", "config_list": [ ... ], "lr": 0.0005 } }
//! ```
//! Either stage may be left out. TOML (`[pruner]`, `[[pruner.config_list]]`) and YAML
//! carry the same structure. A pruner stage may carry its algorithm's own keys
//! (`statistics_batches`, `slim_l1`, ...: see [`crate::prune::Registry`]; the channel
//! pruners' `"speedup": false` keeps the pruned channels in place, as zeros); the
//! pruner names are those of a [`Registry`] (the built-ins unless a program registers
//! its own). A top-level `"normalize"` (`"unit"`, `"mean=0.5/std=0.25"`, ...; see
//! [`Normalization`]) says how the plan's data is normalized when `--normalize` does not.
//! A top-level `"distill": {"teacher": "baseline", "temperature": 4, "alpha": 0.5}`
//! fine-tunes every training stage against the float teacher's soft targets
//! ([`crate::train::Distiller`]; keys and defaults in [`DistillSpec`]).

use std::path::Path;

use serde_json::Value;

use crate::config::{ConfigError, ConfigList};
use crate::data::Normalization;
use crate::prune::{Pruner, Registry, StageOptions};
use crate::quant::{BnnQuantizer, DoReFaQuantizer, NaiveQuantizer, QatQuantizer, Quantizer};
use crate::train::DistillSpec;
use crate::{Error, Result};

/// The bundled default plan.
pub const DEFAULT_PLAN: &str = include_str!("../../../configs/level80-qat8.json");

/// The quantizers a plan may name (NNI's class names).
pub const QUANTIZERS: [&str; 4] = [
    "NaiveQuantizer",
    "QAT_Quantizer",
    "DoReFaQuantizer",
    "BNNQuantizer",
];

/// One stage of a plan.
#[derive(Debug, Clone)]
pub struct Stage {
    pub algorithm: String,
    pub config_list: ConfigList,
    /// Fine-tuning learning rate for this stage (a default per stage otherwise).
    pub lr: Option<f64>,
    /// The algorithm's own stage keys (pruners only).
    pub options: StageOptions,
}

/// What `cargo xtask compress` does after the baseline.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: String,
    pub pruner: Option<Stage>,
    pub quantizer: Option<Stage>,
    /// How pixels become inputs, if the plan says (`--normalize` wins).
    pub normalize: Option<Normalization>,
    /// Knowledge distillation for the fine-tunes (`None`: plain cross-entropy).
    pub distill: Option<DistillSpec>,
}

impl Plan {
    pub fn default_plan() -> Result<Self> {
        Self::from_json_str(DEFAULT_PLAN, "configs/level80-qat8.json (built in)")
    }

    /// Reads a JSON plan from a string; `source` names it in messages.
    pub fn from_json_str(text: &str, source: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| plan_err(source, e))?;
        Self::from_value(value, source, &Registry::builtin())
    }

    /// Reads a plan from `.json`, `.toml`, `.yaml` or `.yml`, with the built-in pruners.
    pub fn from_path(path: &Path) -> Result<Self> {
        Self::from_path_with(path, &Registry::builtin())
    }

    /// Reads a plan whose pruner may be any of `registry`'s.
    pub fn from_path_with(path: &Path, registry: &Registry) -> Result<Self> {
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
        Self::from_value(value, &shown, registry)
    }

    fn from_value(value: Value, source: &str, registry: &Registry) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(plan_err(
                source,
                "a plan is a map with `pruner` and/or `quantizer`",
            ));
        };
        for key in map.keys() {
            if !["pruner", "quantizer", "normalize", "distill"].contains(&key.as_str()) {
                return Err(plan_err(
                    source,
                    format!(
                        "unknown key `{key}`; valid keys: pruner, quantizer, normalize, distill"
                    ),
                ));
            }
        }
        let normalize = match map.get("normalize") {
            None => None,
            Some(Value::String(s)) => Some(s.parse().map_err(|e: String| plan_err(source, e))?),
            Some(other) => {
                return Err(plan_err(
                    source,
                    format!("`normalize` must be a string such as \"unit\", found {other}"),
                ))
            }
        };
        let pruner_names = registry.names();
        let pruner_names: Vec<&str> = pruner_names.iter().map(String::as_str).collect();
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
            let known = if name == "pruner" {
                registry.find(algorithm).is_some()
            } else {
                valid.contains(&algorithm)
            };
            if !known {
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
            let lr = match v.get("lr") {
                None => None,
                Some(lr) => Some(lr.as_f64().filter(|x| *x > 0.0).ok_or_else(|| {
                    plan_err(
                        source,
                        format!("`{name}.lr` must be a positive number, found {lr}"),
                    )
                })?),
            };
            let mut options = StageOptions {
                source: source.to_string(),
                values: Default::default(),
            };
            if let Some(obj) = v.as_object() {
                for (k, value) in obj {
                    if ["algorithm", "config_list", "lr"].contains(&k.as_str()) {
                        continue;
                    }
                    if name != "pruner" {
                        return Err(plan_err(
                            source,
                            format!("unknown key `{name}.{k}`; valid: algorithm, config_list, lr"),
                        ));
                    }
                    options.values.insert(k.clone(), value.clone());
                }
            }
            let stage = Stage {
                algorithm: algorithm.to_string(),
                config_list,
                lr,
                options,
            };
            if name == "pruner" {
                // The stage's own keys must be the pruner's: checked by building it once.
                registry.make(&stage.algorithm, &stage.options)?;
                registry.speedup(&stage.algorithm, &stage.options)?;
            }
            Ok(Some(stage))
        };
        let plan = Self {
            source: source.to_string(),
            pruner: stage("pruner", &pruner_names)?,
            quantizer: stage("quantizer", &QUANTIZERS)?,
            normalize,
            distill: match map.get("distill") {
                None => None,
                Some(v) => Some(DistillSpec::from_value(v).map_err(|e| plan_err(source, e))?),
            },
        };
        let trains = plan.pruner.is_some()
            || plan.quantizer.as_ref().is_some_and(|q| {
                QuantizerKind::parse(&q.algorithm).is_ok_and(QuantizerKind::trains)
            });
        if plan.distill.is_some() && !trains {
            return Err(plan_err(
                source,
                "`distill` needs a stage that fine-tunes: a pruner, or a quantizer other \
                 than NaiveQuantizer",
            ));
        }
        Ok(plan)
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

impl Stage {
    /// The pruner this stage names, built by `registry`.
    pub fn make_pruner(&self, registry: &Registry) -> Result<Box<dyn Pruner>> {
        registry.make(&self.algorithm, &self.options)
    }
}

/// Which quantizer a plan names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantizerKind {
    Naive,
    Qat,
    DoReFa,
    Bnn,
}

impl QuantizerKind {
    pub fn parse(algorithm: &str) -> Result<Self> {
        match algorithm {
            "NaiveQuantizer" => Ok(Self::Naive),
            "QAT_Quantizer" => Ok(Self::Qat),
            "DoReFaQuantizer" => Ok(Self::DoReFa),
            "BNNQuantizer" => Ok(Self::Bnn),
            other => Err(plan_err(
                "plan",
                format!(
                    "unknown quantizer `{other}`; valid: {}",
                    QUANTIZERS.join(", ")
                ),
            )),
        }
    }

    /// The quantizer, with its default settings.
    pub fn make(self) -> Box<dyn Quantizer> {
        match self {
            Self::Naive => Box::new(NaiveQuantizer),
            Self::Qat => Box::new(QatQuantizer::new()),
            Self::DoReFa => Box::new(DoReFaQuantizer::new()),
            Self::Bnn => Box::new(BnnQuantizer::new()),
        }
    }

    /// Whether the quantizer fine-tunes the model (every one but the naive quantizer,
    /// which only rounds weights).
    pub fn trains(self) -> bool {
        self != Self::Naive
    }
}
