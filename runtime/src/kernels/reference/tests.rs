//! The oracles against small cases worked out by hand (arithmetic in the comments).

use super::*;
use crate::fixed_point::{AddQuant, SoftmaxQuant};
use std::vec::Vec;

/// Requant bytes: all LE multipliers, then all shifts as i8.
fn requant(pairs: &[(i32, i32)]) -> Vec<u8> {
    let mut b: Vec<u8> = pairs.iter().flat_map(|p| p.0.to_le_bytes()).collect();
    b.extend(pairs.iter().map(|p| p.1 as i8 as u8));
    b
}

fn bias(values: &[i32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

const HALF: i32 = 1 << 30; // multiplier 0.5 with shift 0

fn stage<'a>(
    bias: Option<&'a [u8]>,
    requant: &'a [u8],
    channels: usize,
    zp: i32,
) -> OutputStage<'a> {
    OutputStage {
        bias,
        requant,
        channels,
        output_offset: zp,
        act_min: -128,
        act_max: 127,
    }
}

fn geom(
    in_hw: (usize, usize),
    c: usize,
    out_hw: (usize, usize),
    oc: usize,
    k: usize,
    s: usize,
    pad: usize,
) -> ConvGeometry {
    ConvGeometry {
        batch: 1,
        in_h: in_hw.0,
        in_w: in_hw.1,
        in_c: c,
        out_h: out_hw.0,
        out_w: out_hw.1,
        out_c: oc,
        kernel_h: k,
        kernel_w: k,
        stride_h: s,
        stride_w: s,
        pad_top: pad,
        pad_left: pad,
    }
}

#[test]
fn conv2d_valid_with_bias_and_clamp() {
    // x − zp(1) = [0 1 2; 3 4 5; 6 7 8], filter [1 2; 3 4], stride 1, no padding:
    // (0,0): 0·1 + 1·2 + 3·3 + 4·4 = 27   (0,1): 1 + 4 + 12 + 20 = 37
    // (1,0): 3 + 8 + 18 + 28 = 57         (1,1): 4 + 10 + 21 + 32 = 67
    // + bias 3 → 30 40 60 70; × 0.5 → 15 20 30 35; + zp(−10) → 5 10 20 25; max 22.
    let input = [1i8, 2, 3, 4, 5, 6, 7, 8, 9];
    let filter = [1i8, 2, 3, 4];
    let (b, r) = (bias(&[3]), requant(&[(HALF, 0)]));
    let mut st = stage(Some(&b), &r, 1, -10);
    st.act_max = 22;
    let g = geom((3, 3), 1, (2, 2), 1, 2, 1, 0);
    let mut out = [0i8; 4];
    conv2d(&g, -1, &st, &filter, &input, &mut out);
    assert_eq!(out, [5, 10, 20, 22]);
}

#[test]
fn conv2d_padded_strided_per_channel() {
    // Same input (offset −1 → 0..8), 3×3 kernel, stride 2, padding 1 → 2×2 output.
    // Channel 0, all-ones filter, M = 0.5·2^-1: window sums 0+1+3+4 = 8, 1+2+4+5 = 12,
    // 3+4+6+7 = 20, 4+5+7+8 = 24 → ×0.25 → 2 3 5 6.
    // Channel 1, all −1, M = 0.5: −8 −12 −20 −24 → −4 −6 −10 −12.
    let input = [1i8, 2, 3, 4, 5, 6, 7, 8, 9];
    let mut filter = [1i8; 18];
    filter[9..].fill(-1);
    let r = requant(&[(HALF, -1), (HALF, 0)]);
    let st = stage(None, &r, 2, 0);
    let g = geom((3, 3), 1, (2, 2), 2, 3, 2, 1);
    let mut out = [0i8; 8];
    conv2d(&g, -1, &st, &filter, &input, &mut out);
    assert_eq!(out, [2, -4, 3, -6, 5, -10, 6, -12]);
}

