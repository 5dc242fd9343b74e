//! Build-script helpers shared by sprig's firmware crates.
//!
//! - [`embed`] (the `sprig-board-common` build script): reads `model.sprig` and
//!   `vectors.bin` from a compress run folder, parses the blob with the host
//!   `sprig-runtime` (so a bad blob fails the build, not the board), keeps at most
//!   `SPRIG_MAX_VECTORS` vectors, and writes both files plus `artifacts.rs` (arena size,
//!   table capacities, op set, vector counts) into `OUT_DIR`.
//! - [`link`] (each board's build script): puts the board's `memory.x` on the linker
//!   search path and fails the build, naming both sizes, if the model and vectors
//!   cannot fit the board's flash or the arena its RAM.
//!
//! Environment (set by `cargo xtask build`):
//! - `SPRIG_ARTIFACTS`: the compress run folder (default `<repo>/runs/lenet5`, where
//!   `cargo xtask compress` writes);
//! - `SPRIG_MAX_VECTORS`: keep only the first N vectors (small boards);
//! - `SPRIG_ALL_OPS=1`: link every kernel instead of the model's op set (to measure
//!   the all-ops code size; `cargo xtask build | sim | size --all-ops`);
//! - `SPRIG_PROFILE=1`: log the instructions of every op of the first vector
//!   (boards/README.md, "Counting instructions").
//!
//! Errors are printed to stderr and end the build script with status 1, so cargo shows
//! the message instead of a panic backtrace.

use std::fmt::Display;
use std::fs;
use std::path::{Path, PathBuf};
use std::process;

use sprig_runtime::model::{encodings_in, kernels_in, kinds_in, Kernel};
use sprig_runtime::vectors::Vectors;
use sprig_runtime::{Model, OpSet};

/// Environment variable naming the compress run folder.
pub const ARTIFACTS_ENV: &str = "SPRIG_ARTIFACTS";
/// Environment variable capping how many vectors are embedded.
pub const MAX_VECTORS_ENV: &str = "SPRIG_MAX_VECTORS";
/// Environment variable that, set to `1`, links every kernel instead of the model's.
pub const ALL_OPS_ENV: &str = "SPRIG_ALL_OPS";
/// Environment variable: `1` adds a per-op instruction profile of the first vector.
pub const PROFILE_ENV: &str = "SPRIG_PROFILE";
/// The packed model inside the run folder.
pub const MODEL_FILE: &str = "model.sprig";
/// The test vectors inside the run folder.
pub const VECTORS_FILE: &str = "vectors.bin";
/// Bytes of `vectors.bin`'s header.
pub const VECTORS_HEADER: usize = 20;

/// A compress run's artifacts, checked and ready to embed.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The run folder.
    pub dir: PathBuf,
    /// The packed model, as read.
    pub model: Vec<u8>,
    /// `vectors.bin`, re-encoded with at most `SPRIG_MAX_VECTORS` vectors.
    pub vectors: Vec<u8>,
    /// Vectors in the run folder's file.
    pub total_vectors: usize,
    /// Vectors kept.
    pub kept_vectors: usize,
    /// Bytes of arena the model needs.
    pub arena_size: usize,
    /// Ops in the graph (the `Model` op capacity the firmware uses).
    pub ops: usize,
    /// Tensors in the graph (the `Model` tensor capacity).
    pub tensors: usize,
    /// The op kinds the graph uses (a `Model` op set: bit `k` = wire tag `k`).
    pub op_set: OpSet,
    /// Int8 input elements.
    pub input_len: usize,
    /// Int8 output elements.
    pub output_len: usize,
}

/// Print `message` as a build error and stop the build script.
pub fn fail(message: impl Display) -> ! {
    eprintln!("error: {message}");
    process::exit(1);
}

