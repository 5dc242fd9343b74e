//! Pruners by name: what a plan's `"algorithm"` may say. Every built-in pruner is listed
//! under its NNI v1 class name with the NNI 2.x/3.x names as aliases; a user's own pruner
//! becomes nameable in a plan file with [`Registry::register`].

use serde_json::{Map, Value};

use super::Pruner;
use crate::{Error, Result};

/// The stage key of the pruners whose masks remove whole output channels (the filter
/// pruners, Slim): declaring it opts an entry into the speedup stage, which then runs
/// unless the plan says `"speedup": false`.
pub const SPEEDUP: &str = "speedup";

/// Builds a pruner from its plan stage's options.
pub type PrunerFactory = fn(&StageOptions) -> Result<Box<dyn Pruner>>;

/// One nameable pruner.
#[derive(Debug, Clone, Copy)]
pub struct PrunerEntry {
    /// The name a plan uses (NNI v1's class name for the built-ins).
    pub name: &'static str,
    /// Other accepted names (NNI 2.x/3.x).
    pub aliases: &'static [&'static str],
    /// Keys the plan's stage may carry besides `algorithm`, `config_list` and `lr`.
    pub stage_keys: &'static [&'static str],
    pub make: PrunerFactory,
}

/// The keys of a plan's pruner stage beyond `algorithm`, `config_list` and `lr`.
#[derive(Debug, Clone, Default)]
pub struct StageOptions {
    /// Where the plan came from, for messages.
    pub source: String,
    pub values: Map<String, Value>,
}

impl StageOptions {
    fn invalid(&self, key: &str, expected: &str, found: &Value) -> Error {
        Error::File {
            path: self.source.clone().into(),
            message: format!("`pruner.{key}` must be {expected}, found {found}"),
        }
    }

    /// A number, if the key is present.
    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .map(Some)
                .ok_or_else(|| self.invalid(key, "a non-negative number", v)),
        }
    }

    /// A boolean, if the key is present.
    pub fn flag(&self, key: &str) -> Result<Option<bool>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "true or false", v)),
        }
    }

    /// A positive integer, if the key is present.
    pub fn count(&self, key: &str) -> Result<Option<usize>> {
        match self.values.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n > 0)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.invalid(key, "a positive integer", v)),
        }
    }
}

/// The pruners a plan can name.
#[derive(Debug, Clone)]
pub struct Registry {
    entries: Vec<PrunerEntry>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::builtin()
    }
}

impl Registry {
    /// Every pruner sprig ships.
    pub fn builtin() -> Self {
        Self {
            entries: vec![
                super::level::ENTRY,
                super::agp::ENTRY,
                super::lottery_ticket::ENTRY,
                super::activation_rank::APOZ_ENTRY,
                super::activation_rank::MEAN_ENTRY,
                super::fpgm::ENTRY,
                super::norm_filter::L1_ENTRY,
                super::norm_filter::L2_ENTRY,
                super::slim::ENTRY,
            ],
        }
    }

    /// Adds (or replaces, by name) a pruner; its name and aliases become valid in plans.
    pub fn register(&mut self, entry: PrunerEntry) {
        self.entries.retain(|e| e.name != entry.name);
        self.entries.push(entry);
    }

    /// The entry a plan's `algorithm` names (a name or an alias).
    pub fn find(&self, algorithm: &str) -> Option<&PrunerEntry> {
        self.entries
            .iter()
            .find(|e| e.name == algorithm || e.aliases.contains(&algorithm))
    }

    /// Every valid name, aliases after their pruner, for messages.
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| match e.aliases {
                [] => e.name.to_string(),
                aliases => format!("{} (or {})", e.name, aliases.join(", ")),
            })
            .collect()
    }

    /// Whether the speedup stage follows the pruner `algorithm` names: on for the pruners
    /// that declare the [`SPEEDUP`] key, unless `options` turn it off.
    pub fn speedup(&self, algorithm: &str, options: &StageOptions) -> Result<bool> {
        let declared = self
            .find(algorithm)
            .is_some_and(|e| e.stage_keys.contains(&SPEEDUP));
        Ok(declared && options.flag(SPEEDUP)?.unwrap_or(true))
    }

    /// Builds the pruner `algorithm` names, checking the stage's keys are its own.
    pub fn make(&self, algorithm: &str, options: &StageOptions) -> Result<Box<dyn Pruner>> {
        let entry = self.find(algorithm).ok_or_else(|| Error::File {
            path: options.source.clone().into(),
            message: format!(
                "unknown pruner `{algorithm}`; valid: {}",
                self.names().join(", ")
            ),
        })?;
        if let Some(key) = options
            .values
            .keys()
            .find(|k| !entry.stage_keys.contains(&k.as_str()))
        {
            let mut valid = vec!["algorithm", "config_list", "lr"];
            valid.extend(entry.stage_keys);
            return Err(Error::File {
                path: options.source.clone().into(),
                message: format!(
                    "unknown key `pruner.{key}` for {}; valid: {}",
                    entry.name,
                    valid.join(", ")
                ),
            });
        }
        (entry.make)(options)
    }
}
