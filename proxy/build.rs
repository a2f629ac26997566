//! Link options of the sidecar binary in release builds (and `dist`, which inherits release).
//! A sidecar's idle memory is mostly the binary's pages that the kernel maps in, so:
//! - `-z pack-relative-relocs` stores the position-independent binary's ~17,000 relative
//!   relocations as RELR (a few KiB) instead of 24-byte RELA entries (~400 KiB the loader reads
//!   at every start). The binary stays position-independent (ASLR); it needs glibc 2.36 or
//!   newer (Debian bookworm), which the loader checks by symbol version.
//! - `--icf=all` lets the linker fold functions whose machine code is identical (generic code
//!   instantiated for types of the same layout), so less code is mapped.
//!
//! README "Benchmarks" → "Sidecar RSS" has the figures.

/// The functions a running sidecar executes, one symbol a line (see the module docs).
const ORDER: &str = "symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER}");
    if std::env::var("PROFILE").as_deref() != Ok("release") {
        return;
    }
    let order = match std::env::var("CARGO_MANIFEST_DIR") {
        Ok(dir) => std::path::Path::new(&dir).join(ORDER),
        Err(_) => return,
    };
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
