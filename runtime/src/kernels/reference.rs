//! Plain-loop oracles for every kernel: one output element at a time, straight from
//! the TFLite reference formulas, with explicit bounds tests for padding. Slow and
//! obviously correct; the fast kernels are checked bit-exact against them (property
//! tests in `tests/kernels_prop.rs`), and they are checked against hand-computed cases
//! (the unit tests below).
//!
//! Only built for tests and with `std`. These functions index slices directly and
//! panic on inconsistent arguments: they are oracles, never called by `Model::run`.
#![allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::too_many_arguments
)]

use super::add::AddParams;
use super::fully_connected::FcShape;
use super::pooling::{MeanParams, PoolKind};
use super::softmax::SoftmaxParams;
use super::{ConvGeometry, OutputStage};
use crate::fixed_point::{
    exp_on_negative_values, get_reciprocal, multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_greater_than_one, rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
};

fn le_i32(b: &[u8], i: usize) -> i32 {
    i32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
}

/// Bias, requantize, offset and clamp one accumulator, decoding the stage's bytes here.
fn finish(stage: &OutputStage<'_>, acc: i32, c: usize) -> i8 {
    let bias = stage.bias.map_or(0, |b| le_i32(b, c));
    let (m, s) = if stage.requant.len() == 5 {
        (le_i32(stage.requant, 0), stage.requant[4] as i8)
    } else {
        (
            le_i32(stage.requant, c),
            stage.requant[4 * stage.channels + c] as i8,
        )
    };
    let mut v = acc.wrapping_add(bias);
    v = multiply_by_quantized_multiplier(v, m, i32::from(s));
    v = v.wrapping_add(stage.output_offset);
    v = v.max(stage.act_min).min(stage.act_max);
    v.clamp(-128, 127) as i8
}

/// Input position for output `o` and kernel tap `k`, or `None` in the padding.
fn tap(o: usize, k: usize, stride: usize, pad: usize, size: usize) -> Option<usize> {
    let pos = (o * stride + k) as isize - pad as isize;
    (pos >= 0 && (pos as usize) < size).then_some(pos as usize)
}

fn nhwc(h: usize, w: usize, c: usize, b: usize, y: usize, x: usize, ch: usize) -> usize {
    ((b * h + y) * w + x) * c + ch
}

/// Oracle for [`super::conv::conv2d`].
pub fn conv2d(
    g: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..g.out_c {
                    let mut acc = 0i32;
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let Some(iy) = tap(oy, ky, g.stride_h, g.pad_top, g.in_h) else {
                                continue;
                            };
                            let Some(ix) = tap(ox, kx, g.stride_w, g.pad_left, g.in_w) else {
                                continue;
                            };
                            for ic in 0..g.in_c {
                                let x =
                                    i32::from(input[nhwc(g.in_h, g.in_w, g.in_c, b, iy, ix, ic)]);
                                let w = i32::from(
                                    filter
                                        [((oc * g.kernel_h + ky) * g.kernel_w + kx) * g.in_c + ic],
                                );
                                acc = acc.wrapping_add((x + input_offset).wrapping_mul(w));
                            }
                        }
                    }
                    output[nhwc(g.out_h, g.out_w, g.out_c, b, oy, ox, oc)] = finish(stage, acc, oc);
                }
            }
        }
    }
}

/// Oracle for [`super::depthwise::depthwise_conv2d`].
pub fn depthwise_conv2d(
    g: &ConvGeometry,
    depth_multiplier: usize,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for ic in 0..g.in_c {
                    for m in 0..depth_multiplier {
                        let oc = ic * depth_multiplier + m;
                        let mut acc = 0i32;
                        for ky in 0..g.kernel_h {
                            for kx in 0..g.kernel_w {
                                let Some(iy) = tap(oy, ky, g.stride_h, g.pad_top, g.in_h) else {
                                    continue;
                                };
                                let Some(ix) = tap(ox, kx, g.stride_w, g.pad_left, g.in_w) else {
                                    continue;
                                };
                                let x =
                                    i32::from(input[nhwc(g.in_h, g.in_w, g.in_c, b, iy, ix, ic)]);
                                let w = i32::from(filter[(ky * g.kernel_w + kx) * g.out_c + oc]);
                                acc = acc.wrapping_add((x + input_offset).wrapping_mul(w));
                            }
                        }
                        output[nhwc(g.out_h, g.out_w, g.out_c, b, oy, ox, oc)] =
                            finish(stage, acc, oc);
                    }
                }
            }
        }
    }
}

