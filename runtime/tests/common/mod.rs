//! Small valid models built with the std writer, and their expected outputs computed
//! with the plain-loop reference kernels.
#![allow(dead_code)]

use sprig_runtime::fixed_point::{quantize_multiplier, AddQuant, SoftmaxQuant};
use sprig_runtime::format::write::{encode_requant, seal, BlobBuilder, GraphDef};
use sprig_runtime::format::{FORMAT_MAJOR, FORMAT_MINOR};
use sprig_runtime::kernels::add::AddParams;
use sprig_runtime::kernels::fully_connected::FcShape;
use sprig_runtime::kernels::pooling::{MeanParams, PoolKind};
use sprig_runtime::kernels::softmax::SoftmaxParams;
use sprig_runtime::kernels::{reference, ConvGeometry, OutputStage};
use sprig_runtime::{
    Add, ArgMax, BinaryConv2d, BinaryFullyConnected, Conv2d, DataRef, DepthwiseConv2d, Encoding,
    FullyConnected, GlobalAvgPool, Model, Op, Padding, Pool2d, Reshape, Softmax, Tensor,
    TensorKind, Weights,
};

/// Deterministic pseudo-random numbers (64-bit LCG, high bits).
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1))
    }
    pub fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }
    /// True with probability 1/n.
    pub fn one_in(&mut self, n: u32) -> bool {
        self.next().is_multiple_of(n)
    }
    pub fn i8(&mut self) -> i8 {
        self.next() as u8 as i8
    }
    pub fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u32) as i32
    }
    pub fn vec_i8(&mut self, n: usize) -> Vec<i8> {
        (0..n).map(|_| self.i8()).collect()
    }
}

pub fn tensor(shape: &[u32], scale: f32, zero_point: i32, kind: TensorKind) -> Tensor {
    Tensor {
        shape: heapless::Vec::from_slice(shape).unwrap(),
        scale,
        zero_point,
        arena_offset: 0,
        kind,
    }
}

/// Per-channel requantization for weights with `w_scales` between two activations.
pub fn requant(in_scale: f32, w_scales: &[f32], out_scale: f32) -> Vec<(i32, i32)> {
    w_scales
        .iter()
        .map(|&w| quantize_multiplier(f64::from(in_scale) * f64::from(w) / f64::from(out_scale)))
        .collect()
}

