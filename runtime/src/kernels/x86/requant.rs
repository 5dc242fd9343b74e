//! The output stage on eight `i32` lanes, bit-identical to `OutputStage::finish`.

use core::arch::x86_64::*;

use crate::fixed_point::{MAX_SHIFT, MIN_SHIFT};
use crate::format::REQUANT_ENTRY_LEN;
use crate::kernels::OutputStage;

/// Eight channels' bias and requantization as vectors (lane `i` = channel `i`).
#[derive(Clone, Copy)]
pub(super) struct Quant8 {
    bias: __m256i,
    multiplier: __m256i,
    left: __m256i,
    right: __m256i,
    /// `2^right − 1` and half of it: the rounding divide's mask and threshold.
    mask: __m256i,
    half: __m256i,
    /// Whether a lane's multiplier is `i32::MIN`, the only one that can saturate
    /// (never in a validated model).
    saturating: bool,
}

impl Quant8 {
    /// All zero (multiplier 0): lanes of channels that do not exist.
    #[target_feature(enable = "avx2")]
    pub(super) fn zero() -> Self {
        let z = _mm256_setzero_si256();
        Quant8 {
            bias: z,
            multiplier: z,
            left: z,
            right: z,
            mask: z,
            half: z,
            saturating: false,
        }
    }

    /// Channels `c0..c0 + 8` of `stage` (lanes past its channels hold anything), or with
    /// `twice`, channels `c0..c0 + 4` in both halves (two pixels side by side). Read
    /// straight from the stage's bytes, as `OutputStage::channel` decodes them.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn load(stage: &OutputStage<'_>, c0: usize, twice: bool) -> Self {
        let bias = stage
            .bias
            .map_or(_mm256_setzero_si256(), |b| lanes_i32(b, 4 * c0));
        let (multiplier, shift) = if stage.requant.len() == REQUANT_ENTRY_LEN as usize {
            let (m, s) = stage.requant(0);
            (_mm256_set1_epi32(m), _mm256_set1_epi32(s))
        } else {
            let shifts = 4 * stage.channels + c0;
            (
                lanes_i32(stage.requant, 4 * c0),
                lanes_i8(stage.requant, shifts),
            )
        };
        let dup = |v: __m256i| {
            if twice {
                _mm256_permute2x128_si256::<0x00>(v, v)
            } else {
                v
            }
        };
        Self::from_lanes(dup(bias), dup(multiplier), dup(shift))
    }

    /// The bias lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn bias(&self) -> __m256i {
        self.bias
    }

    /// The same channels with another bias.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn with_bias(self, bias: __m256i) -> Self {
        Quant8 { bias, ..self }
    }

    /// One `(multiplier, shift)` pair in every lane, no bias.
    #[target_feature(enable = "avx2")]
    pub(super) fn splat(multiplier: i32, shift: i32) -> Self {
        let (m, s) = (_mm256_set1_epi32(multiplier), _mm256_set1_epi32(shift));
        Self::from_lanes(_mm256_setzero_si256(), m, s)
    }

    /// `Requant::new` on each lane: clamp the shift, split it into left and right.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn from_lanes(bias: __m256i, multiplier: __m256i, shift: __m256i) -> Self {
        let shift = _mm256_min_epi32(
            _mm256_max_epi32(shift, _mm256_set1_epi32(MIN_SHIFT)),
            _mm256_set1_epi32(MAX_SHIFT),
        );
        let zero = _mm256_setzero_si256();
        let right = _mm256_max_epi32(_mm256_sub_epi32(zero, shift), zero);
        let one = _mm256_set1_epi32(1);
        let mask = _mm256_sub_epi32(_mm256_sllv_epi32(one, right), one);
        let min = _mm256_cmpeq_epi32(multiplier, _mm256_set1_epi32(i32::MIN));
        Quant8 {
            bias,
            multiplier,
            left: _mm256_max_epi32(shift, zero),
            right,
            mask,
            half: _mm256_srli_epi32::<1>(mask),
            saturating: _mm256_movemask_epi8(min) != 0,
        }
    }

    /// `Requant::apply` on each lane (the bias is not added here).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn requant(&self, x: __m256i) -> __m256i {
        // `x.wrapping_shl(left)`, `left ≤ 30`.
        let a = _mm256_sllv_epi32(x, self.left);
        // `(a · m + 2^30) >> 31` in 64 bits, even and odd lanes apart; bits 31..62 of the
        // sum are the `i32` result.
        let round = _mm256_set1_epi64x(1 << 30);
        let even = _mm256_add_epi64(_mm256_mul_epi32(a, self.multiplier), round);
        let odd = _mm256_add_epi64(
            _mm256_mul_epi32(
                _mm256_srli_epi64::<32>(a),
                _mm256_srli_epi64::<32>(self.multiplier),
            ),
            round,
        );
        let high = _mm256_blend_epi32::<0b1010_1010>(
            _mm256_srli_epi64::<31>(even),
            _mm256_slli_epi64::<1>(odd),
        );
        // The one saturating case, `MIN · MIN`: the sum gave `MIN`, the answer is `MAX`.
        let high = if self.saturating {
            let min = _mm256_set1_epi32(i32::MIN);
            let saturate = _mm256_and_si256(
                _mm256_cmpeq_epi32(a, min),
                _mm256_cmpeq_epi32(self.multiplier, min),
            );
            _mm256_xor_si256(high, saturate)
        } else {
            high
        };
        // Rounding divide by `2^right`: gemmlowp's mask and threshold.
        let remainder = _mm256_and_si256(high, self.mask);
        let negative = _mm256_cmpgt_epi32(_mm256_setzero_si256(), high); // −1 where high < 0
        let threshold = _mm256_sub_epi32(self.half, negative);
        let up = _mm256_cmpgt_epi32(remainder, threshold); // −1 where rounding up
        _mm256_sub_epi32(_mm256_srav_epi32(high, self.right), up)
    }
}

