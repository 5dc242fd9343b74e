//! Conv and fully connected as one int8 matrix product: each output pixel's window
//! (a fully connected row) is gathered into an `i16` row with the input offset added,
//! padded with zeros to a multiple of 16 (a pointwise conv's window is just its pixel);
//! filter rows (`[OC, KH·KW·C]`, already the matrix's layout) are read as they are,
//! sign-extended 16 at a time. Registers hold 2 pixels × 4 channels (or 1 pixel × 8
//! channels for a lone row) of 8-lane `vpmaddwd` accumulators, reduced to eight sums at
//! the end, then finished on eight lanes. Fully connected ops over one row (or too
//! small for pairs of rows) go row by row with no scratch at all (`fc_rows`).

use core::arch::x86_64::*;

use super::requant::{bytes8, Finish, Quant8};
use super::{put, scratch};
use crate::error::Error;
use crate::kernels::fully_connected::FcShape;
use crate::kernels::{offset_into, ConvGeometry, OutputStage};

/// Inputs per vector (`i16` lanes).
const CHUNK: usize = 16;

/// Bytes of gathered `i16` rows kept per block of pixels, to stay in L1.
const BLOCK_BYTES: usize = 16 * 1024;

/// AVX2 conv (arguments checked by the caller), or `None` without AVX2.
pub(crate) fn conv2d(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Option<Result<(), Error>> {
    if !super::avx2() {
        return None;
    }
    #[allow(unsafe_code)]
    // SAFETY: the CPU has AVX2 (checked just above).
    Some(unsafe { conv_avx2(g, offset, stage, filter, input, output) })
}

/// AVX2 fully connected (arguments checked by the caller), or `None` without AVX2.
#[inline(always)]
pub(crate) fn fully_connected(
    shape: &FcShape,
    offset: i16,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Option<Result<(), Error>> {
    if !super::avx2() {
        return None;
    }
    let k = shape.in_features;
    if shape.batch == 1 || k * shape.out_features <= TINY_FC {
        #[allow(unsafe_code)]
        // SAFETY: the CPU has AVX2 (checked just above).
        return Some(unsafe {
            if k.is_multiple_of(CHUNK) {
                fc_aligned(shape, offset, stage, weights, input, output)
            } else {
                fc_rows(shape, offset, stage, weights, input, output)
            }
        });
    }
    let gather = |p: usize, row: &mut [i16]| -> Result<(), Error> {
        let src = input.get(p * k..p * k + k).ok_or(Error::KernelArgs)?;
        offset_into(row, src, offset);
        Ok(())
    };
    let (rows, n) = (shape.batch, shape.out_features);
    #[allow(unsafe_code)]
    // SAFETY: the CPU has AVX2 (checked just above).
    Some(unsafe { gemm(rows, k, gather, weights, n, stage, output) })
}

/// Weights up to which a fully connected op over several rows goes row by row too
/// (too few weights for pairs of rows to pay).
const TINY_FC: usize = 256;

/// Fully connected one input row at a time for `k` a multiple of sixteen: weight rows
/// are whole chunks, eight of them against each input chunk (offset on the fly), with
/// no scratch buffers.
#[target_feature(enable = "avx2")]
fn fc_aligned(
    shape: &FcShape,
    offset: i16,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let FcShape {
        batch,
        in_features: k,
        out_features: n,
    } = *shape;
    let chunks = k / CHUNK;
    let (rows, _) = weights.as_chunks::<CHUNK>();
    if chunks == 0 || n == 0 || rows.len() != n * chunks {
        return Err(Error::KernelArgs);
    }
    let finish = Finish::new(stage);
    let off = _mm256_set1_epi16(offset);
    for b in 0..batch {
        let x = input.get(b * k..b * k + k).ok_or(Error::KernelArgs)?;
        let y = output.get_mut(b * n..b * n + n).ok_or(Error::KernelArgs)?;
        let (x, _) = x.as_chunks::<CHUNK>();
        let mut o = 0;
        while o < n {
            // Rows `o..o + 8`; past the last one, lanes repeat row `o` and are dropped.
            // (No closures handed to generic helpers here: they would not inherit AVX2
            // and stay out of line.)
            let first = rows.get(o * chunks..(o + 1) * chunks).unwrap_or(&[]);
            let mut w = [first; 8];
            for (j, r) in w.iter_mut().enumerate().skip(1) {
                if let Some(row) = rows.get((o + j) * chunks..(o + j + 1) * chunks) {
                    *r = row;
                }
            }
            let q = Quant8::load(stage, o, false);
            let v = bytes8(finish.apply(&q, dot_1x8_offset(x, off, w)));
            put(y, o, v.get(..(n - o).min(8)));
            o += 8;
        }
    }
    Ok(())
}

/// Fully connected one input row at a time, with no scratch buffers: eight outputs per
/// pass, each input chunk offset once and shared by eight weight rows.
///
/// A row of `k` inputs is `k / 16` whole chunks and, if `k % 16 ≠ 0`, a partial one
/// whose lanes past the row are zero. Weight rows are read where they lie, sixteen
/// bytes from each chunk's start, so a partial chunk's window runs into the next row,
/// whose bytes meet those zero lanes and add nothing; windows that would run past the
/// end of `weights` read a zero-padded copy of its last sixteen bytes instead.
#[target_feature(enable = "avx2")]
fn fc_rows(
    shape: &FcShape,
    offset: i16,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let FcShape {
        batch,
        in_features: k,
        out_features: n,
    } = *shape;
    let len = weights.len();
    if k == 0 || n == 0 || len != n * k {
        return Err(Error::KernelArgs);
    }
    let finish = Finish::new(stage);
    let off = _mm256_set1_epi16(offset);
    let (whole, rem) = (k / CHUNK, k % CHUNK);
    // The last sixteen weights (all of them, if fewer), zero-padded.
    let base = len.saturating_sub(CHUNK);
    let mut end = [0i8; 2 * CHUNK];
    match (
        weights.last_chunk::<CHUNK>(),
        end.first_chunk_mut::<CHUNK>(),
    ) {
        (Some(w), Some(e)) => *e = *w,
        _ => {
            for (e, &w) in end.iter_mut().zip(weights) {
                *e = w;
            }
        }
    }
    // Sixteen weights from `t` (< len).
    let window = |t: usize| {
        let w = match weights.get(t..t + CHUNK) {
            Some(w) => w,
            None => end.get(t - base..t - base + CHUNK).unwrap_or(&[]),
        };
        match <&[i8; CHUNK]>::try_from(w) {
            Ok(w) => load_w(w),
            Err(_) => _mm256_setzero_si256(),
        }
    };
    // Lanes `< rem` of the partial chunk are inputs, the rest zero.
    let lanes = _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let live = _mm256_cmpgt_epi16(_mm256_set1_epi16(rem as i16), lanes);
    let last_row = len - k;
    for b in 0..batch {
        let x = input.get(b * k..b * k + k).ok_or(Error::KernelArgs)?;
        let y = output.get_mut(b * n..b * n + n).ok_or(Error::KernelArgs)?;
        let (chunks, tail) = x.as_chunks::<CHUNK>();
        let mut part = [0i8; CHUNK];
        for (d, &v) in part.iter_mut().zip(tail) {
            *d = v;
        }
        let part = _mm256_and_si256(_mm256_add_epi16(load_w(&part), off), live);
        let mut o = 0;
        while o < n {
            let mut a = [_mm256_setzero_si256(); 8];
            // Rows past the last output repeat it; their lanes are not stored.
            let row = |j: usize| ((o + j) * k).min(last_row);
            for (c, xv) in chunks.iter().enumerate() {
                let xv = _mm256_add_epi16(load_w(xv), off);
                for (j, acc) in a.iter_mut().enumerate() {
                    *acc = mac(*acc, xv, window(row(j) + c * CHUNK));
                }
            }
            if rem != 0 {
                for (j, acc) in a.iter_mut().enumerate() {
                    *acc = mac(*acc, part, window(row(j) + whole * CHUNK));
                }
            }
            let q = Quant8::load(stage, o, false);
            let v = bytes8(finish.apply(&q, hsum8(a)));
            put(y, o, v.get(..(n - o).min(8)));
            o += 8;
        }
    }
    Ok(())
}

/// [`conv2d`] once AVX2 is known to be there.
#[target_feature(enable = "avx2")]
pub(super) fn conv_avx2(
    g: &ConvGeometry,
    offset: i16,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) -> Result<(), Error> {
    let k = g.kernel_h * g.kernel_w * g.in_c;
    let pixels = g.batch * g.out_h * g.out_w;
    let pointwise = g.kernel_h == 1
        && g.kernel_w == 1
        && (g.stride_h, g.stride_w, g.pad_top, g.pad_left) == (1, 1, 0, 0)
        && (g.out_h, g.out_w) == (g.in_h, g.in_w);
    if pointwise {
        // A fully connected op over pixels: each row is one input pixel's channels.
        let gather = |p: usize, row: &mut [i16]| -> Result<(), Error> {
            let src = input.get(p * k..p * k + k).ok_or(Error::KernelArgs)?;
            offset_into(row, src, offset);
            Ok(())
        };
        return gemm(pixels, k, gather, filter, g.out_c, stage, output);
    }
    let image_len = g.in_h * g.in_w * g.in_c;
    // `gemm` gathers pixels in order: walk (b, oy, ox) instead of dividing.
    let (mut b, mut oy, mut ox) = (0, 0, 0);
    let gather = |_: usize, row: &mut [i16]| -> Result<(), Error> {
        let image = input
            .get(b * image_len..(b + 1) * image_len)
            .ok_or(Error::KernelArgs)?;
        window_row(g, offset, image, oy, ox, row)?;
        ox += 1;
        if ox == g.out_w {
            (ox, oy) = (0, oy + 1);
            if oy == g.out_h {
                (oy, b) = (0, b + 1);
            }
        }
        Ok(())
    };
    gemm(pixels, k, gather, filter, g.out_c, stage, output)
}

/// Output pixel `(oy, ox)`'s window as `x + offset` in filter order (`ky, kx, c`),
/// zeros where it hangs over the padding; `row[k..]` is left alone.
#[inline]
fn window_row(
    g: &ConvGeometry,
    offset: i16,
    image: &[i8],
    oy: usize,
    ox: usize,
    row: &mut [i16],
) -> Result<(), Error> {
    let (y0, x0) = (oy * g.stride_h, ox * g.stride_w);
    let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
    let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
    let (left, run) = (kx0 * g.in_c, (kx1 - kx0) * g.in_c);
    let ix0 = x0 + kx0 - g.pad_left;
    let filter_row = g.kernel_w * g.in_c;
    let k = g.kernel_h * filter_row;
    let row = row.get_mut(..k).ok_or(Error::KernelArgs)?;
    if (ky0, ky1) == (0, g.kernel_h) && run == filter_row {
        // The whole window is inside the image: kernel rows are input rows.
        let first = ((y0 - g.pad_top) * g.in_w + ix0) * g.in_c;
        let step = g.in_w * g.in_c;
        for (ky, seg) in row.chunks_exact_mut(filter_row).enumerate() {
            let start = first + ky * step;
            let src = image.get(start..start + run).ok_or(Error::KernelArgs)?;
            offset_into(seg, src, offset);
        }
        return Ok(());
    }
    let clipped = run != filter_row;
    for (ky, seg) in row.chunks_exact_mut(filter_row).enumerate() {
        if ky < ky0 || ky >= ky1 {
            seg.fill(0);
            continue;
        }
        if clipped {
            seg.fill(0);
        }
        let start = ((y0 + ky - g.pad_top) * g.in_w + ix0) * g.in_c;
        match (image.get(start..start + run), seg.get_mut(left..left + run)) {
            (Some(src), Some(mid)) => offset_into(mid, src, offset),
            _ => return Err(Error::KernelArgs),
        }
    }
    Ok(())
}

/// `output[p, o] = stage(Σ_i row_p[i] · weights[o, i])` for `pixels` rows of `k`
/// inputs (`gather(p, row)` writes `row[..k]`, called for `p = 0, 1, …` in order) and
/// `n` outputs per row.
#[target_feature(enable = "avx2")]
fn gemm(
    pixels: usize,
    k: usize,
    gather: impl FnMut(usize, &mut [i16]) -> Result<(), Error>,
    weights: &[i8],
    n: usize,
    stage: &OutputStage<'_>,
    output: &mut [i8],
) -> Result<(), Error> {
    if k.is_multiple_of(CHUNK) {
        return gemm_padded(pixels, k, gather, weights, n, stage, output);
    }
    // Rows padded with zeros to whole vectors (a copy of the weights: cheap next to
    // the products, and only for odd row lengths).
    let kp = k.div_ceil(CHUNK) * CHUNK;
    scratch::<i8, 1024, _>(n * kp, 0, |padded| {
        for (dst, src) in padded.chunks_exact_mut(kp).zip(weights.chunks_exact(k)) {
            if let Some(d) = dst.get_mut(..k) {
                d.copy_from_slice(src);
            }
        }
        gemm_padded(pixels, kp, gather, padded, n, stage, output)
    })
}

/// [`gemm`] with `weights` rows of `kp` (a multiple of [`CHUNK`]) inputs; `gather`
/// fills at most the first `kp` of each row, the rest stays zero.
#[target_feature(enable = "avx2")]
fn gemm_padded(
    pixels: usize,
    kp: usize,
    mut gather: impl FnMut(usize, &mut [i16]) -> Result<(), Error>,
    weights: &[i8],
    n: usize,
    stage: &OutputStage<'_>,
    output: &mut [i8],
) -> Result<(), Error> {
    if n == 0 || kp == 0 || weights.len() != n * kp || output.len() != pixels * n {
        return Err(Error::KernelArgs);
    }
    let finish = Finish::new(stage);
    let chunks = kp / CHUNK;
    let (w_rows, _) = weights.as_chunks::<CHUNK>();
    let w_row = |o: usize| {
        let o = o.min(n - 1);
        w_rows.get(o * chunks..(o + 1) * chunks).unwrap_or(&[])
    };
    // Pixels per block: as many gathered rows as fit `BLOCK_BYTES`, an even number.
    let block = if pixels == 1 {
        1
    } else {
        ((BLOCK_BYTES / (2 * kp)).clamp(2, 32) & !1).min(pixels + 1)
    };
    // Output stages of pixel pairs (channels four at a time, twice), decoded once.
    let paired = if pixels > 1 { n.div_ceil(4) } else { 0 };
    scratch::<Quant8, 8, _>(paired, Quant8::zero(), |quads| {
        for (q, v) in quads.iter_mut().enumerate() {
            *v = Quant8::load(stage, 4 * q, true);
        }
        scratch::<i16, 512, _>(block * kp, 0, |xbuf| {
            let mut p0 = 0;
            while p0 < pixels {
                let m = block.min(pixels - p0);
                for (i, row) in xbuf.chunks_exact_mut(kp).take(m).enumerate() {
                    gather(p0 + i, row)?;
                }
                let out = output
                    .get_mut(p0 * n..(p0 + m) * n)
                    .ok_or(Error::KernelArgs)?;
                let (x_rows, _) = xbuf.as_chunks::<CHUNK>();
                let x_row = |p: usize| x_rows.get(p * chunks..(p + 1) * chunks).unwrap_or(&[]);
                let (pairs, lone) = out
                    .split_at_mut_checked(m / 2 * 2 * n)
                    .ok_or(Error::KernelArgs)?;
                // Four channels at a time, each against every pixel pair of the block
                // (the four filter rows stay in L1).
                for (q, quad) in quads.iter().enumerate() {
                    let o = 4 * q;
                    let w = [w_row(o), w_row(o + 1), w_row(o + 2), w_row(o + 3)];
                    let c = (n - o).min(4);
                    for (pair, px) in pairs.chunks_exact_mut(2 * n).enumerate() {
                        let acc = dot_2x4([x_row(2 * pair), x_row(2 * pair + 1)], w);
                        let y = bytes8(finish.apply(quad, acc));
                        // `px` is two pixels, `2n` long.
                        let (a, b) = px.split_at_mut(n);
                        put(a, o, y.get(..c));
                        put(b, o, y.get(4..4 + c));
                    }
                }
                if !lone.is_empty() {
                    // A batch of one, or the last of an odd number of pixels.
                    let x = x_row(m - 1);
                    for o in (0..n).step_by(8) {
                        let w = [
                            w_row(o),
                            w_row(o + 1),
                            w_row(o + 2),
                            w_row(o + 3),
                            w_row(o + 4),
                            w_row(o + 5),
                            w_row(o + 6),
                            w_row(o + 7),
                        ];
                        let q = Quant8::load(stage, o, false);
                        let y = bytes8(finish.apply(&q, dot_1x8(x, w)));
                        put(lone, o, y.get(..(n - o).min(8)));
                    }
                }
                p0 += m;
            }
            Ok(())
        })
    })
}

/// Sixteen `i16` inputs.
#[target_feature(enable = "avx2")]
#[inline]
fn load_x(x: &[i16; CHUNK]) -> __m256i {
    #[allow(unsafe_code)]
    // SAFETY: `x` is 32 readable bytes; the load is unaligned.
    unsafe {
        _mm256_loadu_si256(x.as_ptr().cast())
    }
}

/// Sixteen `i8` weights sign-extended to `i16`.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn load_w(w: &[i8; CHUNK]) -> __m256i {
    #[allow(unsafe_code)]
    // SAFETY: `w` is 16 readable bytes; the load is unaligned.
    unsafe {
        _mm256_cvtepi8_epi16(_mm_loadu_si128(w.as_ptr().cast()))
    }
}

/// `acc + Σ pairs of x·w` on eight `i32` lanes (exact: see the module docs of `x86`).
#[target_feature(enable = "avx2")]
#[inline]
fn mac(acc: __m256i, x: __m256i, w: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
}

/// The lane sums of eight accumulators, in order.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn hsum8(a: [__m256i; 8]) -> __m256i {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
    let s0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(a0, a1), _mm256_hadd_epi32(a2, a3));
    let s4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(a4, a5), _mm256_hadd_epi32(a6, a7));
    // Each 128-bit half now holds that half's sums of 0..3 (resp. 4..7).
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(s0123, s4567),
        _mm256_permute2x128_si256::<0x31>(s0123, s4567),
    )
}

