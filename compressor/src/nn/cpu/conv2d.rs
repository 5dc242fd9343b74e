//! 2-D convolution on the CPU as three candle custom ops: the forward pass and the two
//! backward passes (input gradient, weight gradient), each im2col + GEMM per image with
//! the batch spread over rayon's threads. The forward op's `bwd` applies the other two,
//! so candle's autograd and `Var`s work as with `Tensor::conv2d`.

use std::cell::RefCell;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::gemm::{matmul, MatRef};
use super::geometry::ConvGeometry;
use super::im2col::{col2im_add, im2col};
use super::storage::contiguous_f32;

/// `y = conv(x, w) (+ b)`: x `[N, C, H, W]`, w `[O, C / groups, k, k]`, y `[N, O, OH, OW]`.
pub struct Conv2dForward(pub ConvGeometry);

/// `dx = convᵀ(dy, w)`: the gradient with respect to the input.
pub struct Conv2dInputGrad(pub ConvGeometry);

/// `dw = Σₙ dyₙ · im2col(xₙ)ᵀ`: the gradient with respect to the weight.
pub struct Conv2dWeightGrad(pub ConvGeometry);

/// `[N, C, H, W] -> [C]`: sums over everything but the channel (the bias gradient).
pub struct ChannelSum;

/// The column matrix of group `group` of one image: the image itself for pointwise
/// convolutions, else im2col into `scratch`.
fn columns<'a>(
    image: &'a [f32],
    group: usize,
    g: &ConvGeometry,
    scratch: &'a mut [f32],
) -> &'a [f32] {
    let plane = g.height * g.width;
    let channels = &image[group * g.group_in() * plane..(group + 1) * g.group_in() * plane];
    if g.is_pointwise() {
        channels
    } else {
        im2col(channels, g, scratch);
        scratch
    }
}

thread_local! {
    /// Each thread's column matrix, kept from call to call. A fresh one per call and
    /// task was zero-filled at its whole size every time (a tenth of the `memset`s of a
    /// training step), though im2col and the GEMMs overwrite every entry.
    static COLUMNS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with this thread's column scratch, `patch_len × out_pixels` long (empty for
/// pointwise convolutions, which read the image itself). Its contents are stale: `f`
/// must write before it reads.
fn with_columns<R>(g: &ConvGeometry, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let len = if g.is_pointwise() {
        0
    } else {
        g.patch_len() * g.out_pixels()
    };
    COLUMNS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut kept) => {
            if kept.len() < len {
                kept.resize(len, 0.0);
            }
            f(&mut kept[..len])
        }
        // Only if a caller nests (nothing here does): a scratch of its own.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

fn output_shape(g: &ConvGeometry) -> Shape {
    Shape::from((g.batch, g.out_channels, g.out_height, g.out_width))
}

/// The forward pass; with `bias`, each output channel starts from its bias.
fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let (go, k, p) = (g.group_out(), g.patch_len(), g.out_pixels());
    let mut y = vec![0.0f32; g.batch * g.out_image_len()];
    y.par_chunks_mut(g.out_image_len())
        .zip(x.par_chunks(g.image_len()))
        .for_each(|(y, x)| {
            if let Some(bias) = bias {
                for (plane, b) in y.chunks_exact_mut(p).zip(bias) {
                    plane.fill(*b);
                }
            }
            with_columns(g, |scratch| {
                for group in 0..g.groups {
                    let cols = columns(x, group, g, scratch);
                    let w = MatRef::rows(&w[group * go * k..(group + 1) * go * k], k);
                    let y = &mut y[group * go * p..(group + 1) * go * p];
                    matmul(go, p, k, y, bias.is_some(), w, MatRef::rows(cols, p));
                }
            });
        });
    y
}

/// The gradients of the input and the weight, each only where autograd can use it: the
/// data batch is no variable's descendant, and skipping its gradient spares the first
/// layer's whole transposed convolution.
fn input_and_weight_grads(
    g: ConvGeometry,
    x: &Tensor,
    w: &Tensor,
    dy: &Tensor,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = if x.track_op() {
        Some(dy.apply_op2_no_bwd(w, &Conv2dInputGrad(g))?)
    } else {
        None
    };
    let dw = if w.track_op() {
        Some(x.apply_op2_no_bwd(dy, &Conv2dWeightGrad(g))?)
    } else {
        None
    };
    Ok((dx, dw))
}

