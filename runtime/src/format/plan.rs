//! The arena planner (feature `std`): every tensor's `arena_offset` and the graph's
//! `arena_size`, greedily by size as TensorFlow Lite Micro's `GreedyMemoryPlanner`
//! does, with the in-place forms of FORMAT.md §4 placed as rigid groups.

use std::vec::Vec;

use super::write::{GraphDef, ARENA_ALIGN};
use super::Op;
use crate::error::Error;
use crate::model::fused_strips::{fused_geometry, least_lags};
use crate::model::lifetimes::{self, Live, NONE};
use crate::model::ALL_OPS;

impl GraphDef {
    /// Assign every tensor's `arena_offset` and set `arena_size`, greedily by size as
    /// TensorFlow Lite Micro's `GreedyMemoryPlanner` does: the widest buffer first,
    /// each at the lowest offset (aligned to [`ARENA_ALIGN`]) that no buffer live at
    /// the same time occupies. Reshape outputs get their input's offset. An op with an
    /// in-place form (FORMAT.md §4) that is the last reader of its input writes its
    /// output over it: a MaxPool2d or AvgPool2d without top/left padding and an Add at
    /// the input's offset, a Conv2dMaxPool at the least distance before or after it at
    /// which its rows stay clear of the input rows still to be read (whichever keeps
    /// the group narrower). Such tensors are placed together, as one block. Tensors no
    /// op touches are put at offset 0. Returns the arena size.
    pub fn plan_arena(&mut self) -> Result<u32, Error> {
        let n = self.tensors.len();
        let mut live = std::vec![Live::UNSET; n];
        lifetimes::compute(&self.ops, &self.tensors, self.input, self.output, &mut live)?;
        let sizes = self
            .tensors
            .iter()
            .map(|t| t.bytes().map(u64::from))
            .collect::<Result<Vec<u64>, Error>>()?;
        let mut groups = Groups::new(n);
        for (i, op) in self.ops.iter().enumerate() {
            let allowed = |&(x, y): &(u32, u32)| {
                lifetimes::in_place_allowed::<ALL_OPS>(&self.ops, &self.tensors, &live, i, (x, y))
            };
            for (x, y) in lifetimes::in_place::<ALL_OPS>(op)
                .into_iter()
                .flatten()
                .filter(allowed)
            {
                let rx = live.get(x as usize).map_or(NONE, |l| l.root) as usize;
                let shifts = self.in_place_shifts(op, x, y, &sizes, rx);
                if groups.join(rx, y as usize, &shifts, &sizes, &live) {
                    break;
                }
            }
        }
        let roots: Vec<usize> = (0..n)
            .filter(|&i| {
                live.get(i)
                    .is_some_and(|l| l.first != NONE && l.root as usize == i)
            })
            .collect();
        let mut blocks = groups.blocks(&roots, &sizes, &live);
        blocks.sort_by_key(|b| (std::cmp::Reverse(b.span), b.first, b.leader));
        let mut offsets = std::vec![0u64; n];
        let mut placed: Vec<(u64, u64, Live)> = Vec::new(); // (start, end, lifetime)
        let mut arena: u64 = 0;
        for block in &blocks {
            let offset = lowest_free(block, &placed, &sizes, &live);
            for &(m, at) in &block.members {
                let (Some(o), Some(&size), Some(&l)) =
                    (offsets.get_mut(m), sizes.get(m), live.get(m))
                else {
                    continue;
                };
                *o = offset + at;
                placed.push((*o, *o + size, l));
                arena = arena.max(*o + size);
            }
        }
        // Aliases take their root's offset; untouched tensors sit at 0.
        for (i, t) in self.tensors.iter_mut().enumerate() {
            let (l, size) = (
                live.get(i).copied().unwrap_or(Live::UNSET),
                sizes.get(i).copied(),
            );
            let offset = if l.first != NONE {
                offsets.get(l.root as usize).copied().unwrap_or(0)
            } else {
                arena = arena.max(size.unwrap_or(0));
                0
            };
            t.arena_offset = u32::try_from(offset).map_err(|_| Error::Encode)?;
        }
        self.arena_size = u32::try_from(arena).map_err(|_| Error::Encode)?;
        Ok(self.arena_size)
    }

    /// Where in-place op `op`'s output `y` may go relative to its input root `rx`, in
    /// the planner's order of preference: at its offset for a pool or an Add (when no
    /// larger than it), before or after it for a fused conv + max pool.
    fn in_place_shifts(&self, op: &Op, x: u32, y: u32, sizes: &[u64], rx: usize) -> Vec<i64> {
        if let Op::Conv2dMaxPool(p) = op {
            let tensor = |t: u32| self.tensors.get(t as usize);
            let lags = tensor(x)
                .zip(tensor(y))
                .and_then(|(tx, ty)| fused_geometry(tx, ty, p))
                .and_then(|(conv, pool)| least_lags(&conv, &pool));
            let align = |lag: usize| i64::try_from(lag.next_multiple_of(ARENA_ALIGN as usize));
            return match lags.map(|(before, after)| (align(before), align(after))) {
                Some((Ok(before), Ok(after))) => std::vec![-before, after],
                _ => Vec::new(),
            };
        }
        let fits = sizes
            .get(rx)
            .zip(sizes.get(y as usize))
            .is_some_and(|(a, b)| a >= b);
        match fits {
            true => std::vec![0],
            false => Vec::new(),
        }
    }
}

