//! memory.x on the link path, the artifacts checked against it, cortex-m-rt's and
//! defmt's linker scripts.

fn main() {
    sprig_board_build::link("nrf52840-dk");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
