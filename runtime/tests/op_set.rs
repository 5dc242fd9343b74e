//! Compile-time op sets: a `Model` restricted to some op kinds refuses a blob with any
//! other op (never a panic) and runs the blobs it accepts bit-exact with the default,
//! every-op `Model`.

mod common;

use common::{cnn, sparse_cnn, zoo, Lcg};
use sprig_runtime::model::{kernels_in, kinds_in, used_by, KERNEL_CHOICES};
use sprig_runtime::{
    encoding_set, kernel_set, kind_set, op_set, DenseConvKernel, DenseFcKernel, DepthwiseKernel,
    Encoding, Error, FusedSparseKernel, Kernel, Model, OpKind, OpSet, ALL_OPS,
};

/// The test CNN's ops: conv, max pool, reshape, fully connected (LeNet-5's set).
const CNN_OPS: OpSet = op_set(&[
    OpKind::Conv2d,
    OpKind::MaxPool2d,
    OpKind::Reshape,
    OpKind::FullyConnected,
]);

/// The test zoo's ops: every op but conv and max pool (fused or not), weights dense.
const ZOO_OPS: OpSet = (ALL_OPS
    & !CNN_OPS
    & !OpKind::Conv2dMaxPool.bit()
    & !encoding_set(&Encoding::ALL)
    & !OpKind::BinaryConv2d.bit()
    & !OpKind::BinaryFullyConnected.bit())
    | OpKind::Reshape.bit()
    | OpKind::FullyConnected.bit()
    | Encoding::Dense.bit();

#[test]
fn used_by_names_exactly_a_models_kinds() {
    let blob = cnn().blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(used_by(model.ops()), CNN_OPS);
    let blob = zoo().blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(used_by(model.ops()), ZOO_OPS);
    assert_eq!(kinds_in(ZOO_OPS).count(), 8);
    // Sparse weights have their encoding's bit instead of dense's.
    let blob = sparse_cnn(Encoding::SparseRel4).blob();
    let model = Model::from_bytes(&blob).unwrap();
    let sparse = (CNN_OPS & !Encoding::Dense.bit()) | Encoding::SparseRel4.bit();
    assert_eq!(used_by(model.ops()), sparse);
}

#[test]
fn an_op_outside_the_set_is_refused_with_its_index_and_kind() {
    let blob = cnn().blob();
    // The CNN's ops: 0 conv, 1 max pool, 2 reshape, 3 fully connected.
    assert_eq!(
        Model::<8, 8, { CNN_OPS & !OpKind::FullyConnected.bit() }>::parse(&blob).unwrap_err(),
        Error::OpNotInSet {
            op: 3,
            kind: OpKind::FullyConnected
        }
    );
    // The first op outside the set is the one named.
    assert_eq!(
        Model::<8, 8, { op_set(&[OpKind::Reshape]) }>::parse(&blob).unwrap_err(),
        Error::OpNotInSet {
            op: 0,
            kind: OpKind::Conv2d
        }
    );
    // Max and average pool are separate kinds, though one kernel runs both.
    assert_eq!(
        Model::<8, 8, { (CNN_OPS & !OpKind::MaxPool2d.bit()) | OpKind::AvgPool2d.bit() }>::parse(
            &blob
        )
        .unwrap_err(),
        Error::OpNotInSet {
            op: 1,
            kind: OpKind::MaxPool2d
        }
    );
    let blob = zoo().blob();
    assert_eq!(
        Model::<16, 16, CNN_OPS>::parse(&blob).unwrap_err(),
        Error::OpNotInSet {
            op: 0,
            kind: OpKind::DepthwiseConv2d
        }
    );
    let message = Error::OpNotInSet {
        op: 4,
        kind: OpKind::Softmax,
    }
    .to_string();
    assert!(
        message.contains("op 4") && message.contains("Softmax"),
        "{message}"
    );
}

