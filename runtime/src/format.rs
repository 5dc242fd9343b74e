//! The packed model format (`.sprig`): one definition, used to write (feature `std`)
//! and to read. `runtime/FORMAT.md` specifies it in prose; in short:
//!
//! ```text
//! offset 0   magic "SPRG" | major u16 | minor u16 | flags u32 | payload_len u32 | crc32 u32
//! offset 20  graph: postcard(GraphHeader) ++ postcard(seq of Tensor) ++ postcard(seq of Op)
//!            zero padding up to the next multiple of 16 (from the blob start)
//! data_offset  weight data section (data_len bytes), to the end of the blob
//! ```
//!
//! The graph bytes are exactly postcard's serialization of [`Graph`]. Weights, biases
//! and requantization parameters live in the data section and are referenced by
//! [`DataRef`] (offset from the data section start, length in bytes); the runtime
//! borrows them from the blob without copying.
//!
//! Conventions the writer must follow (the loader checks every one):
//! - activations are int8, NHWC (`[batch, height, width, channels]`), asymmetric per
//!   tensor (`real = scale · (q − zero_point)`);
//! - conv filters are int8 `[out_ch, kh, kw, in_ch]`, depthwise filters int8
//!   `[kh, kw, in_ch · depth_multiplier]` (TFLite's `[1, kh, kw, out_ch]`), fully
//!   connected weights int8 `[out, in]`; all symmetric per output channel (zero point 0);
//!   each op's [`Weights`] says how they are stored: [`Encoding::Dense`], for conv
//!   and fully connected sparse rows ([`sparse`]), or for any of the three packed
//!   4-, 2- or 1-bit rows ([`packed`]);
//! - biases are little-endian `i32`, one per output channel, in the scale
//!   `input_scale · weight_scale[c]`;
//! - requantization ([`DataRef`] `requant`) is `C` little-endian `i32` multipliers
//!   followed by `C` `i8` shifts (`5·C` bytes) for `C` output channels, or a single
//!   pair (5 bytes) shared by all channels; multiplier non-negative, shift in
//!   `-31..=30`, meaning `real ≈ multiplier · 2^(shift − 31)`
//!   (see [`crate::fixed_point::quantize_multiplier`], whose multipliers are normalized
//!   to `[2^30, 2^31)`, and [`crate::fixed_point::quantize_multiplier_single_rounding`]).

use serde::{Deserialize, Serialize};

use crate::crc::Crc32;
use crate::error::{sat_u32, Error};
pub use tags::{OpKind, OpSet, FORMAT_MAJOR, FORMAT_MINOR, OP_TAGS};

#[cfg(feature = "std")]
mod fuse;
pub mod packed;
#[cfg(feature = "std")]
mod plan;
pub(crate) mod read;
#[cfg(feature = "std")]
mod sign_bits;
pub mod sparse;
#[cfg(feature = "std")]
mod stream;
pub(crate) mod tags;
#[cfg(feature = "std")]
pub mod write;

/// First four bytes of every blob.
pub const MAGIC: [u8; 4] = *b"SPRG";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Alignment of the data section, relative to the blob start.
pub const DATA_ALIGN: usize = 16;
/// Header flag bits that a reader must understand (low 16 bits); unknown ones are
/// refused. Bits 16..32 are optional and ignored by readers that do not know them.
pub const REQUIRED_FLAGS_MASK: u32 = 0x0000_FFFF;
/// Required flags this runtime understands (none yet).
pub const KNOWN_REQUIRED_FLAGS: u32 = 0;
/// Bytes of one per-channel requantization entry (`i32` multiplier + `i8` shift).
pub const REQUANT_ENTRY_LEN: u32 = 5;

/// The fixed little-endian header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// Format major version.
    pub major: u16,
    /// Format minor version.
    pub minor: u16,
    /// Flags (see [`REQUIRED_FLAGS_MASK`]).
    pub flags: u32,
    /// Bytes after the header.
    pub payload_len: u32,
    /// CRC32 (IEEE) over header bytes `0..16` followed by the payload.
    pub crc32: u32,
}

