//! Streamed tensors (format 2.5, `TensorKind::Streamed { rows }`): a conv's output
//! that only the next conv reads, stored as a band of rows and computed row by row in
//! the step of the op that ends the chain.
//!
//! Checked here: random chains of convs and depthwise convs (kernels 1, 2, 3, 5,
//! strides 1 and 2, any padding, bands of the reader's window height or taller, up to
//! [`STREAM_CHAIN_CAP`] bands in a chain, several chains in a graph) compute
//! bit-exactly what the same graph with every tensor stored computes, and what the
//! reference kernels compute; `GraphDef::stream_rows` streams where that lowers the
//! planned arena (exact sizes on a MobileNet-like block) and leaves a graph alone where
//! it would not; crafted blobs are refused with the exact error (`BadStream` for a
//! band with two readers, a reader that is neither a conv nor an Add (a max pool, a
//! reshape), a producer that is not a conv, a reader that is not the next op, a band
//! shorter than the reader's window, a band of 0 or more than `H` rows, a
//! tensor that is not `[1, H, W, C]`, a chain of five; `ArenaOverlap` for a band on
//! bytes that another tensor of the chain's step holds, the stored graph's plan
//! included); the writer writes minor 5 and a streamed model round-trips.

mod common;

use std::collections::BTreeSet;

use common::{bit_flips_refused_or_run, requant, tensor, Lcg};
use sprig_runtime::format::write::{encode_requant, BlobBuilder, GraphDef};
use sprig_runtime::format::FORMAT_MINOR;
use sprig_runtime::kernels::{reference, ConvGeometry, OutputStage};
use sprig_runtime::{
    Conv2d, DepthwiseConv2d, Encoding, Error, Model, Op, Padding, Pool2d, Reshape, TensorKind,
    STREAM_CHAIN_CAP,
};

/// One conv or depthwise conv of a generated chain.
#[derive(Debug, Clone, Copy)]
struct Layer {
    /// `Some(depth multiplier)` for a depthwise conv, `None` for a conv.
    depthwise: Option<u32>,
    /// Output channels of a conv (a depthwise conv has `C · depth multiplier`).
    out_c: u32,
    /// `(kernel_h, kernel_w)`.
    kernel: (u32, u32),
    /// `(stride_h, stride_w)`.
    stride: (u32, u32),
    padding: Padding,
    /// Fused ReLU (clamp at the output zero point).
    relu: bool,
}

fn pad(top: u32, left: u32, bottom: u32, right: u32) -> Padding {
    Padding {
        top,
        left,
        bottom,
        right,
    }
}

/// A conv `k × k`, stride `s`, padding `p`, to `out_c` channels.
fn conv(k: u32, s: u32, p: Padding, out_c: u32) -> Layer {
    Layer {
        depthwise: None,
        out_c,
        kernel: (k, k),
        stride: (s, s),
        padding: p,
        relu: false,
    }
}

/// A depthwise conv `k × k`, stride `s`, padding `p`, depth multiplier `dm`.
fn depthwise(k: u32, s: u32, p: Padding, dm: u32) -> Layer {
    Layer {
        depthwise: Some(dm),
        out_c: 0,
        kernel: (k, k),
        stride: (s, s),
        padding: p,
        relu: false,
    }
}

impl Layer {
    /// Output `[H, W, C]` for an input `[H, W, C]`.
    fn out_dims(&self, [h, w, c]: [u32; 3]) -> [u32; 3] {
        let p = &self.padding;
        let oh = (h + p.top + p.bottom - self.kernel.0) / self.stride.0 + 1;
        let ow = (w + p.left + p.right - self.kernel.1) / self.stride.1 + 1;
        let oc = match self.depthwise {
            Some(dm) => c * dm,
            None => self.out_c,
        };
        [oh, ow, oc]
    }

    fn geometry(&self, [h, w, c]: [u32; 3]) -> ConvGeometry {
        let [oh, ow, oc] = self.out_dims([h, w, c]);
        ConvGeometry {
            batch: 1,
            in_h: h as usize,
            in_w: w as usize,
            in_c: c as usize,
            out_h: oh as usize,
            out_w: ow as usize,
            out_c: oc as usize,
            kernel_h: self.kernel.0 as usize,
            kernel_w: self.kernel.1 as usize,
            stride_h: self.stride.0 as usize,
            stride_w: self.stride.1 as usize,
            pad_top: self.padding.top as usize,
            pad_left: self.padding.left as usize,
        }
    }
}

/// A layer's weights, biases and requantization pairs.
type Params = (Vec<i8>, Vec<i32>, Vec<(i32, i32)>);

/// A chain's stored graph (every intermediate an `Activation`, arena planned), its
/// data section, and each layer's parameters for the reference computation.
#[derive(Clone)]
struct Chain {
    graph: GraphDef,
    builder: BlobBuilder,
    input: [u32; 3],
    layers: Vec<Layer>,
    params: Vec<Params>,
}

/// Build a chain `input [1, H, W, C] → layers[0] → … → output`, random weights,
/// biases in ±300, per-channel requantization with scales that keep the outputs
/// spread over the int8 range, random zero points.
fn build(rng: &mut Lcg, input: [u32; 3], layers: &[Layer]) -> Chain {
    build_encoded(rng, input, layers, &[])
}

