//! Worst-case stack use by stack painting: the stack area is filled with a known
//! word before the work runs; afterwards, the lowest word that no longer holds it
//! marks the deepest the stack went.
//!
//! Cortex-M boards let `cortex-m-rt` paint (feature `paint-stack`: the whole area from
//! `_stack_end` to `_stack_start` with `0xCCCC_CCCC`, before `main`); other boards call
//! [`paint`] first thing in `main`.

/// The word painted into unused stack (the value `cortex-m-rt` uses).
pub const PAINT: u32 = 0xCCCC_CCCC;

/// Bytes below the caller's frame that [`paint`] leaves alone, for its own frame.
const MARGIN: usize = 256;

/// Paint from `bottom` up to a little below the caller's stack frame.
///
/// # Safety
/// `bottom` must be the word-aligned lowest address of the current stack, and nothing
/// else may live between it and the stack pointer.
#[inline(never)]
pub unsafe fn paint(bottom: usize) {
    let marker = 0u32;
    let here = core::ptr::addr_of!(marker) as usize;
    let top = here.saturating_sub(MARGIN) & !3;
    let mut at = bottom;
    while at < top {
        // SAFETY: between the stack's bottom and below this frame: unused stack.
        unsafe { core::ptr::write_volatile(at as *mut u32, PAINT) };
        at += 4;
    }
}

/// Bytes of stack used so far at the deepest point: from `top` (exclusive, where the
/// stack starts) down to the lowest word that lost its paint above `bottom`.
///
/// # Safety
/// `bottom..top` must be the (word-aligned) stack area, painted before use.
pub unsafe fn used(bottom: usize, top: usize) -> usize {
    let mut at = bottom;
    while at < top {
        // SAFETY: inside the stack area.
        if unsafe { core::ptr::read_volatile(at as *const u32) } != PAINT {
            break;
        }
        at += 4;
    }
    top - at
}

/// The stack area `cortex-m-rt` lays out and paints (feature `paint-stack`):
/// `_stack_end..._stack_start`.
#[cfg(feature = "cortex-m")]
pub fn cortex_m_rt_area() -> crate::StackArea {
    extern "C" {
        static _stack_end: u32;
        static _stack_start: u32;
    }
    // Only the addresses of the linker symbols are taken.
    crate::StackArea {
        bottom: core::ptr::addr_of!(_stack_end) as usize,
        top: core::ptr::addr_of!(_stack_start) as usize,
    }
}

/// The stack area `riscv-rt` lays out (`__estack..__sstack`); [`paint`] it first.
#[cfg(feature = "riscv")]
pub fn riscv_rt_area() -> crate::StackArea {
    extern "C" {
        static __estack: u32;
        static __sstack: u32;
    }
    // Only the addresses of the linker symbols are taken.
    crate::StackArea {
        bottom: core::ptr::addr_of!(__estack) as usize,
        top: core::ptr::addr_of!(__sstack) as usize,
    }
}
