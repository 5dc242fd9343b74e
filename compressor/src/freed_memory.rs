//! Keeps memory a training step frees for the next step, set once at program start.
//!
//! A step allocates the same large buffers every time (column matrices of a few MB,
//! activations, gradients) and frees them at its end. glibc's allocator serves blocks
//! above its mmap threshold with fresh `mmap`s and hands the top of its heaps back to the
//! kernel once more than its trim threshold is free there, so every step paid for the
//! same pages again: page faults and zeroing took about a tenth of a profile, and
//! `bench train` ran 5.8–6.9k images/s against 7.8–10.7k with both thresholds raised
//! (paired runs, `BENCHMARKS.md`). The peak is unchanged; the process keeps its peak.

/// The largest mmap threshold glibc accepts on 64-bit targets: blocks below it come from
/// the heap, where a freed block can serve the next step.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: i32 = 32 << 20;
/// Free memory at the top of a heap that stays with the process.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: i32 = 1 << 30;

/// Raises glibc's mmap and trim thresholds, unless `GLIBC_TUNABLES` or `MALLOC_*`
/// variables set the allocator's behaviour already (a user's own choice wins). Other
/// allocators keep freed pages anyway, so elsewhere this does nothing.
pub fn keep_for_reuse() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let user_tuned = std::env::vars_os().any(|(key, _)| {
            let key = key.to_string_lossy();
            key == "GLIBC_TUNABLES" || key.starts_with("MALLOC_")
        });
        if !user_tuned {
            // SAFETY: mallopt only changes the allocator's thresholds; it is called before
            // any other thread exists (see `cpu_threads::configure`'s contract).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
            }
        }
    }
}
