//! Matching a `config_list` against a model's layers: which dict wins for each layer.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::nn::OpType;

use super::{
    ConfigEntry, ConfigError, ConfigList, MaxSparsity, QuantBits, QuantType, Schema, SchemaKind,
    Target,
};

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
    /// Pruning schemas: the dict's sparsity, in [0, 1). `None` for quantization, and
    /// for a `total_sparsity` dict until [`ConfigList::allocate_global`] fills it.
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
    /// `op_partial_names`: selected when the name contains one of them.
    partial_names: &'a [String],
    exclude_names: HashSet<&'a str>,
    exclude_types: BTreeSet<OpType>,
    quant_bits: BTreeMap<QuantType, u8>,
}

impl Compiled<'_> {
    fn matches(&self, layer: &LayerInfo) -> bool {
        let name = layer.name.as_str();
        // op_names and op_partial_names add up (NNI appends the partial matches to
        // op_names); op_types narrows; the exclude_* keys remove.
        let by_name = match (&self.op_names, self.partial_names.is_empty()) {
            (None, true) => true,
            (names, _) => {
                names.as_ref().is_some_and(|n| n.contains(name))
                    || self.partial_names.iter().any(|p| name.contains(p.as_str()))
            }
        };
        by_name
            && self
                .op_types
                .as_ref()
                .is_none_or(|t| t.contains(&layer.op_type))
            && !self.exclude_names.contains(name)
            && !self.exclude_types.contains(&layer.op_type)
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
                ("quant_dtype", entry.quant_dtype.is_some()),
            ],
            SchemaKind::Quantization => &[
                ("sparsity", entry.sparsity.is_some()),
                ("total_sparsity", entry.total_sparsity.is_some()),
                (
                    "max_sparsity_per_layer",
                    entry.max_sparsity_per_layer.is_some(),
                ),
            ],
        };
        if let Some((key, _)) = kind_keys.iter().find(|(_, present)| *present) {
            return Err(unknown(key));
        }
        if let Some(key) = entry.extra.keys().find(|k| !valid.contains(&k.as_str())) {
            return Err(unknown(key));
        }

        if entry.op_types.is_none() && entry.op_names.is_none() && entry.op_partial_names.is_none()
        {
            return Err(ConfigError::NoTarget {
                file: file(),
                index,
            });
        }

        let unknown_type = |name: &String| ConfigError::UnknownOpType {
            file: file(),
            index,
            name: name.clone(),
            valid: std::iter::once("default".to_string())
                .chain(OpType::ALL.iter().map(|t| t.to_string()))
                .collect(),
        };
        let op_types = match &entry.op_types {
            None => None,
            Some(written) => {
                let mut set = BTreeSet::new();
                for name in written {
                    if name == "default" {
                        set.extend(schema.default_op_types.iter().copied());
                        continue;
                    }
                    let t: OpType = name.parse().map_err(|_| unknown_type(name))?;
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

        // A name that is no layer (or a part in no layer's name) is a typo that would
        // silently compress, or fail to exclude, the wrong layers.
        let unknown_name = |name: &String| ConfigError::UnknownOpName {
            file: file(),
            index,
            name: name.clone(),
            available: suggest_names(name, layers),
            total: layers.len(),
        };
        let known =
            |written: &'a Option<Vec<String>>| -> Result<Option<HashSet<&'a str>>, ConfigError> {
                let Some(written) = written else {
                    return Ok(None);
                };
                if let Some(name) = written.iter().find(|n| !names.contains(n.as_str())) {
                    return Err(unknown_name(name));
                }
                Ok(Some(written.iter().map(String::as_str).collect()))
            };
        let op_names = known(&entry.op_names)?;
        let exclude_names = known(&entry.exclude_op_names)?.unwrap_or_default();
        let partial_names = entry.op_partial_names.as_deref().unwrap_or(&[]);
        if let Some(part) = partial_names
            .iter()
            .find(|p| !layers.iter().any(|l| l.name.contains(p.as_str())))
        {
            return Err(unknown_name(part));
        }
        let exclude_types = entry
            .exclude_op_types
            .iter()
            .flatten()
            .map(|name| name.parse::<OpType>().map_err(|_| unknown_type(name)))
            .collect::<Result<BTreeSet<_>, _>>()?;
        self.check_targets(index, entry, schema)?;

        let mut quant_bits = BTreeMap::new();
        // An exclude dict's compression settings are never used, so not checked.
        if !entry.exclude {
            match schema.kind {
                SchemaKind::Pruning => match entry.sparsity {
                    _ if entry.total_sparsity.is_some()
                        || entry.max_sparsity_per_layer.is_some() =>
                    {
                        self.check_total_sparsity(index, entry, schema, names)?
                    }
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
            partial_names,
            exclude_names,
            exclude_types,
            quant_bits,
        })
    }

    /// `target_names` must name what the algorithm compresses: weights (and the biases
    /// pruned with them) for a pruner, weights, inputs and outputs for a quantizer.
    fn check_targets(
        &self,
        index: usize,
        entry: &ConfigEntry,
        schema: &Schema,
    ) -> Result<(), ConfigError> {
        let allowed: &[Target] = match schema.kind {
            SchemaKind::Pruning => &[Target::Weight, Target::Bias],
            SchemaKind::Quantization => &[Target::Weight, Target::Input, Target::Output],
        };
        match entry
            .target_names
            .iter()
            .flatten()
            .find(|t| !allowed.contains(t))
        {
            Some(&target) => Err(ConfigError::UnsupportedTarget {
                file: self.source.clone(),
                index,
                algorithm: schema.algorithm,
                target,
                allowed: allowed.to_vec(),
            }),
            None => Ok(()),
        }
    }

    /// `total_sparsity` and `max_sparsity_per_layer`: one way of giving the sparsity,
    /// in range, for a pruner that ranks weights across layers.
    fn check_total_sparsity(
        &self,
        index: usize,
        entry: &ConfigEntry,
        schema: &Schema,
        names: &HashSet<&str>,
    ) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            file: self.source.clone(),
            index,
            key: key.to_string(),
            message,
        };
        let Some(total) = entry.total_sparsity else {
            return Err(invalid(
                "max_sparsity_per_layer",
                "only caps layers under `total_sparsity`; give total_sparsity, or lower \
                 `sparsity` itself"
                    .into(),
            ));
        };
        if entry.sparsity.is_some() {
            return Err(invalid(
                "total_sparsity",
                "and `sparsity` (or sparsity_per_layer / sparse_ratio) in one dict: give \
                 one sparsity per layer or one for all the selected layers together, not both"
                    .into(),
            ));
        }
        if !schema.global_sparsity {
            return Err(invalid(
                "total_sparsity",
                format!(
                    "{} does not rank weights across layers; use `sparsity` (each layer \
                     pruned alone), or LevelPruner",
                    schema.algorithm
                ),
            ));
        }
        if !(0.0..1.0).contains(&total) {
            return Err(invalid(
                "total_sparsity",
                format!("{total} is outside [0, 1)"),
            ));
        }
        let caps: Vec<(Option<&str>, f64)> = match &entry.max_sparsity_per_layer {
            None => Vec::new(),
            Some(MaxSparsity::All(v)) => vec![(None, *v)],
            Some(MaxSparsity::PerLayer(map)) => {
                map.iter().map(|(k, v)| (Some(k.as_str()), *v)).collect()
            }
        };
        for (layer, cap) in caps {
            if let Some(name) = layer.filter(|n| !names.contains(n)) {
                return Err(invalid(
                    "max_sparsity_per_layer",
                    format!("names `{name}`, which is no layer of the model"),
                ));
            }
            if !(cap > 0.0 && cap <= 1.0) {
                return Err(invalid(
                    "max_sparsity_per_layer",
                    format!("{cap} is outside (0, 1]"),
                ));
            }
        }
        Ok(())
    }

    /// The bit width of every quant type a quantization dict lists.
    fn quant_bits(
        &self,
        index: usize,
        entry: &ConfigEntry,
        schema: &Schema,
    ) -> Result<BTreeMap<QuantType, u8>, ConfigError> {
        let file = || self.source.clone();
        let conflict = |key: &str, message: &str| ConfigError::Invalid {
            file: file(),
            index,
            key: key.to_string(),
            message: message.to_string(),
        };
        // What to quantize: v1/2's quant_types, or 3.x's target_names; a 3.x dict with
        // neither quantizes what NNI 3.x's default setting does: input, weight, output.
        let from_targets: Option<Vec<QuantType>> = entry
            .target_names
            .as_ref()
            .map(|t| t.iter().filter_map(|t| t.quant_type()).collect());
        let dtype_bits = entry.quant_dtype.and_then(|d| d.bits);
        let quant_types = match (&entry.quant_types, &from_targets) {
            (Some(_), Some(_)) => {
                return Err(conflict(
                    "target_names",
                    "and `quant_types` in one dict: NNI 3.x's target_names replace v1/v2's \
                     quant_types; give one of them",
                ))
            }
            (Some(types), None) | (None, Some(types)) if !types.is_empty() => types.clone(),
            (None, None) if dtype_bits.is_some() => {
                vec![QuantType::Input, QuantType::Weight, QuantType::Output]
            }
            _ => {
                return Err(ConfigError::MissingQuantTypes {
                    file: file(),
                    index,
                    algorithm: schema.algorithm,
                })
            }
        };
        let quant_types = &quant_types;
        if dtype_bits.is_some() && entry.quant_bits.is_some() {
            return Err(conflict(
                "quant_dtype",
                "gives a bit width and so does `quant_bits`: NNI 3.x's quant_dtype (int8, \
                 uint4, ...) replaces quant_bits; write `int`/`uint` to keep quant_bits' widths",
            ));
        }
        let mut resolved = BTreeMap::new();
        match &entry.quant_bits {
            None if dtype_bits.is_some() => {
                resolved.extend(quant_types.iter().map(|&t| (t, dtype_bits.unwrap_or(8))));
            }
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
