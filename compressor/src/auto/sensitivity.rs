//! Sensitivity analysis (as NNI's sensitivity pruner does it): every layer alone at
//! every choice of the space, the rest dense int8, measured one-shot. The search then
//! leaves out the choices that wreck a layer on their own, and starts from the table.

use serde::{Deserialize, Serialize};

use super::budget::Estimate;
use super::probe::{Measurement, Probe};
use super::space::{Candidate, Choice, SearchSpace};
use crate::Result;

/// One layer at one choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    pub layer: String,
    pub choice: Choice,
    /// Only this layer compressed, measured one-shot.
    pub measurement: Measurement,
}

/// The whole table and its reference (every layer dense int8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sensitivity {
    pub reference: Measurement,
    pub rows: Vec<SensitivityRow>,
}

impl Sensitivity {
    /// Measures every layer at every choice of `probe`'s space.
    pub fn analyse(probe: &Probe) -> Result<Self> {
        let space = probe.space();
        let reference = probe.measure(&space.uncompressed())?;
        let mut rows = Vec::new();
        for (i, layer) in space.layers.iter().enumerate() {
            for choice in space.choices(i) {
                if choice == Choice::DENSE_INT8 {
                    continue;
                }
                let candidate: Candidate = space.uncompressed().with(i, choice);
                let m = probe.measure(&candidate)?;
                rows.push(SensitivityRow {
                    layer: layer.clone(),
                    choice,
                    measurement: m,
                });
            }
        }
        Ok(Self { reference, rows })
    }

    /// Per layer (in `layers` order), the choices whose one-shot accuracy alone stays
    /// within `max_drop` of the reference; dense int8 is always kept.
    pub fn allowed(&self, layers: &[String], max_drop: f64) -> Vec<Vec<Choice>> {
        layers
            .iter()
            .map(|layer| {
                let mut kept = vec![Choice::DENSE_INT8];
                kept.extend(
                    (self.rows.iter())
                        .filter(|r| &r.layer == layer)
                        .filter(|r| self.reference.accuracy - r.measurement.accuracy <= max_drop)
                        .map(|r| r.choice),
                );
                kept
            })
            .collect()
    }

    /// `candidate` predicted from the table without measuring it: each layer's change
    /// from the reference, as `estimate` prices a measurement, added up.
    pub fn predict(
        &self,
        space: &SearchSpace,
        candidate: &Candidate,
        estimate: &dyn Fn(&Measurement) -> Estimate,
    ) -> Estimate {
        let reference = estimate(&self.reference);
        let (mut accuracy, mut bytes, mut instructions) = (
            reference.accuracy,
            reference.model_bytes as f64,
            reference.instructions,
        );
        for (layer, choice) in space.layers.iter().zip(&candidate.0) {
            let row = (self.rows.iter()).find(|r| &r.layer == layer && r.choice == *choice);
            if let Some(row) = row {
                let alone = estimate(&row.measurement);
                accuracy += alone.accuracy - reference.accuracy;
                bytes += alone.model_bytes as f64 - reference.model_bytes as f64;
                instructions += alone.instructions - reference.instructions;
            }
        }
        Estimate {
            accuracy,
            model_bytes: bytes.max(0.0) as usize,
            ram_bytes: reference.ram_bytes,
            instructions,
        }
    }

    /// The table as Markdown: one row per layer, one column per choice (top-1 %).
    pub fn table(&self, layers: &[String]) -> String {
        let choices: Vec<Choice> = {
            let mut seen: Vec<Choice> = Vec::new();
            for r in &self.rows {
                if !seen.contains(&r.choice) {
                    seen.push(r.choice);
                }
            }
            seen
        };
        let mut out = format!(
            "probe top-1 (%) with one layer compressed (s: Level sparsity %, f: filters removed %, \
             b: weight bits); every layer dense int8: {:.2}\n\n| layer |",
            100.0 * self.reference.accuracy
        );
        for c in &choices {
            out += &format!(" {} |", c.label());
        }
        out += "\n|---|";
        out += &"---:|".repeat(choices.len());
        out += "\n";
        for layer in layers {
            out += &format!("| {layer} |");
            for c in &choices {
                match self
                    .rows
                    .iter()
                    .find(|r| &r.layer == layer && r.choice == *c)
                {
                    Some(r) => out += &format!(" {:.1} |", 100.0 * r.measurement.accuracy),
                    None => out += " |",
                }
            }
            out += "\n";
        }
        out
    }
}