impl Header {
    /// Encode as the 20 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let fields: [&[u8]; 6] = [
            &MAGIC,
            &self.major.to_le_bytes(),
            &self.minor.to_le_bytes(),
            &self.flags.to_le_bytes(),
            &self.payload_len.to_le_bytes(),
            &self.crc32.to_le_bytes(),
        ];
        let mut chunks = out.iter_mut();
        for byte in fields.into_iter().flatten() {
            if let Some(slot) = chunks.next() {
                *slot = *byte;
            }
        }
        out
    }

    /// Read and check the header of `blob`: length, magic, version, flags, payload
    /// length and CRC, in that order. Nothing after the header is interpreted.
    pub fn check(blob: &[u8]) -> Result<Header, Error> {
        let (head, payload) = blob
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(Error::TooShort {
                needed: HEADER_LEN as u32,
                got: sat_u32(blob.len()),
            })?;
        let [m0, m1, m2, m3, v0, v1, v2, v3, f0, f1, f2, f3, l0, l1, l2, l3, c0, c1, c2, c3] =
            *head;
        if [m0, m1, m2, m3] != MAGIC {
            return Err(Error::BadMagic);
        }
        let header = Header {
            major: u16::from_le_bytes([v0, v1]),
            minor: u16::from_le_bytes([v2, v3]),
            flags: u32::from_le_bytes([f0, f1, f2, f3]),
            payload_len: u32::from_le_bytes([l0, l1, l2, l3]),
            crc32: u32::from_le_bytes([c0, c1, c2, c3]),
        };
        if header.major != FORMAT_MAJOR {
            return Err(Error::UnsupportedVersion {
                major: header.major,
                minor: header.minor,
            });
        }
        let unknown = header.flags & REQUIRED_FLAGS_MASK & !KNOWN_REQUIRED_FLAGS;
        if unknown != 0 {
            return Err(Error::UnsupportedFlags { flags: unknown });
        }
        let actual = sat_u32(payload.len());
        if usize::try_from(header.payload_len).ok() != Some(payload.len()) {
            return Err(Error::LengthMismatch {
                declared: header.payload_len,
                actual,
            });
        }
        let crc = Header::crc_of(head, payload);
        if crc != header.crc32 {
            return Err(Error::CrcMismatch {
                expected: header.crc32,
                actual: crc,
            });
        }
        Ok(header)
    }

    /// The CRC the header must carry: over `head[0..16]`, then `payload`.
    pub fn crc_of(head: &[u8; HEADER_LEN], payload: &[u8]) -> u32 {
        let (covered, _crc) = head.split_at(HEADER_LEN - 4);
        Crc32::new().update(covered).update(payload).finish()
    }
}

/// A byte range inside the data section: `offset` from the section start, `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DataRef {
    /// Offset from the start of the data section, in bytes.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// How a layer's int8 weights are laid out in the data section (`FORMAT.md` §3.1).
/// The wire tag is the variant's position; new encodings are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u32)]
pub enum Encoding {
    /// Every weight, in the op's layout (wire tag 0).
    Dense,
    /// Sparse rows: per output channel its nonzero weights, each with an 8-bit gap to
    /// the previous one (wire tag 1; see [`sparse`]).
    SparseRel8,
    /// As [`Encoding::SparseRel8`] with 4-bit gaps, two per byte (wire tag 2).
    SparseRel4,
    /// 4-bit two's-complement weights, two per byte, each row byte-aligned (wire tag
    /// 3, format 2.1; see [`packed`]).
    Packed4,
    /// 2-bit two's-complement weights, four per byte (wire tag 4, format 2.1).
    Packed2,
    /// Binary weights (`±1`), eight per byte (wire tag 5, format 2.1).
    Packed1,
}

/// Number of encoding tags this runtime knows (`0..ENCODINGS`).
pub const ENCODINGS: u32 = 6;

impl Encoding {
    /// Every encoding, in wire-tag order.
    pub const ALL: [Encoding; ENCODINGS as usize] = [
        Encoding::Dense,
        Encoding::SparseRel8,
        Encoding::SparseRel4,
        Encoding::Packed4,
        Encoding::Packed2,
        Encoding::Packed1,
    ];

    /// The encoding with wire tag `tag`.
    pub fn from_tag(tag: u32) -> Option<Encoding> {
        Encoding::ALL.get(tag as usize).copied()
    }

    /// This encoding's bit in a [`crate::Model`] op set: `1 << (16 + tag)` (dense
    /// too: `op_set` adds it for you, a set without it links no dense kernel).
    pub const fn bit(self) -> OpSet {
        1 << (16 + self as u32)
    }

