//! `import::onnx::read` on arbitrary bytes: a malformed model must be an error naming
//! the file, never a panic, an abort or an unbounded allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sprig_compressor::import::onnx::read(data, "fuzz.onnx", &candle_core::Device::Cpu);
});