fn bias_bytes(b: &[i32]) -> Vec<u8> {
    b.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A weighted layer's parameters, kept for the reference computation.
#[derive(Clone)]
pub struct Layer {
    pub weights: Vec<i8>,
    pub bias: Vec<i32>,
    pub requant: Vec<(i32, i32)>,
}

impl Layer {
    fn random(rng: &mut Lcg, n_weights: usize, channels: usize, rq: Vec<(i32, i32)>) -> Self {
        Layer {
            weights: rng.vec_i8(n_weights),
            bias: (0..channels).map(|_| rng.range(-300, 300)).collect(),
            requant: rq,
        }
    }

    /// Zero about `1 − 1/keep_one_in` of the weights (pruning).
    fn prune(&mut self, rng: &mut Lcg, keep_one_in: u32) {
        for w in &mut self.weights {
            if !rng.one_in(keep_one_in) {
                *w = 0;
            }
        }
    }

    /// Push into the builder, the weights as `rows` rows in `encoding`: (weights,
    /// bias, requant) references.
    fn push(
        &self,
        b: &mut BlobBuilder,
        rows: usize,
        encoding: Encoding,
    ) -> (Weights, DataRef, DataRef) {
        (
            b.push_weights_as(&self.weights, rows, encoding).unwrap(),
            b.push_i32(&self.bias).unwrap(),
            b.push_requant(&self.requant).unwrap(),
        )
    }
}

impl Layer {
    /// Map every weight into the range the packed `encoding` holds (`±1` for binary).
    fn fit(&mut self, encoding: Encoding) {
        for w in &mut self.weights {
            *w = match encoding {
                Encoding::Packed4 => (*w as i16).rem_euclid(16) as i8 - 8,
                Encoding::Packed2 => (*w as i16).rem_euclid(4) as i8 - 2,
                _ => {
                    if *w < 0 {
                        -1
                    } else {
                        1
                    }
                }
            };
        }
    }
}

/// A model plus its builder and layer parameters.
pub struct Built {
    pub graph: GraphDef,
    pub builder: BlobBuilder,
    pub layers: Vec<Layer>,
}

impl Built {
    pub fn blob(&self) -> Vec<u8> {
        self.builder.finish(&self.graph).unwrap()
    }
}

/// input [1,6,6,1] → conv 3×3 pad 1, 2 channels, fused ReLU → [1,6,6,2] → max pool 2×2
/// → [1,3,3,2] → reshape → [1,18] → fully connected → [1,4].
pub fn cnn() -> Built {
    cnn_encoded(Encoding::Dense)
}

/// [`cnn`] with its conv and max pool fused into one `Conv2dMaxPool` (format 2.2):
/// input [1,6,6,1] → fused conv + pool → [1,3,3,2] (tensor 1) → reshape → [1,18]
/// (tensor 2) → fully connected → [1,4] (tensor 3). Same layers, same outputs
/// ([`cnn_expected`]).
pub fn fused_cnn() -> Built {
    let mut built = cnn();
    assert_eq!(built.graph.fuse_conv_max_pools(), 1);
    built.graph.plan_arena().unwrap();
    built
}

/// [`cnn`] with about two thirds of each layer's weights zero, stored in `encoding`.
pub fn sparse_cnn(encoding: Encoding) -> Built {
    cnn_encoded(encoding)
}

/// [`cnn`] with weights the packed low-bit `encoding` holds, stored in it.
pub fn packed_cnn(encoding: Encoding) -> Built {
    cnn_encoded(encoding)
}

fn cnn_encoded(encoding: Encoding) -> Built {
    let mut rng = Lcg::new(7);
    let (s_in, s_conv, s_fc) = (0.05f32, 0.1f32, 0.2f32);
    let conv = Layer::random(&mut rng, 2 * 9, 2, requant(s_in, &[0.02, 0.03], s_conv));
    let fc = Layer::random(
        &mut rng,
        4 * 18,
        4,
        requant(s_conv, &[0.01, 0.02, 0.015, 0.03], s_fc),
    );
    let mut builder = BlobBuilder::new();
    let (mut conv, mut fc) = (conv, fc);
    match encoding {
        Encoding::Dense => {}
        Encoding::SparseRel8 | Encoding::SparseRel4 => {
            conv.prune(&mut rng, 3);
            fc.prune(&mut rng, 3);
        }
        packed => {
            conv.fit(packed);
            fc.fit(packed);
        }
    }
    let (cw, cb, cr) = conv.push(&mut builder, 2, encoding);
    let (fw, fb, fr) = fc.push(&mut builder, 4, encoding);
    let tensors = vec![
        tensor(&[1, 6, 6, 1], s_in, -3, TensorKind::Input),
        tensor(&[1, 6, 6, 2], s_conv, -20, TensorKind::Activation),
        tensor(&[1, 3, 3, 2], s_conv, -20, TensorKind::Activation),
        tensor(&[1, 18], s_conv, -20, TensorKind::Activation),
        tensor(&[1, 4], s_fc, 5, TensorKind::Output),
    ];
    let ops = vec![
        Op::Conv2d(Conv2d {
            input: 0,
            output: 1,
            filter: cw,
            bias: Some(cb),
            requant: cr,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            padding: Padding {
                top: 1,
                left: 1,
                bottom: 1,
                right: 1,
            },
            act_min: -20, // ReLU: clamp at the output zero point
            act_max: 127,
        }),
        Op::MaxPool2d(Pool2d {
            input: 1,
            output: 2,
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            padding: Padding::default(),
            act_min: -128,
            act_max: 127,
        }),
        Op::Reshape(Reshape {
            input: 2,
            output: 3,
        }),
        Op::FullyConnected(FullyConnected {
            input: 3,
            output: 4,
            weights: fw,
            bias: Some(fb),
            requant: fr,
            act_min: -128,
            act_max: 127,
        }),
    ];
    let mut graph = GraphDef {
        tensors,
        ops,
        input: 0,
        output: 4,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    Built {
        graph,
        builder,
        layers: vec![conv, fc],
    }
}

fn stage<'a>(
    bias: &'a [u8],
    rq: &'a [u8],
    channels: usize,
    zp: i32,
    act: (i32, i32),
) -> OutputStage<'a> {
    OutputStage {
        bias: Some(bias),
        requant: rq,
        channels,
        output_offset: zp,
        act_min: act.0,
        act_max: act.1,
    }
}

