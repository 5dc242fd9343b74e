//! [`Normalization`]: how an 8-bit pixel becomes the float the model sees, and the int8
//! grid the deployed model's input lies on as a consequence.
//!
//! | spelling (`--normalize`) | float of pixel `p` in channel `c` | input grid (int8) |
//! |---|---|---|
//! | `centered` (default) | `(p − 128) / 128` | scale 1/128, zero point 0: `q = p − 128`, exact |
//! | `unit` | `p / 255` (PyTorch `ToTensor`) | scale 1/255, zero point −128: `q = p − 128`, exact |
//! | `mean=m0,m1,…/std=s0,s1,…` | `(p / 255 − m_c) / s_c` (`ToTensor` then `Normalize(mean, std)`) | one scale and zero point spanning every channel's range; the input is rounded onto it |
//!
//! The first two put every pixel exactly on the grid, so the float model, the
//! fake-quantized model and the chip see the same numbers. Per-channel mean/std cannot
//! (one tensor-wide int8 grid, several affine maps), so the grid covers the union of the
//! channels' ranges (and zero, which padding needs) with 256 levels and the quantized forward pass rounds the input onto
//! it, exactly as the deployed model's input quantization does: host and chip still agree,
//! and the rounding is at most half a step (about half a pixel level or less).

use std::fmt;
use std::str::FromStr;

use crate::quant::QParams;

/// How pixels are normalized into model inputs; see the module docs.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Normalization {
    /// `(p − 128) / 128`, in [−1, 1): sprig's default since the first release.
    #[default]
    Centered,
    /// `p / 255`, in [0, 1].
    Unit,
    /// `(p / 255 − mean[c]) / std[c]`, per channel (one entry each, or one for all).
    MeanStd { mean: Vec<f32>, std: Vec<f32> },
}

impl Normalization {
    /// The float pixel `p` of channel `channel` becomes.
    ///
    /// For `centered` and `unit` this is `(q − zero_point) · scale` of
    /// [`input_grid`](Self::input_grid) in f32, so it lies exactly on the grid.
    pub fn apply(&self, p: u8, channel: usize) -> f32 {
        match self {
            Normalization::Centered => super::normalize_pixel(p),
            Normalization::Unit => f32::from(p) * UNIT_SCALE,
            Normalization::MeanStd { mean, std } => {
                let (m, s) = (pick(mean, channel), pick(std, channel));
                (f32::from(p) / 255.0 - m) / s
            }
        }
    }

    /// The int8 grid of the graph input (see the module docs).
    pub fn input_grid(&self) -> QParams {
        match self {
            Normalization::Centered => super::INPUT_GRID,
            Normalization::Unit => QParams {
                scale: UNIT_SCALE,
                zero_point: -128,
                ..super::INPUT_GRID
            },
            Normalization::MeanStd { mean, std } => {
                let channels = mean.len().max(std.len());
                let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
                for c in 0..channels {
                    let (a, b) = (self.apply(0, c), self.apply(255, c));
                    lo = lo.min(a.min(b));
                    hi = hi.max(a.max(b));
                }
                // Zero stays exactly representable (zero padding relies on it).
                QParams::asymmetric(lo, hi, 8)
            }
        }
    }

    /// Checks that per-channel lists fit `channels` (one entry each, or one for all).
    pub fn check_channels(&self, channels: usize) -> Result<(), String> {
        if let Normalization::MeanStd { mean, std } = self {
            for (name, list) in [("mean", mean), ("std", std)] {
                if list.len() != 1 && list.len() != channels {
                    return Err(format!(
                        "--normalize gives {} {name} value(s), the images have {channels} \
                         channel(s): give one per channel, or one for all",
                        list.len()
                    ));
                }
            }
        }
        Ok(())
    }

    /// True for the default, which older caches and fingerprints assume.
    pub fn is_default(&self) -> bool {
        *self == Normalization::Centered
    }
}

/// `1/255` in f32: the `unit` grid's scale and the factor its floats are made with.
const UNIT_SCALE: f32 = 1.0 / 255.0;

fn pick(values: &[f32], channel: usize) -> f32 {
    if values.len() == 1 {
        values[0]
    } else {
        values[channel]
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |v: &[f32]| {
            v.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Normalization::Centered => f.write_str("centered"),
            Normalization::Unit => f.write_str("unit"),
            Normalization::MeanStd { mean, std } => {
                write!(f, "mean={}/std={}", join(mean), join(std))
            }
        }
    }
}

