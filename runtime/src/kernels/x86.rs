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
//! - `add`: elementwise Add.
//!
//! Why it is bit-exact with the portable kernels and TFLite Micro:
//!
//! - Products are formed as `(x + input_offset) · w` with both factors as `i16`
//!   (`|x + input_offset| ≤ 384`, `|w| ≤ 128`; `vpmaddwd` adds two such products into an
//!   `i32` exactly) and summed in `i32` with wrapping adds. Integer addition modulo 2^32 is
//!   associative and commutative, so any blocking or summation order gives the
//!   reference's accumulator bit for bit. Padding taps are `x + input_offset = 0`.
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
mod requant;

pub(crate) use add::add;
pub(crate) use depthwise::depthwise_conv2d;
pub(crate) use gemm::{conv2d, fully_connected};

std::thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Turns the host fast path off (`false`) or back on for the calling thread, so tests
/// can run the portable kernels on an x86_64 host too. On by default.
pub fn set_enabled(enabled: bool) {
    ENABLED.with(|e| e.set(enabled));
}

/// Whether this thread may take the AVX2 kernels: not turned off, and the CPU has AVX2.
#[inline]
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
        for (d, &v) in d.iter_mut().zip(y) {
            *d = v;
        }
    }
}