/// [`build`], layer `i`'s filter stored in `encodings[i]` (dense past the list's end):
/// a sparse filter keeps every third weight, a packed 4-bit one has its weights mapped
/// into `−8..=7` (the output scale follows the smaller sums).
fn build_encoded(
    rng: &mut Lcg,
    input: [u32; 3],
    layers: &[Layer],
    encodings: &[Encoding],
) -> Chain {
    let mut builder = BlobBuilder::new();
    let mut scale = 0.02 + (rng.next() % 80) as f32 / 1000.0;
    let mut dims = input;
    let [h, w, c] = input;
    let mut tensors = vec![tensor(
        &[1, h, w, c],
        scale,
        rng.range(-50, 50),
        TensorKind::Input,
    )];
    let mut ops = Vec::new();
    let mut params = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let [oh, ow, oc] = layer.out_dims(dims);
        let (kh, kw) = layer.kernel;
        let taps = kh * kw;
        // Products summed per output (a conv's whole window, a depthwise conv's taps),
        // and the filter's length per channel: `[OC, kh, kw, C]`, `[kh, kw, OC]`.
        let per_channel = match layer.depthwise {
            Some(_) => taps,
            None => taps * dims[2],
        };
        // Inputs off their zero point by about 60, weights about 74 (uniform int8):
        // the sum spreads about 74 · 60 · √per_channel; aim the outputs at ±50.
        let w_base = 0.01f32;
        let encoding = encodings.get(i).copied().unwrap_or(Encoding::Dense);
        let spread = match encoding {
            Encoding::SparseRel8 => 3f32.sqrt().recip(),
            Encoding::Packed4 => 4.0 / 74.0,
            _ => 1.0,
        };
        let out_scale = scale * w_base * 74.0 * spread * 60.0 * (per_channel as f32).sqrt() / 50.0;
        let w_scales: Vec<f32> = (0..oc)
            .map(|_| w_base * (0.5 + (rng.next() % 100) as f32 / 100.0))
            .collect();
        let rq = requant(scale, &w_scales, out_scale);
        let mut weights = rng.vec_i8((per_channel * oc) as usize);
        for (k, w) in weights.iter_mut().enumerate() {
            *w = match encoding {
                Encoding::SparseRel8 if k % 3 != 0 => 0,
                Encoding::Packed4 => (i16::from(*w)).rem_euclid(16) as i8 - 8,
                _ => *w,
            };
        }
        let bias: Vec<i32> = (0..oc).map(|_| rng.range(-300, 300)).collect();
        let zp = rng.range(-40, 40);
        let rows = match layer.depthwise {
            Some(_) => taps as usize,
            None => oc as usize,
        };
        let filter = builder.push_weights_as(&weights, rows, encoding).unwrap();
        let bias_ref = builder.push_i32(&bias).unwrap();
        let requant_ref = builder.push_requant(&rq).unwrap();
        let kind = match i + 1 == layers.len() {
            true => TensorKind::Output,
            false => TensorKind::Activation,
        };
        let output = (i + 1) as u32;
        tensors.push(tensor(&[1, oh, ow, oc], out_scale, zp, kind));
        let act_min = if layer.relu { zp } else { -128 };
        ops.push(match layer.depthwise {
            Some(dm) => Op::DepthwiseConv2d(DepthwiseConv2d {
                input: i as u32,
                output,
                filter,
                bias: Some(bias_ref),
                requant: requant_ref,
                kernel_h: kh,
                kernel_w: kw,
                stride_h: layer.stride.0,
                stride_w: layer.stride.1,
                padding: layer.padding,
                depth_multiplier: dm,
                act_min,
                act_max: 127,
            }),
            None => Op::Conv2d(Conv2d {
                input: i as u32,
                output,
                filter,
                bias: Some(bias_ref),
                requant: requant_ref,
                kernel_h: kh,
                kernel_w: kw,
                stride_h: layer.stride.0,
                stride_w: layer.stride.1,
                padding: layer.padding,
                act_min,
                act_max: 127,
            }),
        });
        params.push((weights, bias, rq));
        scale = out_scale;
        dims = [oh, ow, oc];
    }
    let mut graph = GraphDef {
        tensors,
        ops,
        input: 0,
        output: layers.len() as u32,
        arena_size: 0,
    };
    graph.plan_arena().unwrap();
    Chain {
        graph,
        builder,
        input,
        layers: layers.to_vec(),
        params,
    }
}

impl Chain {
    fn blob(&self) -> Vec<u8> {
        self.builder.finish(&self.graph).unwrap()
    }

    /// The same chain with tensors `(index, rows)` streamed, arena planned again.
    fn streamed(&self, bands: &[(usize, u8)]) -> Chain {
        let mut chain = self.clone();
        for &(t, rows) in bands {
            chain.graph.tensors[t].kind = TensorKind::Streamed { rows };
        }
        chain.graph.plan_arena().unwrap();
        chain
    }

    fn input_len(&self) -> usize {
        self.input.iter().product::<u32>() as usize
    }

    /// The output by the plain-loop reference kernels, layer by layer.
    fn expected(&self, input: &[i8]) -> Vec<i8> {
        let mut x = input.to_vec();
        let mut dims = self.input;
        for (i, (layer, (weights, bias, rq))) in self.layers.iter().zip(&self.params).enumerate() {
            let g = layer.geometry(dims);
            let (t_in, t_out) = (&self.graph.tensors[i], &self.graph.tensors[i + 1]);
            let bias: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let rq = encode_requant(rq).unwrap();
            let stage = OutputStage {
                bias: Some(&bias),
                requant: &rq,
                channels: g.out_c,
                output_offset: t_out.zero_point,
                act_min: if layer.relu { t_out.zero_point } else { -128 },
                act_max: 127,
            };
            let mut y = vec![0i8; g.out_h * g.out_w * g.out_c];
            let offset = -t_in.zero_point;
            match layer.depthwise {
                Some(dm) => reference::depthwise_conv2d(
                    &g,
                    dm as usize,
                    offset,
                    &stage,
                    weights,
                    &x,
                    &mut y,
                ),
                None => reference::conv2d(&g, offset, &stage, weights, &x, &mut y),
            }
            x = y;
            dims = layer.out_dims(dims);
        }
        x
    }
}

