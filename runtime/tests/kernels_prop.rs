//! Property tests: every fast kernel is bit-exact with its plain-loop reference on
//! random shapes, parameters and data; the fixed-point primitives agree with exact
//! 128-bit arithmetic. On x86_64 the weighted kernels run twice, with the AVX2 host
//! path (`kernels::x86`) and with the portable code it stands in for.

mod common;

use common::Lcg;
use proptest::prelude::*;
use sprig_runtime::fixed_point::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul};
use sprig_runtime::format::packed::{self, PackedRows};
use sprig_runtime::format::sparse::{self, SparseRows};
use sprig_runtime::format::write::encode_requant;
use sprig_runtime::kernels::add::{add, AddParams};
use sprig_runtime::kernels::argmax::argmax;
use sprig_runtime::kernels::binary::{
    binary_conv2d, binary_fully_connected, SignInput, SignOutput,
};
use sprig_runtime::kernels::binary_narrow;
use sprig_runtime::kernels::conv::conv2d;
use sprig_runtime::kernels::conv_pool::{
    conv2d_max_pool, conv2d_packed_max_pool, conv2d_sparse_max_pool, pooled_first,
};
use sprig_runtime::kernels::depthwise::depthwise_conv2d;
use sprig_runtime::kernels::fully_connected::{fully_connected, FcShape};
use sprig_runtime::kernels::low_bit::{
    conv2d_packed, depthwise_conv2d_packed, fully_connected_packed,
};
use sprig_runtime::kernels::pool_bits::max_pool_bits;
use sprig_runtime::kernels::pool_windows::{
    conv2d_dense_max_pool_by_windows, conv2d_sparse_max_pool_by_windows,
};
use sprig_runtime::kernels::pooling::{
    global_avg_pool, in_place_ok, pool2d, pool2d_in_place, MeanParams, PoolKind,
};
use sprig_runtime::kernels::softmax::{softmax, SoftmaxParams};
use sprig_runtime::kernels::sparse::{conv2d_sparse, fully_connected_sparse};
use sprig_runtime::kernels::sparse_pool_rows::{
    conv2d_sparse_max_pool_by_rows, ROW_CAP, ROW_TAPS_CAP,
};
use sprig_runtime::kernels::{reference, ConvGeometry, OutputStage};
use sprig_runtime::Encoding;

/// Quantization side of a weighted op, drawn from a seed.
struct Stage {
    bias: Option<Vec<u8>>,
    requant: Vec<u8>,
    channels: usize,
    output_offset: i32,
    act: (i32, i32),
}

impl Stage {
    fn random(rng: &mut Lcg, channels: usize) -> Self {
        let per_channel = !rng.one_in(4);
        let n = if per_channel { channels } else { 1 };
        let wide = rng.one_in(4);
        let pairs: Vec<(i32, i32)> = (0..n)
            .map(|_| {
                let m = match rng.next() % 8 {
                    0 => 0,
                    1 => i32::MAX,
                    2 => 1 << 30,
                    // Unnormalized, as sprig's single-rounding pairs are (format 2.3).
                    3 => (rng.next() % (1 << 30)) as i32,
                    _ => (1 << 30) + (rng.next() % (1 << 30)) as i32,
                };
                let s = if wide {
                    rng.range(-31, 30)
                } else {
                    rng.range(-14, 2)
                };
                (m, s)
            })
            .collect();
        let bias = (!rng.one_in(3)).then(|| {
            (0..channels)
                .flat_map(|_| rng.range(-100_000, 100_000).to_le_bytes())
                .collect()
        });
        let a = rng.range(-128, 127);
        let b = rng.range(-128, 127);
        Stage {
            bias,
            requant: encode_requant(&pairs).unwrap(),
            channels,
            output_offset: rng.range(-128, 127),
            act: if rng.one_in(2) {
                (-128, 127)
            } else {
                (a.min(b), a.max(b))
            },
        }
    }

    fn view(&self) -> OutputStage<'_> {
        OutputStage {
            bias: self.bias.as_deref(),
            requant: &self.requant,
            channels: self.channels,
            output_offset: self.output_offset,
            act_min: self.act.0,
            act_max: self.act.1,
        }
    }
}

/// A consistent window geometry: `(batch, in_h, in_w, in_c, kh, kw, sh, sw, pads)`.
fn geometry() -> impl Strategy<Value = ConvGeometry> {
    (
        1usize..=2,
        1usize..=9,
        1usize..=9,
        1usize..=6,
        1usize..=4,
        1usize..=4,
        1usize..=3,
        1usize..=3,
    )
        .prop_flat_map(|(batch, in_h, in_w, in_c, kh, kw, sh, sw)| {
            (
                Just((batch, in_h, in_w, in_c, kh, kw, sh, sw)),
                0..kh,
                0..kh,
                0..kw,
                0..kw,
            )
        })
        .prop_filter_map(
            "kernel larger than padded input",
            |((batch, in_h, in_w, in_c, kh, kw, sh, sw), pt, pb, pl, pr)| {
                let input = (batch, in_h, in_w, in_c);
                window_geometry(input, in_c, (kh, kw, sh, sw), (pt, pb, pl, pr))
            },
        )
}

/// A window op over `(batch, in_h, in_w, in_c)` with `out_c` output channels, kernel and
/// strides `(kh, kw, sh, sw)` and paddings `(top, bottom, left, right)`; `None` where
/// the kernel is larger than the padded input.
fn window_geometry(
    (batch, in_h, in_w, in_c): (usize, usize, usize, usize),
    out_c: usize,
    (kh, kw, sh, sw): (usize, usize, usize, usize),
    (pt, pb, pl, pr): (usize, usize, usize, usize),
) -> Option<ConvGeometry> {
    let (ph, pw) = (in_h + pt + pb, in_w + pl + pr);
    (ph >= kh && pw >= kw).then(|| ConvGeometry {
        batch,
        in_h,
        in_w,
        in_c,
        out_h: (ph - kh) / sh + 1,
        out_w: (pw - kw) / sw + 1,
        out_c,
        kernel_h: kh,
        kernel_w: kw,
        stride_h: sh,
        stride_w: sw,
        pad_top: pt,
        pad_left: pl,
    })
}

