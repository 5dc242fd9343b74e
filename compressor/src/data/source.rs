//! Choosing where the data comes from: [`resolve`] and [`DataSource`].
//!
//! Search order, first match wins:
//!
//! 1. **An explicit folder or `.npz` file** (`--data DIR`, `--data FILE.npz`). It is used
//!    as given, even if it turns out not to hold a dataset: loading then fails with an
//!    error naming that folder or file, rather than silently falling back to other data.
//!    A path ending in `.npz` (any case) is read as NumPy arrays ([`super::load_npz`]),
//!    anything else as a folder of IDX files.
//! 2. **The system copy**, [`SYSTEM_DIR`] = `/usr/share/datasets/fashion-mnist`, installed
//!    by the Debian package `dataset-fashion-mnist` (60 000 train / 10 000 test images),
//!    when it holds all four standard files.
//! 3. **The bundled subset** in the repository, `data/fashion-mnist-subset` (see
//!    `data/README.md`), located from this crate's source folder at compile time.
//!
//! If neither 2 nor 3 holds the files, [`resolve`] returns [`DataError::NoDataset`] listing
//! both folders.

use std::fmt;
use std::path::{Path, PathBuf};

use super::dataset::{has_standard_files, load_dir};
use super::{load_npz, DataError, Dataset};

/// Where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The bundled Fashion-MNIST subset in this repository: `<workspace>/data/fashion-mnist-subset`.
///
/// The path is fixed when the crate is compiled (from `CARGO_MANIFEST_DIR`), so it is
/// found by binaries run from the source tree, wherever the current directory is.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("data")
        .join("fashion-mnist-subset")
}

/// Where the dataset is read from, and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A folder of IDX files given explicitly by the user (`--data DIR`).
    Dir(PathBuf),
    /// A NumPy `.npz` file given explicitly by the user (`--data FILE.npz`).
    Npz(PathBuf),
    /// The system-wide copy, [`SYSTEM_DIR`].
    System(PathBuf),
    /// The small subset bundled with the repository, [`bundled_dir`].
    Bundled(PathBuf),
}

/// Picks the data folder: `explicit` if given, else [`SYSTEM_DIR`] if it holds the four
/// standard files, else the bundled subset; see the [`data`](crate::data) module docs for the details.
pub fn resolve(explicit: Option<&Path>) -> Result<DataSource, DataError> {
    resolve_among(explicit, Path::new(SYSTEM_DIR), &bundled_dir())
}

/// [`resolve`] with the default folders as parameters, so the fallbacks can be tested.
fn resolve_among(
    explicit: Option<&Path>,
    system: &Path,
    bundled: &Path,
) -> Result<DataSource, DataError> {
    if let Some(path) = explicit {
        let npz = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
        return Ok(if npz {
            DataSource::Npz(path.to_path_buf())
        } else {
            DataSource::Dir(path.to_path_buf())
        });
    }
    if has_standard_files(system) {
        return Ok(DataSource::System(system.to_path_buf()));
    }
    if has_standard_files(bundled) {
        return Ok(DataSource::Bundled(bundled.to_path_buf()));
    }
    Err(DataError::NoDataset {
        searched: vec![system.to_path_buf(), bundled.to_path_buf()],
    })
}

impl DataSource {
    /// The folder or file the data is read from.
    pub fn path(&self) -> &Path {
        match self {
            DataSource::Dir(p)
            | DataSource::Npz(p)
            | DataSource::System(p)
            | DataSource::Bundled(p) => p,
        }
    }

    /// Loads `(train, test)`; see [`load_dir`] and [`load_npz`].
    pub fn load(&self) -> Result<(Dataset, Dataset), DataError> {
        match self {
            DataSource::Npz(p) => load_npz(p),
            _ => load_dir(self.path()),
        }
    }

    /// One line saying where the data comes from, for logs and progress output.
    pub fn describe(&self) -> String {
        match self {
            DataSource::Dir(p) => format!("dataset from {} (--data)", p.display()),
            DataSource::Npz(p) => format!("NumPy arrays from {} (--data)", p.display()),
            DataSource::System(p) => format!(
                "Fashion-MNIST from {} (Debian package dataset-fashion-mnist)",
                p.display()
            ),
            DataSource::Bundled(p) => format!(
                "bundled Fashion-MNIST subset from {} (install dataset-fashion-mnist or pass \
                 --data DIR for the full set)",
                p.display()
            ),
        }
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::tests::write_toy_dir;

    #[test]
    fn explicit_dir_wins_even_when_it_fails_to_load() {
        let dir = tempfile::tempdir().unwrap();
        write_toy_dir(dir.path(), 10, 10);
        let src = resolve(Some(dir.path())).unwrap();
        assert_eq!(src, DataSource::Dir(dir.path().to_path_buf()));
        let (train, test) = src.load().unwrap();
        assert_eq!((train.len(), test.len()), (10, 10));
        assert!(src.describe().contains(&dir.path().display().to_string()));

        let empty = tempfile::tempdir().unwrap();
        let src = resolve(Some(empty.path())).unwrap();
        assert_eq!(src.path(), empty.path());
        let err = src.load().unwrap_err();
        assert!(
            matches!(&err, DataError::MissingStandardFile { dir, .. } if dir == empty.path()),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains(&empty.path().display().to_string()));
    }

    #[test]
    fn fallback_order() {
        let system = tempfile::tempdir().unwrap();
        let bundled = tempfile::tempdir().unwrap();
        let (s, b) = (system.path(), bundled.path());

        let err = resolve_among(None, s, b).unwrap_err();
        match &err {
            DataError::NoDataset { searched } => assert_eq!(searched, &[s, b]),
            other => panic!("expected NoDataset, got {other}"),
        }
        assert!(err.to_string().contains(&s.display().to_string()));

        write_toy_dir(b, 10, 10);
        assert_eq!(
            resolve_among(None, s, b).unwrap(),
            DataSource::Bundled(b.into())
        );
        write_toy_dir(s, 10, 10);
        assert_eq!(
            resolve_among(None, s, b).unwrap(),
            DataSource::System(s.into())
        );
        let explicit = Path::new("/explicit");
        assert_eq!(
            resolve_among(Some(explicit), s, b).unwrap(),
            DataSource::Dir(explicit.into())
        );
        let npz = Path::new("/data/cifar.NPZ");
        assert_eq!(
            resolve_among(Some(npz), s, b).unwrap(),
            DataSource::Npz(npz.into())
        );
    }

    #[test]
    fn default_resolution_finds_a_dataset() {
        // The bundled subset is in the repository, so resolution never fails here.
        let src = resolve(None).unwrap();
        if Path::new(SYSTEM_DIR)
            .join("train-images-idx3-ubyte.gz")
            .exists()
        {
            assert!(matches!(src, DataSource::System(_)), "{src}");
        }
        assert!(!src.describe().is_empty());
    }

    #[test]
    fn bundled_subset_is_found_and_loads() {
        let src = DataSource::Bundled(bundled_dir());
        assert!(has_standard_files(src.path()), "{}", src.path().display());
        let (train, test) = src.load().unwrap();
        assert_eq!((train.rows, train.cols), (28, 28));
        assert!(train.len() >= 1000 && test.len() >= 1000);
    }
}
