//! A partition: a core set, a memory placement, one model, a request ring
//! and the workers that serve it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinned_allocator::{IdList, MemPolicy};

use crate::clock::now_ns;
use crate::model::Model;
use crate::request::{Request, RequestError};
use crate::ring::Ring;
use crate::slots::SlotTable;
use crate::sync::CachePadded;
use crate::telemetry::{reset_latencies, PartitionTelemetry, WorkerRecord};
use crate::wait::{Doorbell, Spinner, WaitStrategy};

/// Where a partition's memory lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Leave it to the OS (default policy; what `--no-pin` runs use).
    Os,
    /// Bound to the node(s) of the partition's CPUs.
    Local,
    /// Bound to these nodes.
    Bind(IdList),
    /// This node first, others when it is full.
    Preferred(usize),
    /// Page-interleaved over these nodes.
    Interleave(IdList),
    /// One copy per node of the partition's CPUs: request slots are
    /// interleaved over those nodes, each worker's scratch is on its own.
    Replicate,
}

impl Placement {
    /// `os`, `local`, `bind:0-1`, `preferred:1`, `interleave:0,1`, `replicate`.
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, arg) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
        let list = || IdList::parse(arg).ok().filter(|l| !l.is_empty());
        match (kind, arg.is_empty()) {
            ("os", true) => Some(Self::Os),
            ("local", true) => Some(Self::Local),
            ("replicate", true) => Some(Self::Replicate),
            ("bind", false) => list().map(Self::Bind),
            ("interleave", false) => list().map(Self::Interleave),
            ("preferred", false) => arg.trim().parse().ok().map(Self::Preferred),
            _ => None,
        }
    }
}

/// Batching: a worker takes up to `max_batch` waiting requests and runs
/// them as one model call (M = batch), waiting at most `max_wait_us` for
/// the batch to fill. `max_batch = 1` is plain single-request serving.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_batch: usize,
    pub max_wait_us: u32,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        Self {
            max_batch: 1,
            max_wait_us: 0,
        }
    }
}

/// What `Runtime::add_partition` needs.
#[derive(Clone, Debug)]
pub struct PartitionConfig {
    pub name: String,
    /// A CPU set in any form `CpuContext::parse` takes (`0-3`, `all`,
    /// `+0-1`, `node:0`, `node0:0-1`).
    pub cpus: String,
    pub placement: Placement,
    pub wait: WaitStrategy,
    pub batch: BatchPolicy,
    /// Pin worker `i` to CPU `i mod len(cpus)` with `sched_setaffinity`;
    /// false leaves the workers (and memory) to the OS scheduler.
    pub pin: bool,
    /// Workers; 0 means one per CPU of the set.
    pub workers: usize,
    /// Request slots (buffers allocated at load); 0 means 64.
    pub slots: usize,
    /// Submission ring capacity (a power of two); 0 means room for every
    /// slot. Smaller than `slots` makes `try_submit` report `Full`.
    pub ring_capacity: usize,
}

impl PartitionConfig {
    /// One worker per CPU of `cpus`, pinned, memory local, spin then park
    /// after 50 us, no batching.
    pub fn new(name: impl Into<String>, cpus: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            cpus: cpus.into(),
            placement: Placement::Local,
            wait: WaitStrategy::SpinPark { spin_us: 50 },
            batch: BatchPolicy::default(),
            pin: true,
            workers: 0,
            slots: 0,
            ring_capacity: 0,
        }
    }
}

pub(crate) const DEFAULT_SLOTS: usize = 64;