/// `bytes[at..at + 32]` as eight little-endian `i32`, zeros past the end.
#[target_feature(enable = "avx2")]
#[inline]
fn lanes_i32(bytes: &[u8], at: usize) -> __m256i {
    if let Some(v) = bytes.get(at..at + 32) {
        #[allow(unsafe_code)]
        // SAFETY: `v` is 32 readable bytes; the load is unaligned.
        return unsafe { _mm256_loadu_si256(v.as_ptr().cast()) };
    }
    // The last channels: a masked load of the whole lanes there are (no copy through
    // memory, which would stall the load).
    let Some(rest) = bytes.get(at..).filter(|r| r.len() >= 4) else {
        return _mm256_setzero_si256();
    };
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((rest.len() / 4) as i32), lanes);
    #[allow(unsafe_code)]
    // SAFETY: the lanes the mask selects, `i < rest.len() / 4 < 8`, are bytes
    // `4i .. 4i + 4` of `rest`, all readable; masked-off lanes are not accessed.
    unsafe {
        _mm256_maskload_epi32(rest.as_ptr().cast(), mask)
    }
}

/// `bytes[at..at + 8]` as eight `i8`, sign-extended, zeros past the end.
#[target_feature(enable = "avx2")]
#[inline]
fn lanes_i8(bytes: &[u8], at: usize) -> __m256i {
    let v = match bytes.get(at..at + 8).map(<[u8; 8]>::try_from) {
        Some(Ok(v)) => u64::from_le_bytes(v),
        // The last channels: the eight bytes that end where `bytes` ends, moved down.
        _ => match bytes.last_chunk::<8>() {
            Some(&end) if at < bytes.len() => {
                u64::from_le_bytes(end) >> (8 * (at + 8 - bytes.len()))
            }
            _ => u64::from_le_bytes(padded(bytes, at)),
        },
    };
    _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(v as i64))
}

/// `bytes[at..]` cut or padded with zeros to `N` bytes.
#[cold]
fn padded<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut v = [0u8; N];
    for (d, &b) in v.iter_mut().zip(bytes.get(at..).unwrap_or(&[])) {
        *d = b;
    }
    v
}

/// The output stage's constants as vectors.
#[derive(Clone, Copy)]
pub(super) struct Finish {
    offset: __m256i,
    act_min: __m256i,
    act_max: __m256i,
}

impl Finish {
    /// A weighted op's output offset and clamps.
    #[target_feature(enable = "avx2")]
    pub(super) fn new(stage: &OutputStage<'_>) -> Self {
        Self::with(stage.output_offset, stage.act_min, stage.act_max)
    }

