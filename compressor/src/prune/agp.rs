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
//!
//! NNI 3.x's per-step form (Zhu & Gupta prune every Δt *steps*) is chosen by two stage keys,
//! `interval_steps` and `total_times`: the masks are recomputed after every
//! `interval_steps` optimizer steps, `total_times` times, the k-th time at
//! `final + (initial − final) · (1 − k / total_times)³` (the dicts then give only
//! `initial_sparsity` and `final_sparsity` or `sparsity`). Short fine-tunings want this:
//! with two epochs, the per-epoch schedule can only jump once.

use candle_core::backprop::GradStore;
use serde_json::{json, Value};

use super::level::magnitude_mask;
use super::{mask_layers, Mask, PruneTarget, Pruner, PrunerEntry};
use crate::config::{ConfigError, ConfigList, LayerConfig, Schema};
use crate::nn::{Graph, OpType};
use crate::{Error, Result};

pub(super) const ENTRY: PrunerEntry = PrunerEntry {
    name: "AGP_Pruner",
    aliases: &["AGPPruner", "AGPruner"],
    stage_keys: &["interval_steps", "total_times"],
    make: |options| {
        let steps = match (
            options.count("interval_steps")?,
            options.count("total_times")?,
        ) {
            (Some(interval_steps), Some(total_times)) => Some(StepSchedule {
                interval_steps,
                total_times,
            }),
            (None, None) => None,
            _ => {
                return Err(Error::File {
                    path: options.source.clone().into(),
                    message: "AGP_Pruner's per-step schedule needs both `pruner.interval_steps` \
                              and `pruner.total_times`"
                        .into(),
                })
            }
        };
        Ok(Box::new(AgpPruner::new(steps)))
    },
};

/// NNI 3.x's per-step schedule: recompute the masks every `interval_steps` optimizer
/// steps, `total_times` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSchedule {
    pub interval_steps: usize,
    pub total_times: usize,
}

const NAME: &str = "AGP_Pruner";
const EPOCH_KEYS: [&str; 3] = ["start_epoch", "end_epoch", "frequency"];
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
        Self::read(config, source, false)
    }

    /// Reads a dict of the per-step schedule: only the sparsities; the epoch keys are
    /// refused (the stage's `interval_steps` and `total_times` time it).
    pub fn from_config_per_step(config: &LayerConfig, source: &str) -> Result<Self, ConfigError> {
        Self::read(config, source, true)
    }

    fn read(config: &LayerConfig, source: &str, per_step: bool) -> Result<Self, ConfigError> {
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
        if per_step {
            if let Some(key) = EPOCH_KEYS.iter().find(|k| config.extra.contains_key(**k)) {
                return Err(reject(format!(
                    "`{key}` belongs to the per-epoch schedule, but the plan's \
                     `interval_steps` and `total_times` make this one per step; use one or \
                     the other"
                )));
            }
            return Ok(AgpSchedule {
                initial_sparsity,
                final_sparsity,
                start_epoch: 0,
                end_epoch: 0,
                frequency: 1,
            });
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

/// The per-step schedule's sparsity after `times` of its `total_times` updates.
pub fn agp_step_sparsity(schedule: &AgpSchedule, times: usize, total_times: usize) -> f64 {
    let remaining = 1.0 - times.min(total_times) as f64 / total_times.max(1) as f64;
    schedule.final_sparsity
        + (schedule.initial_sparsity - schedule.final_sparsity) * remaining.powi(3)
}

/// Automated gradual pruning.
#[derive(Debug, Clone, Default)]
pub struct AgpPruner {
    /// `Some`: NNI 3.x's per-step schedule; `None`: NNI v1's per-epoch one.
    steps: Option<StepSchedule>,
    /// The epoch the masks were last computed for.
    epoch: usize,
    /// Optimizer steps seen, and per-step updates made (per-step schedule).
    step: usize,
    times: usize,
    /// The resolved layers and their dicts' schedules (set by `compress`).
    layers: Vec<(LayerConfig, AgpSchedule)>,
}

impl AgpPruner {
    /// A pruner on the per-epoch schedule (`None`) or NNI 3.x's per-step one.
    pub fn new(steps: Option<StepSchedule>) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }

    fn target(&self, schedule: &AgpSchedule) -> f64 {
        match self.steps {
            Some(steps) => agp_step_sparsity(schedule, self.times, steps.total_times),
            None => agp_sparsity(schedule, self.epoch),
        }
    }

    fn schedule_of(&self, config: &LayerConfig, source: &str) -> Result<AgpSchedule> {
        let schedule = match self.steps {
            Some(_) => AgpSchedule::from_config_per_step(config, source),
            None => AgpSchedule::from_config(config, source),
        };
        schedule.map_err(Error::from)
    }

    fn schedules(&self, layers: &[LayerConfig], source: &str) -> Result<Vec<AgpSchedule>> {
        layers.iter().map(|l| self.schedule_of(l, source)).collect()
    }

    fn remask_all(&mut self, graph: &mut Graph) -> Result<()> {
        let layers: Vec<LayerConfig> = self.layers.iter().map(|(l, _)| l.clone()).collect();
        mask_layers(self, graph, &layers)
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
            None => self.schedule_of(config, "config_list")?,
        };
        let sparsity = self.target(&schedule);
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
        (self.epoch, self.step, self.times) = (0, 0, 0);
        mask_layers(self, graph, &layers)?;
        Ok(layers)
    }

    /// The epoch after the last update, where the final sparsity is reached.
    fn schedule_epochs(&self, layers: &[LayerConfig]) -> usize {
        if self.steps.is_some() {
            return 0;
        }
        layers
            .iter()
            .filter_map(|l| AgpSchedule::from_config(l, "").ok())
            .map(|s| s.start_epoch + s.span() + 1)
            .max()
            .unwrap_or(0)
    }

    /// The step of the last per-step update.
    fn schedule_steps(&self, _layers: &[LayerConfig]) -> usize {
        self.steps.map_or(0, |s| s.interval_steps * s.total_times)
    }

    fn step(&mut self, graph: &mut Graph, _grads: &GradStore) -> Result<()> {
        let Some(steps) = self.steps else {
            return Ok(());
        };
        self.step += 1;
        if self.times < steps.total_times && self.step.is_multiple_of(steps.interval_steps) {
            self.times += 1;
            self.remask_all(graph)?;
        }
        Ok(())
    }

    fn update_epoch(&mut self, epoch: usize, graph: &mut Graph) -> Result<()> {
        self.epoch = epoch;
        if self.steps.is_some() {
            return Ok(());
        }
        let due: Vec<LayerConfig> = self
            .layers
            .iter()
            .filter(|(_, s)| s.updates_at(epoch))
            .map(|(l, _)| l.clone())
            .collect();
        mask_layers(self, graph, &due)
    }

    fn state(&self) -> Value {
        json!({ "epoch": self.epoch, "step": self.step, "times": self.times })
    }

    fn load_state(&mut self, state: &Value) -> Result<()> {
        let read = |key: &str| state.get(key).and_then(Value::as_u64).map(|v| v as usize);
        self.epoch = read("epoch").unwrap_or(self.epoch);
        self.step = read("step").unwrap_or(self.step);
        self.times = read("times").unwrap_or(self.times);
        Ok(())
    }
}