    /// Whether an op set holds this encoding.
    pub const fn is_in(self, set: OpSet) -> bool {
        tags::holds(set, 16 + self as u32)
    }

    /// Short lower-case name, as `cargo xtask size` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Dense => "dense",
            Encoding::SparseRel8 => "sparse-rel8",
            Encoding::SparseRel4 => "sparse-rel4",
            Encoding::Packed4 => "packed4",
            Encoding::Packed2 => "packed2",
            Encoding::Packed1 => "packed1",
        }
    }
}

/// A layer's int8 weights: where they lie in the data section and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Weights {
    /// The bytes, relative to the data section.
    pub data: DataRef,
    /// Their layout.
    pub encoding: Encoding,
}

impl Weights {
    /// Dense weights at `data`.
    pub fn dense(data: DataRef) -> Weights {
        Weights {
            data,
            encoding: Encoding::Dense,
        }
    }
}

/// What a tensor is for, and how it is stored. Exactly one tensor is `Input` (the
/// graph input) and one is `Output` (the graph output); all others are `Activation`,
/// `PackedBits` or `Streamed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TensorKind {
    /// Intermediate activation (wire tag 0).
    Activation,
    /// The graph input (wire tag 1).
    Input,
    /// The graph output (wire tag 2).
    Output,
    /// Intermediate activation of `±1` values stored as bits, eight per byte (bit set
    /// `+1`), between binary ops (wire tag 3, format 2.4; FORMAT.md §4).
    PackedBits,
    /// Intermediate `[1, H, W, C]` activation of which only a band of `rows`
    /// consecutive rows is ever stored: its producer computes rows as its only reader,
    /// the next op, consumes them (wire tag 4 and one byte, format 2.5; FORMAT.md §4).
    Streamed {
        /// Rows the band holds, `1..=H`; at least the reader's window height.
        rows: u8,
    },
}

/// An int8 activation tensor: shape, quantization and place in the arena.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Tensor {
    /// Dimensions, outermost first (NHWC for rank 4); 1 to 4 of them, none zero.
    pub shape: heapless::Vec<u32, 4>,
    /// Quantization scale: finite and > 0.
    pub scale: f32,
    /// Quantization zero point, in `-128..=127`.
    pub zero_point: i32,
    /// Byte offset of the tensor's data in the arena.
    pub arena_offset: u32,
    /// Role in the graph.
    pub kind: TensorKind,
}

impl Tensor {
    /// Number of elements, with checked arithmetic.
    pub fn elements(&self) -> Result<u32, Error> {
        self.shape
            .iter()
            .try_fold(1u32, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::ShapeOverflow)
    }

    /// Whether its values are stored as bits ([`TensorKind::PackedBits`]).
    pub fn is_bits(&self) -> bool {
        self.kind == TensorKind::PackedBits
    }

    /// The band height of a [`TensorKind::Streamed`] tensor, `None` for any other.
    pub fn streamed_rows(&self) -> Option<u32> {
        match self.kind {
            TensorKind::Streamed { rows } => Some(u32::from(rows)),
            _ => None,
        }
    }

    /// Arena bytes it occupies: one per element, one per eight for packed bits, or
    /// one per element of its band's rows when streamed (a streamed tensor that is not
    /// `[1, H, W, C]` or whose band is not `1..=H` rows is a [`Error::BadStream`]).
    pub fn bytes(&self) -> Result<u32, Error> {
        let n = self.elements()?;
        if let Some(rows) = self.streamed_rows() {
            return match self.shape.as_slice() {
                &[1, h, w, c] if (1..=h).contains(&rows) => Ok(rows * w * c),
                _ => Err(Error::BadStream { tensor: u32::MAX }),
            };
        }
        Ok(if self.is_bits() { n.div_ceil(8) } else { n })
    }
}

/// Explicit padding, in input pixels, on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Padding {
    /// Rows added above.
    pub top: u32,
    /// Columns added on the left.
    pub left: u32,
    /// Rows added below.
    pub bottom: u32,
    /// Columns added on the right.
    pub right: u32,
}

