//! [`Dataset`]: labelled 8-bit images in memory, and [`load_dir`] for the standard
//! four-file MNIST / Fashion-MNIST layout.

use std::path::{Path, PathBuf};

use super::batcher::permutation;
use super::idx::{read_images, read_labels};
use super::{DataError, Normalization};

/// Number of classes in MNIST and Fashion-MNIST; every IDX label is below this.
pub const NUM_CLASSES: usize = 10;

/// Standard file names (without `.gz`) of the training images and labels.
pub const TRAIN_FILES: (&str, &str) = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte");
/// Standard file names (without `.gz`) of the test images and labels.
pub const TEST_FILES: (&str, &str) = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte");

/// Labelled `channels × rows × cols` 8-bit images, pixels as stored in the file (0 =
/// dark), each image channels-first, and how they become model inputs.
///
/// Invariants kept by every constructor in this module: `images.len() == len() *
/// channels * rows * cols` and every label is below [`num_classes`](Self::num_classes).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// All images, channels-first (`C, H, W`), one after the other.
    pub images: Vec<u8>,
    /// One class label per image.
    pub labels: Vec<u8>,
    /// Channels per image (1 for IDX files).
    pub channels: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// Number of classes: 10 for IDX files, the largest label + 1 over both splits of
    /// a `.npz`.
    pub classes: usize,
    /// How pixels become the model's floats (and so the deployed input grid).
    pub normalization: Normalization,
    /// Where the data came from, for messages, e.g. `/usr/share/datasets/fashion-mnist (train)`.
    pub name: String,
}

