//! Auto-compression to a budget (`cargo xtask auto`): the search's library half.
//!
//! A [`SearchSpace`] gives every Conv2d and Linear a Level sparsity or a fraction of
//! its filters, and a weight bit width (binary included); a [`Probe`] measures a [`Candidate`] one-shot on the trained baseline (the
//! real exporter's bytes and arena, fake-quantized top-1 on validation images); the
//! [`Sensitivity`] table measures every layer alone at every choice; [`greedy_start`]
//! and [`anneal`] search over it for the most accurate candidate that fits a
//! [`Budget`], with instructions priced by an [`InstructionModel`] fitted to QEMU
//! counts; [`pareto_front`] keeps what nothing beats. The chosen candidates become
//! ordinary plans ([`Candidate::plan`]) that `cargo xtask compress` fine-tunes as
//! trials; xtask runs those, on the board's QEMU too.

mod budget;
mod cost_model;
mod pareto;
mod probe;
mod search;
mod sensitivity;
mod space;

pub use budget::{Budget, Estimate};
pub use cost_model::{CalibrationPoint, InstructionModel, KINDS, WORK_CLASSES};
pub use pareto::{pareto_chart, pareto_front};
pub use probe::{layers_of_blob, FineTune, FreshCopy, LayerCost, Measurement, Probe};
pub use search::{anneal, greedy_start, score, AnnealSettings, Evaluated};
pub use sensitivity::{Sensitivity, SensitivityRow};
pub use space::{
    Candidate, Choice, SearchSpace, BNN_LR, DEFAULT_BITS, DEFAULT_FILTER_SPARSITIES,
    DEFAULT_SPARSITIES,
};
