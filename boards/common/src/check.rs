//! Run every embedded vector and report.

use sprig_runtime::model::first_argmax;
use sprig_runtime::vectors::Vectors;
use sprig_runtime::{Model, Op, OpSet};

use crate::artifacts::{self, MAX_OPS, MAX_TENSORS, OP_SET, PROFILE, TOTAL_VECTORS};
use crate::{arena, stack, Counter};

/// Mismatching vectors reported one by one; the rest are only counted.
const REPORTED_MISMATCHES: u32 = 8;

/// What [`check`] found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, defmt::Format)]
pub struct Outcome {
    /// Vectors run.
    pub vectors: u32,
    /// Vectors whose output differs from the host's in at least one byte (or that
    /// failed to run).
    pub mismatches: u32,
    /// Vectors whose predicted label equals the dataset label.
    pub correct: u32,
    /// Vectors whose label the host runtime predicted correctly (from the stored
    /// outputs): the host's deployed accuracy on the same vectors.
    pub host_correct: u32,
    /// Counter ticks summed over all inferences.
    pub ticks: u64,
    /// Bytes of stack used at the deepest point (0 if unknown).
    pub stack: u32,
}

impl Outcome {
    /// Every vector ran and matched the host byte for byte.
    pub fn passed(&self) -> bool {
        self.vectors > 0 && self.mismatches == 0
    }
}

/// The stack area, for reporting worst-case stack use.
#[derive(Debug, Clone, Copy)]
pub struct StackArea {
    /// Lowest address (inclusive).
    pub bottom: usize,
    /// Where the stack starts (exclusive highest address).
    pub top: usize,
}

/// The label a model's output means: the value of a final `ArgMax`, else the index of
/// the first largest element (as `Model::predict`).
fn label_of<const O: usize, const T: usize, const S: OpSet>(
    model: &Model<'_, O, T, S>,
    output: &[i8],
) -> usize {
    match (model.ops().last(), output) {
        (Some(Op::ArgMax(_)), [index]) => usize::try_from(*index).unwrap_or(0),
        _ => first_argmax(output),
    }
}

fn failed() -> Outcome {
    defmt::error!("sprig result: failed before running any vector");
    Outcome {
        mismatches: 1,
        ..Outcome::default()
    }
}

