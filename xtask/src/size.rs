//! `cargo xtask size --board B`: where a firmware's flash and RAM go.
//!
//! Read from the ELF's section headers (no `cargo size` or `llvm-size` needed):
//! allocated sections are code (executable), read-only data, initialized data (in flash
//! and copied to RAM) and zero-initialized data (RAM only). The embedded model, vectors
//! and arena are found by their symbols (`SPRIG_MODEL`, `SPRIG_VECTORS`, `SPRIG_ARENA`
//! in `sprig-board-common`), so flash splits into runtime code (everything that is not
//! the model or the vectors), model and vectors. `riscv-rt`'s `.stack` and `.heap` are
//! the rest of RAM reserved, not data, and are left out; the stack's real use is
//! measured by `cargo xtask sim`.
//!
//! The firmware links only the kernels of its model's op kinds; the code with every
//! int8 kernel (`--all-ops`) is built and measured too, so both figures are shown.
//! First, the model's weighted layers as stored: encoding (dense or sparse), bytes
//! and density.

use std::path::Path;

use anyhow::Context;
use object::{Object, ObjectSection, ObjectSymbol, SectionFlags, SectionKind};
use sprig_board_build::Kernels;

use crate::boards::{self, kib, Board};
use crate::firmware::{self, Input};

#[derive(clap::Args)]
pub struct Args {
    /// Board folder under boards/.
    #[arg(long, required_unless_present = "all", conflicts_with = "all")]
    board: Option<String>,
    /// Every board.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    input: Input,
    /// Measure only the firmware with every int8 kernel linked.
    #[arg(long)]
    all_ops: bool,
}

const SHF_WRITE: u64 = 0x1;
const SHF_ALLOC: u64 = 0x2;
const SHF_EXECINSTR: u64 = 0x4;

/// Byte counts of one firmware image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Size {
    /// Executable sections (vector table included).
    pub text: u64,
    /// Read-only data (model and vectors included).
    pub rodata: u64,
    /// Initialized data: stored in flash, copied to RAM.
    pub data: u64,
    /// Zero-initialized data (the arena included).
    pub bss: u64,
    /// The embedded model.
    pub model: u64,
    /// The embedded vectors.
    pub vectors: u64,
    /// The model's arena.
    pub arena: u64,
}

impl Size {
    /// Flash used: code, read-only data and the initial values of `.data`.
    pub fn flash(&self) -> u64 {
        self.text + self.rodata + self.data
    }
    /// Static RAM: `.data` and `.bss` (the stack comes on top).
    pub fn ram(&self) -> u64 {
        self.data + self.bss
    }
    /// Flash that is neither the model nor the vectors: the runtime, the firmware,
    /// defmt and startup code with their constants.
    pub fn code(&self) -> u64 {
        self.flash().saturating_sub(self.model + self.vectors)
    }
}

/// Measure the ELF at `path`.
pub fn measure(path: &Path) -> anyhow::Result<Size> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*bytes)
        .with_context(|| format!("{} is not an object file", path.display()))?;
    let mut size = Size::default();
    for section in file.sections() {
        let SectionFlags::Elf { sh_flags } = section.flags() else {
            continue;
        };
        let name = section.name().unwrap_or("");
        if sh_flags & SHF_ALLOC == 0 || matches!(name, ".stack" | ".heap") {
            continue;
        }
        let bytes = section.size();
        if section.kind() == SectionKind::UninitializedData {
            size.bss += bytes;
        } else if sh_flags & SHF_EXECINSTR != 0 {
            size.text += bytes;
        } else if sh_flags & SHF_WRITE != 0 {
            size.data += bytes;
        } else {
            size.rodata += bytes;
        }
    }
    for symbol in file.symbols() {
        let name = symbol.name().unwrap_or("");
        if name.contains("SPRIG_MODEL") {
            size.model = symbol.size();
        } else if name.contains("SPRIG_VECTORS") {
            size.vectors = symbol.size();
        } else if name.contains("SPRIG_ARENA") {
            size.arena = symbol.size();
        }
    }
    Ok(size)
}

/// The two summary lines: flash and RAM against the board's.
pub fn summary(board: &Board, size: &Size) -> String {
    format!(
        "flash {} of {} (runtime code {}, model {}, vectors {})\n\
         RAM   {} of {} static (arena {}, other {}) + stack",
        kib(size.flash()),
        kib(board.flash),
        kib(size.code()),
        kib(size.model),
        kib(size.vectors),
        kib(size.ram()),
        kib(board.ram),
        kib(size.arena),
        kib(size.ram().saturating_sub(size.arena)),
    )
}

/// The model's weighted layers as stored (`weights_table`), named by op index.
fn print_weights(artifacts: &Path) -> anyhow::Result<()> {
    use sprig_compressor::export::packed::{self, sprig_runtime::Model};
    let path = artifacts.join(packed::PACKED_FILE);
    let blob = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let model = Model::from_bytes(&blob)
        .map_err(|e| anyhow::anyhow!("{}: sprig-runtime refuses it: {e}", path.display()))?;
    println!(
        "{}: {} bytes; weights as stored:",
        path.display(),
        blob.len()
    );
    print!("{}", packed::weights_table(&model, &[])?);
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    print_weights(&args.input.artifacts)?;
    let boards = match &args.board {
        Some(name) => vec![boards::find(name)?],
        None => boards::all()?,
    };
    for board in boards {
        // The all-ops build first, so the ELF left on disk is the one reported below.
        let all_ops_code = if args.all_ops {
            None
        } else {
            let all = firmware::build_with(&board, &args.input, Kernels::All)?;
            Some(measure(&all.elf)?.code())
        };
        let kernels = firmware::kernels(args.all_ops);
        let firmware = firmware::build_with(&board, &args.input, kernels)?;
        let size = measure(&firmware.elf)?;
        println!("\n{board} ({}): {}", board.target, firmware.elf.display());
        println!("  {:<8} {:>9}  where", "", "bytes");
        let other_rodata = size.rodata.saturating_sub(size.model + size.vectors);
        println!("  {:<8} {:>9}  flash", "text", size.text);
        println!(
            "  {:<8} {:>9}  flash (model {}, vectors {}, other {other_rodata})",
            "rodata", size.rodata, size.model, size.vectors
        );
        println!("  {:<8} {:>9}  flash, copied to RAM", "data", size.data);
        println!(
            "  {:<8} {:>9}  RAM (arena {}, other {})",
            "bss",
            size.bss,
            size.arena,
            size.bss.saturating_sub(size.arena)
        );
        for line in summary(&board, &size).lines() {
            println!("  {line}");
        }
        match all_ops_code {
            Some(all) => println!(
                "  runtime code {} B with the model's op set, {all} B with every int8 kernel \
                 (--all-ops): {} B less",
                size.code(),
                all.saturating_sub(size.code())
            ),
            None => println!("  runtime code {} B with every int8 kernel", size.code()),
        }
    }
    Ok(())
}