/// 2-D convolution. `input` `[N, H, W, C]`, `output` `[N, OH, OW, OC]` with
/// `OH = (H + top + bottom − kernel_h) / stride_h + 1` (floor), likewise `OW`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2d {
    /// Input tensor index.
    pub input: u32,
    /// Output tensor index.
    pub output: u32,
    /// int8 `[OC, kernel_h, kernel_w, C]`, dense or sparse by row (one per `OC`).
    pub filter: Weights,
    /// `i32` LE `[OC]`, or none (zero bias).
    pub bias: Option<DataRef>,
    /// Multipliers then shifts, per channel or shared (see the module docs).
    pub requant: DataRef,
    /// Kernel height.
    pub kernel_h: u32,
    /// Kernel width.
    pub kernel_w: u32,
    /// Vertical stride (≥ 1).
    pub stride_h: u32,
    /// Horizontal stride (≥ 1).
    pub stride_w: u32,
    /// Implicit zero-point padding; each side smaller than the kernel.
    pub padding: Padding,
    /// Lower clamp of the int8 output (fused ReLU: the output zero point).
    pub act_min: i32,
    /// Upper clamp of the int8 output (127, or ReLU6's quantized 6).
    pub act_max: i32,
}

/// Depthwise 2-D convolution: output channel `c · depth_multiplier + m` reads input
/// channel `c`. Fields as [`Conv2d`]; `filter` is int8 `[kernel_h, kernel_w, OC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct DepthwiseConv2d {
    pub input: u32,
    pub output: u32,
    /// Dense only.
    pub filter: Weights,
    pub bias: Option<DataRef>,
    pub requant: DataRef,
    pub kernel_h: u32,
    pub kernel_w: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub padding: Padding,
    /// Output channels per input channel (≥ 1); `OC = C · depth_multiplier`.
    pub depth_multiplier: u32,
    pub act_min: i32,
    pub act_max: i32,
}

/// Fully connected: `input` `[..., IN]`, `output` `[..., OUT]` with equal leading
/// dimensions; `weights` int8 `[OUT, IN]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct FullyConnected {
    pub input: u32,
    pub output: u32,
    /// Dense or sparse by row (one per `OUT`).
    pub weights: Weights,
    pub bias: Option<DataRef>,
    pub requant: DataRef,
    pub act_min: i32,
    pub act_max: i32,
}

/// Max or average pooling over `filter_h × filter_w` windows; input and output share
/// scale and zero point; padded positions are skipped (not counted in the average).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct Pool2d {
    pub input: u32,
    pub output: u32,
    pub filter_h: u32,
    pub filter_w: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub padding: Padding,
    pub act_min: i32,
    pub act_max: i32,
}

/// Mean over height and width: `[N, H, W, C]` → `[N, 1, 1, C]`, as TFLite's int8
/// `MEAN`: `acc = Σ (q − zp_in)`, requantized by `(multiplier, shift)` (from
/// `scale_in / scale_out`), divided by `H·W` rounding half away from zero, plus `zp_out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct GlobalAvgPool {
    pub input: u32,
    pub output: u32,
    pub multiplier: i32,
    pub shift: i32,
    pub act_min: i32,
    pub act_max: i32,
}

/// Elementwise add of two same-shape tensors (no broadcasting), TFLite's int8 scheme;
/// fill the six parameters with [`crate::fixed_point::AddQuant::from_scales`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct Add {
    pub input1: u32,
    pub input2: u32,
    pub output: u32,
    pub input1_multiplier: i32,
    pub input1_shift: i32,
    pub input2_multiplier: i32,
    pub input2_shift: i32,
    pub output_multiplier: i32,
    pub output_shift: i32,
    pub act_min: i32,
    pub act_max: i32,
}

/// Reshape/flatten: no data moves. The output tensor has the same element count,
/// scale and zero point as the input, and the same `arena_offset` (it aliases it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct Reshape {
    pub input: u32,
    pub output: u32,
}

/// Softmax over the last dimension, int8 out with scale 1/256 and zero point −128
/// (TFLite's convention). Fill with [`crate::fixed_point::SoftmaxQuant::from_scale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct Softmax {
    pub input: u32,
    pub output: u32,
    pub input_multiplier: i32,
    /// In `0..=30`.
    pub input_left_shift: i32,
    /// ≤ 0.
    pub diff_min: i32,
}

