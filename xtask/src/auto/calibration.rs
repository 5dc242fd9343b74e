//! What the board adds to a model's cost, measured in QEMU: a few one-shot candidates
//! (dense, sparse, packed 4- and 2-bit, binary) built into the board's firmware and run, their
//! instruction counts fitted by the instruction model, and the runtime's own flash
//! (code) and RAM (statics and stack beyond the arena) taken from the same runs.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sprig_compressor::auto::{
    CalibrationPoint, Candidate, Choice, InstructionModel, Probe, WORK_CLASSES,
};
use sprig_compressor::data::Dataset;
use sprig_compressor::export::{packed, write_atomic};

use crate::boards::Board;
use crate::firmware::{kernels, Input};
use crate::sim;

/// Test vectors each calibration firmware runs (the count is a mean over them).
const VECTORS: usize = 20;

/// A board's costs as calibrated.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoardCosts {
    pub board: String,
    pub instructions: InstructionModel,
    pub points: Vec<CalibrationPoint>,
    /// The work classes the points were counted in (a calibration kept from a version
    /// with other classes is redone, not misread).
    #[serde(default)]
    pub work_classes: Vec<String>,
    /// Flash of everything but the model and the vectors (largest over the runs).
    pub code_bytes: u64,
    /// Peak RAM beyond the arena: statics and stack (largest over the runs).
    pub ram_beyond_arena: u64,
}

impl BoardCosts {
    /// Whether these costs were counted in today's work classes.
    pub fn is_current(&self) -> bool {
        self.work_classes.iter().eq(WORK_CLASSES.iter())
    }

    /// The fitted prices, the runtime's own flash and RAM, and the fit's residuals, on
    /// stderr.
    pub fn print(&self) {
        let prices: Vec<String> = (self.instructions.prices.iter())
            .filter(|(_, p)| *p > 0.0)
            .map(|(n, p)| format!("{n} {p:.2}"))
            .collect();
        eprintln!(
            "{}: instructions per unit of work: {}; fixed {:.0}; code {} B, RAM beyond the \
             arena {} B",
            self.board,
            prices.join(", "),
            self.instructions.fixed,
            self.code_bytes,
            self.ram_beyond_arena
        );
        for (name, measured, predicted) in self.residuals() {
            eprintln!(
                "  calibration `{name}`: {measured:.0} measured, {predicted:.0} fitted ({:+.1} %)",
                100.0 * (predicted / measured.max(1.0) - 1.0)
            );
        }
    }

    /// Each calibration point's measured count and the model's prediction of it.
    pub fn residuals(&self) -> Vec<(String, f64, f64)> {
        (self.points.iter())
            .map(|p| {
                let predicted = self.instructions.predict_features(&p.features);
                (p.name.clone(), p.measured, predicted)
            })
            .collect()
    }
}

/// The calibration candidates: every layer dense int8; for each kernel kind present,
/// its layers at 50 % and 90 % sparsity, 4-bit and 2-bit with the rest dense, and
/// binary where they may be (two or more in a row become binary ops); every layer at
/// 70 % and at 95 % sparsity; and where convolutions may lose filters, half their
/// filters cut out (8-bit) and a quarter (4-bit), so that channel counts change too.
/// Together they separate each kind's and each encoding's price from the fixed part,
/// with a few points to spare.
fn calibration_candidates(
    kinds: &[String],
    filterable: &[bool],
    binarizable: &[bool],
) -> Vec<(String, Candidate)> {
    let layers = kinds.len();
    let all = |sparsity: f64, bits: u8| Candidate(vec![Choice::level(sparsity, bits); layers]);
    let mut points = vec![("dense int8".to_string(), all(0.0, 8))];
    let mut present: Vec<&String> = kinds.iter().collect();
    present.sort();
    present.dedup();
    for kind in present {
        for (what, choice) in [
            ("level 50 %", Choice::level(0.5, 8)),
            ("level 90 %", Choice::level(0.9, 8)),
            ("4-bit", Choice::level(0.0, 4)),
            ("2-bit", Choice::level(0.0, 2)),
        ] {
            let mut c = all(0.0, 8);
            for (slot, k) in c.0.iter_mut().zip(kinds) {
                if k == kind {
                    *slot = choice;
                }
            }
            points.push((format!("{kind} {what}"), c));
        }
        let mut binary = all(0.0, 8);
        for ((slot, k), &may) in binary.0.iter_mut().zip(kinds).zip(binarizable) {
            if k == kind && may {
                *slot = Choice::level(0.0, 1);
            }
        }
        if binary.binarizes() {
            points.push((format!("{kind} binary"), binary));
        }
    }
    points.push(("level 70 %".into(), all(0.7, 8)));
    points.push(("level 95 %".into(), all(0.95, 8)));
    if filterable.iter().any(|&f| f) {
        for (what, choice) in [
            ("filters 50 %", Choice::filters(0.5, 8)),
            ("filters 25 %, 4-bit", Choice::filters(0.25, 4)),
        ] {
            let mut c = all(0.0, 8);
            for (slot, _) in c.0.iter_mut().zip(filterable).filter(|(_, &f)| f) {
                *slot = choice;
            }
            points.push((what.into(), c));
        }
    }
    points
}

/// Runs the calibration candidates of `probe` on `board` (their folders under `dir`)
/// and fits the board's costs.
pub fn calibrate(
    probe: &Probe,
    board: &Board,
    test: &Dataset,
    dir: &Path,
) -> anyhow::Result<BoardCosts> {
    let mut points = Vec::new();
    let (mut code_bytes, mut ram_beyond_arena) = (0u64, 0u64);
    let reference = probe.measure(&probe.space().uncompressed())?;
    let kinds: Vec<String> = (probe.space().layers.iter())
        .map(|name| {
            (reference.layers.iter())
                .find(|l| &l.name == name)
                .map_or_else(|| "conv".to_string(), |l| l.kind.clone())
        })
        .collect();
    let space = probe.space();
    for (i, (name, candidate)) in
        calibration_candidates(&kinds, &space.filterable, &space.binarizable)
            .into_iter()
            .enumerate()
    {
        let run = dir.join(format!("point{i}"));
        std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
        let (packed, layers) = probe.pack(&candidate)?;
        write_atomic(&run.join(packed::PACKED_FILE), &packed.blob)?;
        packed::write_vectors(&packed.blob, test, VECTORS, &run.join(packed::VECTORS_FILE))?;
        eprintln!("calibration {i} ({name}) on {board}:");
        let input = Input {
            artifacts: run.clone(),
            max_vectors: Some(VECTORS),
        };
        let result = sim::simulate(board, &input, kernels(false), Duration::from_secs(300))
            .with_context(|| format!("calibration run `{name}` on {board}"))?;
        code_bytes = code_bytes.max(result.size.code());
        ram_beyond_arena =
            ram_beyond_arena.max(result.peak_ram().saturating_sub(result.size.arena));
        points.push(CalibrationPoint::new(name, &layers, result.per_inference));
    }
    Ok(BoardCosts {
        board: board.name.clone(),
        instructions: InstructionModel::fit(&points)?,
        points,
        work_classes: WORK_CLASSES.iter().map(|c| c.to_string()).collect(),
        code_bytes,
        ram_beyond_arena,
    })
}
