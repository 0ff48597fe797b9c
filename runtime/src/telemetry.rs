//! Telemetry kept from the start and read while the workers run.
//!
//! Histograms are per worker, sized once with fixed bounds (so `record`
//! never allocates), behind a mutex that only its worker takes on the hot
//! path: a reader takes it for the time of a copy, never stopping the
//! other workers. Counters are atomics written by their worker alone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use hdrhistogram::Histogram;
use pinned_allocator::IdList;

use crate::clock::thread_cpu_ns;
use crate::perf::{thread_context_switches, MigrationCounter};

/// Highest latency a histogram tells apart: 60 s in nanoseconds (longer
/// values are clamped to it, not dropped).
pub const MAX_TRACKED_NS: u64 = 60_000_000_000;
/// Three significant figures: 0.1% resolution at every magnitude.
const SIGFIGS: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIGS)
        .expect("1 < 60 s and 3 significant figures are valid bounds")
}

/// The three latencies of a request, in nanoseconds.
#[derive(Clone, Debug)]
pub struct Latencies {
    /// Submit until a worker took it.
    pub queue_wait: Histogram<u64>,
    /// Worker took it until its result was published.
    pub service: Histogram<u64>,
    /// Submit until the result was published.
    pub total: Histogram<u64>,
}

impl Latencies {
    pub fn new() -> Self {
        Self {
            queue_wait: new_histogram(),
            service: new_histogram(),
            total: new_histogram(),
        }
    }

    #[inline]
    fn record(&mut self, submit_ns: u64, start_ns: u64, end_ns: u64) {
        self.queue_wait
            .saturating_record(start_ns.saturating_sub(submit_ns).max(1));
        self.service
            .saturating_record(end_ns.saturating_sub(start_ns).max(1));
        self.total
            .saturating_record(end_ns.saturating_sub(submit_ns).max(1));
    }

    fn add(&mut self, other: &Latencies) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.queue_wait.add(&other.queue_wait);
        let _ = self.service.add(&other.service);
        let _ = self.total.add(&other.total);
    }

    fn reset(&mut self) {
        self.queue_wait.reset();
        self.service.reset();
        self.total.reset();
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

const UNKNOWN: u64 = u64::MAX;

/// Adds to a counter that only the calling thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, by: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

/// A worker's shared record: written by the worker, read by anyone.
#[derive(Debug)]
pub(crate) struct WorkerRecord {
    pub(crate) latencies: Mutex<Latencies>,
    requests: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
    idle_spin_ns: AtomicU64,
    parks: AtomicU64,
    cpu_ns: AtomicU64,
    voluntary_switches: AtomicU64,
    involuntary_switches: AtomicU64,
    migrations: AtomicU64,
    last_cpu: AtomicU64,
    tid: AtomicU64,
}

impl WorkerRecord {
    pub(crate) fn new() -> Self {
        Self {
            latencies: Mutex::new(Latencies::new()),
            requests: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            idle_spin_ns: AtomicU64::new(0),
            parks: AtomicU64::new(0),
            cpu_ns: AtomicU64::new(UNKNOWN),
            voluntary_switches: AtomicU64::new(UNKNOWN),
            involuntary_switches: AtomicU64::new(UNKNOWN),
            migrations: AtomicU64::new(UNKNOWN),
            last_cpu: AtomicU64::new(UNKNOWN),
            tid: AtomicU64::new(UNKNOWN),
        }
    }

    /// One batch of `requests` served, `failed` of them failed. Counters
    /// have one writer (their worker), so a load and a store do, without a
    /// locked read-modify-write on the hot path.
    #[inline]
    pub(crate) fn served(&self, requests: u64, failed: u64) {
        bump(&self.requests, requests);
        bump(&self.batches, 1);
        if failed != 0 {
            bump(&self.failures, failed);
        }
    }

    #[inline]
    pub(crate) fn idle(&self, spin_ns: u64, parked: bool) {
        bump(&self.idle_spin_ns, spin_ns);
        if parked {
            bump(&self.parks, 1);
        }
    }

    pub(crate) fn set_tid(&self, tid: i32) {
        self.tid.store(tid as u64, Ordering::Relaxed);
    }

    pub(crate) fn set_last_cpu(&self, cpu: Option<usize>) {
        self.last_cpu
            .store(cpu.map_or(UNKNOWN, |c| c as u64), Ordering::Relaxed);
    }

    /// Re-reads the calling (worker) thread's OS counters. Only the worker
    /// itself can: `RUSAGE_THREAD` and the thread CPU clock are per caller.
    pub(crate) fn refresh_os_counters(&self, migrations: Option<&MigrationCounter>) {
        let store =
            |a: &AtomicU64, v: Option<u64>| a.store(v.unwrap_or(UNKNOWN), Ordering::Relaxed);
        store(&self.cpu_ns, thread_cpu_ns());
        let cs = thread_context_switches();
        store(&self.voluntary_switches, cs.map(|c| c.voluntary));
        store(&self.involuntary_switches, cs.map(|c| c.involuntary));
        store(
            &self.migrations,
            migrations.and_then(MigrationCounter::read),
        );
        self.set_last_cpu(crate::affinity::current_cpu());
    }

    /// Records one request's timestamps (the worker holds the lock).
    #[inline]
    pub(crate) fn record(latencies: &mut Latencies, submit_ns: u64, start_ns: u64, end_ns: u64) {
        latencies.record(submit_ns, start_ns, end_ns);
    }

    pub(crate) fn snapshot(&self, index: usize, cpus: &IdList, pinned: bool) -> WorkerTelemetry {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let opt = |a: &AtomicU64| Some(get(a)).filter(|&v| v != UNKNOWN);
        WorkerTelemetry {
            index,
            cpus: cpus.clone(),
            pinned,
            requests: get(&self.requests),
            batches: get(&self.batches),
            failures: get(&self.failures),
            idle_spin_ns: get(&self.idle_spin_ns),
            parks: get(&self.parks),
            cpu_ns: opt(&self.cpu_ns),
            voluntary_switches: opt(&self.voluntary_switches),
            involuntary_switches: opt(&self.involuntary_switches),
            migrations: opt(&self.migrations),
            last_cpu: opt(&self.last_cpu).map(|c| c as usize),
            tid: opt(&self.tid).map(|t| t as i32),
        }
    }
}

/// One worker's counters at the time of a snapshot. OS counters are as of
/// the worker's last refresh (at most about a millisecond old while it
/// runs, exact after shutdown); `None` means unavailable, never zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerTelemetry {
    pub index: usize,
    /// The CPUs it was pinned to (the partition's set when `pinned`).
    pub cpus: IdList,
    pub pinned: bool,
    pub requests: u64,
    pub batches: u64,
    /// Requests whose model run failed (error status returned).
    pub failures: u64,
    /// Wall time spent spinning while idle: the CPU the wait strategy burns.
    pub idle_spin_ns: u64,
    /// Times it went to sleep on the futex.
    pub parks: u64,
    /// `CLOCK_THREAD_CPUTIME_ID`.
    pub cpu_ns: Option<u64>,
    /// `getrusage(RUSAGE_THREAD)`.
    pub voluntary_switches: Option<u64>,
    pub involuntary_switches: Option<u64>,
    /// `perf_event_open` software counter; `None` where the kernel refuses it.
    pub migrations: Option<u64>,
    pub last_cpu: Option<usize>,
    /// Kernel thread id (for `sched_getaffinity`, `/proc/self/task/<tid>`).
    pub tid: Option<i32>,
}