/// Sums for pixels `x[0..2]` × filter rows `w[0..4]`, lanes `(pixel, row)` row-major.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_2x4(x: [&[[i16; CHUNK]]; 2], w: [&[[i8; CHUNK]]; 4]) -> __m256i {
    let z = _mm256_setzero_si256();
    let mut a = [z; 8];
    let [x0, x1] = x;
    let [w0, w1, w2, w3] = w;
    for (((((x0, x1), w0), w1), w2), w3) in x0.iter().zip(x1).zip(w0).zip(w1).zip(w2).zip(w3) {
        let (x0, x1) = (load_x(x0), load_x(x1));
        let [a0, a1, a2, a3, a4, a5, a6, a7] = &mut a;
        let w0 = load_w(w0);
        *a0 = mac(*a0, x0, w0);
        *a4 = mac(*a4, x1, w0);
        let w1 = load_w(w1);
        *a1 = mac(*a1, x0, w1);
        *a5 = mac(*a5, x1, w1);
        let w2 = load_w(w2);
        *a2 = mac(*a2, x0, w2);
        *a6 = mac(*a6, x1, w2);
        let w3 = load_w(w3);
        *a3 = mac(*a3, x0, w3);
        *a7 = mac(*a7, x1, w3);
    }
    hsum8(a)
}

