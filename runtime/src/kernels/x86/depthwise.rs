//! Depthwise conv, by shape:
//!
//! - one input channel (speech's 10×8 kernel, person_detect's first layer): every output
//!   channel reads the same window, so it is a conv and goes through the GEMM;
//! - depth multiplier 1 with small windows (MobileNet): two taps of sixteen channels per
//!   `vpmaddwd`, and at eight channels and stride 1, two neighbouring pixels per vector;
//! - anything else: eight output channels per `i32` vector (`vpmulld`), up to 32 per
//!   pass over a pixel's window. Output channel `c·dm + m` reads input channel `c`, so
//!   each vector loads the (at most eight) input channels it needs and spreads them with
//!   one lane permute.

use core::arch::x86_64::*;

use super::gemm::conv_avx2;
use super::requant::{bytes8, Finish, Quant8};
use super::{put, scratch};
use crate::error::Error;
use crate::kernels::{small_offset, ConvGeometry, OutputStage};

/// Output channels per pass over a window: four vectors of accumulators.
const PASS: usize = 4;

/// Largest window (`kernel_h · kernel_w`) of the paired-tap path.
const MAX_TAPS: usize = 64;

/// AVX2 depthwise conv (arguments checked by the caller), or `None` without AVX2.
pub(crate) fn depthwise_conv2d(
    g: &ConvGeometry,
    depth_multiplier: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Option<Result<(), Error>> {
    if !super::avx2() {
        return None;
    }
    let taps = g.kernel_h * g.kernel_w;
    if let Some(offset) = small_offset(input_offset).filter(|_| g.in_c == 1) {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked just above).
        return Some(unsafe { one_channel(g, offset, stage, filter, input, output) });
    }
    if let Some(offset) =
        small_offset(input_offset).filter(|_| depth_multiplier == 1 && taps <= MAX_TAPS)
    {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked just above).
        return Some(unsafe { depthwise_pairs(g, offset, stage, filter, input, output) });
    }
    #[allow(unsafe_code)]
    // SAFETY: the CPU has AVX2 (checked just above).
    Some(unsafe {
        any_multiplier(
            g,
            depth_multiplier,
            input_offset,
            stage,
            filter,
            input,
            output,
        )
    })
}

/// One input channel: every output channel reads the same window, so this is a conv
/// with `depth_multiplier` filters; its filter is this one transposed from
/// `[KH, KW, OC]` to `[OC, KH, KW]` (a few hundred bytes, once per call).
#[target_feature(enable = "avx2")]
fn one_channel(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let (taps, oc) = (g.kernel_h * g.kernel_w, g.out_c);
    scratch::<i8, 1024, _>(taps * oc, 0, |conv_filter| {
        for (tap, row) in filter.chunks_exact(oc).enumerate() {
            for (m, &w) in row.iter().enumerate() {
                if let Some(d) = conv_filter.get_mut(m * taps + tap) {
                    *d = w;
                }
            }
        }
        conv_avx2(g, offset, stage, conv_filter, input, output)
    })
}

