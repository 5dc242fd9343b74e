//! The TFLite importer: every int8 model in `../shared/models/tflite` imports, loads and
//! runs; float models are a clear error; malformed files (truncated, wrong identifier,
//! out-of-range buffer or tensor index, missing quantization) are distinct errors and
//! never a panic. Small models are built here with a minimal flatbuffer writer.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sprig_compressor::import::{tflite_to_sprig, ImportError};
use sprig_runtime::Model;

fn models_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/models/tflite"
    ));
    assert!(
        dir.is_dir(),
        "the reference TFLite models are missing: expected the folder {} (shared/models/tflite \
         beside the clone; see shared/models/README.md)",
        dir.display()
    );
    dir
}

fn read_model(name: &str) -> Vec<u8> {
    let path = models_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `(file, .tflite bytes, TFLite Micro activation arena bytes)` from the README.
const INT8_MODELS: [(&str, usize, usize); 7] = [
    ("kws_ref_model.tflite", 53_936, 16_000),
    ("pretrainedResnet_quant.tflite", 98_496, 49_152),
    ("vww_96_int8.tflite", 333_288, 73_728),
    ("ad01_int8.tflite", 276_976, 768),
    ("person_detect.tflite", 300_568, 55_296),
    ("speech.tflite", 18_800, 5_968),
    ("sine.tflite", 2_680, 32),
];

#[test]
fn every_int8_reference_model_imports_and_runs() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (file, tflite_bytes, tflm_arena) in INT8_MODELS {
        let bytes = read_model(file);
        assert_eq!(bytes.len(), tflite_bytes, "{file}: not the README's file");
        let imported = tflite_to_sprig(&bytes, file).unwrap_or_else(|e| panic!("{file}: {e}"));
        let model = Model::from_bytes(&imported.blob).expect("the importer validates");
        assert_eq!(model.arena_size(), imported.arena_bytes);
        assert!(
            imported.blob.len() <= bytes.len(),
            "{file}: .sprig {} > .tflite {}",
            imported.blob.len(),
            bytes.len()
        );
        assert!(
            imported.arena_bytes <= tflm_arena,
            "{file}: arena {} > TFLite Micro's activations {tflm_arena}",
            imported.arena_bytes
        );
        assert!(imported.macs > 0 && imported.parameters > 0, "{file}");
        let mut arena = vec![0u8; model.arena_size()];
        let mut output = vec![0i8; model.output_len()];
        for _ in 0..3 {
            let input: Vec<i8> = (0..model.input_len()).map(|_| rng.random()).collect();
            model
                .run(&mut arena, &input, &mut output)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

/// person_detect's first layer, a depthwise conv of its one input channel (3×3, ×8),
/// imports as a conv (its filter transposed), so that it runs on the conv kernels; the
/// depthwise convs after it stay depthwise.
#[test]
fn one_channel_depthwise_imports_as_a_conv() {
    let imported =
        tflite_to_sprig(&read_model("person_detect.tflite"), "person_detect").expect("imports");
    let first = &imported.ops[0];
    assert_eq!(
        (first.tflite.as_str(), first.sprig),
        ("DEPTHWISE_CONV_2D", "Conv2d")
    );
    assert_eq!(first.macs, 48 * 48 * 8 * 9, "its MACs are a 3×3×1 conv's");
    let second = &imported.ops[1];
    assert_eq!(
        (second.tflite.as_str(), second.sprig),
        ("DEPTHWISE_CONV_2D", "DepthwiseConv2d")
    );
}

#[test]
fn float_models_are_a_clear_error() {
    for file in ["kws_ref_model_float32.tflite", "ad01_fp32.tflite"] {
        let err = tflite_to_sprig(&read_model(file), file).expect_err(file);
        assert!(
            matches!(
                err,
                ImportError::NotInt8 {
                    dtype: "float32",
                    ..
                }
            ),
            "{file}: {err}"
        );
        assert!(err.to_string().contains("int8"), "{err}");
    }
}

#[test]
fn every_truncation_of_sine_is_an_error() {
    let bytes = read_model("sine.tflite");
    for len in 0..bytes.len() {
        match tflite_to_sprig(&bytes[..len], "sine") {
            Err(ImportError::OutOfBounds { .. }) => {}
            // A cut that keeps every referenced byte (trailing padding only) may import.
            Ok(_) => assert!(len + 16 > bytes.len(), "prefix {len} imported"),
            Err(e) => panic!("prefix {len}: unexpected error {e}"),
        }
    }
}

#[test]
fn wrong_identifier_is_an_error() {
    let mut bytes = read_model("sine.tflite");
    bytes[4..8].copy_from_slice(b"TFL2");
    let err = tflite_to_sprig(&bytes, "sine").unwrap_err();
    assert_eq!(err, ImportError::BadIdentifier { found: *b"TFL2" });
    let err = tflite_to_sprig(&Tiny::default().build(), "tiny");
    assert!(err.is_ok(), "{err:?}");
    let err = tflite_to_sprig(
        &Tiny {
            ident: *b"ONNX",
            ..Tiny::default()
        }
        .build(),
        "tiny",
    )
    .unwrap_err();
    assert!(matches!(err, ImportError::BadIdentifier { .. }), "{err}");
}

#[test]
fn corrupt_offsets_never_panic() {
    // Overwrite every aligned u32 of sine with huge / small values in turn.
    let bytes = read_model("sine.tflite");
    for pos in (0..bytes.len().saturating_sub(4)).step_by(4) {
        for v in [0u32, 1, 0x7fff_ffff, 0xffff_fff0] {
            let mut b = bytes.clone();
            b[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
            let _ = tflite_to_sprig(&b, "sine");
        }
    }
}

// ---------------------------------------------------------------------------------
// A minimal flatbuffer writer (front to back: every offset points forward, vtables sit
// just before their table) and a one-op FULLY_CONNECTED model built with it.

enum F {
    U8(u8),
    I32(i32),
    U32(u32),
    F32(f32),
    Table(T),
    VI32(Vec<i32>),
    VF32(Vec<f32>),
    VI64(Vec<i64>),
    VU8(Vec<u8>),
    VT(Vec<T>),
    Str(&'static str),
}

struct T(Vec<(usize, F)>);

fn put_u32(out: &mut [u8], pos: usize, v: u32) {
    out[pos..pos + 4].copy_from_slice(&v.to_le_bytes());
}

fn write_table(out: &mut Vec<u8>, t: &T) -> usize {
    let n = t.0.iter().map(|(id, _)| id + 1).max().unwrap_or(0);
    let mut slots = vec![0u16; n];
    let mut size = 4usize;
    for (id, f) in &t.0 {
        slots[*id] = size as u16;
        size += if matches!(f, F::U8(_)) { 1 } else { 4 };
    }
    let vt = out.len();
    out.extend_from_slice(&(4 + 2 * n as u16).to_le_bytes());
    out.extend_from_slice(&(size as u16).to_le_bytes());
    for s in &slots {
        out.extend_from_slice(&s.to_le_bytes());
    }
    let pos = out.len();
    out.extend_from_slice(&((pos - vt) as i32).to_le_bytes());
    let mut pending = Vec::new();
    for (_, f) in &t.0 {
        match f {
            F::U8(v) => out.push(*v),
            F::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
            F::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
            F::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
            other => {
                pending.push((out.len(), other));
                out.extend_from_slice(&[0; 4]);
            }
        }
    }
    for (slot, f) in pending {
        let target = write_child(out, f);
        put_u32(out, slot, (target - slot) as u32);
    }
    pos
}

fn write_child(out: &mut Vec<u8>, f: &F) -> usize {
    let pos = out.len();
    let len = |n: usize| (n as u32).to_le_bytes();
    match f {
        F::Table(t) => return write_table(out, t),
        F::VI32(v) => {
            out.extend_from_slice(&len(v.len()));
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        F::VF32(v) => {
            out.extend_from_slice(&len(v.len()));
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        F::VI64(v) => {
            out.extend_from_slice(&len(v.len()));
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        F::VU8(v) => {
            out.extend_from_slice(&len(v.len()));
            out.extend_from_slice(v);
        }
        F::Str(s) => {
            out.extend_from_slice(&len(s.len()));
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        F::VT(ts) => {
            out.extend_from_slice(&len(ts.len()));
            let slots: Vec<usize> = ts
                .iter()
                .map(|_| {
                    out.extend_from_slice(&[0; 4]);
                    out.len() - 4
                })
                .collect();
            for (slot, t) in slots.into_iter().zip(ts) {
                let target = write_table(out, t);
                put_u32(out, slot, (target - slot) as u32);
            }
        }
        F::U8(_) | F::I32(_) | F::U32(_) | F::F32(_) => unreachable!("inline field"),
    }
    pos
}

fn finish(ident: [u8; 4], root: &T) -> Vec<u8> {
    let mut out = vec![0u8; 8];
    out[4..8].copy_from_slice(&ident);
    let pos = write_table(&mut out, root);
    put_u32(&mut out, 0, pos as u32);
    out
}

const INT8: u8 = 9;
const INT32: u8 = 2;
const FLOAT32: u8 = 0;

fn quant(scale: Vec<f32>, zp: Vec<i64>, dim: i32) -> F {
    F::Table(T(vec![
        (2, F::VF32(scale)),
        (3, F::VI64(zp)),
        (6, F::I32(dim)),
    ]))
}

fn tensor(shape: Vec<i32>, dtype: u8, buffer: u32, name: &'static str, q: Option<F>) -> T {
    let mut fields = vec![
        (0, F::VI32(shape)),
        (1, F::U8(dtype)),
        (2, F::U32(buffer)),
        (3, F::Str(name)),
    ];
    if let Some(q) = q {
        fields.push((4, q));
    }
    T(fields)
}

/// A one-op model: input [1, 4] → FULLY_CONNECTED (3 outputs, per-channel, RELU) →
/// output [1, 3]; fields to break it in one place.
struct Tiny {
    ident: [u8; 4],
    weight_buffer: u32,
    op_inputs: Vec<i32>,
    input_quant: bool,
    input_type: u8,
    opcode: i32,
}

impl Default for Tiny {
    fn default() -> Self {
        Tiny {
            ident: *b"TFL3",
            weight_buffer: 1,
            op_inputs: vec![0, 1, 2],
            input_quant: true,
            input_type: INT8,
            opcode: 9,
        }
    }
}

impl Tiny {
    fn build(&self) -> Vec<u8> {
        let weights: Vec<u8> = (0..12).map(|i| (i as i8 * 9 - 50) as u8).collect();
        let bias: Vec<u8> = [100i32, -200, 300]
            .iter()
            .flat_map(|b| b.to_le_bytes())
            .collect();
        let input_q = self.input_quant.then(|| quant(vec![0.5], vec![-3], 0));
        let tensors = vec![
            tensor(vec![1, 4], self.input_type, 0, "input", input_q),
            tensor(
                vec![3, 4],
                INT8,
                self.weight_buffer,
                "weights",
                Some(quant(vec![0.01, 0.02, 0.03], vec![0, 0, 0], 0)),
            ),
            tensor(vec![3], INT32, 2, "bias", None),
            tensor(
                vec![1, 3],
                INT8,
                0,
                "output",
                Some(quant(vec![0.25], vec![5], 0)),
            ),
        ];
        let op = T(vec![
            (0, F::U32(0)),
            (1, F::VI32(self.op_inputs.clone())),
            (2, F::VI32(vec![3])),
            (3, F::U8(8)),
            (4, F::Table(T(vec![(0, F::U8(1))]))),
        ]);
        let subgraph = T(vec![
            (0, F::VT(tensors)),
            (1, F::VI32(vec![0])),
            (2, F::VI32(vec![3])),
            (3, F::VT(vec![op])),
        ]);
        let opcode = T(vec![
            (0, F::U8(self.opcode.min(127) as u8)),
            (2, F::I32(1)),
            (3, F::I32(self.opcode)),
        ]);
        let buffers = vec![
            T(vec![]),
            T(vec![(0, F::VU8(weights))]),
            T(vec![(0, F::VU8(bias))]),
        ];
        let root = T(vec![
            (0, F::U32(3)),
            (1, F::VT(vec![opcode])),
            (2, F::VT(vec![subgraph])),
            (4, F::VT(buffers)),
        ]);
        finish(self.ident, &root)
    }
}

#[test]
fn tiny_fc_model_imports_and_matches_a_float_reference() {
    let imported = tflite_to_sprig(&Tiny::default().build(), "tiny").unwrap();
    assert_eq!(imported.ops.len(), 1);
    assert_eq!(imported.macs, 12);
    assert_eq!(imported.parameters, 15);
    let model = Model::from_bytes(&imported.blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut out = [0i8; 3];
    let input = [10i8, -20, 30, 127];
    model.run(&mut arena, &input, &mut out).unwrap();
    // Float reference: real = scale·(q − zp); relu; quantize at 0.25 / 5.
    let w: Vec<f64> = (0..12).map(|i| f64::from(i as i8 * 9 - 50)).collect();
    let bias = [100.0, -200.0, 300.0];
    for c in 0..3 {
        let ws = [0.01, 0.02, 0.03][c];
        let acc: f64 = (0..4)
            .map(|k| (f64::from(input[k]) + 3.0) * w[c * 4 + k])
            .sum::<f64>()
            + bias[c];
        let real = (acc * 0.5 * ws).max(0.0);
        let q = ((real / 0.25).round() + 5.0).clamp(5.0, 127.0);
        assert!(
            (f64::from(out[c]) - q).abs() <= 1.0,
            "channel {c}: {} vs {q}",
            out[c]
        );
    }
}

#[test]
fn out_of_range_buffer_index_is_an_error() {
    let bytes = Tiny {
        weight_buffer: 99,
        ..Tiny::default()
    }
    .build();
    let err = tflite_to_sprig(&bytes, "tiny").unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::BufferIndexOutOfRange {
                tensor: 1,
                buffer: 99,
                count: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn out_of_range_tensor_index_is_an_error() {
    for bad in [99, -5] {
        let bytes = Tiny {
            op_inputs: vec![0, bad, 2],
            ..Tiny::default()
        }
        .build();
        let err = tflite_to_sprig(&bytes, "tiny").unwrap_err();
        assert!(
            matches!(err, ImportError::TensorIndexOutOfRange { index, count: 4, .. } if index == i64::from(bad)),
            "{err}"
        );
        assert!(
            err.to_string().contains("operator 0 (FULLY_CONNECTED)"),
            "{err}"
        );
    }
}

#[test]
fn missing_quantization_on_an_int8_tensor_is_an_error() {
    let bytes = Tiny {
        input_quant: false,
        ..Tiny::default()
    }
    .build();
    let err = tflite_to_sprig(&bytes, "tiny").unwrap_err();
    assert!(
        matches!(err, ImportError::MissingQuantization { tensor: 0, .. }),
        "{err}"
    );
}

#[test]
fn float_input_is_an_error() {
    let bytes = Tiny {
        input_type: FLOAT32,
        ..Tiny::default()
    }
    .build();
    let err = tflite_to_sprig(&bytes, "tiny").unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::NotInt8 {
                tensor: 0,
                dtype: "float32",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn unsupported_operator_names_index_and_op() {
    let bytes = Tiny {
        opcode: 14, // LOGISTIC
        ..Tiny::default()
    }
    .build();
    let err = tflite_to_sprig(&bytes, "tiny").unwrap_err();
    assert!(
        matches!(&err, ImportError::Op { index: 0, op, .. } if op == "LOGISTIC"),
        "{err}"
    );
}

#[test]
fn malformed_files_give_distinct_errors() {
    let kinds: Vec<std::mem::Discriminant<ImportError>> = [
        tflite_to_sprig(&read_model("sine.tflite")[..100], "t"),
        tflite_to_sprig(
            &Tiny {
                ident: *b"XXXX",
                ..Tiny::default()
            }
            .build(),
            "t",
        ),
        tflite_to_sprig(
            &Tiny {
                weight_buffer: 7,
                ..Tiny::default()
            }
            .build(),
            "t",
        ),
        tflite_to_sprig(
            &Tiny {
                op_inputs: vec![0, 9, 2],
                ..Tiny::default()
            }
            .build(),
            "t",
        ),
        tflite_to_sprig(
            &Tiny {
                input_quant: false,
                ..Tiny::default()
            }
            .build(),
            "t",
        ),
        tflite_to_sprig(
            &Tiny {
                input_type: FLOAT32,
                ..Tiny::default()
            }
            .build(),
            "t",
        ),
    ]
    .into_iter()
    .map(|r| std::mem::discriminant(&r.unwrap_err()))
    .collect();
    for (i, a) in kinds.iter().enumerate() {
        for b in &kinds[i + 1..] {
            assert_ne!(a, b, "two malformed files share an error kind");
        }
    }
}

fn build_model(
    tensors: Vec<T>,
    buffers: Vec<Vec<u8>>,
    opcodes: &[i32],
    operators: Vec<T>,
    io: (i32, i32),
) -> Vec<u8> {
    let subgraph = T(vec![
        (0, F::VT(tensors)),
        (1, F::VI32(vec![io.0])),
        (2, F::VI32(vec![io.1])),
        (3, F::VT(operators)),
    ]);
    let opcodes = opcodes
        .iter()
        .map(|&c| T(vec![(0, F::U8(c as u8)), (2, F::I32(1)), (3, F::I32(c))]))
        .collect();
    let buffers = buffers
        .into_iter()
        .map(|b| {
            if b.is_empty() {
                T(vec![])
            } else {
                T(vec![(0, F::VU8(b))])
            }
        })
        .collect();
    let root = T(vec![
        (0, F::U32(3)),
        (1, F::VT(opcodes)),
        (2, F::VT(vec![subgraph])),
        (4, F::VT(buffers)),
    ]);
    finish(*b"TFL3", &root)
}

fn operator(opcode: u32, inputs: Vec<i32>, output: i32, options: (u8, T)) -> T {
    T(vec![
        (0, F::U32(opcode)),
        (1, F::VI32(inputs)),
        (2, F::VI32(vec![output])),
        (3, F::U8(options.0)),
        (4, F::Table(options.1)),
    ])
}

/// input [1,4,4,2] → CONV_2D 3×3 SAME (4 channels, per-channel scales, RELU6,
/// dilation `dilation`) → MAX_POOL_2D 2×2/2 VALID → RESHAPE [1,16] → SOFTMAX.
fn conv_pool_softmax(dilation: i32) -> Vec<u8> {
    let q = |s: f32, z: i64| Some(quant(vec![s], vec![z], 0));
    let tensors = vec![
        tensor(vec![1, 4, 4, 2], INT8, 0, "input", q(0.1, 0)),
        tensor(
            vec![4, 3, 3, 2],
            INT8,
            1,
            "filter",
            Some(quant(vec![0.01, 0.02, 0.015, 0.03], vec![0; 4], 0)),
        ),
        tensor(vec![4], INT32, 2, "bias", None),
        tensor(vec![1, 4, 4, 4], INT8, 0, "conv", q(0.05, -128)),
        tensor(vec![1, 2, 2, 4], INT8, 0, "pool", q(0.05, -128)),
        tensor(vec![2], INT32, 3, "new_shape", None),
        tensor(vec![1, 16], INT8, 0, "flat", q(0.05, -128)),
        tensor(vec![1, 16], INT8, 0, "probs", q(1.0 / 256.0, -128)),
    ];
    let filter: Vec<u8> = (0..72).map(|i| ((i * 37) % 255) as u8).collect();
    let bias: Vec<u8> = [50i32, -60, 70, -80]
        .iter()
        .flat_map(|b| b.to_le_bytes())
        .collect();
    let shape: Vec<u8> = [1i32, 16].iter().flat_map(|b| b.to_le_bytes()).collect();
    let conv_opts = T(vec![
        (0, F::U8(0)),
        (1, F::I32(1)),
        (2, F::I32(1)),
        (3, F::U8(3)),
        (4, F::I32(dilation)),
        (5, F::I32(dilation)),
    ]);
    let pool_opts = T(vec![
        (0, F::U8(1)),
        (1, F::I32(2)),
        (2, F::I32(2)),
        (3, F::I32(2)),
        (4, F::I32(2)),
    ]);
    let ops = vec![
        operator(0, vec![0, 1, 2], 3, (1, conv_opts)),
        operator(1, vec![3], 4, (5, pool_opts)),
        operator(2, vec![4, 5], 6, (17, T(vec![]))),
        operator(3, vec![6], 7, (9, T(vec![(0, F::F32(1.0))]))),
    ];
    build_model(
        tensors,
        vec![vec![], filter, bias, shape],
        &[3, 17, 22, 25],
        ops,
        (0, 7),
    )
}

#[test]
fn conv_maxpool_reshape_softmax_import_and_run() {
    let imported = tflite_to_sprig(&conv_pool_softmax(1), "small").unwrap();
    let names: Vec<&str> = imported.ops.iter().map(|o| o.sprig).collect();
    assert_eq!(names, ["Conv2d", "MaxPool2d", "Reshape", "Softmax"]);
    assert_eq!(imported.macs, 16 * 4 * 9 * 2);
    let model = Model::from_bytes(&imported.blob).unwrap();
    // The importer runs the conv and the max pool after it as one op.
    let ops: Vec<_> = model.ops().collect();
    assert_eq!(ops.len(), 3, "{ops:?}");
    let sprig_runtime::Op::Conv2dMaxPool(fused) = ops[0] else {
        panic!("not a fused conv + max pool: {:?}", ops[0]);
    };
    let conv = fused.conv;
    // SAME, 3×3, stride 1: one row/column each side; RELU6 at 0.05/−128: [−128, −8].
    assert_eq!(
        (
            conv.padding.top,
            conv.padding.left,
            conv.padding.bottom,
            conv.padding.right
        ),
        (1, 1, 1, 1)
    );
    assert_eq!((conv.act_min, conv.act_max), (-128, -8));
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut arena = vec![0u8; model.arena_size()];
    let mut out = vec![0i8; 16];
    for _ in 0..10 {
        let input: Vec<i8> = (0..32).map(|_| rng.random()).collect();
        model.run(&mut arena, &input, &mut out).unwrap();
        let total: i32 = out.iter().map(|&q| i32::from(q) + 128).sum();
        assert!((total - 256).abs() <= 16, "softmax sums to {total}/256");
    }
}

#[test]
fn dilation_is_an_error_naming_the_operator() {
    let err = tflite_to_sprig(&conv_pool_softmax(2), "small").unwrap_err();
    assert!(
        matches!(&err, ImportError::Op { index: 0, op, reason } if op == "CONV_2D" && reason.contains("dilation")),
        "{err}"
    );
}
