//! Training and fine-tuning: a seeded, resumable loop with progress bars, checkpoints
//! every epoch and a stop on a non-finite loss.

mod adamw_cpu;
mod checkpoint;
mod distill;
mod optim;
mod schedule;

pub use checkpoint::{checkpoint_path, Checkpoint, TrainState, CHECKPOINT_FILE, STATE_FILE};
pub use distill::{
    distillation_loss, frozen_copy, DistillReport, DistillSpec, Distiller, TeacherSource,
    DISTILL_KEYS,
};
pub use optim::{Optimizer, OptimizerKind};
pub use schedule::Schedule;

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor, Var, D};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::data::{Batcher, Dataset, Order};
use crate::models::Model;
use crate::prune::{apply_masks_to_weights, Pruner};
use crate::{Error, Result};

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    pub seed: u64,
    /// Where checkpoints go; `None` trains without them.
    pub checkpoint_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `checkpoint_dir` if there is one.
    pub resume: bool,
    /// Identifies the run in its checkpoint (resume refuses a checkpoint of another run).
    pub run_key: String,
    /// Stop (cleanly, resumable) after this many epochs in this invocation.
    pub max_epochs_this_run: Option<usize>,
    /// Draw progress bars (they hide themselves when stderr is not a terminal).
    pub progress: bool,
    /// A label for progress lines, e.g. "baseline" or "fine-tune".
    pub label: String,
    /// Knowledge distillation: the loss against a frozen teacher's soft targets and the
    /// labels ([`Distiller`]); `None` trains on cross-entropy alone.
    pub distill: Option<Arc<Distiller>>,
}

impl TrainConfig {
    pub fn new(epochs: usize, seed: u64) -> Self {
        Self {
            epochs,
            batch_size: 64,
            lr: 2e-3,
            optimizer: OptimizerKind::adamw(),
            schedule: Schedule::Cosine {
                final_fraction: 0.05,
            },
            seed,
            checkpoint_dir: None,
            resume: false,
            run_key: String::new(),
            max_epochs_this_run: None,
            progress: true,
            label: "train".into(),
            distill: None,
        }
    }
}

/// One finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_accuracy: f32,
    pub test_accuracy: f32,
    pub seconds: f32,
    pub images_per_second: f32,
}

/// What a training run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub history: Vec<EpochStats>,
    /// True when every configured epoch is done (false after `max_epochs_this_run`).
    pub finished: bool,
}

/// Top-1 accuracy of `model` on `data`, in eval mode.
pub fn evaluate(model: &Model, data: &Dataset) -> Result<f32> {
    let mut correct = 0usize;
    for batch in Batcher::new(data, 1000, Order::Sequential, &model.device) {
        let batch = batch?;
        let logits = model.graph.forward_t(&batch.images, false)?;
        correct += count_correct(&logits, &batch.labels)?;
    }
    Ok(correct as f32 / data.len().max(1) as f32)
}

fn count_correct(logits: &Tensor, labels: &Tensor) -> Result<usize> {
    let predicted = logits.argmax(D::Minus1)?;
    Ok(predicted
        .eq(labels)?
        .to_dtype(DType::F32)?
        .sum_all()?
        .to_scalar::<f32>()? as usize)
}