/// Depth multiplier 1 with `vpmaddwd`: two taps of sixteen channels at a time, their
/// inputs and weights interleaved as `i16` pairs, so one instruction does sixteen
/// multiply-accumulates (the `i32` vector path does eight per two instructions).
#[target_feature(enable = "avx2")]
fn depthwise_pairs(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let c = g.in_c;
    let finish = Finish::new(stage);
    let offset = _mm256_set1_epi16(offset);
    let image_len = g.in_h * g.in_w * c;
    let row_len = g.out_w * c;
    // Eight channels at stride 1: two neighbouring output pixels fill one vector (their
    // inputs are neighbours too), against each tap's weights repeated twice.
    let twin = c == 8 && g.stride_w == 1;
    let doubled_len = if twin {
        g.kernel_h * g.kernel_w * 16
    } else {
        0
    };
    scratch::<i8, 1024, _>(doubled_len, 0, |doubled| {
        for (d, w) in doubled.chunks_exact_mut(16).zip(filter.chunks_exact(8)) {
            for (d, &v) in d.iter_mut().zip(w.iter().chain(w)) {
                *d = v;
            }
        }
        scratch::<Quant8, 16, _>(c.div_ceil(8), Quant8::zero(), |quants| {
            for (e, q) in quants.iter_mut().enumerate() {
                *q = Quant8::load(stage, 8 * e, false);
            }
            let mut buf = [(0usize, 0usize); MAX_TAPS];
            // Taps of a window wholly inside the image, relative to its corner.
            let full = (0, g.kernel_h);
            let relative = |f_stride: usize, buf: &mut [(usize, usize); MAX_TAPS]| {
                let mut n = 0;
                for ky in 0..g.kernel_h {
                    for kx in 0..g.kernel_w {
                        if let Some(t) = buf.get_mut(n) {
                            *t = ((ky * g.in_w + kx) * c, (ky * g.kernel_w + kx) * f_stride);
                            n += 1;
                        }
                    }
                }
                n
            };
            let (mut one, mut two) = ([(0usize, 0usize); MAX_TAPS], [(0usize, 0usize); MAX_TAPS]);
            let n = relative(c, &mut one);
            relative(16, &mut two);
            let (whole_one, whole_twin) =
                (one.get(..n).unwrap_or(&[]), two.get(..n).unwrap_or(&[]));
            let mut rows_out = output.chunks_exact_mut(row_len);
            for image in input.chunks_exact(image_len) {
                for oy in 0..g.out_h {
                    let y0 = oy * g.stride_h;
                    let rows = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
                    let out = rows_out.next().ok_or(Error::KernelArgs)?;
                    let cols_of = |ox: usize| {
                        ConvGeometry::window(ox * g.stride_w, g.pad_left, g.kernel_w, g.in_w)
                    };
                    // A window wholly inside the image: the precomputed taps, relative
                    // to its top-left input pixel.
                    let corner =
                        |ox: usize| ((y0 - g.pad_top) * g.in_w + ox * g.stride_w - g.pad_left) * c;
                    let mut ox = 0;
                    while ox < g.out_w {
                        let cols = cols_of(ox);
                        let whole = (0, g.kernel_w);
                        if twin && ox + 1 < g.out_w && cols == whole && cols_of(ox + 1) == whole {
                            let (base, taps) = if rows == full {
                                (corner(ox), whole_twin)
                            } else {
                                (0, collect(g, (y0, ox), rows, cols, 16, &mut buf))
                            };
                            let [lo, hi] = sum_pairs(image, doubled, taps, (base, 0), offset);
                            if let Some(q) = quants.first() {
                                for (j, acc) in lanes_in_order(lo, hi).into_iter().enumerate() {
                                    let y = bytes8(finish.apply(q, acc));
                                    put(out, (ox + j) * 8, Some(&y));
                                }
                            }
                            ox += 2;
                            continue;
                        }
                        let (base, taps) = if (rows, cols) == (full, whole) {
                            (corner(ox), whole_one)
                        } else {
                            (0, collect(g, (y0, ox), rows, cols, c, &mut buf))
                        };
                        let px = out.get_mut(ox * c..(ox + 1) * c).ok_or(Error::KernelArgs)?;
                        for c0 in (0..c).step_by(16) {
                            let [lo, hi] = sum_pairs(image, filter, taps, (base + c0, c0), offset);
                            for (j, acc) in lanes_in_order(lo, hi).into_iter().enumerate() {
                                let e = c0 / 8 + j;
                                if let Some(q) = quants.get(e) {
                                    let y = bytes8(finish.apply(q, acc));
                                    put(px, 8 * e, y.get(..c.saturating_sub(8 * e).min(8)));
                                }
                            }
                        }
                        ox += 1;
                    }
                }
            }
            Ok(())
        })
    })
}

/// `(input index, filter index)` of each in-bounds tap of output pixel `(oy, ox)` (given
/// as `(y0, ox)`, `y0 = oy · stride_h`), channel 0, filter taps `f_stride` apart.
#[inline]
fn collect<'t>(
    g: &ConvGeometry,
    (y0, ox): (usize, usize),
    rows: (usize, usize),
    cols: (usize, usize),
    f_stride: usize,
    buf: &'t mut [(usize, usize); MAX_TAPS],
) -> &'t [(usize, usize)] {
    let x0 = ox * g.stride_w;
    let mut n = 0;
    for ky in rows.0..rows.1 {
        let iy = y0 + ky - g.pad_top;
        for kx in cols.0..cols.1 {
            let ix = x0 + kx - g.pad_left;
            if let Some(t) = buf.get_mut(n) {
                *t = (
                    (iy * g.in_w + ix) * g.in_c,
                    (ky * g.kernel_w + kx) * f_stride,
                );
                n += 1;
            }
        }
    }
    buf.get(..n).unwrap_or(&[])
}