/// Run `blob` on each input, every time in an arena full of garbage (a band must not
/// depend on what its bytes held before), and return the outputs.
fn run_all(blob: &[u8], inputs: &[Vec<i8>], rng: &mut Lcg) -> Vec<Vec<i8>> {
    let model = Model::from_bytes(blob).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    inputs
        .iter()
        .map(|input| {
            arena.iter_mut().for_each(|b| *b = rng.next() as u8);
            let mut out = vec![0i8; model.output_len()];
            model.run(&mut arena, input, &mut out).unwrap();
            out
        })
        .collect()
}

const KERNELS: [u32; 4] = [1, 2, 3, 5];

/// A kernel size from [`KERNELS`] no larger than `max`.
fn pick_kernel(rng: &mut Lcg, max: u32) -> u32 {
    loop {
        let k = KERNELS[rng.next() as usize % KERNELS.len()];
        if k <= max {
            return k;
        }
    }
}

/// Padding `(before, after)` on one axis of `size` for kernel `k` and stride `s`:
/// none, TensorFlow's SAME, or random (each side smaller than the kernel).
fn pick_pad(rng: &mut Lcg, size: u32, k: u32, s: u32) -> (u32, u32) {
    match rng.next() % 3 {
        0 => (0, 0),
        1 => {
            let total = ((size.div_ceil(s) - 1) * s + k).saturating_sub(size);
            (total / 2, total - total / 2)
        }
        _ => (rng.next() % k, rng.next() % k),
    }
}

fn random_layer(rng: &mut Lcg, [h, w, c]: [u32; 3]) -> Layer {
    let kernel = (pick_kernel(rng, h), pick_kernel(rng, w));
    let stride = (1 + rng.next() % 2, 1 + rng.next() % 2);
    let (top, bottom) = pick_pad(rng, h, kernel.0, stride.0);
    let (left, right) = pick_pad(rng, w, kernel.1, stride.1);
    let depthwise = match rng.one_in(2) {
        true if c <= 8 && rng.one_in(4) => Some(2),
        true => Some(1),
        false => None,
    };
    Layer {
        depthwise,
        out_c: 1 + rng.next() % 8,
        kernel,
        stride,
        padding: pad(top, left, bottom, right),
        relu: rng.one_in(3),
    }
}

/// The longest run of consecutive streamed tensors among `1..n` (a chain's bands).
fn longest_chain(bands: &[(usize, u8)], n: usize) -> usize {
    let (mut run, mut best) = (0, 0);
    for t in 1..n {
        run = if bands.iter().any(|b| b.0 == t) {
            run + 1
        } else {
            0
        };
        best = best.max(run);
    }
    best
}

/// Random conv chains: the graph with its intermediates streamed (bands of the
/// reader's window height or, a third of the time, taller; a third of the graphs
/// stream a random subset, often several chains per graph) and the graph `stream_rows`
/// rewrites compute exactly what the stored graph and the reference kernels compute.
#[test]
fn random_chains_are_bit_exact_with_stored_ones() {
    const CASES: usize = 1000;
    const INPUTS: usize = 4;
    let mut rng = Lcg::new(0x5_7EA4);
    let mut varied = 0;
    let mut values = BTreeSet::new();
    // Coverage of the shapes that matter to the row loop.
    let (mut full_chains, mut tall_bands, mut strided_readers, mut strided_writers) = (0, 0, 0, 0);
    let (mut multipliers, mut padded_readers, mut rewritten, mut several_chains) = (0, 0, 0, 0);
    for case in 0..CASES {
        let input = [
            rng.range(3, 12) as u32,
            rng.range(3, 12) as u32,
            rng.range(1, 8) as u32,
        ];
        // Two to four ops, and a quarter of the time five (four bands: the cap).
        let n_ops = if rng.one_in(4) {
            5
        } else {
            rng.range(2, 4) as usize
        };
        let mut dims = input;
        let mut layers = Vec::new();
        for _ in 0..n_ops {
            let layer = random_layer(&mut rng, dims);
            dims = layer.out_dims(dims);
            layers.push(layer);
        }
        let stored = build(&mut rng, input, &layers);
        let subset = rng.one_in(3);
        let mut bands = Vec::new();
        for t in 1..n_ops {
            if subset && rng.one_in(2) {
                continue;
            }
            let reader = &layers[t];
            let (k, h) = (reader.kernel.0, stored.graph.tensors[t].shape[1]);
            let rows = match rng.one_in(3) {
                true => rng.range(k as i32, h as i32) as u32,
                false => k,
            };
            tall_bands += usize::from(rows > k);
            strided_readers += usize::from(reader.stride.0 == 2);
            strided_writers += usize::from(layers[t - 1].stride.0 == 2);
            multipliers += usize::from(reader.depthwise == Some(2));
            padded_readers += usize::from(reader.padding.top > 0 && reader.padding.bottom > 0);
            bands.push((t, rows as u8));
        }
        let longest = longest_chain(&bands, n_ops);
        assert!(longest <= STREAM_CHAIN_CAP);
        full_chains += usize::from(longest == STREAM_CHAIN_CAP);
        let chains = bands
            .iter()
            .filter(|(t, _)| !bands.iter().any(|(s, _)| s + 1 == *t))
            .count();
        several_chains += usize::from(chains > 1);
        let streamed = stored.streamed(&bands);
        let mut rewrite = stored.clone();
        let n = rewrite.graph.stream_rows();
        let rewrite_arena = rewrite.graph.plan_arena().unwrap();
        let what = format!("case {case}: input {input:?}, bands {bands:?}, layers {layers:#?}");
        // `stream_rows` streams only where the arena shrinks; the hand-streamed graph's
        // arena may be larger (its chain keeps its input live to the chain's end).
        match n {
            0 => assert_eq!(rewrite.graph, stored.graph, "{what}"),
            _ => assert!(rewrite_arena < stored.graph.arena_size, "{what}"),
        }
        rewritten += usize::from(n > 0);
        let inputs: Vec<Vec<i8>> = (0..INPUTS)
            .map(|_| rng.vec_i8(stored.input_len()))
            .collect();
        let expected: Vec<Vec<i8>> = inputs.iter().map(|x| stored.expected(x)).collect();
        let from_stored = run_all(&stored.blob(), &inputs, &mut rng);
        assert_eq!(from_stored, expected, "stored, {what}");
        let from_streamed = run_all(&streamed.blob(), &inputs, &mut rng);
        assert_eq!(from_streamed, expected, "streamed, {what}");
        let from_rewrite = run_all(&rewrite.blob(), &inputs, &mut rng);
        assert_eq!(from_rewrite, expected, "stream_rows ({n}), {what}");
        varied += usize::from(expected.iter().any(|o| o != &expected[0]));
        values.extend(expected.iter().flatten().copied());
    }
    // Not degenerate: almost every chain's output depends on its input, over most of
    // the int8 range.
    assert!(varied >= CASES * 9 / 10, "{varied} of {CASES} vary");
    assert!(values.len() > 200, "{} distinct values", values.len());
    let seen = [
        full_chains,
        tall_bands,
        strided_readers,
        strided_writers,
        multipliers,
        padded_readers,
        rewritten,
        several_chains,
    ];
    assert!(seen.iter().all(|&n| n >= 5), "coverage {seen:?}");
}

