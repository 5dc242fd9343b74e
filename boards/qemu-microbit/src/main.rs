//! sprig on QEMU's microbit (nRF51822, Cortex-M0): run every embedded vector, report
//! over defmt over semihosting, exit 0 only if every output is bit-exact with the host.
//!
//! The nRF51 has neither a DWT cycle counter nor SysTick, so inferences are timed
//! with TIMER0: 32-bit, 16 MHz (prescaler 0), read through its capture task.
#![no_std]
#![no_main]

use cortex_m_rt::{entry, exception, ExceptionFrame};
use sprig_board_common::{check, qemu, stack, Counter};

/// nRF51 TIMER0 in 32-bit timer mode at 16 MHz.
struct Timer0;

impl Timer0 {
    const BASE: usize = 0x4000_8000;
    const TASKS_START: usize = 0x000;
    const TASKS_STOP: usize = 0x004;
    const TASKS_CLEAR: usize = 0x00C;
    const TASKS_CAPTURE0: usize = 0x040;
    const MODE: usize = 0x504;
    const BITMODE: usize = 0x508;
    const PRESCALER: usize = 0x510;
    const CC0: usize = 0x540;

    fn write(offset: usize, value: u32) {
        // SAFETY: a TIMER0 register (nRF51 reference manual, TIMER chapter); the
        // firmware owns the peripheral.
        unsafe { core::ptr::write_volatile((Self::BASE + offset) as *mut u32, value) }
    }

    fn read(offset: usize) -> u32 {
        // SAFETY: as in `write`.
        unsafe { core::ptr::read_volatile((Self::BASE + offset) as *const u32) }
    }

    fn start() -> Self {
        Self::write(Self::TASKS_STOP, 1);
        Self::write(Self::MODE, 0); // timer
        Self::write(Self::BITMODE, 3); // 32 bits
        Self::write(Self::PRESCALER, 0); // 16 MHz
        Self::write(Self::TASKS_CLEAR, 1);
        Self::write(Self::TASKS_START, 1);
        Timer0
    }
}

impl Counter for Timer0 {
    fn unit(&self) -> defmt::Str {
        defmt::intern!("instructions")
    }
    /// 16 MHz under QEMU's `-icount shift=0` (1 ns per instruction): 62.5
    /// instructions per tick.
    fn units_per_tick(&self) -> f32 {
        62.5
    }
    fn mask(&self) -> u32 {
        u32::MAX
    }
    fn now(&mut self) -> u32 {
        Self::write(Self::TASKS_CAPTURE0, 1);
        Self::read(Self::CC0)
    }
}

#[entry]
fn main() -> ! {
    let mut counter = Timer0::start();
    let outcome = check(
        defmt::intern!("qemu-microbit"),
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