/// Expected output of [`cnn`], from the reference kernels.
pub fn cnn_expected(b: &Built, input: &[i8]) -> Vec<i8> {
    let (conv, fc) = (&b.layers[0], &b.layers[1]);
    let g = ConvGeometry {
        batch: 1,
        in_h: 6,
        in_w: 6,
        in_c: 1,
        out_h: 6,
        out_w: 6,
        out_c: 2,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_left: 1,
    };
    let (cb, cr) = (
        bias_bytes(&conv.bias),
        encode_requant(&conv.requant).unwrap(),
    );
    let mut t1 = vec![0i8; 72];
    reference::conv2d(
        &g,
        3,
        &stage(&cb, &cr, 2, -20, (-20, 127)),
        &conv.weights,
        input,
        &mut t1,
    );
    let pg = ConvGeometry {
        in_h: 6,
        in_w: 6,
        in_c: 2,
        out_h: 3,
        out_w: 3,
        out_c: 2,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_top: 0,
        pad_left: 0,
        ..g
    };
    let mut t2 = vec![0i8; 18];
    reference::pool2d(PoolKind::Max, &pg, -128, 127, &t1, &mut t2);
    let (fb, fr) = (bias_bytes(&fc.bias), encode_requant(&fc.requant).unwrap());
    let mut out = vec![0i8; 4];
    let shape = FcShape {
        batch: 1,
        in_features: 18,
        out_features: 4,
    };
    reference::fully_connected(
        &shape,
        20,
        &stage(&fb, &fr, 4, 5, (-128, 127)),
        &fc.weights,
        &t2,
        &mut out,
    );
    out
}

