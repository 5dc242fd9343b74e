//! Matching a `config_list` against a model's layers: which dict wins for each layer.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::nn::OpType;

use super::{ConfigEntry, ConfigError, ConfigList, QuantBits, QuantType, Schema, SchemaKind};

/// One layer of the model, as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The dotted layer name, e.g. `features.conv1`.
    pub name: String,
    pub op_type: OpType,
}

impl LayerInfo {
    pub fn new(name: impl Into<String>, op_type: OpType) -> Self {
        LayerInfo {
            name: name.into(),
            op_type,
        }
    }
}

/// What one compressed layer gets: the settings of the last dict that matched it.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerConfig {
    pub name: String,
    pub op_type: OpType,
    /// Position of the winning dict in the `config_list`.
    pub index: usize,
    /// Pruning schemas: the dict's sparsity, in [0, 1). `None` for quantization.
    pub sparsity: Option<f64>,
    /// Quantization schemas: bit width per quant type listed in the dict's
    /// `quant_types`. Empty for pruning.
    pub quant_bits: BTreeMap<QuantType, u8>,
    /// The dict's algorithm-specific keys.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl LayerConfig {
    /// The bit width for `t`, if this layer quantizes `t`.
    pub fn bits(&self, t: QuantType) -> Option<u8> {
        self.quant_bits.get(&t).copied()
    }

    /// Whether this layer quantizes `t`.
    pub fn quantizes(&self, t: QuantType) -> bool {
        self.quant_bits.contains_key(&t)
    }
}

/// A validated dict, ready to match layers.
struct Compiled<'a> {
    entry: &'a ConfigEntry,
    /// `None`: any type (the dict selects by name only).
    op_types: Option<BTreeSet<OpType>>,
    op_names: Option<HashSet<&'a str>>,
    quant_bits: BTreeMap<QuantType, u8>,
}

impl Compiled<'_> {
    fn matches(&self, layer: &LayerInfo) -> bool {
        self.op_types
            .as_ref()
            .is_none_or(|t| t.contains(&layer.op_type))
            && self
                .op_names
                .as_ref()
                .is_none_or(|n| n.contains(layer.name.as_str()))
    }
}

/// How many names an unknown-op-name error lists when the model is large.
const MAX_LISTED_NAMES: usize = 20;
const CLOSEST_NAMES: usize = 8;

impl ConfigList {
    /// Validates every dict against `schema` and gives each layer to be compressed its
    /// settings, in the order of `layers`. Layers no dict selects, and layers whose
    /// last matching dict has `exclude: true`, are left out.
    pub fn resolve(
        &self,
        layers: &[LayerInfo],
        schema: &Schema,
    ) -> Result<Vec<LayerConfig>, ConfigError> {
        if self.entries.is_empty() {
            return Err(ConfigError::Empty {
                file: self.source.clone(),
            });
        }
        let names: HashSet<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        let compiled = self
            .entries
            .iter()
            .enumerate()
            .map(|(index, entry)| self.compile(index, entry, schema, layers, &names))
            .collect::<Result<Vec<_>, _>>()?;

        let mut out = Vec::new();
        for layer in layers {
            let Some((index, dict)) = compiled
                .iter()
                .enumerate()
                .rev()
                .find(|(_, c)| c.matches(layer))
            else {
                continue;
            };
            if dict.entry.exclude {
                continue;
            }
            if !schema.supported_op_types.contains(&layer.op_type) {
                // Only a name-only dict can get here: op_types were checked in compile.
                return Err(ConfigError::UnsupportedLayer {
                    file: self.source.clone(),
                    index,
                    algorithm: schema.algorithm,
                    name: layer.name.clone(),
                    op_type: layer.op_type.to_string(),
                    supported: op_type_names(&schema.supported_op_types),
                });
            }
            out.push(LayerConfig {
                name: layer.name.clone(),
                op_type: layer.op_type,
                index,
                sparsity: dict.entry.sparsity,
                quant_bits: dict.quant_bits.clone(),
                extra: dict.entry.extra.clone(),
            });
        }
        Ok(out)
    }

