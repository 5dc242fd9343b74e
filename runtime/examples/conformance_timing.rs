//! Host timing of the models `cargo xtask conformance` last wrote to
//! `runs/conformance/<model>/` (`model.sprig` and `vectors.bin`): checks every vector's
//! output byte for byte against the one stored (TFLite Micro's), then prints µs per
//! inference (median of rounds), for iterating on kernels without rerunning TFLM.
//!
//! `cargo run --release -p sprig-runtime --features std --example conformance_timing [DIR] [MODEL…]`

use std::hint::black_box;
use std::time::Instant;

use sprig_runtime::vectors::Vectors;
use sprig_runtime::Model;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "runs/conformance".into());
    let only: Vec<String> = args.collect();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("model.sprig").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| only.is_empty() || only.contains(n))
        .collect();
    names.sort();
    for name in names {
        let base = std::path::Path::new(&dir).join(&name);
        let blob = std::fs::read(base.join("model.sprig")).unwrap();
        let vec_bytes = std::fs::read(base.join("vectors.bin")).unwrap();
        let model = Model::from_bytes(&blob).unwrap();
        let vectors = Vectors::parse(&vec_bytes).unwrap();
        let mut arena = vec![0u8; model.arena_size()];
        let mut out = vec![0i8; model.output_len()];
        let mut bad = 0usize;
        let inputs: Vec<&[i8]> = vectors.iter().map(|v| v.input).collect();
        for v in vectors.iter() {
            model.run(&mut arena, v.input, &mut out).unwrap();
            bad += out.iter().zip(v.expected).filter(|(a, b)| a != b).count();
        }
        // Enough repetitions for ~0.2 s per round.
        let t = Instant::now();
        for x in &inputs {
            model.run(&mut arena, black_box(x), &mut out).unwrap();
        }
        let once = t.elapsed().as_secs_f64() / inputs.len() as f64;
        let reps = ((0.2 / once) as usize / inputs.len()).max(1);
        let mut rounds: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..reps {
                    for x in &inputs {
                        model.run(&mut arena, black_box(x), &mut out).unwrap();
                        black_box(&out);
                    }
                }
                t.elapsed().as_secs_f64() * 1e6 / (reps * inputs.len()) as f64
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "{name:24} {:>10.2} µs   mismatching bytes {bad}",
            rounds[rounds.len() / 2]
        );
    }
}
