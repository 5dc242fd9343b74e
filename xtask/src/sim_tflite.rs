//! `cargo xtask sim --board B --tflite MODEL.tflite`: an int8 TensorFlow Lite model on a
//! simulated board (issue 5, item 4).
//!
//! The model is imported as `cargo xtask import` does, `--inputs` seeded random int8
//! inputs go through the sprig runtime on the host, and `runs/sim-tflite/<model>/` gets
//! `model.sprig` and `vectors.bin` (those inputs, the host's outputs as the expected
//! ones, label 0). The board's firmware is then built and booted on it like any compress
//! run: every output byte is compared with the host's, and instructions per inference
//! are divided by the model's MACs. `cargo xtask conformance` runs the same models
//! against TensorFlow Lite Micro itself; the host runtime is byte-identical with it
//! there, so agreeing with the host here is agreeing with TFLM.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::export::packed::sprig_runtime::{vectors::write_vectors, Model};
use sprig_compressor::export::write_atomic;

/// Where the imported model's artifacts go, relative to the repository root.
const RUNS: &str = "runs/sim-tflite";

/// An imported model ready to embed.
pub struct Prepared {
    /// Folder holding `model.sprig` and `vectors.bin`.
    pub artifacts: PathBuf,
    /// Multiply-accumulates per inference (from the import summary).
    pub macs: u64,
}

/// Import `model`, run `inputs` random inputs (seeded by `seed`) on the host and write
/// the run folder.
pub fn prepare(model: &Path, inputs: usize, seed: u64) -> anyhow::Result<Prepared> {
    if inputs == 0 {
        anyhow::bail!("--inputs must be at least 1");
    }
    let (name, imported) = crate::import::import_file(model)?;
    let runtime = Model::from_bytes(&imported.blob).map_err(|e| {
        anyhow!(
            "sprig-runtime refuses the blob imported from {}: {e}",
            model.display()
        )
    })?;
    let (n_in, n_out) = (runtime.input_len(), runtime.output_len());

    let mut random = ChaCha8Rng::seed_from_u64(seed);
    let mut arena = vec![0u8; runtime.arena_size()];
    let mut vectors = Vec::with_capacity(inputs);
    for _ in 0..inputs {
        let x: Vec<i8> = (0..n_in).map(|_| random.random::<i8>()).collect();
        let mut y = vec![0i8; n_out];
        runtime
            .run(&mut arena, &x, &mut y)
            .map_err(|e| anyhow!("sprig-runtime on the host: {e}"))?;
        vectors.push((0u8, x, y));
    }

    let dir = crate::boards::repo_root().join(RUNS).join(&name);
    write_run_folder(&dir, &imported.blob, n_in, n_out, &vectors)?;
    println!(
        "{name}: imported {} TFLite operators → {} sprig ops, {} MACs, .sprig {} bytes, arena {} bytes; \
         {inputs} random inputs (seed {seed}) run on the host into {}",
        imported.tflite_ops,
        imported.ops.len(),
        imported.macs,
        imported.blob.len(),
        imported.arena_bytes,
        dir.display()
    );
    Ok(Prepared {
        artifacts: dir,
        macs: imported.macs,
    })
}

/// Write a firmware run folder: `dir/model.sprig` and `dir/vectors.bin` (each vector's
/// label, input and expected output), both atomically.
pub fn write_run_folder(
    dir: &Path,
    blob: &[u8],
    n_in: usize,
    n_out: usize,
    vectors: &[(u8, Vec<i8>, Vec<i8>)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("model.sprig"), blob)?;
    let encoded =
        write_vectors(n_in, n_out, vectors).map_err(|e| anyhow!("encoding vectors.bin: {e}"))?;
    write_atomic(&dir.join("vectors.bin"), &encoded)?;
    Ok(())
}