    fn compile<'a>(
        &self,
        index: usize,
        entry: &'a ConfigEntry,
        schema: &Schema,
        layers: &[LayerInfo],
        names: &HashSet<&str>,
    ) -> Result<Compiled<'a>, ConfigError> {
        let file = || self.source.clone();

        // Keys: the parser accepts any key; here they must suit the algorithm.
        let valid = schema.valid_keys();
        let unknown = |key: &str| ConfigError::UnknownKey {
            file: file(),
            index,
            key: key.to_string(),
            algorithm: schema.algorithm,
            valid: valid.iter().map(|k| k.to_string()).collect(),
        };
        let kind_keys: &[(&str, bool)] = match schema.kind {
            SchemaKind::Pruning => &[
                ("quant_types", entry.quant_types.is_some()),
                ("quant_bits", entry.quant_bits.is_some()),
            ],
            SchemaKind::Quantization => &[("sparsity", entry.sparsity.is_some())],
        };
        if let Some((key, _)) = kind_keys.iter().find(|(_, present)| *present) {
            return Err(unknown(key));
        }
        if let Some(key) = entry.extra.keys().find(|k| !valid.contains(&k.as_str())) {
            return Err(unknown(key));
        }

        if entry.op_types.is_none() && entry.op_names.is_none() {
            return Err(ConfigError::NoTarget {
                file: file(),
                index,
            });
        }

        let op_types = match &entry.op_types {
            None => None,
            Some(written) => {
                let mut set = BTreeSet::new();
                for name in written {
                    if name == "default" {
                        set.extend(schema.default_op_types.iter().copied());
                        continue;
                    }
                    let t: OpType = name.parse().map_err(|_| ConfigError::UnknownOpType {
                        file: file(),
                        index,
                        name: name.clone(),
                        valid: std::iter::once("default".to_string())
                            .chain(OpType::ALL.iter().map(|t| t.to_string()))
                            .collect(),
                    })?;
                    // Excluding a type the algorithm never touches is harmless.
                    if !entry.exclude && !schema.supported_op_types.contains(&t) {
                        return Err(ConfigError::UnsupportedOpType {
                            file: file(),
                            index,
                            algorithm: schema.algorithm,
                            op_type: name.clone(),
                            supported: op_type_names(&schema.supported_op_types),
                        });
                    }
                    set.insert(t);
                }
                Some(set)
            }
        };

        let op_names = match &entry.op_names {
            None => None,
            Some(written) => {
                if let Some(name) = written.iter().find(|n| !names.contains(n.as_str())) {
                    return Err(ConfigError::UnknownOpName {
                        file: file(),
                        index,
                        name: name.clone(),
                        available: suggest_names(name, layers),
                        total: layers.len(),
                    });
                }
                Some(written.iter().map(String::as_str).collect())
            }
        };

        let mut quant_bits = BTreeMap::new();
        // An exclude dict's compression settings are never used, so not checked.
        if !entry.exclude {
            match schema.kind {
                SchemaKind::Pruning => match entry.sparsity {
                    None if !schema.sparsity_required => {}
                    None => {
                        return Err(ConfigError::MissingSparsity {
                            file: file(),
                            index,
                            algorithm: schema.algorithm,
                        })
                    }
                    Some(value) if !(0.0..1.0).contains(&value) => {
                        return Err(ConfigError::SparsityOutOfRange {
                            file: file(),
                            index,
                            value,
                        })
                    }
                    Some(_) => {}
                },
                SchemaKind::Quantization => {
                    quant_bits = self.quant_bits(index, entry, schema)?;
                }
            }
        }

        Ok(Compiled {
            entry,
            op_types,
            op_names,
            quant_bits,
        })
    }

    /// The bit width of every quant type a quantization dict lists.
    fn quant_bits(
        &self,
        index: usize,
        entry: &ConfigEntry,
        schema: &Schema,
    ) -> Result<BTreeMap<QuantType, u8>, ConfigError> {
        let file = || self.source.clone();
        let quant_types = match &entry.quant_types {
            Some(types) if !types.is_empty() => types,
            _ => {
                return Err(ConfigError::MissingQuantTypes {
                    file: file(),
                    index,
                    algorithm: schema.algorithm,
                })
            }
        };
        let mut resolved = BTreeMap::new();
        match &entry.quant_bits {
            None => {
                return Err(ConfigError::MissingQuantBits {
                    file: file(),
                    index,
                    quant_type: None,
                })
            }
            Some(QuantBits::All(bits)) => {
                resolved.extend(quant_types.iter().map(|&t| (t, *bits)));
            }
            Some(QuantBits::PerType(map)) => {
                if let Some(&t) = map.keys().find(|t| !quant_types.contains(t)) {
                    return Err(ConfigError::QuantBitsNotInQuantTypes {
                        file: file(),
                        index,
                        quant_type: t,
                        quant_types: quant_types.clone(),
                    });
                }
                for &t in quant_types {
                    let bits = map.get(&t).ok_or_else(|| ConfigError::MissingQuantBits {
                        file: file(),
                        index,
                        quant_type: Some(t),
                    })?;
                    resolved.insert(t, *bits);
                }
            }
        }
        if let Some((&quant_type, &bits)) = resolved.iter().find(|(_, b)| !schema.bits.contains(b))
        {
            return Err(ConfigError::BitsOutOfRange {
                file: file(),
                index,
                algorithm: schema.algorithm,
                quant_type,
                bits,
                range: schema.bits.clone(),
            });
        }
        Ok(resolved)
    }
}

fn op_type_names(types: &[OpType]) -> Vec<String> {
    types.iter().map(|t| t.to_string()).collect()
}

/// All layer names for a small model; for a large one, those closest to `wanted`.
fn suggest_names(wanted: &str, layers: &[LayerInfo]) -> Vec<String> {
    if layers.len() <= MAX_LISTED_NAMES {
        return layers.iter().map(|l| l.name.clone()).collect();
    }
    let mut ranked: Vec<(usize, usize)> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (edit_distance(wanted, &l.name), i))
        .collect();
    ranked.sort_unstable();
    ranked
        .iter()
        .take(CLOSEST_NAMES)
        .map(|&(_, i)| layers[i].name.clone())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}
