//! [`DataError`]: everything that can go wrong while finding, reading or checking a dataset.
//!
//! Every message names the file (or folder) involved and says what was wrong with it, so
//! that a user looking at a failed run knows which file to fix or re-download.

use std::path::PathBuf;

/// An error while locating, reading, writing or validating IDX dataset files.
///
/// Variants are kept distinct (one per problem) so callers and tests can match on them.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file does not exist.
    #[error("{}: file not found", path.display())]
    NotFound {
        /// The file that was looked for.
        path: PathBuf,
    },

    /// A dataset folder lacks one of the four standard files (in either form).
    #[error(
        "{}: missing {name}: neither {name}.gz nor {name} exists in this folder",
        dir.display()
    )]
    MissingStandardFile {
        /// The dataset folder.
        dir: PathBuf,
        /// The standard file name without `.gz`, e.g. `train-images-idx3-ubyte`.
        name: &'static str,
    },

    /// Any other I/O error (permissions, a folder where a file was expected, disk errors).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },

    /// The file starts with the gzip magic bytes but is not a valid gzip stream.
    #[error("{}: bad gzip stream (the file starts like gzip but cannot be decompressed): {source}", path.display())]
    Gzip {
        /// The file being decompressed.
        path: PathBuf,
        /// The decompressor's error.
        source: std::io::Error,
    },

    /// The IDX magic number is not the one expected for this kind of file.
    #[error(
        "{}: wrong IDX magic number: expected {expected:#010x} ({kind}), found {found:#010x}",
        path.display()
    )]
    BadMagic {
        /// The file being read.
        path: PathBuf,
        /// What the file should hold: `"images"` or `"labels"`.
        kind: &'static str,
        /// The expected magic number (`0x00000803` images, `0x00000801` labels).
        expected: u32,
        /// The magic number found in the file.
        found: u32,
    },

    /// The file ends inside the IDX header.
    #[error(
        "{}: truncated IDX header: expected {expected} bytes, found {found}",
        path.display()
    )]
    TruncatedHeader {
        /// The file being read.
        path: PathBuf,
        /// Header length in bytes for this kind of file.
        expected: usize,
        /// Bytes actually present.
        found: usize,
    },

    /// The file ends before all the data announced by its header.
    #[error(
        "{}: truncated file: expected {expected} bytes of {what}, found {found}",
        path.display()
    )]
    TruncatedData {
        /// The file being read.
        path: PathBuf,
        /// `"pixel data"` or `"label data"`.
        what: &'static str,
        /// Bytes announced by the header.
        expected: usize,
        /// Bytes actually present.
        found: usize,
    },

    /// The file holds more bytes than its header announces.
    #[error(
        "{}: {extra} trailing bytes after the {expected} bytes of {what} announced by the header",
        path.display()
    )]
    TrailingBytes {
        /// The file being read.
        path: PathBuf,
        /// `"pixel data"` or `"label data"`.
        what: &'static str,
        /// Bytes announced by the header.
        expected: usize,
        /// Bytes beyond those.
        extra: usize,
    },

    /// The header announces an image size that is zero or too large to address.
    #[error(
        "{}: unusable image dimensions {count} x {rows} x {cols} in the IDX header",
        path.display()
    )]
    BadDimensions {
        /// The file being read or written.
        path: PathBuf,
        /// Number of images.
        count: usize,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },

    /// An [`Images`](super::Images) value to be written has a pixel buffer of the wrong size.
    #[error(
        "{}: cannot write {count} images of {rows}x{cols}: need {expected} pixel bytes, the buffer has {found}",
        path.display()
    )]
    PixelBufferSize {
        /// The file being written.
        path: PathBuf,
        /// Number of images.
        count: usize,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
        /// `count * rows * cols`.
        expected: usize,
        /// `pixels.len()`.
        found: usize,
    },

    /// The image file and the label file disagree on the number of examples.
    #[error(
        "count mismatch: {} holds {images} images but {} holds {labels} labels",
        images_path.display(),
        labels_path.display()
    )]
    CountMismatch {
        /// The image file.
        images_path: PathBuf,
        /// Number of images in it.
        images: usize,
        /// The label file.
        labels_path: PathBuf,
        /// Number of labels in it.
        labels: usize,
    },

    /// A label is not a valid class (classes are `0..10`).
    #[error(
        "{}: label at index {index} is {value}, but classes are 0..=9",
        path.display()
    )]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// Position of the bad label.
        index: usize,
        /// Its value.
        value: u8,
    },

    /// The files are well formed but hold no examples.
    #[error("{}: empty dataset (0 examples)", path.display())]
    Empty {
        /// The image file.
        path: PathBuf,
    },

    /// The train and test images of one folder have different sizes.
    #[error(
        "image size mismatch: {} has {train_rows}x{train_cols} images but {} has {test_rows}x{test_cols}",
        train_path.display(),
        test_path.display()
    )]
    ShapeMismatch {
        /// The training image file.
        train_path: PathBuf,
        /// Its rows per image.
        train_rows: usize,
        /// Its columns per image.
        train_cols: usize,
        /// The test image file.
        test_path: PathBuf,
        /// Its rows per image.
        test_rows: usize,
        /// Its columns per image.
        test_cols: usize,
    },

    /// A `.npz` file is not a readable zip archive (truncated, not a zip, bad entry).
    #[error("{}: not a readable NumPy .npz archive: {message}", path.display())]
    NpzArchive {
        /// The `.npz` file.
        path: PathBuf,
        /// What the zip reader said.
        message: String,
    },

    /// A `.npz` file lacks one of `x_train`, `y_train`, `x_test`, `y_test`.
    #[error(
        "{}: no array `{array}` in this .npz (it holds: {}); sprig needs x_train, y_train, \
         x_test and y_test, as keras.datasets' load_data() returns them",
        path.display(),
        if found.is_empty() { "nothing".to_string() } else { found.join(", ") }
    )]
    NpzMissingArray {
        /// The `.npz` file.
        path: PathBuf,
        /// The array looked for.
        array: &'static str,
        /// The arrays it does hold.
        found: Vec<String>,
    },

    /// An array of a `.npz` file has the wrong dtype, shape or contents.
    #[error("{}: array `{array}`: {problem}", path.display())]
    NpzArray {
        /// The `.npz` file.
        path: PathBuf,
        /// The array, e.g. `x_train`.
        array: &'static str,
        /// What is wrong and what was expected.
        problem: String,
    },

    /// The data's images or labels do not fit the model.
    #[error("{data}: {problem}")]
    ModelMismatch {
        /// The dataset's name (file and split).
        data: String,
        /// What does not fit, naming both shapes or counts.
        problem: String,
    },

    /// No dataset was given and none of the default places holds one.
    #[error(
        "no dataset found; searched: {}. Pass --data DIR, or install the Debian package \
         dataset-fashion-mnist",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoDataset {
        /// The folders searched, in order.
        searched: Vec<PathBuf>,
    },
}

