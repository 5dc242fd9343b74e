//! sprig on the Nordic nRF52840-DK (nRF52840: Cortex-M4F, 1 MiB flash, 256 KiB RAM): run every embedded vector, report over defmt-rtt,
//! count cycles with DWT `CYCCNT`. The core runs at 64 MHz (the nRF52840's only CPU clock).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use sprig_board_common::counter::DwtCycles;
use sprig_board_common::{check, probe, stack};

#[entry]
fn main() -> ! {
    let Some(mut p) = cortex_m::Peripherals::take() else {
        probe::exit(false)
    };
    let mut counter = DwtCycles::new(&mut p.DCB, &mut p.DWT);
    let outcome = check(
        defmt::intern!("nrf52840-dk"),
        &mut counter,
        Some(stack::cortex_m_rt_area()),
    );
    probe::exit(outcome.passed())
}
