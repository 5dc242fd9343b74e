//! Kernels chosen per op, named in the op set.
//!
//! Some ops run one of several kernels, chosen from the op's geometry, input offset
//! or weights: a fused conv + max pool with sparse filters ([`FusedSparseKernel`]), a
//! dense conv ([`DenseConvKernel`]), a dense depthwise conv ([`DepthwiseKernel`]).
//! Each family has op-set bits (24 to 31). A set naming some of a family's kernels
//! links only those, and the loader refuses a model whose op needs another
//! ([`Error::KernelNotInSet`]); a set naming none of a family links all of them, so
//! [`crate::ALL_OPS`] and every set written before a family existed keep working.
//! The choice depends only on the op, never on the set or the target, so the board
//! build (on the host) and the firmware choose alike.

use super::exec::conv_geometry;
use super::{Model, OpKind};
use crate::error::Error;
use crate::format::Op;
pub use crate::kernels::conv::{DenseConvKernel, DENSE_CONV_KERNELS};
pub use crate::kernels::conv_pool::{FusedSparseKernel, FUSED_SPARSE_KERNELS};
pub use crate::kernels::depthwise::{DepthwiseKernel, DEPTHWISE_KERNELS};

/// A kernel an op set can name: one of a family's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kernel {
    /// A fused conv + max pool's with sparse filters (bits 24 to 26).
    FusedSparse(FusedSparseKernel),
    /// A dense conv's (bits 27 to 29).
    DenseConv(DenseConvKernel),
    /// A dense depthwise conv's (bits 30 and 31).
    Depthwise(DepthwiseKernel),
}

/// The op-set bits of every family of [`Kernel`]s.
pub const KERNEL_CHOICES: u32 = FUSED_SPARSE_KERNELS | DENSE_CONV_KERNELS | DEPTHWISE_KERNELS;

// The families fill bits 24 to 31 without overlapping.
const _: () = assert!(
    KERNEL_CHOICES == 0xff << 24
        && FUSED_SPARSE_KERNELS & DENSE_CONV_KERNELS == 0
        && (FUSED_SPARSE_KERNELS | DENSE_CONV_KERNELS) & DEPTHWISE_KERNELS == 0
);

impl Kernel {
    /// Every kernel, in bit order.
    pub const ALL: [Kernel; 8] = [
        Self::FusedSparse(FusedSparseKernel::Windows),
        Self::FusedSparse(FusedSparseKernel::Rows),
        Self::FusedSparse(FusedSparseKernel::Pixels),
        Self::DenseConv(DenseConvKernel::Gathered),
        Self::DenseConv(DenseConvKernel::Pieces),
        Self::DenseConv(DenseConvKernel::Rows),
        Self::Depthwise(DepthwiseKernel::Lanes),
        Self::Depthwise(DepthwiseKernel::Blocks),
    ];

    /// This kernel's bit in an op set.
    pub const fn bit(self) -> u32 {
        match self {
            Self::FusedSparse(k) => k.bit(),
            Self::DenseConv(k) => k.bit(),
            Self::Depthwise(k) => k.bit(),
        }
    }

    /// Whether op set `set` links this kernel: it names it, or none of its family.
    pub const fn is_in(self, set: u32) -> bool {
        match self {
            Self::FusedSparse(k) => k.is_in(set),
            Self::DenseConv(k) => k.is_in(set),
            Self::Depthwise(k) => k.is_in(set),
        }
    }
}

/// The set of `kernels` (to `|` with the rest of a set).
pub const fn kernel_set(kernels: &[Kernel]) -> u32 {
    let (mut set, mut rest) = (0, kernels);
    while let [kernel, tail @ ..] = rest {
        set |= kernel.bit();
        rest = tail;
    }
    set
}

/// The kernels `set` names, in bit order.
pub fn kernels_in(set: u32) -> impl Iterator<Item = Kernel> {
    Kernel::ALL.into_iter().filter(move |k| set & k.bit() != 0)
}

impl<const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: u32>
    Model<'_, MAX_OPS, MAX_TENSORS, OPS>
{
    /// The kernel validated op `op` runs where its kind and weights have several
    /// (`Ok(None)` elsewhere, and where the op set links not the op's kind or its
    /// weights' encoding, so that a set without them leaves this code out too).
    pub(crate) fn kernel_of(&self, op: &Op) -> Option<Result<Option<Kernel>, Error>> {
        let has = |kind: OpKind| kind.is_in(OPS);
        let offset_of = |input: u32| Some(self.tensors.get(input as usize)?.zero_point);
        let geometry = |input: u32, output: u32| {
            let x = self.tensors.get(input as usize)?;
            conv_geometry(op, x, self.tensors.get(output as usize)?)
        };
        let kernel = match op {
            Op::Conv2dMaxPool(p) if has(OpKind::Conv2dMaxPool) => {
                let kernel = self.fused_sparse_kernel(p)?;
                return Some(kernel.map(|k| k.map(Kernel::FusedSparse)));
            }
            Op::Conv2d(p) if has(OpKind::Conv2d) && self.dense(p.filter) => {
                let g = geometry(p.input, p.output)?;
                let offset = offset_of(p.input)?.wrapping_neg();
                Kernel::DenseConv(DenseConvKernel::of(&g, offset))
            }
            Op::DepthwiseConv2d(p) if has(OpKind::DepthwiseConv2d) && self.dense(p.filter) => {
                let g = geometry(p.input, p.output)?;
                let offset = offset_of(p.input)?.wrapping_neg();
                let dm = p.depth_multiplier as usize;
                Kernel::Depthwise(DepthwiseKernel::of(&g, dm, offset))
            }
            _ => return Some(Ok(None)),
        };
        Some(Ok(Some(kernel)))
    }

    /// Refuse validated `ops` where one needs a kernel the op set leaves out
    /// ([`Error::KernelNotInSet`]).
    pub(super) fn check_kernels(&self, ops: &[Op]) -> Result<(), Error> {
        for (i, op) in ops.iter().enumerate() {
            let kernel = self.kernel_of(op).ok_or(Error::KernelArgs)??;
            if let Some(kernel) = kernel.filter(|k| !k.is_in(OPS)) {
                return Err(Error::KernelNotInSet {
                    op: i as u32,
                    bit: kernel.bit().trailing_zeros(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_has_its_own_bit_in_order() {
        let bits = Kernel::ALL.map(|k| k.bit().trailing_zeros());
        assert_eq!(bits, [24, 25, 26, 27, 28, 29, 30, 31]);
        assert_eq!(kernel_set(&Kernel::ALL), KERNEL_CHOICES);
        assert!(kernels_in(KERNEL_CHOICES).eq(Kernel::ALL));
        // A family with none named links all of its kernels, one with some only those.
        let set = kernel_set(&[Kernel::DenseConv(DenseConvKernel::Pieces)]);
        let linked: std::vec::Vec<Kernel> =
            Kernel::ALL.into_iter().filter(|k| k.is_in(set)).collect();
        assert_eq!(
            linked,
            [
                Kernel::FusedSparse(FusedSparseKernel::Windows),
                Kernel::FusedSparse(FusedSparseKernel::Rows),
                Kernel::FusedSparse(FusedSparseKernel::Pixels),
                Kernel::DenseConv(DenseConvKernel::Pieces),
                Kernel::Depthwise(DepthwiseKernel::Lanes),
                Kernel::Depthwise(DepthwiseKernel::Blocks),
            ]
        );
    }
}
