//! The pruning stage of the job: the plan's pruner built and checked against the model
//! before anything trains, then (after the baseline) its statistics pass, `compress`, and
//! one fine-tuning round per [`Pruner::rounds`], each with its own checkpoint folder.

use super::options::{say, stage_config, CompressOptions, Distillation};
use super::plan::Stage;
use super::speedup::align_masks;
use super::summary::RoundReport;
use crate::config::LayerConfig;
use crate::data::Dataset;
use crate::models::Model;
use crate::prune::{collect_statistics, sparsity_of, Pruner};
use crate::train::{self, evaluate};
use crate::{Error, Result};

/// What the pruning stage measured.
#[derive(Debug, Default)]
pub(super) struct PruneOutcome {
    pub one_shot_accuracy: Option<f32>,
    pub rounds: Vec<RoundReport>,
}

/// Builds the stage's pruner (`--slim-l1` overriding the plan's `slim_l1`), resolves its
/// config list against `model` and checks its schedule fits `--ft-epochs` of
/// `train_images`; `plan` names the plan file in messages.
pub(super) fn checked_pruner(
    opts: &CompressOptions,
    stage: &Stage,
    model: &Model,
    train_images: usize,
    plan: &str,
) -> Result<Box<dyn Pruner>> {
    let mut options = stage.options.clone();
    if let Some(l1) = opts.slim_l1 {
        options.values.insert("slim_l1".into(), l1.into());
    }
    let pruner = opts.registry.make(&stage.algorithm, &options)?;
    let layers = pruner.resolve(&model.graph, &stage.config_list)?;
    let too_short = |message: String| Error::File {
        path: plan.into(),
        message,
    };
    let needed = pruner.schedule_epochs(&layers);
    if opts.ft_epochs < needed {
        return Err(too_short(format!(
            "{}'s schedule reaches its final sparsity after {needed} fine-tuning epochs, \
             but --ft-epochs is {}; raise --ft-epochs or end the schedule earlier \
             (end_epoch)",
            stage.algorithm, opts.ft_epochs
        )));
    }
    let needed = pruner.schedule_steps(&layers);
    let steps = opts.ft_epochs * train_images.div_ceil(opts.batch_size.max(1));
    if steps < needed {
        return Err(too_short(format!(
            "{}'s schedule reaches its final sparsity after {needed} optimizer steps \
             (interval_steps × total_times), but --ft-epochs {} of {train_images} images \
             in batches of {} make {steps}; raise --ft-epochs or shorten the schedule",
            stage.algorithm, opts.ft_epochs, opts.batch_size
        )));
    }
    Ok(pruner)
}

/// Prunes the trained `model` and fine-tunes it, round by round. `key` identifies the
/// baseline, so each round's checkpoints belong to this baseline only; with `distill`,
/// every round fine-tunes against the teacher. With `speedup`,
/// the masks are first aligned with the channel groups, so what fine-tunes is what the
/// speedup will cut.
pub(super) fn prune_and_fine_tune(
    opts: &CompressOptions,
    stage: &Stage,
    pruner: &mut dyn Pruner,
    model: &mut Model,
    (train_set, test): (&Dataset, &Dataset),
    (key, distill): (&str, Option<&Distillation>),
    speedup: bool,
) -> Result<PruneOutcome> {
    let images = collect_statistics(pruner, model, train_set, opts.batch_size, opts.seed)?;
    if images > 0 {
        say(
            opts,
            format!(
                "{}: statistics over {images} training images",
                stage.algorithm
            ),
        );
    }
    let layers = pruner.compress(&mut model.graph, &stage.config_list)?;
    if speedup {
        let aligned = align_masks(&mut model.graph)?;
        if aligned > 0 {
            say(
                opts,
                format!(
                    "speedup: {aligned} pruned channels masked in their batch norms and \
                     depthwise convs too"
                ),
            );
        }
    }
    let one_shot = evaluate(model, test)?;
    say(
        opts,
        format!(
            "{} one-shot: {:.2}% top-1",
            stage.algorithm,
            100.0 * one_shot
        ),
    );
    let mut outcome = PruneOutcome {
        one_shot_accuracy: Some(one_shot),
        rounds: Vec::new(),
    };
    let rounds = pruner.rounds();
    for round in 0..rounds {
        if round > 0 {
            pruner.start_round(round, &mut model.graph)?;
        }
        let (dir, label) = if rounds > 1 {
            (
                opts.out
                    .join(format!("checkpoints/prune-round{}", round + 1)),
                format!("prune round {}/{rounds}", round + 1),
            )
        } else {
            (opts.out.join("checkpoints/prune"), "prune fine-tune".into())
        };
        // Aligned masks train another network: its checkpoints are not the plain ones.
        let aligned = if speedup { "-speedup" } else { "" };
        let ft_key = format!("{key}-{}-round{}{aligned}", stage.algorithm, round + 1);
        let mut cfg = stage_config(opts, opts.ft_epochs, &dir, &ft_key, &label);
        cfg.lr = stage.lr.unwrap_or(3e-3);
        if let Some(d) = distill {
            d.apply(&mut cfg);
        }
        train::train(model, train_set, test, &cfg, Some(&mut *pruner))?;
        let accuracy = evaluate(model, test)?;
        let sparsity = pruned_sparsity(model, &layers)?;
        say(
            opts,
            format!(
                "{} {label}: {:.2}% top-1 at {:.2}% sparsity",
                stage.algorithm,
                100.0 * accuracy,
                100.0 * sparsity
            ),
        );
        outcome.rounds.push(RoundReport {
            round: round + 1,
            sparsity,
            accuracy,
        });
    }
    Ok(outcome)
}

/// The fraction of zero weights over the pruned layers (their weights, or γ).
fn pruned_sparsity(model: &Model, layers: &[LayerConfig]) -> Result<f64> {
    let (mut zeros, mut total) = (0f64, 0usize);
    for layer in layers {
        if let Some(w) = model
            .graph
            .node(&layer.name)
            .and_then(|n| n.layer.maskable_weight())
        {
            zeros += sparsity_of(w)? * w.elem_count() as f64;
            total += w.elem_count();
        }
    }
    Ok(zeros / total.max(1) as f64)
}
