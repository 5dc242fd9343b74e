//! A model's op table, left in the blob: where each op starts, and each op decoded
//! again when it is needed.
//!
//! An op decoded is 88 bytes on 32-bit targets (its largest variant, a fused conv and
//! pool); where it starts is 4. Keeping only the starts takes LeNet-5's table from
//! 528 to 24 bytes of RAM, for about 1,100 Cortex-M4 instructions of decoding per op
//! run (measured; BENCHMARKS.md). The blob was validated whole when it was parsed, and
//! it is borrowed immutably, so every op decodes as it did then.

use crate::format::{read, Op};

/// The ops of a [`Model`](crate::Model), in execution order, decoded one at a time.
#[derive(Debug, Clone)]
pub struct Ops<'m> {
    blob: &'m [u8],
    starts: core::slice::Iter<'m, u32>,
}

impl<'m> Ops<'m> {
    pub(crate) fn new(blob: &'m [u8], starts: &'m [u32]) -> Self {
        Self {
            blob,
            starts: starts.iter(),
        }
    }

    /// A start that no longer decodes would mean the blob changed under the model;
    /// it ends the iteration (running such an op reports `Error::KernelArgs`).
    fn decode(&self, start: u32) -> Option<Op> {
        read::op_at(self.blob, start).ok()
    }
}

impl Iterator for Ops<'_> {
    type Item = Op;

    fn next(&mut self) -> Option<Op> {
        let start = *self.starts.next()?;
        self.decode(start)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.starts.size_hint()
    }

    fn nth(&mut self, n: usize) -> Option<Op> {
        let start = *self.starts.nth(n)?;
        self.decode(start)
    }

    fn last(mut self) -> Option<Op> {
        self.next_back()
    }
}

impl DoubleEndedIterator for Ops<'_> {
    fn next_back(&mut self) -> Option<Op> {
        let start = *self.starts.next_back()?;
        self.decode(start)
    }
}

impl ExactSizeIterator for Ops<'_> {}
