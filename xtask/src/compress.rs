//! `cargo xtask compress`: the main job on the bundled default (lenet5, Fashion-MNIST,
//! Level 80 % + QAT int8).

use std::path::PathBuf;

use anyhow::Context;
use sprig_compressor::compress::{self, CompressOptions};
use sprig_compressor::import::onnx::is_onnx_path;
use sprig_compressor::models::MODEL_NAMES;
use sprig_compressor::train::device;

#[derive(clap::Args)]
pub struct Args {
    /// Model from the zoo (see `sprig_compressor::models::MODEL_NAMES`), or a float
    /// ONNX file (`path/to/model.onnx`, imported with its trained weights).
    #[arg(long, default_value = "lenet5")]
    model: String,
    /// Folder with MNIST-format IDX files, or a NumPy .npz with x_train, y_train,
    /// x_test, y_test (default: the Debian dataset-fashion-mnist package if installed,
    /// else the bundled subset in data/).
    #[arg(long)]
    data: Option<PathBuf>,
    /// How pixels become model inputs: centered ((p-128)/128), unit (p/255) or
    /// mean=M[,M..]/std=S[,S..] ((p/255-M)/S per channel, as torchvision's Normalize).
    /// The deployed model's int8 input grid follows from it. Default: the plan's
    /// `normalize`, else centered.
    #[arg(long)]
    normalize: Option<sprig_compressor::data::Normalization>,
    /// Compression plan (.json, .toml, .yaml): pruner and quantizer with their config_list.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Start from these trained weights (safetensors named as `model.safetensors`
    /// exports them, e.g. a PyTorch state_dict of the same architecture) instead of
    /// training a baseline.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Baseline training epochs (default 5; 0 with --weights or an ONNX model, whose
    /// weights are then compressed as they are).
    #[arg(long)]
    epochs: Option<usize>,
    /// Network Slimming's L1 penalty λ on batch-norm γ while the baseline trains
    /// (SlimPruner plans; overrides the plan's `slim_l1`).
    #[arg(long)]
    slim_l1: Option<f64>,
    /// Fine-tuning epochs after pruning.
    #[arg(long, default_value_t = 3)]
    ft_epochs: usize,
    /// Quantization-aware fine-tuning epochs.
    #[arg(long, default_value_t = 1)]
    qat_epochs: usize,
    /// Output folder (default: runs/<model>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue interrupted training stages from their checkpoints.
    #[arg(long)]
    resume: bool,
    /// Use only the first N training images (quick runs).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Where trained baselines are cached.
    #[arg(long, default_value = "runs/cache")]
    cache: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let onnx = is_onnx_path(&args.model);
    if !onnx && !MODEL_NAMES.contains(&args.model.as_str()) {
        anyhow::bail!(
            "unknown model `{}`; valid models: {}, or a path ending in .onnx",
            args.model,
            MODEL_NAMES.join(", ")
        );
    }
    // An ONNX file's stem names its run folder; its weights are trained already.
    let stem = std::path::Path::new(&args.model)
        .file_stem()
        .map_or_else(|| args.model.clone(), |s| s.to_string_lossy().into_owned());
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("runs").join(&stem));
    let mut opts = CompressOptions::new(out);
    opts.model = args.model;
    opts.data = args.data;
    opts.normalize = args.normalize;
    opts.plan = args.config;
    opts.epochs = args
        .epochs
        .unwrap_or(if args.weights.is_some() || onnx { 0 } else { 5 });
    opts.weights = args.weights;
    opts.slim_l1 = args.slim_l1;
    opts.ft_epochs = args.ft_epochs;
    opts.qat_epochs = args.qat_epochs;
    opts.cache = args.cache;
    opts.device = device(&args.device)?;
    opts.seed = args.seed;
    opts.resume = args.resume;
    opts.train_limit = args.train_limit;
    let summary = compress::run(&opts).context("compress failed")?;
    println!("\n{summary}");
    Ok(())
}
