//! Reading a NumPy `.npz` dataset: `x_train`, `y_train`, `x_test`, `y_test`, as
//! `keras.datasets.*.load_data()` returns them and `numpy.savez` (or `savez_compressed`)
//! writes them.
//!
//! - **Images** (`x_*`): `(N, H, W)`, `(N, C, H, W)` or `(N, H, W, C)` (see
//!   [`super::layout`]), `uint8`, or `float32`/`float64` holding 8-bit intensities: either
//!   the integers 0–255, or those divided by 255 (`x / 255.0`, as tutorials do). sprig keeps
//!   8-bit pixels because that is what a camera on the chip delivers and what the deployed
//!   model's int8 input is made from; how they become floats is `--normalize`'s business
//!   ([`super::Normalization`]), not the file's. Other floats (already normalized data)
//!   are refused with the value and its index, rather than silently rescaled.
//! - **Labels** (`y_*`): any integer dtype, `(N,)` or `(N, 1)` (keras' CIFAR), each in
//!   0–255; whether they fit the model's classes is checked against the model
//!   ([`super::Dataset::check_model`]).
//!
//! Train and test must have the same image shape; every error names the file, the
//! array and what was expected.

use std::io::Read;
use std::path::Path;

use npyz::{NpyFile, Order, TypeChar};

use super::layout;
use super::{DataError, Dataset};

/// The arrays a dataset `.npz` must hold.
pub const NPZ_ARRAYS: [&str; 4] = ["x_train", "y_train", "x_test", "y_test"];

/// How far a float may be from an 8-bit intensity and still be read as one (f32 `k/255`
/// times 255 is within a few ulps of `k`).
const PIXEL_TOLERANCE: f64 = 1e-3;

/// Loads `(train, test)` from a `.npz` file.
pub fn load_npz(path: &Path) -> Result<(Dataset, Dataset), DataError> {
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let archive_err = |e: zip::result::ZipError| DataError::NpzArchive {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(archive_err)?;
    let found: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok())
        .map(|n| n.strip_suffix(".npy").unwrap_or(&n).to_string())
        .collect();
    let mut read = |array: &'static str| -> Result<Vec<u8>, DataError> {
        let entry = format!("{array}.npy");
        if !found.iter().any(|n| n == array) {
            return Err(DataError::NpzMissingArray {
                path: path.to_path_buf(),
                array,
                found: found.clone(),
            });
        }
        let mut bytes = Vec::new();
        archive
            .by_name(&entry)
            .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
            .map_err(|e| DataError::NpzArchive {
                path: path.to_path_buf(),
                message: format!("{entry}: {e}"),
            })?;
        Ok(bytes)
    };
    // Read all four first, so a missing `y_test` is reported before any slow decoding.
    let raw: Vec<Vec<u8>> = NPZ_ARRAYS
        .iter()
        .map(|a| read(a))
        .collect::<Result<_, _>>()?;
    let split = |i: usize, which: &str| -> Result<Dataset, DataError> {
        let (x, y) = (NPZ_ARRAYS[i], NPZ_ARRAYS[i + 1]);
        let (n, chw, images) = read_images(path, x, &raw[i])?;
        let labels = read_labels(path, y, &raw[i + 1])?;
        if labels.len() != n {
            return Err(DataError::NpzArray {
                path: path.to_path_buf(),
                array: y,
                problem: format!("{} labels, but {x} holds {n} images", labels.len()),
            });
        }
        if n == 0 {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        let name = format!("{} ({which})", path.display());
        Ok(Dataset::from_parts(images, labels, chw, name))
    };
    let mut train = split(0, "train")?;
    let mut test = split(2, "test")?;
    // One class count for both splits: a test split need not hold every class.
    let classes = train.classes.max(test.classes);
    (train.classes, test.classes) = (classes, classes);
    if train.shape() != test.shape() {
        return Err(DataError::NpzArray {
            path: path.to_path_buf(),
            array: "x_test",
            problem: format!(
                "images are {:?} (C, H, W), x_train's are {:?}; both splits need one shape",
                test.shape(),
                train.shape()
            ),
        });
    }
    Ok((train, test))
}

/// Opens one `.npy` entry, refusing pickled, Fortran-ordered and structured arrays.
fn open<'a>(
    path: &Path,
    array: &'static str,
    bytes: &'a [u8],
) -> Result<NpyFile<&'a [u8]>, DataError> {
    let bad = |problem: String| DataError::NpzArray {
        path: path.to_path_buf(),
        array,
        problem,
    };
    let npy = NpyFile::new(bytes).map_err(|e| bad(format!("not a valid .npy array: {e}")))?;
    if npy.header().uses_pickled_array() {
        return Err(bad(
            "holds Python objects (pickled); save a numeric array".into()
        ));
    }
    // A header may claim any shape: check it against the bytes present before anything
    // allocates for it.
    if let Some((_, size)) = plain_type(&npy) {
        let claimed = npy
            .shape()
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d));
        if claimed.is_none_or(|c| c > bytes.len() as u64) {
            return Err(bad(format!(
                "its header claims shape {:?} of {}, more data than the {} bytes stored",
                npy.shape(),
                npy.dtype().descr(),
                bytes.len()
            )));
        }
    }
    if npy.order() == Order::Fortran {
        return Err(bad(
            "is in Fortran order; save np.ascontiguousarray(...) instead".into(),
        ));
    }
    Ok(npy)
}

