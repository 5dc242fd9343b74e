//! Checkpoints: one safetensors file holding the variables, optimizer state and masks,
//! with the JSON training state embedded in its metadata, written atomically; plus a
//! `state.json` copy for people. The safetensors file is authoritative, so a kill between
//! the two writes cannot pair weights with the wrong epoch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::export::write_atomic;
use crate::quant::QuantState;
use crate::{Error, Result};

/// Everything about a run that is not a tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// What this checkpoint belongs to (model, stage, data, seed): resume refuses a mismatch.
    pub run_key: String,
    pub epochs_completed: usize,
    pub global_step: usize,
    pub optimizer_steps: u64,
    pub seed: u64,
    pub history: Vec<super::EpochStats>,
    /// Range trackers of a bound quantizer, by layer.
    pub quant_states: BTreeMap<String, QuantState>,
    /// The attached pruner's own state (a schedule's position), if it keeps any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruner_state: Option<serde_json::Value>,
}

/// The tensors and state of a checkpoint.
pub struct Checkpoint {
    pub state: TrainState,
    pub vars: BTreeMap<String, Tensor>,
    pub optimizer: BTreeMap<String, Tensor>,
    pub masks: BTreeMap<String, Tensor>,
    pub bias_masks: BTreeMap<String, Tensor>,
}

pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const STATE_FILE: &str = "state.json";

pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

fn export_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Writes `checkpoint` into `dir` (atomically, safetensors first).
pub fn save(dir: &Path, ckpt: &Checkpoint) -> Result<()> {
    let path = checkpoint_path(dir);
    let state_json = serde_json::to_string(&ckpt.state).map_err(|e| export_err(&path, e))?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    for (prefix, map) in [
        ("var.", &ckpt.vars),
        ("optim.", &ckpt.optimizer),
        ("mask.", &ckpt.masks),
        ("bias_mask.", &ckpt.bias_masks),
    ] {
        for (k, v) in map {
            tensors.push((
                format!("{prefix}{k}"),
                v.to_device(&Device::Cpu)?.contiguous()?,
            ));
        }
    }
    let metadata = HashMap::from([("sprig_train_state".to_string(), state_json.clone())]);
    let bytes =
        safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), Some(metadata))
            .map_err(|e| export_err(&path, e))?;
    write_atomic(&path, &bytes)?;
    let pretty = serde_json::to_string_pretty(&ckpt.state).map_err(|e| export_err(&path, e))?;
    write_atomic(&dir.join(STATE_FILE), pretty.as_bytes())
}

/// Reads the checkpoint in `dir`, if there is one.
pub fn load(dir: &Path, device: &Device) -> Result<Option<Checkpoint>> {
    let path = checkpoint_path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io { path, source: e }),
    };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| export_err(&path, e))?;
    let state_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("sprig_train_state"))
        .ok_or_else(|| {
            export_err(
                &path,
                "not a sprig checkpoint (no training state in its metadata)",
            )
        })?;
    let state: TrainState = serde_json::from_str(state_json).map_err(|e| export_err(&path, e))?;
    let tensors =
        candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| export_err(&path, e))?;
    let mut ckpt = Checkpoint {
        state,
        vars: BTreeMap::new(),
        optimizer: BTreeMap::new(),
        masks: BTreeMap::new(),
        bias_masks: BTreeMap::new(),
    };
    for (k, v) in tensors {
        if let Some(name) = k.strip_prefix("var.") {
            ckpt.vars.insert(name.to_string(), v);
        } else if let Some(name) = k.strip_prefix("optim.") {
            ckpt.optimizer.insert(name.to_string(), v);
        } else if let Some(name) = k.strip_prefix("mask.") {
            ckpt.masks.insert(name.to_string(), v);
        } else if let Some(name) = k.strip_prefix("bias_mask.") {
            ckpt.bias_masks.insert(name.to_string(), v);
        } else {
            return Err(export_err(&path, format!("unexpected tensor `{k}`")));
        }
    }
    Ok(Some(ckpt))
}
