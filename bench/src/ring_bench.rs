//! `pinned bench ring [--quick] [--json] [--cpus A,B]`: the request ring's
//! round trip and throughput beside its peers, measured in one run with the
//! host on CPU A and the worker on CPU B:
//!
//! - `ping-pong`: two threads bouncing a counter through two cache lines
//!   (one for the request, one for the response): the floor any
//!   request/response ring pays on this pair of cores;
//! - `ring` / `array-queue`: the same requests (slot indices, completion
//!   flag per slot) carried by our [`Ring`] and by `crossbeam-queue`'s
//!   `ArrayQueue` in the identical harness;
//! - `runtime-spin` / `runtime-futex`: the full runtime path (acquire once,
//!   `try_submit`, `wait`) on an empty request, workers and hosts spinning,
//!   or parking on a futex at once (`SpinPark { spin_us: 0 }`);
//! - `futex-wake`: from `FUTEX_WAKE` to the sleeper running again.
//!
//! Variants are interleaved round by round so background load hits all of
//! them alike; latencies merge every round's samples, throughput takes each
//! variant's best round (the least-disturbed one on a shared machine);
//! results are ratios to peers of the same run.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use hdrhistogram::Histogram;
use pinned_allocator::IdList;
use pinned_runtime::clock::now_ns;
use pinned_runtime::wait::{futex_wait, futex_wake};
use pinned_runtime::{
    current_affinity, pin_current_thread, Affine, CachePadded, Partition, PartitionConfig,
    Placement, Request, Ring, Runtime, RuntimeConfig, Summary, WaitStrategy, WorkerTelemetry,
};

