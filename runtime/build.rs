//! Sets `cfg(sprig_arm_dsp)` for Armv7E-M targets (`thumbv7em-*`: Cortex-M4/M7), whose
//! DSP extension (SMLAD, SXTB16) the conv and fully connected kernels use through
//! `asm!`. Stable Rust does not expose `target_feature = "dsp"` to `cfg` (the Arm
//! target features are unstable), although LLVM enables it for these targets.
//!
//! Sets `cfg(sprig_armv6m)` for Armv6-M (`thumbv6m-*`: Cortex-M0/M0+), which has no
//! 32 × 32 → 64-bit multiply: `Requant::apply` keeps its one-form path there.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sprig_arm_dsp)");
    println!("cargo::rustc-check-cfg=cfg(sprig_armv6m)");
    println!("cargo::rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo::rustc-cfg=sprig_arm_dsp");
    }
    if target.starts_with("thumbv6m-") {
        println!("cargo::rustc-cfg=sprig_armv6m");
    }
}
