//! Datasets: IDX files (MNIST, Fashion-MNIST) and NumPy `.npz` files, where to find them,
//! how pixels are normalized, and batching.
//!
//! - [`read_images`] / [`read_labels`] read IDX files, gzip or raw (detected from the
//!   content), and reject anything that is not exactly what the header announces.
//! - [`load_npz`] reads `x_train`, `y_train`, `x_test`, `y_test` from a `.npz` (keras'
//!   `load_data()` arrays; NCHW or NHWC, uint8 or float intensities, any size and
//!   channel count), with the `npyz` and `zip` crates; [`save_npz`] writes one in keras'
//!   layout (how CI turns the bundled subset into the ONNX fixtures' `.npz` data).
//! - [`Normalization`] says how pixels become model inputs (`--normalize`): the default
//!   `(p − 128) / 128`, `p / 255`, or per-channel mean/std as torchvision's `Normalize`;
//!   the graph's input grid follows from it ([`Normalization::input_grid`]).
//! - [`Dataset`] holds labelled 8-bit images in memory; [`load_dir`] loads `(train, test)`
//!   from a folder with the four standard file names.
//! - [`resolve`] chooses the source: `--data DIR` or `--data FILE.npz`, else the system copy
//!   (`/usr/share/datasets/fashion-mnist`, Debian package `dataset-fashion-mnist`), else the
//!   bundled subset in `data/fashion-mnist-subset`; see [`DataSource`].
//! - [`Batcher`] yields [`Batch`]es of candle tensors, sequential or in a seeded shuffle
//!   that is a pure function of `(seed, epoch)`. Inputs are normalized as
//!   `(pixel - 128) / 128`, which makes the device's int8 input quantization exact
//!   ([`INPUT_SCALE`], [`INPUT_ZERO_POINT`], [`pixel_to_int8`]).
//!
//! ```no_run
//! use sprig_compressor::data::{resolve, Batcher, Order};
//! # fn main() -> anyhow::Result<()> {
//! let source = resolve(None)?;
//! println!("{}", source.describe());
//! let (train, _test) = source.load()?;
//! let device = candle_core::Device::Cpu;
//! for batch in Batcher::new(&train, 64, Order::Shuffled { seed: 1, epoch: 0 }, &device) {
//!     let batch = batch?;
//!     assert_eq!(batch.images.dims()[1..], [1, train.rows, train.cols]);
//! }
//! # Ok(())
//! # }
//! ```

mod batcher;
mod dataset;
mod device_input;
mod error;
mod idx;
mod layout;
mod normalize;
mod npz;
mod npz_writer;
mod source;

pub use batcher::{
    normalize_pixel, permutation, pixel_to_int8, Batch, Batcher, Order, INPUT_GRID, INPUT_SCALE,
    INPUT_ZERO_POINT,
};
pub use dataset::{content_fingerprint, load_dir, Dataset, NUM_CLASSES, TEST_FILES, TRAIN_FILES};
pub use error::DataError;
pub use idx::{
    read_images, read_labels, write_images, write_labels, Images, IMAGES_MAGIC, LABELS_MAGIC,
};
pub use layout::{Layout, MAX_CHANNELS};
pub use normalize::Normalization;
pub use npz::{load_npz, NPZ_ARRAYS};
pub use npz_writer::save_npz;
pub use source::{bundled_dir, resolve, DataSource, SYSTEM_DIR};

#[cfg(test)]
mod tests {
    use super::*;

    /// Examples per class in the bundled subset; must match `data/README.md` and
    /// `examples/cut_bundled_subset.rs`.
    const BUNDLED_TRAIN_PER_CLASS: usize = 300;
    const BUNDLED_TEST_PER_CLASS: usize = 100;

    #[test]
    fn bundled_subset_is_class_balanced() {
        let (train, test) = load_dir(&bundled_dir()).unwrap();
        assert_eq!(train.class_counts(), [BUNDLED_TRAIN_PER_CLASS; NUM_CLASSES]);
        assert_eq!(test.class_counts(), [BUNDLED_TEST_PER_CLASS; NUM_CLASSES]);
        assert_eq!((train.rows, train.cols), (28, 28));
    }

    // The design asks for at least 100 test images per class.
    const _: () = assert!(BUNDLED_TEST_PER_CLASS >= 100);

    /// Seed the bundled subset was cut with (see `data/README.md`).
    const BUNDLED_SEED: u64 = 20240601;

    #[test]
    fn bundled_subset_is_reproducible_from_the_system_copy() {
        let system = std::path::Path::new(SYSTEM_DIR);
        if !system.join("train-images-idx3-ubyte.gz").exists() {
            eprintln!("skipped: {SYSTEM_DIR} not installed (Debian package dataset-fashion-mnist)");
            return;
        }
        let (full_train, full_test) = load_dir(system).unwrap();
        assert_eq!((full_train.len(), full_test.len()), (60_000, 10_000));
        let (train, test) = load_dir(&bundled_dir()).unwrap();
        let recut = full_train.balanced_subset(BUNDLED_TRAIN_PER_CLASS, BUNDLED_SEED);
        assert_eq!(recut.fingerprint(), train.fingerprint());
        let recut = full_test.balanced_subset(BUNDLED_TEST_PER_CLASS, BUNDLED_SEED);
        assert_eq!(recut.fingerprint(), test.fingerprint());
    }

    #[test]
    fn bundled_subset_fits_the_size_budget() {
        let total: u64 = std::fs::read_dir(bundled_dir())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 2_000_000, "bundled subset is {total} bytes");
    }
}