/// The compress run folder: `SPRIG_ARTIFACTS`, else `<repo>/runs/lenet5`.
pub fn artifacts_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed={ARTIFACTS_ENV}");
    match std::env::var_os(ARTIFACTS_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let boards = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
            let repo = boards.and_then(Path::parent).unwrap_or(Path::new("."));
            repo.join("runs").join("lenet5")
        }
    }
}

fn read(path: &Path) -> Vec<u8> {
    println!("cargo:rerun-if-changed={}", path.display());
    fs::read(path).unwrap_or_else(|e| fail(format_args!("cannot read {}: {e}", path.display())))
}

/// `SPRIG_MAX_VECTORS`, if set.
pub fn max_vectors() -> Option<usize> {
    println!("cargo:rerun-if-env-changed={MAX_VECTORS_ENV}");
    let value = std::env::var(MAX_VECTORS_ENV).ok()?;
    Some(value.trim().parse().unwrap_or_else(|_| {
        fail(format_args!(
            "{MAX_VECTORS_ENV}={value:?} is not a count of vectors"
        ))
    }))
}

/// Read, validate and cap the artifacts in `dir`, keeping at most `max_vectors`
/// vectors. No cargo output: `xtask` uses this too.
pub fn read_artifacts(dir: &Path, max_vectors: Option<usize>) -> Result<Artifacts, String> {
    let model_path = dir.join(MODEL_FILE);
    let vectors_path = dir.join(VECTORS_FILE);
    let read =
        |path: &Path| fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    let model = read(&model_path)?;
    let vectors = read(&vectors_path)?;
    let parsed = Model::from_bytes(&model)
        .map_err(|e| format!("{} is not a valid sprig model: {e}", model_path.display()))?;
    let parsed_vectors = Vectors::parse(&vectors)
        .map_err(|e| format!("{} is not a valid vector file: {e}", vectors_path.display()))?;
    let (input_len, output_len) = (parsed.input_len(), parsed.output_len());
    if parsed_vectors.input_len() != input_len || parsed_vectors.output_len() != output_len {
        return Err(format!(
            "{} holds vectors of {} inputs and {} outputs, but {} takes {input_len} and \
             gives {output_len}: they come from different runs",
            vectors_path.display(),
            parsed_vectors.input_len(),
            parsed_vectors.output_len(),
            model_path.display()
        ));
    }
    let total_vectors = parsed_vectors.len();
    let kept_vectors = max_vectors.map_or(total_vectors, |cap| cap.min(total_vectors));
    let mut capped = vectors;
    capped.truncate(VECTORS_HEADER + kept_vectors * record_len(input_len, output_len));
    capped[8..12].copy_from_slice(&(kept_vectors as u32).to_le_bytes());
    Ok(Artifacts {
        dir: dir.to_path_buf(),
        arena_size: parsed.arena_size(),
        ops: parsed.ops().len(),
        tensors: parsed.tensors().len(),
        op_set: parsed
            .op_set_used()
            .map_err(|e| format!("{}: {e}", model_path.display()))?,
        input_len,
        output_len,
        model,
        vectors: capped,
        total_vectors,
        kept_vectors,
    })
}

/// Bytes of one vector in `vectors.bin`: label, input, expected output.
pub fn record_len(input_len: usize, output_len: usize) -> usize {
    1 + input_len + output_len
}

/// [`read_artifacts`] for a build script: the folder and cap from the environment,
/// rebuilds when either file or variable changes, errors end the build.
pub fn load() -> Artifacts {
    let dir = artifacts_dir();
    for file in [MODEL_FILE, VECTORS_FILE] {
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
    }
    read_artifacts(&dir, max_vectors()).unwrap_or_else(|e| {
        fail(format_args!(
            "{e}\n  set {ARTIFACTS_ENV} to a compress run folder holding {MODEL_FILE} and \
             {VECTORS_FILE} (`cargo xtask compress --out DIR` writes them), or build with \
             `cargo xtask build --board <board> --artifacts DIR`"
        ))
    })
}