/// [`dot_1x8`] of `x + offset` (`off` in every lane), offset chunk by chunk.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_1x8_offset(x: &[[i8; CHUNK]], off: __m256i, w: [&[[i8; CHUNK]]; 8]) -> __m256i {
    let z = _mm256_setzero_si256();
    let mut a = [z; 8];
    let [w0, w1, w2, w3, w4, w5, w6, w7] = w;
    let rows = w0
        .iter()
        .zip(w1)
        .zip(w2)
        .zip(w3)
        .zip(w4)
        .zip(w5)
        .zip(w6)
        .zip(w7);
    for (xv, (((((((w0, w1), w2), w3), w4), w5), w6), w7)) in x.iter().zip(rows) {
        let xv = _mm256_add_epi16(load_w(xv), off);
        for (acc, wv) in a.iter_mut().zip([w0, w1, w2, w3, w4, w5, w6, w7]) {
            *acc = mac(*acc, xv, load_w(wv));
        }
    }
    hsum8(a)
}

/// Sums for one pixel `x` × filter rows `w[0..8]`, lane `j` = row `j`.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_1x8(x: &[[i16; CHUNK]], w: [&[[i8; CHUNK]]; 8]) -> __m256i {
    let z = _mm256_setzero_si256();
    let mut a = [z; 8];
    let [w0, w1, w2, w3, w4, w5, w6, w7] = w;
    let rows = w0
        .iter()
        .zip(w1)
        .zip(w2)
        .zip(w3)
        .zip(w4)
        .zip(w5)
        .zip(w6)
        .zip(w7);
    for (xv, (((((((w0, w1), w2), w3), w4), w5), w6), w7)) in x.iter().zip(rows) {
        let xv = load_x(xv);
        for (acc, wv) in a.iter_mut().zip([w0, w1, w2, w3, w4, w5, w6, w7]) {
            *acc = mac(*acc, xv, load_w(wv));
        }
    }
    hsum8(a)
}
