//! # sprig-runtime
//!
//! A `#![no_std]`, allocation-free int8 inference engine for sprig's packed models
//! (`.sprig`, specified in `runtime/FORMAT.md`).
//!
//! ```text
//! let model = Model::from_bytes(BLOB)?;          // validates everything, borrows weights
//! let mut arena = [0u8; 6 * 1024];               // at least model.arena_size() bytes
//! model.run(&mut arena, &input, &mut output)?;   // int8 in, int8 out
//! ```
//!
//! - [`Model::from_bytes`] checks the header (length, magic, version, flags, CRC) before
//!   decoding anything, then validates every index, shape, stride, padding, scale, zero
//!   point, multiplier, shift, data reference and arena offset, and that tensors live at
//!   the same time do not share arena bytes. After it returns `Ok`, [`Model::run`]
//!   cannot index out of bounds or panic, whatever the input.
//! - Arithmetic follows the TFLite int8 spec and TFLite Micro's reference kernels
//!   (rounding documented in [`fixed_point`]); integer-only, so it runs on cores
//!   without an FPU.
//! - Ops: Conv2d, DepthwiseConv2d, FullyConnected, MaxPool2d, AvgPool2d, global average
//!   pool, Add, Reshape (no copy), Softmax, ArgMax, and Conv2dMaxPool (a conv and the
//!   max pool reading it as one op that stores only the pooled tensor,
//!   `kernels::conv_pool`); ReLU/ReLU6 are fused as clamps.
//! - Weights dense, or for conv and fully connected sparse by row
//!   ([`format::sparse`]: only nonzeros, with 8- or 4-bit gaps), run by kernels that
//!   touch only the nonzeros (`kernels::sparse`), bit-exact with the dense ones; or
//!   packed in 4, 2 or 1 bits per weight ([`format::packed`], also for depthwise),
//!   unpacked a block of rows at a time into the dense kernels' loops
//!   (`kernels::low_bit`).
//!
//! Footprint: a [`Model`] holds its op and tensor tables in `heapless` vectors whose
//! capacities are const generics (default 64 and 64, about 7.5 KiB on a 32-bit
//! target); a small model on a small chip can use e.g. `Model::<8, 12>::parse(blob)`.
//! Weights stay in the blob (flash). Scratch memory is on the stack only: conv and fully
//! connected gather their input window (at most 1 KiB), decode a block of 16 channels'
//! bias and requantization (256 B), and on Armv7E-M (Cortex-M4/M7, where the kernels
//! use the DSP extension's SMLAD through `asm!`) pack the window into 16-bit pairs
//! (1 KiB more); the sparse conv kernel keeps its rows' input offsets (about 1.3 KiB
//! more), the packed kernels a block of unpacked weights (1 KiB more); nothing else.
//!
//! Op sets: [`Model`]'s last const parameter is the set of ops it can run (default
//! [`ALL_OPS`]); validation and dispatch reference only those kernels, so a firmware
//! that names exactly its model's ops (`Model::<8, 12, { op_set(&[...]) }>`) links no
//! other kernel, like TensorFlow Lite Micro's `MicroMutableOpResolver`. A blob with
//! another op is refused with [`Error::OpNotInSet`]. The set names weight encodings
//! and fused sparse kernels too ([`kind_set`] leaves dense out); [`Model::op_set_used`]
//! gives a model's exact set (see [`model::op_set`]'s module, [`model::OpKind`]).
//!
//! Features: `std` (host: `std::error::Error`, the blob writer
//! `format::write::BlobBuilder` and the arena planner), `defmt` (derives
//! `defmt::Format` on public types and errors).
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod arena;
mod crc;
pub mod error;
pub mod fixed_point;
pub mod format;
pub mod kernels;
pub mod model;
pub mod vectors;

pub use crc::{crc32, Crc32};
pub use error::Error;
pub use format::{
    Add, ArgMax, BinaryConv2d, BinaryFullyConnected, Conv2d, Conv2dMaxPool, DataRef,
    DepthwiseConv2d, Encoding, FullyConnected, GlobalAvgPool, Graph, GraphHeader, Header, Op,
    Padding, Pool2d, PoolWindow, Reshape, Softmax, Tensor, TensorKind, Weights,
};
pub use model::{
    encoding_set, kernel_set, kind_set, op_set, DenseConvKernel, DenseFcKernel, DepthwiseKernel,
    FusedSparseKernel, Kernel, Model, OpKind, OpSet, Quant, ALL_OPS, STREAM_CHAIN_CAP,
};