/// Input `[1, 16, 16, 4]` → 1×1 conv to 16 channels → 3×3 depthwise, stride 2, padding
/// 0 above and left, 1 below and right → `[1, 8, 8, 16]` (a MobileNet block).
fn mobilenet_block() -> Chain {
    let layers = [
        conv(1, 1, Padding::default(), 16),
        depthwise(3, 2, pad(0, 0, 1, 1), 1),
    ];
    build(&mut Lcg::new(21), [16, 16, 4], &layers)
}

#[test]
fn stream_rows_lowers_the_arena_of_a_mobilenet_block() {
    let stored = mobilenet_block();
    // Stored: tensor 0 (1,024 B, steps 0–1), 1 (16·16·16 = 4,096 B, steps 1–2), 2
    // (8·8·16 = 1,024 B, steps 2–3). Largest first: 1 at 0; 0 meets it at step 1 →
    // 4,096; 2 meets 1 at step 2, not 0 → 4,096 too. 4,096 + 1,024 = 5,120.
    assert_eq!(stored.graph.arena_size, 5120);
    let mut streamed = stored.clone();
    assert_eq!(streamed.graph.stream_rows(), 1);
    assert_eq!(
        streamed.graph.tensors[1].kind,
        TensorKind::Streamed { rows: 3 }
    );
    // Streamed: tensor 1 is a band of 3 rows, 3·16·16 = 768 B; the conv runs in the
    // depthwise conv's step 2, so 0 (steps 0–2), 1 (step 2) and 2 (steps 2–3) are all
    // live together: 1,024 + 1,024 + 768 = 2,816.
    assert_eq!(streamed.graph.arena_size, 2816);
    let offsets: Vec<u32> = streamed
        .graph
        .tensors
        .iter()
        .map(|t| t.arena_offset)
        .collect();
    assert_eq!(offsets, [0, 2048, 1024]);
    let (sb, tb) = (stored.blob(), streamed.blob());
    let streamed_model = Model::from_bytes(&tb).unwrap();
    assert_eq!(streamed_model.arena_size(), 2816);
    let mut rng = Lcg::new(4);
    let inputs: Vec<Vec<i8>> = (0..20).map(|_| rng.vec_i8(1024)).collect();
    let expected = run_all(&sb, &inputs, &mut rng);
    assert_eq!(run_all(&tb, &inputs, &mut rng), expected);
    for (input, want) in inputs.iter().zip(&expected) {
        assert_eq!(&stored.expected(input), want);
    }
    let distinct: BTreeSet<i8> = expected.iter().flatten().copied().collect();
    assert!(distinct.len() > 100, "degenerate outputs");
    // The ops one at a time: the conv writing the band does nothing by itself, the
    // depthwise conv runs both, row by row.
    let mut arena = vec![0xA5u8; streamed_model.arena_size()];
    streamed_model.load_input(&mut arena, &inputs[0]).unwrap();
    let output = 1024..2048;
    streamed_model.run_op(0, &mut arena).unwrap();
    assert!(arena[output.clone()].iter().all(|&b| b == 0xA5));
    streamed_model.run_op(1, &mut arena).unwrap();
    let got: Vec<i8> = arena[output].iter().map(|&b| b as i8).collect();
    assert_eq!(got, expected[0]);
}