/// Run `restricted` and the every-op model on the same inputs; outputs must be equal.
fn bit_exact<const O: usize, const T: usize, const OPS: OpSet>(
    restricted: &Model<'_, O, T, OPS>,
    all: &Model<'_>,
    inputs: impl Iterator<Item = Vec<i8>>,
) {
    let mut arena = vec![0u8; all.arena_size()];
    let mut runs = 0;
    for input in inputs {
        let expected = all.run_in_arena(&mut arena, &input).unwrap().to_vec();
        let got = restricted.run_in_arena(&mut arena, &input).unwrap();
        assert_eq!(got, expected.as_slice());
        runs += 1;
    }
    assert!(runs > 0);
}

#[test]
fn a_model_within_the_set_runs_bit_exact_with_every_op() {
    let mut rng = Lcg::new(3);
    let blob = cnn().blob();
    let all = Model::from_bytes(&blob).unwrap();
    let exact = Model::<4, 5, CNN_OPS>::parse(&blob).unwrap();
    let inputs: Vec<Vec<i8>> = (0..50).map(|_| rng.vec_i8(36)).collect();
    bit_exact(&exact, &all, inputs.iter().cloned());
    // A superset loads and runs too.
    let wider = Model::<4, 5, { CNN_OPS | OpKind::Softmax.bit() }>::parse(&blob).unwrap();
    bit_exact(&wider, &all, inputs.into_iter());

    let blob = zoo().blob();
    let all = Model::from_bytes(&blob).unwrap();
    let exact = Model::<16, 16, ZOO_OPS>::parse(&blob).unwrap();
    bit_exact(&exact, &all, (0..50).map(|_| rng.vec_i8(32)));
}

#[test]
fn a_set_without_dense_runs_sparse_weights_and_refuses_dense_ones() {
    const SPARSE_ONLY: OpSet = kind_set(&[
        OpKind::Conv2d,
        OpKind::MaxPool2d,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]) | encoding_set(&[Encoding::SparseRel4]);
    let blob = sparse_cnn(Encoding::SparseRel4).blob();
    let all = Model::from_bytes(&blob).unwrap();
    let sparse = Model::<4, 5, SPARSE_ONLY>::parse(&blob).unwrap();
    let mut rng = Lcg::new(5);
    bit_exact(&sparse, &all, (0..50).map(|_| rng.vec_i8(36)));
    // The dense CNN's conv (op 0) is the first op with weights outside the set.
    assert_eq!(
        Model::<4, 5, SPARSE_ONLY>::parse(&cnn().blob()).unwrap_err(),
        Error::EncodingNotInSet {
            op: 0,
            encoding: Encoding::Dense as u32
        }
    );
}

/// Load `blob` in a `Model` with op set `SET`: where `SET` links `kernel` (the one op
/// `op` runs), it runs bit-exact with `all` on random inputs of `input_len` bytes;
/// elsewhere it is refused, naming the op and the kernel.
fn only<const SET: OpSet>(
    blob: &[u8],
    all: &Model<'_>,
    (op, kernel): (u32, Kernel),
    input_len: usize,
) {
    let mut rng = Lcg::new(9);
    match Model::<16, 16, SET>::parse(blob) {
        Ok(model) => {
            assert!(kernel.is_in(SET), "{kernel:?} in {SET:#x}");
            bit_exact(&model, all, (0..50).map(|_| rng.vec_i8(input_len)));
        }
        Err(e) => {
            assert!(!kernel.is_in(SET), "{kernel:?} in {SET:#x}: {e}");
            let bit = kernel.bit().trailing_zeros();
            assert_eq!(e, Error::KernelNotInSet { op, bit });
            let message = e.to_string();
            let names = format!("op {op}: the kernel it runs, {kernel:?}");
            assert!(message.contains(&names), "{e}");
        }
    }
}