#[test]
fn depthwise_multiplier_two() {
    // Pixels (c0, c1): (1,−1) (2,−2) / (3,−3) (4,−4); 2×2 kernel, dm 2 → 4 channels.
    // Taps [kh][kw][oc]: (0,0)=[1 2 3 4] (0,1)=[1 1 1 1] (1,0)=0 (1,1)=[−1 0 1 0].
    // oc0 = c0: 1·1 + 2·1 + 3·0 + 4·(−1) = −1     oc1 = c0: 1·2 + 2·1 = 4
    // oc2 = c1: −1·3 − 2·1 − 4·1 = −9             oc3 = c1: −1·4 − 2·1 = −6
    // + bias 1 → 0 5 −8 −5; M = 1 (2^30, shift 1) keeps them; + zp 3 → 3 8 −5 −2.
    let input = [1i8, -1, 2, -2, 3, -3, 4, -4];
    let filter = [1i8, 2, 3, 4, 1, 1, 1, 1, 0, 0, 0, 0, -1, 0, 1, 0];
    let (b, r) = (bias(&[1, 1, 1, 1]), requant(&[(HALF, 1)]));
    let st = stage(Some(&b), &r, 4, 3);
    let g = geom((2, 2), 2, (1, 1), 4, 2, 1, 0);
    let mut out = [0i8; 4];
    depthwise_conv2d(&g, 2, 0, &st, &filter, &input, &mut out);
    assert_eq!(out, [3, 8, -5, -2]);
}

#[test]
fn fully_connected_hand_case() {
    // x − zp(10) = [0 10 20]; W = [1 2 3; −1 0 1]: 0+20+60 = 80, 0+0+20 = 20.
    // + bias [−5 5] → 75 25; M = 0.75·2^-2: SRDHM(75, 0.75) = 56.25 → 56, /4 → 14;
    // SRDHM(25, 0.75) = 18.75 → 19, /4 = 4.75 → 5; + zp(−1) → 13 4.
    let input = [10i8, 20, 30];
    let weights = [1i8, 2, 3, -1, 0, 1];
    let (b, r) = (bias(&[-5, 5]), requant(&[(1_610_612_736, -2)]));
    let st = stage(Some(&b), &r, 2, -1);
    let shape = FcShape {
        batch: 1,
        in_features: 3,
        out_features: 2,
    };
    let mut out = [0i8; 2];
    fully_connected(&shape, -10, &st, &weights, &input, &mut out);
    assert_eq!(out, [13, 4]);
}

#[test]
fn max_and_average_pool() {
    // 2×4 input, 2×2 windows, stride 2: [1 5 | −3 7; 2 0 | 9 −8].
    // max: 5, 9; with act_min 6 → 6, 9.
    // avg: 8/4 = 2 → (8 + 2)/4 = 2; 5/4 → (5 + 2)/4 = 1.
    let input = [1i8, 5, -3, 7, 2, 0, 9, -8];
    let g = geom((2, 4), 1, (1, 2), 1, 2, 2, 0);
    let mut out = [0i8; 2];
    pool2d(PoolKind::Max, &g, 6, 127, &input, &mut out);
    assert_eq!(out, [6, 9]);
    pool2d(PoolKind::Average, &g, -128, 127, &input, &mut out);
    assert_eq!(out, [2, 1]);
}

#[test]
fn average_pool_padding_skips_and_rounds_away_from_zero() {
    // [1 2; 3 5], 2×2 window, stride 1, padding 1 top/left, 0 bottom/right → 2×2:
    // (0,0) {1} → 1; (0,1) {1,2} = 3/2 → (3+1)/2 = 2; (1,0) {1,3} = 4/2 = 2;
    // (1,1) {1,2,3,5} = 11/4 → (11+2)/4 = 3.
    let g = geom((2, 2), 1, (2, 2), 1, 2, 1, 1);
    let mut out = [0i8; 4];
    pool2d(PoolKind::Average, &g, -128, 127, &[1, 2, 3, 5], &mut out);
    assert_eq!(out, [1, 2, 2, 3]);
    // [−1 −4; 0 0]: {−1} = −1; {−1,−4} = −5/2 → (−5−1)/2 = −3; {−1,0} → (−1−1)/2 = −1;
    // {−1,−4,0,0} = −5/4 → (−5−2)/4 = −1.
    pool2d(PoolKind::Average, &g, -128, 127, &[-1, -4, 0, 0], &mut out);
    assert_eq!(out, [-1, -3, -1, -1]);
}

