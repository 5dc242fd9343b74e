//! sprig on the ST NUCLEO-F446RE (STM32F446RE: Cortex-M4F, 512 KiB flash, 128 KiB RAM): run every embedded vector, report over defmt-rtt,
//! count cycles with DWT `CYCCNT`. The core runs at the 16 MHz HSI oscillator it resets to (no PLL set up, flash with zero wait states), so cycle counts are those of the core without flash stalls.
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
        defmt::intern!("stm32f446-nucleo"),
        &mut counter,
        Some(stack::cortex_m_rt_area()),
    );
    probe::exit(outcome.passed())
}
