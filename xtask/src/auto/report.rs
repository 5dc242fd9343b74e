//! What an auto run leaves: `pareto.json` (everything), `pareto.md` (the tables) and
//! `pareto.svg` (top-1 against model bytes: the search's front one-shot, the trials
//! fine-tuned and deployed).

use std::path::{Path, PathBuf};

use serde::Serialize;
use sprig_compressor::auto::{
    layers_of_blob, pareto_chart, Budget, Estimate, Evaluated, Measurement, SearchSpace,
};
use sprig_compressor::export::packed::PACKED_FILE;

use super::trials::Outcome;

pub const JSON_FILE: &str = "pareto.json";
pub const MARKDOWN_FILE: &str = "pareto.md";
pub const CHART_FILE: &str = "pareto.svg";

/// One fine-tuned trial as measured.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRow {
    pub name: String,
    pub dir: PathBuf,
    /// Deployed top-1 on the test split, `model.sprig` bytes, RAM (arena + the board's
    /// part) and predicted instructions; `None` when the trial failed or wrote no model.
    pub estimate: Option<Estimate>,
    pub fits: bool,
    pub error: Option<String>,
}

impl TrialRow {
    pub fn of(
        outcome: &Outcome,
        estimate: &dyn Fn(&Measurement) -> Estimate,
        budget: &Budget,
    ) -> Self {
        let trial = &outcome.trial;
        let measured = match &outcome.result {
            Err(e) => Err(e.clone()),
            Ok(summary) => {
                let path = trial.dir.join(PACKED_FILE);
                match (
                    std::fs::read(&path),
                    summary.deployed_accuracy,
                    summary.arena_bytes,
                ) {
                    (Ok(blob), Some(accuracy), Some(arena)) => {
                        let macs: Vec<(String, usize)> = (summary.layers.iter())
                            .map(|l| (l.name.clone(), l.macs))
                            .collect();
                        layers_of_blob(&blob, &macs).map(|layers| {
                            estimate(&Measurement {
                                accuracy: accuracy as f64,
                                model_bytes: blob.len(),
                                arena_bytes: arena,
                                layers,
                            })
                        })
                    }
                    .map_err(|e| format!("{}: {e}", path.display())),
                    _ => Err(format!(
                        "no {PACKED_FILE}: {}",
                        (summary.packed_skipped.as_deref()).unwrap_or("the trial deployed nothing")
                    )),
                }
            }
        };
        let (estimate, error) = match measured {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            name: trial.name.clone(),
            dir: trial.dir.clone(),
            fits: estimate.as_ref().is_some_and(|e| budget.fits(e)),
            estimate,
            error,
        }
    }
}

/// The chosen model run on the board.
#[derive(Debug, Clone, Serialize)]
pub struct BoardCheck {
    /// Test vectors run, every one bit-exact with the host.
    pub vectors: u64,
    pub instructions: f64,
    pub predicted_instructions: f64,
    pub peak_ram: u64,
    /// Firmware flash without the test vectors.
    pub flash: u64,
    pub board_flash: u64,
    pub board_ram: u64,
}

impl BoardCheck {
    /// The limits of `budget` the measured figures break, in words (empty: none).
    pub fn over(&self, budget: &Budget) -> Vec<String> {
        let mut over = Vec::new();
        if let Some(limit) = budget.max_ram_bytes {
            if self.peak_ram > limit as u64 {
                over.push(format!("peak RAM {} B > {limit} B", self.peak_ram));
            }
        }
        if let Some(limit) = budget.max_instructions {
            if self.instructions > limit {
                over.push(format!(
                    "{:.0} instructions per inference > {limit:.0}",
                    self.instructions
                ));
            }
        }
        over
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub board: Option<String>,
    pub budget: Budget,
    pub float_accuracy: f64,
    /// What was searched (its layers name the candidates' choices).
    pub space: SearchSpace,
    /// Every candidate the search measured (one-shot).
    pub search: Vec<Evaluated>,
    /// Indices into `search` of its Pareto front.
    pub front: Vec<usize>,
    pub trials: Vec<TrialRow>,
    pub chosen: Option<String>,
    pub board_check: Option<BoardCheck>,
}

impl Report {
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        super::state::write(&dir.join(JSON_FILE), &serde_json::to_string_pretty(self)?)?;
        super::state::write(&dir.join(MARKDOWN_FILE), &self.markdown())?;
        let front: Vec<Estimate> = self
            .front
            .iter()
            .map(|&i| self.search[i].estimate)
            .collect();
        let trials: Vec<Estimate> = self.trials.iter().filter_map(|t| t.estimate).collect();
        let svg = pareto_chart(
            &format!("{}: top-1 against model size", self.model),
            &[
                ("search front (probe, validation images)", front),
                ("trials (fine-tuned, deployed)", trials),
            ],
        )?;
        super::state::write(&dir.join(CHART_FILE), &svg)
    }

