//! # sprig-board-common
//!
//! The board-agnostic half of sprig's firmware. A board crate supplies the reset
//! entry, a defmt transport, a [`Counter`] and a way to exit, then calls [`check`]:
//!
//! 1. the compress run's `model.sprig` and `vectors.bin` are embedded in flash,
//!    16-byte aligned ([`artifacts`]; the folder comes from `SPRIG_ARTIFACTS` at build
//!    time, see `sprig-board-build`);
//! 2. the model is parsed with table capacities equal to its own op and tensor counts
//!    and an op set of exactly its own op kinds, so only their kernels are linked
//!    (every kernel with `SPRIG_ALL_OPS=1`), and runs in a static arena of exactly the
//!    size it needs ([`arena`]);
//! 3. every vector runs; each output is compared byte for byte with the host runtime's
//!    output stored in `vectors.bin`, and the predicted label with the dataset's;
//! 4. the time of each inference is read from the board's counter (instructions under
//!    QEMU with `-icount shift=0`, cycles from DWT on hardware) and the worst-case stack
//!    use from stack painting ([`stack`]);
//! 5. one `sprig result:` line of `key=value` pairs goes out over defmt
//!    (`cargo xtask sim` reads it), and [`check`] returns whether every output was
//!    bit-exact, for the board to turn into an exit status.
#![no_std]

pub mod arena;
pub mod artifacts;
mod check;
pub mod counter;
#[cfg(feature = "cortex-m")]
mod interrupts;
// ARMv7-M: Arm with 32-bit compare-and-swap, which leaves out thumbv6m (no unaligned
// access either). ARMv8-M Baseline (Cortex-M23) has the atomics but no unaligned access:
// a board on it would have to leave `mem` out.
#[cfg(all(target_arch = "arm", target_has_atomic = "32"))]
mod mem;
#[cfg(feature = "probe")]
pub mod probe;
#[cfg(feature = "semihosting")]
pub mod qemu;
pub mod stack;

pub use check::{check, report_panic, Outcome, StackArea};
pub use counter::Counter;
