//! memory.x on the link path, the artifacts checked against it, riscv-rt's and
//! defmt's linker scripts.

fn main() {
    sprig_board_build::link("qemu-riscv32-virt");
    println!("cargo:rerun-if-changed=memory.x");
    // riscv-rt's link.x does not include memory.x itself (without its `memory` feature).
    println!("cargo:rustc-link-arg-bins=-Tmemory.x");
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    // riscv-rt's link.x leaves `.eh_frame` to the linker, which put it in flash after
    // `.rodata` (3 KiB). The firmware aborts on panic and never unwinds: the tables
    // stay in the ELF for debuggers, outside the image. Last, so that it moves no
    // other section.
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    std::fs::write(
        out.join("unwind.x"),
        "SECTIONS\n{\n  .eh_frame (INFO) : { KEEP(*(.eh_frame)) }\n}\n",
    )
    .expect("cannot write unwind.x");
    println!("cargo:rustc-link-arg-bins=-Tunwind.x");
}
