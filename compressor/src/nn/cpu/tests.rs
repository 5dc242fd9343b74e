//! The custom ops against candle's own: forward values and both gradients through
//! candle's autograd, over the convolution shapes the zoo and ONNX import produce.

use candle_core::{Device, Result, Tensor, Var};

use crate::nn::Conv2dConfig;

fn seeded(shape: &[usize], seed: u64) -> Result<Tensor> {
    // A small LCG keeps the test free of candle's RNG (whose stream may change).
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let n: usize = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}

/// Forward output and the gradients of `Σ y · r` for x and w, by `conv`.
fn run(
    conv: impl Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Var,
    w: &Var,
    r: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    let y = conv(x.as_tensor(), w.as_tensor())?;
    let grads = (&y * r)?.sum_all()?.backward()?;
    let dx = grads.get(x.as_tensor()).expect("dx").clone();
    let dw = grads.get(w.as_tensor()).expect("dw").clone();
    Ok((y, dx, dw))
}

fn configs() -> Vec<(Conv2dConfig, [usize; 4])> {
    vec![
        // lenet5 conv1 and conv2
        (Conv2dConfig::new(1, 6, 5).padding(2), [4, 1, 28, 28]),
        (Conv2dConfig::new(6, 16, 5), [3, 6, 14, 14]),
        // resnet8: 3×3 pad 1, stride 2, 1×1 stride-2 shortcut
        (Conv2dConfig::new(4, 8, 3).padding(1), [2, 4, 9, 9]),
        (
            Conv2dConfig::new(4, 8, 3).stride(2).padding(1),
            [2, 4, 9, 9],
        ),
        (Conv2dConfig::new(4, 8, 1).stride(2), [2, 4, 8, 8]),
        // dscnn: depthwise 3×3 and pointwise 1×1; ONNX: any groups
        (
            Conv2dConfig::new(6, 6, 3).padding(1).groups(6),
            [2, 6, 7, 5],
        ),
        (Conv2dConfig::new(6, 5, 1), [3, 6, 4, 4]),
        (
            Conv2dConfig::new(4, 6, 3).groups(2).stride(3).padding(2),
            [2, 4, 10, 10],
        ),
    ]
}

/// Strided convolutions over non-square inputs, which candle 0.11's own conv2d backward
/// cannot take (it derives the transposed convolution's output padding from the height
/// alone), so these are checked by linearity instead.
fn non_square_configs() -> Vec<(Conv2dConfig, [usize; 4])> {
    vec![
        (
            Conv2dConfig::new(4, 8, 3).stride(2).padding(1),
            [2, 4, 9, 8],
        ),
        (
            Conv2dConfig::new(4, 6, 3).groups(2).stride(3).padding(2),
            [2, 4, 10, 11],
        ),
        (
            Conv2dConfig::new(3, 3, 3).groups(3).stride(2).padding(1),
            [1, 3, 6, 11],
        ),
    ]
}

#[test]
fn conv2d_matches_candle_forward_and_gradients() -> Result<()> {
    for (i, (cfg, dims)) in configs().into_iter().enumerate() {
        let wdims = [
            cfg.out_channels,
            cfg.in_channels / cfg.groups,
            cfg.kernel_size,
            cfg.kernel_size,
        ];
        let x = Var::from_tensor(&seeded(&dims, 3 * i as u64)?)?;
        let w = Var::from_tensor(&seeded(&wdims, 3 * i as u64 + 1)?)?;
        let ours = super::conv2d(x.as_tensor(), w.as_tensor(), None, &cfg)?;
        let r = seeded(ours.dims(), 3 * i as u64 + 2)?;
        let (y0, dx0, dw0) = run(
            |x, w| x.conv2d(w, cfg.padding, cfg.stride, 1, cfg.groups),
            &x,
            &w,
            &r,
        )?;
        let (y1, dx1, dw1) = run(|x, w| super::conv2d(x, w, None, &cfg), &x, &w, &r)?;
        assert_eq!(y0.dims(), y1.dims(), "{cfg:?}");
        assert_eq!(dx0.dims(), dx1.dims(), "{cfg:?}");
        assert_eq!(dw0.dims(), dw1.dims(), "{cfg:?}");
        for (what, a, b) in [("y", &y0, &y1), ("dx", &dx0, &dx1), ("dw", &dw0, &dw1)] {
            let d = max_abs_diff(a, b)?;
            assert!(d < 1e-4, "{cfg:?} {what}: max |Δ| = {d}");
        }
    }
    Ok(())
}

