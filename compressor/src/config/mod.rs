//! NNI's `config_list`: which layers to compress, and how.
//!
//! A config list is a list of dicts. Each dict selects layers and says what to do
//! with them:
//!
//! | key | meaning |
//! |-----|---------|
//! | `op_types` | op type names (`Conv2d`, `Linear`, `BatchNorm2d`, ... see [`OpType`](crate::nn::OpType)); `default` stands for the algorithm's default types |
//! | `op_names` | exact dotted layer names, e.g. `features.conv1` |
//! | `op_partial_names` | NNI 2.x: a layer whose name contains one of these is selected too |
//! | `exclude` | `true`: the selected layers are not compressed |
//! | `exclude_op_names`, `exclude_op_types` | NNI 3.x: removed from this dict's selection |
//! | `target_names` | NNI 3.x: `weight`, `bias` (pruning), `_input_`, `_output_` (quantization) |
//! | `sparsity` | pruners: fraction of each layer's weights to prune, in [0, 1); `sparsity_per_layer` (2.x) and `sparse_ratio` (3.x) are aliases |
//! | `total_sparsity` | pruners that rank across layers: one fraction for all the dict's layers together ([`global`]); `max_sparsity_per_layer` / `max_sparse_ratio` caps each layer |
//! | `quant_types` | quantizers: any of `weight`, `input`, `output` |
//! | `quant_bits` | quantizers: an integer for every listed quant type, or a map such as `{weight: 4, output: 8}` |
//! | `quant_dtype` | quantizers: `int`/`uint` (2.x, width from `quant_bits`) or `int8`, `uint4`, ... (3.x) ([`QuantDtype`]) |
//! | others | only the keys the algorithm's [`Schema`] lists (e.g. `quant_start_step`), kept as JSON |
//!
//! Which NNI generation each key comes from, and what sprig does not read, is tabled in
//! `docs/CONFIG_KEYS.md`.
//!
//! **Matching.** A dict needs `op_types`, `op_names` or `op_partial_names`. It matches a
//! layer when the layer's type is in `op_types` (if given) *and* its name is in
//! `op_names` or contains one of `op_partial_names` (if either is given), *and* neither
//! `exclude_op_names` nor `exclude_op_types` names it. For each layer the **last** matching dict wins entirely: fields are not
//! merged across dicts. If the winning dict has `exclude: true`, or no dict matches,
//! the layer is not compressed; a later non-exclude dict re-includes a layer an
//! earlier exclude removed. [`ConfigList::resolve`] returns the compressed layers in
//! the model's order.
//!
//! **Validation** happens in [`ConfigList::resolve`] against the algorithm's
//! [`Schema`]; every [`ConfigError`] names the source and the dict (`config_list[i]`,
//! 0-based) and lists the valid choices. Keys must suit the algorithm (`sparsity` is
//! unknown to a quantizer, `quant_*` to a pruner); op types must be known and, in
//! non-exclude dicts, supported; every op name must be a layer of the model (a typo
//! would otherwise silently compress, or fail to exclude, the wrong layers). The
//! compression settings of an exclude dict are ignored and not checked.
//!
//! **Files.** [`ConfigList::from_path`] picks the format by extension: `.json`,
//! `.toml`, `.yaml` / `.yml`. JSON and YAML documents are the list itself, or a map
//! with a `config_list` key holding it (other top-level keys are ignored, so a config
//! list can live in a larger experiment file). TOML cannot have a top-level array, so
//! a TOML config list is written as `[[config_list]]` tables:
//!
//! ```toml
//! [[config_list]]
//! op_types = ["default"]
//! sparsity = 0.5
//!
//! [[config_list]]
//! op_names = ["classifier"]
//! exclude = true
//! ```
//!
//! ```
//! use sprig_compressor::config::{ConfigList, LayerInfo, Schema};
//! use sprig_compressor::nn::OpType;
//!
//! let config = ConfigList::from_json_str(r#"[
//!     {"op_types": ["default"], "sparsity": 0.5},
//!     {"op_names": ["fc"], "sparsity": 0.8}
//! ]"#)?;
//! let layers = [LayerInfo::new("conv1", OpType::Conv2d), LayerInfo::new("fc", OpType::Linear)];
//! let schema = Schema::pruning("LevelPruner", [OpType::Conv2d, OpType::Linear]);
//! let resolved = config.resolve(&layers, &schema)?;
//! assert_eq!(resolved[0].sparsity, Some(0.5));
//! assert_eq!(resolved[1].sparsity, Some(0.8));
//! # Ok::<(), sprig_compressor::config::ConfigError>(())
//! ```

