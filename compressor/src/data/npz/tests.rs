//! `.npz` reading: numpy-written fixtures, files written here with `npyz` and `zip` in
//! every layout and dtype, and every kind of bad input.

use std::io::Write;
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use super::*;
use crate::data::{bundled_dir, load_dir, DataSource};

/// One array to write: its shape and data.
pub(crate) enum Array {
    U8(Vec<u64>, Vec<u8>),
    F32(Vec<u64>, Vec<f32>),
    F64(Vec<u64>, Vec<f64>),
    I64(Vec<u64>, Vec<i64>),
}

fn npy<T: npyz::AutoSerialize + Clone>(shape: &[u64], data: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = npyz::WriteOptions::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut out)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().cloned()).unwrap();
    w.finish().unwrap();
    out
}

/// Writes `arrays` as a `.npz` (deflated entries, as `numpy.savez_compressed`).
pub(crate) fn write_npz(path: &Path, arrays: &[(&str, Array)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, array) in arrays {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        let bytes = match array {
            Array::U8(s, d) => npy(s, d),
            Array::F32(s, d) => npy(s, d),
            Array::F64(s, d) => npy(s, d),
            Array::I64(s, d) => npy(s, d),
        };
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
}

fn fixture(name: &str) -> PathBuf {
    bundled_dir().join("..").join("npz").join(name)
}

/// The bundled IDX subset's first `n_train` / `n_test` examples.
fn idx_head(n_train: usize, n_test: usize) -> (Dataset, Dataset) {
    let (train, test) = load_dir(&bundled_dir()).unwrap();
    (train.subset(n_train), test.subset(n_test))
}

fn assert_same_examples(npz: &Dataset, idx: &Dataset) {
    assert_eq!(npz.shape(), idx.shape(), "{}", npz.name);
    assert_eq!(npz.labels, idx.labels, "{}", npz.name);
    assert!(npz.images == idx.images, "{}: pixels differ", npz.name);
}

#[test]
fn numpy_written_fixtures_match_the_idx_files() {
    // Provenance and the script that wrote them: data/npz/make_fixtures.py.
    for (file, n_train, n_test) in [
        ("fashion-keras-u8.npz", 200, 100),
        ("fashion-torch-f32.npz", 24, 12),
    ] {
        let path = fixture(file);
        let (train, test) = DataSource::Npz(path.clone()).load().unwrap();
        let (idx_train, idx_test) = idx_head(n_train, n_test);
        assert_same_examples(&train, &idx_train);
        assert_same_examples(&test, &idx_test);
        assert_eq!(train.num_classes(), 10);
        assert!(train.name.contains(file) && train.name.contains("(train)"));
        assert!(path.metadata().unwrap().len() < 150_000);
    }
}

/// A 3-channel 8×6 set: pixel = 7·image + 3·channel + position, so every layout mistake
/// shows.
fn colour(n: usize) -> (Vec<u8>, Vec<u8>) {
    let (c, h, w) = (3, 8, 6);
    let chw: Vec<u8> = (0..n * c * h * w)
        .map(|k| {
            let (img, ch, pos) = (k / (c * h * w), (k / (h * w)) % c, k % (h * w));
            (7 * img + 3 * ch + pos) as u8
        })
        .collect();
    let mut hwc = vec![0; chw.len()];
    for img in 0..n {
        for ch in 0..c {
            for pos in 0..h * w {
                hwc[img * c * h * w + pos * c + ch] = chw[img * c * h * w + ch * h * w + pos];
            }
        }
    }
    (chw, hwc)
}

#[test]
fn nhwc_uint8_and_nchw_float32_give_the_same_channels_first_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let (n, m) = (5u64, 3u64);
    let (chw, hwc) = colour(5);
    let (chw_test, hwc_test) = colour(3);
    let labels = vec![0, 1, 2, 11, 4];
    let labels_i64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();

    let nhwc = dir.path().join("nhwc.npz");
    write_npz(
        &nhwc,
        &[
            ("x_train", Array::U8(vec![n, 8, 6, 3], hwc)),
            ("y_train", Array::U8(vec![n], labels.clone())),
            ("x_test", Array::U8(vec![m, 8, 6, 3], hwc_test)),
            ("y_test", Array::I64(vec![m, 1], vec![2, 0, 1])),
        ],
    );
    let nchw = dir.path().join("nchw.npz");
    let unit = |v: &[u8]| v.iter().map(|&p| f32::from(p) / 255.0).collect::<Vec<_>>();
    write_npz(
        &nchw,
        &[
            ("x_train", Array::F32(vec![n, 3, 8, 6], unit(&chw))),
            ("y_train", Array::I64(vec![n], labels_i64)),
            // 0–255 floats, as float64: read as the intensities themselves.
            (
                "x_test",
                Array::F64(
                    vec![m, 3, 8, 6],
                    chw_test.iter().map(|&p| f64::from(p)).collect(),
                ),
            ),
            ("y_test", Array::I64(vec![m], vec![2, 0, 1])),
        ],
    );
    let (a_train, a_test) = load_npz(&nhwc).unwrap();
    let (b_train, b_test) = load_npz(&nchw).unwrap();
    for d in [&a_train, &b_train] {
        assert_eq!(d.shape(), [3, 8, 6]);
        assert_eq!(d.images, chw);
        assert_eq!(d.labels, labels);
        // Classes: the largest label of either split + 1.
        assert_eq!(d.num_classes(), 12);
    }
    assert_eq!(a_test.images, chw_test);
    assert_eq!(b_test.images, chw_test);
    assert_eq!(a_test.labels, [2, 0, 1]);
    assert_eq!(b_test.num_classes(), 12);
}

