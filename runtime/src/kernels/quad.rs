//! Four pixels per pass over the weights, for conv windows read straight from an
//! int8 image (1×1 convs above all: most of vww_96_int8's and person_detect's
//! products).
//!
//! The two-pixel path ([`super::channels_offset_pair_i8`]) spends 10 to 11
//! Armv7E-M instructions per 8 products: per group of four channels one weight word,
//! two `SXTB16`s, two input loads and four `SMLAD`s. With four pixels the weight
//! word's two halves each feed four `SMLAD`s and one `LDM` brings the four pixels'
//! inputs for a half: 16 instructions per 16 products. The loop needs 12 registers,
//! all that `asm!` has on Thumb, so the rows loop stays in Rust: a row's four sums
//! are finished as soon as they are summed, its requantization parameters loaded
//! once for four outputs.
//!
//! Layout of the packed windows, per group of four values `x0 x1 x2 x3` of each
//! pixel `k`: eight words, the four pixels' `(x0, x2)` halves (`SXTB16` of the
//! input word, offset added) in pixel order, then their `(x1, x3)` halves.

#[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
use super::dual::{sadd16, smlad, sxtb16, sxtb16_ror8};
use super::finish::{by_finish, Finish, Finisher};
use super::{ChannelQuant, OutputStage, PackScratch, PAIR_CAP};
use crate::error::Error;
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
use crate::fixed_point::Requant;

/// Longest window taken: four windows' packed halves fill one [`PackScratch`], as two
/// windows of [`PAIR_CAP`] do.
pub(crate) const QUAD_CAP: usize = PAIR_CAP / 2;

/// Four pixels' conv windows in an int8 image: `rows` runs of `run` values (a kernel
/// row's `KW · C`), consecutive runs `stride` apart, pixel `k`'s from `starts[k]`.
pub(crate) struct WindowQuad<'i> {
    pub image: &'i [i8],
    pub starts: [usize; 4],
    pub rows: usize,
    pub run: usize,
    pub stride: usize,
}

