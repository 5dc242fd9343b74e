//! The probe of an auto run: the baseline trial's float weights loaded into the model,
//! batch norms folded, with calibration and validation images from the training split
//! (the test split only judges the fine-tuned trials).

use std::path::Path;

use anyhow::Context;
use candle_core::Device;
use sprig_compressor::auto::{Probe, SearchSpace};
use sprig_compressor::compress::fold_batch_norms;
use sprig_compressor::data::{self, Dataset, Normalization};
use sprig_compressor::models::Model;

/// Images per class that calibrate activation ranges, and that score candidates.
const CALIBRATION_PER_CLASS: usize = 100;
const VALIDATION_PER_CLASS: usize = 200;

/// The probe and the test split (for the calibration firmware's vectors).
pub struct Setup {
    pub probe: Probe,
    pub test: Dataset,
}

pub fn setup(
    model: &str,
    data_path: Option<&Path>,
    normalize: Option<&str>,
    seed: u64,
    baseline_dir: &Path,
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
    let mut baseline = Model::new(model, train.num_classes(), &Device::Cpu, seed)?;
    let weights = baseline_dir.join("model.safetensors");
    baseline
        .load_weights(&weights)
        .with_context(|| format!("loading the baseline from {}", weights.display()))?;
    fold_batch_norms(&mut baseline)?;
    if baseline.graph.input_grid().is_some() {
        baseline
            .graph
            .set_input_grid(Some(normalization.input_grid()));
    }
    let space = SearchSpace::of(&baseline.graph);
    let calibration = train.balanced_subset(CALIBRATION_PER_CLASS, seed);
    let validation = train.balanced_subset(VALIDATION_PER_CLASS, seed + 1);
    Ok(Setup {
        probe: Probe::new(baseline, space, calibration, validation)?,
        test,
    })
}
