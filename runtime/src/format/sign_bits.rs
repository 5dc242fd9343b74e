//! Graph rewrite (feature `std`): a binary op's `±1` output that only binary ops read
//! (directly or through reshapes and max pools) is stored as packed bits, eight per byte
//! ([`TensorKind::PackedBits`], format 2.4, FORMAT.md §4): an eighth of the arena,
//! and the reader skips binarizing it again. The exporter runs it before planning;
//! the model computes exactly what it computed with int8 `±1`.

use std::vec::Vec;

use super::write::GraphDef;
use super::{Op, TensorKind};

impl GraphDef {
    /// Store as packed bits every output of a binary op that is neither the graph's
    /// input nor its output and whose readers are all binary ops, or reshapes and max
    /// pools (whose clamp keeps `±1`) whose outputs qualify alike (those outputs become
    /// bits too). Returns how many tensors changed. Call before
    /// [`GraphDef::plan_arena`].
    pub fn pack_sign_activations(&mut self) -> usize {
        let outputs: Vec<u32> = self
            .ops
            .iter()
            .filter_map(|op| match op {
                Op::BinaryConv2d(p) => Some(p.output),
                Op::BinaryFullyConnected(p) => Some(p.output),
                _ => None,
            })
            .collect();
        let mut packed = 0;
        for y in outputs {
            let mut group = Vec::new();
            if !self.only_binary_readers(y, &mut group) {
                continue;
            }
            for t in group {
                if let Some(t) = self.tensors.get_mut(t as usize) {
                    if t.kind != TensorKind::PackedBits {
                        t.kind = TensorKind::PackedBits;
                        packed += 1;
                    }
                }
            }
        }
        packed
    }

    /// Whether `t` and the reshapes and pools of it that join `group` are read by binary
    /// ops only.
    fn only_binary_readers(&self, t: u32, group: &mut Vec<u32>) -> bool {
        if t == self.input || t == self.output || group.contains(&t) {
            return false;
        }
        group.push(t);
        self.ops
            .iter()
            .filter(|op| op.inputs().any(|i| i == t))
            .all(|op| match op {
                Op::BinaryConv2d(_) | Op::BinaryFullyConnected(_) => true,
                Op::Reshape(r) => self.only_binary_readers(r.output, group),
                Op::MaxPool2d(p) if p.act_min <= -1 && p.act_max >= 1 => {
                    self.only_binary_readers(p.output, group)
                }
                _ => false,
            })
    }
}
