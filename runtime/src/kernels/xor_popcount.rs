//! `Σ popcount((x ⊕ w) & m)` over rows of 32-bit words, three words at a time: the
//! inner loop of the binary kernels.
//!
//! Each word folds to 4-bit counts (SWAR), three words add up in one register (at most
//! 12 per nibble), then fold to bytes. On Armv7E-M (Cortex-M4/M7) one loop in assembly
//! sums the bytes with `USADA8` and masks with immediates (`0xAAAAAAAA`, `0x33333333`,
//! `0x0F0F0F0F` are Thumb-2 modified immediates, so no register holds a constant): 30
//! instructions per three words, 36 with a mask; it reads the weights with `LDR`, which
//! takes any alignment there. Elsewhere (and in the unit tests) the same arithmetic in
//! Rust, with one multiply summing the bytes; there a weight row kept as aligned words
//! loads a word at a time, where bytes in flash would take four loads on cores without
//! unaligned access (Cortex-M0, RV32).

/// Assembly text (Armv7E-M): each nibble of register `$v` becomes its popcount,
/// `v −= (v & 0xAAAAAAAA) >> 1; v = (v & 0x33333333) + ((v & 0xCCCCCCCC) >> 2)`, with
/// `{t}` as scratch. The masks are Thumb-2 modified immediates: no register holds them.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
#[rustfmt::skip]
macro_rules! nibbles {
    ($v:literal) => {
        concat!(
            "and {t}, ", $v, ", #0xAAAAAAAA\n",
            "sub ", $v, ", ", $v, ", {t}, lsr #1\n",
            "and {t}, ", $v, ", #0xCCCCCCCC\n",
            "and ", $v, ", ", $v, ", #0x33333333\n",
            "add ", $v, ", ", $v, ", {t}, lsr #2\n",
        )
    };
}

/// Assembly text (Armv7E-M): register `$v`'s nibble counts (at most 15 each) folded
/// into byte counts, with `{t}` as scratch.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
#[rustfmt::skip]
macro_rules! bytes {
    ($v:literal) => {
        concat!(
            "and {t}, ", $v, ", #0xF0F0F0F0\n",
            "and ", $v, ", ", $v, ", #0x0F0F0F0F\n",
            "add ", $v, ", ", $v, ", {t}, lsr #4\n",
        )
    };
}

/// Words per step of the loop.
pub const STEP: usize = 3;

/// A packed weight row, little-endian words: aligned (a kernel's copy on the stack) or
/// bytes at any alignment (straight from the model in flash).
#[derive(Clone, Copy)]
pub enum Row<'a> {
    /// Aligned words.
    Words(&'a [u32]),
    /// Little-endian words at any alignment (a partial last word is not counted).
    Bytes(&'a [u8]),
}

impl Row<'_> {
    /// Whole words the row holds.
    #[inline(always)]
    fn words(&self) -> usize {
        match self {
            Row::Words(w) => w.len(),
            Row::Bytes(b) => b.len() / 4,
        }
    }
}

/// Three little-endian words from twelve bytes (else 0s).
#[cfg(any(
    test,
    not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))
))]
#[inline(always)]
fn le_words3(b: &[u8]) -> (u32, u32, u32) {
    match *b {
        [a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3] => (
            u32::from_le_bytes([a0, a1, a2, a3]),
            u32::from_le_bytes([b0, b1, b2, b3]),
            u32::from_le_bytes([c0, c1, c2, c3]),
        ),
        _ => (0, 0, 0),
    }
}

/// `popcount(a) + popcount(b) + popcount(c)`, portable SWAR.
#[cfg(any(
    test,
    not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))
))]
#[inline(always)]
pub(super) fn popcount3(a: u32, b: u32, c: u32) -> u32 {
    #[inline(always)]
    fn nibbles(v: u32) -> u32 {
        let v = v - ((v >> 1) & 0x5555_5555);
        (v & 0x3333_3333) + ((v >> 2) & 0x3333_3333)
    }
    let n = nibbles(a) + nibbles(b) + nibbles(c);
    let bytes = (n & 0x0F0F_0F0F) + ((n >> 4) & 0x0F0F_0F0F);
    bytes.wrapping_mul(0x0101_0101) >> 24
}

