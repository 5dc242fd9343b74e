//! The probe of an auto run: the baseline trial's float weights loaded into the model,
//! batch norms folded, with calibration, validation and (for `--probe-steps`) short
//! fine-tuning images from the training split (the test split only judges the
//! fine-tuned trials).

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use sprig_compressor::auto::{FineTune, Probe, SearchSpace};
use sprig_compressor::compress::fold_batch_norms;
use sprig_compressor::data::{self, Dataset, Normalization};
use sprig_compressor::models::Model;

/// Images per class that calibrate activation ranges, and that score candidates.
const CALIBRATION_PER_CLASS: usize = 100;
const VALIDATION_PER_CLASS: usize = 200;
/// Learning rate of the probe's short fine-tunes (between `compress`'s pruning
/// fine-tune, 3e-3, and its QAT fine-tune, 5e-4: the probe does both at once).
const PROBE_LR: f64 = 1e-3;

/// The probe and the test split (for the calibration firmware's vectors).
pub struct Setup {
    pub probe: Probe,
    pub test: Dataset,
}

/// The probe of `model` on the baseline in `baseline_dir`; `probe_steps` > 0 fine-tunes
/// each candidate for that many steps of 64 training images first.
pub fn setup(
    model: &str,
    data_path: Option<&Path>,
    normalize: Option<&str>,
    seed: u64,
    baseline_dir: &Path,
    probe_steps: usize,
) -> anyhow::Result<Setup> {
    let normalization: Normalization = match normalize {
        Some(text) => text
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--normalize: {e}"))?,
        None => Normalization::default(),
    };
    let (train, test) = data::resolve(data_path)?.load()?;
    let train = train.with_normalization(normalization.clone())?;
    let test = test.with_normalization(normalization.clone())?;
    let classes = train.num_classes();
    let weights = baseline_dir.join("model.safetensors");
    let (name, grid) = (model.to_string(), normalization.input_grid());
    let load = weights.clone();
    let fresh = move || -> sprig_compressor::Result<Model> {
        let mut baseline = Model::new(&name, classes, &Device::Cpu, seed)?;
        baseline.load_weights(&load)?;
        fold_batch_norms(&mut baseline)?;
        if baseline.graph.input_grid().is_some() {
            baseline.graph.set_input_grid(Some(grid));
        }
        Ok(baseline)
    };
    let baseline =
        fresh().with_context(|| format!("loading the baseline from {}", weights.display()))?;
    let space = SearchSpace::of(&baseline.graph);
    let calibration = train.balanced_subset(CALIBRATION_PER_CLASS, seed);
    let validation = train.balanced_subset(VALIDATION_PER_CLASS, seed + 1);
    let mut probe =
        Probe::new(baseline, space, calibration, validation)?.with_fresh_copies(Box::new(fresh));
    if probe_steps > 0 {
        let images = probe_steps * 64;
        let per_class = images.div_ceil(classes.max(1));
        probe = probe.with_fine_tune(FineTune {
            images: train.balanced_subset(per_class, seed + 2).subset(images),
            lr: PROBE_LR,
            seed,
        });
    }
    Ok(Setup { probe, test })
}
