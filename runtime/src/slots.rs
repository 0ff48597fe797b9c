//! Request slots: input and output buffers mapped at model load on the
//! partition's node, and the per-slot state machine that says who may touch
//! them.
//!
//! States (the low bits of `SlotMeta::state`):
//!
//! ```text
//!   FREE --acquire--> HELD --submit--> QUEUED --worker--> DONE_OK / DONE_ERR
//!    ^                 ^                  |                   |
//!    |                 +----(resubmit)----|-------------------+
//!    +------release----(from HELD/DONE)---+---ABANDONED------>+ (worker frees)
//! ```
//!
//! Ownership: in FREE the slot is in the free ring and nobody touches its
//! buffers; in HELD and DONE_* the one `Request` handle owns input and
//! output; in QUEUED (and ABANDONED) the worker that popped it does. The
//! transfers are release/acquire on `state` and on the ring's cells.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pinned_allocator::MemPolicy;

use crate::memory::{MemoryError, NodeBuffer};

pub(crate) const FREE: u32 = 0;
pub(crate) const HELD: u32 = 1;
pub(crate) const QUEUED: u32 = 2;
pub(crate) const DONE_OK: u32 = 3;
pub(crate) const DONE_ERR: u32 = 4;
/// The handle was dropped while the request was queued: the worker that
/// completes it returns the slot to the free ring.
pub(crate) const ABANDONED: u32 = 5;
/// Set by a host sleeping on the state word: the worker must `FUTEX_WAKE`.
pub(crate) const WAITER: u32 = 1 << 31;

/// Why a request failed (published with `DONE_ERR`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Failure {
    /// The model returned an error.
    ModelError = 1,
    /// The model panicked; the worker caught it and went on.
    ModelPanic = 2,
}

impl Failure {
    fn from_code(code: u32) -> Self {
        if code == Failure::ModelPanic as u32 {
            Failure::ModelPanic
        } else {
            Failure::ModelError
        }
    }
}

/// One slot's control word and timestamps, alone on its cache line pair so
/// that hosts polling different slots do not share lines.
#[repr(align(128))]
pub(crate) struct SlotMeta {
    pub(crate) state: AtomicU32,
    failure: AtomicU32,
    /// `clock::now_ns` at submit; written by the host before the ring push.
    submit_ns: AtomicU64,
}

/// All slots of a partition.
///
/// Invariant: slot `i`'s input is `inputs[i * input_len .. (i + 1) *
/// input_len]`, its output likewise; accesses follow the state machine above.
pub(crate) struct SlotTable {
    metas: Box<[SlotMeta]>,
    inputs: NodeBuffer<f32>,
    outputs: NodeBuffer<f32>,
    input_len: usize,
    output_len: usize,
    /// Makes the table `!Sync` by default so the impl below is a decision.
    _cells: std::marker::PhantomData<UnsafeCell<f32>>,
}

// SAFETY: buffers are reached only through the unsafe accessors below, whose
// callers hold the slot per the state machine; the metas are atomics.
unsafe impl Sync for SlotTable {}
// SAFETY: the table owns its mappings; nothing is tied to a thread.
unsafe impl Send for SlotTable {}