/// Writes the four arrays of a valid 28×28 set, with `change` applied first.
fn write_with(dir: &Path, change: impl FnOnce(&mut Vec<(&'static str, Array)>)) -> PathBuf {
    let mut arrays = vec![
        ("x_train", Array::U8(vec![4, 28, 28], vec![9; 4 * 784])),
        ("y_train", Array::U8(vec![4], vec![0, 1, 2, 3])),
        ("x_test", Array::U8(vec![2, 28, 28], vec![9; 2 * 784])),
        ("y_test", Array::U8(vec![2], vec![3, 1])),
    ];
    change(&mut arrays);
    let path = dir.join("bad.npz");
    write_npz(&path, &arrays);
    path
}

fn load_err(path: &Path) -> (DataError, String) {
    let err = load_npz(path).expect_err("expected an error");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "no file name: {msg}"
    );
    (err, msg)
}

#[test]
fn missing_y_test_names_the_file_and_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_with(dir.path(), |a| {
        a.pop();
    });
    let (err, msg) = load_err(&path);
    assert!(
        matches!(&err, DataError::NpzMissingArray { array: "y_test", found, .. }
            if found == &["x_train", "y_train", "x_test"]),
        "{msg}"
    );
    assert!(
        msg.contains("`y_test`") && msg.contains("x_train, y_train, x_test"),
        "{msg}"
    );
}

#[test]
fn bad_labels_are_named_with_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_with(dir.path(), |a| {
        a[1].1 = Array::I64(vec![4], vec![0, 1, -1, 3]);
    });
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("`y_train`") && msg.contains("label -1 at index 2"),
        "{msg}"
    );

    let path = write_with(dir.path(), |a| {
        a[3].1 = Array::U8(vec![3], vec![0, 1, 2]);
    });
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("`y_test`") && msg.contains("3 labels") && msg.contains("2 images"),
        "{msg}"
    );

    let path = write_with(dir.path(), |a| {
        a[3].1 = Array::U8(vec![1, 2], vec![0, 1]);
    });
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("shape [1, 2]") && msg.contains("(N,) or (N, 1)"),
        "{msg}"
    );

    let path = write_with(dir.path(), |a| {
        a[1].1 = Array::F32(vec![4], vec![0.0, 1.0, 2.0, 3.0]);
    });
    let (_, msg) = load_err(&path);
    assert!(msg.contains("'<f4'") && msg.contains("integers"), "{msg}");
}