/// The other ops: input [1,4,4,2] → depthwise 3×3 pad 1 (dm 1) → add(input, dw) →
/// avg pool 2×2 → global average pool → reshape [1,2] → fully connected 2→3 →
/// softmax → argmax [1,1].
pub fn zoo() -> Built {
    let mut rng = Lcg::new(11);
    let s = [0.04f32, 0.05, 0.08, 0.08, 0.06, 0.06, 0.1];
    let dw = Layer::random(&mut rng, 9 * 2, 2, requant(s[0], &[0.02, 0.025], s[1]));
    let mut fc = Layer::random(&mut rng, 3 * 2, 3, requant(s[4], &[0.03, 0.02, 0.01], s[6]));
    // Classes "channel 0 dominates", "channel 1 dominates", "both small".
    fc.weights = vec![60, -60, -60, 60, 30, 30];
    fc.bias = vec![0, 0, -2000];
    let mut builder = BlobBuilder::new();
    let (dw_w, dw_b, dw_r) = dw.push(&mut builder, 2, Encoding::Dense);
    let (fw, fb, fr) = fc.push(&mut builder, 3, Encoding::Dense);
    let aq = AddQuant::from_scales(f64::from(s[0]), f64::from(s[1]), f64::from(s[2]));
    let (gm, gs) = quantize_multiplier(f64::from(s[3]) / f64::from(s[4]));
    let sq = SoftmaxQuant::from_scale(1.0, f64::from(s[6])).unwrap();
    let tensors = vec![
        tensor(&[1, 4, 4, 2], s[0], 2, TensorKind::Input),
        tensor(&[1, 4, 4, 2], s[1], -1, TensorKind::Activation),
        tensor(&[1, 4, 4, 2], s[2], 0, TensorKind::Activation),
        tensor(&[1, 2, 2, 2], s[2], 0, TensorKind::Activation),
        tensor(&[1, 1, 1, 2], s[4], 3, TensorKind::Activation),
        tensor(&[1, 2], s[4], 3, TensorKind::Activation),
        tensor(&[1, 3], s[6], -4, TensorKind::Activation),
        tensor(&[1, 3], 1.0 / 256.0, -128, TensorKind::Activation),
        tensor(&[1, 1], 1.0, 0, TensorKind::Output),
    ];
    let pad1 = Padding {
        top: 1,
        left: 1,
        bottom: 1,
        right: 1,
    };
    let ops = vec![
        Op::DepthwiseConv2d(DepthwiseConv2d {
            input: 0,
            output: 1,
            filter: dw_w,
            bias: Some(dw_b),
            requant: dw_r,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            padding: pad1,
            depth_multiplier: 1,
            act_min: -128,
            act_max: 127,
        }),
        Op::Add(Add {
            input1: 0,
            input2: 1,
            output: 2,
            input1_multiplier: aq.input1_multiplier,
            input1_shift: aq.input1_shift,
            input2_multiplier: aq.input2_multiplier,
            input2_shift: aq.input2_shift,
            output_multiplier: aq.output_multiplier,
            output_shift: aq.output_shift,
            act_min: 0, // fused ReLU
            act_max: 127,
        }),
        Op::AvgPool2d(Pool2d {
            input: 2,
            output: 3,
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            padding: Padding::default(),
            act_min: -128,
            act_max: 127,
        }),
        Op::GlobalAvgPool(GlobalAvgPool {
            input: 3,
            output: 4,
            multiplier: gm,
            shift: gs,
            act_min: -128,
            act_max: 127,
        }),
        Op::Reshape(Reshape {
            input: 4,
            output: 5,
        }),
        Op::FullyConnected(FullyConnected {
            input: 5,
            output: 6,
            weights: fw,
            bias: Some(fb),
            requant: fr,
            act_min: -128,
            act_max: 127,
        }),
        Op::Softmax(Softmax {
            input: 6,
            output: 7,
            input_multiplier: sq.input_multiplier,
            input_left_shift: sq.input_left_shift,
            diff_min: sq.diff_min,
        }),
        Op::ArgMax(ArgMax {
            input: 7,
            output: 8,
        }),
    ];
    let mut graph = GraphDef {
        tensors,
        ops,
        input: 0,
        output: 8,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    Built {
        graph,
        builder,
        layers: vec![dw, fc],
    }
}

/// Expected outputs of [`zoo`]: (softmax probabilities, argmax).
pub fn zoo_expected(b: &Built, input: &[i8]) -> (Vec<i8>, i8) {
    let (dw, fc) = (&b.layers[0], &b.layers[1]);
    let ops = &b.graph.ops;
    let g = ConvGeometry {
        batch: 1,
        in_h: 4,
        in_w: 4,
        in_c: 2,
        out_h: 4,
        out_w: 4,
        out_c: 2,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_left: 1,
    };
    let (db, dr) = (bias_bytes(&dw.bias), encode_requant(&dw.requant).unwrap());
    let mut t1 = vec![0i8; 32];
    reference::depthwise_conv2d(
        &g,
        1,
        -2,
        &stage(&db, &dr, 2, -1, (-128, 127)),
        &dw.weights,
        input,
        &mut t1,
    );
    let Op::Add(a) = ops[1] else { unreachable!() };
    let ap = AddParams {
        input1_offset: -2,
        input2_offset: 1,
        output_offset: 0,
        input1_multiplier: a.input1_multiplier,
        input1_shift: a.input1_shift,
        input2_multiplier: a.input2_multiplier,
        input2_shift: a.input2_shift,
        output_multiplier: a.output_multiplier,
        output_shift: a.output_shift,
        act_min: 0,
        act_max: 127,
    };
    let mut t2 = vec![0i8; 32];
    reference::add(&ap, input, &t1, &mut t2);
    let pg = ConvGeometry {
        out_h: 2,
        out_w: 2,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_top: 0,
        pad_left: 0,
        ..g
    };
    let mut t3 = vec![0i8; 8];
    reference::pool2d(PoolKind::Average, &pg, -128, 127, &t2, &mut t3);
    let Op::GlobalAvgPool(gp) = ops[3] else {
        unreachable!()
    };
    let mp = MeanParams {
        input_offset: 0,
        multiplier: gp.multiplier,
        shift: gp.shift,
        output_offset: 3,
        act_min: -128,
        act_max: 127,
    };
    let mut t4 = vec![0i8; 2];
    reference::global_avg_pool([1, 2, 2, 2], &mp, &t3, &mut t4);
    let (fb, fr) = (bias_bytes(&fc.bias), encode_requant(&fc.requant).unwrap());
    let mut t6 = vec![0i8; 3];
    let shape = FcShape {
        batch: 1,
        in_features: 2,
        out_features: 3,
    };
    reference::fully_connected(
        &shape,
        -3,
        &stage(&fb, &fr, 3, -4, (-128, 127)),
        &fc.weights,
        &t4,
        &mut t6,
    );
    let Op::Softmax(sm) = ops[6] else {
        unreachable!()
    };
    let sp = SoftmaxParams {
        input_multiplier: sm.input_multiplier,
        input_left_shift: sm.input_left_shift,
        diff_min: sm.diff_min,
    };
    let mut t7 = vec![0i8; 3];
    reference::softmax(3, &sp, &t6, &mut t7);
    let mut t8 = [0i8; 1];
    reference::argmax(3, &t7, &mut t8);
    (t7, t8[0])
}

/// A binarized network: input [1,6,6,1] (int8, binarized at its zero point) → binary
/// conv 3×3 pad 1, 2 channels → [1,6,6,2] (±1) → max pool 2×2 → [1,3,3,2] → reshape
/// [1,18] → binary fully connected → [1,4] (±1).
pub struct BinaryBuilt {
    pub built: Built,
    pub conv_thresholds: Vec<i32>,
    pub fc_thresholds: Vec<i32>,
}

pub fn binary_cnn() -> BinaryBuilt {
    let mut rng = Lcg::new(13);
    let mut conv = Layer::random(&mut rng, 2 * 9, 2, Vec::new());
    let mut fc = Layer::random(&mut rng, 4 * 18, 4, Vec::new());
    conv.fit(Encoding::Packed1);
    fc.fit(Encoding::Packed1);
    let (conv_thresholds, fc_thresholds) = (vec![-1, 2], vec![0, -3, 4, 1]);
    let mut builder = BlobBuilder::new();
    let cw = builder
        .push_weights_as(&conv.weights, 2, Encoding::Packed1)
        .unwrap();
    let ct = builder.push_i32(&conv_thresholds).unwrap();
    let fw = builder
        .push_weights_as(&fc.weights, 4, Encoding::Packed1)
        .unwrap();
    let ft = builder.push_i32(&fc_thresholds).unwrap();
    let tensors = vec![
        tensor(&[1, 6, 6, 1], 0.05, -3, TensorKind::Input),
        tensor(&[1, 6, 6, 2], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 3, 3, 2], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 18], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 4], 1.0, 0, TensorKind::Output),
    ];
    let ops = vec![
        Op::BinaryConv2d(BinaryConv2d {
            input: 0,
            output: 1,
            filter: cw,
            thresholds: ct,
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 1,
            padding: Padding {
                top: 1,
                left: 1,
                bottom: 1,
                right: 1,
            },
        }),
        Op::MaxPool2d(Pool2d {
            input: 1,
            output: 2,
            filter_h: 2,
            filter_w: 2,
            stride_h: 2,
            stride_w: 2,
            padding: Padding::default(),
            act_min: -128,
            act_max: 127,
        }),
        Op::Reshape(Reshape {
            input: 2,
            output: 3,
        }),
        Op::BinaryFullyConnected(BinaryFullyConnected {
            input: 3,
            output: 4,
            weights: fw,
            thresholds: ft,
        }),
    ];
    let mut graph = GraphDef {
        tensors,
        ops,
        input: 0,
        output: 4,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    BinaryBuilt {
        built: Built {
            graph,
            builder,
            layers: vec![conv, fc],
        },
        conv_thresholds,
        fc_thresholds,
    }
}

