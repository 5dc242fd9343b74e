//! Writing a dataset as the `.npz` that [`super::load_npz`] reads, in the layout
//! `keras.datasets` returns: `x_*` as `uint8 (N, H, W, C)`, `y_*` as `uint8 (N,)`. The
//! ONNX fixtures compress on such a file in CI (made from the bundled subset), so the
//! `--data FILE.npz` path is exercised end to end on the boards too.

use std::io::Write;
use std::path::Path;

use npyz::WriterBuilder;

use super::{DataError, Dataset};

/// Writes `train` and `test` to `path` (through a temporary file beside it, so an
/// interrupted write never leaves a truncated archive under the final name).
pub fn save_npz(path: &Path, train: &Dataset, test: &Dataset) -> Result<(), DataError> {
    let partial = path.with_extension("npz.partial");
    let archive_err = |e: zip::result::ZipError| DataError::NpzArchive {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let io_err = |e: std::io::Error| DataError::io(path, e);
    let file = std::fs::File::create(&partial).map_err(|e| DataError::io(&partial, e))?;
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    for (split, data) in [("train", train), ("test", test)] {
        let n = data.len() as u64;
        let (h, w, c) = (data.rows as u64, data.cols as u64, data.channels as u64);
        zip.start_file(format!("x_{split}.npy"), options)
            .map_err(archive_err)?;
        zip.write_all(&npy(&[n, h, w, c], &channels_last(data)).map_err(io_err)?)
            .map_err(io_err)?;
        zip.start_file(format!("y_{split}.npy"), options)
            .map_err(archive_err)?;
        zip.write_all(&npy(&[n], &data.labels).map_err(io_err)?)
            .map_err(io_err)?;
    }
    zip.finish().map_err(archive_err)?;
    std::fs::rename(&partial, path).map_err(io_err)
}

/// One `.npy` file of `u8` values in C order.
fn npy(shape: &[u64], values: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut writer = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(out)
}

/// The images as `(N, H, W, C)`: a [`Dataset`] holds them channels-first.
fn channels_last(data: &Dataset) -> Vec<u8> {
    let (c, hw) = (data.channels, data.rows * data.cols);
    let mut out = Vec::with_capacity(data.images.len());
    for image in data.images.chunks_exact(c * hw) {
        for pixel in 0..hw {
            out.extend((0..c).map(|channel| image[channel * hw + pixel]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_npz, Dataset, Normalization};

    fn rgb(n: usize, seed: u8) -> Dataset {
        let (c, h, w) = (3, 6, 5);
        Dataset {
            images: (0..n * c * h * w)
                .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
                .collect(),
            labels: (0..n as u8).map(|i| i % 4).collect(),
            channels: c,
            rows: h,
            cols: w,
            classes: 4,
            normalization: Normalization::Centered,
            name: "rgb".into(),
        }
    }

    /// What `save_npz` writes, `load_npz` reads back image for image, channels included.
    #[test]
    fn round_trips_through_load_npz() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgb.npz");
        let (train, test) = (rgb(5, 1), rgb(3, 2));
        save_npz(&path, &train, &test).unwrap();
        let (train2, test2) = load_npz(&path).unwrap();
        for (a, b) in [(&train, &train2), (&test, &test2)] {
            assert_eq!((b.channels, b.rows, b.cols), (3, 6, 5));
            assert_eq!(a.images, b.images);
            assert_eq!(a.labels, b.labels);
        }
        assert!(!dir.path().join("rgb.npz.partial").exists());
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-folder").join("x.npz");
        let err = save_npz(&path, &rgb(1, 0), &rgb(1, 0)).unwrap_err();
        assert!(err.to_string().contains("no-such-folder"), "{err}");
    }
}
