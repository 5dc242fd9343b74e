//! The Pareto front of accuracy against flash, RAM and instructions: the candidates no
//! other candidate beats on every axis at once.

use super::budget::Estimate;
use crate::chart::{line_chart, DrawError, LineChart};

/// True when `a` is at least as good as `b` everywhere and better somewhere.
fn dominates(a: &Estimate, b: &Estimate) -> bool {
    let no_worse = a.accuracy >= b.accuracy
        && a.model_bytes <= b.model_bytes
        && a.ram_bytes <= b.ram_bytes
        && a.instructions <= b.instructions;
    let better = a.accuracy > b.accuracy
        || a.model_bytes < b.model_bytes
        || a.ram_bytes < b.ram_bytes
        || a.instructions < b.instructions;
    no_worse && better
}

/// Indices of the non-dominated estimates, by model bytes ascending.
pub fn pareto_front(points: &[Estimate]) -> Vec<usize> {
    let mut front: Vec<usize> = (0..points.len())
        .filter(|&i| !points.iter().any(|p| dominates(p, &points[i])))
        .collect();
    front.sort_by_key(|&i| (points[i].model_bytes, i));
    front
}

/// Accuracy against model bytes as SVG: each named series a line through its points
/// sorted by bytes (the search's front, the fine-tuned trials).
pub fn pareto_chart(caption: &str, series: &[(&str, Vec<Estimate>)]) -> Result<String, DrawError> {
    let series: Vec<(&str, Vec<(f64, f64)>)> = series
        .iter()
        .map(|(name, points)| {
            let mut xy: Vec<(f64, f64)> = (points.iter())
                .map(|e| (e.model_bytes as f64 / 1024.0, 100.0 * e.accuracy))
                .collect();
            xy.sort_by(|a, b| a.0.total_cmp(&b.0));
            (*name, xy)
        })
        .collect();
    let xs = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, _)| x));
    let (lo, hi) = xs.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    });
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let pad = ((hi - lo) * 0.05).max(0.5);
    line_chart(&LineChart {
        caption,
        x_desc: "model.sprig (KiB)",
        y_desc: "top-1 (%)",
        x_range: (lo - pad).max(0.0)..hi + pad,
        series: &series,
        reference: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(accuracy: f64, model_bytes: usize, instructions: f64) -> Estimate {
        Estimate {
            accuracy,
            model_bytes,
            ram_bytes: 100,
            instructions,
        }
    }

    #[test]
    fn the_front_keeps_exactly_the_undominated() {
        let points = [
            e(0.90, 60_000, 2e6),   // biggest, most accurate: on the front
            e(0.88, 20_000, 1e6),   // on the front
            e(0.87, 25_000, 1.5e6), // dominated by the one above
            e(0.80, 8_000, 1.2e6),  // smallest: on the front
            e(0.88, 20_000, 1e6),   // a tie with #1 is not dominated either
        ];
        assert_eq!(pareto_front(&points), vec![3, 1, 4, 0]);
        let svg = pareto_chart("front", &[("search", points.to_vec())]).unwrap();
        assert!(svg.contains("<svg"));
    }
}