#[test]
fn stream_rows_leaves_a_graph_alone_where_the_arena_would_not_shrink() {
    // [1, 8, 8, 8] → 1×1 conv to 1 channel → [1, 8, 8, 1] → 3×3 conv, pad 1 →
    // [1, 8, 8, 8]. Stored: 0 (512 B, steps 0–1) and 2 (512 B, steps 2–3) share
    // offset 0, 1 (64 B, steps 1–2) follows: 576. Streamed, 1 would shrink to a band
    // of 3·8·1 = 24 B but 0 would live to step 2 beside 2: 512 + 512 + 24 = 1,048.
    let layers = [
        conv(1, 1, Padding::default(), 1),
        conv(3, 1, pad(1, 1, 1, 1), 8),
    ];
    let stored = build(&mut Lcg::new(8), [8, 8, 8], &layers);
    assert_eq!(stored.graph.arena_size, 576);
    let mut rewrite = stored.clone();
    assert_eq!(rewrite.graph.stream_rows(), 0);
    assert_eq!(rewrite.graph, stored.graph);
    let forced = stored.streamed(&[(1, 3)]);
    assert_eq!(forced.graph.arena_size, 1048);
    // Larger, but valid and exact.
    let mut rng = Lcg::new(1);
    let inputs: Vec<Vec<i8>> = (0..8).map(|_| rng.vec_i8(512)).collect();
    let expected = run_all(&stored.blob(), &inputs, &mut rng);
    assert_eq!(run_all(&forced.blob(), &inputs, &mut rng), expected);

    // A reader whose window is the whole height: a band could only be the tensor.
    // [1, 3, 3, 4] → 1×1 conv → [1, 3, 3, 8] → 3×3 conv → [1, 1, 1, 8].
    let layers = [
        conv(1, 1, Padding::default(), 8),
        conv(3, 1, Padding::default(), 8),
    ];
    let stored = build(&mut Lcg::new(9), [3, 3, 4], &layers);
    let mut rewrite = stored.clone();
    assert_eq!(rewrite.graph.stream_rows(), 0);
    assert_eq!(rewrite.graph, stored.graph);

    // A conv output read by a max pool: only convs read bands.
    let mut chain = mobilenet_block();
    let t1 = chain.graph.tensors[1].clone();
    chain.graph.tensors[2].scale = t1.scale;
    chain.graph.tensors[2].zero_point = t1.zero_point;
    chain.graph.ops[1] = max_pool(1, 2, 3, 2, pad(0, 0, 1, 1));
    chain.graph.plan_arena().unwrap();
    let before = chain.graph.clone();
    Model::from_bytes(&chain.blob()).unwrap();
    assert_eq!(chain.graph.stream_rows(), 0);
    assert_eq!(chain.graph, before);
}

fn max_pool(input: u32, output: u32, k: u32, s: u32, padding: Padding) -> Op {
    Op::MaxPool2d(Pool2d {
        input,
        output,
        filter_h: k,
        filter_w: k,
        stride_h: s,
        stride_w: s,
        padding,
        act_min: -128,
        act_max: 127,
    })
}

/// Input `[1, 6, 6, 3]` → 3×3 conv, pad 1 → tensor 1 `[1, 6, 6, 3]` → 3×3 depthwise
/// conv, pad 1 → tensor 2 `[1, 6, 6, 3]`, the output; tensor 1 streamed in 3 rows.
fn small_chain() -> Chain {
    let layers = [
        conv(3, 1, pad(1, 1, 1, 1), 3),
        depthwise(3, 1, pad(1, 1, 1, 1), 1),
    ];
    build(&mut Lcg::new(5), [6, 6, 3], &layers).streamed(&[(1, 3)])
}

/// [`small_chain`], changed by `mutate`, encoded and loaded: the error.
fn crafted(mutate: impl FnOnce(&mut GraphDef)) -> Error {
    let mut chain = small_chain();
    mutate(&mut chain.graph);
    Model::from_bytes(&chain.blob()).expect_err("crafted blob must be refused")
}

#[test]
fn the_small_chain_loads() {
    let chain = small_chain();
    let blob = chain.blob();
    let model = Model::from_bytes(&blob).unwrap();
    // Tensor 1 as a band: 3·6·3 = 54 bytes, not 108.
    assert_eq!(model.tensors()[1].bytes().unwrap(), 54);
    let input = Lcg::new(2).vec_i8(108);
    let mut out = [0i8; 108];
    model
        .run(&mut vec![0u8; model.arena_size()], &input, &mut out)
        .unwrap();
    assert_eq!(out.as_slice(), chain.expected(&input).as_slice());
}

