//! The runtime's one error type.
//!
//! Every class of malformed blob has its own variant, so a test (or a person reading a
//! firmware log) can tell *why* a blob was refused, not only that it was.

use core::fmt;

use crate::format::tags::{OpKind, FIRST_KERNEL_BIT, FORMAT_MAJOR, KERNEL_NAMES};

/// Everything that can go wrong while loading or running a packed model.
///
/// Variants carry small integers (indices, sizes) and never borrowed data, so the type
/// is `Copy` and costs a few words on a microcontroller.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    // ---- header -------------------------------------------------------------------
    /// The blob is shorter than the fixed header.
    TooShort {
        /// Bytes needed.
        needed: u32,
        /// Bytes present.
        got: u32,
    },
    /// The blob does not start with `b"SPRG"`.
    BadMagic,
    /// The format major version differs from [`FORMAT_MAJOR`].
    UnsupportedVersion {
        /// Major version found in the header.
        major: u16,
        /// Minor version found in the header.
        minor: u16,
    },
    /// A *required* header flag (low 16 bits) that this runtime does not know is set.
    UnsupportedFlags {
        /// The unknown required flag bits.
        flags: u32,
    },
    /// The header's payload length does not match the bytes after the header.
    LengthMismatch {
        /// Payload length written in the header.
        declared: u32,
        /// Bytes actually following the header.
        actual: u32,
    },
    /// The CRC32 of the payload does not match the header.
    CrcMismatch {
        /// CRC written in the header.
        expected: u32,
        /// CRC of the payload as present.
        actual: u32,
    },

    // ---- graph decoding -----------------------------------------------------------
    /// postcard could not decode the graph (truncated, bad varint, bad bool/option tag).
    Decode {
        /// Byte offset (from the blob start) of the item that failed to decode.
        offset: u32,
    },
    /// Bytes after the graph that are neither zero alignment padding nor the data
    /// section, or bytes after the data section.
    TrailingBytes {
        /// Byte offset (from the blob start) of the first unexpected byte.
        offset: u32,
    },
    /// The graph has more ops than the model's `MAX_OPS` capacity.
    TooManyOps {
        /// Ops in the blob.
        count: u32,
        /// Capacity of this `Model` type.
        capacity: u32,
    },
    /// The graph has more tensors than the model's `MAX_TENSORS` capacity.
    TooManyTensors {
        /// Tensors in the blob.
        count: u32,
        /// Capacity of this `Model` type.
        capacity: u32,
    },
    /// An op tag this runtime does not implement.
    UnknownOp {
        /// The tag found.
        tag: u32,
    },
    /// A weight encoding tag this runtime does not implement.
    UnknownEncoding {
        /// The tag found.
        tag: u32,
    },
    /// A tensor kind tag this runtime does not implement.
    UnknownTensorKind {
        /// The tag found.
        tag: u32,
    },
    /// A tensor with more than four dimensions.
    RankTooHigh {
        /// Rank found.
        rank: u32,
    },
    /// The data section is not where the header arithmetic says it must be
    /// (not 16-byte aligned, or not right after the graph's padding).
    BadDataSection,

    // ---- graph validation ---------------------------------------------------------
    /// A tensor index past the end of the tensor table.
    TensorIndexOutOfRange {
        /// The index found.
        index: u32,
        /// Number of tensors.
        count: u32,
    },
    /// The product of a tensor's dimensions (or of an op's derived sizes) overflows.
    ShapeOverflow,
    /// A tensor with a zero dimension.
    ZeroSizedTensor {
        /// The tensor.
        tensor: u32,
    },
    /// A scale that is zero, negative, NaN or infinite.
    BadScale {
        /// The tensor.
        tensor: u32,
    },
    /// A zero point outside `-128..=127`.
    BadZeroPoint {
        /// The tensor.
        tensor: u32,
    },
    /// A requantization shift outside the accepted range.
    ShiftOutOfRange {
        /// Index of the op.
        op: u32,
        /// The shift found.
        shift: i32,
    },
    /// A negative requantization multiplier.
    MultiplierOutOfRange {
        /// Index of the op.
        op: u32,
        /// The multiplier found.
        multiplier: i32,
    },
    /// A stride of zero.
    ZeroStride {
        /// Index of the op.
        op: u32,
    },
    /// A padding at least as large as the kernel along that axis.
    BadPadding {
        /// Index of the op.
        op: u32,
    },
    /// A fused activation range outside int8 or with `min > max`.
    BadActivationRange {
        /// Index of the op.
        op: u32,
    },
    /// Some other op parameter is out of its range (kernel size 0, depth multiplier 0,
    /// softmax `diff_min > 0`, argmax over more than 128 classes).
    BadParameter {
        /// Index of the op.
        op: u32,
    },
    /// An op's input and output shapes do not agree with its parameters.
    ShapeMismatch {
        /// Index of the op.
        op: u32,
    },
    /// An op that requires equal quantization on input and output (max pool, reshape,
    /// ...) or a fixed output quantization (softmax) got something else.
    QuantMismatch {
        /// Index of the op.
        op: u32,
    },
    /// A weight/bias/requant reference that does not lie inside the data section.
    DataOutOfBounds {
        /// Index of the op.
        op: u32,
    },
    /// A weight/bias/requant reference whose length is not the one the shapes imply.
    DataLengthMismatch {
        /// Index of the op.
        op: u32,
        /// Bytes expected.
        expected: u32,
        /// Bytes referenced.
        got: u32,
    },
    /// A tensor that does not fit inside `arena_size`.
    ArenaOffsetOutOfBounds {
        /// The tensor.
        tensor: u32,
    },
    /// Two tensors that are live at the same time overlap in the arena.
    ArenaOverlap {
        /// One tensor.
        a: u32,
        /// The other.
        b: u32,
    },
    /// A reshape whose output does not alias its input (same arena offset and size).
    BadAlias {
        /// Index of the op.
        op: u32,
    },
    /// An op reads a tensor that no earlier op wrote (and that is not the input).
    TensorNotProduced {
        /// The tensor.
        tensor: u32,
    },
    /// A tensor written by two ops, or the graph input written by an op.
    TensorWrittenTwice {
        /// The tensor.
        tensor: u32,
    },
    /// The graph's input/output indices and the tensors' kinds disagree.
    BadTensorKind {
        /// The tensor.
        tensor: u32,
    },
    /// A streamed tensor (FORMAT.md §4) that is not a `[1, H, W, C]` band of `1..=H`
    /// rows, written by a conv or depthwise conv and read only by the next op (a conv
    /// or depthwise conv whose window fits in the band, or an Add whose other input is
    /// stored whole); or a chain of more than [`crate::STREAM_CHAIN_CAP`] bands.
    BadStream {
        /// The tensor (`u32::MAX` where only its shape was at hand).
        tensor: u32,
    },
    /// A tensor of packed bits read or written by an op other than a binary op or a
    /// reshape, or a reshape between packed bits and int8.
    PackedBitsOperand {
        /// Index of the op.
        op: u32,
    },
    /// The graph output is never produced.
    OutputNotProduced,
    /// An op whose kind is not in the `Model` type's op set (its `OPS` parameter), so
    /// its kernel is not linked into this program.
    OpNotInSet {
        /// Index of the op.
        op: u32,
        /// Its kind.
        kind: OpKind,
    },
    /// Weights in an encoding outside the `Model` type's op set (its kernels are not
    /// linked into this program).
    EncodingNotInSet {
        /// Index of the op.
        op: u32,
        /// The encoding's wire tag (`format::Encoding`).
        encoding: u32,
    },
    /// An op whose kernel (chosen from its geometry, offset or weights among its
    /// kind's) the `Model` type's op set leaves out.
    KernelNotInSet {
        /// Index of the op.
        op: u32,
        /// The kernel's bit in the op set (24 to 34: `model::Kernel::bit`).
        bit: u32,
    },
    /// Weights in an encoding the op does not take (depthwise filters are dense only).
    EncodingNotSupported {
        /// Index of the op.
        op: u32,
        /// The encoding's wire tag.
        encoding: u32,
    },
    /// A sparse weight row that claims more entries than the row has weights.
    SparseRowTooLong {
        /// Index of the op.
        op: u32,
        /// The row (output channel).
        row: u32,
    },
    /// A sparse entry whose position lies past the end of its row, or a stray index
    /// nibble after a row's last entry.
    SparseIndexOutOfRow {
        /// Index of the op.
        op: u32,
        /// The row (output channel).
        row: u32,
    },
    /// A packed low-bit weight row whose padding bits after its last value are not 0.
    PackedPaddingNotZero {
        /// Index of the op.
        op: u32,
        /// The row.
        row: u32,
    },

    // ---- run ----------------------------------------------------------------------
    /// The caller's arena is smaller than [`crate::Model::arena_size`].
    ArenaTooSmall {
        /// Bytes needed.
        needed: u32,
        /// Bytes given.
        got: u32,
    },
    /// The input slice length differs from the input tensor's element count.
    InputSizeMismatch {
        /// Elements expected.
        expected: u32,
        /// Elements given.
        got: u32,
    },
    /// The output slice length differs from the output tensor's element count.
    OutputSizeMismatch {
        /// Elements expected.
        expected: u32,
        /// Elements given.
        got: u32,
    },
    /// A kernel was called with slices or geometry that disagree. Cannot happen from
    /// [`crate::Model::run`] on a validated model; reported instead of panicking.
    KernelArgs,
    /// A test-vector file (`vectors.bin`) is malformed: bad magic or version, or its
    /// length disagrees with its header.
    BadVectors,
    /// The writer could not encode a blob (a size beyond `u32`, or a shift that does
    /// not fit the requantization entry's `i8`).
    Encode,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Error::*;
        match *self {
            BadVectors => f.write_str("malformed test-vector file (magic, version or length)"),
            TooShort { needed, got } => {
                write!(f, "blob too short: need {needed} bytes, got {got}")
            }
            BadMagic => f.write_str("not a sprig blob (bad magic)"),
            UnsupportedVersion { major, minor } => write!(
                f,
                "unsupported format version {major}.{minor} (this runtime reads {}.x)",
                FORMAT_MAJOR
            ),
            UnsupportedFlags { flags } => {
                write!(f, "unknown required header flags {flags:#x}")
            }
            LengthMismatch { declared, actual } => write!(
                f,
                "payload length mismatch: header says {declared}, blob has {actual}"
            ),
            CrcMismatch { expected, actual } => write!(
                f,
                "CRC mismatch: header {expected:#010x}, payload {actual:#010x}"
            ),
            Decode { offset } => write!(f, "cannot decode graph at byte {offset}"),
            TrailingBytes { offset } => write!(f, "unexpected bytes at offset {offset}"),
            TooManyOps { count, capacity } => {
                write!(f, "{count} ops exceed the model capacity of {capacity}")
            }
            TooManyTensors { count, capacity } => {
                write!(f, "{count} tensors exceed the model capacity of {capacity}")
            }
            UnknownOp { tag } => write!(f, "unknown op tag {tag}"),
            UnknownEncoding { tag } => write!(f, "unknown weight encoding tag {tag}"),
            UnknownTensorKind { tag } => write!(f, "unknown tensor kind tag {tag}"),
            RankTooHigh { rank } => write!(f, "tensor rank {rank} exceeds 4"),
            BadDataSection => f.write_str("data section misplaced or misaligned"),
            TensorIndexOutOfRange { index, count } => {
                write!(f, "tensor index {index} out of range ({count} tensors)")
            }
            ShapeOverflow => f.write_str("shape arithmetic overflows"),
            ZeroSizedTensor { tensor } => write!(f, "tensor {tensor} has a zero dimension"),
            BadScale { tensor } => {
                write!(f, "tensor {tensor} scale is not finite and positive")
            }
            BadZeroPoint { tensor } => {
                write!(f, "tensor {tensor} zero point outside int8 range")
            }
            ShiftOutOfRange { op, shift } => write!(f, "op {op}: shift {shift} out of range"),
            MultiplierOutOfRange { op, multiplier } => {
                write!(f, "op {op}: multiplier {multiplier} is negative")
            }
            ZeroStride { op } => write!(f, "op {op}: stride is zero"),
            BadPadding { op } => write!(f, "op {op}: padding not smaller than the kernel"),
            BadActivationRange { op } => write!(f, "op {op}: bad activation clamp range"),
            BadParameter { op } => write!(f, "op {op}: parameter out of range"),
            ShapeMismatch { op } => write!(f, "op {op}: shapes inconsistent with parameters"),
            QuantMismatch { op } => write!(f, "op {op}: quantization parameters disagree"),
            DataOutOfBounds { op } => write!(f, "op {op}: data reference outside data section"),
            DataLengthMismatch { op, expected, got } => write!(
                f,
                "op {op}: data reference has {got} bytes, shapes need {expected}"
            ),
            ArenaOffsetOutOfBounds { tensor } => {
                write!(f, "tensor {tensor} lies outside the arena")
            }
            ArenaOverlap { a, b } => {
                write!(
                    f,
                    "tensors {a} and {b} are live together and overlap in the arena"
                )
            }
            BadAlias { op } => write!(f, "op {op}: reshape output does not alias its input"),
            TensorNotProduced { tensor } => write!(f, "tensor {tensor} read before written"),
            TensorWrittenTwice { tensor } => write!(f, "tensor {tensor} written twice"),
            BadTensorKind { tensor } => write!(f, "tensor {tensor} kind disagrees with graph"),
            BadStream { tensor } => write!(
                f,
                "tensor {tensor}: a streamed band must be 1..=H rows of a [1, H, W, C] tensor \
                 that a conv writes and only the next op reads, a conv whose window fits the \
                 band or an Add (at most {} in a chain)",
                crate::STREAM_CHAIN_CAP
            ),
            PackedBitsOperand { op } => write!(
                f,
                "op {op}: packed-bit tensors are only for binary ops and reshapes between them"
            ),
            OutputNotProduced => f.write_str("graph output is never produced"),
            OpNotInSet { op, kind } => write!(
                f,
                "op {op}: {kind:?} is not in this Model's op set (its kernel is not linked)"
            ),
            EncodingNotInSet { op, encoding } => write!(
                f,
                "op {op}: weight encoding {encoding} is not in this Model's op set \
                 (its kernels are not linked)"
            ),
            KernelNotInSet { op, bit } => {
                let kernel = bit.checked_sub(FIRST_KERNEL_BIT);
                match kernel.and_then(|k| KERNEL_NAMES.get(k as usize)) {
                    Some(kernel) => write!(
                        f,
                        "op {op}: the kernel it runs, {kernel} (op-set bit {bit}), is not \
                         in this Model's op set (not linked)"
                    ),
                    None => write!(f, "op {op}: op-set bit {bit} names no kernel"),
                }
            }
            EncodingNotSupported { op, encoding } => {
                write!(
                    f,
                    "op {op}: this op does not take weight encoding {encoding}"
                )
            }
            SparseRowTooLong { op, row } => {
                write!(f, "op {op}: sparse row {row} has more entries than weights")
            }
            SparseIndexOutOfRow { op, row } => {
                write!(f, "op {op}: sparse row {row} has an index past its end")
            }
            PackedPaddingNotZero { op, row } => {
                write!(
                    f,
                    "op {op}: packed weight row {row} has nonzero padding bits"
                )
            }
            ArenaTooSmall { needed, got } => {
                write!(f, "arena too small: need {needed} bytes, got {got}")
            }
            InputSizeMismatch { expected, got } => {
                write!(f, "input has {got} elements, model expects {expected}")
            }
            OutputSizeMismatch { expected, got } => {
                write!(f, "output has {got} elements, model produces {expected}")
            }
            KernelArgs => f.write_str("kernel called with inconsistent arguments"),
            Encode => f.write_str("cannot encode the blob (size or shift out of range)"),
        }
    }
}

impl core::error::Error for Error {}

/// Saturating `usize -> u32` for error payloads (sizes in errors are informative only).
pub(crate) fn sat_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