fn out_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")))
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    fs::write(path, bytes)
        .unwrap_or_else(|e| fail(format_args!("cannot write {}: {e}", path.display())));
}

/// Which kernels the firmware links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Only those of the embedded model's op kinds (the default).
    OfModel,
    /// Every kernel the runtime has (`SPRIG_ALL_OPS=1`).
    All,
}

/// `SPRIG_PROFILE`: `1` times every op of the first vector after the run and logs one
/// line per op; unset, empty or `0`: no profile.
pub fn profile() -> bool {
    println!("cargo:rerun-if-env-changed={PROFILE_ENV}");
    match std::env::var(PROFILE_ENV).as_deref() {
        Err(_) | Ok("" | "0") => false,
        Ok("1") => true,
        Ok(other) => fail(format_args!(
            "{PROFILE_ENV}={other:?}: set it to 1 (time every op) or 0 (no profile)"
        )),
    }
}

/// `SPRIG_ALL_OPS`: `1` links every kernel; unset, empty or `0` the model's.
pub fn kernels() -> Kernels {
    println!("cargo:rerun-if-env-changed={ALL_OPS_ENV}");
    match std::env::var(ALL_OPS_ENV).as_deref() {
        Err(_) | Ok("" | "0") => Kernels::OfModel,
        Ok("1") => Kernels::All,
        Ok(other) => fail(format_args!(
            "{ALL_OPS_ENV}={other:?}: set it to 1 (every kernel) or 0 (the model's)"
        )),
    }
}

/// The `OP_SET` constant of `artifacts.rs`: the model's op kinds and weight encodings
/// by name, or every kernel, so the firmware's `Model` links exactly those.
pub fn op_set_rs(artifacts: &Artifacts, kernels: Kernels) -> String {
    let set = match kernels {
        Kernels::OfModel => {
            let set = artifacts.op_set;
            let kinds = kinds_in(set).map(|k| format!("OpKind::{k:?}"));
            // Only the encodings its weights use (no dense kernel where none is dense)
            // and the kernels its ops run where their kind has several.
            let encodings = encodings_in(set).map(|e| format!("Encoding::{e:?}"));
            let kernels = kernels_in(set).map(|k| match k {
                Kernel::FusedSparse(k) => {
                    format!("Kernel::FusedSparse({RUNTIME}FusedSparseKernel::{k:?})")
                }
                Kernel::DenseConv(k) => {
                    format!("Kernel::DenseConv({RUNTIME}DenseConvKernel::{k:?})")
                }
                Kernel::Depthwise(k) => {
                    format!("Kernel::Depthwise({RUNTIME}DepthwiseKernel::{k:?})")
                }
                Kernel::DenseFc(k) => format!("Kernel::DenseFc({RUNTIME}DenseFcKernel::{k:?})"),
            });
            let mut text = set_of("kind_set", kinds);
            for (function, items) in [
                ("encoding_set", encodings.collect::<Vec<_>>()),
                ("kernel_set", kernels.collect()),
            ] {
                if !items.is_empty() {
                    text += &format!("\n    | {}", set_of(function, items.into_iter()));
                }
            }
            text
        }
        Kernels::All => "::sprig_runtime::ALL_OPS".to_string(),
    };
    let what = match kernels {
        Kernels::OfModel => "the embedded model's op kinds",
        Kernels::All => "every op kind (`SPRIG_ALL_OPS=1`)",
    };
    format!(
        "/// The `Model` op set: {what}; only their kernels are linked.\n\
         pub const OP_SET: ::sprig_runtime::OpSet = {set};\n"
    )
}

/// The runtime crate's path in generated code.
const RUNTIME: &str = "::sprig_runtime::";

