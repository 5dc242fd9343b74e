//! Small fully connected ops prepared once per model, when it is loaded on an AVX2
//! host: TensorFlow Lite Micro's `Prepare` step, for the ops whose run time is mostly
//! per-call setup (the sine model: 288 MACs in three ops).
//!
//! A prepared op keeps its arena ranges, its weight rows zero-padded to whole chunks of
//! sixteen in groups of eight rows (zero rows past the last output), and its output
//! stage decoded into vectors, eight channels per group. Running it is then the input
//! vectors, eight `vpmaddwd` per chunk, one horizontal sum and one vector output stage
//! per eight outputs: no lookups, no lengths to check per row, no partial windows.
//! One row of at most sixteen inputs (the sine model's ops) has its own layout,
//! `Narrow`, with no horizontal sums on the path from one op to the next. Same
//! arithmetic as `gemm`'s (see the module docs of `x86`), so the same bytes.
//!
//! `Model::run_in_arena` hands the whole op loop to [`Plan::run_ops`], which is not
//! generic, so it is compiled optimized with this crate even when the caller is built
//! with a debug profile (`cargo xtask` is). `set_enabled(false)` turns the plan off
//! with the rest of the fast path.
//!
//! Host memory only (this module is built with `std` on x86_64): firmware models carry
//! no plan.

use core::arch::x86_64::*;
use core::fmt;
use core::ops::Range;
use std::vec::Vec;

use super::gemm::{hsum8, load_w};
use super::requant::{bytes8, Finish, Quant8};
use super::{avx2, put};
use crate::arena::split;
use crate::error::Error;
use crate::kernels::fully_connected::FcShape;
use crate::kernels::{small_offset, OutputStage};

/// Inputs per vector (`i16` lanes).
const CHUNK: usize = 16;

/// Weights up to which an op is prepared: larger ops amortize their setup anyway, and
/// the copy would only cost memory.
const MAX_WEIGHTS: usize = 16 * 1024;

/// How [`Plan::run_ops`] runs an op it has not prepared: `exec(i, arena)`.
pub(crate) type Exec<'e> = dyn FnMut(usize, &mut [u8]) -> Result<(), Error> + 'e;

/// The prepared ops of a model, by op index (empty without AVX2).
#[derive(Clone, Default)]
pub(crate) struct Plan {
    ops: Vec<Option<PreparedFc>>,
}

impl fmt::Debug for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prepared = self.ops.iter().filter(|p| p.is_some()).count();
        f.debug_struct("Plan")
            .field("prepared_ops", &prepared)
            .finish()
    }
}

/// What a fully connected op needs, as the dispatch resolves it.
pub(crate) struct FcParts<'a> {
    pub shape: FcShape,
    pub input_offset: i32,
    pub stage: OutputStage<'a>,
    pub weights: &'a [i8],
    pub input: Range<usize>,
    pub output: Range<usize>,
}

impl Plan {
    /// Prepares every op `parts(i)` describes (a fully connected op small enough),
    /// if the CPU has AVX2; the others, and every op without AVX2, run as before.
    pub(crate) fn new<'a>(ops: usize, mut parts: impl FnMut(usize) -> Option<FcParts<'a>>) -> Self {
        if !std::is_x86_feature_detected!("avx2") {
            return Plan::default();
        }
        let ops: Vec<Option<PreparedFc>> = (0..ops)
            .map(|i| {
                let p = parts(i)?;
                #[allow(unsafe_code)]
                // SAFETY: the CPU has AVX2 (checked above).
                unsafe {
                    PreparedFc::new(&p)
                }
            })
            .collect();
        if ops.iter().all(Option::is_none) {
            return Plan::default();
        }
        Plan { ops }
    }

    /// Runs ops `0..ops` on `arena` in order: the prepared ones here (if this thread
    /// may take the AVX2 kernels, `set_enabled`), the others with `exec(i, arena)`.
    ///
    /// Not generic (unlike `Model::run_in_arena`), so the loop over a small model is
    /// compiled, optimized, with this crate, whatever profile builds the caller.
    #[inline(never)]
    pub(crate) fn run_ops(
        &self,
        ops: usize,
        arena: &mut [u8],
        exec: &mut Exec<'_>,
    ) -> Result<(), Error> {
        let fast = avx2();
        for i in 0..ops {
            match self.ops.get(i) {
                Some(Some(p)) if fast => p.run_in(arena)?,
                _ => exec(i, arena)?,
            }
        }
        Ok(())
    }
}

