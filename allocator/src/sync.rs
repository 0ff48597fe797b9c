//! Atomics for the lock-free code: `loom`'s under `cfg(loom)`, `std`'s
//! otherwise, so the same protocol can be model-checked.
//! (`tests/loom_freelist.rs` also maps this module onto loom directly, so
//! the model runs in a plain `cargo test`.)

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
