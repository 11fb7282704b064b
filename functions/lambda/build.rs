//! Release links gather the code a cold start runs before the rest of `.text`
//! (`cold-start.ld`, written by `bench/init_layout.py`): RSS at init is mostly code pages, and
//! the kernel maps them in 64 KiB blocks around each fault, so init's 1.7 MB of code spread over
//! the whole binary left 5–7 MB resident. The script only adds an output section
//! (`INSERT BEFORE .text`), so GNU ld and lld (zig, under cargo-lambda) keep their default
//! layout for everything else. Dev builds skip it: their sections are named the same, but the
//! layout is not what they are for, and matching the patterns would slow every link.
//! `HERALD_COLD_START_LAYOUT=off` skips it in release too: valgrind names only functions in
//! `.text`, so `bench/init_layout.py` profiles a build without the layout (and so can a
//! before/after measurement).

fn main() {
    println!("cargo:rerun-if-changed=cold-start.ld");
    println!("cargo:rerun-if-env-changed=HERALD_COLD_START_LAYOUT");
    let wanted = std::env::var("HERALD_COLD_START_LAYOUT").as_deref() != Ok("off");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let elf = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let script = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("cold-start.ld");
    if wanted && release && elf && script.exists() {
        println!("cargo:rustc-link-arg-bin=herald=-Wl,-T,{}", script.display());
    }
}