/// Parse the embedded model, run every embedded vector, compare and report (see the
/// crate docs). `stack` is the painted stack area, if the board painted one.
pub fn check(board: defmt::Str, counter: &mut impl Counter, stack: Option<StackArea>) -> Outcome {
    let blob = artifacts::model();
    // Only the kernels of the model's op kinds are linked (`OP_SET`).
    // Borrowed, not moved out of the `Result`: a move would keep a second copy of the
    // model (832 B for LeNet-5) in this frame for the whole run.
    let parsed = Model::<MAX_OPS, MAX_TENSORS, OP_SET>::parse(blob);
    let model = match &parsed {
        Ok(model) => model,
        Err(e) => {
            defmt::error!("the embedded model does not load: {}", e);
            return failed();
        }
    };
    let vectors = match Vectors::parse(artifacts::vectors()) {
        Ok(v) => v,
        Err(e) => {
            defmt::error!("the embedded vectors do not load: {}", e);
            return failed();
        }
    };
    let Some(arena) = arena::take() else {
        defmt::error!("the arena was already taken");
        return failed();
    };
    defmt::info!(
        "sprig: {=istr}: model {=u32} bytes, {=u32} ops, arena {=u32} bytes, {=u32} of {=u32} vectors",
        board,
        blob.len() as u32,
        model.ops().len() as u32,
        arena.len() as u32,
        vectors.len() as u32,
        TOTAL_VECTORS as u32
    );

    let mut outcome = Outcome::default();
    let (mut min_ticks, mut max_ticks) = (u32::MAX, 0u32);
    for (i, vector) in vectors.iter().enumerate() {
        outcome.vectors += 1;
        if label_of(model, vector.expected) == usize::from(vector.label) {
            outcome.host_correct += 1;
        }
        let start = counter.now();
        let result = model.run_in_arena(arena, vector.input);
        let ticks = counter.since(start);
        let output = match result {
            Ok(output) => output,
            Err(e) => {
                outcome.mismatches += 1;
                defmt::error!("vector {=u32}: run failed: {}", i as u32, e);
                continue;
            }
        };
        outcome.ticks += u64::from(ticks);
        min_ticks = min_ticks.min(ticks);
        max_ticks = max_ticks.max(ticks);
        if label_of(model, output) == usize::from(vector.label) {
            outcome.correct += 1;
        }
        let first_difference = output
            .iter()
            .zip(vector.expected)
            .position(|(device, host)| device != host);
        if let Some(at) = first_difference {
            outcome.mismatches += 1;
            if outcome.mismatches <= REPORTED_MISMATCHES {
                defmt::error!(
                    "vector {=u32}: output byte {=u32} is {=i8} on the device, {=i8} on the host",
                    i as u32,
                    at as u32,
                    output.get(at).copied().unwrap_or(0),
                    vector.expected.get(at).copied().unwrap_or(0)
                );
            }
        }
    }
    if let Some(area) = stack {
        // SAFETY: the board passes the stack area it painted.
        outcome.stack = unsafe { stack::used(area.bottom, area.top) } as u32;
    }
    if outcome.vectors == 0 {
        min_ticks = 0;
    }
    if let Some(first) = vectors.iter().next().filter(|_| PROFILE) {
        profile(model, arena, first.input, counter);
    }
    defmt::info!(
        "sprig result: board={=istr} vectors={=u32} total_vectors={=u32} mismatches={=u32} correct={=u32} host_correct={=u32} unit={=istr} units_per_tick={=f32} ticks={=u64} min_ticks={=u32} max_ticks={=u32} stack={=u32} arena={=u32} model={=u32}",
        board,
        outcome.vectors,
        TOTAL_VECTORS as u32,
        outcome.mismatches,
        outcome.correct,
        outcome.host_correct,
        counter.unit(),
        counter.units_per_tick(),
        outcome.ticks,
        min_ticks,
        max_ticks,
        outcome.stack,
        arena.len() as u32,
        blob.len() as u32
    );
    outcome
}

/// `SPRIG_PROFILE=1`: run `input` again one op at a time, timing each, and log one
/// `sprig profile:` line per op (after all of them, so logging is never timed).
fn profile(
    model: &Model<MAX_OPS, MAX_TENSORS, OP_SET>,
    arena: &mut [u8],
    input: &[i8],
    counter: &mut impl Counter,
) {
    let mut ticks = [0u32; MAX_OPS];
    if let Err(e) = model.load_input(arena, input) {
        defmt::error!("profile: {}", e);
        return;
    }
    for (i, t) in ticks.iter_mut().enumerate().take(model.ops().len()) {
        let start = counter.now();
        let result = model.run_op(i, arena);
        *t = counter.since(start);
        if let Err(e) = result {
            defmt::error!("profile: op {=u32}: {}", i as u32, e);
            return;
        }
    }
    for (i, (op, &t)) in model.ops().zip(&ticks).enumerate() {
        defmt::info!(
            "sprig profile: op={=u32} kind={} {=istr}={=f32}",
            i as u32,
            op.kind(),
            counter.unit(),
            t as f32 * counter.units_per_tick()
        );
    }
}

/// Log a panic's location over defmt (without `core::fmt`, which would cost flash);
/// the board's panic handler then exits with a failure.
pub fn report_panic(info: &core::panic::PanicInfo<'_>) {
    match info.location() {
        Some(at) => defmt::error!("panic at {=str}:{=u32}", at.file(), at.line()),
        None => defmt::error!("panic"),
    }
}
