//! Compile-time op sets: link only the kernels a model uses.
//!
//! TensorFlow Lite Micro's `MicroMutableOpResolver` registers the ops a model needs so
//! the linker drops the other kernels. sprig does the same at compile time: [`Model`]'s
//! last const parameter is a bitmask of [`OpKind`]s (bit `k` = wire tag `k`), and
//! validation and dispatch only reference a kernel when its bit is set. A blob with an
//! op outside the set is refused at load with [`Error::OpNotInSet`].
//!
//! ```
//! use sprig_runtime::model::{op_set, OpKind, OpSet};
//! use sprig_runtime::Model;
//!
//! const LENET: OpSet = op_set(&[
//!     OpKind::Conv2d,
//!     OpKind::MaxPool2d,
//!     OpKind::Reshape,
//!     OpKind::FullyConnected,
//! ]);
//! type LeNet<'a> = Model<'a, 8, 12, LENET>;
//! # let _ = LeNet::parse(&[]);
//! ```
//!
//! Weights need their encoding's bit too (bits 16 to 21, [`Encoding::bit`]).
//! [`op_set`] adds [`Encoding::Dense`]'s, so the set above loads dense weights;
//! `op_set(&[..]) | encoding_set(&[Encoding::SparseRel4])` links the sparse conv and
//! fully connected kernels for that encoding too. A model whose weights are all sparse
//! or packed leaves the dense kernels out with [`kind_set`], which adds no encoding:
//! `kind_set(&[..]) | encoding_set(&[Encoding::SparseRel4])` (the board build writes
//! exactly the kinds and encodings its model uses). A blob whose weights use an
//! encoding outside the set is refused with [`Error::EncodingNotInSet`].
//!
//! Some ops run one of several kernels, chosen per op: a fused conv + max pool with
//! sparse weights, a dense conv, a dense depthwise conv, a dense fully connected op. A
//! set naming some of a family's kernels (bits 24 to 34, [`kernel_set`]) links only
//! those, and a blob whose op needs another is refused with [`Error::KernelNotInSet`];
//! a set naming none of a family links all of them ([`super::kernel_choice`]).
//! [`Model::op_set_used`] gives a model's exact set, these bits included.
//!
//! The default, [`ALL_OPS`], links every kernel. (Const generics on stable Rust take
//! integers, not sets: hence an [`OpSet`], a `u64` built by the `const fn`s here.)
//!
//! [`Model`]: crate::Model
//! [`Error::OpNotInSet`]: crate::Error::OpNotInSet
//! [`Error::EncodingNotInSet`]: crate::Error::EncodingNotInSet
//! [`Error::KernelNotInSet`]: crate::Error::KernelNotInSet
//! [`Model::op_set_used`]: crate::Model::op_set_used

use super::Model;
use crate::error::Error;
use crate::format::{Encoding, Op, ENCODINGS, OP_TAGS};
pub use crate::format::{OpKind, OpSet};

/// The set of every op and encoding this runtime implements: [`crate::Model`]'s
/// default.
pub const ALL_OPS: OpSet = ((1 << OP_TAGS) - 1) | encoding_set(&Encoding::ALL);

// The set's three fields must not overlap: kinds below bit 16, encodings from 16 up to
// the chosen kernels' bit 24. A new op kind or encoding past its field fails
// the build here instead of aliasing another's bit.
const _: () = assert!(OP_TAGS <= 16 && 16 + ENCODINGS <= 24);

/// The set of `kinds` with dense weights, for [`crate::Model`]'s `OPS` parameter.
pub const fn op_set(kinds: &[OpKind]) -> OpSet {
    kind_set(kinds) | Encoding::Dense.bit()
}

/// The set of `kinds` alone: no weight encoding, not even dense (`|` the model's
/// [`encoding_set`]).
pub const fn kind_set(kinds: &[OpKind]) -> OpSet {
    let (mut set, mut rest) = (0, kinds);
    while let [kind, tail @ ..] = rest {
        set |= kind.bit();
        rest = tail;
    }
    set
}

