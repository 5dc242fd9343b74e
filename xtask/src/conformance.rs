//! `cargo xtask conformance --tflite DIR`: every `.tflite` model in DIR through sprig and
//! through TensorFlow Lite Micro, input for input, compared byte for byte (issue 5, item 3).
//!
//! Per int8 model (float models are listed and skipped): import with
//! [`tflite_to_sprig`]; K seeded random int8 inputs (numpy's `default_rng(seed)`, drawn
//! by the Python helper `xtask/conformance/tflm_reference.py`, which writes the exact
//! bytes it fed TFLM so sprig gets the same ones), plus for `person_detect` the two sample
//! images `DIR/../samples/{person,no_person}.bmp` (each twice: its bytes as int8, as TFLM's
//! person_detection test feeds them, and p − 128); TFLM (the `tflite-micro` Python package,
//! reference kernels) runs them in a virtual environment, sprig runs them on the host on
//! one thread. A table gives ops, `.tflite` vs `.sprig` bytes, TFLM arena vs sprig arena,
//! TFLM vs sprig µs per inference and mismatching bytes; any mismatch or error makes the
//! command fail. `--bench` appends the table to BENCHMARKS.md.
//!
//! The QEMU Cortex-M4 column (issue 5, item 4): each imported model is written to
//! `runs/conformance/<model>/` (`model.sprig`, and `vectors.bin` holding the first
//! `--qemu-vectors` random inputs with TFLM's outputs as the expected ones, labels 0),
//! the qemu-mps2-an386 firmware is built with it and booted, and the device's outputs are
//! compared byte for byte with TFLM's; instructions per inference (QEMU `-icount`, not
//! cycles) and per MAC (MACs from the import summary) go in the table. A model too big for
//! the board is shown as "does not fit"; any device mismatch fails the command.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use sprig_compressor::export::packed::sprig_runtime::Model;
use sprig_compressor::import::tflite::{self, tensor_type};
use sprig_compressor::import::tflite_to_sprig;

/// The Python interpreter of the virtual environment, relative to the repository root.
const DEFAULT_PYTHON: &str = ".venv-tflm/bin/python";
/// The reference helper, relative to the repository root.
const HELPER: &str = "xtask/conformance/tflm_reference.py";
/// The model whose sample images are also compared.
const PERSON_DETECT: &str = "person_detect";
const SAMPLES: [&str; 2] = ["person.bmp", "no_person.bmp"];
/// Issue 5's host-latency target: sprig at least this many times faster than TFLM.
const TARGET_SPEEDUP: f64 = 10.0;
/// The simulated Cortex-M4 board of the QEMU column.
const QEMU_BOARD: &str = "qemu-mps2-an386";
/// Where each model's firmware artifacts go, relative to the repository root.
const QEMU_RUNS: &str = "runs/conformance";

#[derive(clap::Args)]
pub struct Args {
    /// Folder of `.tflite` models (every `*.tflite` in it is checked).
    #[arg(long)]
    tflite: PathBuf,
    /// Seeded random int8 inputs per model.
    #[arg(long, default_value_t = 100)]
    inputs: usize,
    /// Seed of the random inputs (numpy `default_rng`).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Python with the `tflite-micro` package (default: `.venv-tflm/bin/python` in the
    /// repository root).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Folder with person_detect's sample images (default: DIR/../samples).
    #[arg(long)]
    samples: Option<PathBuf>,
    /// sprig timing rounds over all inputs (the median round is reported).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Append the table to `--output`.
    #[arg(long)]
    bench: bool,
    /// Where `--bench` appends.
    #[arg(long, default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Inputs per model run on the simulated Cortex-M4 (qemu-mps2-an386) and compared
    /// with TFLM there; 0 leaves the QEMU column out.
    #[arg(long, default_value_t = 10)]
    qemu_vectors: usize,
    /// Seconds QEMU may run per model.
    #[arg(long, default_value_t = 300)]
    qemu_timeout: u64,
}

