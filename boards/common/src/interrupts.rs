//! The device-specific part of the Cortex-M vector table.
//!
//! Without a device crate, `cortex-m-rt` fills 240 interrupt vectors (32 on ARMv6-M)
//! with its default handler: 960 bytes of flash on a Cortex-M4. The firmware enables no
//! interrupt (its counters are polled and SysTick is an exception, not an interrupt),
//! so with `cortex-m-rt`'s `device` feature the table ends after the one entry its
//! linker script requires (`sprig-board-build` writes the empty `device.x` it includes).
//! A board that enables an interrupt must list it here.

#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
static __INTERRUPTS: [unsafe extern "C" fn(); 1] = [{
    extern "C" {
        fn DefaultHandler();
    }
    DefaultHandler
}];