#[test]
fn a_band_read_twice_or_by_an_op_other_than_the_next_is_refused() {
    // A second reader after the first: the band would be gone by then.
    let e = crafted(|g| {
        let second = g.ops[1];
        let mut copy = g.tensors[2].clone();
        copy.kind = TensorKind::Activation;
        g.tensors.push(copy);
        g.ops.push(with_output(second, 3));
        g.plan_arena().unwrap();
    });
    assert_eq!(e, Error::BadStream { tensor: 1 });
    // A conv between the band's writer and its reader.
    let e = crafted(|g| {
        let mut first = g.ops[0];
        let mut copy = g.tensors[1].clone();
        copy.kind = TensorKind::Activation;
        g.tensors.push(copy);
        first = with_output(first, 3);
        g.ops.insert(1, first);
        g.plan_arena().unwrap();
    });
    assert_eq!(e, Error::BadStream { tensor: 1 });
    // The band's reader is a max pool, or a reshape: only a conv, a depthwise conv or
    // an Add reads a band (both are valid ops on a stored tensor, as the controls show).
    for stream in [true, false] {
        let mut chain = small_chain();
        let g = &mut chain.graph;
        let t1 = g.tensors[1].clone();
        (g.tensors[2].scale, g.tensors[2].zero_point) = (t1.scale, t1.zero_point);
        g.ops[1] = max_pool(1, 2, 3, 1, pad(1, 1, 1, 1));
        if !stream {
            g.tensors[1].kind = TensorKind::Activation;
        }
        g.plan_arena().unwrap();
        match stream {
            true => assert_eq!(load_err(&chain), Error::BadStream { tensor: 1 }),
            false => {
                Model::from_bytes(&chain.blob()).unwrap();
            }
        }
        let mut chain = small_chain();
        let g = &mut chain.graph;
        g.tensors[2] = tensor(&[1, 108], t1.scale, t1.zero_point, TensorKind::Output);
        g.ops[1] = Op::Reshape(Reshape {
            input: 1,
            output: 2,
        });
        if !stream {
            g.tensors[1].kind = TensorKind::Activation;
        }
        g.plan_arena().unwrap();
        match stream {
            true => assert_eq!(load_err(&chain), Error::BadStream { tensor: 1 }),
            false => {
                Model::from_bytes(&chain.blob()).unwrap();
            }
        }
    }
    // The band's writer is a max pool.
    let e = crafted(|g| {
        let t0 = g.tensors[0].clone();
        (g.tensors[1].scale, g.tensors[1].zero_point) = (t0.scale, t0.zero_point);
        g.ops[0] = max_pool(0, 1, 3, 1, pad(1, 1, 1, 1));
        g.plan_arena().unwrap();
    });
    assert_eq!(e, Error::BadStream { tensor: 1 });
    // A streamed tensor no op writes (or reads).
    let e = crafted(|g| {
        g.tensors.push(tensor(
            &[1, 6, 6, 3],
            0.1,
            0,
            TensorKind::Streamed { rows: 3 },
        ));
        g.plan_arena().unwrap();
    });
    assert_eq!(e, Error::BadStream { tensor: 3 });
}

fn load_err(chain: &Chain) -> Error {
    Model::from_bytes(&chain.blob()).expect_err("crafted blob must be refused")
}

/// `op` (a conv or depthwise conv) writing tensor `output` instead.
fn with_output(op: Op, output: u32) -> Op {
    match op {
        Op::Conv2d(p) => Op::Conv2d(Conv2d { output, ..p }),
        Op::DepthwiseConv2d(p) => Op::DepthwiseConv2d(DepthwiseConv2d { output, ..p }),
        other => panic!("not a conv: {other:?}"),
    }
}

#[test]
fn a_band_of_the_wrong_height_or_shape_is_refused() {
    // Shorter than the reader's 3-row window.
    for rows in [1, 2] {
        let e = crafted(|g| {
            g.tensors[1].kind = TensorKind::Streamed { rows };
            g.plan_arena().unwrap();
        });
        assert_eq!(e, Error::BadStream { tensor: 1 });
    }
    // Taller than the tensor (6 rows) or empty (set after planning: the planner
    // cannot size them either).
    for rows in [0, 7, 255] {
        let e = crafted(|g| g.tensors[1].kind = TensorKind::Streamed { rows });
        assert_eq!(e, Error::BadStream { tensor: 1 });
    }
    // 4, 5 or 6 rows (the whole tensor) are bands too.
    for rows in [4, 5, 6] {
        let mut chain = small_chain();
        chain.graph.tensors[1].kind = TensorKind::Streamed { rows };
        chain.graph.plan_arena().unwrap();
        Model::from_bytes(&chain.blob()).unwrap();
    }
    // Not `[1, H, W, C]`: rank 2, rank 3, a batch of 2.
    for shape in [&[1, 108][..], &[6, 6, 3], &[2, 3, 6, 3]] {
        let e = crafted(|g| g.tensors[1].shape = heapless::Vec::from_slice(shape).unwrap());
        assert_eq!(e, Error::BadStream { tensor: 1 }, "{shape:?}");
    }
    // The graph's input and output cannot be streamed: their kinds say what they are.
    let e = crafted(|g| g.tensors[2].kind = TensorKind::Streamed { rows: 3 });
    assert_eq!(e, Error::BadTensorKind { tensor: 2 });
    let e = crafted(|g| g.tensors[0].kind = TensorKind::Streamed { rows: 3 });
    assert_eq!(e, Error::BadTensorKind { tensor: 0 });
}