/// Whole steps that `x`, `mask` and `w` all hold: the words [`xor_popcount`] counts
/// are the first `3 ·` this many.
#[inline(always)]
pub fn steps(x: &[u32], mask: Option<&[u32]>, w: Row<'_>) -> usize {
    let n = x.len().min(w.words()) / STEP;
    mask.map_or(n, |m| n.min(m.len() / STEP))
}

/// [`xor_popcount`] in Rust.
#[cfg(any(
    test,
    not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))
))]
#[inline(always)]
fn portable(x: &[u32], mask: Option<&[u32]>, w: Row<'_>) -> u32 {
    match w {
        Row::Words(w) => {
            // The chunk iterators stop at the shortest of `x`, `w` and `mask`.
            let triples = x.chunks_exact(STEP).zip(w.chunks_exact(STEP));
            let mut total = 0;
            match mask {
                None => {
                    for (xs, ws) in triples {
                        if let (&[x0, x1, x2], &[w0, w1, w2]) = (xs, ws) {
                            total += popcount3(x0 ^ w0, x1 ^ w1, x2 ^ w2);
                        }
                    }
                }
                Some(m) => {
                    for ((xs, ws), ms) in triples.zip(m.chunks_exact(STEP)) {
                        if let (&[x0, x1, x2], &[w0, w1, w2], &[m0, m1, m2]) = (xs, ws, ms) {
                            total += popcount3((x0 ^ w0) & m0, (x1 ^ w1) & m1, (x2 ^ w2) & m2);
                        }
                    }
                }
            }
            total
        }
        Row::Bytes(b) => {
            // An index loop: zipped chunk iterators over bytes measured 1.2–1.3× slower
            // on the Cortex-M0 and RV32.
            let end = STEP * steps(x, mask, w);
            let mut total = 0;
            let mut k = 0;
            while k < end {
                let (w0, w1, w2) = b.get(4 * k..4 * k + 12).map_or((0, 0, 0), le_words3);
                let (a, b, c) = match (x.get(k..k + 3), mask) {
                    (Some(&[x0, x1, x2]), None) => (x0 ^ w0, x1 ^ w1, x2 ^ w2),
                    (Some(&[x0, x1, x2]), Some(m)) => match m.get(k..k + 3) {
                        Some(&[m0, m1, m2]) => ((x0 ^ w0) & m0, (x1 ^ w1) & m1, (x2 ^ w2) & m2),
                        _ => (0, 0, 0),
                    },
                    _ => (0, 0, 0),
                };
                total += popcount3(a, b, c);
                k += STEP;
            }
            total
        }
    }
}

/// `Σ popcount((x_k ⊕ w_k) & mask_k)` over the first `3·n` words, where `n` is the
/// number of whole three-word steps that `x`, `mask` (every bit counts where `None`)
/// and `w` all hold.
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
pub fn xor_popcount(x: &[u32], mask: Option<&[u32]>, w: Row<'_>) -> u32 {
    portable(x, mask, w)
}