/// Oracle for [`super::fully_connected::fully_connected`].
pub fn fully_connected(
    shape: &FcShape,
    input_offset: i32,
    stage: &OutputStage<'_>,
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    let (n, k) = (shape.out_features, shape.in_features);
    for b in 0..shape.batch {
        for o in 0..n {
            let mut acc = 0i32;
            for i in 0..k {
                let x = i32::from(input[b * k + i]);
                let w = i32::from(weights[o * k + i]);
                acc = acc.wrapping_add((x + input_offset).wrapping_mul(w));
            }
            output[b * n + o] = finish(stage, acc, o);
        }
    }
}

/// Oracle for [`super::pooling::pool2d`].
pub fn pool2d(
    kind: PoolKind,
    g: &ConvGeometry,
    act_min: i32,
    act_max: i32,
    input: &[i8],
    output: &mut [i8],
) {
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for c in 0..g.in_c {
                    let mut max = i32::from(i8::MIN);
                    let mut sum = 0i32;
                    let mut count = 0i32;
                    for ky in 0..g.kernel_h {
                        for kx in 0..g.kernel_w {
                            let Some(iy) = tap(oy, ky, g.stride_h, g.pad_top, g.in_h) else {
                                continue;
                            };
                            let Some(ix) = tap(ox, kx, g.stride_w, g.pad_left, g.in_w) else {
                                continue;
                            };
                            let x = i32::from(input[nhwc(g.in_h, g.in_w, g.in_c, b, iy, ix, c)]);
                            max = max.max(x);
                            sum = sum.wrapping_add(x);
                            count += 1;
                        }
                    }
                    let v = match kind {
                        PoolKind::Max => max,
                        // TFLite: round half away from zero.
                        PoolKind::Average if sum > 0 => sum.wrapping_add(count / 2) / count,
                        PoolKind::Average => sum.wrapping_sub(count / 2) / count,
                    };
                    output[nhwc(g.out_h, g.out_w, g.out_c, b, oy, ox, c)] =
                        v.max(act_min).min(act_max).clamp(-128, 127) as i8;
                }
            }
        }
    }
}

/// Oracle for [`super::conv_pool::conv2d_max_pool`]: the conv's whole output, then a
/// max pool over it with the full int8 range.
pub fn conv2d_max_pool(
    conv: &ConvGeometry,
    pool: &ConvGeometry,
    input_offset: i32,
    stage: &OutputStage<'_>,
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    let mut full = std::vec![0i8; conv.batch * conv.out_h * conv.out_w * conv.out_c];
    conv2d(conv, input_offset, stage, filter, input, &mut full);
    pool2d(PoolKind::Max, pool, -128, 127, &full, output);
}

/// Oracle for [`super::pooling::global_avg_pool`].
pub fn global_avg_pool(dims: [usize; 4], p: &MeanParams, input: &[i8], output: &mut [i8]) {
    let [batch, h, w, c] = dims;
    let count = (h * w) as i32;
    for b in 0..batch {
        for ch in 0..c {
            let mut acc = 0i32;
            for y in 0..h {
                for x in 0..w {
                    let v = i32::from(input[nhwc(h, w, c, b, y, x, ch)]);
                    acc = acc.wrapping_add(v + p.input_offset);
                }
            }
            acc = multiply_by_quantized_multiplier(acc, p.multiplier, p.shift);
            acc = if acc > 0 {
                acc.wrapping_add(count / 2) / count
            } else {
                acc.wrapping_sub(count / 2) / count
            };
            acc = acc.wrapping_add(p.output_offset);
            output[b * c + ch] = acc.max(p.act_min).min(p.act_max).clamp(-128, 127) as i8;
        }
    }
}

/// Oracle for [`super::add::add`].
pub fn add(p: &AddParams, input1: &[i8], input2: &[i8], output: &mut [i8]) {
    for i in 0..output.len() {
        let x1 = (i32::from(input1[i]) + p.input1_offset).wrapping_mul(1 << 20);
        let x2 = (i32::from(input2[i]) + p.input2_offset).wrapping_mul(1 << 20);
        let s1 = multiply_by_quantized_multiplier(x1, p.input1_multiplier, p.input1_shift);
        let s2 = multiply_by_quantized_multiplier(x2, p.input2_multiplier, p.input2_shift);
        let raw = multiply_by_quantized_multiplier(
            s1.wrapping_add(s2),
            p.output_multiplier,
            p.output_shift,
        );
        let v = raw.wrapping_add(p.output_offset);
        output[i] = v.max(p.act_min).min(p.act_max).clamp(-128, 127) as i8;
    }
}

