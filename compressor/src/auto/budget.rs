//! What a deployed model may cost: the packed model's flash, the RAM it runs in, and
//! instructions per inference; and a candidate's estimate of each.

use serde::{Deserialize, Serialize};

/// Limits a chosen model must meet (`None`: no limit of that kind).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Bytes of `model.sprig` in flash.
    pub max_model_bytes: Option<usize>,
    /// Peak RAM on the board: the arena plus the runtime's static data and stack.
    pub max_ram_bytes: Option<usize>,
    /// Instructions per inference on the board.
    pub max_instructions: Option<f64>,
}

/// A candidate's accuracy and costs, as estimated or as measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Top-1, 0..1.
    pub accuracy: f64,
    pub model_bytes: usize,
    pub ram_bytes: usize,
    pub instructions: f64,
}

impl Budget {
    /// How far `e` is over the budget: the sum over the limits of the relative excess
    /// (0 when it fits).
    pub fn overshoot(&self, e: &Estimate) -> f64 {
        let over = |value: f64, limit: Option<f64>| {
            limit.map_or(0.0, |l| (value / l.max(1.0) - 1.0).max(0.0))
        };
        over(e.model_bytes as f64, self.max_model_bytes.map(|b| b as f64))
            + over(e.ram_bytes as f64, self.max_ram_bytes.map(|b| b as f64))
            + over(e.instructions, self.max_instructions)
    }

    pub fn fits(&self, e: &Estimate) -> bool {
        self.overshoot(e) == 0.0
    }

    /// The limits in words (`model ≤ 16,384 B, RAM ≤ 16,384 B`).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.max_model_bytes {
            parts.push(format!("model ≤ {b} B"));
        }
        if let Some(b) = self.max_ram_bytes {
            parts.push(format!("RAM ≤ {b} B"));
        }
        if let Some(i) = self.max_instructions {
            parts.push(format!("≤ {i:.0} instructions per inference"));
        }
        if parts.is_empty() {
            "no limits".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overshoot_sums_relative_excess_over_each_limit() {
        let budget = Budget {
            max_model_bytes: Some(1000),
            max_ram_bytes: Some(2000),
            max_instructions: None,
        };
        let mut e = Estimate {
            accuracy: 0.9,
            model_bytes: 1000,
            ram_bytes: 1500,
            instructions: 1e9,
        };
        assert!(budget.fits(&e));
        e.model_bytes = 1500;
        e.ram_bytes = 2200;
        assert!((budget.overshoot(&e) - 0.6).abs() < 1e-12);
        assert!(!budget.fits(&e));
        assert_eq!(Budget::default().overshoot(&e), 0.0);
    }
}