/// [`sum_pairs`]'s lanes (`lo` holds lanes 0..4 and 8..12 of sixteen, `hi` 4..8 and
/// 12..16) as lanes 0..8 and 8..16.
#[target_feature(enable = "avx2")]
#[inline]
fn lanes_in_order(lo: __m256i, hi: __m256i) -> [__m256i; 2] {
    [
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    ]
}

/// Channels `c0..c0 + 16` summed over `taps` (input indices relative to `at`, which
/// includes `c0`), two taps per `vpmaddwd`: lanes
/// `[0..4, 8..12]` and `[4..8, 12..16]` (the in-lane order of `unpack`).
#[target_feature(enable = "avx2")]
#[inline]
fn sum_pairs(
    image: &[i8],
    filter: &[i8],
    taps: &[(usize, usize)],
    (at, c0): (usize, usize),
    offset: __m256i,
) -> [__m256i; 2] {
    let (mut lo, mut hi) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    let mut pairs = taps.chunks_exact(2);
    for pair in pairs.by_ref() {
        if let &[(p0, f0), (p1, f1)] = pair {
            let x0 = _mm256_add_epi16(load16(image, at + p0), offset);
            let x1 = _mm256_add_epi16(load16(image, at + p1), offset);
            let (w0, w1) = (load16(filter, f0 + c0), load16(filter, f1 + c0));
            lo = _mm256_add_epi32(
                lo,
                _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), _mm256_unpacklo_epi16(w0, w1)),
            );
            hi = _mm256_add_epi32(
                hi,
                _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), _mm256_unpackhi_epi16(w0, w1)),
            );
        }
    }
    if let &[(p0, f0)] = pairs.remainder() {
        // The last tap alone, against a zero weight.
        let x0 = _mm256_add_epi16(load16(image, at + p0), offset);
        let w0 = load16(filter, f0 + c0);
        let z = _mm256_setzero_si256();
        lo = _mm256_add_epi32(
            lo,
            _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, z), _mm256_unpacklo_epi16(w0, z)),
        );
        hi = _mm256_add_epi32(
            hi,
            _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, z), _mm256_unpackhi_epi16(w0, z)),
        );
    }
    [lo, hi]
}

/// `s[at..at + 16]` sign-extended to sixteen `i16` lanes, zeros past the end of `s`.
#[target_feature(enable = "avx2")]
#[inline]
fn load16(s: &[i8], at: usize) -> __m256i {
    match s
        .get(at..at + 16)
        .and_then(|b| <&[i8; 16]>::try_from(b).ok())
    {
        Some(b) => widen16(b),
        None => load16_tail(s, at),
    }
}

/// [`load16`] near the end of `s`.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx2")]
fn load16_tail(s: &[i8], at: usize) -> __m256i {
    let mut tail = [0i8; 16];
    for (t, &v) in tail.iter_mut().zip(s.get(at..).unwrap_or(&[])) {
        *t = v;
    }
    widen16(&tail)
}

/// Sixteen `i8` sign-extended to `i16` lanes.
#[target_feature(enable = "avx2")]
#[inline]
fn widen16(bytes: &[i8; 16]) -> __m256i {
    #[allow(unsafe_code)]
    // SAFETY: `bytes` is 16 readable bytes; the load is unaligned.
    unsafe {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(bytes.as_ptr().cast()))
    }
}

/// One vector of eight output channels `8e..8e + 8`: its output stage, the first input
/// channel it reads and the lane permute from those input channels to its outputs.
#[derive(Clone, Copy)]
struct Octet {
    quant: Quant8,
    first: usize,
    spread: __m256i,
}