#[test]
fn a_set_naming_fused_sparse_kernels_links_and_loads_only_those() {
    let mut built = sparse_cnn(Encoding::SparseRel4);
    assert_eq!(built.graph.fuse_conv_max_pools(), 1);
    built.graph.plan_arena().unwrap();
    let blob = built.blob();
    let all = Model::from_bytes(&blob).unwrap();
    // The model's exact set names the one kernel its fused op runs.
    let used = all.op_set_used().unwrap();
    let named: Vec<Kernel> = kernels_in(used).collect();
    let [kernel @ Kernel::FusedSparse(_)] = named[..] else {
        panic!("{named:?}")
    };
    assert_eq!(used & !kernel.bit(), used_by(all.ops()));
    // Each kernel alone: the model's loads and runs bit-exact, the others refuse it.
    const KINDS: OpSet = kind_set(&[
        OpKind::Conv2dMaxPool,
        OpKind::Reshape,
        OpKind::FullyConnected,
    ]) | encoding_set(&[Encoding::SparseRel4]);
    only::<{ KINDS | FusedSparseKernel::Windows.bit() }>(&blob, &all, (0, kernel), 36);
    only::<{ KINDS | FusedSparseKernel::Rows.bit() }>(&blob, &all, (0, kernel), 36);
    only::<{ KINDS | FusedSparseKernel::Pixels.bit() }>(&blob, &all, (0, kernel), 36);
    // Naming none links all three, and naming another family's kernel changes nothing.
    only::<KINDS>(&blob, &all, (0, kernel), 36);
    only::<{ KINDS | DenseConvKernel::Rows.bit() }>(&blob, &all, (0, kernel), 36);
    assert!(FusedSparseKernel::ALL.iter().all(|k| k.is_in(KINDS)));
}

#[test]
fn a_set_naming_dense_kernels_loads_only_the_ops_that_run_them() {
    // The CNN's op 0 is a dense 3×3 conv over one channel (the gathered path), its op 3
    // a fully connected op with few weights (the plain loop).
    let blob = cnn().blob();
    let all = Model::from_bytes(&blob).unwrap();
    let used = all.op_set_used().unwrap();
    let conv = Kernel::DenseConv(DenseConvKernel::Gathered);
    let fc = Kernel::DenseFc(DenseFcKernel::Plain);
    assert_eq!(kernels_in(used).collect::<Vec<_>>(), [conv, fc]);
    assert_eq!(used, CNN_OPS | conv.bit() | fc.bit());
    const WITH_FC: OpSet = CNN_OPS | DenseFcKernel::Plain.bit();
    only::<{ WITH_FC | DenseConvKernel::Gathered.bit() }>(&blob, &all, (0, conv), 36);
    only::<{ WITH_FC | DenseConvKernel::Pieces.bit() }>(&blob, &all, (0, conv), 36);
    only::<{ WITH_FC | DenseConvKernel::Rows.bit() }>(&blob, &all, (0, conv), 36);
    const WITH_CONV: OpSet = CNN_OPS | DenseConvKernel::Gathered.bit();
    only::<{ WITH_CONV | DenseFcKernel::Buffered.bit() }>(&blob, &all, (3, fc), 36);
    only::<{ WITH_CONV | DenseFcKernel::Pieces.bit() }>(&blob, &all, (3, fc), 36);
    // Another family's kernel alone leaves these two families whole.
    only::<{ CNN_OPS | DepthwiseKernel::Blocks.bit() }>(&blob, &all, (0, conv), 36);
    // The zoo's op 0 is a dense depthwise conv, its choice the same on every target.
    let blob = zoo().blob();
    let all = Model::from_bytes(&blob).unwrap();
    let used = all.op_set_used().unwrap();
    let named: Vec<Kernel> = kernels_in(used).collect();
    let [kernel @ Kernel::Depthwise(_), ref fcs @ ..] = named[..] else {
        panic!("{named:?}")
    };
    assert!(
        fcs.iter().all(|k| matches!(k, Kernel::DenseFc(_))),
        "{named:?}"
    );
    assert_eq!(used & !KERNEL_CHOICES, ZOO_OPS);
    only::<{ ZOO_OPS | DepthwiseKernel::Lanes.bit() }>(&blob, &all, (0, kernel), 32);
    only::<{ ZOO_OPS | DepthwiseKernel::Blocks.bit() }>(&blob, &all, (0, kernel), 32);
    only::<ZOO_OPS>(&blob, &all, (0, kernel), 32);
    // Every kernel of every family named at once.
    const EVERY: OpSet = ZOO_OPS | kernel_set(&Kernel::ALL);
    only::<EVERY>(&blob, &all, (0, kernel), 32);
}