/// A partition's telemetry: latencies merged over its workers.
#[derive(Clone, Debug)]
pub struct PartitionTelemetry {
    pub name: String,
    pub latencies: Latencies,
    pub workers: Vec<WorkerTelemetry>,
}

impl PartitionTelemetry {
    pub(crate) fn collect<'a>(
        name: &str,
        workers: impl Iterator<Item = (&'a WorkerRecord, &'a IdList, bool)>,
    ) -> Self {
        let mut latencies = Latencies::new();
        let mut out = Vec::new();
        for (index, (record, cpus, pinned)) in workers.enumerate() {
            {
                let guard = record.latencies.lock().unwrap_or_else(|p| p.into_inner());
                latencies.add(&guard);
            }
            out.push(record.snapshot(index, cpus, pinned));
        }
        Self {
            name: name.to_owned(),
            latencies,
            workers: out,
        }
    }

    pub fn requests(&self) -> u64 {
        self.workers.iter().map(|w| w.requests).sum()
    }
}

/// Clears every worker's histograms (between harness phases).
pub(crate) fn reset_latencies<'a>(records: impl Iterator<Item = &'a WorkerRecord>) {
    for record in records {
        record
            .latencies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reset();
    }
}

/// p50 / p99 / p99.9 / max of a histogram, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

impl Summary {
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn records_clamp_and_merge() {
        let a = WorkerRecord::new();
        let b = WorkerRecord::new();
        WorkerRecord::record(&mut a.latencies.lock().unwrap(), 100, 300, 1_300);
        WorkerRecord::record(&mut b.latencies.lock().unwrap(), 0, 0, u64::MAX);
        a.served(1, 0);
        b.served(2, 1);
        let cpus = IdList::parse("0").unwrap();
        let t =
            PartitionTelemetry::collect("p", [(&a, &cpus, true), (&b, &cpus, false)].into_iter());
        assert_eq!(t.requests(), 3);
        assert_eq!(t.workers[1].failures, 1);
        assert_eq!(t.latencies.total.len(), 2);
        let q = Summary::of(&t.latencies.queue_wait);
        assert_eq!(q.count, 2);
        assert!(t.latencies.total.max() >= MAX_TRACKED_NS - MAX_TRACKED_NS / 1000);
        assert!((199..=201).contains(&t.latencies.queue_wait.max()));
        // Before a refresh the OS counters are unknown, not zero.
        assert_eq!(t.workers[0].cpu_ns, None);
        assert_eq!(t.workers[0].migrations, None);
        a.refresh_os_counters(None);
        assert!(a.snapshot(0, &cpus, true).cpu_ns.is_some());
        assert_eq!(a.snapshot(0, &cpus, true).migrations, None);
        reset_latencies([&a, &b].into_iter());
        assert_eq!(a.latencies.lock().unwrap().total.len(), 0);
    }
}