/// `::sprig_runtime::function(&[..])` of `items`, one a line.
fn set_of(function: &str, items: impl Iterator<Item = String>) -> String {
    let items: String = items
        .map(|item| format!("\n    {RUNTIME}{item},"))
        .collect();
    format!("{RUNTIME}{function}(&[{items}\n])")
}

/// For `sprig-board-common`'s build script: write the model, the capped vectors and
/// `artifacts.rs` into `OUT_DIR`.
pub fn embed() -> Artifacts {
    let artifacts = load();
    let out = out_dir();
    write(&out.join(MODEL_FILE), &artifacts.model);
    write(&out.join(VECTORS_FILE), &artifacts.vectors);
    let consts = format!(
        "/// Bytes of arena the embedded model needs.\n\
         pub const ARENA_SIZE: usize = {};\n\
         /// Ops in the embedded model (the `Model` op capacity).\n\
         pub const MAX_OPS: usize = {};\n\
         /// Tensors in the embedded model (the `Model` tensor capacity).\n\
         pub const MAX_TENSORS: usize = {};\n\
         {}\
         /// Vectors in the run folder's `vectors.bin`.\n\
         pub const TOTAL_VECTORS: usize = {};\n\
         /// Int8 output elements of the model.\n\
         pub const OUTPUT_LEN: usize = {};\n\
         /// Whether to log a per-op profile of the first vector (`SPRIG_PROFILE=1`).\n\
         pub const PROFILE: bool = {};\n",
        artifacts.arena_size.max(1),
        artifacts.ops.max(1),
        artifacts.tensors.max(1),
        op_set_rs(&artifacts, kernels()),
        artifacts.total_vectors,
        artifacts.output_len.max(1),
        profile(),
    );
    write(&out.join("artifacts.rs"), consts);
    artifacts
}

/// A board's memory, from its `memory.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Bytes of the `FLASH` region.
    pub flash: u64,
    /// Bytes of the `RAM` region.
    pub ram: u64,
}

/// Parse `LENGTH = 256K` style values of the `FLASH` and `RAM` regions of a linker
/// script's `MEMORY` block.
pub fn parse_memory(script: &str) -> Result<Memory, String> {
    let region = |name: &str| -> Result<u64, String> {
        let line = script
            .lines()
            .map(|l| l.split("/*").next().unwrap_or("").trim())
            .find(|l| {
                l.split(|c: char| c == ':' || c.is_whitespace())
                    .next()
                    .is_some_and(|first| first == name)
            })
            .ok_or_else(|| format!("no {name} region in the MEMORY block"))?;
        let length = line
            .split(',')
            .find_map(|part| {
                let (key, value) = part.split_once('=')?;
                key.trim()
                    .eq_ignore_ascii_case("LENGTH")
                    .then(|| value.trim())
            })
            .ok_or_else(|| format!("the {name} region has no LENGTH: {line}"))?;
        parse_size(length).ok_or_else(|| format!("cannot read the {name} LENGTH {length:?}"))
    };
    Ok(Memory {
        flash: region("FLASH")?,
        ram: region("RAM")?,
    })
}

/// `256K`, `4M`, `0x40000` or `65536` in bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, scale) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1024),
        b'M' | b'm' => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    let value = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse().ok()?,
    };
    value.checked_mul(scale)
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Check that `artifacts` can fit `memory`: model plus vectors within flash, arena
/// within RAM. Code, stack and the rest are checked by the linker itself.
pub fn check_fits(board: &str, memory: Memory, artifacts: &Artifacts) -> Result<(), String> {
    let model = artifacts.model.len() as u64;
    let vectors = artifacts.vectors.len() as u64;
    if model + vectors > memory.flash {
        return Err(format!(
            "the model and vectors need {} of flash (model {}, {} vectors {}), but {board} \
             has {} of flash; keep fewer vectors with {MAX_VECTORS_ENV} (cargo xtask build \
             does this) or compress a smaller model",
            kib(model + vectors),
            kib(model),
            artifacts.kept_vectors,
            kib(vectors),
            kib(memory.flash),
        ));
    }
    let arena = artifacts.arena_size as u64;
    if arena > memory.ram {
        return Err(format!(
            "the model needs {} of arena RAM, but {board} has {} of RAM",
            kib(arena),
            kib(memory.ram)
        ));
    }
    Ok(())
}