/// Expected output of [`binary_cnn`], from the reference kernels.
pub fn binary_cnn_expected(b: &BinaryBuilt, input: &[i8]) -> Vec<i8> {
    let g = ConvGeometry {
        batch: 1,
        in_h: 6,
        in_w: 6,
        in_c: 1,
        out_h: 6,
        out_w: 6,
        out_c: 2,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_left: 1,
    };
    let mut t1 = vec![0i8; 72];
    let conv = &b.built.layers[0].weights;
    reference::binary_conv2d(&g, -3, &b.conv_thresholds, conv, input, &mut t1);
    let pg = ConvGeometry {
        out_h: 3,
        out_w: 3,
        in_c: 2,
        kernel_h: 2,
        kernel_w: 2,
        stride_h: 2,
        stride_w: 2,
        pad_top: 0,
        pad_left: 0,
        ..g
    };
    let mut t2 = vec![0i8; 18];
    reference::pool2d(PoolKind::Max, &pg, -128, 127, &t1, &mut t2);
    let shape = FcShape {
        batch: 1,
        in_features: 18,
        out_features: 4,
    };
    let mut out = vec![0i8; 4];
    let fc = &b.built.layers[1].weights;
    reference::binary_fully_connected(&shape, 0, &b.fc_thresholds, fc, &t2, &mut out);
    out
}

/// Binary ops feeding binary ops: input [1,6,6,1] (int8) → binary conv 3×3 stride 2 pad
/// 1, 2 channels → [1,3,3,2] → reshape [1,18] → binary fully connected → [1,8] →
/// binary fully connected → [1,4] (±1 int8). With `bits`, the three tensors between
/// binary ops are stored as packed bits (`GraphDef::pack_sign_activations`).
pub struct BinaryChain {
    pub built: Built,
    /// Per layer (conv, fc1, fc2): its thresholds.
    pub thresholds: [Vec<i32>; 3],
}