impl Dataset {
    /// Loads one image file and its label file, checking that the counts agree, that
    /// every label is a class, and that there is at least one example.
    pub fn load(images_path: &Path, labels_path: &Path, name: &str) -> Result<Self, DataError> {
        let images = read_images(images_path)?;
        let labels = read_labels(labels_path)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_path_buf(),
                images: images.count,
                labels_path: labels_path.to_path_buf(),
                labels: labels.len(),
            });
        }
        if let Some((index, &value)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= NUM_CLASSES)
        {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                value,
            });
        }
        if labels.is_empty() {
            return Err(DataError::Empty {
                path: images_path.to_path_buf(),
            });
        }
        Ok(Dataset {
            images: images.pixels,
            labels,
            channels: 1,
            rows: images.rows,
            cols: images.cols,
            classes: NUM_CLASSES,
            normalization: Normalization::default(),
            name: name.to_string(),
        })
    }

    /// Images already channels-first with their labels; [`num_classes`](Self::num_classes)
    /// is the largest label + 1, the normalization the default.
    pub(crate) fn from_parts(
        images: Vec<u8>,
        labels: Vec<u8>,
        [channels, rows, cols]: [usize; 3],
        name: String,
    ) -> Self {
        debug_assert_eq!(images.len(), labels.len() * channels * rows * cols);
        Dataset {
            classes: labels
                .iter()
                .map(|&l| usize::from(l) + 1)
                .max()
                .unwrap_or(0),
            images,
            labels,
            channels,
            rows,
            cols,
            normalization: Normalization::default(),
            name,
        }
    }

    /// The shape of one image, `[C, H, W]`, as a model's input shape is written.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.rows, self.cols]
    }

    /// Uses `normalization` for this dataset's model inputs, after checking that its
    /// per-channel lists fit the images.
    pub fn with_normalization(mut self, normalization: Normalization) -> Result<Self, DataError> {
        normalization
            .check_channels(self.channels)
            .map_err(|problem| DataError::ModelMismatch {
                data: self.name.clone(),
                problem,
            })?;
        self.normalization = normalization;
        Ok(self)
    }

    /// Checks that a model taking `[C, H, W]` inputs `input_shape` and giving `classes`
    /// outputs can use these images and labels; the error names both shapes.
    pub fn check_model(
        &self,
        model: &str,
        input_shape: [usize; 3],
        classes: usize,
    ) -> Result<(), DataError> {
        let problem = |problem: String| DataError::ModelMismatch {
            data: self.name.clone(),
            problem,
        };
        if self.shape() != input_shape {
            return Err(problem(format!(
                "images are {:?} (C, H, W), but the model {model} takes {:?}",
                self.shape(),
                input_shape
            )));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(problem(format!(
                "label {l} (example {i}) is out of range for the model {model}, which has \
                 {classes} classes (0 to {})",
                classes.saturating_sub(1)
            )));
        }
        Ok(())
    }

    /// The model-input floats of image `i`, channels-first, under this dataset's
    /// normalization.
    pub fn normalized(&self, i: usize) -> impl Iterator<Item = f32> + '_ {
        let plane = self.rows * self.cols;
        self.image(i)
            .iter()
            .enumerate()
            .map(move |(k, &p)| self.normalization.apply(p, k / plane))
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there are no examples (never the case for a loaded dataset).
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of classes: [`NUM_CLASSES`] (10) for IDX files.
    pub fn num_classes(&self) -> usize {
        self.classes
    }

    /// Bytes per image, `channels * rows * cols`.
    pub fn image_len(&self) -> usize {
        self.channels * self.rows * self.cols
    }

    /// The pixels of image `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// How many examples each class has, indexed by class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The first `n` examples (all of them when `n >= len()`), for quick runs and tests.
    pub fn subset(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            name: format!("{} [first {n}]", self.name),
            normalization: self.normalization.clone(),
            ..*self
        }
    }

    /// A class-balanced random subset: up to `per_class` examples of each class, chosen
    /// by walking [`permutation`]`(len, seed, 0)` and kept in their original file order.
    /// A class with fewer examples contributes all of them.
    pub fn balanced_subset(&self, per_class: usize, seed: u64) -> Dataset {
        let mut taken = vec![0usize; self.classes];
        let mut chosen: Vec<usize> = permutation(self.len(), seed, 0)
            .into_iter()
            .filter(|&i| {
                let c = &mut taken[usize::from(self.labels[i])];
                *c += 1;
                *c <= per_class
            })
            .collect();
        chosen.sort_unstable();
        let mut images = Vec::with_capacity(chosen.len() * self.image_len());
        for &i in &chosen {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            images,
            labels: chosen.iter().map(|&i| self.labels[i]).collect(),
            name: format!("{} [{per_class} per class, seed {seed}]", self.name),
            normalization: self.normalization.clone(),
            ..*self
        }
    }

    /// A short, stable cache key derived from the contents: 16 hex digits of FNV-1a 64
    /// over the shape, the labels and every pixel. Two datasets with the same examples in
    /// the same order get the same key on every machine; the `name` is not included.
    /// Channels and normalization count only when they differ from IDX's one channel
    /// and the default, so keys of existing caches stay valid.
    pub fn fingerprint(&self) -> String {
        let mut h = Fnv1a64::new();
        for word in [self.len(), self.rows, self.cols] {
            h.update(&(word as u64).to_le_bytes());
        }
        if self.channels != 1 {
            h.update(&(self.channels as u64).to_le_bytes());
        }
        if !self.normalization.is_default() {
            h.update(self.normalization.to_string().as_bytes());
        }
        h.update(&self.labels);
        h.update(&self.images);
        format!("{:016x}", h.finish())
    }
}

/// The FNV-1a fingerprint of `bytes`, as 16 hex digits (keys caches by file contents).
pub fn content_fingerprint(bytes: &[u8]) -> String {
    let mut h = Fnv1a64::new();
    h.update(bytes);
    format!("{:016x}", h.finish())
}

/// FNV-1a, 64-bit (Fowler–Noll–Vo): tiny, fast enough for a few tens of MB, and stable.
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a64(Self::OFFSET_BASIS)
    }

    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The path of standard file `name` in `dir`: `name.gz` if it exists, else `name`, else
