//! What an auto run keeps in its folder so that a killed run resumes where it stopped:
//! the settings it was made with (a resumed run must match them), each step's result,
//! and the search with the budget it was made for.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sprig_compressor::auto::{Budget, Evaluated};

use super::Args;

/// The search's result with what it depends on besides the settings.
#[derive(Serialize, Deserialize)]
pub struct SearchRecord {
    pub budget: Budget,
    pub iterations: usize,
    pub seen: Vec<Evaluated>,
}

/// The settings a run folder was made with; a resumed run must match them.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct Settings {
    model: String,
    data: Option<PathBuf>,
    normalize: Option<String>,
    board: Option<String>,
    epochs: usize,
    ft_epochs: usize,
    qat_epochs: usize,
    seed: u64,
    train_limit: Option<usize>,
    max_drop: f64,
    probe_steps: usize,
}

/// Refuses a run folder made with other settings (its cached steps would not match).
pub fn check_settings(out: &Path, args: &Args) -> anyhow::Result<()> {
    let settings = Settings {
        model: args.model.clone(),
        data: args.data.clone(),
        normalize: args.normalize.clone(),
        board: args.board.clone(),
        epochs: args.epochs,
        ft_epochs: args.ft_epochs,
        qat_epochs: args.qat_epochs,
        seed: args.seed,
        train_limit: args.train_limit,
        max_drop: args.max_drop,
        probe_steps: args.probe_steps,
    };
    let path = out.join("settings.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let earlier: Settings = serde_json::from_str(&text)
            .with_context(|| format!("{} is not an auto run's settings", path.display()))?;
        if earlier != settings {
            bail!(
                "{} holds a run with other settings ({}); resume it with those, or use another --out",
                out.display(),
                text.trim()
            );
        }
        eprintln!("resuming the run in {}", out.display());
        return Ok(());
    }
    write(&path, &(serde_json::to_string_pretty(&settings)? + "\n"))
}

/// The value kept in `path`, or `make`'s, kept there for a resumed run.
pub fn cached<T: Serialize + DeserializeOwned>(
    path: &Path,
    make: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    cached_if(path, |_| true, make)
}

/// As [`cached`], but a kept value that `usable` refuses (made by an older version) is
/// made again.
pub fn cached_if<T: Serialize + DeserializeOwned>(
    path: &Path,
    usable: impl FnOnce(&T) -> bool,
    make: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if let Ok(text) = std::fs::read_to_string(path) {
        match serde_json::from_str(&text) {
            Ok(value) if usable(&value) => {
                eprintln!("{}: kept from an earlier run", path.display());
                return Ok(value);
            }
            Ok(_) => eprintln!("{}: made by an older version; redoing it", path.display()),
            Err(_) => {}
        }
    }
    let value = make()?;
    write(path, &serde_json::to_string_pretty(&value)?)?;
    Ok(value)
}

/// Writes `text` to `path` atomically.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    sprig_compressor::export::write_atomic(path, text.as_bytes())?;
    Ok(())
}
