//! The fused conv + max pool writing over its own input (format 2.6, FORMAT.md §4):
//! for random geometries and encodings, the pooled output placed at the least
//! distance before or after the input loads and computes exactly what the unfused
//! conv then pool compute; one byte closer is refused. The distances are worked out
//! here from the rows each pool row reads, independently of the runtime. With sparse
//! filters, the fused kernel the model's exact op set names is the one it loads with.

mod common;

use common::{requant, tensor, Lcg};
use proptest::prelude::*;
use sprig_runtime::format::write::{BlobBuilder, GraphDef};
use sprig_runtime::model::kernels_in;
use sprig_runtime::{
    Conv2d, Encoding, Error, FusedSparseKernel, Kernel, Model, Op, Padding, Pool2d, TensorKind,
    ALL_OPS,
};

#[derive(Debug, Clone, Copy)]
struct Case {
    h: u32,
    w: u32,
    c: u32,
    oc: u32,
    kernel: u32,
    stride: u32,
    pad: (u32, u32),
    pool: u32,
    pool_stride: u32,
    pool_pad: (u32, u32),
    encoding: Encoding,
    seed: u64,
}

fn out_size(n: u32, k: u32, s: u32, (a, b): (u32, u32)) -> Option<u32> {
    (n + a + b).checked_sub(k).map(|span| span / s + 1)
}

impl Case {
    fn conv_h(&self) -> Option<u32> {
        out_size(self.h, self.kernel, self.stride, self.pad)
    }
    fn conv_w(&self) -> Option<u32> {
        out_size(self.w, self.kernel, self.stride, self.pad)
    }
    fn pooled(&self) -> Option<(u32, u32)> {
        let ph = out_size(self.conv_h()?, self.pool, self.pool_stride, self.pool_pad)?;
        let pw = out_size(self.conv_w()?, self.pool, self.pool_stride, self.pool_pad)?;
        Some((ph, pw))
    }

    /// Input rows `first..last` pool row `r` reads.
    fn rows_read(&self, r: u32) -> (u32, u32) {
        let conv_h = self.conv_h().unwrap();
        let c0 = (r * self.pool_stride).saturating_sub(self.pool_pad.0);
        let c1 = (r * self.pool_stride + self.pool).saturating_sub(self.pool_pad.0);
        let c1 = c1.min(conv_h);
        let first = (c0 * self.stride).saturating_sub(self.pad.0);
        let last = ((c1 - 1) * self.stride + self.kernel).saturating_sub(self.pad.0);
        (first, last.min(self.h))
    }

    /// Least bytes the pooled output may start before the input, and after it.
    fn lags(&self) -> (u32, u32) {
        let (ph, pw) = self.pooled().unwrap();
        let (row_in, row_out) = (self.w * self.c, pw * self.oc);
        let (mut before, mut after) = (0u32, 1u32);
        for r in 0..ph {
            let (first, last) = self.rows_read(r);
            before = before.max(((r + 1) * row_out).saturating_sub(first * row_in));
            after = after.max((last * row_in).saturating_sub(r * row_out));
        }
        (before, after)
    }

    /// The unfused graph (conv, then max pool into the graph output), planned, and
    /// its builder.
    fn build(&self) -> (GraphDef, BlobBuilder) {
        let mut rng = Lcg::new(self.seed);
        let window = (self.kernel * self.kernel * self.c) as usize;
        let oc = self.oc as usize;
        let weights: Vec<i8> = (0..window * oc)
            .map(|_| match self.encoding {
                Encoding::Packed4 => rng.range(-8, 7) as i8,
                Encoding::SparseRel8 if !rng.one_in(3) => 0,
                _ => rng.i8(),
            })
            .collect();
        let bias: Vec<i32> = (0..oc).map(|_| rng.range(-300, 300)).collect();
        let scales: Vec<f32> = (0..oc).map(|k| 0.01 + 0.005 * k as f32).collect();
        let mut builder = BlobBuilder::new();
        let filter = builder
            .push_weights_as(&weights, oc, self.encoding)
            .unwrap();
        let bias = builder.push_i32(&bias).unwrap();
        let rq = builder.push_requant(&requant(0.05, &scales, 0.1)).unwrap();
        let (conv_h, conv_w) = (self.conv_h().unwrap(), self.conv_w().unwrap());
        let (ph, pw) = self.pooled().unwrap();
        let tensors = vec![
            tensor(&[1, self.h, self.w, self.c], 0.05, -3, TensorKind::Input),
            tensor(
                &[1, conv_h, conv_w, self.oc],
                0.1,
                -20,
                TensorKind::Activation,
            ),
            tensor(&[1, ph, pw, self.oc], 0.1, -20, TensorKind::Output),
        ];
        let pad = |(a, b): (u32, u32)| Padding {
            top: a,
            left: a,
            bottom: b,
            right: b,
        };
        let ops = vec![
            Op::Conv2d(Conv2d {
                input: 0,
                output: 1,
                filter,
                bias: Some(bias),
                requant: rq,
                kernel_h: self.kernel,
                kernel_w: self.kernel,
                stride_h: self.stride,
                stride_w: self.stride,
                padding: pad(self.pad),
                act_min: -20,
                act_max: 127,
            }),
            Op::MaxPool2d(Pool2d {
                input: 1,
                output: 2,
                filter_h: self.pool,
                filter_w: self.pool,
                stride_h: self.pool_stride,
                stride_w: self.pool_stride,
                padding: pad(self.pool_pad),
                act_min: -128,
                act_max: 127,
            }),
        ];
        let mut graph = GraphDef {
            tensors,
            ops,
            input: 0,
            output: 2,
            arena_size: 0,
        };
        graph.plan_arena().unwrap();
        (graph, builder)
    }
}