#[derive(Debug, thiserror::Error)]
pub enum RingBenchError {
    #[error("cpus: {0}")]
    Cpus(String),
    #[error(transparent)]
    Runtime(#[from] pinned_runtime::RuntimeError),
    #[error(transparent)]
    Request(#[from] pinned_runtime::RequestError),
    #[error(transparent)]
    Affinity(#[from] pinned_runtime::AffinityError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("a benchmark thread panicked")]
    Panicked,
}

#[derive(Clone, Debug, Default)]
pub struct RingBenchOptions {
    /// Fewer iterations (a few seconds in all).
    pub quick: bool,
    /// One JSON object instead of the table.
    pub json: bool,
    /// `A,B`: host CPU and worker CPU; default the first two allowed.
    pub cpus: Option<String>,
}

/// Round-trip figures of one variant, in nanoseconds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RoundTrip {
    pub name: &'static str,
    pub samples: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    /// p50 over the ping-pong floor's p50.
    pub p50_vs_floor: f64,
}

/// Closed-loop throughput of one variant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Throughput {
    pub name: &'static str,
    pub requests: u64,
    pub per_second: f64,
    /// Over `array-queue`'s figure.
    pub vs_array_queue: f64,
}

/// CPU the worker burned in one runtime variant.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WorkerBurn {
    pub name: &'static str,
    pub cpu_ms: Option<f64>,
    pub idle_spin_ms: f64,
    pub parks: u64,
    pub voluntary_switches: Option<u64>,
    pub migrations: Option<u64>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct RingReport {
    pub host_cpu: usize,
    pub worker_cpu: usize,
    pub round_trips: Vec<RoundTrip>,
    pub throughput: Vec<Throughput>,
    /// `FUTEX_WAKE` to the sleeper running: p50/p99/p99.9.
    pub futex_wake: RoundTrip,
    /// Time the waker spends inside `FUTEX_WAKE` (p50).
    pub futex_wake_syscall_p50_ns: u64,
    pub worker_burn: Vec<WorkerBurn>,
}

/// A queue carrying slot indices, so both rings run the same harness.
pub trait SlotQueue: Send + Sync {
    fn push(&self, slot: u32) -> bool;
    fn pop(&self) -> Option<u32>;
}

impl SlotQueue for Ring {
    #[inline]
    fn push(&self, slot: u32) -> bool {
        self.try_push(slot).is_ok()
    }
    #[inline]
    fn pop(&self) -> Option<u32> {
        self.try_pop()
    }
}

impl SlotQueue for ArrayQueue<u32> {
    #[inline]
    fn push(&self, slot: u32) -> bool {
        ArrayQueue::push(self, slot).is_ok()
    }
    #[inline]
    fn pop(&self) -> Option<u32> {
        ArrayQueue::pop(self)
    }
}

/// Unrecorded round trips first: both threads running, lines warm.
fn warm_up(iters: u64) -> u64 {
    (iters / 10).clamp(10, 1000)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("valid bounds")
}

/// Runs `body` on a thread pinned to `cpu`.
fn on_cpu<T: Send + 'static>(
    cpu: usize,
    body: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<Result<T, pinned_runtime::AffinityError>> {
    std::thread::spawn(move || {
        pin_current_thread(&IdList::from_ids(vec![cpu]))?;
        Ok(body())
    })
}

fn join<T>(
    h: std::thread::JoinHandle<Result<T, pinned_runtime::AffinityError>>,
) -> Result<T, RingBenchError> {
    Ok(h.join().map_err(|_| RingBenchError::Panicked)??)
}

/// The floor: a counter bounced between two cores through two cache lines.
pub fn ping_pong(host: usize, worker: usize, iters: u64) -> Result<Histogram<u64>, RingBenchError> {
    let lines = Arc::new((
        CachePadded(AtomicU64::new(0)),
        CachePadded(AtomicU64::new(0)),
    ));
    let l = lines.clone();
    let echo = on_cpu(worker, move || {
        let (req, resp) = (&l.0, &l.1);
        let mut seen = 0;
        while seen != u64::MAX {
            let v = req.load(Ordering::Acquire);
            if v != seen {
                seen = v;
                resp.store(v, Ordering::Release);
            } else {
                std::hint::spin_loop();
            }
        }
    });
    let h = on_cpu(host, move || {
        let (req, resp) = (&lines.0, &lines.1);
        let mut hist = histogram();
        for i in 1..=iters + warm_up(iters) {
            let t0 = now_ns();
            req.store(i, Ordering::Release);
            while resp.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            if i > warm_up(iters) {
                hist.saturating_record(now_ns() - t0);
            }
        }
        req.store(u64::MAX, Ordering::Release);
        hist
    });
    let hist = join(h)?;
    join(echo)?;
    Ok(hist)
}

/// Serves slot indices from `queue`: bumps the slot's completion counter.
fn queue_worker<Q: SlotQueue>(queue: &Q, done: &[CachePadded<AtomicU32>], stop: &AtomicBool) {
    loop {
        match queue.pop() {
            Some(slot) => {
                let d = &done[slot as usize];
                d.store(d.load(Ordering::Relaxed).wrapping_add(1), Ordering::Release);
            }
            None if stop.load(Ordering::Relaxed) => return,
            None => std::hint::spin_loop(),
        }
    }
}

/// Round trips and closed-loop throughput of `queue` in the shared harness.
/// Returns (round-trip histogram, requests per second).
pub fn queue_round_trips<Q: SlotQueue + 'static>(
    queue: Q,
    host: usize,
    worker: usize,
    iters: u64,
    window: usize,
) -> Result<(Histogram<u64>, f64), RingBenchError> {
    let shared = Arc::new((
        queue,
        (0..window.max(1))
            .map(|_| CachePadded(AtomicU32::new(0)))
            .collect::<Vec<_>>(),
        AtomicBool::new(false),
    ));
    let s = shared.clone();
    let server = on_cpu(worker, move || queue_worker(&s.0, &s.1, &s.2));
    let h = on_cpu(host, move || {
        let (queue, done, stop) = (&shared.0, &shared.1, &shared.2);
        let mut hist = histogram();
        let mut sent = vec![0u32; done.len()];
        for i in 0..iters + warm_up(iters) {
            let t0 = now_ns();
            sent[0] = sent[0].wrapping_add(1);
            while !queue.push(0) {
                std::hint::spin_loop();
            }
            while done[0].load(Ordering::Acquire) != sent[0] {
                std::hint::spin_loop();
            }
            if i >= warm_up(iters) {
                hist.saturating_record(now_ns() - t0);
            }
        }
        // Throughput: `window` requests in flight, each resubmitted as soon
        // as it completes.
        let t0 = now_ns();
        for (k, sent_k) in sent.iter_mut().enumerate() {
            *sent_k = sent_k.wrapping_add(1);
            while !queue.push(k as u32) {
                std::hint::spin_loop();
            }
        }
        let mut completed = 0u64;
        let total = iters * 4;
        'outer: loop {
            for k in 0..done.len() {
                if done[k].load(Ordering::Acquire) == sent[k] {
                    completed += 1;
                    if completed >= total {
                        break 'outer;
                    }
                    sent[k] = sent[k].wrapping_add(1);
                    while !queue.push(k as u32) {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        let secs = (now_ns() - t0) as f64 * 1e-9;
        // Drain what is still in flight before stopping the worker.
        for k in 0..done.len() {
            while done[k].load(Ordering::Acquire) != sent[k] {
                std::hint::spin_loop();
            }
        }
        stop.store(true, Ordering::Relaxed);
        (hist, completed as f64 / secs)
    });
    let out = join(h)?;
    join(server)?;
    Ok(out)
}

/// A one-worker runtime partition on `worker` serving empty requests.
pub fn empty_partition(
    rt: &mut Runtime,
    name: &str,
    worker: usize,
    wait: WaitStrategy,
    slots: usize,
) -> Result<Partition, RingBenchError> {
    Ok(rt.add_partition(
        PartitionConfig {
            wait,
            workers: 1,
            slots,
            placement: Placement::Local,
            ..PartitionConfig::new(name, worker.to_string())
        },
        Arc::new(Affine {
            len: 0,
            scale: 1.0,
            shift: 0.0,
        }),
    )?)
}

/// Round trips (and throughput with `window` in flight) through the full
/// runtime path, from a host pinned on `host`.
pub fn runtime_round_trips(
    part: &Partition,
    host: usize,
    iters: u64,
    window: usize,
) -> Result<(Histogram<u64>, f64), RingBenchError> {
    let part = part.clone();
    let h = on_cpu(host, move || -> Result<_, RingBenchError> {
        let t = Duration::from_secs(10);
        let mut hist = histogram();
        let mut one = part.acquire(t)?;
        for i in 0..iters + warm_up(iters) {
            let t0 = now_ns();
            one.try_submit()?;
            one.wait(t)?;
            if i >= warm_up(iters) {
                hist.saturating_record(now_ns() - t0);
            }
        }
        drop(one);
        let mut reqs: Vec<Request> = (0..window.max(1))
            .map(|_| part.acquire(t))
            .collect::<Result<_, _>>()?;
        let t0 = now_ns();
        for r in reqs.iter_mut() {
            r.submit()?;
        }
        let total = iters * 4;
        let mut completed = 0u64;
        'outer: loop {
            for r in reqs.iter_mut() {
                if matches!(r.poll(), pinned_runtime::Status::Done) {
                    completed += 1;
                    if completed >= total {
                        break 'outer;
                    }
                    r.submit()?;
                }
            }
        }
        let secs = (now_ns() - t0) as f64 * 1e-9;
        for r in reqs.iter_mut() {
            let _ = r.wait(t);
        }
        Ok((hist, completed as f64 / secs))
    });
    join(h)?
}

/// Wake-up latency of a thread parked on a futex: from just before
/// `FUTEX_WAKE` to the sleeper running. Also returns the waker's time in
/// the syscall.
pub fn futex_wake_cost(
    host: usize,
    worker: usize,
    iters: u64,
) -> Result<(Histogram<u64>, Histogram<u64>), RingBenchError> {
    let shared = Arc::new((
        CachePadded(AtomicU32::new(0)),
        CachePadded(AtomicU64::new(0)),
        CachePadded(AtomicU32::new(0)),
    ));
    let s = shared.clone();
    let sleeper = on_cpu(worker, move || {
        let (word, t_wake, ready) = (&s.0, &s.1, &s.2);
        let mut hist = histogram();
        for i in 0..iters as u32 {
            ready.store(i + 1, Ordering::Release);
            while word.load(Ordering::Acquire) == i {
                futex_wait(word, i, Some(Duration::from_secs(1)));
            }
            hist.saturating_record(now_ns().saturating_sub(t_wake.load(Ordering::Acquire)));
        }
        hist
    });
    let waker = on_cpu(host, move || {
        let (word, t_wake, ready) = (&shared.0, &shared.1, &shared.2);
        let mut syscall = histogram();
        for i in 0..iters as u32 {
            while ready.load(Ordering::Acquire) != i + 1 {
                std::hint::spin_loop();
            }
            // Long enough for the sleeper to be inside FUTEX_WAIT.
            std::thread::sleep(Duration::from_micros(200));
            let t0 = now_ns();
            t_wake.store(t0, Ordering::Release);
            word.store(i + 1, Ordering::Release);
            futex_wake(word, 1);
            syscall.saturating_record(now_ns() - t0);
        }
        syscall
    });
    let syscall = join(waker)?;
    let wake = join(sleeper)?;
    Ok((wake, syscall))
}

fn round_trip(name: &'static str, h: &Histogram<u64>, floor_p50: u64) -> RoundTrip {
    let s = Summary::of(h);
    RoundTrip {
        name,
        samples: s.count,
        p50_ns: s.p50,
        p99_ns: s.p99,
        p999_ns: s.p999,
        p50_vs_floor: s.p50 as f64 / floor_p50.max(1) as f64,
    }
}

fn burn(name: &'static str, w: &WorkerTelemetry) -> WorkerBurn {
    WorkerBurn {
        name,
        cpu_ms: w.cpu_ns.map(|n| n as f64 * 1e-6),
        idle_spin_ms: w.idle_spin_ns as f64 * 1e-6,
        parks: w.parks,
        voluntary_switches: w.voluntary_switches,
        migrations: w.migrations,
    }
}

/// The host and worker CPUs: `A,B` from the options or the first two
/// allowed (one CPU: both on it, and the figures say so).
fn pick_cpus(opts: &RingBenchOptions) -> Result<(usize, usize), RingBenchError> {
    let allowed = current_affinity()?;
    let pair: Vec<usize> = match &opts.cpus {
        Some(text) => text
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| RingBenchError::Cpus(format!("'{text}' is not A,B")))?,
        None => allowed.iter().take(2).collect(),
    };
    let pair = match pair.as_slice() {
        [a, b] => (*a, *b),
        [a] => (*a, *a),
        _ => return Err(RingBenchError::Cpus("need two cpus A,B".into())),
    };
    for c in [pair.0, pair.1] {
        if !allowed.contains(c) {
            return Err(RingBenchError::Cpus(format!(
                "cpu {c} is outside the allowed set {allowed}"
            )));
        }
    }
    Ok(pair)
}

/// Measures everything (see the module doc) and returns the report.
pub fn measure(opts: &RingBenchOptions) -> Result<RingReport, RingBenchError> {
    let (host, worker) = pick_cpus(opts)?;
    let (rounds, iters) = if opts.quick {
        (3, 20_000)
    } else {
        (5, 100_000)
    };
    let window = 32;
    let mut floor = histogram();
    let mut ring = histogram();
    let mut aq = histogram();
    let mut rt_spin = histogram();
    let mut rt_futex = histogram();
    let (mut tp_ring, mut tp_aq, mut tp_rt) = (0.0, 0.0, 0.0);
    let mut burns = Vec::new();
    for round in 0..rounds {
        floor.add(ping_pong(host, worker, iters)?).ok();
        let (h, tp) = queue_round_trips(Ring::with_capacity(64), host, worker, iters, window)?;
        ring.add(h).ok();
        tp_ring = f64::max(tp_ring, tp);
        let (h, tp) = queue_round_trips(ArrayQueue::<u32>::new(64), host, worker, iters, window)?;
        aq.add(h).ok();
        tp_aq = f64::max(tp_aq, tp);
        // A runtime per variant and round: a spinning worker left running
        // would take the worker CPU from the next variant.
        let mut rt = Runtime::new(RuntimeConfig::default())?;
        let spin = empty_partition(&mut rt, "spin", worker, WaitStrategy::Spin, window + 1)?;
        let (h, tp) = runtime_round_trips(&spin, host, iters, window)?;
        rt_spin.add(h).ok();
        tp_rt = f64::max(tp_rt, tp);
        let spin_final = rt.shutdown();
        let mut rt = Runtime::new(RuntimeConfig::default())?;
        let futex = empty_partition(
            &mut rt,
            "futex",
            worker,
            WaitStrategy::SpinPark { spin_us: 0 },
            2,
        )?;
        let (h, _) = runtime_round_trips(&futex, host, iters / 20, 1)?;
        rt_futex.add(h).ok();
        let futex_final = rt.shutdown();
        if round + 1 == rounds {
            burns.push(burn("runtime-spin", &spin_final[0].workers[0]));
            burns.push(burn("runtime-futex", &futex_final[0].workers[0]));
        }
    }
    let (wake, syscall) = futex_wake_cost(host, worker, if opts.quick { 300 } else { 2000 })?;
    let floor_p50 = Summary::of(&floor).p50;
    Ok(RingReport {
        host_cpu: host,
        worker_cpu: worker,
        round_trips: vec![
            round_trip("ping-pong", &floor, floor_p50),
            round_trip("ring", &ring, floor_p50),
            round_trip("array-queue", &aq, floor_p50),
            round_trip("runtime-spin", &rt_spin, floor_p50),
            round_trip("runtime-futex", &rt_futex, floor_p50),
        ],
        throughput: [
            ("ring", tp_ring),
            ("array-queue", tp_aq),
            ("runtime-spin", tp_rt),
        ]
        .into_iter()
        .map(|(name, per_second)| Throughput {
            name,
            requests: iters * 4 * rounds as u64,
            per_second,
            vs_array_queue: per_second / tp_aq.max(f64::MIN_POSITIVE),
        })
        .collect(),
        futex_wake: round_trip("futex-wake", &wake, floor_p50),
        futex_wake_syscall_p50_ns: Summary::of(&syscall).p50,
        worker_burn: burns,
    })
}

impl std::fmt::Display for RingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "request round trip, host cpu {} -> worker cpu {} (ns)",
            self.host_cpu, self.worker_cpu
        )?;
        writeln!(
            f,
            "{:<14} {:>9} {:>8} {:>8} {:>8} {:>9}",
            "variant", "samples", "p50", "p99", "p99.9", "p50/floor"
        )?;
        for r in self.round_trips.iter().chain([&self.futex_wake]) {
            writeln!(
                f,
                "{:<14} {:>9} {:>8} {:>8} {:>8} {:>9.2}",
                r.name, r.samples, r.p50_ns, r.p99_ns, r.p999_ns, r.p50_vs_floor
            )?;
        }
        writeln!(
            f,
            "futex-wake: waker spends p50 {} ns inside FUTEX_WAKE",
            self.futex_wake_syscall_p50_ns
        )?;
        writeln!(f, "\nthroughput, 32 requests in flight (best round)")?;
        for t in &self.throughput {
            writeln!(
                f,
                "{:<14} {:>12.0} req/s {:>6.2}x array-queue",
                t.name, t.per_second, t.vs_array_queue
            )?;
        }
        writeln!(f, "\nworker cpu burned")?;
        let opt = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1}"));
        let opt_u = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
        for b in &self.worker_burn {
            writeln!(
                f,
                "{:<14} cpu {} ms, idle spin {:.1} ms, parks {}, voluntary switches {}, migrations {}",
                b.name,
                opt(b.cpu_ms),
                b.idle_spin_ms,
                b.parks,
                opt_u(b.voluntary_switches),
                opt_u(b.migrations)
            )?;
        }
        Ok(())
    }
}

/// `pinned bench ring`: measures and prints the table (or JSON).
pub fn run(opts: &RingBenchOptions) -> Result<(), RingBenchError> {
    let report = measure(opts)?;
    if opts.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}
