//! sprig on the Raspberry Pi Pico (RP2040, Cortex-M0+): run every embedded vector,
//! report over defmt-rtt.
//!
//! The Cortex-M0+ has no DWT cycle counter; SysTick at the processor clock counts
//! cycles instead (24 bits: an inference must take under 16.7 million cycles). The
//! core runs from the ring oscillator the boot ROM leaves it on (about 6 MHz; no PLL is
//! set up), which does not change cycle counts apart from flash (XIP cache) stalls.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use sprig_board_common::counter::SysTick;
use sprig_board_common::{check, probe, stack};

/// The second-stage bootloader, for the Pico's W25Q16 flash chip.
#[link_section = ".boot2"]
#[used]
pub static BOOT2: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

#[entry]
fn main() -> ! {
    let Some(p) = cortex_m::Peripherals::take() else {
        probe::exit(false)
    };
    let mut counter = SysTick::new(p.SYST, defmt::intern!("cycles"), 1.0);
    let outcome = check(
        defmt::intern!("rp2040-pico"),
        &mut counter,
        Some(stack::cortex_m_rt_area()),
    );
    probe::exit(outcome.passed())
}
