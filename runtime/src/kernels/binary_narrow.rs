//! Binary convolution over narrow windows: each kernel row's `KW·C` bits fit one word
//! and the window has at most [`ROWS`] rows (LeNet-5's conv2, 5×5 over 6 channels:
//! five rows of 30 bits).
//!
//! The general kernel ([`super::binary::binary_conv2d`]) packs each window as one run
//! of bits and, at six input channels, spent as much on assembling it as on counting.
//! Here the window is one word per kernel row, each a single unaligned 32-bit read from
//! a band row that carries the left padding as zero bits (so a window's out-of-bounds
//! columns read as 0 without a branch); the filter rows are laid out the same way once
//! per call. Every channel then counts five words held in registers: 48 instructions on
//! Armv7E-M, 58 where border taps are masked.

use super::binarize::{
    byte_bits, low_bits, refresh_band, threshold, word_bits, SignInput, SignSink, BAND_WORDS,
    WEIGHT_WORDS,
};
use super::ConvGeometry;
use crate::error::Error;
use crate::format::packed::PackedRows;

/// Most kernel rows (words per window).
pub const ROWS: usize = 5;

/// Most output channels: their filter rows, one word per kernel row, in the caller's
/// weight buffer.
const MAX_CHANNELS: usize = WEIGHT_WORDS / ROWS;

/// Whether `binary_conv2d_narrow` takes geometry `g`.
pub fn fits(g: &ConvGeometry) -> bool {
    g.kernel_h <= ROWS
        && g.kernel_w * g.in_c <= 32
        && g.out_c <= MAX_CHANNELS
        && g.kernel_h * band_row_words(g) <= BAND_WORDS
}

/// Words of one band row: the input row after `pad_left` zero columns, with room past
/// the right padding for a 32-bit read at any window's start.
fn band_row_words(g: &ConvGeometry) -> usize {
    ((g.pad_left + g.in_w + g.kernel_w) * g.in_c).div_ceil(32) + 1
}

/// `Σ popcount((x_k ⊕ w_k) & m_k)` over the five words (`m` `None`: every bit counts).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
fn mismatches(x: &[u32; ROWS], w: &[u32; ROWS], m: Option<&[u32; ROWS]>) -> u32 {
    portable(x, w, m)
}

#[cfg(any(
    test,
    not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))
))]
#[inline(always)]
fn portable(x: &[u32; ROWS], w: &[u32; ROWS], m: Option<&[u32; ROWS]>) -> u32 {
    use super::xor_popcount::popcount3;
    let [x0, x1, x2, x3, x4] = *x;
    let [w0, w1, w2, w3, w4] = *w;
    let [m0, m1, m2, m3, m4] = m.copied().unwrap_or([u32::MAX; ROWS]);
    popcount3((x0 ^ w0) & m0, (x1 ^ w1) & m1, (x2 ^ w2) & m2)
        + popcount3((x3 ^ w3) & m3, (x4 ^ w4) & m4, 0)
}

