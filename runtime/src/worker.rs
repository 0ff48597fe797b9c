//! A worker: pins itself, then allocates its scratch on its node, then
//! serves batches from the partition's ring until told to stop and the ring
//! is empty.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Duration;

use pinned_allocator::MemPolicy;

use crate::affinity::{pin_current_thread, AffinityError};
use crate::clock::now_ns;
use crate::memory::{MemoryError, NodeBuffer};
use crate::model::Scratch;
use crate::partition::Shared;
use crate::perf::MigrationCounter;
use crate::slots::{Failure, ABANDONED, FREE, WAITER};
use crate::telemetry::WorkerRecord;
use crate::wait::{futex_wake, Spinner, WaitStrategy};

/// OS counters (CPU time, rusage, migrations, CPU) are re-read at most this
/// often: about 2 us of syscalls per refresh, 0.2% of a busy core.
const REFRESH_NS: u64 = 1_000_000;
/// A parked worker re-checks at least this often, so a lost wake-up (which
/// the doorbell protocol rules out) could never hang a shutdown.
const PARK_TIMEOUT: Duration = Duration::from_millis(100);

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("the worker thread ended before reporting (it panicked while starting)")]
    Vanished,
}

pub(crate) struct Worker {
    shared: Arc<Shared>,
    index: usize,
    scratch: Scratch,
    /// Contiguous batch inputs/outputs (B > 1 only; slots are not adjacent).
    batch_in: NodeBuffer<f32>,
    batch_out: NodeBuffer<f32>,
    taken: Box<[u32]>,
    submits: Box<[u64]>,
    migrations: Option<MigrationCounter>,
    last_refresh_ns: u64,
}

/// Thread body: pin, allocate, report readiness, serve.
pub(crate) fn run(shared: Arc<Shared>, index: usize, ready: SyncSender<Result<(), WorkerError>>) {
    let mut worker = match Worker::start(shared, index) {
        Ok(w) => w,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);
    worker.serve();
}

impl Worker {
    fn start(shared: Arc<Shared>, index: usize) -> Result<Self, WorkerError> {
        // Pin first, so every page below is first touched on our node.
        if shared.pin {
            pin_current_thread(&shared.worker_cpus[index])?;
        }
        let migrations = MigrationCounter::open();
        let policy = scratch_policy(&shared.slot_policy, shared.pin);
        let b = shared.batch.max_batch.max(1);
        let scratch = Scratch::new(
            shared.model.scratch_size(b),
            shared.model.arena_bytes(b),
            &policy,
        )?;
        let batched = |len: usize| if b > 1 { b * len } else { 0 };
        let batch_in = NodeBuffer::new(batched(shared.slots.input_len()), &policy, "batch inputs")?;
        let batch_out =
            NodeBuffer::new(batched(shared.slots.output_len()), &policy, "batch outputs")?;
        let worker = Self {
            taken: vec![0; b].into_boxed_slice(),
            submits: vec![0; b].into_boxed_slice(),
            shared,
            index,
            scratch,
            batch_in,
            batch_out,
            migrations,
            last_refresh_ns: now_ns(),
        };
        worker.record().set_tid(crate::affinity::current_tid());
        worker
            .record()
            .refresh_os_counters(worker.migrations.as_ref());
        Ok(worker)
    }

    fn record(&self) -> &WorkerRecord {
        &self.shared.records[self.index]
    }

    fn serve(&mut self) {
        while let Some(first) = self.next_request() {
            let n = self.gather(first);
            self.run_batch(n);
        }
        self.record().refresh_os_counters(self.migrations.as_ref());
    }