/// [`DataError::MissingStandardFile`].
pub(crate) fn find_standard_file(dir: &Path, name: &'static str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.exists() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.exists() {
        return Ok(raw);
    }
    Err(DataError::MissingStandardFile {
        dir: dir.to_path_buf(),
        name,
    })
}

/// True when `dir` holds all four standard files (gzip or raw).
pub(crate) fn has_standard_files(dir: &Path) -> bool {
    [TRAIN_FILES.0, TRAIN_FILES.1, TEST_FILES.0, TEST_FILES.1]
        .into_iter()
        .all(|name| find_standard_file(dir, name).is_ok())
}

/// Loads `(train, test)` from a folder holding the four standard files
/// `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte`, each either gzip-compressed with a `.gz` suffix (preferred
/// when both exist) or raw without it. Train and test images must have the same size.
pub fn load_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    if !dir.exists() {
        return Err(DataError::NotFound {
            path: dir.to_path_buf(),
        });
    }
    let split = |(images, labels): (&'static str, &'static str), which: &str| {
        let images_path = find_standard_file(dir, images)?;
        let labels_path = find_standard_file(dir, labels)?;
        let name = format!("{} ({which})", dir.display());
        Dataset::load(&images_path, &labels_path, &name).map(|d| (d, images_path))
    };
    let (train, train_path) = split(TRAIN_FILES, "train")?;
    let (test, test_path) = split(TEST_FILES, "test")?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        return Err(DataError::ShapeMismatch {
            train_path,
            train_rows: train.rows,
            train_cols: train.cols,
            test_path,
            test_rows: test.rows,
            test_cols: test.cols,
        });
    }
    Ok((train, test))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::idx::{encode_labels, write_images, write_labels, Images};

    /// A deterministic toy split: `n` images of `rows × cols`, labels cycling through 0..10.
    pub(crate) fn toy(n: usize, rows: usize, cols: usize, salt: u8) -> (Images, Vec<u8>) {
        let pixels = (0..n * rows * cols)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect();
        let labels = (0..n).map(|i| (i % NUM_CLASSES) as u8).collect();
        (
            Images {
                count: n,
                rows,
                cols,
                pixels,
            },
            labels,
        )
    }

    /// Writes a complete four-file dataset folder (gzip) into `dir`.
    pub(crate) fn write_toy_dir(dir: &Path, n_train: usize, n_test: usize) {
        for ((images, labels), (n, salt)) in [TRAIN_FILES, TEST_FILES]
            .into_iter()
            .zip([(n_train, 1u8), (n_test, 2)])
        {
            let (i, l) = toy(n, 4, 3, salt);
            write_images(&dir.join(format!("{images}.gz")), &i).unwrap();
            write_labels(&dir.join(format!("{labels}.gz")), &l).unwrap();
        }
    }

    #[test]
    fn load_dir_reads_both_splits() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 25, 12);
        let (train, test) = load_dir(dir.path()).unwrap();
        assert_eq!((train.len(), test.len()), (25, 12));
        assert_eq!((train.rows, train.cols), (4, 3));
        assert_eq!(train.num_classes(), 10);
        assert!(!train.is_empty());
        let (images, labels) = toy(25, 4, 3, 1);
        assert_eq!(train.images, images.pixels);
        assert_eq!(train.labels, labels);
        assert_eq!(train.image(2), &images.pixels[24..36]);
        assert!(train.name.contains("(train)") && test.name.contains("(test)"));
        assert_eq!(train.class_counts(), [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn load_dir_prefers_gz_and_accepts_raw() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 20, 10);
        // A raw train label file beside the .gz one, with different contents: ignored.
        let raw = encode_labels(Path::new("mem"), &[0; 3]).unwrap();
        std::fs::write(dir.path().join(TRAIN_FILES.1), raw).unwrap();
        let (train, _) = load_dir(dir.path()).unwrap();
        assert_eq!(train.len(), 20);
        // Remove the .gz: now the raw one is used, and its count disagrees.
        std::fs::remove_file(dir.path().join(format!("{}.gz", TRAIN_FILES.1))).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::CountMismatch {
                    images: 20,
                    labels: 3,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("train-images-idx3-ubyte.gz") && msg.contains("train-labels-idx1-ubyte"),
            "{msg}"
        );
    }

    #[test]
    fn load_dir_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 10, 10);
        std::fs::remove_file(dir.path().join(format!("{}.gz", TEST_FILES.0))).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::MissingStandardFile {
                    name: "t10k-images-idx3-ubyte",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!has_standard_files(dir.path()));

        let gone = dir.path().join("no-such-folder");
        let err = load_dir(&gone).unwrap_err();
        assert!(
            matches!(&err, DataError::NotFound { path } if path == &gone),
            "{err}"
        );
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 10, 10);
        let mut labels = toy(10, 4, 3, 2).1;
        labels[7] = 10;
        write_labels(&dir.path().join(format!("{}.gz", TEST_FILES.1)), &labels).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::LabelOutOfRange {
                    index: 7,
                    value: 10,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("t10k-labels-idx1-ubyte.gz"));
    }

    #[test]
    fn empty_dataset() {
        let dir = tempfile::tempdir().unwrap();
        let (ip, lp) = (dir.path().join("i.gz"), dir.path().join("l.gz"));
        let (images, labels) = toy(0, 2, 2, 0);
        write_images(&ip, &images).unwrap();
        write_labels(&lp, &labels).unwrap();
        let err = Dataset::load(&ip, &lp, "x").unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
    }

    #[test]
    fn train_test_shape_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 10, 10);
        let (images, _) = toy(10, 3, 4, 0);
        write_images(&dir.path().join(format!("{}.gz", TEST_FILES.0)), &images).unwrap();
        let err = load_dir(dir.path()).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ShapeMismatch {
                    train_rows: 4,
                    test_rows: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn subset_takes_the_first_n() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 20, 10);
        let (train, _) = load_dir(dir.path()).unwrap();
        let s = train.subset(5);
        assert_eq!(s.len(), 5);
        assert_eq!(s.labels, train.labels[..5]);
        assert_eq!(s.images, train.images[..5 * 12]);
        assert_eq!(train.subset(1000).len(), 20);
    }

    #[test]
    fn balanced_subset_is_balanced_seeded_and_ordered() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 200, 10);
        let (train, _) = load_dir(dir.path()).unwrap();
        let a = train.balanced_subset(7, 11);
        assert_eq!(a.class_counts(), [7; NUM_CLASSES]);
        assert_eq!(a, train.balanced_subset(7, 11));
        assert_ne!(a.images, train.balanced_subset(7, 12).images);
        // Each chosen image is one of the originals, in file order.
        let positions: Vec<usize> = (0..a.len())
            .map(|k| {
                (0..train.len())
                    .find(|&i| train.image(i) == a.image(k) && train.labels[i] == a.labels[k])
                    .unwrap()
            })
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
        // Asking for more than there is yields everything.
        assert_eq!(train.balanced_subset(1000, 0).len(), 200);
    }

    #[test]
    fn fingerprint_follows_contents_not_name() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 20, 10);
        let (train, test) = load_dir(dir.path()).unwrap();
        let fp = train.fingerprint();
        assert_eq!(fp.len(), 16);
        let mut renamed = train.clone();
        renamed.name = "other".into();
        assert_eq!(renamed.fingerprint(), fp);
        let mut changed = train.clone();
        changed.images[100] ^= 1;
        assert_ne!(changed.fingerprint(), fp);
        let mut relabeled = train.clone();
        relabeled.labels[0] = 9;
        assert_ne!(relabeled.fingerprint(), fp);
        assert_ne!(test.fingerprint(), fp);
        assert_ne!(train.subset(19).fingerprint(), fp);
    }

    #[test]
    fn fnv1a_matches_published_vectors() {
        // Test vectors from the FNV reference (draft-eastlake-fnv): "" and "a".
        let mut h = Fnv1a64::new();
        assert_eq!(h.finish(), 0xcbf2_9ce4_8422_2325);
        h.update(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }
}