/// Index of the largest element along the last dimension (first one wins), written as
/// an int8 value; the output has the input's shape with the last dimension 1, scale
/// 1.0 and zero point 0; the last input dimension is at most 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct ArgMax {
    pub input: u32,
    pub output: u32,
}

/// Binary 2-D convolution (format 2.1): `±1` inputs times `±1` weights by XNOR and
/// popcount, `±1` outputs. An input value counts `+1` where it is at least the input
/// tensor's zero point (real value ≥ 0) and `−1` below; padded positions count 0. For
/// output channel `oc` the kernel computes `d = Σ x · w` over the in-bounds window and
/// writes the int8 value `+1` where `d ≥ thresholds[oc]`, else `−1` (a binarized
/// network's folded batch norm and sign activation). Shapes and geometry as
/// [`Conv2d`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct BinaryConv2d {
    pub input: u32,
    pub output: u32,
    /// [`Encoding::Packed1`] rows `[OC][kernel_h · kernel_w · C]`.
    pub filter: Weights,
    /// `i32` LE per output channel.
    pub thresholds: DataRef,
    pub kernel_h: u32,
    pub kernel_w: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub padding: Padding,
}

/// Binary fully connected (format 2.1): as [`BinaryConv2d`] with one `[OUT][IN]`
/// matrix; `input` `[..., IN]`, `output` `[..., OUT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct BinaryFullyConnected {
    pub input: u32,
    pub output: u32,
    /// [`Encoding::Packed1`] rows `[OUT][IN]`.
    pub weights: Weights,
    /// `i32` LE per output.
    pub thresholds: DataRef,
}

/// A max pool's window, as fused into [`Conv2dMaxPool`]: one byte per field, so the
/// fused op stays no larger than a depthwise conv in a model's op table (postcard
/// writes each `u8` as its raw byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub struct PoolWindow {
    pub filter_h: u8,
    pub filter_w: u8,
    pub stride_h: u8,
    pub stride_w: u8,
    pub pad_top: u8,
    pub pad_left: u8,
    pub pad_bottom: u8,
    pub pad_right: u8,
}

/// Largest conv window (`kernel_h · kernel_w · C`) a [`Conv2dMaxPool`] with sparse or
/// packed weights may have (dense ones have no limit): the fused kernels compute such
/// pixels through one gathered window of this many values.
pub const FUSED_WINDOW_CAP: u32 = 512;

/// A convolution and the max pool that reads it, as one op (format 2.2): only the
/// pooled tensor is stored; each conv output is computed, clamped to
/// `conv.act_min..=conv.act_max` (the fused ReLU) and folded into the maximum of every
/// pool window that covers it. `conv.output` is the *pooled* tensor `[N, PH, PW, OC]`;
/// the conv's own output `[N, OH, OW, OC]` (sizes as for [`Conv2d`]) never exists and
/// has the pooled tensor's quantization, which `conv.requant` targets. The pool adds no
/// clamp of its own (an unfused pool with the full int8 range). Filters in any
/// encoding; sparse and packed ones with windows of at most [`FUSED_WINDOW_CAP`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2dMaxPool {
    /// The convolution; its `output` is the pooled tensor.
    pub conv: Conv2d,
    /// The max pool over the conv's output.
    pub pool: PoolWindow,
}

/// One operation. The wire tag is the variant's position (0 = `Conv2d` … 12 =
/// `Conv2dMaxPool`); new ops are only ever appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)]
pub enum Op {
    Conv2d(Conv2d),
    DepthwiseConv2d(DepthwiseConv2d),
    FullyConnected(FullyConnected),
    MaxPool2d(Pool2d),
    AvgPool2d(Pool2d),
    GlobalAvgPool(GlobalAvgPool),
    Add(Add),
    Reshape(Reshape),
    Softmax(Softmax),
    ArgMax(ArgMax),
    BinaryConv2d(BinaryConv2d),
    BinaryFullyConnected(BinaryFullyConnected),
    Conv2dMaxPool(Conv2dMaxPool),
}

/// The fixed fields at the start of the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct GraphHeader {
    /// Index of the graph input tensor.
    pub input: u32,
    /// Index of the graph output tensor.
    pub output: u32,
    /// Bytes of arena the model needs.
    pub arena_size: u32,
    /// Offset of the data section from the blob start (multiple of 16).
    pub data_offset: u32,
    /// Length of the data section (it runs to the end of the blob).
    pub data_len: u32,
}

