//! The shared lowering of a weighted layer's integers (conv, depthwise conv, fully
//! connected) into what the runtime stores: weights in an [`Encoding`], int32 biases and
//! requantization `(multiplier, shift)` pairs, pushed into a [`BlobBuilder`].
//!
//! The packed exporter (`export/packed`), the TFLite importer (`import/lower.rs`) and,
//! for the bias, the eval forward and the ONNX exporter
//! ([`bias_on_grid`](crate::quant::requant::bias_on_grid)) all go through here, so a new
//! weight encoding, bias rule or requantization rounding is written once:
//!
//! - [`requant_pairs`] forms the per-channel pairs of `s_in · s_w[c] / s_out` in the
//!   chosen [`Rounding`]: sprig's own layers round once, imported TFLite models keep
//!   TFLite's double rounding (bit-exact with TensorFlow Lite Micro). [`compact`] shares
//!   one pair when every channel has the same; the importer compacts (as it always
//!   did), the packed exporter keeps one pair per channel, so its blobs are
//!   byte-identical to those written before this module existed.
//! - [`bias_integers`] rounds float biases to their int32 grid, refusing (and naming)
//!   a channel whose bias does not fit an int32; [`bias_steps`] is that rounding,
//!   unchecked, for the float forwards.
//! - [`LayerIntegers::push`] stores the weights in the smallest of dense and the
//!   encodings the op allows, then the bias and the pairs, and returns where they went
//!   and how many bytes each took.

use std::fmt;

use sprig_runtime::fixed_point::{quantize_multiplier, quantize_multiplier_single_rounding};
use sprig_runtime::format::packed::bits_of as packed_bits;
use sprig_runtime::format::write::BlobBuilder;
use sprig_runtime::{DataRef, Encoding, Weights};

/// How a real multiplier becomes a fixed-point `(multiplier, shift)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// sprig's own layers: one rounding, as the fake-quant forward rounds
    /// ([`quantize_multiplier_single_rounding`]).
    Single,
    /// TensorFlow Lite's `QuantizeMultiplier`, which rounds twice ([`quantize_multiplier`]):
    /// imported TFLite models, bit-exact with TensorFlow Lite Micro.
    Double,
}

impl Rounding {
    /// The pair of the real multiplier `real`.
    pub fn multiplier(self, real: f64) -> (i32, i32) {
        match self {
            Rounding::Single => quantize_multiplier_single_rounding(real),
            Rounding::Double => quantize_multiplier(real),
        }
    }
}

/// One requantization pair per output channel: `s_in · s_w[c] / s_out`, the ratio formed
/// in `f64` as TFLite forms it (the input·weight product first, in double), in `rounding`.
pub fn requant_pairs(
    in_scale: f32,
    weight_scales: &[f32],
    out_scale: f32,
    rounding: Rounding,
) -> Vec<(i32, i32)> {
    weight_scales
        .iter()
        .map(|&sw| rounding.multiplier(f64::from(in_scale) * f64::from(sw) / f64::from(out_scale)))
        .collect()
}

/// `pairs` collapsed to the one shared pair the format allows when every channel's is
/// the same; unchanged otherwise.
pub fn compact(pairs: Vec<(i32, i32)>) -> Vec<(i32, i32)> {
    match pairs.first() {
        Some(&first) if pairs.iter().all(|&p| p == first) => vec![first],
        _ => pairs,
    }
}

/// A channel's bias in accumulator steps as deployed: `round(b / (s_in · s_w))` in
/// `f64` (ties away from zero); not range-checked ([`bias_integers`] checks).
pub fn bias_steps(bias: f32, in_scale: f32, weight_scale: f32) -> f64 {
    (f64::from(bias) / (f64::from(in_scale) * f64::from(weight_scale))).round()
}

/// Why float biases have no int32 form.
#[derive(Debug, Clone, PartialEq)]
pub enum BiasError {
    /// A bias count that is not the output channel count.
    Count { biases: usize, channels: usize },
    /// The bias of `channel` (`bias` as a float) is not a finite value within int32 on
    /// its grid.
    OutOfRange { channel: usize, bias: f32 },
}

impl fmt::Display for BiasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BiasError::Count { biases, channels } => {
                write!(f, "{biases} biases for {channels} output channels")
            }
            BiasError::OutOfRange { channel, bias } => {
                write!(
                    f,
                    "bias of channel {channel} ({bias}) does not fit an int32"
                )
            }
        }
    }
}

impl std::error::Error for BiasError {}

