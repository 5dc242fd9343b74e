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
