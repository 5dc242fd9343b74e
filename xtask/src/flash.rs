//! `cargo xtask flash --board B`: build a hardware board's firmware, flash it and run
//! it with `probe-rs run` (the runner in the board's `.cargo/config.toml`), which
//! streams the defmt log over RTT and exits 0 when every vector was bit-exact.

use std::process::Command;

use anyhow::{bail, Context};

use crate::boards::{self, Kind};
use crate::firmware::{self, Input};

#[derive(clap::Args)]
pub struct Args {
    /// Hardware board folder under boards/ (e.g. nrf52840-dk).
    #[arg(long)]
    board: String,
    #[command(flatten)]
    input: Input,
}

/// How to get probe-rs, for the error when it is missing.
const INSTALL_HINT: &str =
    "install it with `cargo install probe-rs-tools --locked` (Linux also needs the udev \
     rules from probe-rs' documentation to reach the probe without root)";

pub fn run(args: Args) -> anyhow::Result<()> {
    let board = boards::find(&args.board)?;
    if board.kind != Kind::Hardware {
        bail!("{board} is simulated: use `cargo xtask sim --board {board}`");
    }
    let (program, runner_args) = board
        .runner
        .split_first()
        .context("the board's runner is empty")?;
    match Command::new(program).arg("--version").output() {
        Ok(output) if output.status.success() => {}
        Ok(output) => bail!(
            "`{program} --version` failed ({}); {INSTALL_HINT}",
            output.status
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("`{program}` is not installed; {INSTALL_HINT}")
        }
        Err(e) => bail!("could not start `{program}`: {e}"),
    }
    let firmware = firmware::build(&board, &args.input)?;
    let command = format!("{} {}", board.runner.join(" "), firmware.elf.display());
    println!("$ {command}");
    let status = Command::new(program)
        .args(runner_args)
        .arg(&firmware.elf)
        .status()
        .with_context(|| format!("could not start `{command}`"))?;
    if !status.success() {
        bail!(
            "`{command}` failed ({status}): no probe connected, the board not powered, or \
             vectors that differ from the host (see the log above)"
        );
    }
    Ok(())
}