/// The int32 biases the runtime adds, one per output channel: [`bias_steps`] of each
/// float bias on its grid `s_in · s_w[c]`; an error names the first channel whose bias
/// does not fit (`|q| ≤ i32::MAX`).
pub fn bias_integers(
    biases: &[f32],
    in_scale: f32,
    weight_scales: &[f32],
) -> Result<Vec<i32>, BiasError> {
    if biases.len() != weight_scales.len() {
        return Err(BiasError::Count {
            biases: biases.len(),
            channels: weight_scales.len(),
        });
    }
    biases
        .iter()
        .zip(weight_scales)
        .enumerate()
        .map(|(channel, (&bias, &sw))| {
            let q = bias_steps(bias, in_scale, sw);
            if q.is_finite() && q.abs() <= f64::from(i32::MAX) {
                Ok(q as i32)
            } else {
                Err(BiasError::OutOfRange { channel, bias })
            }
        })
        .collect()
}

/// One weighted layer's integers, in the runtime's layouts.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerIntegers {
    /// The weights: `rows` rows of equal length in the op's layout.
    pub weights: Vec<i8>,
    /// Rows of `weights` as the encodings count them: output channels (conv, fully
    /// connected), taps (a depthwise filter).
    pub rows: usize,
    /// Bit width of the weights: a packed encoding is only tried where it holds them.
    pub bits: u8,
    /// int32 biases, one per output channel.
    pub bias: Option<Vec<i32>>,
    /// Requantization pairs: one per output channel, or one shared by all.
    pub requant: Vec<(i32, i32)>,
}

/// Where [`LayerIntegers::push`] put a layer, and the bytes each part takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub weights: Weights,
    pub bias: Option<DataRef>,
    pub requant: DataRef,
    /// Weight bytes as encoded.
    pub weight_bytes: usize,
    /// int32 bias bytes (4 per channel).
    pub bias_bytes: usize,
    /// Requantization bytes (4 for a multiplier, 1 for a shift, per pair).
    pub requant_bytes: usize,
}