/// One model on the simulated Cortex-M4.
enum Qemu {
    /// `--qemu-vectors 0`.
    Off,
    /// Ran: vectors, vectors whose output differed from TFLM's, mean instructions per
    /// inference.
    Ran {
        vectors: u64,
        mismatches: u64,
        per_inference: f64,
    },
    /// The model or its arena is too big for the board (the sizes, in words).
    DoesNotFit(String),
    /// Building or booting failed.
    Failed(String),
}

/// One model's row.
enum Row {
    Skipped { name: String, why: String },
    Failed { name: String, error: String },
    Checked(Box<Checked>),
}

struct Checked {
    name: String,
    tflite_ops: usize,
    sprig_ops: usize,
    tflite_bytes: usize,
    sprig_bytes: usize,
    tflm_arena_total: Option<u64>,
    tflm_arena_head: Option<u64>,
    sprig_arena: usize,
    tflm_us: f64,
    sprig_us: f64,
    inputs: usize,
    output_bytes: usize,
    mismatching_bytes: usize,
    mismatching_inputs: usize,
    /// Sample images: (file, sprig output, TFLM output).
    samples: Vec<(String, Vec<i8>, Vec<i8>)>,
    /// Multiply-accumulates per inference (the import summary's).
    macs: u64,
    /// The simulated Cortex-M4.
    qemu: Qemu,
}