/// A fully connected op ready to run (see the module docs).
#[derive(Clone)]
pub(crate) struct PreparedFc {
    /// Arena bytes of the input and the output.
    input: Range<usize>,
    output: Range<usize>,
    batch: usize,
    k: usize,
    n: usize,
    offset: i16,
    /// Chunks per weight row.
    chunks: usize,
    /// Weight rows of `chunks` chunks, eight rows per group (empty for a narrow op).
    weights: Vec<[i8; CHUNK]>,
    /// The output stage of each group of eight channels.
    quant: Vec<Quant8>,
    finish: Finish,
    /// One row of at most sixteen inputs: the layout the sine model's ops run from.
    narrow: Option<Narrow>,
}

/// A fully connected op over one row of `k ≤ 16` inputs, laid out so that each group's
/// eight sums land in their own lanes (no horizontal sums on the way from the input to
/// the output, which the next op waits for): for each pair `p` of inputs, a vector of
/// the eight channels' weight pairs `(w[o, 2p], w[o, 2p + 1])`, multiplied with the
/// input pair broadcast to every lane. The input offset is folded into the bias,
/// `bias + offset · Σ w` (equal modulo 2^32, so the same accumulator), so the inputs
/// go in as they are.
#[derive(Clone)]
struct Narrow {
    /// Input pairs, `⌈k / 2⌉`.
    pairs: usize,
    /// `pairs` vectors per group of eight channels.
    weights: Vec<__m256i>,
    /// The groups' output stages, with the folded biases.
    quant: Vec<Quant8>,
}

impl PreparedFc {
    /// Checks the parts as the kernel would (`None`: leave the op to the kernel) and
    /// lays them out.
    #[target_feature(enable = "avx2")]
    fn new(p: &FcParts<'_>) -> Option<Self> {
        let FcShape {
            batch,
            in_features: k,
            out_features: n,
        } = p.shape;
        let offset = small_offset(p.input_offset)?;
        let fits = batch > 0
            && k > 0
            && n > 0
            && n.checked_mul(k)? == p.weights.len()
            && p.weights.len() <= MAX_WEIGHTS
            && p.stage.channels == n
            && p.stage.check().is_ok()
            && batch.checked_mul(k)? == p.input.len()
            && batch.checked_mul(n)? == p.output.len();
        if !fits {
            return None;
        }
        let chunks = k.div_ceil(CHUNK);
        let groups = n.div_ceil(8);
        let mut quant = Vec::with_capacity(groups);
        for g in 0..groups {
            quant.push(Quant8::load(&p.stage, 8 * g, false));
        }
        let narrow =
            (batch == 1 && k <= CHUNK).then(|| Narrow::new(p.weights, k, n, offset, &quant));
        // The padded rows serve the general path only (a narrow op runs from its own).
        let mut weights = Vec::new();
        if narrow.is_none() {
            weights = std::vec![[0i8; CHUNK]; groups * 8 * chunks];
            for (row, src) in weights
                .chunks_exact_mut(chunks)
                .zip(p.weights.chunks_exact(k))
            {
                for (dst, src) in row.iter_mut().zip(src.chunks(CHUNK)) {
                    for (d, &s) in dst.iter_mut().zip(src) {
                        *d = s;
                    }
                }
            }
        }
        Some(PreparedFc {
            narrow,
            input: p.input.clone(),
            output: p.output.clone(),
            batch,
            k,
            n,
            offset,
            chunks,
            weights,
            quant,
            finish: Finish::new(&p.stage),
        })
    }

