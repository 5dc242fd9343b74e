//! How training uses the CPU's threads, set once at program start.
//!
//! The heavy layers (convolution, max pooling) run sprig's own kernels on rayon's global
//! pool (`nn::cpu`). candle's CPU backend also spreads large element-wise ops over a
//! pool of its own whose threads spin-wait between ops; on the 2-core machine of
//! `BENCHMARKS.md` those spinners and rayon's workers took turns at the cores, and
//! `bench train` ran 2.5–3.5× slower than with candle's element-wise ops on the calling
//! thread (measured while another training job shared the machine; the element-wise ops
//! are a small part of a step once the kernels are parallel). candle's matmul also
//! re-reads `/proc/cpuinfo` on every call unless `RAYON_NUM_THREADS` says how many
//! threads to use.
//!
//! The program itself then runs on one of rayon's workers ([`run_on_pool`]): a training
//! step calls some thirty parallel kernels, and from the main thread each one handed its
//! work to the pool, slept, and was woken when the workers were done; the scheduler's
//! share of a profile was about a tenth. On a worker, the caller takes a share of each
//! kernel itself. `bench train`, paired runs on the 2-core VM of `BENCHMARKS.md`: plain
//! +5, +17, +11 and +14 % images/s, QAT +1, +16, +10 and +13 %.

/// Sets `CANDLE_NUM_THREADS=1` (candle's element-wise ops on the calling thread) and
/// `RAYON_NUM_THREADS` to the available parallelism, each only where the environment
/// does not set it already, so a user's own choice wins.
///
/// Call it first thing in `main`, before any thread is spawned: it changes the process
/// environment, which other threads may be reading.
pub fn configure() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
}

/// A main thread's stack: work moved onto a rayon worker keeps the room it had.
const MAIN_STACK_BYTES: usize = 8 << 20;

/// Runs `work` on a worker of rayon's global pool (built here, with main-thread-sized
/// stacks, after [`configure`] set its size) and returns its result.
///
/// `work` must not block on another thread that waits for a rayon worker in turn: on a
/// one-core machine the pool has one worker, and `work` holds it.
pub fn run_on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    // Fails only where a global pool exists already; `work` then runs on that one.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(MAIN_STACK_BYTES)
        .build_global();
    rayon::scope(|_| work())
}