impl Row {
    fn failed(&self) -> bool {
        match self {
            Row::Skipped { .. } => false,
            Row::Failed { .. } => true,
            Row::Checked(c) => {
                c.mismatching_bytes > 0
                    || matches!(c.qemu, Qemu::Failed(_))
                    || matches!(c.qemu, Qemu::Ran { mismatches, .. } if mismatches > 0)
            }
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    if args.inputs == 0 || args.rounds == 0 {
        bail!("--inputs and --rounds must be at least 1");
    }
    let root = crate::boards::repo_root();
    let python = args
        .python
        .clone()
        .unwrap_or_else(|| root.join(DEFAULT_PYTHON));
    check_python(&python, args.python.is_none())?;
    let helper = root.join(HELPER);
    let samples_dir = args
        .samples
        .clone()
        .unwrap_or_else(|| args.tflite.join("../samples"));

    let mut models: Vec<PathBuf> = std::fs::read_dir(&args.tflite)
        .with_context(|| format!("reading the folder {}", args.tflite.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tflite") && p.is_file())
        .collect();
    models.sort();
    if models.is_empty() {
        bail!("no .tflite files in {}", args.tflite.display());
    }

    let work = std::env::temp_dir().join(format!("sprig-conformance-{}", std::process::id()));
    let mut rows = Vec::new();
    for path in &models {
        let name = path
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        println!("{name}: checking…");
        let row = check_model(path, &name, &args, &python, &helper, &samples_dir, &work)
            .unwrap_or_else(|e| Row::Failed {
                name: name.clone(),
                error: format!("{e:#}"),
            });
        match &row {
            Row::Skipped { why, .. } => println!("{name}: skipped ({why})"),
            Row::Failed { error, .. } => println!("{name}: FAILED: {error}"),
            Row::Checked(c) => {
                println!(
                    "{name}: {} inputs, {} mismatching bytes ({} inputs); TFLM {} µs, sprig {} µs",
                    c.inputs,
                    c.mismatching_bytes,
                    c.mismatching_inputs,
                    micros(c.tflm_us),
                    micros(c.sprig_us)
                );
                match &c.qemu {
                    Qemu::Off => {}
                    Qemu::Ran {
                        vectors,
                        mismatches,
                        per_inference,
                    } => println!(
                        "  {QEMU_BOARD}: {vectors} vectors, {mismatches} differ from TFLM; \
                         {per_inference:.0} instructions per inference"
                    ),
                    Qemu::DoesNotFit(why) => println!("  {QEMU_BOARD}: does not fit ({why})"),
                    Qemu::Failed(e) => println!("  {QEMU_BOARD}: FAILED: {e}"),
                }
                for (file, got, want) in &c.samples {
                    println!(
                        "  {file}: sprig {got:?}, TFLM {want:?}{}",
                        if got == want {
                            " (identical)"
                        } else {
                            " (DIFFER)"
                        }
                    );
                }
            }
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&work);

    let table = table(&rows, args.qemu_vectors > 0);
    println!("\n{table}");
    let elapsed = started.elapsed().as_secs_f64();
    println!("conformance run took {elapsed:.0} s");

    if args.bench {
        append(&args, &rows, &table)?;
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| r.failed())
        .map(|r| match r {
            Row::Skipped { name, .. } | Row::Failed { name, .. } => name.as_str(),
            Row::Checked(c) => c.name.as_str(),
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "conformance failed for {}: see the table above",
            failed.join(", ")
        );
    }
    let checked = rows.iter().filter(|r| matches!(r, Row::Checked(_))).count();
    println!("all {checked} int8 models byte-identical with TensorFlow Lite Micro on every input");
    Ok(())
}

/// The interpreter must exist and import `tflite_micro`; otherwise say how to make it.
fn check_python(python: &Path, default: bool) -> anyhow::Result<()> {
    let how = "create it from the repository root with:\n    python3 -m venv .venv-tflm\n    \
               .venv-tflm/bin/pip install tflite-micro numpy";
    if !python.exists() {
        if default {
            bail!(
                "{} not found: the conformance check runs TensorFlow Lite Micro from a Python \
                 virtual environment; {how}\n(or pass --python PATH to an interpreter that has \
                 the tflite-micro and numpy packages)",
                python.display()
            );
        }
        bail!("--python {} does not exist", python.display());
    }
    let out = Command::new(python)
        .args([
            "-c",
            "import numpy; from tflite_micro.python.tflite_micro import runtime",
        ])
        .output()
        .with_context(|| format!("could not start {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import tflite_micro and numpy ({}); {how}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn check_model(
    path: &Path,
    name: &str,
    args: &Args,
    python: &Path,
    helper: &Path,
    samples_dir: &Path,
    work: &Path,
) -> anyhow::Result<Row> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    // Float models: listed, not checked (sprig imports fully int8 models only).
    let parsed = tflite::parse(&bytes).map_err(|e| anyhow!("{e}"))?;
    if let Some(sg) = parsed.subgraphs.first() {
        let dtype_of = |i: Option<&i32>| {
            i.and_then(|&i| usize::try_from(i).ok())
                .and_then(|i| sg.tensors.get(i))
                .map(|t| t.dtype)
        };
        let (din, dout) = (dtype_of(sg.inputs.first()), dtype_of(sg.outputs.first()));
        if din == Some(tensor_type::FLOAT32) || dout == Some(tensor_type::FLOAT32) {
            return Ok(Row::Skipped {
                name: name.into(),
                why: "float32 model; sprig imports int8 models".into(),
            });
        }
    }
    let imported = tflite_to_sprig(&bytes, name).map_err(|e| anyhow!("import: {e}"))?;
    let model = Model::from_bytes(&imported.blob)
        .map_err(|e| anyhow!("sprig-runtime refuses the imported blob: {e}"))?;
    let (n_in, n_out) = (model.input_len(), model.output_len());

    let dir = work.join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut sample_names = Vec::new();
    let mut extra = None;
    if name == PERSON_DETECT {
        let mut bytes = Vec::new();
        for file in SAMPLES {
            let gray = bmp_gray(&samples_dir.join(file), n_in)?;
            // TFLite Micro's person_detection test copies the image bytes as they are
            // into the int8 input (`memcpy`); the input quantization (scale 2/255, zero
            // point −1, i.e. [−1, 1]) suggests p − 128 instead. Both go through; only the
            // first classifies both samples right.
            bytes.extend_from_slice(&gray);
            sample_names.push(format!("{file} (bytes as int8, as TFLM's example)"));
            bytes.extend(gray.iter().map(|&p| p ^ 0x80));
            sample_names.push(format!("{file} (p − 128)"));
        }
        let p = dir.join("samples.bin");
        std::fs::write(&p, &bytes).with_context(|| format!("writing {}", p.display()))?;
        extra = Some(p);
    }

    // TFLM: draws the random inputs, runs them (and the samples), writes all of it.
    let mut cmd = Command::new(python);
    cmd.arg(helper)
        .arg(path)
        .arg(args.inputs.to_string())
        .arg(args.seed.to_string())
        .arg(&dir);
    if let Some(p) = &extra {
        cmd.arg(p);
    }
    let out = cmd
        .output()
        .with_context(|| format!("could not start {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "TFLM reference run failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("info.json"))?)
        .context("reading the helper's info.json")?;
    let inputs = std::fs::read(dir.join("inputs.bin"))?;
    let want = std::fs::read(dir.join("outputs.bin"))?;
    let count = args.inputs + sample_names.len();
    if info["input_len"].as_u64() != Some(n_in as u64)
        || info["output_len"].as_u64() != Some(n_out as u64)
        || inputs.len() != count * n_in
        || want.len() != count * n_out
    {
        bail!(
            "TFLM sees {} → {} elements per inference ({} input and {} output bytes for {count} \
             inferences), sprig {n_in} → {n_out}",
            info["input_len"],
            info["output_len"],
            inputs.len(),
            want.len()
        );
    }
    let inputs: Vec<i8> = inputs.iter().map(|&b| b as i8).collect();
    let want: Vec<i8> = want.iter().map(|&b| b as i8).collect();

    // sprig: every input, compared byte for byte.
    let mut arena = vec![0u8; model.arena_size()];
    let mut got = vec![0i8; count * n_out];
    for (x, y) in inputs.chunks_exact(n_in).zip(got.chunks_exact_mut(n_out)) {
        model
            .run(&mut arena, x, y)
            .map_err(|e| anyhow!("sprig-runtime: {e}"))?;
    }
    let mismatching_bytes = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    let mismatching_inputs = got
        .chunks_exact(n_out)
        .zip(want.chunks_exact(n_out))
        .filter(|(a, b)| a != b)
        .count();
    let samples = sample_names
        .into_iter()
        .enumerate()
        .map(|(i, file)| {
            let at = (args.inputs + i) * n_out..(args.inputs + i + 1) * n_out;
            (file, got[at.clone()].to_vec(), want[at].to_vec())
        })
        .collect();

    // sprig timing: one warm-up round, then `rounds` rounds over all inputs; the median.
    let mut out = vec![0i8; n_out];
    let mut round = || -> anyhow::Result<f64> {
        let t = Instant::now();
        for x in inputs.chunks_exact(n_in) {
            model
                .run(&mut arena, black_box(x), &mut out)
                .map_err(|e| anyhow!("sprig-runtime: {e}"))?;
            black_box(&out);
        }
        Ok(t.elapsed().as_secs_f64() * 1e6 / count as f64)
    };
    round()?;
    let mut per_round = (0..args.rounds)
        .map(|_| round())
        .collect::<anyhow::Result<Vec<f64>>>()?;
    per_round.sort_by(f64::total_cmp);
    let sprig_us = per_round[per_round.len() / 2];

    let qemu = if args.qemu_vectors == 0 {
        Qemu::Off
    } else {
        let keep = args.qemu_vectors.min(args.inputs);
        let vectors: Vec<(u8, Vec<i8>, Vec<i8>)> = inputs
            .chunks_exact(n_in)
            .zip(want.chunks_exact(n_out))
            .take(keep)
            .map(|(x, y)| (0, x.to_vec(), y.to_vec()))
            .collect();
        on_qemu(name, &imported.blob, n_in, n_out, &vectors, args)
    };

    Ok(Row::Checked(Box::new(Checked {
        name: name.into(),
        tflite_ops: imported.tflite_ops,
        sprig_ops: imported.ops.len(),
        tflite_bytes: bytes.len(),
        sprig_bytes: imported.blob.len(),
        tflm_arena_total: info["arena_total"].as_u64(),
        tflm_arena_head: info["arena_head"].as_u64(),
        sprig_arena: model.arena_size(),
        tflm_us: info["us_per_inference"].as_f64().unwrap_or(f64::NAN),
        sprig_us,
        inputs: count,
        output_bytes: got.len(),
        mismatching_bytes,
        mismatching_inputs,
        samples,
        macs: imported.macs,
        qemu,
    })))
}

/// Writes `runs/conformance/<name>/` (the model, and `vectors` with TFLM's outputs as the
/// expected ones) and runs it on the simulated Cortex-M4; the firmware compares the
/// device's outputs with those byte for byte.
fn on_qemu(
    name: &str,
    blob: &[u8],
    n_in: usize,
    n_out: usize,
    vectors: &[(u8, Vec<i8>, Vec<i8>)],
    args: &Args,
) -> Qemu {
    let run = || -> anyhow::Result<Qemu> {
        let dir = crate::boards::repo_root().join(QEMU_RUNS).join(name);
        crate::sim_tflite::write_run_folder(&dir, blob, n_in, n_out, vectors)?;
        let board = crate::boards::find(QEMU_BOARD)?;
        let input = crate::firmware::Input {
            artifacts: dir,
            max_vectors: Some(vectors.len()),
        };
        let booted = match crate::sim::boot(&board, &input, Duration::from_secs(args.qemu_timeout))
        {
            Ok(b) => b,
            Err(e) => {
                let e = format!("{e:#}");
                // firmware::build's size check: "the model does not fit …, it needs …".
                if e.contains("does not fit") {
                    return Ok(Qemu::DoesNotFit(e));
                }
                return Err(anyhow!(e));
            }
        };
        let r = &booted.result;
        if r.vectors as usize != booted.embedded {
            bail!(
                "`{}` ran {} vectors, {} were embedded",
                booted.command,
                r.vectors,
                booted.embedded
            );
        }
        if !booted.exited_ok && r.mismatches == 0 {
            bail!(
                "`{}` exited with {} with no vector differing",
                booted.command,
                booted.status
            );
        }
        Ok(Qemu::Ran {
            vectors: r.vectors,
            mismatches: r.mismatches,
            per_inference: r.per_inference,
        })
    };
    run().unwrap_or_else(|e| Qemu::Failed(format!("{e:#}")))
}

/// The pixels of a grayscale BMP (8-bit paletted with a gray palette, or 24-bit with
/// equal channels), rows top to bottom (BMP stores them bottom-up unless the height is
/// negative), as TFLite Micro's `generate_cc_arrays.py` (PIL) turns its sample images
/// into the arrays its person_detection test feeds the model.
fn bmp_gray(path: &Path, expected_len: usize) -> anyhow::Result<Vec<u8>> {
    let b = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (person_detect's sample image; pass --samples DIR)",
            path.display()
        )
    })?;
    let bad = |why: &str| anyhow!("{}: {why}", path.display());
    let u16_at = |o: usize| -> anyhow::Result<u16> {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .ok_or_else(|| bad("truncated header"))
    };
    let u32_at = |o: usize| -> anyhow::Result<u32> {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| bad("truncated header"))
    };
    if b.get(0..2) != Some(b"BM") {
        return Err(bad("not a BMP file"));
    }
    let data = u32_at(10)? as usize;
    let dib = u32_at(14)? as usize;
    let width = u32_at(18)? as i32;
    let height = u32_at(22)? as i32;
    let bpp = u16_at(28)?;
    if dib < 40 || u32_at(30)? != 0 {
        return Err(bad(
            "only uncompressed BMPs with a BITMAPINFOHEADER are read",
        ));
    }
    if width <= 0 || height == 0 {
        return Err(bad("bad dimensions"));
    }
    let (w, h) = (width as usize, height.unsigned_abs() as usize);
    if w * h != expected_len {
        bail!(
            "{}: {w}×{h} pixels, but the model's input has {expected_len} elements",
            path.display()
        );
    }
    let stride = (usize::from(bpp) * w).div_ceil(32) * 4;
    // 8 bits: indices into a palette of BGRA entries; 24 bits: BGR.
    let palette = match bpp {
        8 => {
            let colors = match u32_at(46)? {
                0 => 256,
                n => n as usize,
            };
            Some(
                b.get(14 + dib..14 + dib + 4 * colors)
                    .ok_or_else(|| bad("truncated palette"))?,
            )
        }
        24 => None,
        other => bail!("{}: {other} bits per pixel (8 or 24 read)", path.display()),
    };
    let mut px = Vec::with_capacity(w * h);
    for y in 0..h {
        // Top-down output: the file's last row first when the height is positive.
        let file_row = if height > 0 { h - 1 - y } else { y };
        let row = b
            .get(data + file_row * stride..data + (file_row + 1) * stride)
            .ok_or_else(|| bad("truncated pixel data"))?;
        for x in 0..w {
            let bgr = match palette {
                Some(pal) => {
                    let i = 4 * usize::from(row[x]);
                    pal.get(i..i + 3)
                        .ok_or_else(|| bad("pixel index beyond the palette"))?
                }
                None => &row[3 * x..3 * x + 3],
            };
            if bgr[0] != bgr[1] || bgr[1] != bgr[2] {
                return Err(bad("not a grayscale image"));
            }
            px.push(bgr[0]);
        }
    }
    Ok(px)
}

fn bytes_col(v: Option<u64>) -> String {
    v.map_or_else(|| "?".into(), |v| v.to_string())
}

/// The markdown table; `qemu` adds the simulated Cortex-M4 columns.
fn table(rows: &[Row], qemu: bool) -> String {
    let mut t = String::from(
        "| model | ops (TFLite → sprig) | .tflite B | .sprig B | TFLM arena B total (activations) \
         | sprig arena B | TFLM µs | sprig µs | speed-up | inputs | mismatching bytes |",
    );
    if qemu {
        t.push_str(" M4 instructions/inference | per MAC | QEMU mismatches |");
    }
    t.push_str("\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    if qemu {
        t.push_str("---:|---:|---:|");
    }
    t.push('\n');
    // The cells left empty on a skipped or failed row.
    let blanks = " |".repeat(if qemu { 13 } else { 10 });
    for row in rows {
        match row {
            Row::Skipped { name, why } => {
                let _ = writeln!(t, "| {name} | skipped: {why}{blanks}");
            }
            Row::Failed { name, error } => {
                let error = cell(error);
                let _ = writeln!(t, "| {name} | **error**: {error}{blanks}");
            }
            Row::Checked(c) => {
                let mismatch = if c.mismatching_bytes == 0 {
                    format!("0 of {}", c.output_bytes)
                } else {
                    format!(
                        "**{} of {}** ({} inputs)",
                        c.mismatching_bytes, c.output_bytes, c.mismatching_inputs
                    )
                };
                let _ = write!(
                    t,
                    "| {} | {} → {} | {} | {} | {} ({}) | {} | {} | {} | {:.1}× | {} | {} |",
                    c.name,
                    c.tflite_ops,
                    c.sprig_ops,
                    c.tflite_bytes,
                    c.sprig_bytes,
                    bytes_col(c.tflm_arena_total),
                    bytes_col(c.tflm_arena_head),
                    c.sprig_arena,
                    micros(c.tflm_us),
                    micros(c.sprig_us),
                    c.tflm_us / c.sprig_us,
                    c.inputs,
                    mismatch
                );
                if qemu {
                    let _ = write!(t, "{}", qemu_cells(c));
                }
                t.push('\n');
            }
        }
    }
    t
}

/// Text fit for one table cell.
/// Microseconds with three significant digits at least (sine runs in 0.06 µs).
fn micros(us: f64) -> String {
    if us < 10.0 {
        format!("{us:.3}")
    } else {
        format!("{us:.1}")
    }
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The three QEMU cells of a checked row (with their trailing `|`s).
fn qemu_cells(c: &Checked) -> String {
    match &c.qemu {
        Qemu::Off => " not run | | |".into(),
        Qemu::Ran {
            vectors,
            mismatches,
            per_inference,
        } => {
            let per_mac = if c.macs == 0 {
                "–".to_string()
            } else {
                format!("{:.2}", per_inference / c.macs as f64)
            };
            let mismatches = if *mismatches == 0 {
                format!("0 of {vectors}")
            } else {
                format!("**{mismatches} of {vectors}**")
            };
            format!(" {per_inference:.0} | {per_mac} | {mismatches} |")
        }
        Qemu::DoesNotFit(why) => format!(" does not fit: {} | | |", cell(why)),
        Qemu::Failed(e) => format!(" **error**: {} | | |", cell(e)),
    }
}

/// Appends the table, with command, machine, date and issue 5's targets, to `--output`.
fn append(args: &Args, rows: &[Row], table: &str) -> anyhow::Result<()> {
    let checked: Vec<&Checked> = rows
        .iter()
        .filter_map(|r| match r {
            Row::Checked(c) => Some(c.as_ref()),
            _ => None,
        })
        .collect();
    let mark = |ok: bool| if ok { "yes" } else { "**no**" };
    let names = |f: &dyn Fn(&Checked) -> bool| {
        let v: Vec<&str> = checked
            .iter()
            .filter(|c| !f(c))
            .map(|c| c.name.as_str())
            .collect();
        if v.is_empty() {
            "yes".to_string()
        } else {
            format!("**no**: {}", v.join(", "))
        }
    };
    let mut command = format!("cargo xtask conformance --tflite {}", args.tflite.display());
    if args.inputs != 100 {
        let _ = write!(command, " --inputs {}", args.inputs);
    }
    if args.seed != 1 {
        let _ = write!(command, " --seed {}", args.seed);
    }
    if args.rounds != 7 {
        let _ = write!(command, " --rounds {}", args.rounds);
    }
    if args.qemu_vectors != 10 {
        let _ = write!(command, " --qemu-vectors {}", args.qemu_vectors);
    }
    command.push_str(" --bench");

    let mut md = String::new();
    md.push_str(
        "\n## Conformance with TensorFlow Lite Micro, imported .tflite models on the host\n\n",
    );
    let _ = writeln!(md, "- command: `{command}`");
    let _ = writeln!(
        md,
        "- inputs: {} seeded random int8 inputs per model (numpy `default_rng({})`), plus \
         person_detect's two sample images (each as its bytes reinterpreted as int8, as \
         TFLM's person_detection test feeds them, and as p − 128); the same bytes go to both",
        args.inputs, args.seed
    );
    md.push_str(
        "- TFLM: the `tflite-micro` Python package (reference kernels), µs = mean of \
         `time.perf_counter` around each `invoke`; arena total and activations (\"head\") as \
         its RecordingMicroAllocator reports them\n",
    );
    let _ = writeln!(
        md,
        "- sprig: `sprig-runtime` in xtask's dev profile (runtime at opt-level 3), one \
         thread, median of {} rounds over all inputs",
        args.rounds
    );
    if args.qemu_vectors > 0 {
        let _ = writeln!(
            md,
            "- QEMU Cortex-M4 columns: the first {} random inputs of each model in the \
             {QEMU_BOARD} firmware (release build), its outputs compared byte for byte with \
             TFLM's; \"M4 instructions/inference\" is QEMU's instruction count (`-icount \
             shift=0`), **instructions, not cycles**, and \"per MAC\" divides it by the \
             model's MACs (import summary). For scale, published figures **not measured by \
             us** (cycles per MAC on real Cortex-M4 silicon, from `../shared/models/README.md`): \
             MLPerf Tiny v0.5 reference (TFLite Micro 2.3.1 + CMSIS-NN, 120 MHz) ≈ 6.8–9.6 \
             cycles/MAC (KWS ≈ 8.2, IC ≈ 6.8, VWW ≈ 9.6); best published M4 (X-CUBE-AI 9.0, \
             MLPerf Tiny v1.2) ≈ 1.4–2.0 cycles/MAC",
            args.qemu_vectors
        );
    }
    let _ = writeln!(md, "- machine: {}", crate::bench::machine());
    let _ = writeln!(md, "- date: {}\n", crate::bench::today());
    md.push_str(table);
    md.push_str("\n| target (issue 5) | met |\n|---|:-:|\n");
    let _ = writeln!(
        md,
        "| every int8 model byte-identical on every input | {} |",
        mark(!rows.iter().any(Row::failed))
    );
    if args.qemu_vectors > 0 {
        let _ = writeln!(
            md,
            "| every model that fits {QEMU_BOARD} byte-identical with TFLM on QEMU | {} |",
            names(&|c| match c.qemu {
                Qemu::Ran { mismatches, .. } => mismatches == 0,
                Qemu::DoesNotFit(_) | Qemu::Off => true,
                Qemu::Failed(_) => false,
            })
        );
    }
    let _ = writeln!(
        md,
        "| sprig arena ≤ TFLM activation arena (head) | {} |",
        names(&|c| c.tflm_arena_head.is_some_and(|h| c.sprig_arena as u64 <= h))
    );
    let _ = writeln!(
        md,
        "| .sprig ≤ .tflite bytes | {} |",
        names(&|c| c.sprig_bytes <= c.tflite_bytes)
    );
    let _ = writeln!(
        md,
        "| sprig ≥ {TARGET_SPEEDUP:.0}× faster than TFLM on the host | {} |",
        names(&|c| c.tflm_us / c.sprig_us >= TARGET_SPEEDUP)
    );
    crate::bench::append_report(&args.output, &md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checked(qemu: Qemu) -> Row {
        Row::Checked(Box::new(Checked {
            name: "m".into(),
            tflite_ops: 2,
            sprig_ops: 2,
            tflite_bytes: 100,
            sprig_bytes: 90,
            tflm_arena_total: Some(64),
            tflm_arena_head: Some(32),
            sprig_arena: 32,
            tflm_us: 10.0,
            sprig_us: 1.0,
            inputs: 3,
            output_bytes: 30,
            mismatching_bytes: 0,
            mismatching_inputs: 0,
            samples: Vec::new(),
            macs: 1000,
            qemu,
        }))
    }

    #[test]
    fn qemu_column_and_verdict() {
        let ran = |mismatches| Qemu::Ran {
            vectors: 10,
            mismatches,
            per_inference: 4500.0,
        };
        let ok = checked(ran(0));
        assert!(!ok.failed());
        let t = table(std::slice::from_ref(&ok), true);
        assert!(t.contains("| 4500 | 4.50 | 0 of 10 |"), "{t}");
        // Same number of cells in the header, the rule and the rows.
        let cells: Vec<usize> = t.lines().map(|l| l.matches('|').count()).collect();
        assert!(cells.iter().all(|&n| n == cells[0]), "{t}");
        assert!(checked(ran(1)).failed());
        assert!(checked(Qemu::Failed("boom".into())).failed());
        let big = checked(Qemu::DoesNotFit(
            "the model does not fit x: 5 MiB | 4 MiB".into(),
        ));
        assert!(!big.failed());
        assert!(table(&[big], true).contains("does not fit: the model"));
        let skipped = Row::Skipped {
            name: "f".into(),
            why: "float".into(),
        };
        for qemu in [false, true] {
            let t = table(&[checked(Qemu::Off), skipped_clone(&skipped)], qemu);
            let cells: Vec<usize> = t.lines().map(|l| l.matches('|').count()).collect();
            assert!(cells.iter().all(|&n| n == cells[0]), "{t}");
        }
    }

    fn skipped_clone(r: &Row) -> Row {
        match r {
            Row::Skipped { name, why } => Row::Skipped {
                name: name.clone(),
                why: why.clone(),
            },
            _ => unreachable!(),
        }
    }
}