    /// Runs the op on its bytes of `arena`.
    #[inline]
    fn run_in(&self, arena: &mut [u8]) -> Result<(), Error> {
        // The output lies after or before the input (validated; checked again).
        match split(arena, &self.input, &self.input, &self.output) {
            Some((input, _, output)) => self.run(input, output),
            None => Err(Error::KernelArgs),
        }
    }

    /// Runs the op on its input and output bytes.
    #[inline]
    fn run(&self, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        #[allow(unsafe_code)]
        // SAFETY: only `Plan::run_ops` runs a `PreparedFc`, after checking that the CPU
        // has AVX2 (`avx2()`); `Plan::new` builds none without it.
        unsafe {
            if let Some(narrow) = &self.narrow {
                self.run_narrow(narrow, input, output)
            } else {
                self.run_avx2(input, output)
            }
        }
    }

    /// [`Self::run_avx2`] for one row of at most sixteen inputs, from [`Narrow`].
    #[target_feature(enable = "avx2")]
    fn run_narrow(&self, t: &Narrow, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        if input.len() != self.k || output.len() != self.n {
            return Err(Error::KernelArgs);
        }
        // The inputs on sixteen `i16` lanes, zero past `k` (read as two words: bytes
        // the previous op stored eight at a time would stall one sixteen-byte load).
        let (lo, hi) = input.split_at(input.len().min(8));
        let x = _mm256_cvtepi8_epi16(_mm_set_epi64x(word(hi), word(lo)));
        for (g, q) in t.quant.iter().enumerate() {
            let w = t
                .weights
                .get(g * t.pairs..(g + 1) * t.pairs)
                .ok_or(Error::KernelArgs)?;
            let mut acc = _mm256_setzero_si256();
            for (p, &w) in w.iter().enumerate() {
                let pair = _mm256_permutevar8x32_epi32(x, _mm256_set1_epi32(p as i32));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pair, w));
            }
            self.store(output, 8 * g, q, acc);
        }
        Ok(())
    }

    #[target_feature(enable = "avx2")]
    fn run_avx2(&self, input: &[i8], output: &mut [i8]) -> Result<(), Error> {
        let (k, n, chunks) = (self.k, self.n, self.chunks);
        if input.len() != self.batch * k || output.len() != self.batch * n {
            return Err(Error::KernelArgs);
        }
        let off = _mm256_set1_epi16(self.offset);
        for b in 0..self.batch {
            let x = input.get(b * k..b * k + k).ok_or(Error::KernelArgs)?;
            let y = output.get_mut(b * n..b * n + n).ok_or(Error::KernelArgs)?;
            if chunks == 1 {
                // One input vector against every group of eight rows.
                let xv = input_chunk(x, off);
                let (groups, _) = self.weights.as_chunks::<8>();
                for (g, (rows, q)) in groups.iter().zip(&self.quant).enumerate() {
                    let mut a = [_mm256_setzero_si256(); 8];
                    for (acc, w) in a.iter_mut().zip(rows) {
                        *acc = _mm256_madd_epi16(xv, load_w(w));
                    }
                    self.store(y, 8 * g, q, hsum8(a));
                }
                continue;
            }
            for (g, q) in self.quant.iter().enumerate() {
                let rows = self
                    .weights
                    .get(8 * g * chunks..8 * (g + 1) * chunks)
                    .ok_or(Error::KernelArgs)?;
                let mut a = [_mm256_setzero_si256(); 8];
                for c in 0..chunks {
                    let xv = input_chunk(x.get(c * CHUNK..).unwrap_or(&[]), off);
                    for (j, acc) in a.iter_mut().enumerate() {
                        if let Some(w) = rows.get(j * chunks + c) {
                            *acc = _mm256_add_epi32(*acc, _mm256_madd_epi16(xv, load_w(w)));
                        }
                    }
                }
                self.store(y, 8 * g, q, hsum8(a));
            }
        }
        Ok(())
    }

    /// Outputs `o..o + 8` (those there are) from their sums.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store(&self, y: &mut [i8], o: usize, q: &Quant8, sums: __m256i) {
        let v = bytes8(self.finish.apply(q, sums));
        match y.get_mut(o..o + 8).map(<&mut [i8; 8]>::try_from) {
            Some(Ok(d)) => *d = v,
            _ => put(y, o, v.get(..self.n.saturating_sub(o).min(8))),
        }
    }
}