fn case() -> impl Strategy<Value = Case> {
    let encodings = prop::sample::select(vec![
        Encoding::Dense,
        Encoding::SparseRel8,
        Encoding::Packed4,
    ]);
    (
        (3u32..14, 3u32..14, 1u32..5, 1u32..9),
        (1u32..6, 1u32..3, 0u32..5, 0u32..5),
        (1u32..4, 1u32..4, 0u32..3, 0u32..3),
        (encodings, any::<u64>()),
    )
        .prop_map(
            |((h, w, c, oc), (k, s, pt, pb), (p, ps, ppt, ppb), (encoding, seed))| Case {
                h,
                w,
                c,
                oc,
                kernel: k,
                stride: s,
                pad: (pt % k, pb % k),
                pool: p,
                pool_stride: ps,
                pool_pad: (ppt % p, ppb % p),
                encoding,
                seed,
            },
        )
        .prop_filter("both outputs nonempty", |c| {
            c.kernel <= c.h + c.pad.0 + c.pad.1
                && c.kernel <= c.w + c.pad.0 + c.pad.1
                && c.pooled().is_some()
        })
}

fn load_and_run(graph: &GraphDef, builder: &BlobBuilder, input: &[i8]) -> Result<Vec<i8>, Error> {
    load_and_run_in::<ALL_OPS>(graph, builder, input)
}

/// [`load_and_run`] with a `Model` of op set `SET`.
fn load_and_run_in<const SET: sprig_runtime::OpSet>(
    graph: &GraphDef,
    builder: &BlobBuilder,
    input: &[i8],
) -> Result<Vec<i8>, Error> {
    let blob = builder.finish(graph).unwrap();
    let model = Model::<64, 64, SET>::parse(&blob)?;
    let mut arena = vec![0u8; model.arena_size()];
    let mut output = vec![0i8; model.output_len()];
    model.run(&mut arena, input, &mut output)?;
    Ok(output)
}

/// The fused graph with its pooled output (tensor 1) `lag` bytes before its input
/// (tensor 0) or after it.
fn placed(fused: &GraphDef, forward: bool, lag: u32) -> GraphDef {
    let mut g = fused.clone();
    let (x, y) = (g.tensors[0].bytes().unwrap(), g.tensors[1].bytes().unwrap());
    let (ox, oy) = if forward { (lag, 0) } else { (0, lag) };
    g.tensors[0].arena_offset = ox;
    g.tensors[1].arena_offset = oy;
    g.arena_size = (ox + x).max(oy + y);
    g
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fused_over_its_input_is_bit_exact_at_the_least_lag(c in case()) {
        let (unfused, builder) = c.build();
        let mut fused = unfused.clone();
        prop_assert_eq!(fused.fuse_conv_max_pools(), 1);
        fused.plan_arena().unwrap();
        let input = Lcg::new(c.seed ^ 1).vec_i8((c.h * c.w * c.c) as usize);
        let expected = load_and_run(&unfused, &builder, &input).unwrap();
        prop_assert_eq!(&load_and_run(&fused, &builder, &input).unwrap(), &expected);

        // The planner takes the narrower of the two placements (lags 4-byte aligned).
        let (before, after) = c.lags();
        let (x, y) = (fused.tensors[0].bytes().unwrap(), fused.tensors[1].bytes().unwrap());
        let align = |v: u32| v.next_multiple_of(4);
        let narrowest = (align(before) + x).max(y).min((align(after) + y).max(x));
        prop_assert_eq!(fused.arena_size, narrowest);

        // With sparse filters, a set naming only the kernel the model's exact set names
        // runs it (strips and all) bit-exact; a set naming another refuses it.
        if c.encoding == Encoding::SparseRel8 {
            let blob = builder.finish(&fused).unwrap();
            let used = Model::from_bytes(&blob).unwrap().op_set_used().unwrap();
            let named: Vec<Kernel> = kernels_in(used).collect();
            prop_assert_eq!(named.len(), 1);
            let Kernel::FusedSparse(kernel) = named[0] else {
                panic!("{named:?}")
            };
            let runs = [
                load_and_run_in::<{ ALL_OPS | FusedSparseKernel::Windows.bit() }>,
                load_and_run_in::<{ ALL_OPS | FusedSparseKernel::Rows.bit() }>,
                load_and_run_in::<{ ALL_OPS | FusedSparseKernel::Pixels.bit() }>,
            ];
            for (only, run) in FusedSparseKernel::ALL.into_iter().zip(runs) {
                let got = run(&fused, &builder, &input);
                match only == kernel {
                    true => prop_assert_eq!(&got.unwrap(), &expected),
                    false => prop_assert_eq!(
                        got.unwrap_err(),
                        Error::KernelNotInSet { op: 0, bit: kernel.bit().trailing_zeros() }
                    ),
                }
            }
        }

        for (forward, lag) in [(true, before), (false, after)] {
            let at = placed(&fused, forward, lag);
            prop_assert_eq!(&load_and_run(&at, &builder, &input).unwrap(), &expected);
            // One byte closer, a pool row overwrites an input row still to be read.
            let closer = placed(&fused, forward, lag - 1);
            prop_assert_eq!(
                load_and_run(&closer, &builder, &input).unwrap_err(),
                Error::ArenaOverlap { a: 0, b: 1 }
            );
        }
    }
}
