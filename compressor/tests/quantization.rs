//! Quantization against hand-computed numbers: the straight-through gradients, affine
//! parameters, per-tensor and per-channel fake quantization, and QAT bound to LeNet-5.

use anyhow::{Context, Result};
use candle_core::{Device, Tensor, Var};
use sprig_compressor::config::{ConfigError, ConfigList};
use sprig_compressor::export::calibration_json;
use sprig_compressor::models::Model;
use sprig_compressor::quant::{
    fake_quantize_tensor, fake_quantize_weight, quantize_weight_integers, symmetric_qmax,
    weight_scales, ClippedStraightThrough, QParams, QatQuantizer, QuantGrad, QuantRange, Quantizer,
    StraightThrough,
};
use sprig_compressor::Error;

fn cpu() -> Device {
    Device::Cpu
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol, "{what}[{i}]: got {a}, expected {e}");
    }
}

/// Value and gradient (of `sum`) of `grad.apply(x, q, range)` at `x`.
fn value_and_grad(
    grad: &dyn QuantGrad,
    x: &[f32],
    q: &[f32],
    range: QuantRange,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let x = Var::from_slice(x, x.len(), &cpu())?;
    let q = Tensor::from_slice(q, q.len(), &cpu())?;
    let y = grad.apply(x.as_tensor(), &q, range)?;
    let grads = y.sum_all()?.backward()?;
    let g = grads.get(x.as_tensor()).context("no gradient reached x")?;
    Ok((values(&y)?, values(g)?))
}

// Dyadic values, so `x + (q - x)` is exact and the value check can be exact too.
const X: [f32; 7] = [-2.0, -1.0, -0.25, 0.375, 1.75, 2.0, 5.0];
const Q: [f32; 7] = [-1.0, -1.0, 0.0, 0.5, 2.0, 2.0, 2.0];
const RANGE: QuantRange = QuantRange {
    low: -1.0,
    high: 2.0,
};

#[test]
fn straight_through_passes_the_gradient_unchanged() -> Result<()> {
    let (value, grad) = value_and_grad(&StraightThrough, &X, &Q, RANGE)?;
    assert_eq!(value, Q);
    assert_eq!(grad, [1.0; 7]);
    Ok(())
}