#[test]
fn labels_beyond_the_models_classes_and_other_shapes_are_refused_against_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_with(dir.path(), |a| {
        a[1].1 = Array::U8(vec![4], vec![0, 1, 12, 3]);
    });
    let (train, _) = load_npz(&path).unwrap();
    train.check_model("lenet5", [1, 28, 28], 13).unwrap();
    let msg = train
        .check_model("lenet5", [1, 28, 28], 10)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("label 12 (example 2)")
            && msg.contains("10 classes")
            && msg.contains("lenet5"),
        "{msg}"
    );
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    let msg = train
        .check_model("net.onnx", [3, 32, 32], 13)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("[1, 28, 28]") && msg.contains("[3, 32, 32]") && msg.contains("net.onnx"),
        "{msg}"
    );
}

#[test]
fn bad_images_say_what_was_expected() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Array, &str)> = vec![
        (Array::U8(vec![4, 784], vec![0; 4 * 784]), "2 axes"),
        (
            Array::U8(vec![4, 3, 28, 3], vec![0; 4 * 252]),
            "neither (N, C, H, W) nor (N, H, W, C)",
        ),
        (
            Array::I64(vec![4, 28, 28], vec![0; 4 * 784]),
            "must be uint8, float32 or float64",
        ),
        (
            Array::F32(vec![4, 28, 28], vec![-0.5; 4 * 784]),
            "value -0.5 at flat index 0",
        ),
        (
            Array::F32(vec![4, 28, 28], vec![0.3; 4 * 784]),
            "not a multiple of 1/255",
        ),
        (
            Array::F32(vec![4, 28, 28], vec![f32::NAN; 4 * 784]),
            "value NaN",
        ),
    ];
    for (x_train, want) in cases {
        let path = write_with(dir.path(), |a| a[0].1 = x_train);
        let (err, msg) = load_err(&path);
        assert!(
            matches!(
                err,
                DataError::NpzArray {
                    array: "x_train",
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains(want), "{want}: {msg}");
    }
    let path = write_with(dir.path(), |a| {
        a[2].1 = Array::U8(vec![2, 32, 32], vec![0; 2048])
    });
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("`x_test`") && msg.contains("[1, 32, 32]") && msg.contains("[1, 28, 28]"),
        "{msg}"
    );
}

#[test]
fn truncated_and_corrupt_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("fashion-torch-f32.npz")).unwrap();
    let path = dir.path().join("cut.npz");
    // Every cut point in the headers, then coarser steps through the data.
    let cuts = (0..600).chain((600..good.len()).step_by(997));
    for cut in cuts {
        std::fs::write(&path, &good[..cut]).unwrap();
        let (_, msg) = load_err(&path);
        assert!(!msg.is_empty());
    }
    // A flipped byte inside a stored .npy header: reported against its array.
    let mut flipped = good.clone();
    let at = good.windows(6).position(|w| w == b"\x93NUMPY").unwrap();
    flipped[at + 1] = b'X';
    std::fs::write(&path, &flipped).unwrap();
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("x_train") || msg.contains("CRC") || msg.contains("checksum"),
        "{msg}"
    );

    // Bytes flipped anywhere in the archive (seeded): an error or a load, never a panic.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..300 {
        let mut damaged = good.clone();
        for _ in 0..3 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = (state % damaged.len() as u64) as usize;
            damaged[at] ^= (state >> 32) as u8 | 1;
        }
        std::fs::write(&path, &damaged).unwrap();
        let _ = load_npz(&path);
    }

    // A header claiming a huge shape over a few bytes of data: refused, not allocated.
    let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (1000000000000, 28, 28), }";
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{header:<117}\n");
    npy.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    npy.extend_from_slice(padded.as_bytes());
    npy.extend_from_slice(&[0; 64]);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default();
    for name in NPZ_ARRAYS {
        zip.start_file(format!("{name}.npy"), options).unwrap();
        zip.write_all(&npy).unwrap();
    }
    zip.finish().unwrap();
    let (_, msg) = load_err(&path);
    assert!(
        msg.contains("`x_train`") && msg.contains("claims shape [1000000000000, 28, 28]"),
        "{msg}"
    );

    std::fs::write(&path, b"not a zip at all").unwrap();
    let (err, _) = load_err(&path);
    assert!(matches!(err, DataError::NpzArchive { .. }), "{err}");
    let gone = dir.path().join("none.npz");
    assert!(matches!(load_npz(&gone), Err(DataError::NotFound { .. })));
}
