//! A lock-free stack of free block indices (Treiber stack) with a tagged
//! head, the protocol behind [`Pool`](crate::pool::Pool).
//!
//! `head` packs `tag << 32 | index` into one `AtomicU64`; every successful
//! CAS bumps the tag. That defeats ABA: if, between a taker reading
//! `head = (t, i)` and `next[i]`, other threads take `i` and give it back,
//! `head` is now `(t + k, i)` with `k >= 2`, so the taker's CAS fails and it
//! retries instead of installing a stale `next[i]`. (A wrap of the 32-bit
//! tag needs 2^32 successful operations inside that window.)
//!
//! Ordering: a giver writes `next[i]` (and the block's bytes) before its
//! `Release` CAS; a taker's `Acquire` load of `head` reads that CAS or a
//! later RMW in its release sequence, so it sees both.

use crate::sync::{AtomicU32, AtomicU64, Ordering};

/// End of the list.
const NIL: u32 = u32::MAX;

fn pack(tag: u32, index: u32) -> u64 {
    (u64::from(tag) << 32) | u64::from(index)
}

fn unpack(head: u64) -> (u32, u32) {
    ((head >> 32) as u32, head as u32)
}

/// Invariants: every index `< capacity` is either in the list exactly once
/// or held by exactly one caller of `pop`; `next[i]` is meaningful only
/// while `i` is in the list. Aligned to 128 bytes so the contended `head`
/// shares its cache lines (and the adjacent-line prefetch pair) with nothing
/// else.
#[repr(align(128))]
pub(crate) struct FreeList {
    head: AtomicU64,
    next: Box<[AtomicU32]>,
}

impl FreeList {
    /// Largest capacity: every index must differ from `NIL`.
    pub(crate) const MAX: u32 = NIL - 1;

    /// A list holding `0, 1, .., capacity - 1` (popped in that order).
    /// The caller keeps `capacity <= MAX`.
    pub(crate) fn new(capacity: u32) -> Self {
        let capacity = capacity.min(Self::MAX);
        let next = (0..capacity)
            .map(|i| AtomicU32::new(if i + 1 < capacity { i + 1 } else { NIL }))
            .collect();
        let first = if capacity == 0 { NIL } else { 0 };
        Self {
            head: AtomicU64::new(pack(0, first)),
            next,
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.next.len()
    }

    /// Takes an index, or `None` when all are held.
    #[inline]
    pub(crate) fn pop(&self) -> Option<u32> {
        let mut head = self.head.load(Ordering::Acquire);
        loop {
            let (tag, index) = unpack(head);
            if index == NIL {
                return None;
            }
            // May be stale if `index` was taken and given back meanwhile;
            // then the tag has moved on and the CAS below fails.
            let next = self.next[index as usize].load(Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), next),
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
    }

    /// Gives back an index. The caller must hold it (from `pop`) and give
    /// it once: `Pool` ensures this by owning it in a `Block`.
    #[inline]
    pub(crate) fn push(&self, index: u32) {
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let (tag, first) = unpack(head);
            self.next[index as usize].store(first, Ordering::Relaxed);
            match self.head.compare_exchange_weak(
                head,
                pack(tag.wrapping_add(1), index),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}