#[test]
fn chains_hold_at_most_four_bands() {
    assert_eq!(STREAM_CHAIN_CAP, 4);
    // Input [1, 10, 10, 2] → six 3×3 convs and depthwise convs, pad 1 → [1, 10, 10, 2]:
    // tensors 1..=5 between them.
    let same = pad(1, 1, 1, 1);
    let layers = [
        conv(3, 1, same, 3),
        depthwise(3, 1, same, 1),
        conv(3, 1, same, 4),
        depthwise(3, 1, same, 1),
        conv(3, 1, same, 2),
        depthwise(3, 1, same, 1),
    ];
    let stored = build(&mut Lcg::new(6), [10, 10, 2], &layers);
    let all: Vec<(usize, u8)> = (1..=5).map(|t| (t, 3)).collect();
    // Five in a chain: the last one's check walks back past the cap.
    let five = stored.streamed(&all);
    assert_eq!(load_err(&five), Error::BadStream { tensor: 5 });
    // Four, either end stored: they load and run exactly; so do two chains of two.
    let mut rng = Lcg::new(10);
    let inputs: Vec<Vec<i8>> = (0..6).map(|_| rng.vec_i8(200)).collect();
    let expected = run_all(&stored.blob(), &inputs, &mut rng);
    for bands in [&all[..4], &all[1..], &[(1, 3), (2, 3), (4, 3), (5, 3)][..]] {
        let streamed = stored.streamed(bands);
        assert_eq!(
            run_all(&streamed.blob(), &inputs, &mut rng),
            expected,
            "{bands:?}"
        );
    }
    for (input, want) in inputs.iter().zip(&expected) {
        assert_eq!(&stored.expected(input), want);
    }
    // The rewrite never makes a chain longer than the cap.
    let mut rewrite = stored.clone();
    let n = rewrite.graph.stream_rows();
    assert!(n > 0);
    let bands: Vec<(usize, u8)> = (1..=5)
        .filter_map(|t| {
            let rows = rewrite.graph.tensors[t].streamed_rows()?;
            Some((t, rows as u8))
        })
        .collect();
    assert_eq!(bands.len(), n);
    assert!(longest_chain(&bands, 6) <= STREAM_CHAIN_CAP, "{bands:?}");
    assert_eq!(run_all(&rewrite.blob(), &inputs, &mut rng), expected);
}

/// Input `[1, 8, 8, 4]` → 1×1 conv → tensor 1 `[1, 8, 8, 8]` → 3×3 depthwise, pad 1
/// → tensor 2 `[1, 8, 8, 8]` → 3×3 conv, pad 1 → tensor 3 `[1, 8, 8, 4]` → 3×3 conv,
/// pad 1 → tensor 4 `[1, 8, 8, 1]`, the output.
fn overlap_chain() -> Chain {
    let same = pad(1, 1, 1, 1);
    let layers = [
        conv(1, 1, Padding::default(), 8),
        depthwise(3, 1, same, 1),
        conv(3, 1, same, 4),
        conv(3, 1, same, 1),
    ];
    build(&mut Lcg::new(12), [8, 8, 4], &layers)
}

#[test]
fn a_band_on_bytes_live_in_its_chains_step_is_refused() {
    let stored = overlap_chain();
    // Stored plan, largest first: 1 (512 B, steps 1–2) at 0; 2 (512 B, steps 2–3)
    // at 512; 0 (256 B, steps 0–1) at 512 (2 is not live yet); 3 (256 B, steps 3–4)
    // at 0 (1 is dead by step 3); 4 (64 B, steps 4–5) at 256. Arena 1,024.
    let offsets = |g: &GraphDef| g.tensors.iter().map(|t| t.arena_offset).collect::<Vec<_>>();
    assert_eq!(offsets(&stored.graph), [512, 0, 512, 0, 256]);
    assert_eq!(stored.graph.arena_size, 1024);
    // Tensors 2 and 3 streamed, 3 rows each, on the stored plan: the depthwise conv
    // and the first 3×3 conv now run in the last conv's step 4, where tensor 1 (still
    // read by the chain) holds bytes 0..512, and 3's band (96 B) sits at 0.
    let mut stale = stored.clone();
    for t in [2, 3] {
        stale.graph.tensors[t].kind = TensorKind::Streamed { rows: 3 };
    }
    assert_eq!(load_err(&stale), Error::ArenaOverlap { a: 1, b: 3 });
    // Planned again: 1 (512 B, steps 1–4) at 0; 0 (steps 0–1) at 512; 2's band
    // (3·8·8 = 192 B, step 4) at 512 (0 is dead); 3's band (3·8·4 = 96 B) at 704; 4
    // (64 B, steps 4–5) at 800. Arena 864.
    let streamed = stored.streamed(&[(2, 3), (3, 3)]);
    assert_eq!(offsets(&streamed.graph), [512, 0, 512, 704, 800]);
    assert_eq!(streamed.graph.arena_size, 864);
    let mut rng = Lcg::new(13);
    let inputs: Vec<Vec<i8>> = (0..6).map(|_| rng.vec_i8(256)).collect();
    let expected = run_all(&stored.blob(), &inputs, &mut rng);
    assert_eq!(run_all(&streamed.blob(), &inputs, &mut rng), expected);
    // A band moved (arena size kept) onto the chain's stored input, or onto the other
    // band; the chain's output moved onto a band: all are live in step 4.
    let moves = [
        (3, 1, 1, 3),
        (2, 1, 1, 2),
        (3, 2, 2, 3),
        (4, 3, 3, 4),
        (4, 2, 2, 4),
    ];
    for (moved_t, onto, a, b) in moves {
        let mut moved = streamed.clone();
        moved.graph.tensors[moved_t].arena_offset = streamed.graph.tensors[onto].arena_offset;
        assert_eq!(
            load_err(&moved),
            Error::ArenaOverlap { a, b },
            "{moved_t} onto {onto}"
        );
    }
    // One byte of overlap is enough: 3's band (96 B) ending one byte into 4 (at 800).
    let mut moved = streamed.clone();
    moved.graph.tensors[3].arena_offset = 800 - 96 + 1;
    assert_eq!(load_err(&moved), Error::ArenaOverlap { a: 3, b: 4 });
    // The graph input, dead since step 1, may hold either band: swapped, they load
    // and compute the same.
    let mut swapped = streamed.clone();
    swapped.graph.tensors[3].arena_offset = 512;
    swapped.graph.tensors[2].arena_offset = 512 + 96;
    assert_eq!(run_all(&swapped.blob(), &inputs, &mut rng), expected);
}

