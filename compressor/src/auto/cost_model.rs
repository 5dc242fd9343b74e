//! Instructions per inference predicted from what the exporter stored: a linear model
//! over each kernel kind's work in each weight encoding (dense MACs; the nonzero MACs
//! of sparse rows, and their dense MACs for the per-row walk; MACs of packed 4- and
//! 2-bit rows, 1-bit rows unpacked into int8 loops with them; MACs of binary ops, an
//! XNOR and popcount) plus a fixed part (pooling, requantization, dispatch), fitted by least
//! squares to QEMU counts of a few calibration models on the board.

use serde::{Deserialize, Serialize};

use super::probe::{LayerCost, Measurement};
use crate::{Error, Result};

/// Kernel kinds, priced apart (a 5×5 conv and a fully connected row differ per MAC).
pub const KINDS: [&str; 3] = ["conv", "depthwise", "fc"];
/// Work classes of one kind, in feature order.
pub const WORK_CLASSES: [&str; 6] = [
    "dense",
    "sparse-nonzero",
    "sparse-walk",
    "packed4",
    "packed2",
    "binary",
];
const FEATURES: usize = KINDS.len() * WORK_CLASSES.len() + 1;

/// A measured calibration point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationPoint {
    pub name: String,
    pub features: Vec<f64>,
    /// QEMU instructions per inference.
    pub measured: f64,
}

impl CalibrationPoint {
    /// A model of `layers` (as stored) that ran `measured` instructions.
    pub fn new(name: impl Into<String>, layers: &[LayerCost], measured: f64) -> Self {
        Self {
            name: name.into(),
            features: features(layers),
            measured,
        }
    }
}

/// Fitted instructions per unit of each (kind, class) feature, and the fixed part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstructionModel {
    /// `kind/class` and its price, for every feature but the fixed part.
    pub prices: Vec<(String, f64)>,
    pub fixed: f64,
}

/// A measurement's work by (kind, class), then 1 for the fixed part.
fn features(layers: &[LayerCost]) -> Vec<f64> {
    let mut f = vec![0.0; FEATURES];
    for l in layers {
        let kind = KINDS.iter().position(|k| *k == l.kind).unwrap_or(0);
        let at = |class: usize| kind * WORK_CLASSES.len() + class;
        match l.encoding.as_str() {
            "sparse-rel8" | "sparse-rel4" => {
                f[at(1)] += l.nonzero_macs as f64;
                f[at(2)] += l.macs as f64;
            }
            "packed4" => f[at(3)] += l.macs as f64,
            "packed2" | "packed1" => f[at(4)] += l.macs as f64,
            "binary" => f[at(5)] += l.macs as f64,
            _ => f[at(0)] += l.macs as f64,
        }
    }
    f[FEATURES - 1] = 1.0;
    f
}

impl InstructionModel {
    /// Non-negative least squares over `points`. A feature no point exercises is priced
    /// as its kind's dense MACs (the walk of sparse rows at 0): a guess that the final
    /// QEMU check confirms or refutes. With one network, a layer's dense MACs are the
    /// same in every point, so the fixed part and the dense prices share what they
    /// explain: the prices predict, they are not the kernels' own cost per MAC.
    pub fn fit(points: &[CalibrationPoint]) -> Result<Self> {
        if points.is_empty() {
            return Err(Error::Auto(
                "the instruction model needs at least one calibration point".into(),
            ));
        }
        let used: Vec<usize> = (0..FEATURES)
            .filter(|&j| points.iter().any(|p| p.features[j] != 0.0))
            .collect();
        // Normal equations over the used columns, each scaled to at most 1 so that MAC
        // counts and the constant column are of one magnitude.
        let scale: Vec<f64> = (used.iter())
            .map(|&j| {
                points
                    .iter()
                    .map(|p| p.features[j].abs())
                    .fold(0.0, f64::max)
            })
            .collect();
        let target = points.iter().map(|p| p.measured.abs()).fold(1.0, f64::max);
        let n = used.len();
        let mut a = vec![vec![0.0; n + 1]; n];
        for p in points {
            let x: Vec<f64> = (0..n).map(|k| p.features[used[k]] / scale[k]).collect();
            for r in 0..n {
                for c in 0..n {
                    a[r][c] += x[r] * x[c];
                }
                a[r][n] += x[r] * p.measured / target;
            }
        }
        let solution = nonnegative_least_squares(&a);
        let mut coef = vec![None; FEATURES];
        for (k, &j) in used.iter().enumerate() {
            coef[j] = Some(solution[k] * target / scale[k]);
        }
        let mut prices = Vec::with_capacity(FEATURES - 1);
        for (kind_i, kind) in KINDS.iter().enumerate() {
            let dense = coef[kind_i * WORK_CLASSES.len()]
                .or_else(|| coef[0])
                .unwrap_or(0.0);
            for (class_i, class) in WORK_CLASSES.iter().enumerate() {
                let fallback = if *class == "sparse-walk" { 0.0 } else { dense };
                let price = coef[kind_i * WORK_CLASSES.len() + class_i].unwrap_or(fallback);
                prices.push((format!("{kind}/{class}"), price));
            }
        }
        Ok(Self {
            prices,
            fixed: coef[FEATURES - 1].unwrap_or(0.0),
        })
    }

    /// Predicted instructions per inference of `m`.
    pub fn predict(&self, m: &Measurement) -> f64 {
        self.predict_features(&features(&m.layers))
    }

    /// Predicted instructions of a calibration point (to show the fit's residuals).
    pub fn predict_features(&self, features: &[f64]) -> f64 {
        self.fixed
            + (self.prices.iter().zip(features))
                .map(|((_, price), work)| price * work)
                .sum::<f64>()
    }