/// The set of `encodings` (to `|` with an [`op_set`] or a [`kind_set`]).
pub const fn encoding_set(encodings: &[Encoding]) -> OpSet {
    let (mut set, mut rest) = (0, encodings);
    while let [encoding, tail @ ..] = rest {
        set |= encoding.bit();
        rest = tail;
    }
    set
}

/// The set of kinds and encodings `ops` use: the smallest `OPS` that loads a model
/// with these ops.
pub fn used_by(ops: impl IntoIterator<Item = Op>) -> OpSet {
    ops.into_iter().fold(0, |set, op| {
        // Binary ops read their packed weights themselves: no encoding kernels needed.
        let binary = matches!(op, Op::BinaryConv2d(_) | Op::BinaryFullyConnected(_));
        let weights = op.weights().filter(|_| !binary);
        set | op.kind().bit() | weights.map_or(0, |w| w.encoding.bit())
    })
}

impl<const MAX_OPS: usize, const MAX_TENSORS: usize, const OPS: OpSet>
    Model<'_, MAX_OPS, MAX_TENSORS, OPS>
{
    /// The smallest op set that loads this model: [`used_by`] its ops, and the
    /// kernels they run where their kind has several ([`crate::model::Kernel`]).
    pub fn op_set_used(&self) -> Result<OpSet, Error> {
        let mut set = used_by(self.ops());
        for op in self.ops() {
            if let Some(kernel) = self.kernel_of(&op).ok_or(Error::KernelArgs)?? {
                set |= kernel.bit();
            }
        }
        Ok(set)
    }
}

/// The kinds in `set`, in wire-tag order.
pub fn kinds_in(set: OpSet) -> impl Iterator<Item = OpKind> {
    OpKind::ALL.into_iter().filter(move |k| k.is_in(set))
}

/// The encodings in `set`, in wire-tag order.
pub fn encodings_in(set: OpSet) -> impl Iterator<Item = Encoding> {
    Encoding::ALL.into_iter().filter(move |e| e.is_in(set))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_follow_the_wire_tags() {
        for (tag, kind) in OpKind::ALL.iter().enumerate() {
            assert_eq!(*kind as usize, tag);
        }
        assert_eq!(
            kind_set(&OpKind::ALL) | encoding_set(&Encoding::ALL),
            ALL_OPS
        );
        assert_eq!(encoding_set(&[Encoding::Dense]), 1 << 16);
        let sparse = encoding_set(&[Encoding::SparseRel4]);
        assert!(Encoding::SparseRel4.is_in(sparse) && !Encoding::SparseRel8.is_in(sparse));
        // Dense weights come with `op_set`, not with `kind_set`.
        assert!(!Encoding::Dense.is_in(sparse | kind_set(&[OpKind::Conv2d])));
        assert!(Encoding::Dense.is_in(op_set(&[OpKind::Conv2d])));
        assert_eq!(
            encodings_in(ALL_OPS).collect::<std::vec::Vec<_>>(),
            [
                Encoding::Dense,
                Encoding::SparseRel8,
                Encoding::SparseRel4,
                Encoding::Packed4,
                Encoding::Packed2,
                Encoding::Packed1
            ]
        );
        assert_eq!(Encoding::Packed1.bit(), 1 << 21);
        assert_eq!(kind_set(&[]), 0);
        assert_eq!(op_set(&[]), Encoding::Dense.bit());
        let set = kind_set(&[OpKind::Softmax, OpKind::Conv2d]);
        assert_eq!(set, 0b1_0000_0001);
        assert!(OpKind::Softmax.is_in(set) && !OpKind::Add.is_in(set));
        assert_eq!(
            kinds_in(set).collect::<std::vec::Vec<_>>(),
            [OpKind::Conv2d, OpKind::Softmax]
        );
    }
}
