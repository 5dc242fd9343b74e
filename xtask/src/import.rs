//! `cargo xtask import MODEL.tflite --out model.sprig`: import an int8 TensorFlow Lite
//! model into the sprig format and print its ops, parameters, MACs, blob and arena bytes.

use std::path::{Path, PathBuf};

use anyhow::Context;
use sprig_compressor::import::{tflite_to_sprig, Imported};

#[derive(clap::Args)]
pub struct Args {
    /// The `.tflite` model (int8, fully quantized).
    model: PathBuf,
    /// Where to write the `.sprig` blob (default: the model's path with `.sprig`).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Read and import the `.tflite` file at `path`; the model's name is the file stem.
pub fn import_file(path: &Path) -> anyhow::Result<(String, Imported)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let name = path
        .file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let imported =
        tflite_to_sprig(&bytes, &name).with_context(|| format!("importing {}", path.display()))?;
    Ok((name, imported))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let (name, imported) = import_file(&args.model)?;
    println!(
        "{name}: {} TFLite operators → {} sprig ops",
        imported.tflite_ops,
        imported.ops.len()
    );
    println!(
        "  {:>4}  {:<18} {:<16} {:<20} {:>12} {:>10}",
        "#", "tflite", "sprig", "output", "MACs", "params"
    );
    for op in &imported.ops {
        println!(
            "  {:>4}  {:<18} {:<16} {:<20} {:>12} {:>10}",
            op.index,
            op.tflite,
            op.sprig,
            format!("{:?}", op.output_shape),
            op.macs,
            op.parameters
        );
    }
    println!(
        "  input {:?} (scale {}, zero point {}), output {:?} (scale {}, zero point {})",
        imported.input_shape,
        imported.input.scale,
        imported.input.zero_point,
        imported.output_shape,
        imported.output.scale,
        imported.output.zero_point
    );
    println!(
        "  parameters {}, MACs {}, .tflite {} bytes, .sprig {} bytes, arena {} bytes",
        imported.parameters,
        imported.macs,
        imported.tflite_bytes,
        imported.blob.len(),
        imported.arena_bytes
    );
    let out = args
        .out
        .unwrap_or_else(|| args.model.with_extension("sprig"));
    sprig_compressor::export::write_atomic(&out, &imported.blob)?;
    println!("  wrote {}", out.display());
    Ok(())
}
