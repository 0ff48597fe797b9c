//! Generates the C header from the `extern "C"` items in `src/ffi*`.
//!
//! The header is always written to `$OUT_DIR/pinned.h`; the committed copy
//! in `include/pinned.h` is refreshed only when `PINNED_WRITE_HEADER=1`, and
//! `tests/header.rs` fails when the two differ.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=PINNED_WRITE_HEADER");

    let crate_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not parse the C ABI in src/ffi");
    bindings.write_to_file(out_dir.join("pinned.h"));
    if env::var_os("PINNED_WRITE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(crate_dir.join("include/pinned.h"));
    }
}
