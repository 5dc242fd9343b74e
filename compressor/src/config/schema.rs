//! What an algorithm accepts in its `config_list`.

use std::ops::RangeInclusive;

use crate::nn::OpType;

use super::entry::{COMMON_KEYS, PRUNING_KEYS, QUANTIZATION_KEYS};

/// Whether an algorithm prunes (needs `sparsity`) or quantizes (needs `quant_types`
/// and `quant_bits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    Pruning,
    Quantization,
}

/// The `config_list` rules of one algorithm, given by the pruner or quantizer.
///
/// ```
/// use sprig_compressor::config::Schema;
/// use sprig_compressor::nn::OpType;
///
/// let level = Schema::pruning("LevelPruner", [OpType::Conv2d, OpType::Linear]);
/// let qat = Schema::quantization("QAT_Quantizer", [OpType::Conv2d, OpType::Linear], 2..=8)
///     .with_supported([OpType::ReLU, OpType::ReLU6])
///     .with_extra_keys(&["quant_start_step"]);
/// assert!(qat.supported_op_types.contains(&OpType::Conv2d));
/// # let _ = level;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schema {
    /// The algorithm's name as NNI spells it, e.g. `LevelPruner`; used in messages.
    pub algorithm: &'static str,
    pub kind: SchemaKind,
    /// What `op_types: [default]` stands for.
    pub default_op_types: Vec<OpType>,
    /// Op types a (non-exclude) dict may select; always includes the defaults.
    pub supported_op_types: Vec<OpType>,
    /// Bit widths the quantizer supports (unused for pruning schemas).
    pub bits: RangeInclusive<u8>,
    /// Algorithm-specific keys allowed besides the common ones.
    pub extra_keys: Vec<&'static str>,
    /// Pruning: whether every (non-exclude) dict must give `sparsity` (AGP takes
    /// `final_sparsity` instead and checks it itself).
    pub sparsity_required: bool,
    /// Pruning: whether the algorithm ranks weights across layers, so dicts may give
    /// `total_sparsity` (see [`super::global`]).
    pub global_sparsity: bool,
}

impl Schema {
    /// A pruning schema; supported op types are the defaults until
    /// [`with_supported`](Self::with_supported) adds more.
    pub fn pruning(
        algorithm: &'static str,
        default_op_types: impl IntoIterator<Item = OpType>,
    ) -> Self {
        let defaults: Vec<OpType> = default_op_types.into_iter().collect();
        Schema {
            algorithm,
            kind: SchemaKind::Pruning,
            supported_op_types: defaults.clone(),
            default_op_types: defaults,
            bits: 1..=32,
            extra_keys: Vec::new(),
            sparsity_required: true,
            global_sparsity: false,
        }
    }

    /// A quantization schema accepting bit widths in `bits`.
    pub fn quantization(
        algorithm: &'static str,
        default_op_types: impl IntoIterator<Item = OpType>,
        bits: RangeInclusive<u8>,
    ) -> Self {
        Schema {
            kind: SchemaKind::Quantization,
            bits,
            ..Schema::pruning(algorithm, default_op_types)
        }
    }

    /// Allows algorithm-specific keys (kept in [`super::LayerConfig::extra`]).
    pub fn with_extra_keys(mut self, keys: &[&'static str]) -> Self {
        for key in keys {
            if !self.extra_keys.contains(key) {
                self.extra_keys.push(key);
            }
        }
        self
    }

    /// Lets dicts leave `sparsity` out (the algorithm reads its own keys instead).
    pub fn with_optional_sparsity(mut self) -> Self {
        self.sparsity_required = false;
        self
    }

    /// Lets dicts give `total_sparsity`: the algorithm scores weights comparably across
    /// layers and its caller runs [`ConfigList::allocate_global`](super::ConfigList::allocate_global).
    pub fn with_global_sparsity(mut self) -> Self {
        self.global_sparsity = true;
        self
    }

    /// Adds op types a dict may name beyond the defaults.
    pub fn with_supported(mut self, op_types: impl IntoIterator<Item = OpType>) -> Self {
        for t in op_types {
            if !self.supported_op_types.contains(&t) {
                self.supported_op_types.push(t);
            }
        }
        self
    }

    /// Every key a dict may use with this algorithm, for messages and validation.
    pub fn valid_keys(&self) -> Vec<&'static str> {
        let kind_keys: &[&str] = match self.kind {
            SchemaKind::Pruning => &PRUNING_KEYS,
            SchemaKind::Quantization => &QUANTIZATION_KEYS,
        };
        COMMON_KEYS
            .iter()
            .chain(kind_keys)
            .chain(&self.extra_keys)
            .copied()
            .collect()
    }
}