#[test]
fn streamed_models_are_written_at_the_current_minor_and_read_back() {
    // Streams came with 2.5; 2.6 relaxed the fused op's placement.
    assert_eq!(FORMAT_MINOR, 6);
    // Wire: tag 4, then the band's height as one byte.
    assert_eq!(
        postcard::to_allocvec(&TensorKind::Streamed { rows: 3 }).unwrap(),
        [4, 3]
    );
    assert_eq!(
        postcard::to_allocvec(&TensorKind::Streamed { rows: 200 }).unwrap(),
        [4, 200]
    );
    let mut chain = mobilenet_block();
    assert_eq!(chain.graph.stream_rows(), 1);
    let blob = chain.blob();
    assert_eq!(u16::from_le_bytes([blob[6], blob[7]]), FORMAT_MINOR);
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.header().minor, FORMAT_MINOR);
    assert_eq!(model.tensors()[1].kind, TensorKind::Streamed { rows: 3 });
    assert_eq!(model.tensors()[1].streamed_rows(), Some(3));
    assert_eq!(model.tensors(), chain.graph.tensors.as_slice());
    assert_eq!(model.ops().collect::<Vec<_>>(), chain.graph.ops);
    assert_eq!(model.arena_size(), chain.graph.arena_size as usize);
    // A taller band round-trips too.
    let tall = mobilenet_block().streamed(&[(1, 16)]);
    let blob = tall.blob();
    let model = Model::from_bytes(&blob).unwrap();
    assert_eq!(model.tensors()[1].kind, TensorKind::Streamed { rows: 16 });
    assert_eq!(model.tensors()[1].bytes().unwrap(), 16 * 16 * 16);
}

/// Every truncation of a streamed blob is refused, and every bit flip past the header
/// (re-sealed, so that the CRC does not catch it) is refused or loads and runs: the
/// stream checks leave no blob that fails or panics in `run`.
#[test]
fn every_truncation_and_bit_flip_of_a_streamed_blob() {
    let blob = small_chain().blob();
    let model = Model::from_bytes(&blob).unwrap();
    let input_len = model.input_len();
    for prefix in 0..blob.len() {
        assert!(
            Model::from_bytes(&blob[..prefix]).is_err(),
            "prefix {prefix}"
        );
    }
    let input: Vec<i8> = (0..input_len).map(|i| (i * 7) as i8).collect();
    let loaded = bit_flips_refused_or_run(&blob, &input);
    assert!(
        loaded > 100,
        "too few flips load ({loaded}) to exercise run"
    );
}

/// Chains whose filters are sparse or packed 4-bit stream bit-exactly too: the rows
/// go through the same encoded kernels, with the narrowed geometry.
#[test]
fn sparse_and_packed_chains_are_bit_exact_with_stored_ones() {
    use Encoding::{Dense, Packed4, SparseRel8};
    let mut rng = Lcg::new(77);
    let same = pad(1, 1, 1, 1);
    let cases: [(&[Layer], &[Encoding]); 4] = [
        (
            &[
                conv(3, 1, same, 6),
                conv(3, 2, same, 8),
                conv(1, 1, pad(0, 0, 0, 0), 4),
            ],
            &[SparseRel8, SparseRel8, SparseRel8],
        ),
        (
            &[
                conv(3, 1, same, 8),
                depthwise(3, 2, same, 1),
                conv(1, 1, pad(0, 0, 0, 0), 5),
            ],
            &[Packed4, Packed4, Packed4],
        ),
        (
            &[
                conv(5, 1, pad(2, 2, 2, 2), 4),
                depthwise(3, 1, same, 2),
                conv(3, 1, same, 3),
            ],
            &[SparseRel8, Dense, Packed4],
        ),
        (
            &[
                depthwise(3, 1, same, 1),
                conv(3, 1, same, 6),
                conv(3, 2, same, 4),
            ],
            &[Packed4, SparseRel8, Dense],
        ),
    ];
    for (n, (layers, encodings)) in cases.iter().enumerate() {
        let stored = build_encoded(&mut rng, [10, 9, 4], layers, encodings);
        let kinds: Vec<Encoding> = stored
            .graph
            .ops
            .iter()
            .filter_map(|op| op.weights().map(|w| w.encoding))
            .collect();
        assert_eq!(kinds.as_slice(), *encodings, "case {n}");
        let bands: Vec<(usize, u8)> = (1..layers.len())
            .map(|t| match stored.graph.ops[t] {
                Op::Conv2d(c) => (t, c.kernel_h as u8),
                Op::DepthwiseConv2d(d) => (t, d.kernel_h as u8),
                _ => unreachable!(),
            })
            .collect();
        let streamed = stored.streamed(&bands);
        let inputs: Vec<Vec<i8>> = (0..8).map(|_| rng.vec_i8(10 * 9 * 4)).collect();
        let want = run_all(&stored.blob(), &inputs, &mut rng);
        let distinct: BTreeSet<_> = want.iter().collect();
        assert!(distinct.len() > 4, "case {n}: degenerate outputs");
        let reference: Vec<Vec<i8>> = inputs.iter().map(|x| stored.expected(x)).collect();
        assert_eq!(want, reference, "case {n}: stored against the reference");
        assert_eq!(
            run_all(&streamed.blob(), &inputs, &mut rng),
            want,
            "case {n}"
        );
    }
}