/// `out_k[j] = stage(Σ (x_k + offset) · w_j)` for the four windows of `quad` (`run` a
/// multiple of 4, `rows · run` at most [`QUAD_CAP`]) against each row `w_j` of
/// `weights` and its channel `quants[j]`, in the `form`
/// [`OutputStage::small_channels_into`] returned for `quants`. Same sums, wrapping,
/// as the plain dot product: bit-identical.
pub(crate) fn channels_offset_quad_i8(
    quad: &WindowQuad<'_>,
    offset: i16,
    scratch: &mut PackScratch,
    weights: &[i8],
    (stage, form): (&OutputStage<'_>, Finish),
    quants: &[ChannelQuant],
    (out, gap): (&mut [i8], usize),
) -> Result<(), Error> {
    let WindowQuad {
        image,
        starts,
        rows,
        run,
        stride,
    } = *quad;
    let len = rows.checked_mul(run).ok_or(Error::KernelArgs)?;
    let n = quants.len();
    let outputs_fit =
        gap >= n && gap.checked_mul(3).and_then(|g| g.checked_add(n)) == Some(out.len());
    if run == 0
        || !run.is_multiple_of(4)
        || len > QUAD_CAP
        || !outputs_fit
        || quants.len().checked_mul(len) != Some(weights.len())
    {
        return Err(Error::KernelArgs);
    }
    let packed = scratch.get_mut(..2 * len).ok_or(Error::KernelArgs)?;
    let run_at = |start: usize, r: usize| image.get(start + r * stride..)?.get(..run);
    for (r, words) in packed.chunks_exact_mut(2 * run).enumerate() {
        for (slot, (a, b)) in [(0, (starts[0], starts[1])), (2, (starts[2], starts[3]))] {
            let (Some(xa), Some(xb)) = (run_at(a, r), run_at(b, r)) else {
                return Err(Error::KernelArgs);
            };
            pack_offset_into_quad(xa, xb, offset, words, slot);
        }
    }
    let packed = &*packed;
    // With int8's whole range for clamp, a small channel's four outputs in assembly:
    // the whole block where every channel is small, else channel by channel, any
    // other's in TFLite's steps (vww_96_int8's blocks hold channels of near-zero
    // weights whose bias, about 2^30, rules the block's small form out).
    // (SAFETY, for the writes below: `j < n`, and `out` holds `3·gap + n` bytes: the
    // four outputs at `j + k·gap`, `k < 4`, lie inside it; every write goes through
    // `base`. `finish_row` gets channels whose terms are filled.)
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    if form == Finish::SmallFullRange {
        let base = out.as_mut_ptr();
        for (j, (q, w)) in quants.iter().zip(weights.chunks_exact(len)).enumerate() {
            let sums = dot_quad(packed, w);
            unsafe { finish_row(q, &sums, base.add(j), gap) };
        }
        return Ok(());
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    if (stage.act_min, stage.act_max) == (-128, 127) {
        // Mixed blocks, channel by channel (checked per row, this loop alone cost
        // person_detect 2 %).
        let base = out.as_mut_ptr();
        for (j, (q, w)) in quants.iter().zip(weights.chunks_exact(len)).enumerate() {
            let sums = dot_quad(packed, w);
            if q.finishes_small() {
                unsafe { finish_row(q, &sums, base.add(j), gap) };
            } else {
                for (k, &acc) in sums.iter().enumerate() {
                    unsafe { base.add(j + k * gap).write(stage.finish(q, acc)) };
                }
            }
        }
        return Ok(());
    }
    // The four pixels' outputs.
    let (o0, rest) = out.split_at_mut_checked(gap).ok_or(Error::KernelArgs)?;
    let (o1, rest) = rest.split_at_mut_checked(gap).ok_or(Error::KernelArgs)?;
    let (o2, o3) = rest.split_at_mut_checked(gap).ok_or(Error::KernelArgs)?;
    let (o0, o1, o2) = (o0.get_mut(..n), o1.get_mut(..n), o2.get_mut(..n));
    let (Some(o0), Some(o1), Some(o2)) = (o0, o1, o2) else {
        return Err(Error::KernelArgs);
    };
    let outs = o0
        .iter_mut()
        .zip(o1.iter_mut())
        .zip(o2.iter_mut().zip(o3.iter_mut()));
    let rows = outs.zip(quants).zip(weights.chunks_exact(len));
    // One loop per form, as in the two-pixel path.
    by_finish!(form, stage, |f| {
        for ((((y0, y1), (y2, y3)), q), w) in rows {
            let [a, b, c, d] = dot_quad(packed, w);
            *y0 = f.finish(q, a);
            *y1 = f.finish(q, b);
            *y2 = f.finish(q, c);
            *y3 = f.finish(q, d);
        }
    });
    Ok(())
}

/// One output of [`finish_row`]'s assembly: the sum at `$sum`, the channel's terms in
/// r0–r5, the byte stored by `$store`.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
macro_rules! finish_step {
    ($sum:literal, $store:literal) => {
        concat!(
            "ldr {x}, ",
            $sum,
            "\n",
            "mla {x}, {x}, r1, r0\n",
            "and {r}, r3, {x}, asr #31\n",
            "add {r}, {r}, r2\n",
            "smmlar {x}, {x}, r5, {r}\n",
            "asr {x}, {x}, r4\n",
            "ssat {x}, #8, {x}\n",
            $store,
        )
    };
}

/// One channel's four outputs in the small form with int8's whole range for clamp
/// ([`OutputStage::finish_small`], `FULL_RANGE`): `out[k·gap] = finish(q, sums[k])`.
/// In assembly, the channel's terms loaded once for the four: about 9 instructions
/// an output, where LLVM's code, short of registers beside the output pointers,
/// took about 21.
///
/// # Safety
///
/// `out + k·gap` is writable for `k < 4`, and `q`'s small terms are filled.
#[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
#[inline(always)]
unsafe fn finish_row(q: &ChannelQuant, sums: &[i32; 4], out: *mut i8, gap: usize) {
    use core::mem::offset_of;
    // SAFETY: reads `q`'s multiplier and its five small terms (`#[repr(C)]`, in the
    // order `bias, scale, round, negative, right`, which `LDM` fills into r0–r4) and
    // the four sums; writes the four bytes the contract allows, and no stack. The
    // steps are `finish_small`'s: `mla` the doubled value, the rounding term with
    // its sign adjustment, `SMMLAR`, the shift (`right < 32`), `SSAT`.
    unsafe {
        core::arch::asm!(
            "ldr r5, [{q}, #{m}]",
            "add {x}, {q}, #{t}",
            "ldm {x}, {{r0, r1, r2, r3, r4}}",
            finish_step!("[{s}]", "strb {x}, [{o}]"),
            finish_step!("[{s}, #4]", "strb {x}, [{o}, {g}]"),
            finish_step!("[{s}, #8]", "add {o}, {o}, {g}, lsl #1\nstrb {x}, [{o}]"),
            finish_step!("[{s}, #12]", "strb {x}, [{o}, {g}]"),
            q = in(reg) q,
            s = in(reg) sums,
            o = inout(reg) out => _,
            g = in(reg) gap,
            x = out(reg) _,
            r = out(reg) _,
            m = const offset_of!(ChannelQuant, requant) + offset_of!(Requant, multiplier),
            t = const offset_of!(ChannelQuant, small),
            out("r0") _,
            out("r1") _,
            out("r2") _,
            out("r3") _,
            out("r4") _,
            out("r5") _,
            options(nostack),
        );
    }
}

/// Two pixels' runs `a` and `b` (equal lengths, a multiple of 4) offset by `offset`
/// (within ±256) into `out` (a run's `2 · len` words of the quad layout), as pixels
/// `slot` and `slot + 1` (`slot` 0 or 2). Nothing is written unless the lengths
/// agree. On SMLAD targets one loop in assembly: 16 instructions per group of four
/// values of both pixels.
#[inline(always)]
fn pack_offset_into_quad(a: &[i8], b: &[i8], offset: i16, out: &mut [u32], slot: usize) {
    let len = a.len();
    if len == 0 || !len.is_multiple_of(4) || b.len() != len || out.len() != 2 * len || slot > 2 {
        return;
    }
    let offsets = u32::from(offset as u16) * 0x0001_0001;
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    // SAFETY: the loop reads `len / 4` words from each of `a` and `b` (`len` bytes
    // each, checked above; unaligned `LDR` is allowed on Armv7E-M) and per group `g`
    // writes the words `8g + slot`, `8g + slot + 1`, `8g + slot + 4` and
    // `8g + slot + 5` of `out` (all below `2·len = 8·(len / 4)` for `slot ≤ 2`;
    // word aligned as a `u32` slice, as `STRD` needs); it runs at least once
    // (`len ≥ 4`), writes only the named registers, `out` and no stack.
    unsafe {
        core::arch::asm!(
            "2:",
            "ldr {wa}, [{pa}], #4",
            "ldr {wb}, [{pb}], #4",
            "sxtb16 {ta}, {wa}",
            "sadd16 {ta}, {ta}, {off}",
            "sxtb16 {tb}, {wb}",
            "sadd16 {tb}, {tb}, {off}",
            "sxtb16 {wa}, {wa}, ror #8",
            "sadd16 {wa}, {wa}, {off}",
            "sxtb16 {wb}, {wb}, ror #8",
            "sadd16 {wb}, {wb}, {off}",
            "strd {wa}, {wb}, [{o}, #16]",
            "strd {ta}, {tb}, [{o}], #32",
            "cmp {pa}, {end}",
            "bne 2b",
            pa = inout(reg) a.as_ptr() => _,
            pb = inout(reg) b.as_ptr() => _,
            o = inout(reg) out.as_mut_ptr().add(slot) => _,
            end = in(reg) a.as_ptr().add(len),
            off = in(reg) offsets,
            wa = out(reg) _,
            wb = out(reg) _,
            ta = out(reg) _,
            tb = out(reg) _,
            options(nostack),
        );
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    for ((ga, gb), group) in a
        .chunks_exact(4)
        .zip(b.chunks_exact(4))
        .zip(out.chunks_exact_mut(8))
    {
        let (wa, wb) = (super::word(ga), super::word(gb));
        if let Some([e0, e1, _, _, o0, o1]) = group.get_mut(slot..slot + 6) {
            *e0 = sadd16(sxtb16(wa), offsets);
            *e1 = sadd16(sxtb16(wb), offsets);
            *o0 = sadd16(sxtb16_ror8(wa), offsets);
            *o1 = sadd16(sxtb16_ror8(wb), offsets);
        }
    }
}

/// The four pixels' sums `Σ x_k · w` over `packed` (the quad layout, `2 · len`
/// words) against the weight row `w` (`len` bytes); zeros unless `packed` holds
/// whole groups and `w` a word per group. On SMLAD targets one loop in assembly.
#[inline(always)]
fn dot_quad(packed: &[u32], w: &[i8]) -> [i32; 4] {
    let groups = packed.len() / 8;
    if groups == 0 || !packed.len().is_multiple_of(8) || w.len() < groups * 4 {
        return [0; 4];
    }
    #[cfg(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp)))]
    {
        let (a, b, c, d): (i32, i32, i32, i32);
        // SAFETY: the loop reads `groups` groups of eight words from `packed` (checked
        // above; word aligned as a `u32` slice, as `LDM` needs) and `groups` words
        // from `w` (at least `4·groups` bytes; unaligned `LDR` is allowed on
        // Armv7E-M), runs at least once (`groups > 0`), writes only the named
        // registers and leaves memory and the stack alone. `LDM` fills r0–r3 in
        // register order, hence the fixed registers.
        unsafe {
            core::arch::asm!(
                // The sums start at 0 here: set outside, LLVM kept the four zeros on
                // the stack and reloaded them per row.
                "movs {a}, #0",
                "movs {b}, #0",
                "movs {c}, #0",
                "movs {d}, #0",
                "2:",
                "ldr {t}, [{wp}]",
                "sxtb16 {t}, {t}",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "smlad {a}, r0, {t}, {a}",
                "smlad {b}, r1, {t}, {b}",
                "smlad {c}, r2, {t}, {c}",
                "smlad {d}, r3, {t}, {d}",
                "ldr {t}, [{wp}], #4",
                "sxtb16 {t}, {t}, ror #8",
                "ldm {p}!, {{r0, r1, r2, r3}}",
                "smlad {a}, r0, {t}, {a}",
                "smlad {b}, r1, {t}, {b}",
                "smlad {c}, r2, {t}, {c}",
                "smlad {d}, r3, {t}, {d}",
                "cmp {p}, {end}",
                "bne 2b",
                p = inout(reg) packed.as_ptr() => _,
                wp = inout(reg) w.as_ptr() => _,
                end = in(reg) packed.as_ptr().add(groups * 8),
                a = out(reg) a,
                b = out(reg) b,
                c = out(reg) c,
                d = out(reg) d,
                t = out(reg) _,
                out("r0") _,
                out("r1") _,
                out("r2") _,
                out("r3") _,
                options(pure, readonly, nostack),
            );
        }
        [a, b, c, d]
    }
    #[cfg(not(all(target_arch = "arm", any(target_feature = "dsp", sprig_arm_dsp))))]
    {
        let mut sums = [0i32; 4];
        for (group, wg) in packed.chunks_exact(8).zip(w.chunks_exact(4)) {
            let word = super::word(wg);
            let (even, odd) = (sxtb16(word), sxtb16_ror8(word));
            for (k, s) in sums.iter_mut().enumerate() {
                if let (Some(&e), Some(&o)) = (group.get(k), group.get(k + 4)) {
                    *s = smlad(smlad(*s, e, even), o, odd);
                }
            }
        }
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::xorshift;
    use super::super::{window_reach, PACK_SCRATCH};
    use super::*;
    use std::vec::Vec;

    /// Four windows read from an image, one to three rows of runs from 4 to
    /// [`QUAD_CAP`] values, against the plain offset dot product and TFLite's
    /// requantization ([`OutputStage::apply`]), in both forms: 1 to 17 channels,
    /// offsets across ±256, biases that make some blocks too wide for the small form.
    #[test]
    fn matches_the_plain_dot_product() {
        let mut next = xorshift(0x0bad_cafe_1234_5678u64);
        let mut forms = std::vec::Vec::new();
        for run in (4..=QUAD_CAP).step_by(4) {
            for rows in 1..=3usize {
                let len = run * rows;
                if len > QUAD_CAP {
                    continue;
                }
                let channels = 1 + (next() % 17) as usize;
                let offset = (next() % 513) as i16 - 256;
                let stride = run + (next() % 9) as usize;
                let image: Vec<i8> = (0..stride * rows + 4 * run).map(|_| next() as i8).collect();
                let mut starts = [0usize; 4];
                starts
                    .iter_mut()
                    .for_each(|s| *s = (next() % (3 * run as u64 + 1)) as usize);
                let w: Vec<i8> = (0..len * channels).map(|_| next() as i8).collect();
                let wide = next().is_multiple_of(3);
                let bias: Vec<u8> = (0..channels)
                    .flat_map(|_| {
                        let b = if wide {
                            (1 << 30) - 64
                        } else {
                            (next() % 4001) as i32 - 2000
                        };
                        b.to_le_bytes()
                    })
                    .collect();
                let mut requant: Vec<u8> = (0..channels)
                    .flat_map(|_| (0x4000_0000 + (next() % 0x1000_0000) as i32).to_le_bytes())
                    .collect();
                requant.extend((0..channels).map(|_| (next() % 11) as u8 + 245));
                let stage = OutputStage {
                    bias: Some(&bias),
                    requant: &requant,
                    channels,
                    output_offset: (next() % 21) as i32 - 10,
                    act_min: -128 + (next() % 50).saturating_sub(25) as i32,
                    act_max: 127 - (next() % 50).saturating_sub(25) as i32,
                };
                let mut quants = std::vec![ChannelQuant::default(); channels];
                let form = stage.small_channels_into(0, &mut quants, window_reach(len));
                forms.push(form);
                let want: Vec<Vec<i8>> = starts
                    .iter()
                    .map(|&s| {
                        let x: Vec<i32> = (0..rows)
                            .flat_map(|r| &image[s + r * stride..][..run])
                            .map(|&v| i32::from(v) + i32::from(offset))
                            .collect();
                        w.chunks_exact(len)
                            .enumerate()
                            .map(|(j, wj)| {
                                let acc = x.iter().zip(wj).map(|(&x, &w)| x * i32::from(w)).sum();
                                stage.apply(acc, j)
                            })
                            .collect()
                    })
                    .collect();
                // The four pixels' outputs `gap` apart in one buffer, as a conv's.
                let gap = channels + (next() % 4) as usize;
                let mut region = std::vec![0i8; 3 * gap + channels];
                let quad = WindowQuad {
                    image: &image,
                    starts,
                    rows,
                    run,
                    stride,
                };
                let mut scratch = PACK_SCRATCH;
                channels_offset_quad_i8(
                    &quad,
                    offset,
                    &mut scratch,
                    &w,
                    (&stage, form),
                    &quants,
                    (&mut region, gap),
                )
                .unwrap();
                let got: Vec<Vec<i8>> = (0..4)
                    .map(|k| region[k * gap..][..channels].to_vec())
                    .collect();
                assert_eq!(got, want, "run {run} rows {rows} channels {channels}");
            }
        }
        for form in [Finish::Exact, Finish::Small, Finish::SmallFullRange] {
            assert!(forms.contains(&form), "{form:?} not exercised");
        }
    }

    /// Windows longer than [`QUAD_CAP`], runs that are no multiple of 4, outputs or
    /// weights of the wrong length, and windows past the image are refused.
    #[test]
    fn refuses_what_does_not_fit() {
        let image = [1i8; 600];
        let requant = [0, 0, 0, 0x40, 0];
        let stage = OutputStage {
            bias: None,
            requant: &requant,
            channels: 2,
            output_offset: 0,
            act_min: -128,
            act_max: 127,
        };
        let quants = [ChannelQuant::default(); 2];
        let run_case = |run: usize, start: usize, weights: usize, outs: usize| {
            let quad = WindowQuad {
                image: &image,
                starts: [0, 4, 8, start],
                rows: 1,
                run,
                stride: run,
            };
            let w = std::vec![1i8; weights];
            let mut region = [0i8; 12];
            let gap = 3;
            let outs = (&mut region[..3 * gap + outs], gap);
            let mut scratch = PACK_SCRATCH;
            channels_offset_quad_i8(
                &quad,
                3,
                &mut scratch,
                &w,
                (&stage, Finish::Exact),
                &quants,
                outs,
            )
        };
        assert!(run_case(8, 12, 16, 2).is_ok());
        assert_eq!(
            run_case(QUAD_CAP + 4, 12, 2 * (QUAD_CAP + 4), 2),
            Err(Error::KernelArgs)
        );
        assert_eq!(run_case(6, 12, 12, 2), Err(Error::KernelArgs));
        assert_eq!(run_case(8, 12, 15, 2), Err(Error::KernelArgs));
        assert_eq!(run_case(8, 12, 16, 3), Err(Error::KernelArgs));
        assert_eq!(run_case(8, 595, 16, 2), Err(Error::KernelArgs));
    }
}
