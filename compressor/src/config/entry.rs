//! One dict of a `config_list`, and its conversion from a parsed document: the keys of
//! NNI v1, 2.x and 3.x (see `docs/CONFIG_KEYS.md` for which generation each comes from).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::raw::Raw;
use super::{ConfigError, MaxSparsity, QuantDtype, Target};

/// What a quantizer acts on: a layer's weight, its input activation or its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantType {
    Weight,
    Input,
    Output,
}

impl QuantType {
    /// Every quant type, in order.
    pub const ALL: [QuantType; 3] = [QuantType::Weight, QuantType::Input, QuantType::Output];

    /// The config spelling: `weight`, `input`, `output`.
    pub fn as_str(self) -> &'static str {
        match self {
            QuantType::Weight => "weight",
            QuantType::Input => "input",
            QuantType::Output => "output",
        }
    }
}

impl fmt::Display for QuantType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuantType {
    type Err = String;

    /// Parses `weight`, `input` or `output`; the error is the unrecognised name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QuantType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| s.to_string())
    }
}

/// `quant_bits`: one width for every quant type of the dict, or one per type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum QuantBits {
    All(u8),
    PerType(BTreeMap<QuantType, u8>),
}

/// One dict of a `config_list`, as written (validated against a schema by
/// [`super::ConfigList::resolve`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConfigEntry {
    /// Op type names (`Conv2d`, ..., or `default`), kept as written until resolution.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_types: Option<Vec<String>>,
    /// Exact dotted layer names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_names: Option<Vec<String>>,
    /// NNI 2.x: substrings; a layer whose name contains one is selected (as if in
    /// `op_names`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op_partial_names: Option<Vec<String>>,
    /// `true`: the layers this dict selects are not compressed.
    #[serde(skip_serializing_if = "is_false")]
    pub exclude: bool,
    /// NNI 3.x: layer names this dict leaves out of its own selection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_op_names: Option<Vec<String>>,
    /// NNI 3.x: op types this dict leaves out of its own selection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_op_types: Option<Vec<String>>,
    /// NNI 3.x: what to compress in each selected layer (`weight`, `bias`, `_input_`,
    /// `_output_`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_names: Option<Vec<Target>>,
    /// Fraction of each layer's weights to prune (`sparsity_per_layer` and NNI 3.x's
    /// `sparse_ratio` are read as aliases).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparsity: Option<f64>,
    /// NNI 2.x/3.x: fraction of all the selected layers' weights to prune together
    /// (see [`super::global`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_sparsity: Option<f64>,
    /// NNI 2.x/3.x: cap on each layer's sparsity under `total_sparsity`
    /// (`max_sparse_ratio` is an alias).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_sparsity_per_layer: Option<MaxSparsity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant_types: Option<Vec<QuantType>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant_bits: Option<QuantBits>,
    /// NNI 2.x (`int`, `uint`) or 3.x (`int8`, `uint4`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quant_dtype: Option<QuantDtype>,
    /// Every other key; only those the algorithm's schema lists pass resolution.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The keys every algorithm accepts.
pub(crate) const COMMON_KEYS: [&str; 7] = [
    "op_types",
    "op_names",
    "op_partial_names",
    "exclude",
    "exclude_op_names",
    "exclude_op_types",
    "target_names",
];
/// Keys of pruning algorithms.
pub(crate) const PRUNING_KEYS: [&str; 6] = [
    "sparsity",
    "sparsity_per_layer",
    "sparse_ratio",
    "total_sparsity",
    "max_sparsity_per_layer",
    "max_sparse_ratio",
];
/// Keys of quantization algorithms.
pub(crate) const QUANTIZATION_KEYS: [&str; 3] = ["quant_types", "quant_bits", "quant_dtype"];

/// The spelling every alias is stored under.
fn canonical(key: &str) -> &str {
    match key {
        "sparsity_per_layer" | "sparse_ratio" => "sparsity",
        "max_sparse_ratio" => "max_sparsity_per_layer",
        k => k,
    }
}

/// Where a value sits, for error messages.
struct At<'a> {
    file: &'a str,
    index: usize,
}

impl At<'_> {
    fn invalid(&self, key: &str, expected: &'static str, found: &Raw) -> ConfigError {
        ConfigError::InvalidValue {
            file: self.file.to_string(),
            index: self.index,
            key: key.to_string(),
            expected,
            found: found.describe(),
        }
    }

    fn quant_type(&self, name: &str) -> Result<QuantType, ConfigError> {
        name.parse().map_err(|name| ConfigError::UnknownQuantType {
            file: self.file.to_string(),
            index: self.index,
            name,
        })
    }

    /// A non-empty list of strings.
    fn strings(
        &self,
        key: &str,
        expected: &'static str,
        raw: &Raw,
    ) -> Result<Vec<String>, ConfigError> {
        match raw {
            Raw::List(items) if !items.is_empty() => items
                .iter()
                .map(|item| match item {
                    Raw::Str(s) => Ok(s.clone()),
                    other => Err(self.invalid(key, expected, other)),
                })
                .collect(),
            other => Err(self.invalid(key, expected, other)),
        }
    }

    /// A number (ints are read as floats).
    fn number(&self, key: &str, expected: &'static str, raw: &Raw) -> Result<f64, ConfigError> {
        match raw {
            Raw::Float(f) => Ok(*f),
            Raw::Int(i) => Ok(*i as f64),
            other => Err(self.invalid(key, expected, other)),
        }
    }

    fn bits(&self, key: &str, raw: &Raw) -> Result<u8, ConfigError> {
        const EXPECTED: &str = "a bit width (an integer from 0 to 255)";
        match raw {
            Raw::Int(i) => u8::try_from(*i).map_err(|_| self.invalid(key, EXPECTED, raw)),
            other => Err(self.invalid(key, EXPECTED, other)),
        }
    }
}