#[test]
fn global_average_pool_hand_case() {
    // ch0 = 1 2 3 4: Σ = 10, M = 1 → 10, (10 + 2)/4 = 3; ch1 = −4 −4 −4 −3: Σ = −15,
    // (−15 − 2)/4 = −4 (−4.25 truncated); + zp 1 → 4, −3.
    let input = [1i8, -4, 2, -4, 3, -4, 4, -3];
    let p = MeanParams {
        input_offset: 0,
        multiplier: HALF,
        shift: 1,
        output_offset: 1,
        act_min: -128,
        act_max: 127,
    };
    let mut out = [0i8; 2];
    global_avg_pool([1, 2, 2, 2], &p, &input, &mut out);
    assert_eq!(out, [4, -3]);
}

#[test]
fn add_hand_case() {
    // Scales 0.5, 0.25 → 1.0: (2^30, 0), (2^30, −1), (2^30, −19) (see fixed_point tests).
    // a = 10 (5.0), b = 8 (2.0): 10·2^20·0.5 = 5·2^20; 8·2^20·0.25 = 2·2^20;
    // 7·2^20 · 0.5 · 2^-19 = 7. a = −3 (−1.5), b = 1 (0.25): −1.5·2^20 + 0.25·2^20 =
    // −1.25·2^20 → −1.25 → −1. Output zero point 5 → 12, 4.
    let q = AddQuant::from_scales(0.5, 0.25, 1.0);
    let p = AddParams {
        input1_offset: 0,
        input2_offset: 0,
        output_offset: 5,
        input1_multiplier: q.input1_multiplier,
        input1_shift: q.input1_shift,
        input2_multiplier: q.input2_multiplier,
        input2_shift: q.input2_shift,
        output_multiplier: q.output_multiplier,
        output_shift: q.output_shift,
        act_min: -128,
        act_max: 127,
    };
    let mut out = [0i8; 2];
    add(&p, &[10, -3], &[8, 1], &mut out);
    assert_eq!(out, [12, 4]);
}

#[test]
fn softmax_hand_cases() {
    let q = SoftmaxQuant::from_scale(1.0, 1.0 / 256.0).unwrap();
    let p = SoftmaxParams {
        input_multiplier: q.input_multiplier,
        input_left_shift: q.input_left_shift,
        diff_min: q.diff_min,
    };
    // Two equal logits: exp(0) = one each, sum = 2 (Q12.19: 2^20), reciprocal 1/2:
    // 0.5 · 256 = 128, − 128 = 0.
    let mut out = [9i8; 2];
    softmax(2, &p, &[5, 5], &mut out);
    assert_eq!(out, [0, 0]);
    // [127, −128] at scale 1/256: diff −255/256, exp = 0.3693, p = 0.7303 / 0.2697;
    // ·256 = 186.96 / 69.04 → 187 / 69, − 128 → 59 / −59.
    softmax(2, &p, &[127, -128], &mut out);
    assert_eq!(out, [59, -59]);
    // A single element: probability 1 → 256 − 128 = 128, clamped to 127.
    let mut one = [0i8; 1];
    softmax(1, &p, &[-7], &mut one);
    assert_eq!(one, [127]);
    // Below diff_min: contributes nothing and outputs −128.
    let p2 = SoftmaxParams {
        diff_min: -100,
        ..p
    };
    softmax(2, &p2, &[100, -1], &mut out);
    assert_eq!(out, [127, -128]);
}

#[test]
fn argmax_first_max_wins() {
    let mut out = [0i8; 2];
    argmax(4, &[3, 7, 7, -1, -5, -5, -6, -5], &mut out);
    assert_eq!(out, [1, 0]);
}
