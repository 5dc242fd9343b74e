//! What one compression run is told (the CLI flags), and the helpers every stage of the
//! job shares: progress lines and a stage's training settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use crate::data::Normalization;
use crate::prune::Registry;
use crate::train::{DistillReport, Distiller, TrainConfig};

/// Options of one compression run (the CLI flags).
#[derive(Debug, Clone)]
pub struct CompressOptions {
    pub model: String,
    pub data: Option<PathBuf>,
    /// How pixels become model inputs (`--normalize`); `None`: the plan's `normalize`,
    /// else the default. The graph's input grid follows.
    pub normalize: Option<Normalization>,
    pub plan: Option<PathBuf>,
    /// Start from these weights (a `model.safetensors` of the same model) instead of a
    /// fresh initialization; `epochs` then trains further from them (0: use as they are).
    pub weights: Option<PathBuf>,
    /// Network Slimming's L1 penalty on batch-norm γ during the baseline (overrides the
    /// plan's `slim_l1`).
    pub slim_l1: Option<f64>,
    /// The pruners a plan may name.
    pub registry: Registry,
    pub epochs: usize,
    /// Fine-tuning epochs after pruning.
    pub ft_epochs: usize,
    /// Quantization-aware fine-tuning epochs.
    pub qat_epochs: usize,
    pub out: PathBuf,
    /// Where trained baselines are kept, keyed by model, data and seed.
    pub cache: PathBuf,
    pub device: Device,
    pub seed: u64,
    pub resume: bool,
    pub batch_size: usize,
    /// Train on at most this many training images (quick runs and tests).
    pub train_limit: Option<usize>,
    pub progress: bool,
}

impl CompressOptions {
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            model: "lenet5".into(),
            data: None,
            normalize: None,
            plan: None,
            weights: None,
            slim_l1: None,
            registry: Registry::builtin(),
            epochs: 5,
            ft_epochs: 3,
            qat_epochs: 1,
            out: out.into(),
            cache: PathBuf::from("runs/cache"),
            device: Device::Cpu,
            seed: 0,
            resume: false,
            batch_size: 64,
            train_limit: None,
            progress: true,
        }
    }
}

/// One progress line on stderr, unless the run is quiet.
pub(super) fn say(opts: &CompressOptions, line: impl AsRef<str>) {
    if opts.progress {
        eprintln!("{}", line.as_ref());
    }
}

/// The training settings of one stage of the job, checkpointed in `dir` under `key`.
pub(super) fn stage_config(
    opts: &CompressOptions,
    epochs: usize,
    dir: &Path,
    key: &str,
    label: &str,
) -> TrainConfig {
    let mut cfg = TrainConfig::new(epochs, opts.seed);
    cfg.batch_size = opts.batch_size;
    cfg.checkpoint_dir = Some(dir.to_path_buf());
    cfg.resume = opts.resume;
    cfg.run_key = key.to_string();
    cfg.progress = opts.progress;
    cfg.label = label.to_string();
    cfg
}

/// Knowledge distillation as the job's fine-tunes use it (a plan's `distill`).
pub(super) struct Distillation {
    pub distiller: Arc<Distiller>,
    /// Appended to each distilled fine-tune's run key: its checkpoints are not a plain
    /// fine-tune's.
    pub tag: String,
    pub report: DistillReport,
}

impl Distillation {
    /// Makes `cfg` a distilled fine-tune.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        cfg.distill = Some(Arc::clone(&self.distiller));
        cfg.run_key.push_str(&self.tag);
        cfg.label.push_str(" (KD)");
    }
}
