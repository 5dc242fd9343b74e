//! Cuts the bundled Fashion-MNIST subset in `data/fashion-mnist-subset` from the full set.
//!
//! ```text
//! cargo run -p sprig-compressor --example cut_bundled_subset -- \
//!     --source /usr/share/datasets/fashion-mnist --out data/fashion-mnist-subset
//! ```
//!
//! Options (defaults are the values the bundled files were cut with):
//! `--train-per-class N` (300), `--test-per-class N` (100), `--seed S` (20240601).
//!
//! The choice is class-balanced and seeded ([`Dataset::balanced_subset`]), so the same
//! source and options always give byte-identical files. The output is written as gzip
//! IDX files with the four standard names.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sprig_compressor::data::{
    load_dir, write_images, write_labels, Dataset, Images, TEST_FILES, TRAIN_FILES,
};

const DEFAULT_TRAIN_PER_CLASS: usize = 300;
const DEFAULT_TEST_PER_CLASS: usize = 100;
const DEFAULT_SEED: u64 = 20240601;

struct Args {
    source: PathBuf,
    out: PathBuf,
    train_per_class: usize,
    test_per_class: usize,
    seed: u64,
}

fn parse_args() -> Result<Args> {
    let mut source = None;
    let mut out = None;
    let mut train_per_class = DEFAULT_TRAIN_PER_CLASS;
    let mut test_per_class = DEFAULT_TEST_PER_CLASS;
    let mut seed = DEFAULT_SEED;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--source" => source = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--train-per-class" => {
                train_per_class = value()?.parse().context("--train-per-class")?
            }
            "--test-per-class" => test_per_class = value()?.parse().context("--test-per-class")?,
            "--seed" => seed = value()?.parse().context("--seed")?,
            other => bail!(
                "unknown argument {other}; usage: cut_bundled_subset --source DIR --out DIR \
                 [--train-per-class N] [--test-per-class N] [--seed S]"
            ),
        }
    }
    Ok(Args {
        source: source
            .context("--source DIR is required (e.g. /usr/share/datasets/fashion-mnist)")?,
        out: out.context("--out DIR is required (e.g. data/fashion-mnist-subset)")?,
        train_per_class,
        test_per_class,
        seed,
    })
}

fn write_split(
    out: &std::path::Path,
    (images_name, labels_name): (&str, &str),
    data: &Dataset,
) -> Result<()> {
    let images = Images {
        count: data.len(),
        rows: data.rows,
        cols: data.cols,
        pixels: data.images.clone(),
    };
    for (name, result) in [
        (
            images_name,
            write_images(&out.join(format!("{images_name}.gz")), &images),
        ),
        (
            labels_name,
            write_labels(&out.join(format!("{labels_name}.gz")), &data.labels),
        ),
    ] {
        result.with_context(|| format!("writing {name}.gz"))?;
        let path = out.join(format!("{name}.gz"));
        let bytes = std::fs::metadata(&path)?.len();
        println!("  {:<32} {bytes:>9} bytes", path.display());
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let (train, test) = load_dir(&args.source)
        .with_context(|| format!("loading the full dataset from {}", args.source.display()))?;
    let train_sub = train.balanced_subset(args.train_per_class, args.seed);
    let test_sub = test.balanced_subset(args.test_per_class, args.seed);
    for (sub, per_class) in [
        (&train_sub, args.train_per_class),
        (&test_sub, args.test_per_class),
    ] {
        if sub.class_counts() != [per_class; 10] {
            bail!(
                "{}: cannot take {per_class} per class, class counts are {:?}",
                sub.name,
                sub.class_counts()
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    println!(
        "source {} (train {}, test {}), seed {}",
        args.source.display(),
        train.len(),
        test.len(),
        args.seed
    );
    println!(
        "train: {} per class = {}; test: {} per class = {}",
        args.train_per_class,
        train_sub.len(),
        args.test_per_class,
        test_sub.len()
    );
    write_split(&args.out, TRAIN_FILES, &train_sub)?;
    write_split(&args.out, TEST_FILES, &test_sub)?;
    // Check what was written reads back identically.
    let (train_back, test_back) = load_dir(&args.out)?;
    if train_back.images != train_sub.images
        || train_back.labels != train_sub.labels
        || test_back.images != test_sub.images
        || test_back.labels != test_sub.labels
    {
        bail!(
            "{}: the written files do not read back identically",
            args.out.display()
        );
    }
    let total: u64 = [TRAIN_FILES.0, TRAIN_FILES.1, TEST_FILES.0, TEST_FILES.1]
        .iter()
        .map(|n| std::fs::metadata(args.out.join(format!("{n}.gz"))).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    println!(
        "total {total} bytes; train fingerprint {}",
        train_back.fingerprint()
    );
    Ok(())
}