pub fn binary_chain(bits: bool) -> BinaryChain {
    let mut rng = Lcg::new(17);
    let shapes = [(2usize, 9usize), (8, 18), (4, 8)];
    let mut layers: Vec<Layer> = shapes
        .iter()
        .map(|&(rows, row_len)| Layer::random(&mut rng, rows * row_len, rows, Vec::new()))
        .collect();
    let thresholds = [
        vec![-1, 2],
        vec![1, -2, 0, 3, -4, 2, 0, -1],
        vec![0, 2, -1, 1],
    ];
    let mut builder = BlobBuilder::new();
    let mut refs = Vec::new();
    for (layer, &(rows, _)) in layers.iter_mut().zip(&shapes) {
        layer.fit(Encoding::Packed1);
        let w = builder
            .push_weights_as(&layer.weights, rows, Encoding::Packed1)
            .unwrap();
        refs.push(w);
    }
    let t: Vec<DataRef> = thresholds
        .iter()
        .map(|t| builder.push_i32(t).unwrap())
        .collect();
    let tensors = vec![
        tensor(&[1, 6, 6, 1], 0.05, -3, TensorKind::Input),
        tensor(&[1, 3, 3, 2], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 18], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 8], 1.0, 0, TensorKind::Activation),
        tensor(&[1, 4], 1.0, 0, TensorKind::Output),
    ];
    let fc = |input, output, k: usize| {
        Op::BinaryFullyConnected(BinaryFullyConnected {
            input,
            output,
            weights: refs[k],
            thresholds: t[k],
        })
    };
    let ops = vec![
        Op::BinaryConv2d(BinaryConv2d {
            input: 0,
            output: 1,
            filter: refs[0],
            thresholds: t[0],
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 2,
            stride_w: 2,
            padding: Padding {
                top: 1,
                left: 1,
                bottom: 0,
                right: 0,
            },
        }),
        Op::Reshape(Reshape {
            input: 1,
            output: 2,
        }),
        fc(2, 3, 1),
        fc(3, 4, 2),
    ];
    let mut graph = GraphDef {
        tensors,
        ops,
        input: 0,
        output: 4,
        arena_size: 0,
    };
    if bits {
        assert_eq!(graph.pack_sign_activations(), 3);
    }
    graph.plan_arena().unwrap();
    BinaryChain {
        built: Built {
            graph,
            builder,
            layers,
        },
        thresholds,
    }
}

/// [`binary_chain`]'s output by the reference kernels (on int8 `±1` throughout).
pub fn binary_chain_expected(b: &BinaryChain, input: &[i8]) -> Vec<i8> {
    let g = ConvGeometry {
        batch: 1,
        in_h: 6,
        in_w: 6,
        in_c: 1,
        out_h: 3,
        out_w: 3,
        out_c: 2,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 2,
        stride_w: 2,
        pad_top: 1,
        pad_left: 1,
    };
    let [t_conv, t_fc1, t_fc2] = &b.thresholds;
    let layers = &b.built.layers;
    let mut x = vec![0i8; 18];
    reference::binary_conv2d(&g, -3, t_conv, &layers[0].weights, input, &mut x);
    for (k, t, n) in [(1, t_fc1, 8), (2, t_fc2, 4)] {
        let shape = FcShape {
            batch: 1,
            in_features: x.len(),
            out_features: n,
        };
        let mut y = vec![0i8; n];
        reference::binary_fully_connected(&shape, 0, t, &layers[k].weights, &x, &mut y);
        x = y;
    }
    x
}

/// Every bit flip of `blob` past its header, re-sealed so that the CRC does not catch
/// it, is refused at load or loads and runs on `input` (when the input and output
/// sizes still fit): no blob the checks accept fails or panics in `run`. Returns how
/// many flipped blobs loaded.
pub fn bit_flips_refused_or_run(blob: &[u8], input: &[i8]) -> usize {
    let output_len = Model::from_bytes(blob).unwrap().output_len();
    let mut output = vec![0i8; output_len];
    let mut loaded = 0;
    for byte in 20..blob.len() {
        for bit in 0..8 {
            let mut flipped = blob.to_vec();
            flipped[byte] ^= 1 << bit;
            seal(&mut flipped, FORMAT_MAJOR, FORMAT_MINOR, 0).unwrap();
            if let Ok(model) = Model::from_bytes(&flipped) {
                loaded += 1;
                let mut arena = vec![0u8; model.arena_size()];
                if model.input_len() == input.len() && model.output_len() == output_len {
                    model.run(&mut arena, input, &mut output).unwrap();
                }
            }
        }
    }
    loaded
}
