//! A quantization grid: scale, zero point and integer range ([`QParams`]), and the float
//! interval it covers ([`QuantRange`], what a backward rule may clip to).

use serde::{Deserialize, Serialize};

/// Scale and zero point of a per-tensor affine quantization, with its integer range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QParams {
    pub scale: f32,
    pub zero_point: i32,
    pub qmin: i32,
    pub qmax: i32,
}

impl QParams {
    /// Asymmetric parameters covering `[min, max]` (widened to contain 0, so that zero is
    /// exactly representable: padding and ReLU depend on it).
    pub fn asymmetric(min: f32, max: f32, bits: u8) -> Self {
        let qmin = -(1i32 << (bits - 1));
        let qmax = (1i32 << (bits - 1)) - 1;
        let min = min.min(0.0);
        let max = max.max(0.0);
        let span = max - min;
        let scale = if span > 0.0 && span.is_finite() {
            span / (qmax - qmin) as f32
        } else {
            1.0
        };
        let zero_point = (qmin as f32 - min / scale)
            .round()
            .clamp(qmin as f32, qmax as f32) as i32;
        Self {
            scale,
            zero_point,
            qmin,
            qmax,
        }
    }

    /// The grid of a sign activation (BNN's 1-bit outputs): the integers −1 and +1 at
    /// scale 1 and zero point 0, so they are the float values ±1 (0 is never produced;
    /// a binary consumer reads a value as +1 where it is at least the zero point).
    pub fn binary() -> Self {
        Self {
            scale: 1.0,
            zero_point: 0,
            qmin: -1,
            qmax: 1,
        }
    }

    /// The float interval the integer grid covers.
    pub fn range(&self) -> QuantRange {
        QuantRange {
            low: f64::from(self.scale) * f64::from(self.qmin - self.zero_point),
            high: f64::from(self.scale) * f64::from(self.qmax - self.zero_point),
        }
    }

    /// The integer a float maps to.
    pub fn quantize(&self, x: f32) -> i32 {
        ((x / self.scale).round() as i32 + self.zero_point).clamp(self.qmin, self.qmax)
    }
}

/// What a backward rule may look at besides the tensors: the representable float range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantRange {
    /// Smallest representable value, `(qmin - zero_point) · scale` (per-tensor; for
    /// per-channel weights the widest channel's range).
    pub low: f64,
    pub high: f64,
}
