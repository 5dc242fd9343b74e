//! Counting instructions or cycles per inference.
//!
//! Under QEMU with `-icount shift=0` every guest instruction advances virtual time by
//! exactly 1 ns, so a timer clocked at F Hz ticks once every 10⁹/F instructions and
//! the count is the same on every run. QEMU does not emulate the Cortex-M DWT cycle
//! counter, so the simulated Arm boards read SysTick at the core clock (25 MHz on
//! mps2: one tick per 40 instructions, the quantum of each measurement); RISC-V reads
//! `minstret`, which QEMU derives from the same instruction count, exactly. Hardware
//! boards read DWT `CYCCNT`: cycles, not instructions.

/// A free-running counter that counts up and wraps at [`Counter::mask`].
pub trait Counter {
    /// What the counter measures, in the plural: `"instructions"` or `"cycles"` (an
    /// interned defmt string: its text stays on the host).
    fn unit(&self) -> defmt::Str;
    /// Units per tick (62.5 for a 16 MHz timer under QEMU's 1 ns per instruction).
    fn units_per_tick(&self) -> f32;
    /// The counter's width: it wraps from `mask` to 0.
    fn mask(&self) -> u32;
    /// The current count.
    fn now(&mut self) -> u32;
    /// Ticks from `start` to now, for intervals shorter than one wrap.
    fn since(&mut self, start: u32) -> u32 {
        self.now().wrapping_sub(start) & self.mask()
    }
}

#[cfg(feature = "cortex-m")]
pub use self::cortex_m_counters::*;

#[cfg(feature = "cortex-m")]
mod cortex_m_counters {
    use super::Counter;
    use cortex_m::peripheral::SYST;

    const SYSTICK_MAX: u32 = 0x00FF_FFFF;
    /// SysTick CSR: counter enabled, clocked by the core, no interrupt (ARMv7-M ARM
    /// B3.3.3).
    const SYST_CSR_ENABLE: u32 = 1 << 0;
    const SYST_CSR_CLKSOURCE_CORE: u32 = 1 << 2;

    /// SysTick at the core clock, free-running over its 24 bits, no interrupt.
    pub struct SysTick {
        syst: SYST,
        unit: defmt::Str,
        units_per_tick: f32,
    }

    impl SysTick {
        /// Start SysTick; each tick is worth `units_per_tick` `unit`s (for QEMU's mps2
        /// boards with `-icount shift=0`: 40 instructions).
        pub fn new(mut syst: SYST, unit: defmt::Str, units_per_tick: f32) -> Self {
            syst.set_reload(SYSTICK_MAX);
            syst.clear_current();
            // One write instead of three read-modify-writes (`disable_interrupt`,
            // `set_clock_source(Core)`, `enable_counter`): the same final state.
            // SAFETY: CSR bits 0 (enable), 1 (interrupt) and 2 (clock source) only.
            unsafe { syst.csr.write(SYST_CSR_ENABLE | SYST_CSR_CLKSOURCE_CORE) };
            Self {
                syst,
                unit,
                units_per_tick,
            }
        }

        /// Give the peripheral back.
        pub fn free(self) -> SYST {
            self.syst
        }
    }

    impl Counter for SysTick {
        fn unit(&self) -> defmt::Str {
            self.unit
        }
        fn units_per_tick(&self) -> f32 {
            self.units_per_tick
        }
        fn mask(&self) -> u32 {
            SYSTICK_MAX
        }
        fn now(&mut self) -> u32 {
            // SysTick counts down.
            SYSTICK_MAX - SYST::get_current()
        }
    }

    /// The DWT cycle counter (ARMv7-M and later; Cortex-M0/M0+ have none).
    // thumbv6m is the one Arm target without compare-and-swap atomics: a stable stand-in
    // for "ARMv7-M or later".
    #[cfg(target_has_atomic = "32")]
    pub struct DwtCycles(());

    #[cfg(target_has_atomic = "32")]
    impl DwtCycles {
        /// Enable tracing and start the cycle counter.
        pub fn new(
            dcb: &mut cortex_m::peripheral::DCB,
            dwt: &mut cortex_m::peripheral::DWT,
        ) -> Self {
            dcb.enable_trace();
            cortex_m::peripheral::DWT::unlock();
            dwt.set_cycle_count(0);
            dwt.enable_cycle_counter();
            Self(())
        }
    }

    #[cfg(target_has_atomic = "32")]
    impl Counter for DwtCycles {
        fn unit(&self) -> defmt::Str {
            defmt::intern!("cycles")
        }
        fn units_per_tick(&self) -> f32 {
            1.0
        }
        fn mask(&self) -> u32 {
            u32::MAX
        }
        fn now(&mut self) -> u32 {
            cortex_m::peripheral::DWT::cycle_count()
        }
    }
}

/// `minstret`, the RISC-V retired-instruction counter (low 32 bits). Under QEMU with
/// `-icount`, it is the exact instruction count.
#[cfg(feature = "riscv")]
pub struct Minstret(());

#[cfg(feature = "riscv")]
impl Minstret {
    /// The counter runs from reset in machine mode; nothing to set up.
    pub fn new() -> Self {
        Self(())
    }
}

#[cfg(feature = "riscv")]
impl Default for Minstret {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "riscv")]
impl Counter for Minstret {
    fn unit(&self) -> defmt::Str {
        defmt::intern!("instructions")
    }
    fn units_per_tick(&self) -> f32 {
        1.0
    }
    fn mask(&self) -> u32 {
        u32::MAX
    }
    fn now(&mut self) -> u32 {
        riscv::register::minstret::read() as u32
    }
}