/// With a bias: the same output as candle's conv plus a broadcast add, and the bias
/// gradient equal to candle's.
#[test]
fn conv2d_with_bias_matches_candle() -> Result<()> {
    for (i, (cfg, dims)) in configs().into_iter().enumerate() {
        let wdims = [
            cfg.out_channels,
            cfg.in_channels / cfg.groups,
            cfg.kernel_size,
            cfg.kernel_size,
        ];
        let x = Var::from_tensor(&seeded(&dims, 30 + i as u64)?)?;
        let w = Var::from_tensor(&seeded(&wdims, 40 + i as u64)?)?;
        let b = Var::from_tensor(&seeded(&[cfg.out_channels], 50 + i as u64)?)?;
        let candle = |x: &Tensor, w: &Tensor, b: &Tensor| {
            x.conv2d(w, cfg.padding, cfg.stride, 1, cfg.groups)?
                .broadcast_add(&b.reshape((1, cfg.out_channels, 1, 1))?)
        };
        let ours = |x: &Tensor, w: &Tensor, b: &Tensor| super::conv2d(x, w, Some(b), &cfg);
        let y0 = candle(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
        let r = seeded(y0.dims(), 60 + i as u64)?;
        let mut results = Vec::new();
        for f in [
            &candle as &dyn Fn(&Tensor, &Tensor, &Tensor) -> Result<Tensor>,
            &ours,
        ] {
            let y = f(x.as_tensor(), w.as_tensor(), b.as_tensor())?;
            let grads = (&y * &r)?.sum_all()?.backward()?;
            let grad = |v: &Var| grads.get(v.as_tensor()).expect("gradient").clone();
            results.push([y, grad(&x), grad(&w), grad(&b)]);
        }
        for (what, (a, b)) in ["y", "dx", "dw", "db"]
            .iter()
            .zip(results[0].iter().zip(&results[1]))
        {
            assert_eq!(a.dims(), b.dims(), "{cfg:?} {what}");
            let d = max_abs_diff(a, b)?;
            assert!(d < 1e-4, "{cfg:?} {what}: max |Δ| = {d}");
        }
    }
    Ok(())
}

/// The convolution is linear in x and in w, so for `L = Σ conv(x, w) · r` both
/// `Σ x · ∂L/∂x` and `Σ w · ∂L/∂w` equal L itself.
#[test]
fn conv2d_gradients_satisfy_linearity_on_non_square_strided_inputs() -> Result<()> {
    for (i, (cfg, dims)) in non_square_configs().into_iter().enumerate() {
        let wdims = [
            cfg.out_channels,
            cfg.in_channels / cfg.groups,
            cfg.kernel_size,
            cfg.kernel_size,
        ];
        let x = Var::from_tensor(&seeded(&dims, 50 + i as u64)?)?;
        let w = Var::from_tensor(&seeded(&wdims, 60 + i as u64)?)?;
        let y = super::conv2d(x.as_tensor(), w.as_tensor(), None, &cfg)?;
        let reference = x.conv2d(&w, cfg.padding, cfg.stride, 1, cfg.groups)?;
        assert!(max_abs_diff(&y, &reference)? < 1e-5, "{cfg:?} forward");
        let r = seeded(y.dims(), 70 + i as u64)?;
        let (_, dx, dw) = run(|x, w| super::conv2d(x, w, None, &cfg), &x, &w, &r)?;
        let loss = (&y * &r)?.sum_all()?.to_scalar::<f32>()?;
        for (what, v, g) in [("x", x.as_tensor(), &dx), ("w", w.as_tensor(), &dw)] {
            let dot = (v * g)?.sum_all()?.to_scalar::<f32>()?;
            assert!(
                (dot - loss).abs() < 1e-3 * loss.abs().max(1.0),
                "{cfg:?} {what}: {dot} vs {loss}"
            );
        }
    }
    Ok(())
}

/// The data batch is not a variable: the op must not compute (or return) its gradient,
/// and the weight gradient must still arrive.
#[test]
fn conv2d_skips_the_gradient_of_a_constant_input() -> Result<()> {
    let cfg = Conv2dConfig::new(1, 2, 3).padding(1);
    let x = seeded(&[2, 1, 5, 5], 7)?;
    let w = Var::from_tensor(&seeded(&[2, 1, 3, 3], 8)?)?;
    let grads = super::conv2d(&x, w.as_tensor(), None, &cfg)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&x).is_none());
    assert!(grads.get(w.as_tensor()).is_some());
    Ok(())
}

