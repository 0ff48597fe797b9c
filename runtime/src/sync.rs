//! The atomics the lock-free parts use, swapped for `loom`'s under
//! `cfg(loom)` so the publish/consume protocol can be model-checked.
//!
//! Only `ring` and `slots` take their atomics from here; everything else uses
//! `std` directly.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Aligns its contents to 128 bytes: two 64-byte lines, because the
/// adjacent-line prefetcher on Intel cores pulls lines in pairs (Intel
/// optimization manual, "spatial prefetcher"; crossbeam's `CachePadded` uses
/// the same figure on x86_64).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Busy-wait hint; under loom a yield so the model explores other threads.
#[inline(always)]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}
