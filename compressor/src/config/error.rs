//! Everything that can be wrong with a `config_list`, each naming its source and dict.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::{QuantType, Target};

/// An error reading or resolving a `config_list`.
///
/// `file` is the config's source (its path, or `<inline>` for a string) and `index` the
/// position of the offending dict in the list (0-based, printed as `config_list[index]`).
/// Lists of valid choices are kept as data so callers and tests can inspect them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {}: {err}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },

    #[error(
        "config file {}: unsupported extension {}; use one of .json, .toml, .yaml, .yml",
        .path.display(),
        .extension.as_deref().map_or("(none)".to_string(), |e| format!("`.{e}`"))
    )]
    UnsupportedExtension {
        path: PathBuf,
        extension: Option<String>,
    },

    #[error("{file}: invalid {format}: {message}")]
    Parse {
        file: String,
        format: &'static str,
        message: String,
    },

    #[error(
        "{file}: expected a list of dicts, or a map with a `config_list` list \
         (in TOML: `[[config_list]]` tables), found {found}"
    )]
    NotAList { file: String, found: String },

    #[error(
        "{file}: no `config_list` key (in TOML, write the dicts as `[[config_list]]` tables); \
         found keys: {}", list(.keys)
    )]
    MissingConfigList { file: String, keys: Vec<String> },

    /// An algorithm's own check of a dict (a schedule, a layer it cannot prune).
    #[error("{file}: config_list[{index}]: {algorithm}: {message}")]
    Rejected {
        file: String,
        index: usize,
        algorithm: &'static str,
        message: String,
    },

    #[error("{file}: the config list is empty; give at least one dict")]
    Empty { file: String },

    #[error("{file}: config_list[{index}]: expected a dict, found {found}")]
    NotADict {
        file: String,
        index: usize,
        found: String,
    },

    #[error("{file}: config_list[{index}]: `{key}` must be {expected}, found {found}")]
    InvalidValue {
        file: String,
        index: usize,
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("{file}: config_list[{index}]: `{key}` is given more than once{}",
        if .key == .other { String::new() } else { format!(" (as `{}` and `{}`)", .key, .other) })]
    DuplicateKey {
        file: String,
        index: usize,
        key: String,
        /// The other spelling (`sparsity_per_layer` for `sparsity`), or `key` itself.
        other: String,
    },

    #[error("{file}: config_list[{index}]: unknown key `{key}` for {algorithm}; valid keys: {}", list(.valid))]
    UnknownKey {
        file: String,
        index: usize,
        key: String,
        algorithm: &'static str,
        valid: Vec<String>,
    },

    #[error("{file}: config_list[{index}]: a dict needs `op_types`, `op_names` or `op_partial_names` to select layers")]
    NoTarget { file: String, index: usize },

    #[error("{file}: config_list[{index}]: unknown op type `{name}`; valid op types: {}", list(.valid))]
    UnknownOpType {
        file: String,
        index: usize,
        name: String,
        valid: Vec<String>,
    },

    #[error(
        "{file}: config_list[{index}]: {algorithm} does not support op type `{op_type}`; \
         supported: {}", list(.supported)
    )]
    UnsupportedOpType {
        file: String,
        index: usize,
        algorithm: &'static str,
        op_type: String,
        supported: Vec<String>,
    },

    #[error(
        "{file}: config_list[{index}]: layer `{name}` selected by op_names is a {op_type}, \
         which {algorithm} does not support; supported: {}", list(.supported)
    )]
    UnsupportedLayer {
        file: String,
        index: usize,
        algorithm: &'static str,
        name: String,
        op_type: String,
        supported: Vec<String>,
    },

    #[error(
        "{file}: config_list[{index}]: op name `{name}` matches no layer; {}",
        available_names(.available, *.total)
    )]
    UnknownOpName {
        file: String,
        index: usize,
        name: String,
        /// All layer names when there are at most 20, else the closest few.
        available: Vec<String>,
        /// How many layers the model has.
        total: usize,
    },

    #[error("{file}: config_list[{index}]: {algorithm} needs `sparsity` (a number in [0, 1)) in every dict that is not `exclude: true`")]
    MissingSparsity {
        file: String,
        index: usize,
        algorithm: &'static str,
    },

    #[error("{file}: config_list[{index}]: sparsity {value} is outside [0, 1)")]
    SparsityOutOfRange {
        file: String,
        index: usize,
        value: f64,
    },

    #[error(
        "{file}: config_list[{index}]: {algorithm} needs `quant_types` (a list of weight, input, output), \
         `target_names` (weight, _input_, _output_) or a `quant_dtype` with a width (int8, ...) \
         in every dict that is not `exclude: true`"
    )]
    MissingQuantTypes {
        file: String,
        index: usize,
        algorithm: &'static str,
    },

    #[error("{file}: config_list[{index}]: {}", match .quant_type {
        None => "`quant_bits` is missing (an integer, or a map from quant type to integer)".to_string(),
        Some(t) => format!("`quant_bits` gives no bit width for `{t}`, which is in quant_types"),
    })]
    MissingQuantBits {
        file: String,
        index: usize,
        /// `None`: no `quant_bits` at all; `Some(t)`: the per-type map lacks `t`.
        quant_type: Option<QuantType>,
    },

    #[error(
        "{file}: config_list[{index}]: {bits} bits for `{quant_type}` is outside the range {algorithm} supports: {}..={}",
        .range.start(), .range.end()
    )]
    BitsOutOfRange {
        file: String,
        index: usize,
        algorithm: &'static str,
        quant_type: QuantType,
        bits: u8,
        range: RangeInclusive<u8>,
    },

    #[error(
        "{file}: config_list[{index}]: `quant_bits` names `{quant_type}`, which is not in quant_types [{}]",
        list(.quant_types)
    )]
    QuantBitsNotInQuantTypes {
        file: String,
        index: usize,
        quant_type: QuantType,
        quant_types: Vec<QuantType>,
    },

    #[error(
        "{file}: config_list[{index}]: unknown quant type `{name}`; valid: weight, input, output"
    )]
    UnknownQuantType {
        file: String,
        index: usize,
        name: String,
    },

    #[error(
        "{file}: config_list[{index}]: unknown target `{name}` in target_names; valid: weight, bias, _input_, _output_"
    )]
    UnknownTarget {
        file: String,
        index: usize,
        name: String,
    },

    #[error(
        "{file}: config_list[{index}]: {algorithm} cannot compress target `{target}`; it compresses: {}",
        list(.allowed)
    )]
    UnsupportedTarget {
        file: String,
        index: usize,
        algorithm: &'static str,
        target: Target,
        allowed: Vec<Target>,
    },

    /// A key whose value, or whose combination with another key, is wrong.
    #[error("{file}: config_list[{index}]: `{key}` {message}")]
    Invalid {
        file: String,
        index: usize,
        key: String,
        message: String,
    },

    #[error(
        "{file}: config_list[{index}]: total_sparsity {total} asks for {want} of the selected layers' \
         {weights} weights, but max_sparsity_per_layer lets them give only {reachable}"
    )]
    GlobalSparsityUnreachable {
        file: String,
        index: usize,
        total: f64,
        want: usize,
        reachable: usize,
        weights: usize,
    },
}

/// `a, b, c` for messages.
fn list<T: std::fmt::Display>(items: &[T]) -> String {
    let parts: Vec<String> = items.iter().map(ToString::to_string).collect();
    parts.join(", ")
}

fn available_names(available: &[String], total: usize) -> String {
    if total == 0 {
        "the model has no layers".to_string()
    } else if available.len() == total {
        format!("available layers: {}", list(available))
    } else {
        format!("closest of the {total} layers: {}", list(available))
    }
}
