//! Host fast path: AVX2 versions of the weighted kernels (conv, depthwise, fully
//! connected) and of Add, for x86_64 hosts, where `cargo xtask conformance`, the
//! compressor and the tests run whole test sets.
//!
//! Only compiled with `std` on x86_64, so firmware builds do not contain a byte of it;
//! chosen at run time (`is_x86_feature_detected!("avx2")`), with the portable kernels as
//! the fallback. The portable kernels stay exactly as they are: they are tuned for
//! Cortex-M.
//!
//! - `gemm`: conv and fully connected as one matrix product over gathered `i16` windows;
//! - `depthwise`: depthwise conv across channels (and as a conv for one input channel);
//! - `requant`: the output stage on eight lanes, shared by all of them;
//! - `add`: elementwise Add;
//! - `plan`: small fully connected ops prepared once when a model is loaded (padded
//!   weight rows, decoded output stages), which `Model::run_in_arena` runs without
//!   the per-call setup that dominates tiny models.
//!
//! Why it is bit-exact with the portable kernels and TFLite Micro:
//!
//! - Products are formed as `(x + input_offset) · w` with both factors as `i16`
//!   (`|x + input_offset| ≤ 384`, `|w| ≤ 128`; `vpmaddwd` adds two such products into an
//!   `i32` exactly) and summed in `i32` with wrapping adds. Integer addition modulo 2^32 is
//!   associative and commutative, so any blocking or summation order gives the
//!   reference's accumulator bit for bit. Padding taps are `x + input_offset = 0`.
//!   For the same reason the prepared one-row ops of `plan` may multiply the plain
//!   inputs and add `input_offset · Σ w` to the bias once: the same sum modulo 2^32.
//! - The output stage (`requant`) is `Requant::apply` and `OutputStage::finish` on eight
//!   lanes, operation for operation (wrapping bias add, shift, the rounding doubling high
//!   multiply with its one saturating case, the rounding divide, offset, clamps).
//!
//! `tests/kernels_prop.rs` checks every path against `kernels::reference` on shapes that
//! reach each branch, with the fast path on and, via [`set_enabled`], off.

use core::cell::Cell;

mod add;
mod depthwise;
mod gemm;
mod plan;
mod requant;

pub(crate) use add::add;
pub(crate) use depthwise::depthwise_conv2d;
pub(crate) use gemm::{conv2d, fully_connected};
pub(crate) use plan::{FcParts, Plan};

std::thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Turns the host fast path off (`false`) or back on for the calling thread, so tests
/// can run the portable kernels on an x86_64 host too. On by default.
pub fn set_enabled(enabled: bool) {
    ENABLED.with(|e| e.set(enabled));
}

/// Whether this thread may take the AVX2 kernels: not turned off, and the CPU has AVX2.
#[inline(always)]
pub(crate) fn avx2() -> bool {
    ENABLED.with(Cell::get) && std::is_x86_feature_detected!("avx2")
}

/// A scratch slice of `len` copies of `init`: on the stack up to `N` elements (tiny
/// models run many small ops, where an allocation would dominate), else on the heap.
#[inline]
fn scratch<T: Copy, const N: usize, R>(len: usize, init: T, f: impl FnOnce(&mut [T]) -> R) -> R {
    if len == 0 {
        f(&mut [])
    } else if len <= N {
        let mut stack = [init; N];
        match stack.get_mut(..len) {
            Some(s) => f(s),
            None => f(&mut []),
        }
    } else {
        f(&mut std::vec![init; len])
    }
}

/// `dst[o..o + y.len()] = y`, as one store for a whole group of four or eight.
#[inline]
fn put(dst: &mut [i8], o: usize, y: Option<&[i8]>) {
    let Some(y) = y else { return };
    let Some(d) = dst.get_mut(o..o + y.len()) else {
        return;
    };
    if let (Ok(d), Ok(y)) = (<&mut [i8; 4]>::try_from(&mut *d), <&[i8; 4]>::try_from(y)) {
        *d = *y;
    } else if let (Ok(d), Ok(y)) = (<&mut [i8; 8]>::try_from(&mut *d), <&[i8; 8]>::try_from(y)) {
        *d = *y;
    } else {
        // One to seven bytes, from a register (a loop over `y` would become a call to
        // `memcpy`).
        let mut v = 0u64;
        for (i, &b) in y.iter().enumerate().take(8) {
            v |= u64::from(b as u8) << (8 * i);
        }
        for d in d.iter_mut() {
            *d = v as u8 as i8;
            v >>= 8;
        }
    }
}