fn restore(
    model: &mut Model,
    opt: &mut Optimizer,
    ckpt: Checkpoint,
    path: &std::path::Path,
) -> Result<TrainState> {
    let bad = |message: String| Error::File {
        path: path.to_path_buf(),
        message,
    };
    // Check everything before changing anything, so a mismatched checkpoint leaves the
    // model as it was.
    let vars: std::collections::BTreeMap<String, Var> = model.all_vars().into_iter().collect();
    for (name, var) in &vars {
        match ckpt.vars.get(name) {
            None => return Err(bad(format!("checkpoint has no variable `{name}`"))),
            Some(v) if v.dims() != var.dims() => {
                return Err(bad(format!(
                    "variable `{name}` has shape {:?}, the model {:?}",
                    v.dims(),
                    var.dims()
                )));
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = ckpt.vars.keys().find(|k| !vars.contains_key(*k)) {
        return Err(bad(format!(
            "checkpoint holds variable `{extra}`, which the model does not have"
        )));
    }
    for (key, state) in &ckpt.optimizer {
        let name = key.split_once('.').map_or(key.as_str(), |(_, n)| n);
        if vars.get(name).is_none_or(|v| v.dims() != state.dims()) {
            return Err(bad(format!(
                "optimizer state `{key}` does not match a model variable"
            )));
        }
    }
    for (name, value) in &ckpt.vars {
        vars[name].set(value)?;
    }
    for (name, mask) in ckpt.masks {
        model.graph.set_mask(&name, mask);
    }
    for (name, mask) in ckpt.bias_masks {
        model.graph.set_bias_mask(&name, mask);
    }
    if let Some(binding) = model.graph.quant() {
        for (name, state) in &ckpt.state.quant_states {
            if let Some(layer) = binding.layer(name) {
                layer.set_state(state.clone());
            }
        }
    }
    opt.restore(ckpt.optimizer, ckpt.state.optimizer_steps);
    Ok(ckpt.state)
}

/// True when every trainable variable is finite.
fn weights_finite(model: &Model) -> Result<bool> {
    for (_, var) in model.trainable_vars() {
        let sum = var
            .as_tensor()
            .abs()?
            .sum_all()?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        if !sum.is_finite() {
            return Ok(false);
        }
    }
    Ok(true)
}

fn snapshot(model: &Model, opt: &Optimizer, state: TrainState) -> Checkpoint {
    Checkpoint {
        state,
        vars: model
            .all_vars()
            .into_iter()
            .map(|(k, v)| (k, v.as_tensor().clone()))
            .collect(),
        optimizer: opt.state().clone(),
        masks: model.graph.masks().clone(),
        bias_masks: model.graph.bias_masks().clone(),
    }
}

fn quant_states(model: &Model) -> std::collections::BTreeMap<String, crate::quant::QuantState> {
    model
        .graph
        .quant()
        .map(|b| {
            b.layers()
                .iter()
                .map(|(k, l)| (k.clone(), l.state()))
                .collect()
        })
        .unwrap_or_default()
}

/// Trains `model` on `train`, evaluating on `test` after each epoch, on cross-entropy or,
/// with [`TrainConfig::distill`], the distillation loss. An attached pruner
/// gets `update_epoch` / `step` calls and masks stay enforced after every update; a
/// bound quantizer gets [`crate::quant::Quantizer::after_step`] after every optimizer
/// step.
pub fn train(
    model: &mut Model,
    train_set: &Dataset,
    test_set: &Dataset,
    cfg: &TrainConfig,
    mut pruner: Option<&mut dyn Pruner>,
) -> Result<TrainReport> {
    let mut opt = Optimizer::new(cfg.optimizer, model.trainable_vars());
    let mut state = TrainState {
        run_key: cfg.run_key.clone(),
        epochs_completed: 0,
        global_step: 0,
        optimizer_steps: 0,
        seed: cfg.seed,
        history: Vec::new(),
        quant_states: Default::default(),
        pruner_state: None,
    };
    if let (true, Some(dir)) = (cfg.resume, &cfg.checkpoint_dir) {
        if let Some(ckpt) = checkpoint::load(dir, &model.device)? {
            if ckpt.state.run_key != cfg.run_key || ckpt.state.seed != cfg.seed {
                return Err(Error::File {
                    path: checkpoint_path(dir),
                    message: format!(
                        "checkpoint is for run `{}` (seed {}), not `{}` (seed {}); remove it or pick another --out",
                        ckpt.state.run_key, ckpt.state.seed, cfg.run_key, cfg.seed
                    ),
                });
            }
            state = restore(model, &mut opt, ckpt, &checkpoint_path(dir))?;
            if let (Some(p), Some(saved)) = (pruner.as_deref_mut(), &state.pruner_state) {
                p.load_state(saved)?;
            }
        }
    }
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let total_steps = steps_per_epoch * cfg.epochs;
    let stop_at = cfg
        .max_epochs_this_run
        .map_or(cfg.epochs, |n| (state.epochs_completed + n).min(cfg.epochs));

    for epoch in state.epochs_completed..stop_at {
        if let Some(p) = pruner.as_deref_mut() {
            p.update_epoch(epoch, &mut model.graph)?;
        }
        let started = std::time::Instant::now();
        let bar = progress_bar(cfg, epoch, steps_per_epoch);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let order = Order::Shuffled {
            seed: cfg.seed,
            epoch: epoch as u64,
        };
        for batch in Batcher::new(train_set, cfg.batch_size, order, &model.device) {
            let batch = batch?;
            let logits = model.graph.forward_t(&batch.images, true)?;
            let mut loss = match &cfg.distill {
                None => candle_nn::loss::cross_entropy(&logits, &batch.labels)?,
                Some(d) => d.loss(&logits, &batch.images, &batch.labels)?,
            };
            if let Some(penalty) = match pruner.as_deref() {
                Some(p) => p.regularizer(&model.graph)?,
                None => None,
            } {
                loss = (loss + penalty)?;
            }
            let loss_value = loss.to_scalar::<f32>()?;
            if !loss_value.is_finite() {
                bar.abandon();
                return Err(Error::NonFiniteLoss {
                    loss: loss_value,
                    epoch,
                    step: state.global_step,
                });
            }
            let grads = loss.backward()?;
            opt.step(
                &grads,
                cfg.schedule.lr(cfg.lr, state.global_step, total_steps),
            )?;
            if !model.graph.masks().is_empty() {
                apply_masks_to_weights(&model.graph)?;
            }
            // A bound quantizer's own update of its latent weights (BNN's clipping).
            if let Some(binding) = model.graph.quant() {
                binding.after_step(&model.graph)?;
            }
            if let Some(p) = pruner.as_deref_mut() {
                p.step(&mut model.graph, &grads)?;
            }
            state.global_step += 1;
            loss_sum += f64::from(loss_value) * batch.len as f64;
            correct += count_correct(&logits, &batch.labels)?;
            seen += batch.len;
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4} acc {:.2}%",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
        }
        bar.finish_and_clear();
        if !weights_finite(model)? {
            return Err(Error::NonFiniteWeights {
                epoch,
                step: state.global_step,
            });
        }
        let train_seconds = started.elapsed().as_secs_f32();
        let test_accuracy = evaluate(model, test_set)?;
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_accuracy: correct as f32 / seen.max(1) as f32,
            test_accuracy,
            seconds: started.elapsed().as_secs_f32(),
            images_per_second: seen as f32 / train_seconds.max(1e-6),
        };
        if cfg.progress {
            eprintln!(
                "{} epoch {}/{}: loss {:.4}, train {:.2}%, test {:.2}%, {:.0} images/s, {:.1}s",
                cfg.label,
                stats.epoch,
                cfg.epochs,
                stats.train_loss,
                100.0 * stats.train_accuracy,
                100.0 * stats.test_accuracy,
                stats.images_per_second,
                stats.seconds
            );
        }
        state.history.push(stats);
        state.epochs_completed = epoch + 1;
        state.optimizer_steps = opt.steps;
        state.quant_states = quant_states(model);
        state.pruner_state = pruner
            .as_deref()
            .map(|p| p.state())
            .filter(|s| !s.is_null());
        if let Some(dir) = &cfg.checkpoint_dir {
            checkpoint::save(dir, &snapshot(model, &opt, state.clone()))?;
        }
    }
    Ok(TrainReport {
        finished: state.epochs_completed >= cfg.epochs,
        history: state.history,
    })
}

fn progress_bar(cfg: &TrainConfig, epoch: usize, steps: usize) -> ProgressBar {
    if !cfg.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    let style = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(format!("{} epoch {}/{}", cfg.label, epoch + 1, cfg.epochs));
    bar
}

/// The device named by `--device`: `cpu`, or `cuda` (GPU 0) when built with `cuda`.
pub fn device(name: &str) -> Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if cfg!(feature = "cuda") => {
            Device::new_cuda(0).map_err(|e| Error::CudaUnavailable(e.to_string()))
        }
        "cuda" => Err(Error::CudaNotBuilt),
        other => Err(Error::UnknownDevice(other.to_string())),
    }
}
