//! Kernels chosen per op, named in the op set.
//!
//! Some ops run one of several kernels, chosen from the op's geometry, input offset
//! or weights: a fused conv + max pool with sparse filters ([`FusedSparseKernel`]), a
//! dense conv ([`DenseConvKernel`]), a dense depthwise conv ([`DepthwiseKernel`]), a
//! dense fully connected op ([`DenseFcKernel`]). Each family has op-set bits (24 to
//! 34). A set naming some of a family's kernels links only those, and the loader
//! refuses a model whose op needs another ([`Error::KernelNotInSet`]); a set naming
//! none of a family links all of them, so [`crate::ALL_OPS`] and every set written
//! before a family existed keep working.
//! The choice depends only on the op, never on the set or the target, so the board
//! build (on the host) and the firmware choose alike.

use super::exec::{conv_geometry, fc_shape};
use super::{Model, OpKind};
use crate::error::Error;
use crate::format::{Op, OpSet};
pub use crate::kernels::conv::{DenseConvKernel, DENSE_CONV_KERNELS};
pub use crate::kernels::conv_pool::{FusedSparseKernel, FUSED_SPARSE_KERNELS};
pub use crate::kernels::depthwise::{DepthwiseKernel, DEPTHWISE_KERNELS};
pub use crate::kernels::fully_connected::{DenseFcKernel, DENSE_FC_KERNELS};

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
    /// A dense fully connected op's (bits 32 to 34).
    DenseFc(DenseFcKernel),
}

/// The op-set bits of every family of [`Kernel`]s.
pub const KERNEL_CHOICES: OpSet =
    FUSED_SPARSE_KERNELS | DENSE_CONV_KERNELS | DEPTHWISE_KERNELS | DENSE_FC_KERNELS;

// The families fill bits 24 to 34 without overlapping.
const _: () = assert!(
    KERNEL_CHOICES == 0x7ff << crate::format::tags::FIRST_KERNEL_BIT
        && FUSED_SPARSE_KERNELS & DENSE_CONV_KERNELS == 0
        && (FUSED_SPARSE_KERNELS | DENSE_CONV_KERNELS) & DEPTHWISE_KERNELS == 0
        && (FUSED_SPARSE_KERNELS | DENSE_CONV_KERNELS | DEPTHWISE_KERNELS) & DENSE_FC_KERNELS == 0
);

impl Kernel {
    /// Every kernel, in bit order.
    pub const ALL: [Kernel; 11] = [
        Self::FusedSparse(FusedSparseKernel::Windows),
        Self::FusedSparse(FusedSparseKernel::Rows),
        Self::FusedSparse(FusedSparseKernel::Pixels),
        Self::DenseConv(DenseConvKernel::Gathered),
        Self::DenseConv(DenseConvKernel::Pieces),
        Self::DenseConv(DenseConvKernel::Rows),
        Self::Depthwise(DepthwiseKernel::Lanes),
        Self::Depthwise(DepthwiseKernel::Blocks),
        Self::DenseFc(DenseFcKernel::Buffered),
        Self::DenseFc(DenseFcKernel::Pieces),
        Self::DenseFc(DenseFcKernel::Plain),
    ];

    /// This kernel's bit in an op set.
    pub const fn bit(self) -> OpSet {
        1 << self.index()
    }

    /// The number of [`Self::bit`] (24 to 34), as [`Error::KernelNotInSet`] names it:
    /// a 32-bit sum where the firmware computes it (a 64-bit shift costs more).
    pub const fn index(self) -> u32 {
        match self {
            Self::FusedSparse(k) => k.index(),
            Self::DenseConv(k) => k.index(),
            Self::Depthwise(k) => k.index(),
            Self::DenseFc(k) => k.index(),
        }
    }

    /// Whether op set `set` links this kernel: it names it, or none of its family.
    pub const fn is_in(self, set: OpSet) -> bool {
        match self {
            Self::FusedSparse(k) => k.is_in(set),
            Self::DenseConv(k) => k.is_in(set),
            Self::Depthwise(k) => k.is_in(set),
            Self::DenseFc(k) => k.is_in(set),
        }
    }
}

/// The set of `kernels` (to `|` with the rest of a set).
pub const fn kernel_set(kernels: &[Kernel]) -> OpSet {
    let (mut set, mut rest) = (0, kernels);
    while let [kernel, tail @ ..] = rest {
        set |= kernel.bit();
        rest = tail;
    }
    set
}

/// The kernels `set` names, in bit order.
pub fn kernels_in(set: OpSet) -> impl Iterator<Item = Kernel> {
    Kernel::ALL.into_iter().filter(move |k| set & k.bit() != 0)
}

impl<const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
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
            Op::FullyConnected(p) if has(OpKind::FullyConnected) && self.dense(p.weights) => {
                let x = self.tensors.get(p.input as usize)?;
                let shape = fc_shape(x, self.tensors.get(p.output as usize)?)?;
                Kernel::DenseFc(DenseFcKernel::of(&shape, x.zero_point.wrapping_neg()))
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
                    bit: kernel.index(),
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
        assert_eq!(bits, [24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34]);
        // The error message's names are these kernels' own.
        let names = Kernel::ALL.map(|k| std::format!("{k:?}"));
        assert_eq!(names, crate::format::tags::KERNEL_NAMES);
        assert_eq!(
            Kernel::ALL[0].index(),
            crate::format::tags::FIRST_KERNEL_BIT
        );
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
                Kernel::DenseFc(DenseFcKernel::Buffered),
                Kernel::DenseFc(DenseFcKernel::Pieces),
                Kernel::DenseFc(DenseFcKernel::Plain),
            ]
        );
    }
}