/// The dtype's kind and size in bytes, or `None` for structured and array dtypes.
fn plain_type(npy: &NpyFile<&[u8]>) -> Option<(TypeChar, u64)> {
    match npy.dtype() {
        npyz::DType::Plain(t) => Some((t.type_char(), t.size_field())),
        _ => None,
    }
}

/// Reads an image array into channels-first 8-bit pixels: `(count, [C, H, W], pixels)`.
fn read_images(
    path: &Path,
    array: &'static str,
    bytes: &[u8],
) -> Result<(usize, [usize; 3], Vec<u8>), DataError> {
    let bad = |problem: String| DataError::NpzArray {
        path: path.to_path_buf(),
        array,
        problem,
    };
    let npy = open(path, array, bytes)?;
    let dtype = npy.dtype().descr();
    let (layout, n, chw) = layout::detect(npy.shape()).map_err(bad)?;
    let read_err = |e: std::io::Error| bad(format!("cannot read its {dtype} data: {e}"));
    let flat: Vec<u8> = match plain_type(&npy) {
        Some((TypeChar::Uint, 1)) => npy.into_vec::<u8>().map_err(read_err)?,
        Some((TypeChar::Float, 4)) => {
            let v = npy.into_vec::<f32>().map_err(read_err)?;
            float_pixels(v.into_iter().map(f64::from)).map_err(bad)?
        }
        Some((TypeChar::Float, 8)) => {
            float_pixels(npy.into_vec::<f64>().map_err(read_err)?.into_iter()).map_err(bad)?
        }
        _ => {
            return Err(bad(format!(
                "dtype {dtype}; images must be uint8, float32 or float64"
            )))
        }
    };
    let image_len = chw.iter().product::<usize>();
    let mut pixels = Vec::with_capacity(flat.len());
    for image in flat.chunks_exact(image_len) {
        layout::to_chw(image, layout, chw, &mut pixels);
    }
    debug_assert_eq!(pixels.len(), n * image_len);
    Ok((n, chw, pixels))
}

/// Float intensities as 8-bit pixels: all in [0, 1] means `k / 255`, otherwise they must
/// be the integers 0–255 themselves.
fn float_pixels(values: impl Iterator<Item = f64> + Clone) -> Result<Vec<u8>, String> {
    let mut max = 0f64;
    for (i, v) in values.clone().enumerate() {
        if !(0.0..=255.0).contains(&v) {
            return Err(format!(
                "value {v} at flat index {i} is not an 8-bit intensity; float images must \
                 hold 0-255 or 0-1 (x / 255.0), and sprig normalizes them itself (--normalize)"
            ));
        }
        max = max.max(v);
    }
    let factor = if max <= 1.0 { 255.0 } else { 1.0 };
    values
        .enumerate()
        .map(|(i, v)| {
            let p = (v * factor).round();
            if (v * factor - p).abs() > PIXEL_TOLERANCE {
                Err(format!(
                    "value {v} at flat index {i} is not {}; float images must hold 8-bit \
                     intensities (0-255, or 0-1 as x / 255.0), and sprig normalizes them \
                     itself (--normalize)",
                    if factor == 255.0 {
                        "a multiple of 1/255"
                    } else {
                        "an integer"
                    }
                ))
            } else {
                Ok(p as u8)
            }
        })
        .collect()
}

/// Reads a label array: `(N,)` or `(N, 1)`, integers in 0–255.
fn read_labels(path: &Path, array: &'static str, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let bad = |problem: String| DataError::NpzArray {
        path: path.to_path_buf(),
        array,
        problem,
    };
    let npy = open(path, array, bytes)?;
    let shape = npy.shape().to_vec();
    if !matches!(shape.as_slice(), [_] | [_, 1]) {
        return Err(bad(format!(
            "shape {shape:?}; labels must be (N,) or (N, 1) class indices"
        )));
    }
    let dtype = npy.dtype().descr();
    let read_err = |e: std::io::Error| bad(format!("cannot read its {dtype} data: {e}"));
    let values: Vec<i128> = match plain_type(&npy) {
        Some((TypeChar::Uint, 1)) => widen(npy.into_vec::<u8>()),
        Some((TypeChar::Uint, 2)) => widen(npy.into_vec::<u16>()),
        Some((TypeChar::Uint, 4)) => widen(npy.into_vec::<u32>()),
        Some((TypeChar::Uint, 8)) => widen(npy.into_vec::<u64>()),
        Some((TypeChar::Int, 1)) => widen(npy.into_vec::<i8>()),
        Some((TypeChar::Int, 2)) => widen(npy.into_vec::<i16>()),
        Some((TypeChar::Int, 4)) => widen(npy.into_vec::<i32>()),
        Some((TypeChar::Int, 8)) => widen(npy.into_vec::<i64>()),
        _ => {
            return Err(bad(format!(
                "dtype {dtype}; labels must be integers (class indices)"
            )))
        }
    }
    .map_err(read_err)?;
    values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            u8::try_from(v).map_err(|_| {
                bad(format!(
                    "label {v} at index {i} is not a class index (0 to 255)"
                ))
            })
        })
        .collect()
}

fn widen<T: Into<i128>>(v: std::io::Result<Vec<T>>) -> std::io::Result<Vec<i128>> {
    v.map(|v| v.into_iter().map(Into::into).collect())
}

#[cfg(test)]
pub(crate) mod tests;
