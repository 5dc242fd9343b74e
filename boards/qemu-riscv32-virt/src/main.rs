//! sprig on QEMU's riscv32 virt machine: run every embedded vector, report over
//! defmt over semihosting, exit 0 only if every output is bit-exact with the host.
//!
//! Inferences are counted with `minstret`, which QEMU with `-icount` derives from its
//! instruction count: exact, with no timer quantum.
#![no_std]
#![no_main]

use sprig_board_common::counter::Minstret;
use sprig_board_common::{check, qemu, stack};

#[riscv_rt::entry]
fn main() -> ! {
    let area = stack::riscv_rt_area();
    // SAFETY: the area riscv-rt laid out for the one hart's stack; nothing else there.
    unsafe { stack::paint(area.bottom) };
    let mut counter = Minstret::new();
    let outcome = check(
        defmt::intern!("qemu-riscv32-virt"),
        &mut counter,
        Some(area),
    );
    qemu::exit(outcome.passed())
}

/// Any exception ends the simulation with a failure.
#[no_mangle]
#[allow(non_snake_case)]
fn ExceptionHandler(_frame: &riscv_rt::TrapFrame) -> ! {
    defmt::error!(
        "exception: mcause {=usize:#x} at mepc {=usize:#010x}",
        riscv::register::mcause::read().bits(),
        riscv::register::mepc::read()
    );
    qemu::exit(false)
}
