//! Sign activations (BNN's 1-bit outputs) on the chip.
//!
//! A layer whose output is a sign activation computes `+1` where its real
//! pre-activation `y_c = s_in · s_c · acc_c + b_c` is at least 0, else `−1` (the fused
//! ReLU is bypassed, as in the float model). With `s_in · s_c > 0` that is
//! `acc_c ≥ T_c = ⌈−b_c / (s_in · s_c)⌉`: one integer threshold per channel, exact for
//! every integer accumulator. Two ops carry it:
//!
//! - **Binary ops** (`BinaryConv2d`, `BinaryFullyConnected`), where the layer's weights
//!   are 1-bit and its input holds signs too: XNOR + popcount, `+1` where the dot
//!   product reaches `T_c`; their output is exactly ±1 ([`Signs::Exact`]).
//! - **An int8 Conv2d / FullyConnected** otherwise (int8 input, or weights wider than
//!   one bit — packed at 1 bit when they are binary): bias `−T_c`, requantization by
//!   0.75 and clamps `[−1, 1]`, so `acc_c − T_c ≥ 1` gives `+1`, `≤ −1` gives `−1` and
//!   `acc_c = T_c` gives 0. A requantization maps 0 to 0, so that 0 stands for `+1`
//!   ([`Signs::ZeroIsPlus`]): the binary ops read a value as `+1` where it is at
//!   least the zero point 0, and max pools and flattens keep the coding, but an int8
//!   op would read 0 as 0, so the lowering refuses any other reader.
//!
//! A dead channel of a 1-bit layer (all latent weights 0: integers 0 at scale 1, see
//! [`crate::quant::WeightIntegers::binary`]) computes `y_c = b_c`: its weights are
//! stored as `+1` (packable) and its threshold decides alone (`b_c ≥ 0`: always `+1`).

use candle_core::Tensor;
use sprig_runtime::kernels::binary::BINARY_ROW_CAP;
use sprig_runtime::{BinaryConv2d, BinaryFullyConnected, DataRef, Encoding, Op, Padding};

use super::{Lowering, OutputStage, Value};
use crate::export::host_f32;
use crate::export::layer_integers::Rounding;
use crate::Result;

/// How a tensor holds the ±1 of a sign activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signs {
    /// Not a sign activation: int8 values on the tensor's grid.
    No,
    /// Exactly −1 and +1 (scale 1, zero point 0): any op may read them.
    Exact,
    /// −1, or 0 / +1 both meaning +1 (an int8 op's sign output): only binary ops, max
    /// pools and flattens may read them.
    ZeroIsPlus,
}

/// The requantization multiplier of an int8 op with a sign output: maps every nonzero
/// integer to a nonzero one of the same sign (clamped to ±1 after), with no left shift,
/// and keeps clear of rounding ties at ±0.5.
const SIGN_MULTIPLIER: f64 = 0.75;

/// Bias (`−T_c`) and requantization (one [`SIGN_MULTIPLIER`] pair per channel, not
/// shared, as the packed exporter has always stored them) of an int8 op whose output is
/// a sign activation, for the shared push
/// ([`LayerIntegers`](crate::export::layer_integers::LayerIntegers)).
pub(super) fn sign_output_stage(thresholds: &[i32]) -> OutputStage {
    let bias = thresholds.iter().map(|t| -t).collect();
    let pair = Rounding::Double.multiplier(SIGN_MULTIPLIER);
    (Some(bias), vec![pair; thresholds.len()])
}

