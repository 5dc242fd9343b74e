//! `Model::from_bytes` on arbitrary bytes, then `run` with a zeroed arena of the
//! model's size and a zero input. Must never panic, abort or read out of bounds.
//!
//! The CRC makes almost every mutation of a valid blob fail at the header, so each
//! input is also tried a second time with its header re-sealed (payload length and CRC
//! recomputed, version and flags kept): that path exercises the graph decoder and the
//! validator on everything the mutator produces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sprig_runtime::format::write::seal;
use sprig_runtime::format::HEADER_LEN;
use sprig_runtime::Model;

/// Skip running models whose arena would be unreasonably large for a fuzzer process.
const MAX_ARENA: usize = 1 << 22;

fn load_and_run(blob: &[u8]) {
    let Ok(model) = Model::from_bytes(blob) else {
        return;
    };
    if model.arena_size() > MAX_ARENA {
        return;
    }
    let mut arena = vec![0u8; model.arena_size()];
    let input = vec![0i8; model.input_len()];
    let mut output = vec![0i8; model.output_len()];
    let _ = model.run(&mut arena, &input, &mut output);
    // Extreme inputs too.
    let input = vec![i8::MIN; model.input_len()];
    let _ = model.run(&mut arena, &input, &mut output);
    let _ = model.predict(&mut arena, &input);
}

fuzz_target!(|data: &[u8]| {
    load_and_run(data);
    if data.len() >= HEADER_LEN {
        let mut blob = data.to_vec();
        let major = u16::from_le_bytes([data[4], data[5]]);
        let minor = u16::from_le_bytes([data[6], data[7]]);
        let flags = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
        if seal(&mut blob, major, minor, flags).is_ok() {
            load_and_run(&blob);
        }
    }
});
