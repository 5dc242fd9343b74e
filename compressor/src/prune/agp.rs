//! NNI's `AGP_Pruner` (Zhu & Gupta 2017, automated gradual pruning): magnitude pruning whose
//! sparsity grows on a cubic schedule from `initial_sparsity` to `final_sparsity` between
//! `start_epoch` and `end_epoch`, updated every `frequency` epochs; each update recomputes
//! the masks from the current (masked, fine-tuned) weights.
//!
//! The schedule is NNI v1's, at epoch `t` (0-based, the epoch about to train):
//! `span = ⌊(end − start − 1) / frequency⌋ · frequency`, then
//! `s(t) = final + (initial − final) · (1 − (t − start) / span)³` for `start ≤ t < end`,
//! `final` from `end` on, and no pruning before `start`. Masks change only at epochs where
//! `(t − start)` is a multiple of `frequency`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::level::magnitude_mask;
use super::{mask_layers, Mask, PruneTarget, Pruner, PrunerEntry};
use crate::config::{ConfigError, ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "AGP_Pruner",
    aliases: &["AGPPruner", "AGPruner"],
    stage_keys: &[],
    make: |_| Ok(Box::new(AgpPruner::default())),
};

const NAME: &str = "AGP_Pruner";
const KEYS: [&str; 5] = [
    "initial_sparsity",
    "final_sparsity",
    "start_epoch",
    "end_epoch",
    "frequency",
];

/// One dict's schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AgpSchedule {
    pub initial_sparsity: f64,
    pub final_sparsity: f64,
    pub start_epoch: usize,
    pub end_epoch: usize,
    pub frequency: usize,
}

impl AgpSchedule {
    /// Reads a resolved dict: NNI v1's keys, with `sparsity` accepted for `final_sparsity`
    /// (NNI 2.x's spelling). Defaults as NNI's: initial 0, start 0, end 1, frequency 1.
    pub fn from_config(config: &LayerConfig, source: &str) -> Result<Self, ConfigError> {
        let reject = |message: String| ConfigError::Rejected {
            file: source.to_string(),
            index: config.index,
            algorithm: NAME,
            message,
        };
        let number = |key: &str| -> Result<Option<f64>, ConfigError> {
            match config.extra.get(key) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| reject(format!("`{key}` must be a number, found {v}"))),
            }
        };
        let epoch = |key: &str, default: usize| -> Result<usize, ConfigError> {
            match config.extra.get(key) {
                None => Ok(default),
                Some(v) => v.as_u64().map(|n| n as usize).ok_or_else(|| {
                    reject(format!("`{key}` must be a non-negative integer, found {v}"))
                }),
            }
        };
        let final_sparsity = match (number("final_sparsity")?, config.sparsity) {
            (Some(f), None) | (None, Some(f)) => f,
            (Some(_), Some(_)) => {
                return Err(reject(
                    "give `final_sparsity` or `sparsity`, not both".into(),
                ))
            }
            (None, None) => return Err(reject("needs `final_sparsity` (or `sparsity`)".into())),
        };
        let initial_sparsity = number("initial_sparsity")?.unwrap_or(0.0);
        for (key, value) in [
            ("initial_sparsity", initial_sparsity),
            ("final_sparsity", final_sparsity),
        ] {
            if !(0.0..1.0).contains(&value) {
                return Err(reject(format!("`{key}` is {value}; it must be in [0, 1)")));
            }
        }
        if initial_sparsity > final_sparsity {
            return Err(reject(format!(
                "`initial_sparsity` ({initial_sparsity}) is above `final_sparsity` ({final_sparsity})"
            )));
        }
        let schedule = AgpSchedule {
            initial_sparsity,
            final_sparsity,
            start_epoch: epoch("start_epoch", 0)?,
            end_epoch: epoch("end_epoch", 1)?,
            frequency: epoch("frequency", 1)?,
        };
        if schedule.frequency == 0 {
            return Err(reject("`frequency` must be at least 1".into()));
        }
        if schedule.end_epoch < schedule.start_epoch {
            return Err(reject(format!(
                "`end_epoch` ({}) is before `start_epoch` ({})",
                schedule.end_epoch, schedule.start_epoch
            )));
        }
        if schedule.span() == 0 {
            return Err(reject(format!(
                "the schedule has no room to grow: `end_epoch` ({}) must be at least \
                 `start_epoch` + `frequency` + 1 ({})",
                schedule.end_epoch,
                schedule.start_epoch + schedule.frequency + 1
            )));
        }
        Ok(schedule)
    }

    /// NNI's span: the last update epoch's distance from `start_epoch`.
    pub fn span(&self) -> usize {
        (self.end_epoch.saturating_sub(self.start_epoch + 1) / self.frequency) * self.frequency
    }

    /// Whether the masks are recomputed at the start of `epoch`.
    pub fn updates_at(&self, epoch: usize) -> bool {
        epoch >= self.start_epoch && (epoch - self.start_epoch).is_multiple_of(self.frequency)
    }
}

