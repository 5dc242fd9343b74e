//! Learning-rate schedules, functions of the global step so a resumed run sees the same
//! rate at the same step.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Cosine decay from the base rate to `base · final_fraction` over the run.
    Cosine { final_fraction: f64 },
}

impl Schedule {
    /// Learning rate at `step` of `total_steps`.
    pub fn lr(&self, base: f64, step: usize, total_steps: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine { final_fraction } => {
                let progress = (step as f64 / total_steps.max(1) as f64).min(1.0);
                let floor = base * final_fraction;
                floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_base_and_ends_at_floor() {
        let s = Schedule::Cosine {
            final_fraction: 0.1,
        };
        assert_eq!(s.lr(1.0, 0, 100), 1.0);
        assert!((s.lr(1.0, 50, 100) - 0.55).abs() < 1e-12);
        assert!((s.lr(1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert_eq!(Schedule::Constant.lr(0.3, 7, 10), 0.3);
    }
}