/// Strided views (a transposed input) give the same result as contiguous ones.
#[test]
fn conv2d_accepts_non_contiguous_inputs() -> Result<()> {
    let cfg = Conv2dConfig::new(3, 4, 3).padding(1);
    let x = seeded(&[2, 3, 6, 5], 9)?.transpose(2, 3)?;
    let w = seeded(&[4, 3, 3, 3], 10)?;
    let ours = super::conv2d(&x, &w, None, &cfg)?;
    let theirs = x.conv2d(&w, 1, 1, 1, 1)?;
    assert!(max_abs_diff(&ours, &theirs)? < 1e-5);
    Ok(())
}

#[test]
fn max_pool_matches_candle_forward() -> Result<()> {
    for (k, s, dims) in [
        (2, 2, [2, 3, 8, 8]),
        (3, 2, [2, 2, 9, 7]),
        (2, 1, [1, 2, 5, 6]),
    ] {
        let x = seeded(&dims, k as u64 * 11 + s as u64)?;
        let ours = super::max_pool2d(&x, k, s)?;
        let theirs = x.max_pool2d_with_stride(k, s)?;
        assert_eq!(ours.dims(), theirs.dims());
        assert_eq!(max_abs_diff(&ours, &theirs)?, 0.0, "k{k} s{s}");
    }
    Ok(())
}

/// Each window's gradient lands on its first maximum only, ties included (PyTorch's
/// rule); overlapping windows add up.
#[test]
fn max_pool_gradient_goes_to_the_first_maximum() -> Result<()> {
    #[rustfmt::skip]
    let x = Tensor::from_vec(vec![
        1.0f32, 5.0, 0.0, 0.0,
        2.0,    3.0, 0.0, 0.0,
        7.0,    7.0, 9.0, 1.0,
        7.0,    7.0, 1.0, 1.0,
    ], (1, 1, 4, 4), &Device::Cpu)?;
    let x = Var::from_tensor(&x)?;
    let dy = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], (1, 1, 2, 2), &Device::Cpu)?;
    let y = super::max_pool2d(x.as_tensor(), 2, 2)?;
    assert_eq!(y.flatten_all()?.to_vec1::<f32>()?, [5.0, 0.0, 7.0, 9.0]);
    let dx = (y * &dy)?
        .sum_all()?
        .backward()?
        .get(x.as_tensor())
        .unwrap()
        .clone();
    #[rustfmt::skip]
    assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, [
        0.0, 1.0, 2.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        3.0, 0.0, 4.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ]);

    // Overlapping 2×2 windows at stride 1: the centre maximum collects all four.
    let x = Var::from_tensor(&seeded(&[1, 1, 3, 3], 5)?.affine(0.1, 0.0)?)?;
    let centre = Tensor::from_vec(
        vec![0.0f32, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
        (1, 1, 3, 3),
        &Device::Cpu,
    )?;
    let x2 = (x.as_tensor() + centre)?;
    let y = super::max_pool2d(&x2, 2, 1)?;
    let dx = y.sum_all()?.backward()?.get(x.as_tensor()).unwrap().clone();
    assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?[4], 4.0);
    Ok(())
}

