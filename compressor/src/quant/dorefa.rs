//! DoReFa-Net's weight quantization (Zhou et al. 2016, NNI's `DoReFaQuantizer`), on a
//! grid the chip's packed kernels can hold.
//!
//! **Weights**, `b` = 1 to 8 bits, per output channel `c`:
//! - `t = tanh(w) / max_c |tanh(w)|`, in [-1, 1] (DoReFa's squashing: large weights stop
//!   dominating the grid);
//! - `b ≥ 2`: integers `q = round(t · qmax)` with `qmax = 2^(b−1) − 1`, a symmetric
//!   two's-complement grid (4 bits: [-7, 7], 2 bits: [-1, 1]) such as the packed 4-, 2-
//!   and 1-bit rows hold; NNI's DoReFa maps to `2^b` levels in [-1, 1] without a zero,
//!   which no symmetric integer grid holds;
//! - the deployment scale is `s_c = max |w_c|`, the latent channel's own magnitude, so
//!   the fake-quantized weight is `q · s_c / qmax` (NNI keeps the weight in [-1, 1] and
//!   carries no scale: on LeNet-5 its loss starts near 29, while ours starts where the
//!   float model is);
//! - `b = 1`: `q = sign(w)` (`sign(0) = +1`), scale `mean |w_c|` (DoReFa's and
//!   XNOR-Net's `E|w|`), as [`WeightIntegers::binary`];
//! - an all-zero channel (a pruned filter) gets integers 0 and scale 1.0.
//!
//! The backward is straight-through on the rounding only: the tensor whose gradient
//! flows is `s_c · t(w)` (for 1 bit, `w` itself), through `tanh`, while `s_c` and the
//! normalizer `max |tanh|` are per-channel constants. It is a [`QuantGrad`],
//! straight-through by default and replaceable with [`DoReFaQuantizer::with_grad`].
//!
//! **Activations** (`input`, `output`, 2 to 8 bits) are quantized exactly as
//! [`super::QatQuantizer`] does ([`EmaActivations`]).

use std::sync::Arc;

use candle_core::{Result, Tensor};

use super::fake_quant::{channel_max_abs, channel_tensor};
use super::{
    fake_quantize_weight_recorded, symmetric_qmax, EmaActivations, QuantContext, QuantGrad,
    QuantState, Quantizer, StraightThrough, WeightIntegers,
};
use crate::config::{ConfigError, LayerConfig, QuantType, Schema};
use crate::nn::{Graph, OpType};

const NAME: &str = "DoReFaQuantizer";

/// DoReFa weight quantization (1–8 bits) with QAT's activation quantization.
#[derive(Clone)]
pub struct DoReFaQuantizer {
    activations: EmaActivations,
    grad: Arc<dyn QuantGrad>,
}

impl Default for DoReFaQuantizer {
    fn default() -> Self {
        Self {
            activations: EmaActivations::default(),
            grad: Arc::new(StraightThrough),
        }
    }
}

impl DoReFaQuantizer {
    pub fn new() -> Self {
        Self::default()
    }
    /// Replaces the backward rule of weights and activations (straight-through by
    /// default).
    pub fn with_grad(self, grad: Arc<dyn QuantGrad>) -> Self {
        Self { grad, ..self }
    }
    /// The EMA decay of tracked activation ranges (0.99 by default, as QAT).
    pub fn with_ema_decay(self, ema_decay: f32) -> Self {
        Self {
            activations: EmaActivations::new(ema_decay),
            ..self
        }
    }

    /// DoReFa's integers and scales for `weight` at `bits` (1 to 8), with the tensor
    /// whose gradient the fake-quantized weight takes: `s_c · t(w)` (`w` for 1 bit).
    /// The forward pass and every exporter read the integers from here.
    pub fn quantize(weight: &Tensor, bits: u8) -> Result<(Tensor, WeightIntegers)> {
        if bits <= 1 {
            return Ok((weight.clone(), WeightIntegers::binary(weight)?));
        }
        let qmax = symmetric_qmax(bits) as f32;
        let squashed = weight.tanh()?;
        let norm: Vec<f32> = channel_max_abs(&squashed)?
            .into_iter()
            .map(|m| if m > 0.0 { m } else { 1.0 })
            .collect();
        // In [-1, 1], exactly ±1 at each channel's largest |w|.
        let t = squashed.broadcast_div(&channel_tensor(weight, &norm)?)?;
        let integers = (t.detach() * f64::from(qmax))?
            .round()?
            .clamp(-qmax, qmax)?;
        let magnitude = channel_max_abs(weight)?;
        let scales = magnitude
            .iter()
            .map(|&m| if m > 0.0 { m / qmax } else { 1.0 })
            .collect();
        let source = t.broadcast_mul(&channel_tensor(weight, &magnitude)?)?;
        Ok((
            source,
            WeightIntegers {
                bits,
                scales,
                integers,
            },
        ))
    }
}

