//! Link options of the sidecar binary in release builds (and `dist`, which inherits release).
//! A sidecar's idle memory is mostly the binary's pages that the kernel maps in (it maps up to
//! 64 KiB around each page fault), so:
//! - `-z pack-relative-relocs` stores the position-independent binary's ~17,000 relative
//!   relocations as RELR (5 KiB) instead of 24-byte RELA entries (400 KiB the loader reads at
//!   every start). The binary stays position-independent (ASLR); it needs glibc 2.36 or newer
//!   (Debian bookworm), which the loader checks by symbol version.
//! - `--symbol-ordering-file` puts the functions a running sidecar executes (listed in
//!   `symbol-order.txt`, made by `bench/scripts/symbol_order.py` from callgrind profiles) next
//!   to each other at the start of `.text`, so the faults of a running sidecar map those and
//!   rarely the cold code around them. Symbols missing from the file (new code) or from the
//!   binary (removed code) only cost memory, never correctness.
//! - `--icf=all` folds functions whose machine code is identical.
//!
//! The last two are options of LLD, the linker rustc uses on x86_64 Linux since Rust 1.90;
//! other targets and older toolchains link without these options.
//! README "Benchmarks" → "Sidecar RSS" has the figures.

use std::path::Path;
use std::process::Command;

/// The functions a running sidecar executes, one symbol a line (see the module docs).
const ORDER: &str = "symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("PROFILE") != "release"
        || env("TARGET") != "x86_64-unknown-linux-gnu"
        || !links_with_lld(&env("RUSTC"))
    {
        return;
    }
    let order = Path::new(&env("CARGO_MANIFEST_DIR")).join(ORDER);
    let order_arg = format!("-Wl,--symbol-ordering-file={}", order.display());
    for arg in [
        "-Wl,-z,pack-relative-relocs",
        "-Wl,--icf=all",
        &order_arg,
        "-Wl,--no-warn-symbol-ordering",
    ] {
        println!("cargo:rustc-link-arg-bin=trustmesh-proxy={arg}");
    }
}

/// Whether `rustc` is 1.90 or newer, whose x86_64 Linux target links with its own LLD.
fn links_with_lld(rustc: &str) -> bool {
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let version = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut parts = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    matches!((parts.next(), parts.next()), (Some(1), Some(minor)) if minor >= 90)
}