/// `Σ popcount((x_k ⊕ w_k) & mask_k)` over the first `3·n` words, where `n` is the
/// number of whole three-word steps that `x`, `mask` (every bit counts where `None`)
/// and `w` all hold.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
#[allow(unsafe_code)]
#[inline(always)]
pub fn xor_popcount(x: &[u32], mask: Option<&[u32]>, w: Row<'_>) -> u32 {
    let n = steps(x, mask, w);
    if n == 0 {
        return 0;
    }
    let w: *const u8 = match w {
        Row::Words(w) => w.as_ptr().cast(),
        Row::Bytes(b) => b.as_ptr(),
    };
    let mut total = 0u32;
    // r0–r2 &= the next three mask words.
    macro_rules! masked {
        () => {
            concat!(
                "ldr {t}, [{mp}], #4\n",
                "and r0, r0, {t}\n",
                "ldr {t}, [{mp}], #4\n",
                "and r1, r1, {t}\n",
                "ldr {t}, [{mp}], #4\n",
                "and r2, r2, {t}\n",
            )
        };
    }
    // The loop: three words of `x` XOR `w` (and the mask), to nibble counts, summed,
    // folded to bytes, added to `acc` by `USADA8`.
    macro_rules! steps {
        ($($mask:ident)?) => {
            concat!(
                "2:\n",
                "ldm {xp}!, {{r0, r1, r2}}\n",
                "ldr {t}, [{wp}], #4\n",
                "eor r0, r0, {t}\n",
                "ldr {t}, [{wp}], #4\n",
                "eor r1, r1, {t}\n",
                "ldr {t}, [{wp}], #4\n",
                "eor r2, r2, {t}\n",
                $($mask!(),)?
                nibbles!("r0"),
                nibbles!("r1"),
                nibbles!("r2"),
                "add r0, r0, r1\n",
                "add r0, r0, r2\n",
                bytes!("r0"),
                "usada8 {acc}, r0, {zero}, {acc}\n",
                "cmp {xp}, {end}\n",
                "bne 2b\n",
            )
        };
    }
    // SAFETY (both loops): they read `n` steps of three words from `x` (and `mask`),
    // word aligned as `u32` slices (`LDM` needs it), and `12·n` bytes from `w` by `LDR`
    // (unaligned word loads are allowed on Armv7E-M); `steps` checked that every slice
    // holds that much. Each runs at least once (`n > 0`), writes only the named
    // registers and touches no other memory or the stack. `LDM` fills r0–r2 in register
    // order, hence the fixed registers.
    unsafe {
        match mask {
            None => core::arch::asm!(
                steps!(),
                xp = inout(reg) x.as_ptr() => _,
                wp = inout(reg) w => _,
                end = in(reg) x.as_ptr().add(n * STEP),
                acc = inout(reg) total,
                zero = in(reg) 0u32,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                options(pure, readonly, nostack),
            ),
            Some(m) => core::arch::asm!(
                steps!(masked),
                xp = inout(reg) x.as_ptr() => _,
                wp = inout(reg) w => _,
                mp = inout(reg) m.as_ptr() => _,
                end = in(reg) x.as_ptr().add(n * STEP),
                acc = inout(reg) total,
                zero = in(reg) 0u32,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                options(pure, readonly, nostack),
            ),
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_support::xorshift;
    use std::vec::Vec;

    fn naive(x: &[u32], mask: Option<&[u32]>, w: &[u8]) -> u32 {
        let n = steps(x, mask, Row::Bytes(w)) * STEP;
        (0..n)
            .map(|k| {
                let m = mask.map_or(u32::MAX, |m| m[k]);
                let b = &w[4 * k..4 * k + 4];
                ((x[k] ^ u32::from_le_bytes([b[0], b[1], b[2], b[3]])) & m).count_ones()
            })
            .sum()
    }

    #[test]
    fn matches_count_ones_at_every_length_and_alignment() {
        let mut next = xorshift(7);
        for words in 0..14 {
            let x: Vec<u32> = (0..words).map(|_| next() as u32).collect();
            let m: Vec<u32> = (0..words).map(|_| next() as u32).collect();
            let bytes: Vec<u8> = (0..4 * words + 3).map(|_| next() as u8).collect();
            for skew in 0..4 {
                for w_len in [0, 4 * words / 2, 4 * words] {
                    let w = &bytes[skew..skew + w_len];
                    let aligned: Vec<u32> = w
                        .chunks_exact(4)
                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    for mask in [None, Some(&m[..])] {
                        let want = naive(&x, mask, w);
                        assert_eq!(portable(&x, mask, Row::Bytes(w)), want);
                        assert_eq!(portable(&x, mask, Row::Words(&aligned)), want);
                        assert_eq!(xor_popcount(&x, mask, Row::Bytes(w)), want);
                        assert_eq!(xor_popcount(&x, mask, Row::Words(&aligned)), want);
                    }
                }
            }
        }
        // All ones: 12 per nibble after three words, the most the fold must hold.
        let ones = [u32::MAX; 6];
        assert_eq!(portable(&ones, None, Row::Words(&[0; 6])), 192);
    }
}