/// In-place groups being formed: each tensor's group leader and its distance from it.
struct Groups {
    leader: Vec<usize>,
    shift: Vec<i64>,
}

/// A group to place: its members at their distances from its start (`members`), how
/// wide it is, and the first step any member is live.
struct Block {
    members: Vec<(usize, u64)>,
    span: u64,
    first: u32,
    leader: usize,
}

impl Groups {
    fn new(n: usize) -> Self {
        Groups {
            leader: (0..n).collect(),
            shift: std::vec![0; n],
        }
    }

    /// Where member `m` lies relative to its group's leader: `(start, end)`.
    fn extent(&self, m: usize, sizes: &[u64]) -> Option<(i64, i64)> {
        let start = *self.shift.get(m)?;
        Some((start, start + i64::try_from(*sizes.get(m)?).ok()?))
    }

    /// Put `y` into `rx`'s group at the one of `shifts` (distances from `rx`) that keeps
    /// the group narrowest (the first of a tie) and overlaps no member live at the same
    /// time but `rx`; `false` (not joined) where none does.
    fn join(&mut self, rx: usize, y: usize, shifts: &[i64], sizes: &[u64], live: &[Live]) -> bool {
        let (Some(&group), Some(&base), Some(ly)) =
            (self.leader.get(rx), self.shift.get(rx), live.get(y))
        else {
            return false;
        };
        let size_y = sizes
            .get(y)
            .and_then(|&s| i64::try_from(s).ok())
            .unwrap_or(0);
        let members: Vec<usize> = (0..self.leader.len())
            .filter(|&m| self.leader.get(m) == Some(&group) && m != y)
            .collect();
        let width = |start: i64| {
            let mut lo = start;
            let mut hi = start + size_y;
            for &m in &members {
                if let Some((s, e)) = self.extent(m, sizes) {
                    (lo, hi) = (lo.min(s), hi.max(e));
                }
            }
            hi - lo
        };
        let clear = |start: i64| {
            members.iter().all(|&m| {
                let together = live.get(m).is_some_and(|l| l.overlaps(ly));
                let apart = self
                    .extent(m, sizes)
                    .is_some_and(|(s, e)| e <= start || start + size_y <= s);
                m == rx || !together || apart
            })
        };
        let best = shifts
            .iter()
            .map(|&d| base + d)
            .filter(|&start| clear(start))
            .min_by_key(|&start| width(start));
        let (Some(start), Some(l), Some(sh)) =
            (best, self.leader.get_mut(y), self.shift.get_mut(y))
        else {
            return false;
        };
        (*l, *sh) = (group, start);
        true
    }

    /// The blocks to place: each group of live `roots`, members at their distance from
    /// the group's lowest start.
    fn blocks(&self, roots: &[usize], sizes: &[u64], live: &[Live]) -> Vec<Block> {
        let mut blocks: Vec<Block> = Vec::new();
        for &r in roots {
            let Some(&leader) = self.leader.get(r) else {
                continue;
            };
            let first = live.get(r).map_or(NONE, |l| l.first);
            match blocks.iter_mut().find(|b| b.leader == leader) {
                Some(b) => {
                    b.first = b.first.min(first);
                    b.members.push((r, 0));
                }
                None => blocks.push(Block {
                    members: std::vec![(r, 0)],
                    span: 0,
                    first,
                    leader,
                }),
            }
        }
        for b in &mut blocks {
            let start = |m: usize| self.shift.get(m).copied().unwrap_or(0);
            let lowest = b.members.iter().map(|&(m, _)| start(m)).min().unwrap_or(0);
            for (m, at) in &mut b.members {
                *at = u64::try_from(start(*m) - lowest).unwrap_or(0);
            }
            b.span = b
                .members
                .iter()
                .map(|&(m, at)| at + sizes.get(m).copied().unwrap_or(0))
                .max()
                .unwrap_or(0);
        }
        blocks
    }
}

/// The lowest aligned offset at which no member of `block` meets a placed buffer live
/// at the same time: jump past every conflict until none is left.
fn lowest_free(block: &Block, placed: &[(u64, u64, Live)], sizes: &[u64], live: &[Live]) -> u64 {
    let mut offset = 0u64;
    loop {
        let mut moved = false;
        for &(m, at) in &block.members {
            let (Some(&size), Some(l)) = (sizes.get(m), live.get(m)) else {
                continue;
            };
            for &(s, e, pl) in placed {
                if l.overlaps(&pl) && offset + at < e && s < offset + at + size {
                    let past = e.saturating_sub(at);
                    offset = offset.max(past.next_multiple_of(u64::from(ARENA_ALIGN)));
                    moved = true;
                }
            }
        }
        if !moved {
            return offset;
        }
    }
}