fn lens(g: &ConvGeometry) -> (usize, usize) {
    g.lens().unwrap()
}

/// `run`'s outputs with the x86_64 host fast path on, then off (one run elsewhere).
fn each_path(mut run: impl FnMut() -> Vec<i8>) -> Vec<Vec<i8>> {
    #[cfg(target_arch = "x86_64")]
    {
        use sprig_runtime::kernels::x86::set_enabled;
        let outs = [true, false]
            .into_iter()
            .map(|on| {
                set_enabled(on);
                run()
            })
            .collect();
        set_enabled(true);
        outs
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        vec![run()]
    }
}

/// Input channels added to a drawn geometry: none, or enough to reach the vector
/// paths' whole blocks (16) and their remainders.
fn extra_channels() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0usize, 0, 10, 26, 42])
}

/// `n` weights of which about one in `keep_one_in` is nonzero (1: dense; 500: rows
/// with runs of zeros longer than either gap field holds).
fn pruned(rng: &mut Lcg, n: usize, keep_one_in: u32) -> Vec<i8> {
    (0..n)
        .map(|_| if rng.one_in(keep_one_in) { rng.i8() } else { 0 })
        .collect()
}

fn density() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![1u32, 2, 3, 10, 20, 500])
}

fn sparse_encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(vec![Encoding::SparseRel8, Encoding::SparseRel4])
}

fn packed_encoding() -> impl Strategy<Value = Encoding> {
    prop::sample::select(vec![
        Encoding::Packed4,
        Encoding::Packed2,
        Encoding::Packed1,
    ])
}