#[test]
fn clipped_straight_through_blocks_the_gradient_outside_the_range() -> Result<()> {
    let (value, grad) = value_and_grad(&ClippedStraightThrough, &X, &Q, RANGE)?;
    assert_eq!(value, Q);
    // Inside [-1, 2], bounds included: -1, -0.25, 0.375, 1.75, 2. Outside: -2, 5.
    assert_eq!(grad, [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
    Ok(())
}

#[test]
fn asymmetric_qparams_match_hand_computation() {
    // [-1, 3] at 8 bits: qmin = -128, qmax = 127, scale = (3 - (-1)) / 255 = 4/255;
    // zero point = round(qmin - min/scale) = round(-128 + 1/(4/255)) = round(-128 + 63.75)
    //            = round(-64.25) = -64.
    let q = QParams::asymmetric(-1.0, 3.0, 8);
    assert_eq!((q.qmin, q.qmax), (-128, 127));
    assert!((q.scale - 4.0 / 255.0).abs() < 1e-9, "scale {}", q.scale);
    assert_eq!(q.zero_point, -64);
    // Covered range: scale·(qmin - zp) = -64·4/255, scale·(qmax - zp) = 191·4/255.
    let r = q.range();
    assert!(
        (r.low - (-64.0 * 4.0 / 255.0)).abs() < 1e-6,
        "low {}",
        r.low
    );
    assert!(
        (r.high - 191.0 * 4.0 / 255.0).abs() < 1e-6,
        "high {}",
        r.high
    );
    // quantize: round(x / scale) + zp, clamped; 0 maps to the zero point exactly.
    assert_eq!(q.quantize(0.0), -64);
    assert_eq!(q.quantize(1.0), 0); // round(63.75) = 64, 64 - 64 = 0
    assert_eq!(q.quantize(10.0), 127); // clamped

    // A range not containing 0 is widened to contain it: [0.5, 2] → [0, 2], scale 2/255,
    // zero point round(-128 - 0) = -128.
    let q = QParams::asymmetric(0.5, 2.0, 8);
    assert!((q.scale - 2.0 / 255.0).abs() < 1e-9);
    assert_eq!(q.zero_point, -128);
    // 4 bits: qmin = -8, qmax = 7; [-1, 2] → scale 3/15 = 0.2, zp = round(-8 + 5) = -3.
    let q = QParams::asymmetric(-1.0, 2.0, 4);
    assert_eq!((q.qmin, q.qmax, q.zero_point), (-8, 7, -3));
    assert!((q.scale - 0.2).abs() < 1e-7);
}

#[test]
fn fake_quantize_tensor_matches_hand_computation() -> Result<()> {
    let q = QParams::asymmetric(-1.0, 3.0, 8); // scale s = 4/255, zp = -64 (see above)
    let s = 4.0f32 / 255.0;
    let x = [0.0f32, 1.0, -1.0, 0.01, 0.5, 3.0, 5.0, -3.0];
    // x/s, rounded half away from zero, plus zp, clamped to [-128, 127], minus zp, times s:
    //   0    →    0   → -64  →   0·s = 0
    //   1    →  63.75 →  0   →  64·s = 1.0039216
    //  -1    → -63.75 → -128 → -64·s = -1.0039216
    //   0.01 →  0.6375 → -63 →   1·s = 0.0156863
    //   0.5  →  31.875 → -32 →  32·s = 0.5019608
    //   3    → 191.25 → 127  → 191·s = 2.9960785
    //   5    → 318.75 → 255 → clamped 127 → 191·s
    //  -3    → -191.25 → -255 → clamped -128 → -64·s
    let expected = [
        0.0,
        64.0 * s,
        -64.0 * s,
        s,
        32.0 * s,
        191.0 * s,
        191.0 * s,
        -64.0 * s,
    ];
    let t = Tensor::from_slice(&x, x.len(), &cpu())?;
    let y = fake_quantize_tensor(&t, q, &StraightThrough)?;
    assert_close(&values(&y)?, &expected, 1e-6, "fake_quantize_tensor");
    Ok(())
}

#[test]
fn per_channel_weight_fake_quant_matches_hand_computation() -> Result<()> {
    // Row 0: max|w| = 1.27 → scale 1.27/127 = 0.01; row 1: max|w| = 2.54 → scale 0.02.
    let w = Tensor::from_slice(&[0.5f32, -1.27, 0.333, 2.54, 0.013, -1.0], (2, 3), &cpu())?;
    let scales = weight_scales(&w, 8)?;
    assert_close(&scales, &[0.01, 0.02], 1e-8, "8-bit scales");
    // Row 0: 50, -127, round(33.3) = 33; row 1: 127, round(0.65) = 1, -50.
    assert_eq!(
        values(&quantize_weight_integers(&w, &scales, 8)?)?,
        [50.0, -127.0, 33.0, 127.0, 1.0, -50.0]
    );
    let (fq, used) = fake_quantize_weight(&w, 8, &StraightThrough)?;
    assert_eq!(used, scales);
    assert_eq!(fq.dims(), [2, 3]);
    assert_close(
        &values(&fq)?,
        &[0.5, -1.27, 0.33, 2.54, 0.02, -1.0],
        1e-6,
        "8-bit weight",
    );
    Ok(())
}

#[test]
fn four_bit_weights_use_seven_levels_each_side() -> Result<()> {
    assert_eq!(symmetric_qmax(4), 7);
    assert_eq!(symmetric_qmax(8), 127);
    // Row 0: max|w| = 0.7 → scale 0.7/7 = 0.1: 7, round(-2.6) = -3, round(3.6) = 4, round(0.4) = 0.
    // Row 1: max|w| = 1.4 → scale 0.2: -7, round(2.75) = 3, round(5.65) = 6, round(-0.35) = 0.
    let w = Tensor::from_slice(
        &[0.7f32, -0.26, 0.36, 0.04, -1.4, 0.55, 1.13, -0.07],
        (2, 4),
        &cpu(),
    )?;
    let (fq, scales) = fake_quantize_weight(&w, 4, &StraightThrough)?;
    assert_close(&scales, &[0.1, 0.2], 1e-7, "4-bit scales");
    assert_eq!(
        values(&quantize_weight_integers(&w, &scales, 4)?)?,
        [7.0, -3.0, 4.0, 0.0, -7.0, 3.0, 6.0, 0.0]
    );
    assert_close(
        &values(&fq)?,
        &[0.7, -0.3, 0.4, 0.0, -1.4, 0.6, 1.2, 0.0],
        1e-6,
        "4-bit weight",
    );
    Ok(())
}

const QAT_CONFIG: &str = r#"[{"op_types": ["Conv2d", "Linear"], "quant_types": ["input", "weight", "output"], "quant_bits": 8}]"#;

/// A batch of 2 images whose pixels span exactly `[lo, hi]`.
fn batch_spanning(lo: f32, hi: f32) -> Result<Tensor> {
    let n = 2 * 28 * 28;
    let v: Vec<f32> = (0..n)
        .map(|i| lo + (hi - lo) * (i as f32 / (n - 1) as f32))
        .collect();
    Ok(Tensor::from_vec(v, (2, 1, 28, 28), &cpu())?)
}

#[test]
fn qat_tracks_ranges_and_quantizes_lenet5() -> Result<()> {
    let mut model = Model::new("lenet5", 10, &cpu(), 5)?;
    QatQuantizer::new().compress(&mut model.graph, &ConfigList::from_json_str(QAT_CONFIG)?)?;
    let binding = model.graph.quant().context("no quantizer bound")?.clone();
    let layers: Vec<&String> = binding.layers().keys().collect();
    assert_eq!(layers, ["conv1", "conv2", "fc1", "fc2", "fc3"]);

    // Two training forwards; conv1's input is the batch itself, so its tracked range is
    // first the batch's [-1, 1], then the EMA 0.99·old + 0.01·new with the second batch's
    // [-0.5, 2]: min = -0.99 - 0.005 = -0.995, max = 0.99 + 0.02 = 1.01.
    model.graph.forward_t(&batch_spanning(-1.0, 1.0)?, true)?;
    let first = binding.layer("conv1").context("conv1")?.state();
    let r = first
        .input_range
        .context("conv1 input range after one step")?;
    assert_eq!((r.min, r.max), (-1.0, 1.0));
    model.graph.forward_t(&batch_spanning(-0.5, 2.0)?, true)?;
    let r = binding
        .layer("conv1")
        .context("conv1")?
        .state()
        .input_range
        .context("conv1 input range")?;
    assert!(
        (r.min - -0.995).abs() < 1e-6 && (r.max - 1.01).abs() < 1e-6,
        "EMA range {r:?}"
    );
    model.graph.forward_t(&batch_spanning(-1.0, 1.0)?, true)?;

    let out_channels = [
        ("conv1", 6),
        ("conv2", 16),
        ("fc1", 120),
        ("fc2", 84),
        ("fc3", 10),
    ];
    for (name, channels) in out_channels {
        let state = binding.layer(name).context(name)?.state();
        let o = state.output_range.context("output range")?;
        assert!(o.min < o.max, "{name}: output range {o:?}");
        assert!(state.output_qparams.is_some(), "{name}: output qparams");
        // Only conv1 reads a tensor that is not on a grid yet (the graph input); every
        // later layer reads its producer's grid, as the int8 runtime does, so its input
        // hook never runs.
        if name == "conv1" {
            let i = state.input_range.context("input range")?;
            assert!(i.min < i.max, "{name}: input range {i:?}");
            assert!(state.input_qparams.is_some(), "{name}: input qparams");
        } else {
            assert_eq!(state.input_range, None, "{name}: input re-quantized");
            assert_eq!(state.input_qparams, None, "{name}: input re-quantized");
        }
        assert_eq!(state.weight_scales.len(), channels, "{name}: weight scales");
        assert_eq!(state.weight_bits, Some(8));
        assert_eq!(state.steps, 3, "{name}: training steps");
    }
    // conv1 is followed by ReLU, and its output is quantized after the ReLU, so its
    // tracked output range starts at 0.
    let conv1 = binding.layer("conv1").context("conv1")?.state();
    assert_eq!(conv1.output_range.context("conv1 output")?.min, 0.0);

    let calibration = calibration_json(&model.graph)?;
    assert_eq!(calibration["quantizer"], "QAT_Quantizer");
    for (name, channels) in out_channels {
        let layer = &calibration["layers"][name];
        let scales = layer["weight"]["scales"]
            .as_array()
            .with_context(|| format!("{name}: weight scales"))?;
        assert_eq!(scales.len(), channels, "{name}");
        assert!(
            scales.iter().all(|s| s.as_f64().is_some_and(|s| s > 0.0)),
            "{name}: {scales:?}"
        );
        for kind in ["input", "output"] {
            let scale = layer[kind]["scale"]
                .as_f64()
                .with_context(|| format!("{name}: {kind} scale"))?;
            assert!(scale > 0.0, "{name}: {kind} scale {scale}");
        }
        assert_eq!(layer["bits"]["weight"], 8);
    }

    // Eval mode: finite logits, and the tracked ranges stay frozen.
    let before = binding.layer("fc3").context("fc3")?.state();
    let logits = model.graph.forward(&batch_spanning(-3.0, 3.0)?)?;
    assert_eq!(logits.dims(), [2, 10]);
    assert!(values(&logits)?.iter().all(|v| v.is_finite()));
    let after = binding.layer("fc3").context("fc3")?.state();
    assert_eq!(before.input_range, after.input_range);
    assert_eq!(before.output_range, after.output_range);

    // The weights the forward pass computes with sit on a 255-level grid per channel.
    for node in model.graph.nodes() {
        let Some(w) = node.layer.weight() else {
            continue;
        };
        let fq = binding.quantize_weight(&node.name, w, false)?;
        let scales = binding
            .layer(&node.name)
            .context("layer")?
            .state()
            .weight_scales;
        let rows = fq.flatten_from(1)?.to_vec2::<f32>()?;
        for (c, row) in rows.iter().enumerate() {
            let mut distinct: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
            distinct.sort_unstable();
            distinct.dedup();
            assert!(
                distinct.len() <= 255,
                "{} channel {c}: {} distinct values",
                node.name,
                distinct.len()
            );
            for v in row {
                let k = v / scales[c];
                assert!(
                    (k - k.round()).abs() < 1e-3 && k.abs() <= 127.0 + 1e-3,
                    "{}[{c}]: {v} off grid",
                    node.name
                );
            }
        }
    }
    Ok(())
}

#[test]
fn qat_rejects_nine_bits_and_names_the_valid_range() -> Result<()> {
    let mut model = Model::new("lenet5", 10, &cpu(), 5)?;
    let config = ConfigList::from_json_str(
        r#"[{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": 9}]"#,
    )?;
    let err = QatQuantizer::new()
        .compress(&mut model.graph, &config)
        .expect_err("9 bits accepted");
    let message = err.to_string();
    assert!(
        matches!(
            &err,
            Error::Config(e) if matches!(**e, ConfigError::BitsOutOfRange { bits: 9, .. })
        ),
        "unexpected error: {message}"
    );
    assert!(message.contains("2..=8"), "no valid range in: {message}");
    assert!(
        message.contains("9 bits") && message.contains("config_list[0]"),
        "{message}"
    );
    assert!(
        model.graph.quant().is_none(),
        "a rejected config must not bind the quantizer"
    );
    Ok(())
}

/// The value of a fake-quantized tensor is the quantized value whatever the input's
/// magnitude: an activation far outside a frozen range must come out as the clamp value.
#[test]
fn straight_through_keeps_the_exact_value_for_outliers() -> Result<()> {
    let q = QParams::asymmetric(-1.0, 3.0, 8); // clamps to [-64·s, 191·s], s = 4/255
    let s = 4.0f32 / 255.0;
    let x = [3.5f32, 1e4, 1e8, -1e8];
    let t = Tensor::from_slice(&x, x.len(), &cpu())?;
    let expected = [191.0 * s, 191.0 * s, 191.0 * s, -64.0 * s];
    for grad in [&StraightThrough as &dyn QuantGrad, &ClippedStraightThrough] {
        assert_eq!(values(&fake_quantize_tensor(&t, q, grad)?)?, expected);
    }
    Ok(())
}