impl SlotTable {
    pub(crate) fn new(
        count: usize,
        input_len: usize,
        output_len: usize,
        policy: &MemPolicy,
    ) -> Result<Self, MemoryError> {
        let metas = (0..count)
            .map(|_| SlotMeta {
                state: AtomicU32::new(FREE),
                failure: AtomicU32::new(0),
                submit_ns: AtomicU64::new(0),
            })
            .collect();
        let total = |len: usize, what| {
            count
                .checked_mul(len)
                .ok_or(MemoryError::Overflow { what, count })
        };
        Ok(Self {
            metas,
            inputs: NodeBuffer::new(total(input_len, "slot inputs")?, policy, "slot inputs")?,
            outputs: NodeBuffer::new(total(output_len, "slot outputs")?, policy, "slot outputs")?,
            input_len,
            output_len,
            _cells: std::marker::PhantomData,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.metas.len()
    }

    pub(crate) fn input_len(&self) -> usize {
        self.input_len
    }

    pub(crate) fn output_len(&self) -> usize {
        self.output_len
    }

    #[inline]
    pub(crate) fn meta(&self, index: u32) -> &SlotMeta {
        &self.metas[index as usize]
    }

    /// Slot `index`'s input.
    ///
    /// # Safety
    /// The caller owns the slot's input per the state machine (a `Request`
    /// in HELD/DONE through `&mut`, or the worker that popped it while
    /// QUEUED), and no `&mut` to the same input is alive.
    #[inline]
    pub(crate) unsafe fn input(&self, index: u32) -> &[f32] {
        let start = index as usize * self.input_len;
        assert!(start + self.input_len <= self.inputs.len());
        // SAFETY: in bounds (checked), initialized (zero-filled mapping),
        // and unaliased by a writer (caller's contract).
        unsafe { std::slice::from_raw_parts(self.inputs.as_ptr().add(start), self.input_len) }
    }

    /// Slot `index`'s input, writable.
    ///
    /// # Safety
    /// As [`Self::input`], and no other reference to this input is alive.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn input_mut(&self, index: u32) -> &mut [f32] {
        let start = index as usize * self.input_len;
        assert!(start + self.input_len <= self.inputs.len());
        // SAFETY: in bounds, initialized, exclusively owned (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.inputs.as_ptr().add(start), self.input_len) }
    }

    /// Slot `index`'s output.
    ///
    /// # Safety
    /// The caller owns the slot's output (a `Request` in DONE_OK), and no
    /// `&mut` to it is alive.
    #[inline]
    pub(crate) unsafe fn output(&self, index: u32) -> &[f32] {
        let start = index as usize * self.output_len;
        assert!(start + self.output_len <= self.outputs.len());
        // SAFETY: in bounds, initialized, not being written (caller's contract).
        unsafe { std::slice::from_raw_parts(self.outputs.as_ptr().add(start), self.output_len) }
    }

    /// Slot `index`'s output, writable.
    ///
    /// # Safety
    /// The caller is the worker that popped the slot (QUEUED/ABANDONED), and
    /// no other reference to this output is alive.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn output_mut(&self, index: u32) -> &mut [f32] {
        let start = index as usize * self.output_len;
        assert!(start + self.output_len <= self.outputs.len());
        // SAFETY: in bounds, initialized, exclusively owned (caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.outputs.as_ptr().add(start), self.output_len) }
    }
}

impl SlotMeta {
    /// Host side, before the ring push: the slot leaves the host.
    #[inline]
    pub(crate) fn mark_queued(&self, submit_ns: u64) {
        self.submit_ns.store(submit_ns, Ordering::Relaxed);
        self.failure.store(0, Ordering::Relaxed);
        // Release: the input written before it is visible to the worker
        // (the ring push that follows publishes with release too).
        self.state.store(QUEUED, Ordering::Release);
    }

    #[inline]
    pub(crate) fn submit_ns(&self) -> u64 {
        self.submit_ns.load(Ordering::Relaxed)
    }

    /// Worker side: publishes the outcome. Returns the previous state word
    /// (to see `WAITER` and `ABANDONED`).
    #[inline]
    pub(crate) fn complete(&self, failure: Option<Failure>) -> u32 {
        let done = match failure {
            None => DONE_OK,
            Some(f) => {
                self.failure.store(f as u32, Ordering::Relaxed);
                DONE_ERR
            }
        };
        self.state.swap(done, Ordering::AcqRel)
    }

    #[inline]
    pub(crate) fn failure(&self) -> Failure {
        Failure::from_code(self.failure.load(Ordering::Relaxed))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_per_slot_and_states_move() {
        let table = SlotTable::new(3, 4, 2, &MemPolicy::Default).unwrap();
        assert_eq!(
            (table.len(), table.input_len(), table.output_len()),
            (3, 4, 2)
        );
        // SAFETY: single-threaded test; each borrow ends before the next.
        unsafe {
            table.input_mut(2).copy_from_slice(&[1.0, 2.0, 3.0, 4.0]);
            assert_eq!(table.input(2), &[1.0, 2.0, 3.0, 4.0]);
            assert_eq!(table.input(1), &[0.0; 4]);
            table.output_mut(0)[1] = 9.0;
            assert_eq!(table.output(0), &[0.0, 9.0]);
        }
        let m = table.meta(1);
        m.state.store(HELD, Ordering::Relaxed);
        m.mark_queued(77);
        assert_eq!(m.submit_ns(), 77);
        assert_eq!(m.complete(Some(Failure::ModelPanic)), QUEUED);
        assert_eq!(m.state.load(Ordering::Relaxed), DONE_ERR);
        assert_eq!(m.failure(), Failure::ModelPanic);
        m.mark_queued(78);
        assert_eq!(m.complete(None), QUEUED);
        assert_eq!(m.state.load(Ordering::Relaxed), DONE_OK);
    }
}
