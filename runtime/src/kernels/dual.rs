//! Dual 16-bit multiply-accumulate loops and the packing that feeds them: Armv7E-M
//! assembly where the target has the DSP extension, bit-identical portable code
//! elsewhere (and in the unit tests), written with the helpers here that model
//! `SMLAD`, `SXTB16` and `SADD16` (shared with `depthwise_lanes` and `quad`).

/// `acc + lo(a)·lo(b) + hi(a)·hi(b)` on signed 16-bit halves, wrapping (`SMLAD`).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
pub(super) fn smlad(acc: i32, a: u32, b: u32) -> i32 {
    let lo = i32::from(a as i16) * i32::from(b as i16);
    let hi = i32::from((a >> 16) as i16) * i32::from((b >> 16) as i16);
    acc.wrapping_add(lo).wrapping_add(hi)
}

/// Bytes 0 and 2 of `w`, each sign-extended to a 16-bit half (`SXTB16`).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
pub(super) fn sxtb16(w: u32) -> u32 {
    let b0 = u32::from(i16::from(w as u8 as i8) as u16);
    let b2 = u32::from(i16::from((w >> 16) as u8 as i8) as u16);
    b0 | (b2 << 16)
}

/// Bytes 1 and 3 of `w`, each sign-extended to a 16-bit half (`SXTB16 …, ROR #8`).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
pub(super) fn sxtb16_ror8(w: u32) -> u32 {
    sxtb16(w.rotate_right(8))
}

/// `(Σ a·w, Σ b·w)` over `packed`, groups of four words `(a0,a2) (a1,a3) (b0,b2)
/// (b1,b3)` (two pixels' offset inputs, see `pack_pixel_pair`), against the weight
/// bytes `w0 w1 w2 w3` of each group, added to `acc`; `w` holds at least one word
/// per group. On SMLAD targets one loop in assembly: per group one `LDM` of the four
/// input words, one weight word, two `SXTB16` shared by both pixels and four
/// `SMLAD`s, 10 instructions for 8 products (LLVM's code for the same loop took 18
/// for one pixel's 8, with accumulator moves and three pointer bumps).
#[inline(always)]
pub(super) fn dot_pair(packed: &[u32], w: &[i8], acc: (i32, i32)) -> (i32, i32) {
    let groups = packed.len() / 4;
    if groups == 0 || w.len() < groups * 4 {
        return acc;
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    {
        let (mut a, mut b) = acc;
        // SAFETY: the loop reads `groups` groups of four words from `packed` (checked
        // above: `packed.len() ≥ 4·groups`, word aligned as a `u32` slice) and
        // `groups` words from `w` (`w.len() ≥ 4·groups` bytes; unaligned word loads
        // are allowed on Armv7E-M, as the portable code's `word` compiles to), runs
        // at least once (`groups > 0`), writes only the named registers and leaves
        // memory and the stack alone. `LDM` fills r0–r3 in register order, hence the
        // fixed registers.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "ldr {w}, [{wp}], #4",
                "sxtb16 {t}, {w}",
                "smlad {a}, r0, {t}, {a}",
                "smlad {b}, r2, {t}, {b}",
                "sxtb16 {t}, {w}, ror #8",
                "smlad {a}, r1, {t}, {a}",
                "smlad {b}, r3, {t}, {b}",
                "cmp {p}, {end}",
                "bne 2b",
                p = inout(reg) packed.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                end = in(reg) packed.as_ptr().add(groups * 4),
                a = inout(reg) a,
                b = inout(reg) b,
                w = out(reg) _,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(pure, readonly, nostack),
            );
        }
        (a, b)
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    {
        let (mut a, mut b) = acc;
        for (g, wg) in packed.chunks_exact(4).zip(w.chunks_exact(4)) {
            if let &[a_even, a_odd, b_even, b_odd] = g {
                let word = super::word(wg);
                let (even, odd) = (sxtb16(word), sxtb16_ror8(word));
                a = smlad(smlad(a, a_even, even), a_odd, odd);
                b = smlad(smlad(b, b_even, even), b_odd, odd);
            }
        }
        (a, b)
    }
}

