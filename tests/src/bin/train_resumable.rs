//! A resumable training run for the kill-and-resume test: trains lenet5 on the first
//! IMAGES bundled training images for EPOCHS epochs with checkpoints in DIR (resuming
//! from one if present), then writes the final weights to DIR/final.safetensors.
//!
//! `train_resumable DIR EPOCHS IMAGES`

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use sprig_compressor::data;
use sprig_compressor::models::Model;
use sprig_compressor::train::{self, TrainConfig};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, epochs, images] = args.as_slice() else {
        anyhow::bail!("usage: train_resumable DIR EPOCHS IMAGES");
    };
    let dir = PathBuf::from(dir);
    let epochs: usize = epochs.parse().context("EPOCHS")?;
    let images: usize = images.parse().context("IMAGES")?;
    let (train_set, test_set) = data::DataSource::Bundled(data::bundled_dir()).load()?;
    let (train_set, test_set) = (train_set.subset(images), test_set.subset(100));
    let mut model = Model::new("lenet5", 10, &Device::Cpu, 5)?;
    let mut cfg = TrainConfig::new(epochs, 5);
    cfg.checkpoint_dir = Some(dir.clone());
    cfg.resume = true;
    cfg.run_key = "kill-resume".into();
    cfg.progress = false;
    train::train(&mut model, &train_set, &test_set, &cfg, None)?;
    model.varmap.save(dir.join("final.safetensors"))?;
    Ok(())
}