    pub fn markdown(&self) -> String {
        let space = &self.space;
        let mut out = format!(
            "# auto: {}{}\n\nBudget: {}. Float baseline {:.2} % top-1.\n\n",
            self.model,
            self.board
                .as_ref()
                .map_or(String::new(), |b| format!(" on {b}")),
            self.budget.describe(),
            100.0 * self.float_accuracy
        );
        out += &format!(
            "## Search: Pareto front of {} candidates (probe top-1 on validation images)\n\n",
            self.search.len()
        );
        out += "| candidate (layer=sparsity %, bits) | top-1 % | model B | RAM B | instructions | fits |\n|---|---:|---:|---:|---:|---|\n";
        for &i in &self.front {
            let e = &self.search[i];
            out += &row(
                &e.candidate.key(space),
                &e.estimate,
                self.budget.fits(&e.estimate),
            );
        }
        out += "\n## Trials (fine-tuned; deployed top-1 on the test split)\n\n";
        out += "| trial | top-1 % | model B | RAM B | instructions (predicted) | fits |\n|---|---:|---:|---:|---:|---|\n";
        for t in &self.trials {
            match (&t.estimate, &t.error) {
                (Some(e), _) => out += &row(&t.name, e, t.fits),
                (None, error) => {
                    out += &format!(
                        "| {} | failed: {} | | | | |\n",
                        t.name,
                        error.as_deref().unwrap_or("no result").replace('|', "/")
                    )
                }
            }
        }
        match &self.chosen {
            Some(name) => out += &format!("\nChosen: **{name}** (plan in chosen.json).\n"),
            None => out += "\nChosen: none fits.\n",
        }
        if let Some(c) = &self.board_check {
            out += &format!(
                "\nOn the board: {} vectors bit-exact with the host; {:.0} instructions per \
                 inference (predicted {:.0}, {:+.1} %); peak RAM {} of {} B; flash {} of {} B; \
                 {}.\n",
                c.vectors,
                c.instructions,
                c.predicted_instructions,
                100.0 * (c.predicted_instructions / c.instructions.max(1.0) - 1.0),
                c.peak_ram,
                c.board_ram,
                c.flash,
                c.board_flash,
                match c.over(&self.budget) {
                    over if over.is_empty() => "within the budget".to_string(),
                    over => format!("**over the budget**: {}", over.join(", ")),
                }
            );
        }
        out
    }
}

fn row(name: &str, e: &Estimate, fits: bool) -> String {
    format!(
        "| {name} | {:.2} | {} | {} | {:.0} | {} |\n",
        100.0 * e.accuracy,
        e.model_bytes,
        e.ram_bytes,
        e.instructions,
        if fits { "yes" } else { "no" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_board_check_names_each_limit_the_measurement_breaks() {
        let check = BoardCheck {
            vectors: 100,
            instructions: 5_000_000.0,
            predicted_instructions: 4_800_000.0,
            peak_ram: 7_456,
            flash: 50_000,
            board_flash: 262_144,
            board_ram: 16_384,
        };
        let mut budget = Budget {
            max_model_bytes: Some(16_384),
            max_ram_bytes: Some(16_384),
            max_instructions: Some(6e6),
        };
        assert!(check.over(&budget).is_empty());
        budget.max_ram_bytes = Some(7_000);
        budget.max_instructions = Some(4.9e6);
        assert_eq!(
            check.over(&budget),
            [
                "peak RAM 7456 B > 7000 B",
                "5000000 instructions per inference > 4900000"
            ]
        );
    }
}
