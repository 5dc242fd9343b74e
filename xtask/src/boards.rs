//! The board table, read from the board folders themselves: every folder under
//! `boards/` with a `.cargo/config.toml` is a board; its target and runner come from
//! that file, its flash and RAM from its `memory.x`. A runner that starts with
//! `qemu-system-` makes it a simulated board (`cargo xtask sim`), `probe-rs` a hardware
//! board (`cargo xtask flash`).

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The firmware workspace.
pub fn boards_dir() -> PathBuf {
    repo_root().join("boards")
}

/// How a board runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Under QEMU, in CI.
    Simulated,
    /// On hardware, through probe-rs.
    Hardware,
}

/// One board folder.
#[derive(Debug, Clone)]
pub struct Board {
    /// Folder name under `boards/`, also the package name.
    pub name: String,
    /// The folder.
    pub dir: PathBuf,
    /// Rust target triple (`[build] target`).
    pub target: String,
    /// The runner command line, without the ELF path.
    pub runner: Vec<String>,
    /// The linker the board's `.cargo/config.toml` names (`flip-link` on the Cortex-M
    /// boards), if any; `cargo xtask build` checks that it is installed.
    pub linker: Option<String>,
    /// Bytes of flash (`memory.x` `FLASH` region).
    pub flash: u64,
    /// Bytes of RAM (`memory.x` `RAM` region).
    pub ram: u64,
    /// Simulated or hardware.
    pub kind: Kind,
}

impl fmt::Display for Board {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Every board, in name order.
pub fn all() -> anyhow::Result<Vec<Board>> {
    let dir = boards_dir();
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let path = entry?.path();
        if path.join(".cargo/config.toml").is_file() && path.join("memory.x").is_file() {
            if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    names.iter().map(|n| load(n)).collect()
}

/// The simulated boards.
pub fn simulated() -> anyhow::Result<Vec<Board>> {
    Ok(all()?
        .into_iter()
        .filter(|b| b.kind == Kind::Simulated)
        .collect())
}

/// Board `name`; an unknown name is an error listing the boards there are.
pub fn find(name: &str) -> anyhow::Result<Board> {
    let boards = all()?;
    if let Some(board) = boards.iter().find(|b| b.name == name) {
        return Ok(board.clone());
    }
    let names: Vec<_> = boards.iter().map(|b| b.name.as_str()).collect();
    bail!("unknown board `{name}`; boards: {}", names.join(", "))
}

fn load(name: &str) -> anyhow::Result<Board> {
    let dir = boards_dir().join(name);
    let config_path = dir.join(".cargo/config.toml");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let config: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", config_path.display()))?;
    let target = config
        .get("build")
        .and_then(|b| b.get("target"))
        .and_then(|t| t.as_str())
        .with_context(|| format!("{}: no [build] target", config_path.display()))?
        .to_string();
    let target_table = config.get("target").and_then(|t| t.get(&target));
    let linker = target_table
        .and_then(|t| t.get("linker"))
        .and_then(|l| l.as_str())
        .map(str::to_string);
    let runner = target_table
        .and_then(|t| t.get("runner"))
        .and_then(|r| r.as_str())
        .with_context(|| format!("{}: no runner for {target}", config_path.display()))?;
    let runner: Vec<String> = runner.split_whitespace().map(str::to_string).collect();
    let kind = match runner.first().map(String::as_str) {
        Some(program) if program.starts_with("qemu-system-") => Kind::Simulated,
        Some("probe-rs") => Kind::Hardware,
        _ => bail!(
            "{}: the runner must be qemu-system-* or probe-rs",
            config_path.display()
        ),
    };
    let memory_path = dir.join("memory.x");
    let memory = std::fs::read_to_string(&memory_path)
        .with_context(|| format!("cannot read {}", memory_path.display()))?;
    let memory = sprig_board_build::parse_memory(&memory)
        .map_err(|e| anyhow::anyhow!("{}: {e}", memory_path.display()))?;
    Ok(Board {
        name: name.to_string(),
        dir,
        target,
        runner,
        linker,
        flash: memory.flash,
        ram: memory.ram,
        kind,
    })
}

/// `12.3 KiB`.
pub fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_board_folder_loads() {
        let boards = all().unwrap();
        assert!(boards.iter().any(|b| b.name == "qemu-mps2-an386"));
        for board in &boards {
            assert!(board.flash > 0 && board.ram > 0, "{board}");
        }
    }
}