impl LayerIntegers {
    /// Pushes weights, bias and requantization (in that order) into `data`. The weights
    /// take the smallest of dense and the `encodings` the op's kernels run
    /// ([`BlobBuilder::push_weights`], the earlier on a tie, dense first), packed widths
    /// only where they hold [`bits`](Self::bits); `&[]` keeps them dense.
    pub fn push(
        &self,
        data: &mut BlobBuilder,
        encodings: &[Encoding],
    ) -> Result<Stored, sprig_runtime::Error> {
        let candidates: Vec<Encoding> = encodings
            .iter()
            .copied()
            .filter(|&e| packed_bits(e).is_none_or(|width| u32::from(self.bits) <= width))
            .collect();
        let weights = data.push_weights(&self.weights, self.rows, &candidates)?;
        let bias = match &self.bias {
            Some(b) => Some(data.push_i32(b)?),
            None => None,
        };
        let requant = data.push_requant(&self.requant)?;
        Ok(Stored {
            weights,
            bias,
            requant,
            weight_bytes: weights.data.len as usize,
            bias_bytes: 4 * self.bias.as_ref().map_or(0, Vec::len),
            requant_bytes: 5 * self.requant.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCALES: [f32; 3] = [0.013, 0.0021, 0.4];

    /// Both roundings against `fixed_point` directly, the ratio formed in `f64`; and a
    /// multiplier where they differ (single rounding stores it unnormalized, shift 0).
    #[test]
    fn pairs_follow_the_rounding() {
        let (s_in, s_out) = (0.0173f32, 0.091f32);
        for (rounding, form) in [
            (
                Rounding::Single,
                quantize_multiplier_single_rounding as fn(f64) -> (i32, i32),
            ),
            (Rounding::Double, quantize_multiplier),
        ] {
            let pairs = requant_pairs(s_in, &SCALES, s_out, rounding);
            let expected: Vec<_> = SCALES
                .iter()
                .map(|&sw| form(f64::from(s_in) * f64::from(sw) / f64::from(s_out)))
                .collect();
            assert_eq!(pairs, expected, "{rounding:?}");
        }
        let single = requant_pairs(s_in, &SCALES, s_out, Rounding::Single);
        let double = requant_pairs(s_in, &SCALES, s_out, Rounding::Double);
        assert_ne!(single[0], double[0]);
        assert_eq!(single[0].1, 0);
        assert!(double[0].0 >= 1 << 30 && double[0].1 < 0);
    }

    #[test]
    fn compaction_shares_only_equal_pairs() {
        let same = requant_pairs(0.02, &[0.1; 4], 0.5, Rounding::Double);
        assert_eq!(same.len(), 4);
        assert_eq!(compact(same.clone()), vec![same[0]]);
        let mixed = requant_pairs(0.02, &SCALES, 0.5, Rounding::Double);
        assert_eq!(compact(mixed.clone()), mixed);
        assert_eq!(compact(Vec::new()), Vec::new());
    }

    #[test]
    fn biases_round_onto_their_grid_and_overflow_names_the_channel() {
        // 0.0123 / (0.02 · 0.1) = 6.15 → 6; −0.5 / (0.02 · 0.0021) = −11904.76… → −11905.
        let ints = bias_integers(&[0.0123, -0.5], 0.02, &[0.1, 0.0021]).unwrap();
        assert_eq!(ints, [6, -11905]);
        // Channel 2's bias is 1e3 / 1e-9 = 1e12 steps.
        let err = bias_integers(&[0.0, 1.0, 1e3], 1e-3, &[1.0, 1.0, 1e-6]).unwrap_err();
        assert_eq!(
            err,
            BiasError::OutOfRange {
                channel: 2,
                bias: 1e3
            }
        );
        assert_eq!(
            err.to_string(),
            "bias of channel 2 (1000) does not fit an int32"
        );
        // On a grid of 2^-31: 0.5 is 2^30 steps and fits, ±1.0 is ±2^31 and does not
        // (nor does i32::MIN: the range is symmetric); NaN never fits.
        let step = 2f32.powi(-31);
        assert_eq!(bias_integers(&[0.5], 1.0, &[step]), Ok(vec![1 << 30]));
        assert!(bias_integers(&[1.0], 1.0, &[step]).is_err());
        assert!(bias_integers(&[-1.0], 1.0, &[step]).is_err());
        assert!(bias_integers(&[f32::NAN], 1.0, &[1.0]).is_err());
        assert_eq!(
            bias_integers(&[1.0], 1.0, &[1.0, 1.0])
                .unwrap_err()
                .to_string(),
            "1 biases for 2 output channels"
        );
    }

    /// The push stores weights, bias and pairs at the references it returns, with byte
    /// counts equal to those references' lengths; packed widths only where the bits fit.
    #[test]
    fn push_returns_what_it_stored() {
        // 4 rows of 8 weights in [-2, 1]: 2-bit packable.
        let weights: Vec<i8> = (0..32).map(|v| (v % 4) as i8 - 2).collect();
        let layer = LayerIntegers {
            weights: weights.clone(),
            rows: 4,
            bits: 2,
            bias: Some(vec![7, -3, 0, i32::MAX]),
            requant: requant_pairs(0.02, &[0.1, 0.2, 0.3, 0.4], 0.5, Rounding::Single),
        };
        let mut data = BlobBuilder::new();
        data.push_i8(&[1, 2, 3]).unwrap(); // an earlier layer: references are not at 0
        let stored = layer.push(&mut data, &[Encoding::Packed2]).unwrap();
        assert_eq!(stored.weights.encoding, Encoding::Packed2);
        assert_eq!(stored.weight_bytes, stored.weights.data.len as usize);
        assert_eq!(stored.weight_bytes, 8); // 4 rows × 8 weights × 2 bits
        let bias = stored.bias.unwrap();
        assert_eq!(stored.bias_bytes, bias.len as usize);
        assert_eq!(stored.requant_bytes, stored.requant.len as usize);
        assert_eq!(stored.requant_bytes, 20);
        let at = |r: DataRef| &data.data()[r.offset as usize..][..r.len as usize];
        let bias_ints: Vec<i32> = at(bias)
            .chunks(4)
            .map(|b| i32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(Some(bias_ints), layer.bias);
        let encoded = sprig_runtime::format::write::encode_requant(&layer.requant).unwrap();
        assert_eq!(at(stored.requant), encoded.as_slice());

        // 8-bit weights never take a packed width; no encodings keeps them dense; no
        // bias stores none.
        let wide = LayerIntegers {
            bits: 8,
            bias: None,
            requant: compact(vec![(1 << 30, -3); 4]),
            ..layer
        };
        for encodings in [&[Encoding::Packed2][..], &[]] {
            let mut data = BlobBuilder::new();
            let stored = wide.push(&mut data, encodings).unwrap();
            assert_eq!(stored.weights.encoding, Encoding::Dense);
            assert_eq!(stored.weight_bytes, 32);
            assert_eq!(stored.bias, None);
            assert_eq!(stored.bias_bytes, 0);
            assert_eq!(stored.requant_bytes, 5);
            assert_eq!(stored.requant.len, 5);
            let w = stored.weights.data;
            let dense: Vec<i8> = data.data()[w.offset as usize..][..32]
                .iter()
                .map(|&b| b as i8)
                .collect();
            assert_eq!(dense, weights);
        }
    }
}