    /// The price of `kind/class` (`conv/dense`, `fc/packed4`, ...).
    pub fn price(&self, feature: &str) -> Option<f64> {
        self.prices
            .iter()
            .find(|(n, _)| n == feature)
            .map(|(_, p)| *p)
    }
}

/// Minimises `|Ax − b|²` over `x ≥ 0` by coordinate descent on the normal equations,
/// given as the augmented `n × (n+1)` matrix `[AᵀA | Aᵀb]` (a convex problem: the
/// sweeps converge to the optimum; prices must not come out negative, and clamping an
/// unconstrained solution afterwards would leave a bad fit).
fn nonnegative_least_squares(a: &[Vec<f64>]) -> Vec<f64> {
    let n = a.len();
    let mut x = vec![0.0; n];
    for _ in 0..20_000 {
        let mut moved = 0.0f64;
        for j in 0..n {
            if a[j][j] <= 0.0 {
                continue;
            }
            let gradient: f64 = (0..n).map(|k| a[j][k] * x[k]).sum::<f64>() - a[j][n];
            let next = (x[j] - gradient / a[j][j]).max(0.0);
            moved = moved.max((next - x[j]).abs());
            x[j] = next;
        }
        if moved < 1e-13 {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(kind: &str, encoding: &str, macs: usize, nonzero: usize) -> LayerCost {
        LayerCost {
            name: "l".into(),
            kind: kind.into(),
            encoding: encoding.into(),
            macs,
            nonzero_macs: nonzero,
        }
    }

    fn measurement(layers: Vec<LayerCost>) -> Measurement {
        Measurement {
            accuracy: 0.9,
            model_bytes: 0,
            arena_bytes: 0,
            layers,
        }
    }

    fn model(prices: &[(&str, f64)], fixed: f64) -> InstructionModel {
        let mut all = Vec::new();
        for kind in KINDS {
            for class in WORK_CLASSES {
                let name = format!("{kind}/{class}");
                let p = prices
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or(0.0, |(_, p)| *p);
                all.push((name, p));
            }
        }
        InstructionModel { prices: all, fixed }
    }

    #[test]
    fn fit_recovers_known_prices() {
        let truth = model(
            &[
                ("conv/dense", 4.0),
                ("conv/sparse-nonzero", 7.0),
                ("conv/sparse-walk", 0.5),
                ("conv/packed4", 6.0),
                ("fc/dense", 2.0),
                ("fc/packed2", 9.0),
                ("fc/binary", 0.6),
            ],
            50_000.0,
        );
        // Two network sizes, so that each price is separable from the fixed part.
        let c = |enc: &str, macs: usize, nz: usize| layer("conv", enc, macs, nz);
        let f = |enc: &str, macs: usize| layer("fc", enc, macs, macs);
        let models = [
            measurement(vec![c("dense", 100_000, 100_000), f("dense", 48_000)]),
            measurement(vec![c("dense", 60_000, 60_000), f("dense", 20_000)]),
            measurement(vec![c("sparse-rel8", 100_000, 10_000), f("dense", 48_000)]),
            measurement(vec![c("sparse-rel4", 100_000, 50_000), f("dense", 48_000)]),
            measurement(vec![c("sparse-rel8", 60_000, 50_000), f("dense", 20_000)]),
            measurement(vec![c("packed4", 100_000, 100_000), f("dense", 48_000)]),
            measurement(vec![c("packed4", 60_000, 60_000), f("packed2", 48_000)]),
            measurement(vec![c("dense", 100_000, 100_000), f("packed2", 20_000)]),
            measurement(vec![c("dense", 100_000, 100_000), f("binary", 48_000)]),
            measurement(vec![c("packed4", 60_000, 60_000), f("binary", 20_000)]),
        ];
        let points: Vec<CalibrationPoint> = (models.iter().enumerate())
            .map(|(i, m)| CalibrationPoint::new(format!("p{i}"), &m.layers, truth.predict(m)))
            .collect();
        let fitted = InstructionModel::fit(&points).unwrap();
        for name in [
            "conv/dense",
            "conv/sparse-nonzero",
            "conv/sparse-walk",
            "conv/packed4",
            "fc/dense",
            "fc/packed2",
            "fc/binary",
        ] {
            let (got, want) = (fitted.price(name).unwrap(), truth.price(name).unwrap());
            assert!((got - want).abs() < 1e-6, "{name}: {got} vs {want}");
        }
        assert!(
            (fitted.fixed - truth.fixed).abs() < 1e-3,
            "{}",
            fitted.fixed
        );
        for m in &models {
            assert!((fitted.predict(m) - truth.predict(m)).abs() < 1e-3);
        }
    }

    #[test]
    fn an_unexercised_feature_is_priced_as_its_kinds_dense_macs() {
        let a = measurement(vec![layer("fc", "dense", 1_000, 1_000)]);
        let b = measurement(vec![layer("fc", "dense", 3_000, 3_000)]);
        let points = [
            CalibrationPoint::new("a", &a.layers, 5_000.0 + 1_000.0 * 5.0),
            CalibrationPoint::new("b", &b.layers, 5_000.0 + 3_000.0 * 5.0),
        ];
        let fitted = InstructionModel::fit(&points).unwrap();
        assert!((fitted.price("fc/dense").unwrap() - 5.0).abs() < 1e-6);
        assert_eq!(fitted.price("fc/packed4"), fitted.price("fc/dense"));
        assert_eq!(fitted.price("fc/sparse-walk"), Some(0.0));
        assert!(InstructionModel::fit(&[]).is_err());
    }
}