/// `submitters` high bit: the partition stopped accepting.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// State shared by a partition's handles, requests and workers.
pub(crate) struct Shared {
    pub(crate) name: String,
    pub(crate) cpus: IdList,
    pub(crate) nodes: IdList,
    pub(crate) wait: WaitStrategy,
    pub(crate) batch: BatchPolicy,
    pub(crate) pin: bool,
    pub(crate) slot_policy: MemPolicy,
    pub(crate) slots: SlotTable,
    pub(crate) submissions: Ring,
    /// Indices of FREE slots; capacity >= slot count, so a push never fails.
    pub(crate) free: Ring,
    /// Idle workers sleep here (SpinPark).
    pub(crate) work_bell: Doorbell,
    /// Hosts waiting for a free slot sleep here (SpinPark).
    pub(crate) free_bell: Doorbell,
    /// Hosts inside `try_submit`, plus `CLOSED` once shutdown began.
    submitters: CachePadded<AtomicUsize>,
    pub(crate) stop: CachePadded<AtomicBool>,
    pub(crate) model: Arc<dyn Model>,
    pub(crate) records: Box<[WorkerRecord]>,
    /// CPUs each worker is pinned to (the whole set when not pinned).
    pub(crate) worker_cpus: Vec<IdList>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: &PartitionConfig,
        cpus: IdList,
        nodes: IdList,
        slot_policy: MemPolicy,
        model: Arc<dyn Model>,
        workers: usize,
    ) -> Result<Self, crate::memory::MemoryError> {
        let count = if config.slots == 0 {
            DEFAULT_SLOTS
        } else {
            config.slots
        };
        let ring_capacity = if config.ring_capacity == 0 {
            count
        } else {
            config.ring_capacity
        };
        let slots = SlotTable::new(count, model.input_len(), model.output_len(), &slot_policy)?;
        let free = Ring::with_capacity(count);
        for i in 0..count as u32 {
            free.try_push(i)
                .expect("the free ring holds every slot by construction");
        }
        let worker_cpus = (0..workers)
            .map(|i| {
                if config.pin {
                    IdList::from_ids(vec![cpus.as_slice()[i % cpus.len()]])
                } else {
                    cpus.clone()
                }
            })
            .collect();
        Ok(Self {
            name: config.name.clone(),
            cpus,
            nodes,
            wait: config.wait,
            batch: config.batch,
            pin: config.pin,
            slot_policy,
            slots,
            submissions: Ring::with_capacity(ring_capacity),
            free,
            work_bell: Doorbell::new(),
            free_bell: Doorbell::new(),
            submitters: CachePadded(AtomicUsize::new(0)),
            stop: CachePadded(AtomicBool::new(false)),
            model,
            records: (0..workers).map(|_| WorkerRecord::new()).collect(),
            worker_cpus,
        })
    }

    /// Registers a submitter; false once the partition is closed.
    #[inline]
    pub(crate) fn enter_submit(&self) -> bool {
        let before = self.submitters.fetch_add(1, Ordering::AcqRel);
        if before & CLOSED != 0 {
            self.submitters.fetch_sub(1, Ordering::Release);
            return false;
        }
        true
    }

    #[inline]
    pub(crate) fn leave_submit(&self) {
        self.submitters.fetch_sub(1, Ordering::Release);
    }

    /// After a push: only a parking strategy can have sleeping workers.
    #[inline]
    pub(crate) fn wake_worker(&self) {
        if matches!(self.wait, WaitStrategy::SpinPark { .. }) {
            self.work_bell.ring_one();
        }
    }

    /// Returns a FREE slot to the free ring and wakes a host waiting for one.
    #[inline]
    pub(crate) fn give_back(&self, index: u32) {
        let pushed = self.free.try_push(index);
        debug_assert!(pushed.is_ok(), "free ring holds every slot");
        if matches!(self.wait, WaitStrategy::SpinPark { .. }) {
            self.free_bell.ring_one();
        }
    }

    /// Stops accepting, waits for submitters already inside `try_submit`,
    /// then tells the workers to drain the ring and stop.
    pub(crate) fn close(&self) {
        self.submitters.fetch_or(CLOSED, Ordering::AcqRel);
        while self.submitters.load(Ordering::Acquire) != CLOSED {
            std::thread::yield_now();
        }
        self.stop.store(true, Ordering::Release);
        self.work_bell.ring_all();
        self.free_bell.ring_all();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.submitters.load(Ordering::Relaxed) & CLOSED != 0
    }
}

/// A handle to a running partition; clone it freely (one `Arc`).
#[derive(Clone)]
pub struct Partition {
    pub(crate) shared: Arc<Shared>,
}