impl DataError {
    /// Wraps an I/O error on `path`, turning "not found" into [`DataError::NotFound`].
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            DataError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            DataError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_file_and_the_problem() {
        let e = DataError::BadMagic {
            path: "/x/train-images-idx3-ubyte.gz".into(),
            kind: "images",
            expected: 0x803,
            found: 0x801,
        };
        let s = e.to_string();
        assert!(s.contains("/x/train-images-idx3-ubyte.gz"), "{s}");
        assert!(s.contains("0x00000803") && s.contains("0x00000801"), "{s}");

        let e = DataError::CountMismatch {
            images_path: "/x/a".into(),
            images: 5,
            labels_path: "/x/b".into(),
            labels: 4,
        };
        let s = e.to_string();
        assert!(s.contains("/x/a") && s.contains("/x/b"), "{s}");
        assert!(s.contains('5') && s.contains('4'), "{s}");

        let e = DataError::NoDataset {
            searched: vec!["/one".into(), "/two".into()],
        };
        let s = e.to_string();
        assert!(s.contains("/one, /two"), "{s}");
    }

    #[test]
    fn io_not_found_becomes_not_found() {
        let e = DataError::io(
            std::path::Path::new("/nope"),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        );
        assert!(matches!(e, DataError::NotFound { .. }));
        let e = DataError::io(
            std::path::Path::new("/nope"),
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(e, DataError::Io { .. }));
    }
}