mod entry;
mod error;
pub mod global;
mod raw;
mod resolve;
mod schema;
mod targets;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use self::entry::{ConfigEntry, QuantBits, QuantType};
pub use self::error::ConfigError;
pub use self::global::MaxSparsity;
pub use self::resolve::{LayerConfig, LayerInfo};
pub use self::schema::{Schema, SchemaKind};
pub use self::targets::{QuantDtype, Target};

use self::raw::Raw;

/// The `source` of a config list built from a string or from entries.
const INLINE: &str = "<inline>";

/// A parsed `config_list`: its dicts, in order, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigList {
    pub entries: Vec<ConfigEntry>,
    /// The file path, or `<inline>`; named in every error.
    pub source: String,
}

/// The formats a config list can be written in.
#[derive(Debug, Clone, Copy)]
enum Format {
    Json,
    Toml,
    Yaml,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Json => "JSON",
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
        }
    }

    fn parse(self, text: &str) -> Result<Raw, String> {
        match self {
            Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
            Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
            Format::Yaml => serde_yaml::from_str(text).map_err(|e| e.to_string()),
        }
    }
}

impl ConfigList {
    /// Reads a config list from a `.json`, `.toml`, `.yaml` or `.yml` file.
    pub fn from_path(path: &Path) -> Result<Self, ConfigError> {
        let extension = path.extension().map(|e| e.to_string_lossy().into_owned());
        let format = match extension.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("json") => Format::Json,
            Some("toml") => Format::Toml,
            Some("yaml" | "yml") => Format::Yaml,
            _ => {
                return Err(ConfigError::UnsupportedExtension {
                    path: path.to_path_buf(),
                    extension,
                })
            }
        };
        let text = std::fs::read_to_string(path).map_err(|err| ConfigError::Io {
            path: path.to_path_buf(),
            err,
        })?;
        Self::parse(&text, format, path.display().to_string())
    }

    /// Parses a JSON config list (a list, or `{"config_list": [...]}`).
    pub fn from_json_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s, Format::Json, INLINE.to_string())
    }

    /// Parses a TOML config list written as `[[config_list]]` tables.
    pub fn from_toml_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s, Format::Toml, INLINE.to_string())
    }

    /// Parses a YAML config list (a list, or a map with a `config_list` key).
    pub fn from_yaml_str(s: &str) -> Result<Self, ConfigError> {
        Self::parse(s, Format::Yaml, INLINE.to_string())
    }

    /// Wraps dicts built in code; they are validated by [`resolve`](Self::resolve).
    pub fn from_entries(entries: Vec<ConfigEntry>) -> Self {
        ConfigList {
            entries,
            source: INLINE.to_string(),
        }
    }

    fn parse(text: &str, format: Format, source: String) -> Result<Self, ConfigError> {
        let doc = format.parse(text).map_err(|message| ConfigError::Parse {
            file: source.clone(),
            format: format.name(),
            message,
        })?;
        let items = match doc {
            Raw::List(items) => items,
            // An empty YAML document.
            Raw::Null => Vec::new(),
            Raw::Map(mut pairs) => match pairs.iter().rposition(|(k, _)| k == "config_list") {
                Some(pos) => match pairs.swap_remove(pos).1 {
                    Raw::List(items) => items,
                    other => {
                        return Err(ConfigError::NotAList {
                            file: source,
                            found: format!("`config_list` holding {}", other.describe()),
                        })
                    }
                },
                // An empty TOML document.
                None if pairs.is_empty() => Vec::new(),
                None => {
                    return Err(ConfigError::MissingConfigList {
                        file: source,
                        keys: pairs.into_iter().map(|(k, _)| k).collect(),
                    })
                }
            },
            other => {
                return Err(ConfigError::NotAList {
                    file: source,
                    found: other.describe(),
                })
            }
        };
        if items.is_empty() {
            return Err(ConfigError::Empty { file: source });
        }
        let entries = items
            .iter()
            .enumerate()
            .map(|(index, item)| ConfigEntry::from_raw(item, &source, index))
            .collect::<Result<_, _>>()?;
        Ok(ConfigList { entries, source })
    }
}
