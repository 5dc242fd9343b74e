//! Hardware boards under `probe-rs run`: defmt frames go out over RTT (`defmt-rtt`),
//! a passing run ends on a breakpoint (probe-rs then exits 0), and a failing one
//! panics (`panic-probe` prints the message and a backtrace, probe-rs exits non-zero).

use defmt_rtt as _;
use panic_probe as _;

/// End the run: a breakpoint if `success`, else a panic.
pub fn exit(success: bool) -> ! {
    if !success {
        defmt::panic!("some vectors differ from the host");
    }
    loop {
        cortex_m::asm::bkpt();
    }
}