impl Narrow {
    /// The layout of `n` rows of `k ≤ 16` weights, with `quant` (one per group of
    /// eight channels) given the folded biases.
    #[target_feature(enable = "avx2")]
    fn new(weights: &[i8], k: usize, n: usize, offset: i16, quant: &[Quant8]) -> Self {
        let pairs = k.div_ceil(2);
        let w = |o: usize, i: usize| -> i32 {
            match weights.get(o * k + i) {
                Some(&v) if o < n && i < k => i32::from(v),
                _ => 0,
            }
        };
        let mut vectors = Vec::with_capacity(quant.len() * pairs);
        let mut folded = Vec::with_capacity(quant.len());
        for (g, q) in quant.iter().enumerate() {
            for p in 0..pairs {
                let lanes: [i32; 8] = core::array::from_fn(|j| {
                    let o = 8 * g + j;
                    let (a, b) = (w(o, 2 * p), w(o, 2 * p + 1));
                    (a & 0xffff) | (b << 16)
                });
                vectors.push(lanes_of(lanes));
            }
            // `offset · Σ w` of each channel, added to its bias (wrapping, as the
            // kernels add the bias).
            let sums: [i32; 8] = core::array::from_fn(|j| {
                let o = 8 * g + j;
                (0..k).fold(0i32, |s, i| s.wrapping_add(w(o, i)))
            });
            let extra = lanes_of(sums.map(|s| s.wrapping_mul(i32::from(offset))));
            folded.push(q.with_bias(_mm256_add_epi32(q.bias(), extra)));
        }
        Narrow {
            pairs,
            weights: vectors,
            quant: folded,
        }
    }
}

/// Eight `i32` as a vector.
#[target_feature(enable = "avx2")]
#[inline]
fn lanes_of(v: [i32; 8]) -> __m256i {
    let [a, b, c, d, e, f, g, h] = v;
    _mm256_setr_epi32(a, b, c, d, e, f, g, h)
}

/// The first sixteen of `x` (fewer: zeros after) as `x + offset` on sixteen `i16`
/// lanes, zero past `x`. Read as two words (bytes the previous op stored eight at a
/// time would stall one sixteen-byte load).
#[target_feature(enable = "avx2")]
#[inline]
fn input_chunk(x: &[i8], off: __m256i) -> __m256i {
    let (lo, hi) = x.split_at(x.len().min(8));
    let v = _mm256_cvtepi8_epi16(_mm_set_epi64x(word(hi), word(lo)));
    let v = _mm256_add_epi16(v, off);
    if x.len() >= CHUNK {
        return v;
    }
    let lanes = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let live = _mm256_cmpgt_epi16(_mm256_set1_epi16(x.len() as i16), lanes);
    _mm256_and_si256(v, live)
}

/// The first eight bytes of `bytes` (fewer: zeros after) as a little-endian word.
#[inline]
fn word(bytes: &[i8]) -> i64 {
    match bytes.first_chunk::<8>() {
        Some(&w) => i64::from_le_bytes(w.map(|b| b as u8)),
        None => {
            let mut v = 0u64;
            for (i, &b) in bytes.iter().enumerate().take(8) {
                v |= u64::from(b as u8) << (8 * i);
            }
            v as i64
        }
    }
}
