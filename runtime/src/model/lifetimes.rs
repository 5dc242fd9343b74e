//! Tensor lifetimes over the execution order, shared by load-time validation and the
//! host-side arena planner.
//!
//! Time step 0 is "before the first op" (the graph input is written then); op `i` runs
//! at step `i + 1`; the graph output stays live through step `ops.len() + 1`. A tensor
//! is live from the step that writes it to the last step that reads it, both included,
//! so an op's inputs and its output are live together (no op works in place).
//!
//! A reshape's output aliases its input: both share the *root* tensor's arena bytes,
//! and the root's lifetime is extended over every use of any alias.
//!
//! Ops that write a streamed tensor (FORMAT.md §4) run row by row inside the step of
//! the op that ends their chain (the first later op whose output is not streamed), so
//! their reads and writes count at that step.

use crate::error::{sat_u32, Error};
use crate::format::{Op, OpSet, Tensor};
use crate::model::OpKind;

/// "No step" / "no tensor".
pub(crate) const NONE: u32 = u32::MAX;

/// Lifetime of one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Live {
    /// Step that writes it (`NONE`: never written, not part of the graph).
    pub first: u32,
    /// Last step that reads it (meaningful for roots only).
    pub last: u32,
    /// Tensor whose arena bytes this one uses (itself unless a reshape output).
    pub root: u32,
}

impl Live {
    pub(crate) const UNSET: Live = Live {
        first: NONE,
        last: NONE,
        root: NONE,
    };

    /// Whether two roots' lifetimes intersect.
    pub(crate) fn overlaps(&self, other: &Live) -> bool {
        self.first != NONE
            && other.first != NONE
            && self.first <= other.last
            && other.first <= self.last
    }
}

fn entry(live: &mut [Live], t: u32) -> Result<&mut Live, Error> {
    let count = sat_u32(live.len());
    usize::try_from(t)
        .ok()
        .and_then(|i| live.get_mut(i))
        .ok_or(Error::TensorIndexOutOfRange { index: t, count })
}

fn extend(live: &mut [Live], t: u32, step: u32) -> Result<(), Error> {
    let root = entry(live, t)?.root;
    let e = entry(live, root)?;
    e.last = if e.last == NONE {
        step
    } else {
        e.last.max(step)
    };
    Ok(())
}

/// The step op `i` runs at: its own, or that of the op ending its stream chain.
pub(crate) fn step_of(ops: &[Op], tensors: &[Tensor], i: usize) -> u32 {
    let streamed = |op: &Op| {
        tensors
            .get(op.output() as usize)
            .is_some_and(|t| t.streamed_rows().is_some())
    };
    let end = ops
        .get(i..)
        .and_then(|rest| rest.iter().position(|op| !streamed(op)))
        .map_or(i, |n| i + n);
    sat_u32(end).saturating_add(1)
}

/// Fill `live` (one entry per tensor of `tensors`) from the op list. Errors: an index
/// out of range, a tensor read before it is written, a tensor written twice (or the
/// input written), an output never written.
pub(crate) fn compute(
    ops: &[Op],
    tensors: &[Tensor],
    input: u32,
    output: u32,
    live: &mut [Live],
) -> Result<(), Error> {
    for (i, l) in live.iter_mut().enumerate() {
        *l = Live::UNSET;
        l.root = sat_u32(i);
    }
    let inp = entry(live, input)?;
    inp.first = 0;
    inp.last = 0;
    entry(live, output)?;
    for (i, op) in ops.iter().enumerate() {
        let step = step_of(ops, tensors, i);
        for t in op.inputs() {
            if entry(live, t)?.first == NONE {
                return Err(Error::TensorNotProduced { tensor: t });
            }
            extend(live, t, step)?;
        }
        let out = op.output();
        let alias_root = match op {
            Op::Reshape(r) => Some(entry(live, r.input)?.root),
            _ => None,
        };
        let e = entry(live, out)?;
        if e.first != NONE {
            return Err(Error::TensorWrittenTwice { tensor: out });
        }
        e.first = step;
        match alias_root {
            Some(root) => {
                e.root = root;
                extend(live, out, step)?;
            }
            None => e.last = step,
        }
    }
    if entry(live, output)?.first == NONE {
        return Err(Error::OutputNotProduced);
    }
    let end = sat_u32(ops.len()).saturating_add(1);
    extend(live, output, end)
}

