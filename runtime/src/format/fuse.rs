//! Graph rewrite (feature `std`): a `Conv2d` whose only reader is the
//! `MaxPool2d` right after it becomes one [`Conv2dMaxPool`], and the conv's output
//! tensor leaves the table, so the arena planner never places it (FORMAT.md §4,
//! "Fused conv and max pool"). The exporter and the TFLite importer run it before
//! planning; the fused model computes exactly what the unfused one does.

use std::vec::Vec;

use super::write::GraphDef;
use super::{Conv2d, Conv2dMaxPool, Encoding, Op, Pool2d, PoolWindow, FUSED_WINDOW_CAP};

impl GraphDef {
    /// Fuse every conv followed by a max pool that is its only reader, where the
    /// pool's clamp does not narrow the conv's (the fused op clamps once, with the
    /// conv's range), its window fits [`PoolWindow`]'s bytes, and sparse or packed
    /// filters have windows within [`FUSED_WINDOW_CAP`]. Returns how many
    /// pairs were fused. Call before [`GraphDef::plan_arena`].
    pub fn fuse_conv_max_pools(&mut self) -> usize {
        let mut fused = 0;
        let mut i = 0;
        while i + 1 < self.ops.len() {
            let pair = match (self.ops.get(i), self.ops.get(i + 1)) {
                (Some(Op::Conv2d(c)), Some(Op::MaxPool2d(p))) => self.fusable(c, p),
                _ => None,
            };
            if let Some((op, dropped)) = pair {
                self.ops.splice(i..i + 2, [op]);
                self.remove_tensor(dropped);
                fused += 1;
            }
            i += 1;
        }
        fused
    }

    /// The fused op and the conv output it no longer needs, if `c` then `p` fuse.
    fn fusable(&self, c: &Conv2d, p: &Pool2d) -> Option<(Op, u32)> {
        let readers = self
            .ops
            .iter()
            .filter(|op| op.inputs().any(|t| t == c.output))
            .count();
        let clamp_kept = p.act_min <= c.act_min && c.act_max <= p.act_max;
        let byte = |v: u32| u8::try_from(v).ok();
        let pool = PoolWindow {
            filter_h: byte(p.filter_h)?,
            filter_w: byte(p.filter_w)?,
            stride_h: byte(p.stride_h)?,
            stride_w: byte(p.stride_w)?,
            pad_top: byte(p.padding.top)?,
            pad_left: byte(p.padding.left)?,
            pad_bottom: byte(p.padding.bottom)?,
            pad_right: byte(p.padding.right)?,
        };
        let in_c = self
            .tensors
            .get(usize::try_from(c.input).ok()?)?
            .shape
            .last()
            .copied()?;
        let window = u64::from(c.kernel_h) * u64::from(c.kernel_w) * u64::from(in_c);
        let encoding_ok =
            c.filter.encoding == Encoding::Dense || window <= u64::from(FUSED_WINDOW_CAP);
        let fuses = p.input == c.output
            && readers == 1
            && c.output != self.output
            && encoding_ok
            && clamp_kept;
        fuses.then_some((
            Op::Conv2dMaxPool(Conv2dMaxPool {
                conv: Conv2d {
                    output: p.output,
                    ..*c
                },
                pool,
            }),
            c.output,
        ))
    }

    /// Drop tensor `t`, which no op may name any more, and renumber the later ones.
    fn remove_tensor(&mut self, t: u32) {
        let Ok(at) = usize::try_from(t) else { return };
        if at >= self.tensors.len() {
            return;
        }
        self.tensors.remove(at);
        let shift = |i: &mut u32| {
            if *i > t {
                *i -= 1;
            }
        };
        shift(&mut self.input);
        shift(&mut self.output);
        for op in &mut self.ops {
            for i in tensor_fields(op) {
                shift(i);
            }
        }
    }
}

/// Every tensor index field of `op`.
fn tensor_fields(op: &mut Op) -> Vec<&mut u32> {
    match op {
        Op::Conv2d(p) => std::vec![&mut p.input, &mut p.output],
        Op::DepthwiseConv2d(p) => std::vec![&mut p.input, &mut p.output],
        Op::FullyConnected(p) => std::vec![&mut p.input, &mut p.output],
        Op::MaxPool2d(p) | Op::AvgPool2d(p) => std::vec![&mut p.input, &mut p.output],
        Op::GlobalAvgPool(p) => std::vec![&mut p.input, &mut p.output],
        Op::Add(p) => std::vec![&mut p.input1, &mut p.input2, &mut p.output],
        Op::Reshape(p) => std::vec![&mut p.input, &mut p.output],
        Op::Softmax(p) => std::vec![&mut p.input, &mut p.output],
        Op::ArgMax(p) => std::vec![&mut p.input, &mut p.output],
        Op::BinaryConv2d(p) => std::vec![&mut p.input, &mut p.output],
        Op::BinaryFullyConnected(p) => std::vec![&mut p.input, &mut p.output],
        Op::Conv2dMaxPool(p) => std::vec![&mut p.conv.input, &mut p.conv.output],
    }
}