/// `n` weights the packed `encoding` can hold, its whole range drawn.
fn low_bit(rng: &mut Lcg, n: usize, encoding: Encoding) -> Vec<i8> {
    (0..n)
        .map(|_| match encoding {
            Encoding::Packed4 => rng.range(-8, 7) as i8,
            Encoding::Packed2 => rng.range(-2, 1) as i8,
            _ => {
                if rng.one_in(2) {
                    1
                } else {
                    -1
                }
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The packed conv equals the dense one on the unpacked weights, through the
    /// block path and the piecewise path (windows over 512, offsets beyond ±256).
    #[test]
    fn packed_conv2d_matches_dense(
        g in geometry(),
        extra in prop::sample::select(vec![0usize, 0, 10, 26, 42, 130]),
        out_c in 1usize..=20,
        encoding in packed_encoding(),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let g = ConvGeometry { in_c: g.in_c + extra, out_c, ..g };
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let filter = low_bit(&mut rng, out_c * g.kernel_h * g.kernel_w * g.in_c, encoding);
        let bytes = packed::encode(&filter, out_c, encoding).unwrap();
        let rows = PackedRows::new(&bytes, out_c, filter.len() / out_c, encoding).unwrap();
        let st = Stage::random(&mut rng, out_c);
        let offset = if rng.one_in(4) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut dense = vec![1i8; out_len];
        conv2d(&g, offset, &st.view(), &filter, &input, &mut dense).unwrap();
        let mut low = vec![0i8; out_len];
        conv2d_packed(&g, offset, &st.view(), &rows, &input, &mut low).unwrap();
        prop_assert_eq!(low, dense);
    }

    /// The XNOR-popcount conv equals the plain ±1 sum, at the borders (masked taps),
    /// across word boundaries (windows of up to 42·16 bits), any zero point.
    #[test]
    fn binary_conv2d_matches_reference(
        g in geometry(),
        extra in prop::sample::select(vec![0usize, 0, 10, 26, 42]),
        out_c in 1usize..=20,
        seed: u64,
    ) {
        let g = ConvGeometry { in_c: g.in_c + extra, out_c, ..g };
        let (fast, slow) = binary_conv2d_both(&g, seed);
        prop_assert_eq!(fast, slow);
    }

    /// Windows whose kernel rows fit a word each (the narrow kernel: up to five rows of
    /// up to 32 bits, up to 51 channels), at every border, stride and padding.
    #[test]
    fn binary_conv2d_narrow_windows_match_reference(
        (kh, kw) in (1usize..=5, 1usize..=5),
        c_pick in 0usize..32,
        (in_h, in_w) in (1usize..=12, 1usize..=12),
        (sh, sw) in (1usize..=3, 1usize..=3),
        pads in (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        out_c in prop::sample::select(vec![1usize, 3, 16, 51]),
        seed: u64,
    ) {
        let in_c = 1 + c_pick % (32 / kw);
        let paddings = (pads.0 % kh, pads.1 % kh, pads.2 % kw, pads.3 % kw);
        let input = (1 + (seed % 2) as usize, in_h, in_w, in_c);
        let g = window_geometry(input, out_c, (kh, kw, sh, sw), paddings);
        prop_assume!(g.is_some());
        let g = g.unwrap();
        prop_assert!(binary_narrow::fits(&g));
        let (fast, slow) = binary_conv2d_both(&g, seed);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn binary_fully_connected_matches_reference(
        batch in 1usize..=3,
        k in 1usize..=700,
        n in 1usize..=40,
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let shape = FcShape { batch, in_features: k, out_features: n };
        let input = rng.vec_i8(batch * k);
        let zero_point = rng.range(-20, 20);
        let weights = low_bit(&mut rng, n * k, Encoding::Packed1);
        let bytes = packed::encode(&weights, n, Encoding::Packed1).unwrap();
        let rows = PackedRows::new(&bytes, n, k, Encoding::Packed1).unwrap();
        let thresholds: Vec<i32> = (0..n).map(|_| rng.range(-(k as i32) / 4, k as i32 / 4)).collect();
        let t_bytes: Vec<u8> = thresholds.iter().flat_map(|t| t.to_le_bytes()).collect();
        let mut slow = vec![0i8; batch * n];
        reference::binary_fully_connected(&shape, zero_point, &thresholds, &weights, &input, &mut slow);
        let run = |input: SignInput<'_>| {
            signs_both_ways(batch * n, |output| {
                binary_fully_connected(&shape, &t_bytes, &rows, input, output)
            })
        };
        prop_assert_eq!(run(SignInput::Int8 { values: &input, zero_point }), slow.clone());
        let bits = to_bits(&input, zero_point);
        prop_assert_eq!(run(SignInput::Bits(&bits)), slow);
    }

    /// Packed depthwise filters (one row per tap) in blocks narrower and wider than a
    /// row, with depth multipliers.
    #[test]
    fn packed_depthwise_matches_dense(
        g in geometry(),
        dm in 1usize..=3,
        extra in prop::sample::select(vec![0usize, 0, 2, 7, 20, 131]),
        encoding in packed_encoding(),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let in_c = g.in_c + extra;
        let g = ConvGeometry { in_c, out_c: in_c * dm, ..g };
        let (in_len, out_len) = lens(&g);
        let taps = g.kernel_h * g.kernel_w;
        let input = rng.vec_i8(in_len);
        let filter = low_bit(&mut rng, taps * g.out_c, encoding);
        let bytes = packed::encode(&filter, taps, encoding).unwrap();
        let rows = PackedRows::new(&bytes, taps, g.out_c, encoding).unwrap();
        let st = Stage::random(&mut rng, g.out_c);
        let offset = if rng.one_in(8) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut dense = vec![1i8; out_len];
        depthwise_conv2d(&g, dm, offset, &st.view(), &filter, &input, &mut dense).unwrap();
        let mut low = vec![0i8; out_len];
        depthwise_conv2d_packed(&g, dm, offset, &st.view(), &rows, &input, &mut low).unwrap();
        prop_assert_eq!(low, dense);
    }

    #[test]
    fn packed_fully_connected_matches_dense(
        batch in 1usize..=3,
        k in 1usize..=700,
        n in 1usize..=40,
        encoding in packed_encoding(),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let shape = FcShape { batch, in_features: k, out_features: n };
        let input = rng.vec_i8(batch * k);
        let weights = low_bit(&mut rng, n * k, encoding);
        let bytes = packed::encode(&weights, n, encoding).unwrap();
        let rows = PackedRows::new(&bytes, n, k, encoding).unwrap();
        let st = Stage::random(&mut rng, n);
        let offset = if rng.one_in(8) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut dense = vec![1i8; batch * n];
        fully_connected(&shape, offset, &st.view(), &weights, &input, &mut dense).unwrap();
        let mut low = vec![0i8; batch * n];
        fully_connected_packed(&shape, offset, &st.view(), &rows, &input, &mut low).unwrap();
        prop_assert_eq!(low, dense);
    }

    /// The sparse conv on encoded weights equals the dense one on the same weights,
    /// through the gathered path and the by-entry path (windows over 512, offsets
    /// beyond ±256).
    #[test]
    fn sparse_conv2d_matches_dense(
        g in geometry(),
        extra in extra_channels(),
        out_c in 1usize..=20,
        keep_one_in in density(),
        encoding in sparse_encoding(),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let g = ConvGeometry { in_c: g.in_c + extra, out_c, ..g };
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let filter = pruned(&mut rng, out_c * g.kernel_h * g.kernel_w * g.in_c, keep_one_in);
        let bytes = sparse::encode(&filter, out_c, encoding).unwrap();
        let rows = SparseRows::new(&bytes, out_c, encoding).unwrap();
        let st = Stage::random(&mut rng, out_c);
        let offset = if rng.one_in(4) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut dense = vec![1i8; out_len];
        conv2d(&g, offset, &st.view(), &filter, &input, &mut dense).unwrap();
        let mut sparse = vec![0i8; out_len];
        conv2d_sparse(&g, offset, &st.view(), &rows, &input, &mut sparse).unwrap();
        prop_assert_eq!(sparse, dense);
    }

    #[test]
    fn sparse_fully_connected_matches_dense(
        batch in 1usize..=3,
        k in 1usize..=700,
        n in 1usize..=40,
        keep_one_in in density(),
        encoding in sparse_encoding(),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let shape = FcShape { batch, in_features: k, out_features: n };
        let input = rng.vec_i8(batch * k);
        let weights = pruned(&mut rng, n * k, keep_one_in);
        let bytes = sparse::encode(&weights, n, encoding).unwrap();
        let rows = SparseRows::new(&bytes, n, encoding).unwrap();
        let st = Stage::random(&mut rng, n);
        let offset = if rng.one_in(8) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut dense = vec![1i8; batch * n];
        fully_connected(&shape, offset, &st.view(), &weights, &input, &mut dense).unwrap();
        let mut sparse = vec![0i8; batch * n];
        fully_connected_sparse(&shape, offset, &st.view(), &rows, &input, &mut sparse).unwrap();
        prop_assert_eq!(sparse, dense);
    }

    #[test]
    fn conv2d_matches_reference(
        g in geometry(),
        extra in extra_channels(),
        out_c in 1usize..=20,
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let g = ConvGeometry { in_c: g.in_c + extra, out_c, ..g };
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let filter = rng.vec_i8(out_c * g.kernel_h * g.kernel_w * g.in_c);
        let st = Stage::random(&mut rng, out_c);
        // Mostly a real zero point's offset; sometimes one no int8 zero point gives,
        // which takes the row-by-row path.
        let offset = if rng.one_in(4) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut slow = vec![1i8; out_len];
        reference::conv2d(&g, offset, &st.view(), &filter, &input, &mut slow);
        for fast in each_path(|| {
            let mut fast = vec![0i8; out_len];
            conv2d(&g, offset, &st.view(), &filter, &input, &mut fast).unwrap();
            fast
        }) {
            prop_assert_eq!(&fast, &slow);
        }
    }

    /// The fused conv + max pool equals the conv kernel followed by the pool kernel
    /// (and the reference oracles), on random conv and pool geometries: strides,
    /// paddings, overlapping and gapped windows, more channels than one block; with
    /// the filter dense, sparse (rel8, rel4, every density) or packed (4, 2, 1 bits),
    /// each against the unfused conv kernel of its encoding.
    #[test]
    fn conv2d_max_pool_matches_conv_then_pool(
        g in geometry(),
        extra in extra_channels(),
        out_c in 1usize..=40,
        window in (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        pads in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        encoding in prop::sample::select(Encoding::ALL.to_vec()),
        keep_one_in in density(),
        seed: u64,
    ) {
        let (kh, kw, _, _) = window;
        let (pt, pl, pb, pr) = (pads.0 % kh, pads.1 % kw, pads.2 % kh, pads.3 % kw);
        let conv = ConvGeometry { in_c: g.in_c + extra, out_c, ..g };
        let pooled = (conv.batch, conv.out_h, conv.out_w, out_c);
        let pool = window_geometry(pooled, out_c, window, (pt, pb, pl, pr));
        prop_assume!(pool.is_some());
        let pool = pool.unwrap();
        let mut rng = Lcg::new(seed);
        let (in_len, mid_len) = lens(&conv);
        let (_, out_len) = lens(&pool);
        let input = rng.vec_i8(in_len);
        let n_weights = out_c * conv.kernel_h * conv.kernel_w * conv.in_c;
        let filter = match encoding {
            Encoding::Dense => rng.vec_i8(n_weights),
            Encoding::SparseRel8 | Encoding::SparseRel4 => pruned(&mut rng, n_weights, keep_one_in),
            packed => low_bit(&mut rng, n_weights, packed),
        };
        let st = Stage::random(&mut rng, out_c);
        // Dense: sometimes an offset beyond ±256 (the row-by-row path); the sparse and
        // packed fused kernels take validated offsets only.
        let offset = if encoding == Encoding::Dense && rng.one_in(4) {
            rng.range(-600, 600)
        } else {
            rng.range(-127, 128)
        };
        let s = st.view();
        let mut mid = vec![0i8; mid_len];
        let mut fused = vec![3i8; out_len];
        match encoding {
            Encoding::Dense => {
                conv2d(&conv, offset, &s, &filter, &input, &mut mid).unwrap();
                conv2d_max_pool(&conv, &pool, offset, &s, &filter, &input, &mut fused).unwrap();
            }
            Encoding::SparseRel8 | Encoding::SparseRel4 => {
                let bytes = sparse::encode(&filter, out_c, encoding).unwrap();
                let rows = SparseRows::new(&bytes, out_c, encoding).unwrap();
                conv2d_sparse(&conv, offset, &s, &rows, &input, &mut mid).unwrap();
                let r = conv2d_sparse_max_pool(&conv, &pool, offset, &s, &rows, &input, &mut fused);
                if filter.len() / out_c > 512 {
                    prop_assert!(r.is_err());
                    return Ok(());
                }
                r.unwrap();
            }
            packed => {
                let bytes = packed::encode(&filter, out_c, packed).unwrap();
                let rows = PackedRows::new(&bytes, out_c, filter.len() / out_c, packed).unwrap();
                conv2d_packed(&conv, offset, &s, &rows, &input, &mut mid).unwrap();
                let r = conv2d_packed_max_pool(&conv, &pool, offset, &s, &rows, &input, &mut fused);
                if filter.len() / out_c > 512 {
                    prop_assert!(r.is_err());
                    return Ok(());
                }
                r.unwrap();
            }
        }
        let mut unfused = vec![2i8; out_len];
        pool2d(PoolKind::Max, &pool, -128, 127, &mid, &mut unfused).unwrap();
        let mut oracle = vec![1i8; out_len];
        reference::conv2d_max_pool(&conv, &pool, offset, &s, &filter, &input, &mut oracle);
        prop_assert_eq!(&fused, &unfused);
        prop_assert_eq!(&fused, &oracle);
        // A pool that does not read this conv's output is refused.
        let wrong = ConvGeometry { in_h: conv.out_h + 1, ..pool };
        prop_assert!(conv2d_max_pool(&conv, &wrong, offset, &s, &filter, &input, &mut fused).is_err());
    }

    /// The pool-first kernels (a row and a window at a time, sparse and dense),
    /// called directly, on images larger than the property above draws: several
    /// 2×2 windows a pool row, padded rows read from the band or checked tap by tap
    /// where the band does not fit, pool windows across the padding, square and not.
    #[test]
    fn sparse_pool_first_kernels_match_conv_then_pool(
        input in (1usize..=2, 17usize..=48, 9usize..=40, 1usize..=3),
        kernel in (1usize..=5, 1usize..=5, 1usize..=2, 1usize..=2),
        conv_pads in (0usize..5, 0usize..5, 0usize..5, 0usize..5),
        out_c in 1usize..=4,
        window in (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=3),
        pool_pads in (0usize..3, 0usize..3, 0usize..3, 0usize..3),
        encoding in sparse_encoding(),
        // 1: every weight kept, up to 75 a filter: the window kernel's longer table.
        keep_one_in in prop::sample::select(vec![1u32, 3, 5, 10, 40]),
        seed: u64,
    ) {
        let (kh, kw, _, _) = kernel;
        let (pt, pb, pl, pr) = conv_pads;
        let conv = window_geometry(input, out_c, kernel, (pt % kh, pb % kh, pl % kw, pr % kw));
        prop_assume!(conv.is_some());
        let conv = conv.unwrap();
        let (ph, pw, _, _) = window;
        let (qt, ql, qb, qr) = pool_pads;
        let pooled = (conv.batch, conv.out_h, conv.out_w, out_c);
        let pool = window_geometry(pooled, out_c, window, (qt % ph, qb % ph, ql % pw, qr % pw));
        prop_assume!(pool.is_some());
        let pool = pool.unwrap();
        let mut rng = Lcg::new(seed);
        let (in_len, mid_len) = lens(&conv);
        let (_, out_len) = lens(&pool);
        let input = rng.vec_i8(in_len);
        let filter = pruned(&mut rng, out_c * kh * kw * conv.in_c, keep_one_in);
        let st = Stage::random(&mut rng, out_c);
        let offset = rng.range(-127, 128);
        let bytes = sparse::encode(&filter, out_c, encoding).unwrap();
        let rows = SparseRows::new(&bytes, out_c, encoding).unwrap();
        let s = st.view();
        // Dense filters and output stages that are not monotonic take the pixel kernel.
        prop_assume!(matches!(pooled_first(&conv, offset, &s, &rows), Ok(Some(_))));
        let mut mid = vec![0i8; mid_len];
        conv2d_sparse(&conv, offset, &s, &rows, &input, &mut mid).unwrap();
        let mut unfused = vec![3i8; out_len];
        pool2d(PoolKind::Max, &pool, -128, 127, &mid, &mut unfused).unwrap();
        // The window kernel takes every one of these geometries (kernels ≤ 5, ≤ 75
        // weights a filter); the row kernel those whose rows and filters fit its
        // tables, and leaves the output untouched on the rest. What they take matches.
        let densest = filter
            .chunks_exact(kh * kw * conv.in_c)
            .map(|row| row.iter().filter(|&&w| w != 0).count())
            .max()
            .unwrap_or(0);
        let rows_fit =
            conv.out_w <= ROW_CAP && pool.out_w <= ROW_CAP && densest <= ROW_TAPS_CAP;
        let run = |by_rows: bool| {
            // The fused op prefills its output with the pool's padding value.
            let mut fused = vec![-128i8; out_len];
            let kernel = if by_rows {
                conv2d_sparse_max_pool_by_rows
            } else {
                conv2d_sparse_max_pool_by_windows
            };
            let taken = kernel(&conv, &pool, offset, &s, &rows, &input, &mut fused);
            (taken, fused)
        };
        for (by_rows, takes) in [(true, rows_fit), (false, true)] {
            let (taken, fused) = run(by_rows);
            prop_assert_eq!(taken, Ok(takes));
            if takes {
                prop_assert_eq!(&fused, &unfused);
            } else {
                prop_assert!(fused.iter().all(|&y| y == -128));
            }
        }
        // The same filter, dense.
        let mut fused = vec![-128i8; out_len];
        let taken = conv2d_dense_max_pool_by_windows(&conv, &pool, offset, &s, &filter, &input, &mut fused);
        prop_assert_eq!(taken, Ok(true));
        prop_assert_eq!(&fused, &unfused);
    }

    #[test]
    fn depthwise_matches_reference(
        g in geometry(),
        dm in 1usize..=3,
        extra in prop::sample::select(vec![0usize, 0, 2, 7, 20, 131]),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        // Sometimes eight channels (two pixels a vector on x86_64), or more than one
        // stack block (or one vector pass, or the stack's output stages) holds.
        let in_c = g.in_c + extra;
        let g = ConvGeometry { in_c, out_c: in_c * dm, ..g };
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let filter = rng.vec_i8(g.kernel_h * g.kernel_w * g.out_c);
        let st = Stage::random(&mut rng, g.out_c);
        let offset = if rng.one_in(8) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut slow = vec![1i8; out_len];
        reference::depthwise_conv2d(&g, dm, offset, &st.view(), &filter, &input, &mut slow);
        for fast in each_path(|| {
            let mut fast = vec![0i8; out_len];
            depthwise_conv2d(&g, dm, offset, &st.view(), &filter, &input, &mut fast).unwrap();
            fast
        }) {
            prop_assert_eq!(&fast, &slow);
        }
    }

    /// Large windows (more taps than the paired-tap path takes) and depth multipliers
    /// up to 8, like the speech model's 10×8 kernel over one channel.
    #[test]
    fn depthwise_large_kernels_match_reference(
        (kh, kw) in (6usize..=10, 6usize..=9),
        (in_c, dm) in (1usize..=3, 1usize..=8),
        (sh, sw) in (1usize..=2, 1usize..=2),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let (in_h, in_w) = (kh + rng.range(0, 6) as usize, kw + rng.range(0, 6) as usize);
        let (pt, pl) = (rng.range(0, kh as i32 - 1) as usize, rng.range(0, kw as i32 - 1) as usize);
        let g = window_geometry((1, in_h, in_w, in_c), in_c * dm, (kh, kw, sh, sw), (pt, 0, pl, 0))
            .unwrap();
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let filter = rng.vec_i8(kh * kw * g.out_c);
        let st = Stage::random(&mut rng, g.out_c);
        let offset = rng.range(-127, 128);
        let mut slow = vec![1i8; out_len];
        reference::depthwise_conv2d(&g, dm, offset, &st.view(), &filter, &input, &mut slow);
        for fast in each_path(|| {
            let mut fast = vec![0i8; out_len];
            depthwise_conv2d(&g, dm, offset, &st.view(), &filter, &input, &mut fast).unwrap();
            fast
        }) {
            prop_assert_eq!(&fast, &slow);
        }
    }

    #[test]
    fn fully_connected_matches_reference(batch in 1usize..=4, k in 1usize..=300, n in 1usize..=40, seed: u64) {
        let mut rng = Lcg::new(seed);
        let shape = FcShape { batch, in_features: k, out_features: n };
        let input = rng.vec_i8(batch * k);
        let weights = rng.vec_i8(n * k);
        let st = Stage::random(&mut rng, n);
        let offset = if rng.one_in(8) { rng.range(-600, 600) } else { rng.range(-127, 128) };
        let mut slow = vec![1i8; batch * n];
        reference::fully_connected(&shape, offset, &st.view(), &weights, &input, &mut slow);
        for fast in each_path(|| {
            let mut fast = vec![0i8; batch * n];
            fully_connected(&shape, offset, &st.view(), &weights, &input, &mut fast).unwrap();
            fast
        }) {
            prop_assert_eq!(&fast, &slow);
        }
    }

    #[test]
    fn pooling_matches_reference(g in geometry(), wide in any::<bool>(), avg in any::<bool>(), seed: u64) {
        let mut rng = Lcg::new(seed);
        let in_c = if wide { 33 + g.in_c } else { g.in_c };
        let g = ConvGeometry { in_c, out_c: in_c, ..g };
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len);
        let (a, b) = (rng.range(-128, 127), rng.range(-128, 127));
        let kind = if avg { PoolKind::Average } else { PoolKind::Max };
        let (mut fast, mut slow) = (vec![0i8; out_len], vec![1i8; out_len]);
        pool2d(kind, &g, a.min(b), a.max(b), &input, &mut fast).unwrap();
        reference::pool2d(kind, &g, a.min(b), a.max(b), &input, &mut slow);
        prop_assert_eq!(&fast, &slow);
        // In place, output starting at or before the input in one buffer.
        let shift = (rng.next() % 3) as usize;
        let mut buf = vec![0i8; shift + input.len().max(out_len)];
        buf[shift..shift + input.len()].copy_from_slice(&input);
        let r = pool2d_in_place(kind, &g, a.min(b), a.max(b), &mut buf, shift, 0);
        if in_place_ok(&g) {
            r.unwrap();
            prop_assert_eq!(&buf[..out_len], &slow[..]);
        } else {
            prop_assert!(r.is_err());
        }
    }

    /// Max pooling on packed bits is the int8 max pool of the `±1` they stand for,
    /// channels up to 80 (reads of 32 and a remainder), separate or in place.
    #[test]
    fn max_pool_on_packed_bits_matches_reference(g in geometry(), extra in 0usize..=72, seed: u64) {
        let mut rng = Lcg::new(seed);
        let in_c = g.in_c + extra;
        let g = ConvGeometry { in_c, out_c: in_c, ..g };
        let (in_len, out_len) = lens(&g);
        let input: Vec<i8> = (0..in_len).map(|_| if rng.one_in(3) { 1 } else { -1 }).collect();
        let mut slow = vec![0i8; out_len];
        reference::pool2d(PoolKind::Max, &g, -128, 127, &input, &mut slow);
        let bits = to_bits(&input, 0);
        let (in_bytes, out_bytes) = (in_len.div_ceil(8), out_len.div_ceil(8));
        // Separate: the output after the input, in bytes full of stale bits.
        let mut buf = bits.clone();
        buf.extend(std::iter::repeat_n(0xA5, out_bytes));
        max_pool_bits(&g, &mut buf, 0, in_bytes).unwrap();
        prop_assert_eq!(&buf[..in_bytes], &bits[..], "input untouched");
        prop_assert_eq!(from_bits(&buf[in_bytes..], out_len), slow.clone());
        // In place, the output at or before the input (disjoint when the output's
        // bytes end before it starts).
        let shift = (rng.next() % 3) as usize;
        let mut buf = vec![0x5Au8; shift + in_bytes.max(out_bytes)];
        buf[shift..shift + in_bytes].copy_from_slice(&bits);
        let r = max_pool_bits(&g, &mut buf, shift, 0);
        if in_place_ok(&g) || shift >= out_bytes {
            r.unwrap();
            prop_assert_eq!(from_bits(&buf[..out_bytes], out_len), slow);
        } else {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn global_avg_pool_matches_reference(
        dims in (1usize..=2, 1usize..=8, 1usize..=8, 1usize..=40),
        seed: u64,
    ) {
        let mut rng = Lcg::new(seed);
        let (b, h, w, c) = dims;
        let input = rng.vec_i8(b * h * w * c);
        let (lo, hi) = (rng.range(-128, 0), rng.range(0, 127));
        let p = MeanParams {
            input_offset: rng.range(-127, 128),
            multiplier: (1 << 30) + (rng.next() % (1 << 30)) as i32,
            shift: rng.range(-8, 3),
            output_offset: rng.range(-128, 127),
            act_min: lo,
            act_max: hi,
        };
        let (mut fast, mut slow) = (vec![0i8; b * c], vec![1i8; b * c]);
        global_avg_pool([b, h, w, c], &p, &input, &mut fast).unwrap();
        reference::global_avg_pool([b, h, w, c], &p, &input, &mut slow);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn add_matches_reference(n in 1usize..=200, seed: u64) {
        let mut rng = Lcg::new(seed);
        let (x, y) = (rng.vec_i8(n), rng.vec_i8(n));
        let mut m = || (1 << 30) + (rng.next() % (1 << 30)) as i32;
        let (m1, m2, mo) = (m(), m(), m());
        // Offsets beyond ±256 and output shifts from right to left reach the kernel's
        // general path and each form of its output requantization.
        let wide = rng.one_in(4);
        let mut offset = || if wide { rng.range(-400, 400) } else { rng.range(-127, 128) };
        let (input1_offset, input2_offset) = (offset(), offset());
        let p = AddParams {
            input1_offset,
            input2_offset,
            output_offset: rng.range(-128, 127),
            input1_multiplier: m1,
            input1_shift: rng.range(-8, 0),
            input2_multiplier: m2,
            input2_shift: rng.range(-8, 0),
            output_multiplier: mo,
            output_shift: if rng.one_in(3) { rng.range(-1, 2) } else { rng.range(-24, -10) },
            act_min: rng.range(-128, 0),
            act_max: rng.range(0, 127),
        };
        let mut slow = vec![1i8; n];
        reference::add(&p, &x, &y, &mut slow);
        for fast in each_path(|| {
            let mut fast = vec![0i8; n];
            add(&p, &x, &y, &mut fast).unwrap();
            fast
        }) {
            prop_assert_eq!(&fast, &slow);
        }
    }

    #[test]
    fn softmax_matches_reference(rows in 1usize..=3, depth in 1usize..=100, seed: u64) {
        let mut rng = Lcg::new(seed);
        let input = rng.vec_i8(rows * depth);
        let scale = 0.002 + f64::from(rng.next() % 1000) / 2000.0;
        let q = sprig_runtime::fixed_point::SoftmaxQuant::from_scale(1.0, scale).unwrap();
        let p = SoftmaxParams {
            input_multiplier: q.input_multiplier,
            input_left_shift: q.input_left_shift,
            diff_min: if rng.one_in(4) { -rng.range(0, 255) } else { q.diff_min },
        };
        let (mut fast, mut slow) = (vec![0i8; rows * depth], vec![1i8; rows * depth]);
        softmax(depth, &p, &input, &mut fast).unwrap();
        reference::softmax(depth, &p, &input, &mut slow);
        prop_assert_eq!(&fast, &slow);
        // Probabilities (scale 1/256, zp −128) sum to about one per row.
        for row in fast.chunks(depth) {
            let sum: i32 = row.iter().map(|&v| i32::from(v) + 128).sum();
            prop_assert!((sum - 256).abs() <= depth as i32 + 2, "sum {}", sum);
        }
    }

    #[test]
    fn argmax_matches_reference(rows in 1usize..=4, depth in 1usize..=128, seed: u64) {
        let mut rng = Lcg::new(seed);
        // Few distinct values, so ties are common.
        let input: Vec<i8> = (0..rows * depth).map(|_| (rng.next() % 5) as i8).collect();
        let (mut fast, mut slow) = (vec![0i8; rows], vec![1i8; rows]);
        argmax(depth, &input, &mut fast).unwrap();
        reference::argmax(depth, &input, &mut slow);
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn srdhm_is_round_half_up_of_the_exact_product(a: i32, b: i32) {
        prop_assume!(!(a == i32::MIN && b == i32::MIN));
        let exact = (i128::from(a) * i128::from(b) + (1 << 30)).div_euclid(1 << 31);
        prop_assert_eq!(i128::from(saturating_rounding_doubling_high_mul(a, b)), exact);
    }

    #[test]
    fn rounding_divide_is_round_half_away_from_zero(x: i32, e in 0i32..=31) {
        let d = 1i128 << e;
        let (q, r) = (i128::from(x).div_euclid(d), i128::from(x).rem_euclid(d));
        // Exact x / 2^e = q + r/d; round half away from zero.
        let exact = if 2 * r > d || (2 * r == d && x >= 0) { q + 1 } else { q };
        prop_assert_eq!(i128::from(rounding_divide_by_pot(x, e)), exact);
    }

    #[test]
    fn kernels_reject_inconsistent_slices(g in geometry(), extra in 1usize..=3, seed: u64) {
        let mut rng = Lcg::new(seed);
        let (in_len, out_len) = lens(&g);
        let input = rng.vec_i8(in_len + extra);
        let filter = rng.vec_i8(g.out_c * g.kernel_h * g.kernel_w * g.in_c);
        let st = Stage::random(&mut rng, g.out_c);
        let mut out = vec![0i8; out_len];
        prop_assert!(conv2d(&g, 0, &st.view(), &filter, &input, &mut out).is_err());
        prop_assert!(pool2d(PoolKind::Max, &g, -128, 127, &input, &mut out).is_err());
    }
}

/// Every small fully connected shape, where the AVX2 host path has its special cases
/// (one input per row, rows of at most sixteen inputs whose windows run into the next
/// rows or past the weights, whole chunks, a last group of fewer than eight outputs,
/// several rows), against the reference, with the fast path on and off.
#[test]
fn small_fully_connected_shapes_match_reference() {
    let mut rng = Lcg::new(0x5eed_f00d);
    for k in (1usize..=40).chain([47, 48, 64, 65, 80]) {
        for n in 1usize..=20 {
            for batch in [1usize, 2, 3] {
                let shape = FcShape {
                    batch,
                    in_features: k,
                    out_features: n,
                };
                let input = rng.vec_i8(batch * k);
                let weights = rng.vec_i8(n * k);
                let st = Stage::random(&mut rng, n);
                let offset = rng.range(-128, 128);
                let mut slow = vec![1i8; batch * n];
                reference::fully_connected(&shape, offset, &st.view(), &weights, &input, &mut slow);
                for fast in each_path(|| {
                    let mut fast = vec![0i8; batch * n];
                    fully_connected(&shape, offset, &st.view(), &weights, &input, &mut fast)
                        .unwrap();
                    fast
                }) {
                    assert_eq!(fast, slow, "batch {batch} k {k} n {n}");
                }
            }
        }
    }
}

/// Whole models of two fully connected ops (the second reads what the first stored)
/// give the same bytes with the host's prepared ops (`Model::parse` prepares small
/// fully connected ops on AVX2 hosts) and with the portable kernels, on every shape the
/// preparation distinguishes: one input per row, up to sixteen, whole and partial
/// chunks past sixteen, a last group of fewer than eight outputs, several rows.
#[test]
fn fully_connected_models_match_with_and_without_the_fast_path() {
    use sprig_runtime::fixed_point::quantize_multiplier;
    use sprig_runtime::format::write::{BlobBuilder, GraphDef};
    use sprig_runtime::{FullyConnected, Model, Op, Tensor, TensorKind, Weights};

    let mut rng = Lcg::new(0xfc_fc);
    let tensor = |shape: &[u32], zero_point: i32, kind| Tensor {
        shape: heapless::Vec::from_slice(shape).unwrap(),
        scale: 0.05,
        zero_point,
        arena_offset: 0,
        kind,
    };
    for case in 0..400usize {
        let batch = 1 + case % 3;
        let k = [1, 2, 7, 15, 16, 17, 31, 32, 33, 64][case % 10];
        let m = 1 + (rng.next() % 24) as usize;
        let n = 1 + (rng.next() % 12) as usize;
        let mut b = BlobBuilder::new();
        let layer = |b: &mut BlobBuilder, rng: &mut Lcg, inputs: usize, outputs: usize| {
            let w = rng.vec_i8(inputs * outputs);
            let bias: Vec<i32> = (0..outputs).map(|_| rng.range(-5000, 5000)).collect();
            let per_channel = !rng.one_in(3);
            let rq: Vec<(i32, i32)> = (0..if per_channel { outputs } else { 1 })
                .map(|_| quantize_multiplier(0.0005 + (rng.next() % 1000) as f64 * 1e-5))
                .collect();
            let bias = (!rng.one_in(4)).then(|| b.push_i32(&bias).unwrap());
            (
                Weights::dense(b.push_i8(&w).unwrap()),
                bias,
                b.push_requant(&rq).unwrap(),
            )
        };
        let l1 = layer(&mut b, &mut rng, k, m);
        let l2 = layer(&mut b, &mut rng, m, n);
        let fc = |input, output, (weights, bias, requant), relu: bool| {
            Op::FullyConnected(FullyConnected {
                input,
                output,
                weights,
                bias,
                requant,
                act_min: if relu { -20 } else { -128 },
                act_max: 127,
            })
        };
        let (b32, k32, m32, n32) = (batch as u32, k as u32, m as u32, n as u32);
        let mut graph = GraphDef {
            tensors: vec![
                tensor(&[b32, k32], rng.range(-128, 127), TensorKind::Input),
                tensor(&[b32, m32], rng.range(-128, 127), TensorKind::Activation),
                tensor(&[b32, n32], rng.range(-128, 127), TensorKind::Output),
            ],
            ops: vec![fc(0, 1, l1, true), fc(1, 2, l2, false)],
            input: 0,
            output: 2,
            arena_size: 0,
        };
        graph.plan_arena().unwrap();
        let blob = b.finish(&graph).unwrap();
        let model = Model::from_bytes(&blob).unwrap();
        let mut arena = vec![0u8; model.arena_size()];
        for _ in 0..4 {
            let input = rng.vec_i8(batch * k);
            let outs = each_path(|| {
                let mut out = vec![0i8; batch * n];
                model.run(&mut arena, &input, &mut out).unwrap();
                out
            });
            assert!(
                outs.windows(2).all(|w| w[0] == w[1]),
                "batch {batch} k {k} m {m} n {n}"
            );
        }
    }
}

/// `binary_conv2d` and the reference on the same random filter, thresholds and input
/// (mostly ±1, as a binary layer feeds the next; a third of the time any int8 with any
/// zero point): `(fast, slow)`.
fn binary_conv2d_both(g: &ConvGeometry, seed: u64) -> (Vec<i8>, Vec<i8>) {
    let mut rng = Lcg::new(seed);
    let (in_len, out_len) = lens(g);
    let any = rng.one_in(3);
    let input: Vec<i8> = (0..in_len)
        .map(|_| {
            if any {
                rng.i8()
            } else if rng.one_in(2) {
                1
            } else {
                -1
            }
        })
        .collect();
    let zero_point = if any { rng.range(-128, 127) } else { 0 };
    let window = g.kernel_h * g.kernel_w * g.in_c;
    let filter = low_bit(&mut rng, g.out_c * window, Encoding::Packed1);
    let bytes = packed::encode(&filter, g.out_c, Encoding::Packed1).unwrap();
    let rows = PackedRows::new(&bytes, g.out_c, window, Encoding::Packed1).unwrap();
    let w = window as i32;
    let thresholds: Vec<i32> = (0..g.out_c).map(|_| rng.range(-w - 1, w + 1)).collect();
    let t_bytes: Vec<u8> = thresholds.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut slow = vec![0i8; out_len];
    reference::binary_conv2d(g, zero_point, &thresholds, &filter, &input, &mut slow);
    let run = |input: SignInput<'_>| {
        signs_both_ways(out_len, |output| {
            binary_conv2d(g, &t_bytes, &rows, input, output)
        })
    };
    let fast = run(SignInput::Int8 {
        values: &input,
        zero_point,
    });
    let bits = to_bits(&input, zero_point);
    assert_eq!(run(SignInput::Bits(&bits)), fast, "packed-bit input");
    (fast, slow)
}

/// `values` as packed bits (`+1` where at least `zero_point`), as a binary op writes them:
/// the layout of one `Packed1` row.
fn to_bits(values: &[i8], zero_point: i32) -> Vec<u8> {
    let signs: Vec<i8> = values
        .iter()
        .map(|&v| if i32::from(v) >= zero_point { 1 } else { -1 })
        .collect();
    packed::encode(&signs, 1, Encoding::Packed1).unwrap()
}

/// The first `n` of packed bits as `±1` (the spare bits of the last byte ignored).
fn from_bits(bytes: &[u8], n: usize) -> Vec<i8> {
    let mut values = vec![0i8; n];
    packed::unpack_range(bytes, 1, 0, &mut values);
    values
}

/// A binary kernel's `n` outputs written by `run` as int8 and as packed bits (into
/// bytes full of ones and zeros beforehand, so stale bits would show), asserted equal;
/// the int8 ones.
fn signs_both_ways(
    n: usize,
    run: impl Fn(SignOutput<'_>) -> Result<(), sprig_runtime::Error>,
) -> Vec<i8> {
    let mut values = vec![0i8; n];
    run(SignOutput::Int8(&mut values)).unwrap();
    for fill in [0x00u8, 0xFF, 0xA5] {
        let mut bytes = vec![fill; n.div_ceil(8)];
        run(SignOutput::Bits(&mut bytes)).unwrap();
        assert_eq!(from_bits(&bytes, n), values, "packed-bit output");
    }
    values
}

/// Input rows too wide for the binary conv's band of packed rows (3 · 100·60 bits
/// here) take the window-by-window path, with the same results.
#[test]
fn binary_conv2d_wide_rows_match_reference() {
    let mut rng = Lcg::new(12);
    let g = ConvGeometry {
        batch: 1,
        in_h: 4,
        in_w: 100,
        in_c: 60,
        out_h: 4,
        out_w: 100,
        out_c: 5,
        kernel_h: 3,
        kernel_w: 3,
        stride_h: 1,
        stride_w: 1,
        pad_top: 1,
        pad_left: 1,
    };
    let (in_len, out_len) = lens(&g);
    let input = rng.vec_i8(in_len);
    let filter = low_bit(&mut rng, g.out_c * 9 * g.in_c, Encoding::Packed1);
    let bytes = packed::encode(&filter, g.out_c, Encoding::Packed1).unwrap();
    let rows = PackedRows::new(&bytes, g.out_c, 9 * g.in_c, Encoding::Packed1).unwrap();
    let thresholds: Vec<i32> = (0..g.out_c).map(|_| rng.range(-40, 40)).collect();
    let t_bytes: Vec<u8> = thresholds.iter().flat_map(|t| t.to_le_bytes()).collect();
    let mut slow = vec![0i8; out_len];
    reference::binary_conv2d(&g, 3, &thresholds, &filter, &input, &mut slow);
    let run = |input: SignInput<'_>| {
        signs_both_ways(out_len, |output| {
            binary_conv2d(&g, &t_bytes, &rows, input, output)
        })
    };
    let fast = run(SignInput::Int8 {
        values: &input,
        zero_point: 3,
    });
    assert_eq!(fast, slow);
    assert_eq!(run(SignInput::Bits(&to_bits(&input, 3))), slow);
    assert!(fast.contains(&1) && fast.contains(&-1));
}
