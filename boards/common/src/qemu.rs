//! Simulated boards: defmt frames go to the host over semihosting (QEMU writes them to
//! its stdout), the verdict leaves as QEMU's exit status, and a panic exits with a
//! failure instead of hanging until the host's timeout.
//!
//! The logger is this module's own, not `defmt-semihosting`: semihosting loses no
//! bytes, so the frames go out with defmt's raw encoding (`defmt/encoding-raw`, set by
//! the `semihosting` feature; the decoder reads the encoding from the ELF), each write
//! straight to a `:tt` handle opened at the first frame (`SYS_WRITE`, which QEMU
//! completes before it returns; `SYS_WRITEC` would be smaller, but QEMU sends it to its
//! stderr), through the raw semihosting calls: no rzcobs encoder, critical section or
//! `semihosting::io` checks, about 1 KB less flash. Logging happens outside the
//! measured inferences.

use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use semihosting::sys::arm_compat::syscall::{syscall_readonly, OperationNumber, ParamRegR};

/// End the simulation: QEMU exits with status 0 if `success`, else 1.
pub fn exit(success: bool) -> ! {
    semihosting::process::exit(if success { 0 } else { 1 })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::report_panic(info);
    exit(false)
}

/// Whether a frame is being written (the firmware runs no interrupt handler, but a
/// fault during logging could log again).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The host's handle for `:tt` (QEMU's stdout), 0 until the first frame opens it
/// (`SYS_OPEN` returns a nonzero handle, or -1).
static TT: AtomicUsize = AtomicUsize::new(0);

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` refuses to nest (it ends the simulation instead), and with raw
// encoding a frame is exactly the bytes written between `acquire` and `release`.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // Plain load and store: thumbv6m (micro:bit) has no atomic swap, and the
        // firmware is single-threaded.
        if TAKEN.load(Ordering::Relaxed) {
            exit(false);
        }
        TAKEN.store(true, Ordering::Relaxed);
        if TT.load(Ordering::Relaxed) == 0 {
            // `fopen(":tt", "w")`: path, mode 4, path length.
            let open = [
                ParamRegR::c_str(c":tt"),
                ParamRegR::usize(4),
                ParamRegR::usize(3),
            ];
            // SAFETY: SYS_OPEN reads the block and the path, both alive for the call.
            let tt =
                unsafe { syscall_readonly(OperationNumber::SYS_OPEN, ParamRegR::block(&open)) };
            TT.store(tt.usize(), Ordering::Relaxed);
        }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        TAKEN.store(false, Ordering::Relaxed);
    }

    unsafe fn write(bytes: &[u8]) {
        let write = [
            ParamRegR::usize(TT.load(Ordering::Relaxed)),
            ParamRegR::buf(bytes),
            ParamRegR::usize(bytes.len()),
        ];
        // SAFETY: SYS_WRITE reads the block and `bytes`, both alive for the call; a bad
        // handle makes it fail, which loses the log but nothing else.
        unsafe { syscall_readonly(OperationNumber::SYS_WRITE, ParamRegR::block(&write)) };
    }
}