const SPELLINGS: &str =
    "`centered` ((p-128)/128), `unit` (p/255) or `mean=M[,M...]/std=S[,S...]` ((p/255-M)/S)";

impl FromStr for Normalization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "centered" => return Ok(Normalization::Centered),
            "unit" => return Ok(Normalization::Unit),
            _ => {}
        }
        let bad = |why: String| format!("--normalize `{s}`: {why}; expected {SPELLINGS}");
        let (mut mean, mut std) = (None, None);
        for part in s.split('/') {
            let (key, values) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not KEY=VALUES")))?;
            let values: Vec<f32> = values
                .split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f32>()
                        .map_err(|_| bad(format!("`{v}` is not a number")))
                })
                .collect::<Result<_, _>>()?;
            let slot = match key.trim() {
                "mean" => &mut mean,
                "std" => &mut std,
                other => return Err(bad(format!("unknown key `{other}`"))),
            };
            if slot.replace(values).is_some() {
                return Err(bad(format!("`{}` is given twice", key.trim())));
            }
        }
        let (Some(mean), Some(std)) = (mean, std) else {
            return Err(bad("both mean and std are needed".into()));
        };
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(bad(format!("mean {m} is not finite")));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(bad(format!("std {s} is not a positive number")));
        }
        if mean.len() != std.len() && mean.len() != 1 && std.len() != 1 {
            return Err(bad(format!(
                "{} means but {} stds (give as many of each, or one for all channels)",
                mean.len(),
                std.len()
            )));
        }
        Ok(Normalization::MeanStd { mean, std })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centered_and_unit_lie_exactly_on_their_grids() {
        for n in [Normalization::Centered, Normalization::Unit] {
            let g = n.input_grid();
            for p in 0..=255u8 {
                let x = n.apply(p, 0);
                let q = g.quantize(x);
                // q = p − 128 on the chip, and it dequantizes to the very float trained on.
                assert_eq!(q, i32::from(p) - 128, "{n} pixel {p}");
                assert_eq!((q - g.zero_point) as f32 * g.scale, x, "{n} pixel {p}");
            }
        }
        assert_eq!(Normalization::Unit.apply(255, 0), 1.0);
        assert_eq!(Normalization::Centered.apply(0, 0), -1.0);
    }

    #[test]
    fn mean_std_follows_torchvision_and_its_grid_spans_every_channel() {
        let n: Normalization = "mean=0.5,0.25/std=0.5,0.125".parse().unwrap();
        assert_eq!(n.apply(255, 0), 1.0);
        assert_eq!(n.apply(0, 0), -1.0);
        assert_eq!(n.apply(0, 1), -2.0);
        assert_eq!(n.apply(255, 1), 6.0);
        let g = n.input_grid();
        // The grid spans [-2, 6]: both ends quantize inside int8, within half a step.
        for (p, c) in [(0u8, 1), (255, 1), (0, 0), (255, 0), (77, 1)] {
            let x = n.apply(p, c);
            let q = g.quantize(x);
            assert!((-128..=127).contains(&q));
            let back = (q - g.zero_point) as f32 * g.scale;
            assert!(
                (back - x).abs() <= 0.5 * g.scale + 1e-6,
                "{x} -> {q} -> {back}"
            );
        }
        assert!(n.check_channels(2).is_ok());
        assert!(n.check_channels(3).unwrap_err().contains("3 channel"));
    }

    #[test]
    fn spellings_round_trip_and_bad_ones_say_why() {
        for s in [
            "centered",
            "unit",
            "mean=0.1307/std=0.3081",
            "mean=0.5,0.4,0.3/std=0.2",
        ] {
            let n: Normalization = s.parse().unwrap();
            assert_eq!(n.to_string().parse::<Normalization>().unwrap(), n);
        }
        for (bad, why) in [
            ("zscore", "not KEY=VALUES"),
            ("mean=0.5", "both mean and std"),
            ("mean=0.5/std=0", "not a positive number"),
            ("mean=a/std=1", "`a` is not a number"),
            ("mean=1,2/std=1,2,3", "2 means but 3 stds"),
            ("mean=1/mean=2/std=1", "given twice"),
            ("mu=1/std=1", "unknown key `mu`"),
        ] {
            let err = bad.parse::<Normalization>().unwrap_err();
            assert!(err.contains(why) && err.contains(bad), "{bad}: {err}");
        }
    }
}
