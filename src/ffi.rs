//! The C ABI (see `include/pinned.h`, generated from these files by cbindgen).
//!
//! Conventions (those of rustls-ffi): opaque handles with `_new` / `_free`
//! pairs, stable numbered status codes, outputs written only on success, no
//! panic ever crosses the boundary (every body runs inside [`guard`]), and
//! the calling thread's last error message kept for `pinned_last_error`.
//!
//! Thread safety: a `pinned_runtime` may be used from any thread; set-up
//! calls are serialised inside. Requests of one partition may be driven
//! from many threads at once; one request handle by one thread at a time.

mod error;
mod guard;
mod model;
mod request;
mod runtime;
mod telemetry;

pub use error::{pinned_last_error, pinned_status, set_last_error};
pub use model::{pinned_model_config, pinned_model_kind, pinned_precision};
pub use request::{
    pinned_partition_io_len, pinned_request, pinned_request_acquire, pinned_request_get_output,
    pinned_request_input_buffer, pinned_request_output_buffer, pinned_request_poll,
    pinned_request_release, pinned_request_set_input, pinned_request_state, pinned_request_submit,
    pinned_request_wait,
};
pub use runtime::{
    pinned_partition, pinned_partition_config, pinned_partition_config_default, pinned_runtime,
    pinned_runtime_add_partition, pinned_runtime_free, pinned_runtime_load_model,
    pinned_runtime_new, pinned_runtime_new_from_config, pinned_runtime_partition, pinned_wait,
};
pub use telemetry::{
    pinned_info_json, pinned_latency, pinned_partition_telemetry,
    pinned_partition_worker_telemetry, pinned_telemetry, pinned_worker_telemetry,
    PINNED_UNAVAILABLE,
};

use std::ffi::c_char;

/// The library version as a NUL-terminated string with static lifetime,
/// e.g. `"0.1.0"`. Never NULL; the caller must not free it.
#[no_mangle]
pub extern "C" fn pinned_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}