/// `(input, output)` pairs of an op whose output may share that input's arena bytes
/// (FORMAT.md §4, in-place pooling, in-place Add, fused conv + max pool over its
/// input): a MaxPool2d or AvgPool2d without top or left padding (its input), an Add
/// (either input), a Conv2dMaxPool (its input). The caller checks the rest
/// ([`in_place_allowed`], [`placed_in_place`]). `OPS` is the model's op set: outside
/// it, the Add's and the fused op's cases are not linked.
pub(crate) fn in_place<const OPS: OpSet>(op: &Op) -> [Option<(u32, u32)>; 2] {
    match op {
        Op::MaxPool2d(p) | Op::AvgPool2d(p) if p.padding.top == 0 && p.padding.left == 0 => {
            [Some((p.input, p.output)), None]
        }
        Op::Add(p) if OpKind::Add.is_in(OPS) => {
            [Some((p.input1, p.output)), Some((p.input2, p.output))]
        }
        Op::Conv2dMaxPool(p) if OpKind::Conv2dMaxPool.is_in(OPS) => {
            [Some((p.conv.input, p.conv.output)), None]
        }
        _ => [None, None],
    }
}

/// Whether in-place op `op`'s output `y` lies where it may over its input `x`
/// ([`in_place`]'s pair, at their arena offsets): at the same offset for a pool or an
/// Add; for a fused conv + max pool, clear of the input rows still to be read
/// ([`crate::model::fused_strips::clear_of_input`]).
pub(crate) fn placed_in_place(op: &Op, x: &Tensor, y: &Tensor) -> bool {
    match op {
        Op::Conv2dMaxPool(p) => crate::model::fused_strips::clear_of_input(p, x, y),
        _ => x.arena_offset == y.arena_offset,
    }
}

/// Whether op `i`'s output `y` may take the bytes of its input `x` ([`in_place`]'s
/// pair): `x`'s root is last read and `y` first written at op `i`'s step, so they are
/// live together only there; `x` is stored whole, not a band; and where the op ends a
/// stream chain whose first op reads `x` too, no later window of the chain reads a row
/// the op has overwritten ([`crate::model::stream_rows_stay_ahead`], linked only where
/// the op set `OPS` has convs to stream).
pub(crate) fn in_place_allowed<const OPS: OpSet>(
    ops: &[Op],
    tensors: &[Tensor],
    live: &[Live],
    i: usize,
    (x, y): (u32, u32),
) -> bool {
    let get = |t: u32| usize::try_from(t).ok().and_then(|i| live.get(i));
    let step = sat_u32(i).saturating_add(1);
    let Some(rx) = get(x).map(|l| l.root) else {
        return false;
    };
    let stored = tensors
        .get(x as usize)
        .is_some_and(|t| t.streamed_rows().is_none());
    stored
        && get(rx).is_some_and(|l| l.last == step)
        && get(y).is_some_and(|l| l.first == step && l.root == y)
        && (!streams::<OPS>() || crate::model::stream_rows_stay_ahead(ops, tensors, i, x))
}

/// Whether the op set `OPS` may stream: only convs and depthwise convs write bands.
pub(crate) const fn streams<const OPS: OpSet>() -> bool {
    OpKind::Conv2d.is_in(OPS) || OpKind::DepthwiseConv2d.is_in(OPS)
}

/// Whether roots `a` and `b` (live together) are the input root and the output of an
/// in-place op ([`in_place`], [`in_place_allowed`]) placed as it may be
/// ([`placed_in_place`]).
pub(crate) fn may_alias<const OPS: OpSet>(
    ops: &[Op],
    tensors: &[Tensor],
    live: &[Live],
    a: u32,
    b: u32,
) -> bool {
    let tensor = |t: u32| tensors.get(t as usize);
    let root = |t: u32| live.get(t as usize).map(|l| l.root);
    ops.iter().enumerate().any(|(i, op)| {
        in_place::<OPS>(op).into_iter().flatten().any(|(x, y)| {
            let Some(rx) = root(x) else {
                return false;
            };
            let pair = (rx == a && y == b) || (rx == b && y == a);
            let placed = tensor(x)
                .zip(tensor(y))
                .is_some_and(|(tx, ty)| placed_in_place(op, tx, ty));
            pair && placed && in_place_allowed::<OPS>(ops, tensors, live, i, (x, y))
        })
    })
}