/// Oracle for [`super::softmax::softmax`]: TFLite's two passes, recomputing `exp`.
pub fn softmax(depth: usize, p: &SoftmaxParams, input: &[i8], output: &mut [i8]) {
    for r in 0..input.len() / depth {
        let row = &input[r * depth..(r + 1) * depth];
        let max = i32::from(*row.iter().max().unwrap());
        let exp = |x: i8| -> Option<i32> {
            let diff = i32::from(x) - max;
            (diff >= p.diff_min).then(|| {
                let d = multiply_by_quantized_multiplier_greater_than_one(
                    diff,
                    p.input_multiplier,
                    p.input_left_shift,
                );
                exp_on_negative_values::<5>(d)
            })
        };
        let mut sum = 0i32;
        for &x in row {
            if let Some(e) = exp(x) {
                sum = sum.wrapping_add(rounding_divide_by_pot(e, 12));
            }
        }
        let (scale, bits) = get_reciprocal(sum, 12);
        for (c, &x) in row.iter().enumerate() {
            output[r * depth + c] = match exp(x) {
                Some(e) => {
                    let prod = saturating_rounding_doubling_high_mul(scale, e);
                    let unsat = rounding_divide_by_pot(prod, bits + 31 - 8);
                    (unsat - 128).clamp(-128, 127) as i8
                }
                None => -128,
            };
        }
    }
}

/// Oracle for [`super::argmax::argmax`].
pub fn argmax(depth: usize, input: &[i8], output: &mut [i8]) {
    for r in 0..output.len() {
        let mut best = 0;
        for i in 1..depth {
            if input[r * depth + i] > input[r * depth + best] {
                best = i;
            }
        }
        output[r] = best as i8;
    }
}

#[cfg(test)]
mod tests;

/// Oracle for [`super::binary::binary_conv2d`], the weights as `±1` int8
/// `[OC, KH, KW, C]`.
pub fn binary_conv2d(
    g: &ConvGeometry,
    input_zero_point: i32,
    thresholds: &[i32],
    filter: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    let binary = |v: i8| {
        if i32::from(v) >= input_zero_point {
            1
        } else {
            -1
        }
    };
    for b in 0..g.batch {
        for oy in 0..g.out_h {
            for ox in 0..g.out_w {
                for oc in 0..g.out_c {
                    let mut d = 0i32;
                    for ky in 0..g.kernel_h {
                        let Some(iy) = tap(oy, ky, g.stride_h, g.pad_top, g.in_h) else {
                            continue;
                        };
                        for kx in 0..g.kernel_w {
                            let Some(ix) = tap(ox, kx, g.stride_w, g.pad_left, g.in_w) else {
                                continue;
                            };
                            for c in 0..g.in_c {
                                let x = binary(input[nhwc(g.in_h, g.in_w, g.in_c, b, iy, ix, c)]);
                                let w =
                                    filter[((oc * g.kernel_h + ky) * g.kernel_w + kx) * g.in_c + c];
                                d += x * i32::from(w);
                            }
                        }
                    }
                    let out = &mut output[nhwc(g.out_h, g.out_w, g.out_c, b, oy, ox, oc)];
                    *out = if d >= thresholds[oc] { 1 } else { -1 };
                }
            }
        }
    }
}

/// Oracle for [`super::binary::binary_fully_connected`], the weights as `±1` int8
/// `[OUT, IN]`.
pub fn binary_fully_connected(
    shape: &FcShape,
    input_zero_point: i32,
    thresholds: &[i32],
    weights: &[i8],
    input: &[i8],
    output: &mut [i8],
) {
    let (k, n) = (shape.in_features, shape.out_features);
    for b in 0..shape.batch {
        for o in 0..n {
            let d: i32 = (0..k)
                .map(|i| {
                    let x = if i32::from(input[b * k + i]) >= input_zero_point {
                        1
                    } else {
                        -1
                    };
                    x * i32::from(weights[o * k + i])
                })
                .sum();
            output[b * n + o] = if d >= thresholds[o] { 1 } else { -1 };
        }
    }
}