/// `Σ popcount((x_k ⊕ w_k) & m_k)` over the five words (`m` `None`: every bit counts).
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
#[allow(unsafe_code)]
#[inline(always)]
fn mismatches(x: &[u32; ROWS], w: &[u32; ROWS], m: Option<&[u32; ROWS]>) -> u32 {
    let [x0, x1, x2, x3, x4] = *x;
    let count: u32;
    // `v = w[k] ⊕ x_k`, masked by `m[k]` in the second form.
    #[rustfmt::skip]
    macro_rules! word {
        ($v:literal, $k:literal, $x:literal) => {
            concat!(
                "ldr ", $v, ", [{w}, #", $k, "]\n",
                "eor ", $v, ", ", $v, ", ", $x, "\n",
            )
        };
        ($v:literal, $k:literal, $x:literal, masked) => {
            concat!(
                word!($v, $k, $x),
                "ldr {t}, [{m}, #", $k, "]\n",
                "and ", $v, ", ", $v, ", {t}\n",
            )
        };
    }
    // Each word folds to 4-bit counts with immediate masks; words 0–2 add up in `a`
    // (≤ 12 per nibble) and words 3–4 in `b` (≤ 8), each folds to bytes (≤ 40 in their
    // sum), and the four bytes add up in the low byte (≤ 160).
    macro_rules! sum {
        ($($masked:ident)?) => {
            concat!(
                word!("{a}", "0", "{x0}" $(, $masked)?),
                nibbles!("{a}"),
                word!("{b}", "4", "{x1}" $(, $masked)?),
                nibbles!("{b}"),
                "add {a}, {a}, {b}\n",
                word!("{b}", "8", "{x2}" $(, $masked)?),
                nibbles!("{b}"),
                "add {a}, {a}, {b}\n",
                bytes!("{a}"),
                word!("{b}", "12", "{x3}" $(, $masked)?),
                nibbles!("{b}"),
                word!("{c}", "16", "{x4}" $(, $masked)?),
                nibbles!("{c}"),
                "add {b}, {b}, {c}\n",
                bytes!("{b}"),
                "add {a}, {a}, {b}\n",
                "add {a}, {a}, {a}, lsr #16\n",
                "add {a}, {a}, {a}, lsr #8\n",
                "and {a}, {a}, #0xFF\n",
            )
        };
    }
    // SAFETY (both): they read the five words at `w` (and at `m`), which are
    // `[u32; 5]` references, write only the named registers, and touch no other memory
    // or the stack.
    unsafe {
        match m {
            None => core::arch::asm!(
                sum!(),
                w = in(reg) w.as_ptr(),
                x0 = in(reg) x0,
                x1 = in(reg) x1,
                x2 = in(reg) x2,
                x3 = in(reg) x3,
                x4 = in(reg) x4,
                a = out(reg) count,
                b = out(reg) _,
                c = out(reg) _,
                t = out(reg) _,
                options(pure, readonly, nostack),
            ),
            Some(m) => core::arch::asm!(
                sum!(masked),
                w = in(reg) w.as_ptr(),
                m = in(reg) m.as_ptr(),
                x0 = in(reg) x0,
                x1 = in(reg) x1,
                x2 = in(reg) x2,
                x3 = in(reg) x3,
                x4 = in(reg) x4,
                a = out(reg) count,
                b = out(reg) _,
                c = out(reg) _,
                t = out(reg) _,
                options(pure, readonly, nostack),
            ),
        }
    }
    count
}

/// One output pixel's channels: `+1` where `valid − 2 · count(w_c) ≥ threshold_c`.
#[inline(always)]
fn channels(
    sink: &mut impl SignSink,
    weights: &[[u32; ROWS]],
    thresholds: &[u8],
    valid: usize,
    count: impl Fn(&[u32; ROWS]) -> u32,
) -> Result<(), Error> {
    let rows = weights.iter().zip(thresholds.chunks_exact(4));
    sink.put(rows.map(|(w, t)| valid as i32 - 2 * count(w) as i32 >= threshold(t)))
}