impl ConfigEntry {
    /// Reads dict number `index` of a parsed document. Checks shapes and types only;
    /// what is valid for an algorithm is checked by [`super::ConfigList::resolve`].
    pub(crate) fn from_raw(raw: &Raw, file: &str, index: usize) -> Result<Self, ConfigError> {
        let at = At { file, index };
        let Raw::Map(pairs) = raw else {
            return Err(ConfigError::NotADict {
                file: file.to_string(),
                index,
                found: raw.describe(),
            });
        };

        let mut entry = ConfigEntry::default();
        // Canonical key -> spelling first seen, to catch duplicates and alias clashes.
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (key, value) in pairs {
            let canonical = canonical(key);
            if let Some(first) = seen.insert(canonical, key) {
                return Err(ConfigError::DuplicateKey {
                    file: file.to_string(),
                    index,
                    key: first.to_string(),
                    other: key.clone(),
                });
            }
            match canonical {
                "op_types" => {
                    entry.op_types =
                        Some(at.strings(key, "a non-empty list of op type names", value)?)
                }
                "op_names" => {
                    entry.op_names =
                        Some(at.strings(key, "a non-empty list of layer names", value)?)
                }
                "exclude" => match value {
                    Raw::Bool(b) => entry.exclude = *b,
                    other => return Err(at.invalid(key, "true or false", other)),
                },
                "op_partial_names" => {
                    entry.op_partial_names =
                        Some(at.strings(key, "a non-empty list of layer name parts", value)?)
                }
                "exclude_op_names" => {
                    entry.exclude_op_names =
                        Some(at.strings(key, "a non-empty list of layer names", value)?)
                }
                "exclude_op_types" => {
                    entry.exclude_op_types =
                        Some(at.strings(key, "a non-empty list of op type names", value)?)
                }
                "target_names" => {
                    const EXPECTED: &str =
                        "a non-empty list of targets (weight, bias, _input_, _output_)";
                    let mut targets = Vec::new();
                    for name in at.strings(key, EXPECTED, value)? {
                        let t = name.parse().map_err(|name| ConfigError::UnknownTarget {
                            file: file.to_string(),
                            index,
                            name,
                        })?;
                        if !targets.contains(&t) {
                            targets.push(t);
                        }
                    }
                    entry.target_names = Some(targets);
                }
                "sparsity" => entry.sparsity = Some(at.number(key, "a number in [0, 1)", value)?),
                "total_sparsity" => {
                    entry.total_sparsity = Some(at.number(key, "a number in [0, 1)", value)?)
                }
                "max_sparsity_per_layer" => {
                    const EXPECTED: &str =
                        "a number in (0, 1], or a map from layer name to such a number";
                    entry.max_sparsity_per_layer = Some(match value {
                        Raw::Map(pairs) => MaxSparsity::PerLayer(
                            pairs
                                .iter()
                                .map(|(name, v)| Ok((name.clone(), at.number(key, EXPECTED, v)?)))
                                .collect::<Result<_, ConfigError>>()?,
                        ),
                        other => MaxSparsity::All(at.number(key, EXPECTED, other)?),
                    })
                }
                "quant_dtype" => {
                    const EXPECTED: &str =
                        "int or uint (NNI 2.x), or int/uint with a width such as int8, uint8, int4 (NNI 3.x)";
                    entry.quant_dtype = Some(match value {
                        Raw::Str(s) => s.parse().map_err(|()| at.invalid(key, EXPECTED, value))?,
                        other => return Err(at.invalid(key, EXPECTED, other)),
                    })
                }
                "quant_types" => {
                    const EXPECTED: &str =
                        "a non-empty list of quant types (weight, input, output)";
                    let names = at.strings(key, EXPECTED, value)?;
                    let mut types = Vec::with_capacity(names.len());
                    for name in &names {
                        let t = at.quant_type(name)?;
                        if !types.contains(&t) {
                            types.push(t);
                        }
                    }
                    entry.quant_types = Some(types);
                }
                "quant_bits" => {
                    entry.quant_bits = Some(match value {
                        Raw::Map(per_type) => {
                            let mut map = BTreeMap::new();
                            for (name, bits) in per_type {
                                let t = at.quant_type(name)?;
                                if map.insert(t, at.bits(key, bits)?).is_some() {
                                    return Err(ConfigError::DuplicateKey {
                                        file: file.to_string(),
                                        index,
                                        key: format!("quant_bits.{t}"),
                                        other: format!("quant_bits.{t}"),
                                    });
                                }
                            }
                            QuantBits::PerType(map)
                        }
                        other => QuantBits::All(at.bits(key, other)?),
                    })
                }
                _ => {
                    let json = value.to_json().ok_or_else(|| {
                        at.invalid(
                            key,
                            "representable as JSON (finite numbers, 64-bit integers)",
                            value,
                        )
                    })?;
                    entry.extra.insert(key.clone(), json);
                }
            }
        }
        Ok(entry)
    }
}