impl CustomOp2 for Conv2dForward {
    fn name(&self) -> &'static str {
        "sprig-conv2d"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp2::name(self);
        let x = contiguous_f32(xs, xl, name)?;
        let w = contiguous_f32(ws, wl, name)?;
        let y = forward(&self.0, x, w, None);
        Ok((CpuStorage::F32(y), output_shape(&self.0)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        input_and_weight_grads(self.0, x, w, &dy.contiguous()?)
    }
}

/// With a bias `[O]`: the bias add rides in the GEMM's accumulator, and its gradient (a
/// per-channel sum) is one pass over `dy` instead of candle's generic reduction.
impl CustomOp3 for Conv2dForward {
    fn name(&self) -> &'static str {
        "sprig-conv2d-bias"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let name = CustomOp3::name(self);
        let x = contiguous_f32(xs, xl, name)?;
        let w = contiguous_f32(ws, wl, name)?;
        let b = contiguous_f32(bs, bl, name)?;
        let y = forward(&self.0, x, w, Some(b));
        Ok((CpuStorage::F32(y), output_shape(&self.0)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let (dx, dw) = input_and_weight_grads(self.0, x, w, &dy)?;
        let db = if b.track_op() {
            Some(dy.apply_op1_no_bwd(&ChannelSum)?)
        } else {
            None
        };
        Ok((dx, dw, db))
    }
}

impl CustomOp2 for Conv2dInputGrad {
    fn name(&self) -> &'static str {
        "sprig-conv2d-input-grad"
    }

    fn cpu_fwd(
        &self,
        dys: &CpuStorage,
        dyl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let dy = contiguous_f32(dys, dyl, self.name())?;
        let w = contiguous_f32(ws, wl, self.name())?;
        let (go, k, p) = (g.group_out(), g.patch_len(), g.out_pixels());
        let plane = g.height * g.width;
        let mut dx = vec![0.0f32; g.batch * g.image_len()];
        dx.par_chunks_mut(g.image_len())
            .zip(dy.par_chunks(g.out_image_len()))
            .for_each(|(dx, dy)| {
                with_columns(g, |dcols| {
                    for group in 0..g.groups {
                        let w = MatRef::transposed(&w[group * go * k..(group + 1) * go * k], k);
                        let dy = MatRef::rows(&dy[group * go * p..(group + 1) * go * p], p);
                        let dx = &mut dx
                            [group * g.group_in() * plane..(group + 1) * g.group_in() * plane];
                        if g.is_pointwise() {
                            matmul(k, p, go, dx, false, w, dy);
                        } else {
                            matmul(k, p, go, dcols, false, w, dy);
                            col2im_add(dcols, g, dx);
                        }
                    }
                })
            });
        Ok((
            CpuStorage::F32(dx),
            Shape::from((g.batch, g.in_channels, g.height, g.width)),
        ))
    }
}

impl CustomOp2 for Conv2dWeightGrad {
    fn name(&self) -> &'static str {
        "sprig-conv2d-weight-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = &self.0;
        let x = contiguous_f32(xs, xl, self.name())?;
        let dy = contiguous_f32(dys, dyl, self.name())?;
        let (go, k, p) = (g.group_out(), g.patch_len(), g.out_pixels());
        // One partial sum per thread's share of the batch, added up at the end.
        let share = g.batch.div_ceil(rayon::current_num_threads()).max(1);
        let partials: Vec<Vec<f32>> = x
            .par_chunks(share * g.image_len())
            .zip(dy.par_chunks(share * g.out_image_len()))
            .map(|(xs, dys)| {
                let mut dw = vec![0.0f32; g.weight_len()];
                with_columns(g, |scratch| {
                    for (x, dy) in xs
                        .chunks_exact(g.image_len())
                        .zip(dys.chunks_exact(g.out_image_len()))
                    {
                        for group in 0..g.groups {
                            let cols = columns(x, group, g, scratch);
                            let dy = MatRef::rows(&dy[group * go * p..(group + 1) * go * p], p);
                            let dw = &mut dw[group * go * k..(group + 1) * go * k];
                            matmul(go, k, p, dw, true, dy, MatRef::transposed(cols, p));
                        }
                    }
                });
                dw
            })
            .collect();
        let mut dw = vec![0.0f32; g.weight_len()];
        for part in &partials {
            for (d, s) in dw.iter_mut().zip(part) {
                *d += s;
            }
        }
        let shape = Shape::from((g.out_channels, g.group_in(), g.kernel, g.kernel));
        Ok((CpuStorage::F32(dw), shape))
    }
}

impl CustomOp1 for ChannelSum {
    fn name(&self) -> &'static str {
        "sprig-channel-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, c, h, w) = l.shape().dims4()?;
        let data = contiguous_f32(s, l, self.name())?;
        let plane = h * w;
        // One task per channel, each adding its planes in image order as before: the
        // sums split over the threads and keep their bits.
        let sums = (0..c)
            .into_par_iter()
            .map(|channel| {
                (0..n)
                    .map(|image| {
                        let start = (image * c + channel) * plane;
                        data[start..start + plane].iter().sum::<f32>()
                    })
                    .fold(0.0f32, |sum, s| sum + s)
            })
            .collect();
        Ok((CpuStorage::F32(sums), Shape::from(c)))
    }
}
