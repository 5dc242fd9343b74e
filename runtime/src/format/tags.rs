//! The format's numbers that the error type names too: its version, the op tags and
//! the op set's chosen kernels. A leaf module (it imports nothing from the crate), so
//! `error` can name them without an import cycle through `format` and `model`.

/// Format major version this runtime reads; any other major is refused.
pub const FORMAT_MAJOR: u16 = 2;
/// Format minor version this runtime writes; newer minors of the same major are read.
pub const FORMAT_MINOR: u16 = 6;
/// Number of op tags this runtime knows (`0..OP_TAGS`).
pub const OP_TAGS: u32 = 13;

/// A `Model`'s op set: one bit per op kind, weight encoding and kernel chosen per op
/// (`model::op_set`). A named type, so that widening it is one line.
pub type OpSet = u64;

/// The first op-set bit of the kernels chosen per op (`model::Kernel`).
pub const FIRST_KERNEL_BIT: u32 = 24;

/// `model::Kernel`'s names in bit order from [`FIRST_KERNEL_BIT`], as its `Debug`
/// writes them (a test checks), for `Error::KernelNotInSet`'s message.
pub const KERNEL_NAMES: [&str; 11] = [
    "FusedSparse(Windows)",
    "FusedSparse(Rows)",
    "FusedSparse(Pixels)",
    "DenseConv(Gathered)",
    "DenseConv(Pieces)",
    "DenseConv(Rows)",
    "Depthwise(Lanes)",
    "Depthwise(Blocks)",
    "DenseFc(Buffered)",
    "DenseFc(Pieces)",
    "DenseFc(Plain)",
];

/// Whether `set` holds bit `bit` (below 64). The set is a constant and the bit often
/// is not (an op's kind, its weights' encoding): the constant's half is chosen first,
/// so a 32-bit core tests one word instead of shifting a 64-bit value (measured with
/// `set & 1 << bit` instead, on the M4: ad01_int8's firmware +172 B and +772
/// instructions per inference, the every-kernel firmware +216 B).
#[inline(always)]
pub(crate) const fn holds(set: OpSet, bit: u32) -> bool {
    let word = if bit < 32 {
        set as u32
    } else {
        (set >> 32) as u32
    };
    word & (1 << (bit % 32)) != 0
}

/// The kind of an [`Op`](super::Op), by wire tag (`OpKind::Conv2d as u32 == 0`).
// Four bytes, like `Error`'s other payloads: as a one-byte field of
// `Error::OpNotInSet` it changed `Error`'s layout, and with it LLVM's code for the
// kernels (+4,264 instructions per LeNet-5 inference on the Cortex-M4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
#[repr(u32)]
pub enum OpKind {
    Conv2d,
    DepthwiseConv2d,
    FullyConnected,
    MaxPool2d,
    AvgPool2d,
    GlobalAvgPool,
    Add,
    Reshape,
    Softmax,
    ArgMax,
    BinaryConv2d,
    BinaryFullyConnected,
    Conv2dMaxPool,
}

impl OpKind {
    /// Every kind, in wire-tag order.
    pub const ALL: [OpKind; OP_TAGS as usize] = [
        OpKind::Conv2d,
        OpKind::DepthwiseConv2d,
        OpKind::FullyConnected,
        OpKind::MaxPool2d,
        OpKind::AvgPool2d,
        OpKind::GlobalAvgPool,
        OpKind::Add,
        OpKind::Reshape,
        OpKind::Softmax,
        OpKind::ArgMax,
        OpKind::BinaryConv2d,
        OpKind::BinaryFullyConnected,
        OpKind::Conv2dMaxPool,
    ];

    /// This kind's bit in an op set.
    pub const fn bit(self) -> OpSet {
        1 << self as u32
    }

    /// Whether `set` holds this kind.
    pub const fn is_in(self, set: OpSet) -> bool {
        holds(set, self as u32)
    }
}
