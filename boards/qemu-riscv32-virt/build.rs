//! memory.x on the link path, the artifacts checked against it, riscv-rt's and
//! defmt's linker scripts.

fn main() {
    sprig_board_build::link("qemu-riscv32-virt");
    println!("cargo:rerun-if-changed=memory.x");
    // riscv-rt's link.x does not include memory.x itself (without its `memory` feature).
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
}
