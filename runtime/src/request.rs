//! The host's side of a request: a handle to one pre-allocated slot.
//!
//! `acquire` a slot, write its input, `submit`, `wait` or `poll`, read the
//! output, `release` (or drop). Nothing here allocates. Misuse that the
//! types cannot rule out is a typed [`RequestError`]; the slot's contents
//! are never lost by a refused call.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ns;
use crate::partition::Shared;
use crate::slots::{Failure, ABANDONED, DONE_ERR, DONE_OK, FREE, HELD, QUEUED, WAITER};
use crate::wait::{futex_wait, Spinner, WaitStrategy};

/// Why a request call was refused or a request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no free request slot (all are held or in flight)")]
    NoFreeSlot,
    #[error("the submission ring is full; the request was kept, try again")]
    Full,
    #[error("the partition is shutting down and accepts no new requests")]
    ShuttingDown,
    #[error("the request is in flight; wait for it first")]
    InFlight,
    #[error("the request was not submitted")]
    NotSubmitted,
    #[error("timed out; the request is still in flight")]
    TimedOut,
    #[error("the model failed this request: {0:?}")]
    Failed(Failure),
}

/// Where a request stands, from `poll`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Held by the host, not submitted (input writable).
    Idle,
    /// Submitted, not finished.
    Pending,
    /// Finished; `output` holds the result.
    Done,
    /// Finished with an error.
    Failed(Failure),
}

/// One request slot, owned by this handle from `acquire` to `release`
/// (or drop). Send it across threads freely; it is not `Clone`.
pub struct Request {
    shared: Arc<Shared>,
    index: u32,
}

impl Request {
    pub(crate) fn new(shared: Arc<Shared>, index: u32) -> Self {
        shared
            .slots
            .meta(index)
            .state
            .store(HELD, Ordering::Relaxed);
        Self { shared, index }
    }

    /// The slot's number within its partition.
    pub fn slot(&self) -> u32 {
        self.index
    }

    #[inline]
    fn state(&self) -> u32 {
        self.shared
            .slots
            .meta(self.index)
            .state
            .load(Ordering::Acquire)
            & !WAITER
    }

    /// The input buffer (`model.input_len()` values); refused while the
    /// request is in flight.
    pub fn input_mut(&mut self) -> Result<&mut [f32], RequestError> {
        match self.state() {
            QUEUED => Err(RequestError::InFlight),
            // SAFETY: HELD or DONE_*: this handle owns the slot, and `&mut
            // self` makes this the only live borrow of its buffers.
            _ => Ok(unsafe { self.shared.slots.input_mut(self.index) }),
        }
    }

    /// Submits without waiting: `Full` at once when the ring has no room
    /// (the request stays held, its input intact).
    #[inline]
    pub fn try_submit(&mut self) -> Result<(), RequestError> {
        let prev = self.state();
        if prev == QUEUED {
            return Err(RequestError::InFlight);
        }
        let shared = &*self.shared;
        if !shared.enter_submit() {
            return Err(RequestError::ShuttingDown);
        }
        let meta = shared.slots.meta(self.index);
        meta.mark_queued(now_ns());
        let pushed = shared.submissions.try_push(self.index);
        if pushed.is_err() {
            meta.state.store(prev, Ordering::Relaxed);
        }
        shared.leave_submit();
        match pushed {
            Ok(()) => {
                shared.wake_worker();
                Ok(())
            }
            Err(_) => Err(RequestError::Full),
        }
    }

    /// Submits, waiting (per the partition's wait strategy) while the ring
    /// is full; the workers always drain it, so this ends.
    pub fn submit(&mut self) -> Result<(), RequestError> {
        loop {
            match self.try_submit() {
                Err(RequestError::Full) => std::thread::yield_now(),
                other => return other,
            }
        }
    }

    /// Where the request stands, without waiting.
    pub fn poll(&self) -> Status {
        match self.state() {
            QUEUED => Status::Pending,
            DONE_OK => Status::Done,
            DONE_ERR => Status::Failed(self.shared.slots.meta(self.index).failure()),
            _ => Status::Idle,
        }
    }

    /// Waits until the request finishes or `timeout` passes; spins, yields
    /// or sleeps on a futex per the partition's wait strategy.
    pub fn wait(&mut self, timeout: Duration) -> Result<(), RequestError> {
        let deadline = now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64);
        let strategy = self.shared.wait;
        let meta = self.shared.slots.meta(self.index);
        let mut spinner = Spinner::with_deadline(strategy, deadline);
        loop {
            let word = meta.state.load(Ordering::Acquire);
            match word & !WAITER {
                DONE_OK => return Ok(()),
                DONE_ERR => return Err(RequestError::Failed(meta.failure())),
                QUEUED => {}
                _ => return Err(RequestError::NotSubmitted),
            }
            if spinner.spin() {
                continue;
            }
            let now = now_ns();
            if now >= deadline {
                return Err(RequestError::TimedOut);
            }
            match strategy {
                WaitStrategy::Spin => spinner = Spinner::with_deadline(strategy, deadline),
                WaitStrategy::SpinYield { .. } => std::thread::yield_now(),
                WaitStrategy::SpinPark { .. } => {
                    // Tell the worker to wake us, then sleep while the word
                    // still says "queued, waiter present".
                    let flagged = word | WAITER;
                    if word != flagged
                        && meta
                            .state
                            .compare_exchange(word, flagged, Ordering::AcqRel, Ordering::Acquire)
                            .is_err()
                    {
                        continue;
                    }
                    futex_wait(
                        &meta.state,
                        flagged,
                        Some(Duration::from_nanos(deadline - now)),
                    );
                }
            }
        }
    }

    /// The result, once the request finished successfully.
    pub fn output(&self) -> Result<&[f32], RequestError> {
        match self.state() {
            // SAFETY: DONE_OK: the worker is finished with the slot (its
            // swap to DONE_OK was acquired by `state()`), and `&self` rules
            // out a concurrent `input_mut`/`submit` on this handle.
            DONE_OK => Ok(unsafe { self.shared.slots.output(self.index) }),
            DONE_ERR => Err(RequestError::Failed(
                self.shared.slots.meta(self.index).failure(),
            )),
            QUEUED => Err(RequestError::InFlight),
            _ => Err(RequestError::NotSubmitted),
        }
    }

    /// Gives the slot back. A request still in flight is completed by its
    /// worker, which then frees the slot; nothing is lost either way.
    pub fn release(self) {}
}

impl Drop for Request {
    fn drop(&mut self) {
        let meta = self.shared.slots.meta(self.index);
        let mut word = meta.state.load(Ordering::Acquire);
        loop {
            if word & !WAITER != QUEUED {
                break;
            }
            match meta
                .state
                .compare_exchange(word, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            {
                // The worker will free it when it completes.
                Ok(_) => return,
                Err(now) => word = now,
            }
        }
        meta.state.store(FREE, Ordering::Release);
        self.shared.give_back(self.index);
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("partition", &self.shared.name)
            .field("slot", &self.index)
            .field("status", &self.poll())
            .finish()
    }
}