impl Lowering<'_> {
    /// Whether node `i`'s output hook is a sign activation.
    pub(super) fn sign_output(&self, i: usize) -> bool {
        let name = &self.graph.nodes()[i].name;
        self.graph.quant().is_some_and(|q| q.binary_output(name))
    }

    /// An error if `x` holds [`Signs::ZeroIsPlus`] values, which node `i` (an int8 op)
    /// would misread.
    pub(super) fn refuse_zero_is_plus(&self, i: usize, x: &Value) -> Result<()> {
        if x.signs != Signs::ZeroIsPlus {
            return Ok(());
        }
        Err(self.layer_fail(
            i,
            "reads the sign activation of a layer with int8 inputs or weights, which the chip \
             stores as −1 / 0 / +1 with 0 meaning +1: only a layer with 1-bit weights and a \
             1-bit output (a binary op), a max pool or a flatten may read it; make this \
             layer binary, or binarize the weights of the layer that produces its input",
        ))
    }

    /// How node `i` (a Conv2d / Linear reading `x`, with `bits`-bit weights, binarizable
    /// unless depthwise) lowers: whether it becomes a binary op, and the thresholds of
    /// its sign output (`None` without one). Refuses [`Signs::ZeroIsPlus`] input for an
    /// int8 op.
    pub(super) fn sign_lowering(
        &self,
        i: usize,
        bias: Option<&Tensor>,
        x: &Value,
        (bits, binarizable): (u8, bool),
        scales: &[f32],
        ints: &mut [i8],
    ) -> Result<(bool, Option<Vec<i32>>)> {
        let sign = self.sign_output(i);
        let binary = sign && bits == 1 && binarizable && x.signs != Signs::No;
        if !binary {
            self.refuse_zero_is_plus(i, x)?;
        }
        let thresholds = match sign {
            true => Some(self.sign_thresholds(i, bias, x, binary, scales, ints)?),
            false => None,
        };
        Ok((binary, thresholds))
    }

    /// The per-channel thresholds `T_c` of a sign output (see the module docs) of an op
    /// reading `x`, a binary op if `binary`. `ints` are the layer's integer weights, one
    /// row per output channel in PyTorch's order; dead rows of a 1-bit layer become `+1`
    /// here.
    fn sign_thresholds(
        &self,
        i: usize,
        bias: Option<&Tensor>,
        x: &Value,
        binary: bool,
        scales: &[f32],
        ints: &mut [i8],
    ) -> Result<Vec<i32>> {
        // The largest |x − zero point| the accumulator sees: a binary op's inputs are ±1.
        let zp = i64::from(x.grid.zero_point);
        let in_range = if binary { 1 } else { (zp + 128).max(127 - zp) };
        let in_scale = x.grid.scale;
        let channels = scales.len();
        let row_len = ints.len() / channels.max(1);
        let biases = match bias {
            Some(b) => host_f32(b)?,
            None => vec![0.0; channels],
        };
        if biases.len() != channels || row_len * channels != ints.len() {
            return Err(self.layer_fail(
                i,
                format!(
                    "{} biases and {} weights for {channels} output channels",
                    biases.len(),
                    ints.len()
                ),
            ));
        }
        let binary_weights = ints.iter().all(|&w| (-1..=1).contains(&w));
        let mut thresholds = Vec::with_capacity(channels);
        for (c, row) in ints.chunks_mut(row_len).enumerate() {
            let b = f64::from(biases[c]);
            // |acc| never exceeds `reach`; thresholds beyond it decide alike.
            let reach: i64 = in_range * row.iter().map(|&w| i64::from(w).abs()).sum::<i64>();
            if reach >= i64::from(i32::MAX / 4) {
                return Err(self.layer_fail(
                    i,
                    format!("channel {c}'s accumulator range ±{reach} is too wide for int32"),
                ));
            }
            let dead = binary_weights && row.iter().all(|&w| w == 0);
            let t = if dead {
                row.fill(1);
                if b >= 0.0 {
                    i64::MIN
                } else {
                    i64::MAX
                }
            } else {
                let unit = f64::from(in_scale) * f64::from(scales[c]);
                if !(unit.is_finite() && unit > 0.0) {
                    return Err(self.layer_fail(
                        i,
                        format!("channel {c}: input scale × weight scale {unit} is not positive"),
                    ));
                }
                let t = (-b / unit).ceil();
                if t.is_nan() {
                    return Err(
                        self.layer_fail(i, format!("channel {c}: bias {b} is not a number"))
                    );
                }
                // Saturating float → int, then into the accumulator's reach.
                t as i64
            };
            let reach = if dead {
                in_range * row_len as i64
            } else {
                reach
            };
            thresholds.push(t.clamp(-reach - 1, reach + 1) as i32);
        }
        Ok(thresholds)
    }

    /// Pushes the ±1 rows of a binary op (always [`Encoding::Packed1`]) and its
    /// thresholds; refuses rows longer than the kernels take.
    fn binary_weights(
        &mut self,
        i: usize,
        values: &[i8],
        rows: usize,
        thresholds: &[i32],
    ) -> Result<(sprig_runtime::Weights, DataRef)> {
        let row_len = values.len() / rows.max(1);
        if row_len > BINARY_ROW_CAP {
            return Err(self.layer_fail(
                i,
                format!(
                    "a binary row of {row_len} weights is longer than the chip's binary kernels \
                     take ({BINARY_ROW_CAP}); keep this layer's output at 8 bits"
                ),
            ));
        }
        let w = self
            .data
            .push_weights_as(values, rows, Encoding::Packed1)
            .map_err(|e| self.rt_fail(i, e))?;
        self.record_weights(i, &w);
        self.bias_bytes += 4 * thresholds.len();
        let t = self
            .data
            .push_i32(thresholds)
            .map_err(|e| self.rt_fail(i, e))?;
        Ok((w, t))
    }

    /// A `BinaryConv2d`: `filter` in the runtime's `[OC, KH, KW, IC]` order.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn binary_conv(
        &mut self,
        i: usize,
        x: &Value,
        filter: &[i8],
        thresholds: &[i32],
        out_shape: Vec<usize>,
        grid: crate::quant::QParams,
        (kernel, stride, padding): (u32, u32, Padding),
    ) -> Result<Value> {
        let (filter, thresholds) = self.binary_weights(i, filter, thresholds.len(), thresholds)?;
        let mut y = self.new_tensor(Some(i), out_shape, grid, None)?;
        y.signs = Signs::Exact;
        self.ops.push(Op::BinaryConv2d(BinaryConv2d {
            input: x.index,
            output: y.index,
            filter,
            thresholds,
            kernel_h: kernel,
            kernel_w: kernel,
            stride_h: stride,
            stride_w: stride,
            padding,
        }));
        Ok(y)
    }

    /// A `BinaryFullyConnected`: `weights` `[OUT, IN]` in the runtime's column order.
    pub(super) fn binary_linear(
        &mut self,
        i: usize,
        x: &Value,
        weights: &[i8],
        thresholds: &[i32],
        grid: crate::quant::QParams,
    ) -> Result<Value> {
        let n_out = thresholds.len();
        let (weights, thresholds) = self.binary_weights(i, weights, n_out, thresholds)?;
        let mut y = self.new_tensor(Some(i), vec![1, n_out], grid, None)?;
        y.signs = Signs::Exact;
        self.ops
            .push(Op::BinaryFullyConnected(BinaryFullyConnected {
                input: x.index,
                output: y.index,
                weights,
                thresholds,
            }));
        Ok(y)
    }
}