/// For a board's build script: copy `memory.x` (the board folder's) into `OUT_DIR`,
/// put it on the linker search path, and check that the artifacts fit the board.
pub fn link(board: &str) -> Memory {
    let manifest = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| fail("CARGO_MANIFEST_DIR is not set")),
    );
    let memory_x = manifest.join("memory.x");
    let script = String::from_utf8(read(&memory_x))
        .unwrap_or_else(|_| fail(format_args!("{} is not UTF-8", memory_x.display())));
    let memory =
        parse_memory(&script).unwrap_or_else(|e| fail(format_args!("{}: {e}", memory_x.display())));
    let out = out_dir();
    write(&out.join("memory.x"), &script);
    // cortex-m-rt's `device` feature makes its link.x include a device.x (interrupt
    // handler names); the firmware defines its own one-entry interrupt table
    // (sprig-board-common's `interrupts`), so there are none to provide.
    write(
        &out.join("device.x"),
        "/* No device interrupt handlers: see sprig-board-common's interrupts.rs. */\n",
    );
    println!("cargo:rustc-link-search={}", out.display());
    let artifacts = load();
    if let Err(message) = check_fits(board, memory, &artifacts) {
        fail(message);
    }
    memory
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_x_lengths() {
        let script = "MEMORY\n{\n  /* flash */\n  FLASH : ORIGIN = 0x00000000, LENGTH = 256K\n  \
                      RAM (rwx): ORIGIN = 0x20000000, LENGTH = 0x4000 /* 16 KiB */\n}\n";
        assert_eq!(
            parse_memory(script),
            Ok(Memory {
                flash: 256 * 1024,
                ram: 16 * 1024
            })
        );
        assert!(parse_memory("MEMORY { }").is_err());
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("12x"), None);
    }

    /// A run folder holding a fully connected layer and an argmax, with one vector.
    fn fc_argmax_run() -> PathBuf {
        use sprig_runtime::format::write::{BlobBuilder, GraphDef};
        use sprig_runtime::vectors::write_vectors;
        use sprig_runtime::{ArgMax, FullyConnected, Op, Tensor, TensorKind, Weights};

        let tensor = |shape: &[u32], kind| Tensor {
            shape: shape.iter().copied().collect(),
            scale: 1.0,
            zero_point: 0,
            arena_offset: 0,
            kind,
        };
        let mut b = BlobBuilder::new();
        let weights = Weights::dense(b.push_i8(&[1, 2, 2, 0, -1, 1]).unwrap());
        let requant = b.push_requant(&[(1 << 30, 1)]).unwrap();
        let mut graph = GraphDef {
            tensors: vec![
                tensor(&[1, 2], TensorKind::Input),
                tensor(&[1, 3], TensorKind::Activation),
                tensor(&[1, 1], TensorKind::Output),
            ],
            ops: vec![
                Op::FullyConnected(FullyConnected {
                    input: 0,
                    output: 1,
                    weights,
                    bias: None,
                    requant,
                    act_min: -128,
                    act_max: 127,
                }),
                Op::ArgMax(ArgMax {
                    input: 1,
                    output: 2,
                }),
            ],
            input: 0,
            output: 2,
            arena_size: 0,
        };
        graph.plan_arena().unwrap();
        let dir = std::env::temp_dir().join(format!("sprig-board-build-{}", process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(MODEL_FILE), b.finish(&graph).unwrap()).unwrap();
        let vectors = write_vectors(2, 1, &[(0, vec![3, 4], vec![0])]).unwrap();
        fs::write(dir.join(VECTORS_FILE), vectors).unwrap();
        dir
    }

    #[test]
    fn the_op_set_names_exactly_the_models_kinds() {
        use sprig_runtime::model::KERNEL_CHOICES;
        use sprig_runtime::{op_set, DenseFcKernel, OpKind, ALL_OPS};

        let dir = fc_argmax_run();
        let artifacts = read_artifacts(&dir, None).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        // Its fully connected op is small: the plain loop.
        assert_eq!(
            artifacts.op_set,
            op_set(&[OpKind::FullyConnected, OpKind::ArgMax]) | DenseFcKernel::Plain.bit()
        );
        assert_eq!(
            op_set_rs(&artifacts, Kernels::OfModel),
            "/// The `Model` op set: the embedded model's op kinds; only their kernels are \
             linked.\n\
             pub const OP_SET: ::sprig_runtime::OpSet = ::sprig_runtime::kind_set(&[\n    \
             ::sprig_runtime::OpKind::FullyConnected,\n    \
             ::sprig_runtime::OpKind::ArgMax,\n])\n    \
             | ::sprig_runtime::encoding_set(&[\n    \
             ::sprig_runtime::Encoding::Dense,\n])\n    \
             | ::sprig_runtime::kernel_set(&[\n    \
             ::sprig_runtime::Kernel::DenseFc(::sprig_runtime::DenseFcKernel::Plain),\n]);\n"
        );
        let all = op_set_rs(&artifacts, Kernels::All);
        assert!(
            all.ends_with("pub const OP_SET: ::sprig_runtime::OpSet = ::sprig_runtime::ALL_OPS;\n"),
            "{all}"
        );
        assert_eq!(ALL_OPS.count_ones(), OpKind::ALL.len() as u32 + 6);
        // Sparse weights name their encoding, and without dense weights dense is left out.
        let sparse = Artifacts {
            op_set: (artifacts.op_set & !sprig_runtime::Encoding::Dense.bit() & !KERNEL_CHOICES)
                | sprig_runtime::Encoding::SparseRel4.bit(),
            ..artifacts
        };
        assert!(op_set_rs(&sparse, Kernels::OfModel).ends_with(
            "::sprig_runtime::OpKind::ArgMax,\n])\n    \
             | ::sprig_runtime::encoding_set(&[\n    \
             ::sprig_runtime::Encoding::SparseRel4,\n]);\n"
        ));
        // A fused sparse op names the kernel it runs.
        let fused = Artifacts {
            op_set: sparse.op_set | sprig_runtime::FusedSparseKernel::Windows.bit(),
            ..sparse
        };
        assert!(op_set_rs(&fused, Kernels::OfModel).ends_with(
            "::sprig_runtime::Encoding::SparseRel4,\n])\n    \
             | ::sprig_runtime::kernel_set(&[\n    \
             ::sprig_runtime::Kernel::FusedSparse(::sprig_runtime::FusedSparseKernel::Windows),\n]);\n"
        ));
        // So do dense convs, depthwise convs and fully connected ops, in bit order.
        let dense = Artifacts {
            op_set: artifacts.op_set
                | sprig_runtime::DepthwiseKernel::Lanes.bit()
                | sprig_runtime::DenseConvKernel::Gathered.bit(),
            ..fused
        };
        assert!(op_set_rs(&dense, Kernels::OfModel).ends_with(
            "::sprig_runtime::Encoding::Dense,\n])\n    \
             | ::sprig_runtime::kernel_set(&[\n    \
             ::sprig_runtime::Kernel::DenseConv(::sprig_runtime::DenseConvKernel::Gathered),\n    \
             ::sprig_runtime::Kernel::Depthwise(::sprig_runtime::DepthwiseKernel::Lanes),\n    \
             ::sprig_runtime::Kernel::DenseFc(::sprig_runtime::DenseFcKernel::Plain),\n]);\n"
        ));
    }
}