    /// Waits (per the wait strategy) for a request; `None` once stopped and
    /// drained.
    #[inline]
    fn next_request(&mut self) -> Option<u32> {
        if let Some(i) = self.shared.submissions.try_pop() {
            return Some(i);
        }
        let strategy = self.shared.wait;
        let mut spinner = Spinner::new(strategy);
        let mut spins = 0u32;
        loop {
            if let Some(i) = self.shared.submissions.try_pop() {
                self.record().idle(spinner.elapsed_ns(), false);
                return Some(i);
            }
            if self.shared.stop.load(Ordering::Acquire) {
                // Every push happened before `stop` (see `Shared::close`);
                // one more look, then we are drained.
                let last = self.shared.submissions.try_pop();
                if last.is_none() {
                    self.record().idle(spinner.elapsed_ns(), false);
                }
                return last;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(4096) {
                self.maybe_refresh(now_ns());
            }
            if spinner.spin() {
                continue;
            }
            self.record().idle(spinner.elapsed_ns(), false);
            match strategy {
                WaitStrategy::Spin => {}
                WaitStrategy::SpinYield { .. } => std::thread::yield_now(),
                WaitStrategy::SpinPark { .. } => {
                    let shared = &*self.shared;
                    let slept = shared.work_bell.sleep_unless(
                        || shared.submissions.has_ready() || shared.stop.load(Ordering::Acquire),
                        Some(PARK_TIMEOUT),
                    );
                    if slept {
                        self.record().idle(0, true);
                    }
                }
            }
            spinner = Spinner::new(strategy);
        }
    }

    /// Takes up to `max_batch - 1` more requests, waiting at most
    /// `max_wait_us` for them; returns the batch size.
    #[inline]
    fn gather(&mut self, first: u32) -> usize {
        self.taken[0] = first;
        let max = self.taken.len();
        if max == 1 {
            return 1;
        }
        let wait_ns = u64::from(self.shared.batch.max_wait_us) * 1000;
        let deadline = now_ns().saturating_add(wait_ns);
        let mut n = 1;
        while n < max {
            if let Some(i) = self.shared.submissions.try_pop() {
                self.taken[n] = i;
                n += 1;
            } else if wait_ns == 0 || now_ns() >= deadline {
                break;
            } else {
                std::hint::spin_loop();
            }
        }
        n
    }

    fn run_batch(&mut self, n: usize) {
        let shared = &*self.shared;
        let slots = &shared.slots;
        let (il, ol) = (slots.input_len(), slots.output_len());
        let start_ns = now_ns();
        let scratch = &mut self.scratch;
        let outcome = if n == 1 {
            let index = self.taken[0];
            // SAFETY: we popped `index` from the submission ring, so the slot
            // is QUEUED (or ABANDONED) and its buffers are ours alone until
            // `complete` below.
            let (input, output) = unsafe { (slots.input(index), slots.output_mut(index)) };
            catch_unwind(AssertUnwindSafe(|| {
                shared.model.run(1, input, output, scratch)
            }))
        } else {
            let inputs = &mut self.batch_in.as_mut_slice()[..n * il];
            for (k, &index) in self.taken[..n].iter().enumerate() {
                // SAFETY: popped from the ring: ours until `complete`.
                inputs[k * il..(k + 1) * il].copy_from_slice(unsafe { slots.input(index) });
            }
            let outputs = &mut self.batch_out.as_mut_slice()[..n * ol];
            let result = catch_unwind(AssertUnwindSafe(|| {
                shared.model.run(n, inputs, outputs, scratch)
            }));
            if matches!(result, Ok(Ok(()))) {
                for (k, &index) in self.taken[..n].iter().enumerate() {
                    // SAFETY: popped from the ring: ours until `complete`.
                    unsafe { slots.output_mut(index) }
                        .copy_from_slice(&outputs[k * ol..(k + 1) * ol]);
                }
            }
            result
        };
        // One frame per batch: the model's arena allocations end here.
        scratch.end_frame();
        let failure = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(_)) => Some(Failure::ModelError),
            Err(_) => Some(Failure::ModelPanic),
        };
        let end_ns = now_ns();
        // Counted before publishing: a host that saw its result complete
        // then finds it counted (the histogram below may trail by one batch).
        let record = &shared.records[self.index];
        record.served(n as u64, if failure.is_some() { n as u64 } else { 0 });
        for (k, &index) in self.taken[..n].iter().enumerate() {
            let meta = slots.meta(index);
            // Read before `complete`: after it the host may resubmit.
            self.submits[k] = meta.submit_ns();
            let before = meta.complete(failure);
            if before & WAITER != 0 {
                futex_wake(&meta.state, i32::MAX);
            }
            if before & !WAITER == ABANDONED {
                meta.state.store(FREE, Ordering::Release);
                shared.give_back(index);
            }
        }
        // Recorded after publishing, to keep the lock off the latency.
        {
            let mut latencies = record.latencies.lock().unwrap_or_else(|p| p.into_inner());
            for &submit_ns in &self.submits[..n] {
                WorkerRecord::record(&mut latencies, submit_ns, start_ns, end_ns);
            }
        }
        self.maybe_refresh(end_ns);
    }

    #[inline]
    fn maybe_refresh(&mut self, now: u64) {
        if now.saturating_sub(self.last_refresh_ns) >= REFRESH_NS {
            self.last_refresh_ns = now;
            self.shared.records[self.index].refresh_os_counters(self.migrations.as_ref());
        }
    }
}

/// A pinned worker's scratch follows the partition's explicit policy, or
/// is local to its CPU (first touch after pinning); unpinned, the OS picks.
fn scratch_policy(slot_policy: &MemPolicy, pinned: bool) -> MemPolicy {
    match (pinned, slot_policy) {
        (false, _) => MemPolicy::Default,
        (true, MemPolicy::Bind(_) | MemPolicy::Preferred(_)) => *slot_policy,
        (true, _) => MemPolicy::Local,
    }
}
