//! Malformed sparse weights: each fault of a sparse section has its own error, and no
//! blob with sparse layers (truncated, bit-flipped, crafted) makes the loader or a run
//! panic.

mod common;

use common::{sparse_cnn, zoo, Built};
use sprig_runtime::format::write::seal;
use sprig_runtime::format::{FORMAT_MAJOR, FORMAT_MINOR};
use sprig_runtime::model::OpKind;
use sprig_runtime::{op_set, Encoding, Error, Model, Op};

const SPARSE: [Encoding; 2] = [Encoding::SparseRel8, Encoding::SparseRel4];

fn load(blob: &[u8]) -> Result<(), Error> {
    Model::from_bytes(blob).map(|_| ())
}

/// Blob offset of op 0's (the conv's) sparse filter, its bytes, and the blob.
fn conv_filter(encoding: Encoding) -> (usize, Vec<u8>, Vec<u8>) {
    let blob = sparse_cnn(encoding).blob();
    let model = Model::from_bytes(&blob).unwrap();
    let Some(w) = model.op(0).unwrap().weights() else {
        panic!("op 0 is the conv")
    };
    assert_eq!(w.encoding, encoding);
    let start = model.graph().data_offset as usize + w.data.offset as usize;
    let bytes = blob[start..start + w.data.len as usize].to_vec();
    (start, bytes, blob)
}

/// Patch the conv's filter bytes (`at` is the filter's start in the blob), re-seal.
fn patched(encoding: Encoding, mutate: impl FnOnce(&mut Vec<u8>, usize, &[u8])) -> Error {
    let (at, bytes, mut blob) = conv_filter(encoding);
    mutate(&mut blob, at, &bytes);
    seal(&mut blob, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
    load(&blob).expect_err("patched sparse blob must be refused")
}

/// Entries in row 0 of the conv filter (a 3×3×1 window: rows of 9).
fn row0_entries(bytes: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([bytes[0], bytes[1]]))
}

#[test]
fn sparse_models_load() {
    for encoding in SPARSE {
        let (_, bytes, blob) = conv_filter(encoding);
        load(&blob).unwrap();
        let n = row0_entries(&bytes);
        assert!((1..9).contains(&n), "row 0 is sparse and not empty: {n}");
    }
}

#[test]
fn a_row_count_larger_than_the_row() {
    for encoding in SPARSE {
        let err = patched(encoding, |blob, at, _| blob[at] = 10);
        assert_eq!(err, Error::SparseRowTooLong { op: 0, row: 0 });
    }
}

#[test]
fn counts_disagreeing_with_the_section_length() {
    for encoding in SPARSE {
        let err = patched(encoding, |blob, at, bytes| {
            blob[at] = (row0_entries(bytes) - 1) as u8
        });
        assert!(
            matches!(err, Error::DataLengthMismatch { op: 0, .. }),
            "{encoding:?}: {err:?}"
        );
    }
}

#[test]
fn an_index_past_the_row() {
    // Row 0's last gap byte (after the 4-byte count table and row 0's values).
    let last_gap = |bytes: &[u8], gap_bytes: usize| 4 + row0_entries(bytes) + gap_bytes - 1;
    let rel8 = patched(Encoding::SparseRel8, |blob, at, bytes| {
        blob[at + last_gap(bytes, row0_entries(bytes))] = 200
    });
    assert_eq!(rel8, Error::SparseIndexOutOfRow { op: 0, row: 0 });
    let rel4 = patched(Encoding::SparseRel4, |blob, at, bytes| {
        blob[at + last_gap(bytes, row0_entries(bytes).div_ceil(2))] = 0xff
    });
    assert_eq!(rel4, Error::SparseIndexOutOfRow { op: 0, row: 0 });
}

#[test]
fn an_encoding_outside_the_op_set() {
    const DENSE_CNN: sprig_runtime::OpSet = op_set(&[
        OpKind::Conv2d,
        OpKind::MaxPool2d,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]);
    for encoding in SPARSE {
        let blob = sparse_cnn(encoding).blob();
        assert_eq!(
            Model::<8, 8, DENSE_CNN>::parse(&blob).unwrap_err(),
            Error::EncodingNotInSet {
                op: 0,
                encoding: encoding as u32
            }
        );
    }
    // The set must name the blob's own encoding.
    const WITH_REL8: sprig_runtime::OpSet = DENSE_CNN | Encoding::SparseRel8.bit();
    let rel8 = sparse_cnn(Encoding::SparseRel8).blob();
    let rel4 = sparse_cnn(Encoding::SparseRel4).blob();
    assert!(Model::<8, 8, WITH_REL8>::parse(&rel8).is_ok());
    assert_eq!(
        Model::<8, 8, WITH_REL8>::parse(&rel4).unwrap_err(),
        Error::EncodingNotInSet { op: 0, encoding: 2 }
    );
}

#[test]
fn a_sparse_depthwise_filter() {
    let mut built: Built = zoo();
    let op = built
        .graph
        .ops
        .iter()
        .position(|op| matches!(op, Op::DepthwiseConv2d(_)))
        .unwrap();
    if let Op::DepthwiseConv2d(d) = &mut built.graph.ops[op] {
        d.filter.encoding = Encoding::SparseRel8;
    }
    assert_eq!(
        load(&built.blob()).unwrap_err(),
        Error::EncodingNotSupported {
            op: op as u32,
            encoding: 1
        }
    );
}

#[test]
fn every_truncation_and_bit_flip_of_a_sparse_blob() {
    for encoding in SPARSE {
        let blob = sparse_cnn(encoding).blob();
        for len in 0..blob.len() {
            assert!(
                load(&blob[..len]).is_err(),
                "{encoding:?}: prefix {len} accepted"
            );
        }
        // Flips inside the data section, re-sealed so the CRC does not catch them:
        // whatever loads must run without panicking.
        let (at, bytes, _) = conv_filter(encoding);
        let mut input = [0i8; 36];
        input
            .iter_mut()
            .enumerate()
            .for_each(|(i, x)| *x = (i * 7) as i8);
        let mut out = [0i8; 4];
        for byte in at..at + bytes.len() {
            for bit in 0..8 {
                let mut flipped = blob.clone();
                flipped[byte] ^= 1 << bit;
                seal(&mut flipped, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
                if let Ok(model) = Model::from_bytes(&flipped) {
                    let mut arena = vec![0u8; model.arena_size()];
                    model.run(&mut arena, &input, &mut out).unwrap();
                }
            }
        }
    }
}