/// `(Σ x·w0, Σ x·w1)` over `packed`, pairs of words `(x0,x2) (x1,x3)` (one run of
/// offset inputs, see `pack_pairs`), against the weight bytes of each group of four
/// in `w0` and `w1`, added to `acc`; each of `w0`, `w1` holds at least one word per
/// pair. On SMLAD targets one loop in assembly: `LDRD` of the pair, one word of each
/// weight run, four `SXTB16`, four `SMLAD`: 13 instructions for 8 products (LLVM's
/// loop took 18).
#[inline(always)]
pub(super) fn dot_two(packed: &[u32], w0: &[i8], w1: &[i8], acc: (i32, i32)) -> (i32, i32) {
    let groups = packed.len() / 2;
    if groups == 0 || w0.len() < groups * 4 || w1.len() < groups * 4 {
        return acc;
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    {
        let (mut a, mut b) = acc;
        // SAFETY: the loop reads `groups` pairs of words from `packed` (checked above:
        // `packed.len() ≥ 2·groups`; word aligned as a `u32` slice, as `LDRD` needs)
        // and `groups` words from each of `w0` and `w1` (at least `4·groups` bytes
        // each; unaligned `LDR` is allowed on Armv7E-M), runs at least once
        // (`groups > 0`), writes only the named registers and touches no other
        // memory or the stack.
        unsafe {
            core::arch::asm!(
                "2:",
                "ldrd {e}, {o}, [{p}], #8",
                "ldr {w}, [{wp0}], #4",
                "sxtb16 {t}, {w}",
                "smlad {a}, {e}, {t}, {a}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {a}, {o}, {w}, {a}",
                "ldr {w}, [{wp1}], #4",
                "sxtb16 {t}, {w}",
                "smlad {b}, {e}, {t}, {b}",
                "sxtb16 {w}, {w}, ror #8",
                "smlad {b}, {o}, {w}, {b}",
                "cmp {p}, {end}",
                "bne 2b",
                p = inout(reg) packed.as_ptr() => _,
                wp0 = inout(reg) w0.as_ptr() => _,
                wp1 = inout(reg) w1.as_ptr() => _,
                end = in(reg) packed.as_ptr().add(groups * 2),
                a = inout(reg) a,
                b = inout(reg) b,
                e = out(reg) _,
                o = out(reg) _,
                w = out(reg) _,
                t = out(reg) _,
                options(pure, readonly, nostack),
            );
        }
        (a, b)
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    {
        let (mut a, mut b) = acc;
        for ((p, v0), v1) in packed
            .chunks_exact(2)
            .zip(w0.chunks_exact(4))
            .zip(w1.chunks_exact(4))
        {
            if let &[even, odd] = p {
                let (v0, v1) = (super::word(v0), super::word(v1));
                a = smlad(smlad(a, even, sxtb16(v0)), odd, sxtb16_ror8(v0));
                b = smlad(smlad(b, even, sxtb16(v1)), odd, sxtb16_ror8(v1));
            }
        }
        (a, b)
    }
}

/// Two int8 windows `a` and `b` (equal lengths, a multiple of 4) offset by
/// `offset` (within ±256) into `out` in `pack_pixel_pair`'s layout: per group of
/// four, `(a0,a2) (a1,a3) (b0,b2) (b1,b3)` as 16-bit halves, `out.len() = a.len()`.
/// Nothing is written unless the lengths agree. On SMLAD targets one loop in
/// assembly, `SXTB16` and `SADD16` per pair of halves: 13 instructions for 8
/// values, in one pass instead of the offset `i16` windows' gather and packing passes.
#[inline(always)]
pub(super) fn pack_offset_pair(a: &[i8], b: &[i8], offset: i16, out: &mut [u32]) {
    let len = a.len();
    if len == 0 || !len.is_multiple_of(4) || b.len() != len || out.len() != len {
        return;
    }
    let offsets = u32::from(offset as u16) * 0x0001_0001;
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    // SAFETY: the loop reads `len / 4` words from each of `a` and `b` (`len` bytes
    // each, checked above; unaligned `LDR` is allowed on Armv7E-M) and writes
    // `len / 4` groups of four words to `out` (`out.len() = len`, word aligned as
    // a `u32` slice, as `STRD` needs); it runs at least once (`len ≥ 4`), writes
    // only the named registers, `out` and no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {wa}, [{pa}], #4",
            "ldr {wb}, [{pb}], #4",
            "sxtb16 {t}, {wa}",
            "sadd16 {t}, {t}, {off}",
            "sxtb16 {wa}, {wa}, ror #8",
            "sadd16 {wa}, {wa}, {off}",
            "strd {t}, {wa}, [{o}], #8",
            "sxtb16 {t}, {wb}",
            "sadd16 {t}, {t}, {off}",
            "sxtb16 {wb}, {wb}, ror #8",
            "sadd16 {wb}, {wb}, {off}",
            "strd {t}, {wb}, [{o}], #8",
            "cmp {pa}, {end}",
            "bne 2b",
            pa = inout(reg) a.as_ptr() => _,
            pb = inout(reg) b.as_ptr() => _,
            o = inout(reg) out.as_mut_ptr() => _,
            end = in(reg) a.as_ptr().add(len),
            off = in(reg) offsets,
            wa = out(reg) _,
            wb = out(reg) _,
            t = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    for ((ga, gb), o) in a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .zip(out.chunks_exact_mut(4))
    {
        if let [p0, p1, p2, p3] = o {
            let (wa, wb) = (super::word(ga), super::word(gb));
            *p0 = sadd16(sxtb16(wa), offsets);
            *p1 = sadd16(sxtb16_ror8(wa), offsets);
            *p2 = sadd16(sxtb16(wb), offsets);
            *p3 = sadd16(sxtb16_ror8(wb), offsets);
        }
    }
}

/// Lane-wise wrapping add of two pairs of 16-bit halves (`SADD16`, flags aside).
#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
#[inline(always)]
pub(super) fn sadd16(a: u32, b: u32) -> u32 {
    let lo = (a as u16).wrapping_add(b as u16);
    let hi = ((a >> 16) as u16).wrapping_add((b >> 16) as u16);
    u32::from(lo) | (u32::from(hi) << 16)
}

/// [`dot_pair`] for each of `sums.len() / 2` weight rows, `len = packed.len()` bytes
/// each (a multiple of 4) and one after another in `weights`, against all of `packed`
/// (two pixels' windows, `len` words): `(sums[2j], sums[2j + 1])` = row `j`'s sums
/// for the first and second pixel, as the bits of `i32`s. Nothing is written unless
/// the lengths agree. On
/// SMLAD targets the rows loop is in the assembly too: 8 instructions a row around
/// the inner loop, where LLVM's loop around `dot_pair` with the requantization
/// took about 77. The inner loop loads the four input words as two `LDRD`s, not
/// one `LDM`, to leave a register for that: 11 instructions for 8 products.
#[inline(always)]
pub(super) fn dot_pair_rows(packed: &[u32], weights: &[i8], sums: &mut [u32]) {
    let (len, rows) = (packed.len(), sums.len() / 2);
    let fits = len >= 4
        && len.is_multiple_of(4)
        && sums.len().is_multiple_of(2)
        && rows.checked_mul(len).is_some_and(|n| n <= weights.len());
    if !fits || rows == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    // SAFETY: per row, the inner loop reads all of `packed` (`len / 4` groups of
    // four words, at least one: checked above; word aligned as a `u32` slice, as
    // `LDRD` needs) and the row's `len` weight bytes (inside `weights`: checked
    // above; unaligned `LDR` is allowed on Armv7E-M), which leaves the weight
    // pointer at the next row; it then stores two words at `sums`
    // (`sums.len() = 2·rows`) and moves on. It writes only the named registers,
    // `sums` and no stack.
    unsafe {
        let end = packed.as_ptr().add(packed.len());
        core::arch::asm!(
            "1:",
            "sub {p}, {end}, {bytes}",
            "mov {a}, #0",
            "mov {b}, #0",
            "2:",
            "ldrd {x0}, {x1}, [{p}], #8",
            "ldr {w}, [{row}], #4",
            "sxtb16 {t}, {w}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a}, {x0}, {t}, {a}",
            "smlad {a}, {x1}, {w}, {a}",
            "ldrd {x0}, {x1}, [{p}], #8",
            "smlad {b}, {x0}, {t}, {b}",
            "smlad {b}, {x1}, {w}, {b}",
            "cmp {p}, {end}",
            "bne 2b",
            "strd {a}, {b}, [{s}], #8",
            "cmp {s}, {s_end}",
            "bne 1b",
            end = in(reg) end,
            bytes = in(reg) 4 * len,
            row = inout(reg) weights.as_ptr() => _,
            s = inout(reg) sums.as_mut_ptr() => _,
            s_end = in(reg) sums.as_mut_ptr().add(2 * rows),
            p = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            x0 = out(reg) _,
            x1 = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    for (w, s) in weights.chunks_exact(len).zip(sums.chunks_exact_mut(2)) {
        if let [a, b] = s {
            let sums = dot_pair(packed, w, (0, 0));
            (*a, *b) = (sums.0 as u32, sums.1 as u32);
        }
    }
}

/// [`dot_two`] for `sums.len() / 2` pairs of weight rows, `len = 2·packed.len()`
/// bytes each (a multiple of 4) and one after another in `weights`, against all of
/// `packed`: `(sums[2k], sums[2k + 1])` = rows `2k` and `2k + 1`, from 0.
/// Nothing is written unless the lengths agree and `sums.len()` is even. On SMLAD
/// targets the pairs loop is in the assembly too: 8 instructions a pair around the
/// inner loop, where LLVM's loop around `dot_two` took about 38.
#[inline(always)]
pub(super) fn dot_row_pairs(packed: &[u32], weights: &[i8], sums: &mut [i32]) {
    let (len, pairs) = (packed.len() * 2, sums.len() / 2);
    let fits = packed.len() >= 2
        && packed.len().is_multiple_of(2)
        && sums.len().is_multiple_of(2)
        && pairs
            .checked_mul(2 * len)
            .is_some_and(|n| n <= weights.len());
    if !fits || pairs == 0 {
        return;
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    // SAFETY: per pair, the inner loop reads all of `packed` (`len / 4` pairs of
    // words, at least one: checked above; word aligned as a `u32` slice, as `LDRD`
    // needs) and `len / 4` words from each of the pair's two rows (`2·len` bytes,
    // inside `weights`: checked above; unaligned `LDR` is allowed on Armv7E-M); it
    // then stores two words at `sums` (`sums.len() = 2·pairs`) and moves to the
    // next pair. It writes only the named registers, `sums` and no stack.
    unsafe {
        let end = packed.as_ptr().add(packed.len());
        core::arch::asm!(
            "1:",
            "sub {p}, {end}, {len}, lsl #1",
            "mov {a}, #0",
            "mov {b}, #0",
            "2:",
            "ldrd {e}, {o}, [{p}], #8",
            "ldr {w}, [{row}, {len}]",
            "sxtb16 {t}, {w}",
            "smlad {b}, {e}, {t}, {b}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {b}, {o}, {w}, {b}",
            "ldr {w}, [{row}], #4",
            "sxtb16 {t}, {w}",
            "smlad {a}, {e}, {t}, {a}",
            "sxtb16 {w}, {w}, ror #8",
            "smlad {a}, {o}, {w}, {a}",
            "cmp {p}, {end}",
            "bne 2b",
            "strd {a}, {b}, [{s}], #8",
            "add {row}, {row}, {len}",
            "cmp {s}, {s_end}",
            "bne 1b",
            end = in(reg) end,
            len = in(reg) len,
            row = inout(reg) weights.as_ptr() => _,
            s = inout(reg) sums.as_mut_ptr() => _,
            s_end = in(reg) sums.as_mut_ptr().add(2 * pairs),
            p = out(reg) _,
            a = out(reg) _,
            b = out(reg) _,
            e = out(reg) _,
            o = out(reg) _,
            w = out(reg) _,
            t = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    for (rows, s) in weights.chunks_exact(2 * len).zip(sums.chunks_exact_mut(2)) {
        let (w0, w1) = rows.split_at(len);
        if let [s0, s1] = s {
            (*s0, *s1) = dot_two(packed, w0, w1, (0, 0));
        }
    }
}