/// Binary convolution for geometries that [`fits`] accepts, with the arguments already
/// checked by [`super::binary::binary_conv2d`] (which dispatches here); the same
/// results bit for bit. `w_buf` and `band` are the caller's buffers. Out of line:
/// inlined into the op dispatcher, its channel loop kept the five window words and its
/// counters on the stack.
#[inline(never)]
pub(super) fn binary_conv2d_narrow(
    g: &ConvGeometry,
    (thresholds, rows): (&[u8], &PackedRows<'_>),
    input: SignInput<'_>,
    sink: &mut impl SignSink,
    (w_buf, band): (&mut [u32; WEIGHT_WORDS], &mut [u32; BAND_WORDS]),
) -> Result<(), Error> {
    let row_len = g.kernel_w * g.in_c;
    let row_mask = low_bits(row_len);
    // The filters, one word per kernel row (rows past the kernel's stay 0).
    let (w_rows, _) = w_buf.as_chunks_mut::<ROWS>();
    let weights = w_rows.get_mut(..g.out_c).ok_or(Error::KernelArgs)?;
    for (dst, row) in weights.iter_mut().zip(rows.iter()) {
        *dst = [0; ROWS];
        for (ky, d) in dst.iter_mut().enumerate().take(g.kernel_h) {
            *d = byte_bits(row, ky * row_len, row_len);
        }
    }
    let weights = &*weights;
    let row_words = band_row_words(g);
    let in_row = g.in_w * g.in_c;
    for b in 0..g.batch {
        let image = b * g.in_h * in_row;
        // The input row each band slot holds.
        let mut held = [usize::MAX; ROWS];
        for oy in 0..g.out_h {
            let y0 = oy * g.stride_h;
            let (ky0, ky1) = ConvGeometry::window(y0, g.pad_top, g.kernel_h, g.in_h);
            let rows = (y0, ky0, ky1);
            refresh_band(
                g,
                image,
                &mut band[..],
                &mut held,
                row_words,
                rows,
                |words, from| {
                    words.fill(0);
                    input.pack(words, g.pad_left * g.in_c, from, in_row)
                },
            )?;
            // Each kernel row's band row (empty outside the image: its words read 0),
            // and which rows count.
            let mut band_rows: [&[u32]; ROWS] = [&[]; ROWS];
            let mut rows_in = [0u32; ROWS];
            for ky in ky0..ky1 {
                let slot = ((y0 + ky - g.pad_top) % g.kernel_h) * row_words;
                if let (Some(r), Some(m)) = (band_rows.get_mut(ky), rows_in.get_mut(ky)) {
                    *r = band.get(slot..slot + row_words).ok_or(Error::KernelArgs)?;
                    *m = u32::MAX;
                }
            }
            for ox in 0..g.out_w {
                let x0 = ox * g.stride_w;
                let (kx0, kx1) = ConvGeometry::window(x0, g.pad_left, g.kernel_w, g.in_w);
                let start = x0 * g.in_c;
                let x = band_rows.map(|r| word_bits(r, start) & row_mask);
                let valid = (ky1 - ky0) * (kx1 - kx0) * g.in_c;
                let mask: Option<[u32; ROWS]> = (valid != g.kernel_h * row_len).then(|| {
                    let columns = low_bits(kx1 * g.in_c) & !low_bits(kx0 * g.in_c);
                    rows_in.map(|m| columns & m)
                });
                // One loop per case: with the mask test inside, LLVM branched per channel.
                match mask {
                    None => channels(sink, weights, thresholds, valid, |w| {
                        mismatches(&x, w, None)
                    })?,
                    Some(m) => channels(sink, weights, thresholds, valid, |w| {
                        mismatches(&x, w, Some(&m))
                    })?,
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::xorshift;

    #[test]
    fn five_word_count_matches_count_ones() {
        let mut next = xorshift(11);
        for _ in 0..200 {
            let x: [u32; ROWS] = core::array::from_fn(|_| next() as u32);
            let w: [u32; ROWS] = core::array::from_fn(|_| next() as u32);
            let m: [u32; ROWS] = core::array::from_fn(|_| next() as u32);
            let want = |m: [u32; ROWS]| -> u32 {
                (0..ROWS).map(|k| ((x[k] ^ w[k]) & m[k]).count_ones()).sum()
            };
            assert_eq!(portable(&x, &w, None), want([u32::MAX; ROWS]));
            assert_eq!(portable(&x, &w, Some(&m)), want(m));
        }
        let ones = [u32::MAX; ROWS];
        assert_eq!(portable(&ones, &[0; ROWS], None), 160);
    }

    #[test]
    fn bits_read_across_words_and_bytes() {
        let words = [0x8000_0001u32, 0x0000_00FF];
        assert_eq!(word_bits(&words, 31), 0x1FF);
        assert_eq!(word_bits(&words, 0), 0x8000_0001);
        assert_eq!(word_bits(&words, 40), 0);
        let bytes = [0b1010_0000u8, 0xFF, 0x01];
        assert_eq!(byte_bits(&bytes, 5, 4), 0b1101);
        assert_eq!(byte_bits(&bytes, 5, 12), 0b1111_1111_1101);
        assert_eq!(byte_bits(&bytes, 20, 30), 0);
    }
}
