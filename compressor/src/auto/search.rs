//! The search over the sensitivity table: a greedy start from the table alone (each
//! layer's effect taken as additive), then simulated annealing on real one-shot
//! measurements, as NNI's SimulatedAnnealingPruner does, over per-layer sparsity and
//! bit width instead of sparsity only. Annealing rather than an evolutionary search:
//! it needs one measurement per step (a population needs dozens), the space is small
//! (a few choices per layer), and NNI's users know its knobs.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::budget::{Budget, Estimate};
use super::space::{Candidate, Choice};
use crate::Result;

/// Accuracy points one unit of relative budget overshoot costs in the annealing score.
const OVERSHOOT_PENALTY: f64 = 1.0;

/// The annealing's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnnealSettings {
    pub iterations: usize,
    /// In accuracy units (0.01: a one-point loss is accepted with probability 1/e at
    /// the start).
    pub start_temperature: f64,
    /// Temperature factor per iteration.
    pub cooling: f64,
    pub seed: u64,
}

impl Default for AnnealSettings {
    fn default() -> Self {
        Self {
            iterations: 150,
            start_temperature: 0.01,
            cooling: 0.97,
            seed: 0,
        }
    }
}

/// A candidate with its estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluated {
    pub candidate: Candidate,
    pub estimate: Estimate,
}

/// Annealing's objective: accuracy, less a penalty for every bit over the budget.
pub fn score(budget: &Budget, e: &Estimate) -> f64 {
    e.accuracy - OVERSHOOT_PENALTY * budget.overshoot(e)
}

/// The greedy start: from every layer at its first allowed choice, repeatedly take the
/// one-layer change with the most overshoot removed per accuracy lost, until the
/// predicted candidate fits (or no change helps). `predict` estimates a candidate from
/// the sensitivity table without measuring it.
pub fn greedy_start(
    allowed: &[Vec<Choice>],
    budget: &Budget,
    predict: &dyn Fn(&Candidate) -> Estimate,
) -> Candidate {
    let mut current = Candidate(allowed.iter().map(|a| a[0]).collect());
    loop {
        let now = predict(&current);
        let over = budget.overshoot(&now);
        if over == 0.0 {
            return current;
        }
        let mut best: Option<(f64, Candidate)> = None;
        for (i, choices) in allowed.iter().enumerate() {
            for &choice in choices {
                if choice == current.0[i] {
                    continue;
                }
                let next = current.with(i, choice);
                let e = predict(&next);
                let gained = over - budget.overshoot(&e);
                if gained <= 0.0 {
                    continue;
                }
                let lost = (now.accuracy - e.accuracy).max(0.0);
                let merit = gained / (lost + 1e-4);
                if best.as_ref().is_none_or(|(m, _)| merit > *m) {
                    best = Some((merit, next));
                }
            }
        }
        match best {
            Some((_, next)) => current = next,
            None => return current,
        }
    }
}

/// Simulated annealing from `start`: each step changes one layer to another of its
/// allowed choices, measures it, and moves there if it scores better, or worse with
/// probability `exp(Δ/T)`. Returns every distinct candidate measured, `start` first.
pub fn anneal(
    start: Candidate,
    allowed: &[Vec<Choice>],
    budget: &Budget,
    settings: &AnnealSettings,
    evaluate: &mut dyn FnMut(&Candidate) -> Result<Estimate>,
) -> Result<Vec<Evaluated>> {
    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut current = Evaluated {
        estimate: evaluate(&start)?,
        candidate: start,
    };
    let mut seen = vec![current.clone()];
    let movable: Vec<usize> = (0..allowed.len())
        .filter(|&i| allowed[i].len() > 1)
        .collect();
    if movable.is_empty() {
        return Ok(seen);
    }
    let mut temperature = settings.start_temperature;
    for _ in 0..settings.iterations {
        let layer = movable[rng.random_range(0..movable.len())];
        let others: Vec<Choice> = (allowed[layer].iter().copied())
            .filter(|c| *c != current.candidate.0[layer])
            .collect();
        let candidate = (current.candidate).with(layer, others[rng.random_range(0..others.len())]);
        let estimate = evaluate(&candidate)?;
        let next = Evaluated {
            candidate,
            estimate,
        };
        if !seen.iter().any(|s| s.candidate == next.candidate) {
            seen.push(next.clone());
        }
        let delta = score(budget, &next.estimate) - score(budget, &current.estimate);
        if delta >= 0.0 || rng.random::<f64>() < (delta / temperature.max(1e-12)).exp() {
            current = next;
        }
        temperature *= settings.cooling;
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic problem: each layer's bytes fall with sparsity and bits, accuracy
    /// falls with the square of the compression; layer 0 is four times as sensitive.
    fn synthetic(c: &Candidate) -> Estimate {
        let mut bytes = 0.0;
        let mut loss = 0.0;
        for (i, ch) in c.0.iter().enumerate() {
            let kept = (1.0 - ch.sparsity) * ch.bits as f64 / 8.0;
            bytes += 10_000.0 * kept;
            let weight = if i == 0 { 0.4 } else { 0.1 };
            loss += weight * (1.0 - kept).powi(2);
        }
        Estimate {
            accuracy: 0.9 - loss,
            model_bytes: bytes as usize,
            ram_bytes: 4_000,
            instructions: bytes * 3.0,
        }
    }

    fn allowed(layers: usize) -> Vec<Vec<Choice>> {
        let mut choices = Vec::new();
        for bits in [8, 4, 2] {
            for sparsity in [0.0, 0.5, 0.8, 0.9] {
                choices.push(Choice::level(sparsity, bits));
            }
        }
        vec![choices; layers]
    }

    #[test]
    fn annealing_finds_a_fitting_candidate_better_than_its_start() {
        let budget = Budget {
            max_model_bytes: Some(12_000),
            ..Budget::default()
        };
        let allowed = allowed(3);
        let start = greedy_start(&allowed, &budget, &synthetic);
        assert!(budget.fits(&synthetic(&start)), "greedy start fits");
        let seen = anneal(
            start.clone(),
            &allowed,
            &budget,
            &AnnealSettings::default(),
            &mut |c| Ok(synthetic(c)),
        )
        .unwrap();
        assert_eq!(seen[0].candidate, start);
        let best = (seen.iter())
            .filter(|e| budget.fits(&e.estimate))
            .max_by(|a, b| a.estimate.accuracy.total_cmp(&b.estimate.accuracy))
            .unwrap();
        assert!(best.estimate.accuracy >= synthetic(&start).accuracy);
        // The sensitive layer keeps more than the others.
        let kept = |ch: &Choice| (1.0 - ch.sparsity) * ch.bits as f64;
        assert!(kept(&best.candidate.0[0]) >= kept(&best.candidate.0[1]));
        // Same seed, same walk.
        let again = anneal(
            start,
            &allowed,
            &budget,
            &AnnealSettings::default(),
            &mut |c| Ok(synthetic(c)),
        )
        .unwrap();
        assert_eq!(again, seen);
    }

    #[test]
    fn greedy_stops_at_the_smallest_when_nothing_fits() {
        let budget = Budget {
            max_model_bytes: Some(10),
            ..Budget::default()
        };
        let allowed = allowed(2);
        let start = greedy_start(&allowed, &budget, &synthetic);
        assert!(!budget.fits(&synthetic(&start)));
        let smallest = Choice::level(0.9, 2);
        assert_eq!(start.0, vec![smallest; 2]);
    }
}