#[test]
fn relu_matches_candle_and_passes_no_gradient_at_zero() -> Result<()> {
    let x = Var::from_tensor(&Tensor::new(&[-1.5f32, 0.0, 2.0, -0.0, 3.5], &Device::Cpu)?)?;
    let y = super::relu(x.as_tensor())?;
    assert_eq!(y.to_vec1::<f32>()?, x.as_tensor().relu()?.to_vec1::<f32>()?);
    let dy = Tensor::new(&[1.0f32, 2.0, 3.0, 4.0, 5.0], &Device::Cpu)?;
    let dx = (y * &dy)?
        .sum_all()?
        .backward()?
        .get(x.as_tensor())
        .unwrap()
        .clone();
    assert_eq!(dx.to_vec1::<f32>()?, [0.0, 0.0, 3.0, 0.0, 5.0]);
    let nan = Tensor::new(&[f32::NAN], &Device::Cpu)?;
    assert!(super::relu(&nan)?.to_vec1::<f32>()?[0].is_nan());
    Ok(())
}

/// The 2×2 / stride-2 kernel's gradient against a plain loop, on odd sizes (the last
/// row and column belong to no window).
#[test]
fn max_pool_2x2_gradient_matches_a_plain_loop() -> Result<()> {
    let (h, w) = (7, 9);
    let x = Var::from_tensor(&seeded(&[2, 3, h, w], 77)?)?;
    let dy = seeded(&[2, 3, h / 2, w / 2], 78)?;
    let y = super::max_pool2d(x.as_tensor(), 2, 2)?;
    let dx = (&y * &dy)?
        .sum_all()?
        .backward()?
        .get(x.as_tensor())
        .unwrap()
        .clone();
    let (xv, dyv) = (
        x.as_tensor().flatten_all()?.to_vec1::<f32>()?,
        dy.flatten_all()?.to_vec1::<f32>()?,
    );
    let mut expected = vec![0.0f32; xv.len()];
    for plane in 0..6 {
        for oy in 0..h / 2 {
            for ox in 0..w / 2 {
                let mut best = (usize::MAX, f32::NEG_INFINITY);
                for (ky, kx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let at = plane * h * w + (2 * oy + ky) * w + 2 * ox + kx;
                    if xv[at] > best.1 {
                        best = (at, xv[at]);
                    }
                }
                expected[best.0] += dyv[plane * (h / 2) * (w / 2) + oy * (w / 2) + ox];
            }
        }
    }
    assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, expected);
    Ok(())
}

/// A NaN in a window wins the max (forward) and takes the gradient (backward), so a
/// diverging run is not hidden from the NaN stop.
#[test]
fn max_pool_propagates_nan() -> Result<()> {
    let x = Var::from_tensor(&Tensor::from_vec(
        vec![1.0f32, f32::NAN, 3.0, 2.0],
        (1, 1, 2, 2),
        &Device::Cpu,
    )?)?;
    let y = super::max_pool2d(x.as_tensor(), 2, 2)?;
    assert!(y.flatten_all()?.to_vec1::<f32>()?[0].is_nan());
    let dx = y.sum_all()?.backward()?.get(x.as_tensor()).unwrap().clone();
    assert_eq!(dx.flatten_all()?.to_vec1::<f32>()?, [0.0, 1.0, 0.0, 0.0]);
    Ok(())
}