/// The schedule's target sparsity at `epoch` (see the module docs).
pub fn agp_sparsity(schedule: &AgpSchedule, epoch: usize) -> f64 {
    if epoch < schedule.start_epoch {
        return 0.0;
    }
    if epoch >= schedule.end_epoch {
        return schedule.final_sparsity;
    }
    let progress = (epoch - schedule.start_epoch) as f64 / schedule.span() as f64;
    let remaining = (1.0 - progress).max(0.0);
    schedule.final_sparsity
        + (schedule.initial_sparsity - schedule.final_sparsity) * remaining.powi(3)
}

/// Automated gradual pruning.
#[derive(Debug, Clone, Default)]
pub struct AgpPruner {
    /// The epoch the masks were last computed for.
    epoch: usize,
    /// The resolved layers and their dicts' schedules (set by `compress`).
    layers: Vec<(LayerConfig, AgpSchedule)>,
}

impl AgpPruner {
    /// The target sparsity of every scheduled layer at the current epoch.
    pub fn targets(&self) -> BTreeMap<String, f64> {
        self.layers
            .iter()
            .map(|(l, s)| (l.name.clone(), agp_sparsity(s, self.epoch)))
            .collect()
    }

    fn schedules(&self, layers: &[LayerConfig], source: &str) -> Result<Vec<AgpSchedule>> {
        layers
            .iter()
            .map(|l| AgpSchedule::from_config(l, source).map_err(Error::from))
            .collect()
    }
}

impl Pruner for AgpPruner {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        Schema::pruning(NAME, [OpType::Conv2d, OpType::Linear])
            .with_optional_sparsity()
            .with_extra_keys(&KEYS)
    }

    fn check(&self, _graph: &Graph, layers: &[LayerConfig], source: &str) -> Result<()> {
        self.schedules(layers, source).map(|_| ())
    }

    fn calc_mask(&mut self, layer: &PruneTarget, config: &LayerConfig) -> Result<Mask> {
        let schedule = match self.layers.iter().find(|(l, _)| l.name == layer.name) {
            Some((_, s)) => *s,
            None => AgpSchedule::from_config(config, "config_list")?,
        };
        let sparsity = agp_sparsity(&schedule, self.epoch);
        let magnitudes = layer.weight.abs()?.flatten_all()?.to_vec1::<f32>()?;
        Ok(Mask::new(magnitude_mask(
            &magnitudes,
            sparsity,
            layer.weight,
        )?))
    }

    fn compress(&mut self, graph: &mut Graph, config: &ConfigList) -> Result<Vec<LayerConfig>> {
        let layers = self.resolve(graph, config)?;
        let schedules = self.schedules(&layers, &config.source)?;
        self.layers = layers.iter().cloned().zip(schedules).collect();
        self.epoch = 0;
        mask_layers(self, graph, &layers)?;
        Ok(layers)
    }

    /// The epoch after the last update, where the final sparsity is reached.
    fn schedule_epochs(&self, layers: &[LayerConfig]) -> usize {
        layers
            .iter()
            .filter_map(|l| AgpSchedule::from_config(l, "").ok())
            .map(|s| s.start_epoch + s.span() + 1)
            .max()
            .unwrap_or(0)
    }

    fn update_epoch(&mut self, epoch: usize, graph: &mut Graph) -> Result<()> {
        self.epoch = epoch;
        let due: Vec<LayerConfig> = self
            .layers
            .iter()
            .filter(|(_, s)| s.updates_at(epoch))
            .map(|(l, _)| l.clone())
            .collect();
        mask_layers(self, graph, &due)
    }

    fn state(&self) -> Value {
        json!({ "epoch": self.epoch })
    }

    fn load_state(&mut self, state: &Value) -> Result<()> {
        if let Some(epoch) = state.get("epoch").and_then(Value::as_u64) {
            self.epoch = epoch as usize;
        }
        Ok(())
    }
}
