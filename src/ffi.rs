//! The C ABI (see `include/pinned.h`, generated from this file by cbindgen).
//!
//! Conventions (those of rustls-ffi): stable numbered status codes, outputs
//! written only on success, no panic ever crosses the boundary, and the last
//! error message of the calling thread is kept for `pinned_last_error`.

mod error;

pub use error::{pinned_last_error, pinned_status, set_last_error};

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime,
/// e.g. `"0.1.0"`. Never NULL; the caller must not free it.
#[no_mangle]
pub extern "C" fn pinned_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
