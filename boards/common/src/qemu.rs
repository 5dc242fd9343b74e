//! Simulated boards: defmt frames go to the host over semihosting (`defmt-semihosting`
//! writes them to QEMU's stdout), the verdict leaves as QEMU's exit status, and a
//! panic exits with a failure instead of hanging until the host's timeout.

use defmt_semihosting as _;

/// End the simulation: QEMU exits with status 0 if `success`, else 1.
pub fn exit(success: bool) -> ! {
    semihosting::process::exit(if success { 0 } else { 1 })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::report_panic(info);
    exit(false)
}