/// The whole graph as written: postcard's encoding of this struct is the graph bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Graph<'g> {
    /// Fixed fields.
    pub header: GraphHeader,
    /// Tensor table; ops refer to tensors by index into it.
    pub tensors: &'g [Tensor],
    /// Ops in execution order.
    pub ops: &'g [Op],
}

/// Round `n` up to a multiple of [`DATA_ALIGN`] (`None` on overflow).
pub fn align_up(n: usize) -> Option<usize> {
    n.checked_add(DATA_ALIGN - 1).map(|v| v & !(DATA_ALIGN - 1))
}

impl Op {
    /// `(first input, second input, output)` tensor indices: the second input is
    /// `Add`'s `input2`, `None` for every other op. (One match for all the accessors
    /// below: the firmware carries it once.)
    pub(crate) fn operands(&self) -> (u32, Option<u32>, u32) {
        self.operands_inlined()
    }

    /// [`Op::operands`], always inlined: the per-op dispatch uses it, where a call per
    /// op costs more than the copy (with a firmware's op set LLVM stopped inlining
    /// `operands` there: about 100 more instructions per LeNet-5 inference on the M4).
    #[inline(always)]
    pub(crate) fn operands_inlined(&self) -> (u32, Option<u32>, u32) {
        match self {
            Op::Conv2d(p) => (p.input, None, p.output),
            Op::DepthwiseConv2d(p) => (p.input, None, p.output),
            Op::FullyConnected(p) => (p.input, None, p.output),
            Op::MaxPool2d(p) | Op::AvgPool2d(p) => (p.input, None, p.output),
            Op::GlobalAvgPool(p) => (p.input, None, p.output),
            Op::Add(p) => (p.input1, Some(p.input2), p.output),
            Op::Reshape(p) => (p.input, None, p.output),
            Op::Softmax(p) => (p.input, None, p.output),
            Op::ArgMax(p) => (p.input, None, p.output),
            Op::BinaryConv2d(p) => (p.input, None, p.output),
            Op::BinaryFullyConnected(p) => (p.input, None, p.output),
            Op::Conv2dMaxPool(p) => (p.conv.input, None, p.conv.output),
        }
    }

    /// The op's weights (conv, depthwise, fully connected and their binary forms),
    /// `None` for the rest.
    pub fn weights(&self) -> Option<Weights> {
        match self {
            Op::Conv2d(p) => Some(p.filter),
            Op::DepthwiseConv2d(p) => Some(p.filter),
            Op::FullyConnected(p) => Some(p.weights),
            Op::BinaryConv2d(p) => Some(p.filter),
            Op::BinaryFullyConnected(p) => Some(p.weights),
            Op::Conv2dMaxPool(p) => Some(p.conv.filter),
            _ => None,
        }
    }

    /// Index of the tensor this op writes.
    pub fn output(&self) -> u32 {
        self.operands().2
    }

    /// Indices of the tensors this op reads (one, or two for `Add`).
    pub fn inputs(&self) -> impl Iterator<Item = u32> {
        let (a, b, _) = self.operands();
        core::iter::once(a).chain(b)
    }

    /// The op's wire tag.
    pub fn tag(&self) -> u32 {
        self.kind() as u32
    }

    /// The op's kind (its wire tag, as an enum), as [`crate::Model`]'s op sets use it.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Conv2d(_) => OpKind::Conv2d,
            Op::DepthwiseConv2d(_) => OpKind::DepthwiseConv2d,
            Op::FullyConnected(_) => OpKind::FullyConnected,
            Op::MaxPool2d(_) => OpKind::MaxPool2d,
            Op::AvgPool2d(_) => OpKind::AvgPool2d,
            Op::GlobalAvgPool(_) => OpKind::GlobalAvgPool,
            Op::Add(_) => OpKind::Add,
            Op::Reshape(_) => OpKind::Reshape,
            Op::Softmax(_) => OpKind::Softmax,
            Op::ArgMax(_) => OpKind::ArgMax,
            Op::BinaryConv2d(_) => OpKind::BinaryConv2d,
            Op::BinaryFullyConnected(_) => OpKind::BinaryFullyConnected,
            Op::Conv2dMaxPool(_) => OpKind::Conv2dMaxPool,
        }
    }
}
