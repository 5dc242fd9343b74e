//! The embedded model and test vectors, 16-byte aligned in flash.
//!
//! The build script copies them from the compress run folder into `OUT_DIR` (keeping
//! at most `SPRIG_MAX_VECTORS` vectors) and writes the sizes and the op set the
//! firmware needs into `artifacts.rs` there. `cargo xtask size` finds the two statics by name to split
//! flash into code, model and vectors.

mod generated {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

pub use generated::{ARENA_SIZE, MAX_OPS, MAX_TENSORS, OP_SET, OUTPUT_LEN, PROFILE, TOTAL_VECTORS};

/// A value aligned to 16 bytes: the packed format's data section is 16-byte aligned
/// relative to the blob start, so the blob itself must be too for zero-copy reads.
#[repr(C, align(16))]
pub struct Aligned<T: ?Sized>(pub T);

const MODEL_LEN: usize = include_bytes!(concat!(env!("OUT_DIR"), "/model.sprig")).len();
const VECTORS_LEN: usize = include_bytes!(concat!(env!("OUT_DIR"), "/vectors.bin")).len();

static SPRIG_MODEL: Aligned<[u8; MODEL_LEN]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/model.sprig")));
static SPRIG_VECTORS: Aligned<[u8; VECTORS_LEN]> =
    Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/vectors.bin")));

/// The packed model (`model.sprig`).
pub fn model() -> &'static [u8] {
    &SPRIG_MODEL.0
}

/// The test vectors (`vectors.bin`, possibly capped).
pub fn vectors() -> &'static [u8] {
    &SPRIG_VECTORS.0
}