    /// An output offset and the clamps of `clamp_to_i8`.
    #[target_feature(enable = "avx2")]
    pub(super) fn with(output_offset: i32, act_min: i32, act_max: i32) -> Self {
        Finish {
            offset: _mm256_set1_epi32(output_offset),
            act_min: _mm256_set1_epi32(act_min.clamp(-128, 127)),
            act_max: _mm256_set1_epi32(act_max.clamp(-128, 127)),
        }
    }

    /// `OutputStage::finish` of each lane of `acc` with its lane of `q`, as `i8`
    /// values in `i32` lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn apply(&self, q: &Quant8, acc: __m256i) -> __m256i {
        self.output(q.requant(_mm256_add_epi32(acc, q.bias)))
    }

    /// `clamp_to_i8(v + output_offset, act_min, act_max)` on each lane, as one clamp to
    /// the bounds clamped to `i8` (equal for every order of the bounds).
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) fn output(&self, v: __m256i) -> __m256i {
        let v = _mm256_add_epi32(v, self.offset);
        _mm256_min_epi32(_mm256_max_epi32(v, self.act_min), self.act_max)
    }
}

/// Eight `i8` values held in `i32` lanes (from [`Finish::apply`]) as bytes.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) fn bytes8(v: __m256i) -> [i8; 8] {
    // i16 lanes `v0..v3 v0..v3 | v4..v7 v4..v7`; the two low quarters, then bytes.
    let words = _mm256_permute4x64_epi64::<0b1000>(_mm256_packs_epi32(v, v));
    let bytes = _mm_packs_epi16(_mm256_castsi256_si128(words), _mm_setzero_si128());
    _mm_cvtsi128_si64(bytes).to_le_bytes().map(|b| b as i8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::ChannelQuant;

    /// Lane for lane equal to `OutputStage::finish`, including what the property tests
    /// do not draw: `i32::MIN` multipliers (the saturating case), every shift, clamp
    /// bounds outside the `i8` range or in the wrong order, per-tensor requantization.
    #[test]
    fn matches_output_stage() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..4000 {
            let channels = 1 + (next() % 12) as usize;
            let per_tensor = round % 5 == 0;
            let n = if per_tensor { 1 } else { channels };
            let mut requant = std::vec::Vec::new();
            for _ in 0..n {
                let m = match next() % 5 {
                    0 => i32::MIN,
                    1 => i32::MAX,
                    2 => 0,
                    _ => next() as i32,
                };
                requant.extend(m.to_le_bytes());
            }
            requant.extend((0..n).map(|_| (next() % 70) as u8 as i8 as u8 ^ 0xe0));
            let bias: std::vec::Vec<u8> = (0..channels)
                .flat_map(|_| (next() as i32).to_le_bytes())
                .collect();
            let bound = |v: u64| (v % 600) as i32 - 300;
            let stage = OutputStage {
                bias: (round % 3 != 0).then_some(&bias[..]),
                requant: &requant,
                channels,
                output_offset: bound(next()),
                act_min: bound(next()),
                act_max: bound(next()),
            };
            stage.check().unwrap();
            // SAFETY: AVX2 was detected above.
            #[allow(unsafe_code)]
            unsafe {
                check(&stage, &mut next);
            }
        }
    }

    #[target_feature(enable = "avx2")]
    fn check(stage: &OutputStage<'_>, next: &mut impl FnMut() -> u64) {
        let f = Finish::new(stage);
        for twice in [false, true] {
            let q = Quant8::load(stage, 0, twice);
            let accs: [i32; 8] = core::array::from_fn(|j| match next() % 4 {
                0 => i32::MIN >> (j % 3),
                _ => next() as i32,
            });
            let acc = _mm256_setr_epi32(
                accs[0], accs[1], accs[2], accs[3], accs[4], accs[5], accs[6], accs[7],
            );
            let got = bytes8(f.apply(&q, acc));
            for (j, (&g, &a)) in got.iter().zip(&accs).enumerate() {
                let c = if twice { j % 4 } else { j };
                if c < stage.channels {
                    let want: ChannelQuant = stage.channel(c);
                    assert_eq!(g, stage.finish(&want, a), "lane {j} acc {a} {stage:?}");
                }
            }
        }
    }
}
