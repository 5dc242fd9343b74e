//! Reading and writing MNIST-format IDX files, gzip-compressed or raw.
//!
//! The IDX format (Yann LeCun's MNIST page) is a big-endian header followed by raw bytes:
//!
//! | file   | header                                               | data                    |
//! |--------|------------------------------------------------------|-------------------------|
//! | images | magic `0x00000803`, count, rows, cols (4 × u32 BE)   | `count·rows·cols` bytes |
//! | labels | magic `0x00000801`, count (2 × u32 BE)               | `count` bytes           |
//!
//! Compression is detected from the first two bytes (the gzip magic `1f 8b`), never from
//! the file name, so a decompressed file that kept its `.gz` name still reads. A file must
//! hold exactly what its header announces: missing bytes and trailing bytes are both errors.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::bufread::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::DataError;

/// Magic number of an IDX file of unsigned-byte, 3-dimensional data (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned-byte, 1-dimensional data (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

const IMAGES_HEADER_LEN: usize = 16;
const LABELS_HEADER_LEN: usize = 8;
/// Largest buffer reserved up front from a header's claims; beyond this the buffer grows
/// as bytes actually arrive, so a lying header cannot make us allocate gigabytes.
const MAX_PREALLOC: usize = 64 << 20;

/// The contents of an IDX image file: `count` images of `rows × cols` bytes, row-major,
/// one after the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Images {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count * rows * cols` pixel bytes.
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (magic `0x00000803`), gzip or raw.
pub fn read_images(path: &Path) -> Result<Images, DataError> {
    let mut reader = IdxReader::open(path)?;
    let header = reader.header(IMAGES_HEADER_LEN, IMAGES_MAGIC, "images")?;
    let count = be_u32(&header[4..8]) as usize;
    let rows = be_u32(&header[8..12]) as usize;
    let cols = be_u32(&header[12..16]) as usize;
    let bad_dims = || DataError::BadDimensions {
        path: path.to_path_buf(),
        count,
        rows,
        cols,
    };
    if rows == 0 || cols == 0 {
        return Err(bad_dims());
    }
    let expected = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .ok_or_else(bad_dims)?;
    let pixels = reader.data(expected, "pixel data")?;
    Ok(Images {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX label file (magic `0x00000801`), gzip or raw. Values are not range-checked
/// here; [`Dataset`](super::Dataset) loading does that.
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut reader = IdxReader::open(path)?;
    let header = reader.header(LABELS_HEADER_LEN, LABELS_MAGIC, "labels")?;
    let count = be_u32(&header[4..8]) as usize;
    reader.data(count, "label data")
}

/// Writes `images` as a gzip-compressed IDX image file.
pub fn write_images(path: &Path, images: &Images) -> Result<(), DataError> {
    let bytes = encode_images(path, images)?;
    write_gzip(path, &bytes)
}

/// Writes `labels` as a gzip-compressed IDX label file.
pub fn write_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    let bytes = encode_labels(path, labels)?;
    write_gzip(path, &bytes)
}

/// The raw (uncompressed) IDX bytes of `images`; `path` is only used in error messages.
pub(crate) fn encode_images(path: &Path, images: &Images) -> Result<Vec<u8>, DataError> {
    let Images {
        count,
        rows,
        cols,
        ref pixels,
    } = *images;
    let dims = (
        u32::try_from(count),
        u32::try_from(rows),
        u32::try_from(cols),
    );
    let (Ok(c), Ok(r), Ok(k)) = dims else {
        return Err(DataError::BadDimensions {
            path: path.to_path_buf(),
            count,
            rows,
            cols,
        });
    };
    let expected = count.checked_mul(rows).and_then(|n| n.checked_mul(cols));
    if expected != Some(pixels.len()) {
        return Err(DataError::PixelBufferSize {
            path: path.to_path_buf(),
            count,
            rows,
            cols,
            expected: expected.unwrap_or(usize::MAX),
            found: pixels.len(),
        });
    }
    let mut out = Vec::with_capacity(IMAGES_HEADER_LEN + pixels.len());
    for word in [IMAGES_MAGIC, c, r, k] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(pixels);
    Ok(out)
}

/// The raw (uncompressed) IDX bytes of `labels`; `path` is only used in error messages.
pub(crate) fn encode_labels(path: &Path, labels: &[u8]) -> Result<Vec<u8>, DataError> {
    let count = u32::try_from(labels.len()).map_err(|_| DataError::BadDimensions {
        path: path.to_path_buf(),
        count: labels.len(),
        rows: 1,
        cols: 1,
    })?;
    let mut out = Vec::with_capacity(LABELS_HEADER_LEN + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(labels);
    Ok(out)
}

fn write_gzip(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let io_err = |e| DataError::io(path, e);
    let file = File::create(path).map_err(io_err)?;
    let mut encoder = GzEncoder::new(BufWriter::new(file), Compression::best());
    encoder.write_all(bytes).map_err(io_err)?;
    let mut writer = encoder.finish().map_err(io_err)?;
    writer.flush().map_err(io_err)?;
    let file = writer.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A file opened for IDX reading, transparently decompressed when it starts with `1f 8b`.
struct IdxReader<'p> {
    path: &'p Path,
    inner: Box<dyn Read>,
    gzip: bool,
}

impl<'p> IdxReader<'p> {
    fn open(path: &'p Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let mut buffered = BufReader::with_capacity(1 << 16, file);
        // `fill_buf` may return fewer than two bytes only at end of file (or for exotic
        // readers); a one-byte file is then simply read raw and reported as truncated.
        let start = buffered.fill_buf().map_err(|e| DataError::io(path, e))?;
        let gzip = start.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn Read> = if gzip {
            Box::new(GzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        Ok(IdxReader { path, inner, gzip })
    }

    fn read_error(&self, source: std::io::Error) -> DataError {
        if self.gzip {
            DataError::Gzip {
                path: self.path.to_path_buf(),
                source,
            }
        } else {
            DataError::io(self.path, source)
        }
    }

    /// Reads up to `limit` bytes, appending to `buf`; returns how many were read.
    fn read_up_to(&mut self, limit: usize, buf: &mut Vec<u8>) -> Result<usize, DataError> {
        let before = buf.len();
        match (&mut self.inner).take(limit as u64).read_to_end(buf) {
            Ok(_) => Ok(buf.len() - before),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Reads the fixed-size header and checks its magic number.
    fn header(&mut self, len: usize, magic: u32, kind: &'static str) -> Result<Vec<u8>, DataError> {
        let mut header = Vec::with_capacity(len);
        let found = self.read_up_to(len, &mut header)?;
        if found >= 4 {
            let got = be_u32(&header[..4]);
            if got != magic {
                return Err(DataError::BadMagic {
                    path: self.path.to_path_buf(),
                    kind,
                    expected: magic,
                    found: got,
                });
            }
        }
        if found < len {
            return Err(DataError::TruncatedHeader {
                path: self.path.to_path_buf(),
                expected: len,
                found,
            });
        }
        Ok(header)
    }

    /// Reads exactly `expected` data bytes and checks that nothing follows them.
    fn data(&mut self, expected: usize, what: &'static str) -> Result<Vec<u8>, DataError> {
        let mut data = Vec::with_capacity(expected.min(MAX_PREALLOC));
        let found = self.read_up_to(expected, &mut data)?;
        if found < expected {
            return Err(DataError::TruncatedData {
                path: self.path.to_path_buf(),
                what,
                expected,
                found,
            });
        }
        // Reading on to the end also makes the gzip decoder check its CRC trailer.
        let extra =
            std::io::copy(&mut self.inner, &mut std::io::sink()).map_err(|e| self.read_error(e))?;
        if extra > 0 {
            return Err(DataError::TrailingBytes {
                path: self.path.to_path_buf(),
                what,
                expected,
                extra: usize::try_from(extra).unwrap_or(usize::MAX),
            });
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_images() -> Images {
        let (count, rows, cols) = (3, 4, 5);
        let pixels = (0..count * rows * cols)
            .map(|i| (i * 7 % 256) as u8)
            .collect();
        Images {
            count,
            rows,
            cols,
            pixels,
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn raw_images(images: &Images) -> Vec<u8> {
        encode_images(Path::new("mem"), images).unwrap()
    }

    fn raw_labels(labels: &[u8]) -> Vec<u8> {
        encode_labels(Path::new("mem"), labels).unwrap()
    }

    #[test]
    fn round_trip_gzip() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample_images();
        let labels = vec![0u8, 9, 3];
        let ip = dir.path().join("i.gz");
        let lp = dir.path().join("l.gz");
        write_images(&ip, &images).unwrap();
        write_labels(&lp, &labels).unwrap();
        // Really gzip on disk.
        assert_eq!(&std::fs::read(&ip).unwrap()[..2], &[0x1f, 0x8b]);
        assert_eq!(read_images(&ip).unwrap(), images);
        assert_eq!(read_labels(&lp).unwrap(), labels);
    }

    #[test]
    fn round_trip_raw_regardless_of_extension() {
        let dir = tempfile::tempdir().unwrap();
        let images = sample_images();
        let labels = vec![1u8, 2, 3];
        // Raw bytes under a `.gz` name: detection is by content, not by name.
        let ip = dir.path().join("images.gz");
        let lp = dir.path().join("labels");
        std::fs::write(&ip, raw_images(&images)).unwrap();
        std::fs::write(&lp, raw_labels(&labels)).unwrap();
        assert_eq!(read_images(&ip).unwrap(), images);
        assert_eq!(read_labels(&lp).unwrap(), labels);
        // And gzip bytes without a `.gz` name.
        std::fs::write(&lp, gzip(&raw_labels(&labels))).unwrap();
        assert_eq!(read_labels(&lp).unwrap(), labels);
    }

    #[test]
    fn raw_header_layout_is_big_endian() {
        let bytes = raw_images(&sample_images());
        assert_eq!(
            &bytes[..16],
            &[0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5]
        );
        assert_eq!(&raw_labels(&[7, 7])[..], &[0, 0, 8, 1, 0, 0, 0, 2, 7, 7]);
    }

    #[test]
    fn missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.gz");
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(&err, DataError::NotFound { path } if path == &p),
            "{err}"
        );
        assert!(err.to_string().contains("nope.gz"));
    }

    #[test]
    fn a_folder_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_labels(dir.path()).unwrap_err();
        assert!(matches!(err, DataError::Io { .. }), "{err}");
    }

    #[test]
    fn wrong_magic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels-as-images");
        std::fs::write(&p, gzip(&raw_labels(&[1, 2, 3]))).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadMagic {
                    expected: 0x803,
                    found: 0x801,
                    ..
                }
            ),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("0x00000803") && msg.contains("0x00000801"),
            "{msg}"
        );
        assert!(msg.contains("labels-as-images"), "{msg}");
    }

    #[test]
    fn truncated_pixel_data() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.gz");
        let mut bytes = raw_images(&sample_images());
        bytes.truncate(bytes.len() - 7);
        std::fs::write(&p, gzip(&bytes)).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TruncatedData {
                    expected: 60,
                    found: 53,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err
            .to_string()
            .contains("expected 60 bytes of pixel data, found 53"));
    }

    #[test]
    fn truncated_labels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short");
        let mut bytes = raw_labels(&[1, 2, 3, 4]);
        bytes.pop();
        std::fs::write(&p, bytes).unwrap();
        let err = read_labels(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TruncatedData {
                    what: "label data",
                    expected: 4,
                    found: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn truncated_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hdr");
        std::fs::write(&p, &raw_images(&sample_images())[..10]).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TruncatedHeader {
                    expected: 16,
                    found: 10,
                    ..
                }
            ),
            "{err}"
        );
        std::fs::write(&p, b"").unwrap();
        let err = read_labels(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TruncatedHeader {
                    expected: 8,
                    found: 0,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn trailing_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("long.gz");
        let mut bytes = raw_images(&sample_images());
        bytes.extend_from_slice(&[0; 5]);
        std::fs::write(&p, gzip(&bytes)).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::TrailingBytes {
                    expected: 60,
                    extra: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_stream() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("corrupt.gz");
        // Gzip magic, then garbage.
        std::fs::write(&p, [0x1f, 0x8b, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 4, 5]).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("corrupt.gz"));

        // A valid stream with a flipped byte in the CRC trailer.
        let mut bytes = gzip(&raw_labels(&[1, 2, 3]));
        let n = bytes.len();
        bytes[n - 6] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let err = read_labels(&p).unwrap_err();
        assert!(matches!(err, DataError::Gzip { .. }), "{err}");
    }

    #[test]
    fn cut_off_gzip_stream_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.gz");
        let bytes = gzip(&raw_images(&sample_images()));
        // Cut inside the deflate data, and cut only the CRC/length trailer.
        for cut in [10, 4] {
            std::fs::write(&p, &bytes[..bytes.len() - cut]).unwrap();
            let err = read_images(&p).unwrap_err();
            assert!(matches!(err, DataError::Gzip { .. }), "cut {cut}: {err}");
        }
    }

    #[test]
    fn zero_sized_images_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("zero");
        let mut bytes = raw_images(&Images {
            count: 0,
            rows: 1,
            cols: 1,
            pixels: vec![],
        });
        bytes[11] = 0; // rows = 0
        std::fs::write(&p, bytes).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(err, DataError::BadDimensions { rows: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn huge_header_claims_do_not_allocate_or_panic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liar");
        let mut bytes = Vec::new();
        for w in [IMAGES_MAGIC, u32::MAX, u32::MAX, u32::MAX] {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
        std::fs::write(&p, &bytes).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadDimensions { .. } | DataError::TruncatedData { .. }
            ),
            "{err}"
        );
        let mut bytes = Vec::new();
        for w in [IMAGES_MAGIC, 1 << 20, 1 << 10, 1 << 10] {
            bytes.extend_from_slice(&w.to_be_bytes());
        }
        std::fs::write(&p, &bytes).unwrap();
        let err = read_images(&p).unwrap_err();
        assert!(
            matches!(err, DataError::TruncatedData { found: 0, .. }),
            "{err}"
        );
    }

    #[test]
    fn write_rejects_inconsistent_images() {
        let dir = tempfile::tempdir().unwrap();
        let mut images = sample_images();
        images.pixels.pop();
        let err = write_images(&dir.path().join("x.gz"), &images).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::PixelBufferSize {
                    expected: 60,
                    found: 59,
                    ..
                }
            ),
            "{err}"
        );
    }
}