/// Any depth multiplier, window and offset: `i32` lanes, `(x + offset) · w` by `vpmulld`
/// (exact for any offset: products and sums wrap as the reference's do).
#[target_feature(enable = "avx2")]
fn any_multiplier(
    g: &ConvGeometry,
    dm: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let oc = g.out_c;
    let finish = Finish::new(stage);
    let offset = _mm256_set1_epi32(input_offset);
    let image_len = g.in_h * g.in_w * g.in_c;
    let blank = Octet {
        quant: Quant8::zero(),
        first: 0,
        spread: _mm256_setzero_si256(),
    };
    scratch::<Octet, 16, _>(oc.div_ceil(8), blank, |octets| {
        for (e, o) in octets.iter_mut().enumerate() {
            let c = |j: usize| 8 * e + j;
            o.first = c(0) / dm;
            let lane = |j: usize| (c(j) / dm - o.first).min(7) as i32;
            o.spread = _mm256_setr_epi32(
                lane(0),
                lane(1),
                lane(2),
                lane(3),
                lane(4),
                lane(5),
                lane(6),
                lane(7),
            );
            o.quant = Quant8::load(stage, c(0), false);
        }
        let mut pixels = output.chunks_exact_mut(oc);
        for image in input.chunks_exact(image_len) {
            for oy in 0..g.out_h {
                let y0 = oy * g.stride_h;
                let rows = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
                for ox in 0..g.out_w {
                    let x0 = ox * g.stride_w;
                    let cols = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                    let at = Window {
                        g,
                        image,
                        filter,
                        origin: (y0, x0),
                        rows,
                        cols,
                        offset,
                    };
                    let out = pixels.next().ok_or(Error::KernelArgs)?;
                    for (pass, group) in octets.chunks(PASS).enumerate() {
                        let c0 = 8 * PASS * pass;
                        // A const count per pass keeps the accumulators in registers.
                        match *group {
                            [a, b, c, d] => at.pass([a, b, c, d], c0, &finish, out),
                            [a, b, c] => at.pass([a, b, c], c0, &finish, out),
                            [a, b] => at.pass([a, b], c0, &finish, out),
                            [a] => at.pass([a], c0, &finish, out),
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

/// One output pixel's in-bounds window: kernel rows `rows.0..rows.1`, columns
/// `cols.0..cols.1`, the window's top-left corner `origin` in padded coordinates.
struct Window<'g, 'd> {
    g: &'g ConvGeometry,
    image: &'d [i8],
    filter: &'d [i8],
    origin: (usize, usize),
    rows: (usize, usize),
    cols: (usize, usize),
    offset: __m256i,
}

impl Window<'_, '_> {
    /// Accumulators of output channels `c0 + 8j..c0 + 8j + 8` for each `octets[j]`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn sum<const V: usize>(&self, octets: [Octet; V], c0: usize) -> [__m256i; V] {
        let g = self.g;
        let mut acc = [_mm256_setzero_si256(); V];
        for ky in self.rows.0..self.rows.1 {
            let iy = self.origin.0 + ky - g.pad_top;
            for kx in self.cols.0..self.cols.1 {
                let ix = self.origin.1 + kx - g.pad_left;
                let p = (iy * g.in_w + ix) * g.in_c;
                let f = (ky * g.kernel_w + kx) * g.out_c + c0;
                for (j, (a, o)) in acc.iter_mut().zip(&octets).enumerate() {
                    let x = _mm256_permutevar8x32_epi32(load8(self.image, p + o.first), o.spread);
                    let w = load8(self.filter, f + 8 * j);
                    let t = _mm256_mullo_epi32(_mm256_add_epi32(x, self.offset), w);
                    *a = _mm256_add_epi32(*a, t);
                }
            }
        }
        acc
    }

    /// [`Self::sum`], finished into `out[c0..]` (as many channels as `out` has).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn pass<const V: usize>(&self, octets: [Octet; V], c0: usize, f: &Finish, out: &mut [i8]) {
        let acc = self.sum(octets, c0);
        for (j, (a, o)) in acc.into_iter().zip(&octets).enumerate() {
            let y = bytes8(f.apply(&o.quant, a));
            let c = c0 + 8 * j;
            put(out, c, y.get(..out.len().saturating_sub(c).min(8)));
        }
    }
}

/// `s[at..at + 8]` sign-extended to eight `i32` lanes, zeros past the end of `s`.
#[target_feature(enable = "avx2")]
#[inline]
fn load8(s: &[i8], at: usize) -> __m256i {
    match s.get(at..at + 8).and_then(|b| <&[i8; 8]>::try_from(b).ok()) {
        Some(b) => widen8(b),
        None => load8_tail(s, at),
    }
}

/// [`load8`] near the end of `s`.
#[cold]
#[inline(never)]
#[target_feature(enable = "avx2")]
fn load8_tail(s: &[i8], at: usize) -> __m256i {
    let mut tail = [0i8; 8];
    for (t, &v) in tail.iter_mut().zip(s.get(at..).unwrap_or(&[])) {
        *t = v;
    }
    widen8(&tail)
}

/// Eight `i8` sign-extended to `i32` lanes (Add uses it too).
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn widen8(bytes: &[i8; 8]) -> __m256i {
    #[allow(unsafe_code)]
    // SAFETY: `bytes` is 8 readable bytes; `_mm_loadl_epi64` reads exactly 8, unaligned.
    unsafe {
        _mm256_cvtepi8_epi32(_mm_loadl_epi64(bytes.as_ptr().cast()))
    }
}