impl Partition {
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The partition's CPUs.
    pub fn cpus(&self) -> &IdList {
        &self.shared.cpus
    }

    /// The NUMA nodes of its CPUs.
    pub fn nodes(&self) -> &IdList {
        &self.shared.nodes
    }

    /// The memory policy its request slots were placed with.
    pub fn slot_policy(&self) -> MemPolicy {
        self.shared.slot_policy
    }

    pub fn model(&self) -> &dyn Model {
        &*self.shared.model
    }

    pub fn input_len(&self) -> usize {
        self.shared.slots.input_len()
    }

    pub fn output_len(&self) -> usize {
        self.shared.slots.output_len()
    }

    pub fn slots(&self) -> usize {
        self.shared.slots.len()
    }

    pub fn ring_capacity(&self) -> usize {
        self.shared.submissions.capacity()
    }

    pub fn wait_strategy(&self) -> WaitStrategy {
        self.shared.wait
    }

    pub fn batch(&self) -> BatchPolicy {
        self.shared.batch
    }

    pub fn pinned(&self) -> bool {
        self.shared.pin
    }

    pub fn workers(&self) -> usize {
        self.shared.records.len()
    }

    /// Takes a free slot at once, or `NoFreeSlot`.
    #[inline]
    pub fn try_acquire(&self) -> Result<Request, RequestError> {
        if self.shared.is_closed() {
            return Err(RequestError::ShuttingDown);
        }
        match self.shared.free.try_pop() {
            Some(index) => Ok(Request::new(self.shared.clone(), index)),
            None => Err(RequestError::NoFreeSlot),
        }
    }

    /// Takes a free slot, waiting up to `timeout` for one (`NoFreeSlot`
    /// after that).
    pub fn acquire(&self, timeout: Duration) -> Result<Request, RequestError> {
        let deadline = now_ns().saturating_add(timeout.as_nanos().min(u64::MAX as u128) as u64);
        let mut spinner = Spinner::with_deadline(self.shared.wait, deadline);
        loop {
            match self.try_acquire() {
                Err(RequestError::NoFreeSlot) => {}
                other => return other,
            }
            if spinner.spin() {
                continue;
            }
            let now = now_ns();
            if now >= deadline {
                return Err(RequestError::NoFreeSlot);
            }
            match self.shared.wait {
                WaitStrategy::SpinPark { .. } => {
                    let free = &self.shared.free;
                    let shared = &self.shared;
                    shared.free_bell.sleep_unless(
                        || free.has_ready() || shared.is_closed(),
                        Some(Duration::from_nanos(deadline - now)),
                    );
                }
                _ => std::thread::yield_now(),
            }
        }
    }

    /// Latency histograms and per-worker counters, read while it runs.
    pub fn telemetry_snapshot(&self) -> PartitionTelemetry {
        let s = &self.shared;
        PartitionTelemetry::collect(
            &s.name,
            s.records
                .iter()
                .zip(&s.worker_cpus)
                .map(|(r, c)| (r, c, s.pin)),
        )
    }

    /// Clears the latency histograms (counters keep counting).
    pub fn reset_latencies(&self) {
        reset_latencies(self.shared.records.iter());
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("name", &self.shared.name)
            .field("cpus", &self.shared.cpus.to_string())
            .field("workers", &self.workers())
            .field("model", &self.shared.model.name())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn placement_forms() {
        assert_eq!(Placement::parse("os"), Some(Placement::Os));
        assert_eq!(Placement::parse("local"), Some(Placement::Local));
        assert_eq!(Placement::parse("replicate"), Some(Placement::Replicate));
        assert_eq!(
            Placement::parse("bind:0-1"),
            Some(Placement::Bind(IdList::parse("0-1").unwrap()))
        );
        assert_eq!(
            Placement::parse("preferred:1"),
            Some(Placement::Preferred(1))
        );
        assert_eq!(Placement::parse("bind:"), None);
        assert_eq!(Placement::parse("local:3"), None);
        assert_eq!(Placement::parse("everywhere"), None);
    }
}
