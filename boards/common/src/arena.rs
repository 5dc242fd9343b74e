//! The model's arena: a static in `.bss` of exactly [`ARENA_SIZE`] bytes, handed out
//! once as `&'static mut` (no `static mut`).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::artifacts::{Aligned, ARENA_SIZE};

struct Arena {
    bytes: UnsafeCell<Aligned<[u8; ARENA_SIZE]>>,
    taken: AtomicBool,
}

// SAFETY: the bytes are only reachable through `take`, which hands out at most one
// reference, decided inside a critical section.
unsafe impl Sync for Arena {}

static SPRIG_ARENA: Arena = Arena {
    bytes: UnsafeCell::new(Aligned([0; ARENA_SIZE])),
    taken: AtomicBool::new(false),
};

/// The arena, the first time; `None` after that.
pub fn take() -> Option<&'static mut [u8]> {
    critical_section::with(|_| {
        if SPRIG_ARENA.taken.load(Ordering::Relaxed) {
            return None;
        }
        SPRIG_ARENA.taken.store(true, Ordering::Relaxed);
        // SAFETY: `taken` was false, so no other reference to the bytes exists, and
        // it is now true, so none will be made again.
        let bytes: &'static mut Aligned<[u8; ARENA_SIZE]> =
            unsafe { &mut *SPRIG_ARENA.bytes.get() };
        Some(&mut bytes.0[..])
    })
}
