//! sprig on QEMU's mps2-an500 (Cortex-M7): run every embedded vector, report over
//! defmt over semihosting, exit 0 only if every output is bit-exact with the host.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception, ExceptionFrame};
use sprig_board_common::counter::SysTick;
use sprig_board_common::{check, qemu, stack};

/// mps2's SYSCLK is 25 MHz and QEMU runs with `-icount shift=0` (1 ns per
/// instruction): one SysTick tick at the core clock is 40 instructions.
const INSTRUCTIONS_PER_TICK: f32 = 40.0;

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        qemu::exit(false)
    };
    let mut counter = SysTick::new(
        p.SYST,
        defmt::intern!("instructions"),
        INSTRUCTIONS_PER_TICK,
    );
    let outcome = check(
        defmt::intern!("qemu-mps2-an500"),
        &mut counter,
        Some(stack::cortex_m_rt_area()),
    );
    qemu::exit(outcome.passed())
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    defmt::error!("HardFault at pc {=u32:#010x}", frame.pc());
    qemu::exit(false)
}