impl Quantizer for DoReFaQuantizer {
    fn name(&self) -> &'static str {
        NAME
    }

    fn schema(&self) -> Schema {
        Schema::quantization(NAME, vec![OpType::Conv2d, OpType::Linear], 1..=8).with_supported(
            vec![
                OpType::Conv2d,
                OpType::Linear,
                OpType::Add,
                OpType::ReLU,
                OpType::ReLU6,
            ],
        )
    }

    /// Activations take 2 to 8 bits (1-bit activations are BNNQuantizer's sign).
    fn check(&self, _graph: &Graph, layers: &[LayerConfig], source: &str) -> crate::Result<()> {
        for layer in layers {
            for t in [QuantType::Input, QuantType::Output] {
                if layer.bits(t) == Some(1) {
                    return Err(ConfigError::Rejected {
                        file: source.to_string(),
                        index: layer.index,
                        algorithm: NAME,
                        message: format!(
                            "`{}`: 1 bit for `{t}`; {NAME} quantizes activations as \
                             QAT_Quantizer does, with 2 to 8 bits (weights take 1 to 8); for \
                             binary (sign) activations use BNNQuantizer",
                            layer.name
                        ),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }

    fn quantize_weight(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        if ctx.training {
            state.steps += 1;
        }
        let (source, q) = Self::quantize(weight, ctx.bits(QuantType::Weight))?;
        fake_quantize_weight_recorded(&source, q, self.grad.as_ref(), state)
    }

    fn weight_integers(
        &self,
        weight: &Tensor,
        ctx: &QuantContext,
    ) -> Result<Option<WeightIntegers>> {
        Ok(Some(Self::quantize(weight, ctx.bits(QuantType::Weight))?.1))
    }

    fn quantize_input(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        self.activations
            .quantize_input(x, ctx, state, self.grad.as_ref())
    }

    fn quantize_output(
        &self,
        x: &Tensor,
        ctx: &QuantContext,
        state: &mut QuantState,
    ) -> Result<Tensor> {
        self.activations
            .quantize_output(x, ctx, state, self.grad.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::config::ConfigList;
    use crate::quant::ClippedStraightThrough;

    /// Three channels: row 0 peaks at |−1|, row 1 at 2, row 2 is all zero.
    const W: [f32; 12] = [
        0.5, -1.0, 0.25, 0.0, //
        2.0, -0.1, 0.0, 1.0, //
        0.0, 0.0, 0.0, 0.0,
    ];

    fn weight() -> Tensor {
        Tensor::from_slice(&W, (3, 4), &Device::Cpu).unwrap()
    }

    fn ints(q: &WeightIntegers) -> Vec<f32> {
        q.integers.flatten_all().unwrap().to_vec1().unwrap()
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn four_bit_integers_and_scales_match_hand_computation() {
        // Row 0: tanh = 0.46212, −0.76159, 0.24492, 0; / 0.76159 → 0.60677, −1, 0.32159, 0;
        //        × 7 → 4.247, −7, 2.251, 0 → 4, −7, 2, 0; scale max|w| / 7 = 1/7.
        // Row 1: tanh = 0.96403, −0.09967, 0, 0.76159; / 0.96403 → 1, −0.10339, 0, 0.79002;
        //        × 7 → 7, −0.724, 0, 5.530 → 7, −1, 0, 6; scale 2/7.
        // Row 2: all zero → integers 0, scale 1.
        let (_, q) = DoReFaQuantizer::quantize(&weight(), 4).unwrap();
        assert_eq!(q.bits, 4);
        assert_eq!(ints(&q), [4., -7., 2., 0., 7., -1., 0., 6., 0., 0., 0., 0.]);
        assert!(
            close(&q.scales, &[1.0 / 7.0, 2.0 / 7.0, 1.0]),
            "{:?}",
            q.scales
        );
    }

    #[test]
    fn two_bit_integers_are_minus_one_zero_one() {
        // t rounded: row 0 0.607 → 1, −1, 0.322 → 0, 0; row 1 1, −0.103 → 0, 0, 0.790 → 1.
        let (_, q) = DoReFaQuantizer::quantize(&weight(), 2).unwrap();
        assert_eq!(ints(&q), [1., -1., 0., 0., 1., 0., 0., 1., 0., 0., 0., 0.]);
        assert!(close(&q.scales, &[1.0, 2.0, 1.0]), "{:?}", q.scales);
    }

    #[test]
    fn one_bit_is_sign_times_mean_magnitude() {
        // sign with sign(0) = +1; scale mean|w|: (0.5 + 1 + 0.25 + 0) / 4 = 0.4375,
        // (2 + 0.1 + 0 + 1) / 4 = 0.775; the all-zero row stays 0 with scale 1.
        let (source, q) = DoReFaQuantizer::quantize(&weight(), 1).unwrap();
        assert_eq!(q.bits, 1);
        assert_eq!(ints(&q), [1., -1., 1., 1., 1., -1., 1., 1., 0., 0., 0., 0.]);
        assert!(close(&q.scales, &[0.4375, 0.775, 1.0]), "{:?}", q.scales);
        assert_eq!(source.flatten_all().unwrap().to_vec1::<f32>().unwrap(), W);
    }

    fn bound(bits: u8) -> (Var, QuantState, LayerConfig) {
        let config = ConfigList::from_json_str(&format!(
            r#"[{{"op_types": ["Linear"], "quant_types": ["weight"], "quant_bits": {bits}}}]"#
        ))
        .unwrap();
        let layers = [crate::config::LayerInfo::new("fc", OpType::Linear)];
        let layer = config
            .resolve(&layers, &DoReFaQuantizer::new().schema())
            .unwrap()
            .remove(0);
        let var = Var::from_slice(&W, (3, 4), &Device::Cpu).unwrap();
        (var, QuantState::default(), layer)
    }

    /// The fake-quantized weight is the dequantized integers exactly, and its gradient
    /// is that of `s_c · tanh(w) / max_c |tanh(w)|` (straight through the rounding).
    #[test]
    fn forward_is_the_integers_and_gradient_is_straight_through_the_rounding() {
        for bits in [1u8, 2, 4, 8] {
            let (var, mut state, layer) = bound(bits);
            let ctx = QuantContext {
                config: &layer,
                training: true,
            };
            let quantizer = DoReFaQuantizer::new();
            let fq = quantizer
                .quantize_weight(var.as_tensor(), &ctx, &mut state)
                .unwrap();
            let q = quantizer
                .weight_integers(var.as_tensor(), &ctx)
                .unwrap()
                .unwrap();
            let value: Vec<f32> = fq.flatten_all().unwrap().to_vec1().unwrap();
            let dequant: Vec<f32> = q
                .dequantize()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(value, dequant, "{bits} bits");
            assert_eq!(state.weight_scales, q.scales);
            assert_eq!(state.weight_bits, Some(bits));

            let grads = fq.sum_all().unwrap().backward().unwrap();
            let g: Vec<f32> = grads
                .get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let expected: Vec<f32> = if bits == 1 {
                vec![1.0; 12]
            } else {
                W.chunks(4)
                    .flat_map(|row| {
                        let s = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                        let m = row.iter().fold(0f32, |m, v| m.max(v.tanh().abs()));
                        let m = if m > 0.0 { m } else { 1.0 };
                        row.iter()
                            .map(move |v| s * (1.0 - v.tanh() * v.tanh()) / m)
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            assert!(close(&g, &expected), "{bits} bits: {g:?} vs {expected:?}");
            assert!(g.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn the_backward_rule_is_replaceable() {
        // Clipped straight-through: every s_c · t lies inside the grid's range, so the
        // gradient is the same as the default's; a rule that blocks everything gives 0.
        struct Blocked;
        impl QuantGrad for Blocked {
            fn apply(
                &self,
                x: &Tensor,
                quantized: &Tensor,
                _range: crate::quant::QuantRange,
            ) -> Result<Tensor> {
                (x.detach() - x.detach())? + quantized.detach()
            }
        }
        let (var, mut state, layer) = bound(4);
        let ctx = QuantContext {
            config: &layer,
            training: true,
        };
        let clipped = DoReFaQuantizer::new().with_grad(Arc::new(ClippedStraightThrough));
        let fq = clipped
            .quantize_weight(var.as_tensor(), &ctx, &mut state)
            .unwrap();
        let g = fq.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(var.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        assert!(g.to_scalar::<f32>().unwrap() > 0.0);
        let blocked = DoReFaQuantizer::new().with_grad(Arc::new(Blocked));
        let fq = blocked
            .quantize_weight(var.as_tensor(), &ctx, &mut state)
            .unwrap();
        let g = fq.sum_all().unwrap().backward().unwrap();
        assert!(g.get(var.as_tensor()).is_none());
    }

    #[test]
    fn bits_outside_one_to_eight_and_one_bit_activations_are_refused() {
        let mut model = crate::models::Model::new("lenet5", 10, &Device::Cpu, 0).unwrap();
        for bits in [0, 9] {
            let config = ConfigList::from_json_str(&format!(
                r#"[{{"op_types": ["Conv2d"], "quant_types": ["weight"], "quant_bits": {bits}}}]"#
            ))
            .unwrap();
            let err = DoReFaQuantizer::new()
                .compress(&mut model.graph, &config)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{bits} bits for `weight`")) && err.contains("1..=8"),
                "{err}"
            );
        }
        let config = ConfigList::from_json_str(
            r#"[{"op_types": ["Conv2d"], "quant_types": ["weight", "output"], "quant_bits": {"weight": 1, "output": 1}}]"#,
        )
        .unwrap();
        let err = DoReFaQuantizer::new()
            .compress(&mut model.graph, &config)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`conv1`")
                && err.contains("BNNQuantizer")
                && err.contains("config_list[0]"),
            "{err}"
        );
        assert!(model.graph.quant().is_none());
    }
}
