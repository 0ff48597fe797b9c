//! Runs one [`RunConfig`] on pinned-runtime partitions and returns its
//! record: load the models under their placement, start the partitions,
//! drive each with its scenario from its own host thread, exclude the
//! warm-up, keep going until both the duration and the sample minimum are
//! met, then read the CPU, worker and placement counters.
//!
//! Timing is taken by the host thread with the runtime's clock: a request's
//! completion is the instant its host saw it done. The host waits the way
//! the partition's workers do (spin, yield or park), so the latency includes
//! one wake-up, as an application's would.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinned_allocator::{numa, IdList, MemPolicy};
use pinned_runtime::clock::now_ns;
use pinned_runtime::models::{LoadOptions, MiniLm, Mlp, WeightPlacement};
use pinned_runtime::{
    mlp_spec_widths, BatchPolicy, Model, Partition, PartitionTelemetry, Placement, Request,
    RequestError, Runtime, RuntimeConfig, WaitStrategy,
};

use super::config::{
    wait_spelling, MemoryPlacement, PartitionConfig, Precision, RunConfig, Scenario,
};
use super::cpu_usage::{utilisation, ProcStat};
use super::fingerprint::Fingerprint;
use super::loadgen::{PoissonSchedule, Recorder, Timing};
use super::record::{
    encode_histogram, unix_ms_now, utc_stamp, PartitionResult, RunRecord, WorkerStats, SCHEMA,
};
use super::stats::{min_samples_for_quantile, LatencySummary};

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// Boxed: the runtime's error is large and runs return it rarely.
    #[error(transparent)]
    Runtime(Box<pinned_runtime::RuntimeError>),
    #[error("partition '{partition}': {message}")]
    Model { partition: String, message: String },
    #[error("partition '{partition}': placement {placement}: {message}")]
    Placement {
        partition: String,
        placement: String,
        message: String,
    },
    #[error("partition '{partition}': request failed: {source}")]
    Request {
        partition: String,
        source: RequestError,
    },
}

impl From<pinned_runtime::RuntimeError> for RunError {
    fn from(e: pinned_runtime::RuntimeError) -> Self {
        Self::Runtime(Box::new(e))
    }
}

/// How long a host waits for one request before calling the run broken.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Request slots per partition at the least: enough in flight for an open
/// loop at 70% load to ride out a stall of about 64 service times.
const SLOTS: usize = 64;

/// Request slots for a partition of `workers` forming batches of up to
/// `batch`: every worker a full batch and one more full batch waiting, so
/// that a closed loop (offline capacity) keeps all workers busy. With a
/// flat 64 and batch 64, one worker held every request and the others
/// idled: two workers measured the capacity of one. The peer runner keeps
/// 64 waiting besides its running batch, the same rule for one engine.
fn slots_for(batch: usize, workers: usize) -> usize {
    SLOTS.max(batch.max(1) * (workers.max(1) + 1))
}

/// Builds the model a partition config names: `mlp` (the built-in
/// 1024-4096-1024-4096-1024 MLP), `mlp:256x1024x256` (other widths), a
/// directory with `config.json` (MiniLM) or an MLP manifest (JSON).
/// `threads` is what one request may use when it is alone in flight
/// (every model lends a team of them to it, as a peer's intra-op threads
/// serve one request), on `cpus` when the partition pins.
fn load_model(
    p: &PartitionConfig,
    weights: &WeightPlacement,
    threads: usize,
    cpus: Option<IdList>,
) -> Result<Arc<dyn Model>, RunError> {
    let err = |message: String| RunError::Model {
        partition: p.name.clone(),
        message,
    };
    let precision = pinned_kernels::precision::Precision::parse(match p.precision {
        Precision::F32 => "f32",
        Precision::Bf16 => "bf16",
        Precision::Int8 => "int8",
    })
    .map_err(|e| err(e.to_string()))?;
    let mut options = LoadOptions::default()
        .precision(precision)
        .placement(weights.clone())
        .threads(threads);
    if let Some(cpus) = cpus {
        options = options.cpus(cpus);
    }
    if let Some(widths) = mlp_spec_widths(&p.model) {
        let widths = widths.map_err(|e| err(e.to_string()))?;
        let model = Mlp::generated(&widths, 1, options).map_err(|e| err(e.to_string()))?;
        return Ok(Arc::new(model));
    }
    let path = std::path::Path::new(&p.model);
    if path.is_dir() {
        let model = MiniLm::load_dir(path, options).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(model))
    } else if path.is_file() {
        let model = Mlp::load(path, options).map_err(|e| err(e.to_string()))?;
        Ok(Arc::new(model))
    } else {
        Err(err(format!(
            "model '{}' is neither 'mlp', 'mlp:WxW..', a MiniLM directory nor an MLP manifest file",
            p.model
        )))
    }
}

/// The runtime placement for a partition on `nodes`, with `remote`
/// resolved to the first memory node not among them.
fn resolve_placement(
    p: &PartitionConfig,
    nodes: &IdList,
    memory_nodes: &IdList,
) -> Result<Placement, RunError> {
    let err = |message: String| RunError::Placement {
        partition: p.name.clone(),
        placement: p.memory.to_string(),
        message,
    };
    let list = |spec: &str| -> Result<IdList, RunError> {
        if spec.trim() == "all" {
            return Ok(memory_nodes.clone());
        }
        let l = IdList::parse(spec).map_err(|e| err(e.to_string()))?;
        let missing = l.iter().find(|n| !memory_nodes.contains(*n));
        match missing {
            Some(n) => Err(err(format!(
                "node {n} has no memory here (memory nodes: {memory_nodes})"
            ))),
            None => Ok(l),
        }
    };
    Ok(match &p.memory {
        MemoryPlacement::Local => Placement::Local,
        MemoryPlacement::Bind(s) => Placement::Bind(list(s)?),
        MemoryPlacement::Interleave(s) => Placement::Interleave(list(s)?),
        MemoryPlacement::Preferred(n) => {
            list(&n.to_string())?;
            Placement::Preferred(*n)
        }
        MemoryPlacement::Remote => {
            let remote = memory_nodes.difference(nodes).iter().next();
            match remote {
                Some(n) => Placement::Bind(IdList::from_ids(vec![n])),
                None => {
                    return Err(err(format!(
                        "no memory node outside the partition's nodes ({nodes}); memory nodes: {memory_nodes}"
                    )))
                }
            }
        }
    })
}

/// The thread policy matching a placement, for loading the built-in
/// model's weights (its heap pages follow the loading thread's policy).
fn thread_policy(placement: &Placement, nodes: &IdList) -> Result<MemPolicy, numa::NumaError> {
    Ok(match placement {
        Placement::Os => MemPolicy::Default,
        Placement::Local | Placement::Replicate => MemPolicy::bind(nodes)?,
        Placement::Bind(l) => MemPolicy::bind(l)?,
        Placement::Interleave(l) => MemPolicy::interleave(l)?,
        Placement::Preferred(n) => MemPolicy::Preferred(*n),
    })
}

/// What each partition's host thread hands back.
struct HostResult {
    recorder: Recorder,
    carried_in: u64,
    offered: u64,
    issued: u64,
    offered_qps: Option<f64>,
}

/// Shared by the coordinator and the host threads.
struct Control {
    stop: AtomicBool,
    /// Clock time the measured window opened; `u64::MAX` during warm-up.
    /// The coordinator sets it after resetting the workers' histograms, so
    /// the hosts' and the workers' windows open in that order.
    window_start: AtomicU64,
    /// Clock time just before the coordinator reset the workers'
    /// histograms; `u64::MAX` before. A host counts the completions it saw
    /// from then until it noticed the window: the workers counted them, it
    /// could not (a coordinator preempted between the reset and the
    /// window's opening let hundreds of them through on a loaded CI).
    reset_at: AtomicU64,
    /// Requests completed inside the measured window, per partition.
    completed: Vec<AtomicU64>,
}

/// The load one partition gets.
#[derive(Clone, Copy, Debug)]
enum Load {
    Closed,
    Open { qps: f64 },
    Offline,
}

fn load_of(scenario: Scenario, p: &PartitionConfig) -> Load {
    match (scenario, p.qps) {
        (Scenario::Offline, _) => Load::Offline,
        (Scenario::SingleStream, _) => Load::Closed,
        (_, Some(qps)) => Load::Open { qps },
        (Scenario::Server, None) => Load::Closed,
        (Scenario::MultiModel, None) => Load::Closed,
    }
}

/// Runs `config` and returns its (checked) record.
pub fn run(config: &RunConfig, label: &str, show_progress: bool) -> Result<RunRecord, RunError> {
    config.validate()?;
    if config.scenario == Scenario::Server && config.partitions.iter().any(|p| p.qps.is_none()) {
        return Err(RunError::Config(super::config::ConfigError::Invalid(
            "the server scenario needs --qps (pinned run without --scenario measures capacity first)".into(),
        )));
    }
    let started_unix_ms = unix_ms_now();
    let machine = Fingerprint::collect();
    let mut runtime = Runtime::new(RuntimeConfig::default())?;
    let ctx = runtime.cpu_context().clone();
    let memory_nodes = ctx.topology.memory_nodes();
    let mut partitions = Vec::new();
    for p in &config.partitions {
        let cpus = ctx
            .parse(p.cpus.as_deref().unwrap_or("all"))
            .map_err(|source| pinned_runtime::RuntimeError::CpuSet {
                partition: p.name.clone(),
                source,
            })?;
        let nodes = ctx.nodes_of(&cpus);
        let placement = resolve_placement(p, &nodes, &memory_nodes)?;
        let weights = WeightPlacement::for_partition(&placement, &nodes);
        // Weights of the built-in model are heap pages: load them under the
        // partition's policy, then restore the default.
        let policy = thread_policy(&placement, &nodes).map_err(|e| RunError::Placement {
            partition: p.name.clone(),
            placement: p.memory.to_string(),
            message: e.to_string(),
        })?;
        let policy_set = numa::set_mempolicy(&policy).is_ok();
        // A request alone in flight may use as many threads as the
        // partition has workers (their idle cores), unless told otherwise:
        // one worker with a team of every core forms whole batches and
        // runs each on all of them.
        let threads = p
            .model_threads
            .or(p.workers)
            .filter(|t| *t > 0)
            .unwrap_or(cpus.len());
        let model = load_model(p, &weights, threads, p.pin.then(|| cpus.clone()));
        if policy_set {
            let _ = numa::set_mempolicy(&MemPolicy::Default);
        }
        let model = model?;
        let wait = WaitStrategy::parse(&wait_spelling(&p.wait)).unwrap_or(WaitStrategy::Spin);
        let rc = pinned_runtime::PartitionConfig {
            name: p.name.clone(),
            cpus: cpus.to_string(),
            placement,
            wait,
            batch: BatchPolicy {
                max_batch: p.batch,
                max_wait_us: p.max_wait_us.min(u64::from(u32::MAX)) as u32,
            },
            pin: p.pin,
            workers: p.workers.unwrap_or(0),
            slots: slots_for(p.batch, p.workers.filter(|w| *w > 0).unwrap_or(cpus.len())),
            ring_capacity: 0,
        };
        partitions.push(runtime.add_partition(rc, model)?);
    }

    let control = Arc::new(Control {
        stop: AtomicBool::new(false),
        window_start: AtomicU64::new(u64::MAX),
        reset_at: AtomicU64::new(u64::MAX),
        completed: config
            .partitions
            .iter()
            .map(|_| AtomicU64::new(0))
            .collect(),
    });
    let t0 = now_ns();
    let warmup_ns = (config.warmup_s * 1e9) as u64;
    let measure_from = t0 + warmup_ns;
    let progress = super::table::progress_bar(
        show_progress,
        (config.warmup_s + config.duration_s) * 1000.0,
        &format!("{} {}", config.scenario, label),
    );

    let results = std::thread::scope(|scope| -> Result<_, RunError> {
        let hosts: Vec<_> = partitions
            .iter()
            .zip(&config.partitions)
            .enumerate()
            .map(|(i, (part, pc))| {
                let control = control.clone();
                let load = load_of(config.scenario, pc);
                let seed = config.seed.wrapping_add(i as u64);
                scope.spawn(move || drive(part, load, t0, seed, &control, i))
            })
            .collect();

        // Coordinator: open the window after the warm-up, close it when every
        // partition has its duration and its sample minimum (or at the cap).
        sleep_until(measure_from, &progress, t0);
        let before_stat = ProcStat::read().ok();
        let before: Vec<PartitionTelemetry> = partitions
            .iter()
            .map(Partition::telemetry_snapshot)
            .collect();
        control.reset_at.store(now_ns(), Ordering::Release);
        partitions.iter().for_each(Partition::reset_latencies);
        let window_start = now_ns();
        control.window_start.store(window_start, Ordering::Release);
        let min_end = window_start + (config.duration_s * 1e9) as u64;
        let max_end = window_start + (config.max_duration_s.max(config.duration_s) * 1e9) as u64;
        loop {
            let now = now_ns();
            progress.set_position(
                (now.saturating_sub(t0) / 1_000_000).min(progress.length().unwrap_or(0)),
            );
            let enough = control
                .completed
                .iter()
                .all(|c| c.load(Ordering::Relaxed) >= config.min_count);
            if (now >= min_end && enough) || now >= max_end {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        control.stop.store(true, Ordering::Release);
        let window_end = now_ns();
        let host_results: Vec<Result<HostResult, RunError>> = hosts
            .into_iter()
            .map(|h| {
                h.join()
                    .expect("host threads return their errors, never panic")
            })
            .collect();
        let after_stat = ProcStat::read().ok();
        let after: Vec<PartitionTelemetry> = partitions
            .iter()
            .map(Partition::telemetry_snapshot)
            .collect();
        progress.finish_and_clear();
        Ok((
            host_results,
            before,
            after,
            before_stat,
            after_stat,
            window_start,
            window_end,
        ))
    })?;
    let (host_results, before, after, before_stat, after_stat, window_start, window_end) = results;
    let placement = super::numa_maps::read();
    let measured_s = (window_end - window_start) as f64 / 1e9;

    let mut out = Vec::new();
    for (i, host) in host_results.into_iter().enumerate() {
        let host = host?;
        let part = &partitions[i];
        let pc = &config.partitions[i];
        out.push(partition_result(
            part,
            pc,
            config.scenario,
            host,
            &before[i],
            &after[i],
            measured_s,
            placement.clone(),
        ));
    }
    let _ = runtime.shutdown();
    let scenario = config.scenario.name();
    let id = if label.is_empty() {
        format!("{}-{scenario}", utc_stamp(started_unix_ms))
    } else {
        format!(
            "{}-{scenario}-{}",
            utc_stamp(started_unix_ms),
            sanitize(label)
        )
    };
    Ok(RunRecord {
        schema: SCHEMA.to_owned(),
        id,
        started_unix_ms,
        label: label.to_owned(),
        config: config.clone(),
        machine,
        cores: match (before_stat, after_stat) {
            (Some(a), Some(b)) => utilisation(&a, &b),
            _ => Vec::new(),
        },
        partitions: out,
    })
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn sleep_until(t: u64, progress: &indicatif::ProgressBar, t0: u64) {
    loop {
        let now = now_ns();
        if now >= t {
            return;
        }
        progress.set_position((now - t0) / 1_000_000);
        std::thread::sleep(Duration::from_nanos((t - now).min(50_000_000)));
    }
}

#[allow(clippy::too_many_arguments)]
fn partition_result(
    part: &Partition,
    pc: &PartitionConfig,
    scenario: Scenario,
    host: HostResult,
    before: &PartitionTelemetry,
    after: &PartitionTelemetry,
    measured_s: f64,
    placement: Vec<super::record::BufferPlacement>,
) -> PartitionResult {
    let r = &host.recorder;
    let worker_stats = after
        .workers
        .iter()
        .map(|w| {
            let b = before.workers.iter().find(|x| x.index == w.index);
            let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            };
            let cpu_ns = delta(w.cpu_ns, b.and_then(|b| b.cpu_ns)).unwrap_or(0);
            WorkerStats {
                index: w.index,
                last_cpu: w.last_cpu,
                pinned_cpu: (w.pinned && w.cpus.len() == 1).then(|| w.cpus.as_slice()[0]),
                cpu_time_ms: cpu_ns as f64 / 1e6,
                cpu_pct: cpu_ns as f64 / 1e9 / measured_s * 100.0,
                voluntary_switches: delta(
                    w.voluntary_switches,
                    b.and_then(|b| b.voluntary_switches),
                )
                .unwrap_or(0),
                involuntary_switches: delta(
                    w.involuntary_switches,
                    b.and_then(|b| b.involuntary_switches),
                )
                .unwrap_or(0),
                migrations: delta(w.migrations, b.and_then(|b| b.migrations)),
                requests: w.requests.saturating_sub(b.map_or(0, |b| b.requests)),
            }
        })
        .collect();
    let completed = r.completed;
    PartitionResult {
        name: pc.name.clone(),
        scenario: match (scenario, load_of(scenario, pc)) {
            (Scenario::MultiModel, Load::Open { .. }) => "multi-model/server".to_owned(),
            (Scenario::MultiModel, _) => "multi-model/single-stream".to_owned(),
            (s, _) => s.name().to_owned(),
        },
        model: format!("{} ({})", pc.model, part.model().name()),
        cpus: part.cpus().to_string(),
        workers: part.workers(),
        pinned: part.pinned(),
        measured_s,
        offered: host.offered,
        issued: host.issued,
        completed,
        warmup_completed: r.warmup_completed,
        rejected: 0,
        carried_in: host.carried_in,
        offered_qps: host.offered_qps,
        tps: completed as f64 / measured_s,
        latency: r.latency_summary(),
        issue_delay: LatencySummary::from_histogram(&r.issue_delay),
        queue_wait: LatencySummary::from_histogram(&after.latencies.queue_wait),
        service: LatencySummary::from_histogram(&after.latencies.service),
        slots: part.slots(),
        enough_for_p99: completed >= min_samples_for_quantile(0.99),
        enough_for_p999: completed >= min_samples_for_quantile(0.999),
        latency_hdr_base64: encode_histogram(&r.latency),
        worker_stats,
        placement,
    }
}

/// One partition's host loop; returns when `control.stop` is set and every
/// request it issued has completed.
fn drive(
    part: &Partition,
    load: Load,
    t0: u64,
    seed: u64,
    control: &Control,
    index: usize,
) -> Result<HostResult, RunError> {
    let fail = |source| RunError::Request {
        partition: part.name().to_owned(),
        source,
    };
    let mut recorder = Recorder::new(u64::MAX);
    let counter = &control.completed[index];
    let note = |recorder: &mut Recorder| {
        counter.store(recorder.completed, Ordering::Relaxed);
        let opened = control.window_start.load(Ordering::Acquire);
        if opened != recorder.measure_from_ns() {
            recorder.set_measure_from(opened);
        }
    };
    let mut unissued = 0u64;
    // Warm-up requests still queued or in flight when the window opened.
    let mut carried_in: Option<u64> = None;
    // Completions after the workers' reset that this host saw before it
    // noticed the window (served in the workers' window, not in its own).
    let mut unseen = 0u64;
    let mut count_unseen = |recorder: &Recorder, done: u64| {
        if recorder.measure_from_ns() == u64::MAX
            && done >= control.reset_at.load(Ordering::Acquire)
        {
            unseen += 1;
        }
    };
    match load {
        Load::Closed => {
            let mut req = part.acquire(REQUEST_TIMEOUT).map_err(fail)?;
            part.model().sample_input(req.input_mut().map_err(fail)?);
            while !control.stop.load(Ordering::Acquire) {
                let sent = now_ns();
                req.submit().map_err(fail)?;
                req.wait(REQUEST_TIMEOUT).map_err(fail)?;
                let done = now_ns();
                count_unseen(&recorder, done);
                recorder.record(&Timing {
                    scheduled_ns: sent,
                    issued_ns: sent,
                    completed_ns: done,
                });
                note(&mut recorder);
            }
        }
        Load::Offline | Load::Open { .. } => {
            let mut schedule = match load {
                Load::Open { qps } => Some(PoissonSchedule::new(qps, t0, seed)),
                _ => None,
            };
            // (request, scheduled, issued) in issue order.
            let mut in_flight: Vec<(Request, u64, u64)> = Vec::with_capacity(part.slots());
            let mut spare: Vec<Request> = Vec::with_capacity(part.slots());
            // Scheduled times not yet issued (no free slot): the backlog a
            // stalled system builds, still timed from the schedule.
            let mut backlog: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
            loop {
                let stopping = control.stop.load(Ordering::Acquire);
                let now = now_ns();
                if !stopping {
                    match schedule.as_mut() {
                        Some(s) => {
                            while s.peek_ns() <= now {
                                backlog.push_back(s.take());
                            }
                        }
                        // Offline: everything is due at once; the slots bound it.
                        None => {
                            while backlog.len() + in_flight.len() < part.slots() {
                                backlog.push_back(now);
                            }
                        }
                    }
                }
                // Issue what is due while slots last.
                while let Some(&scheduled) = backlog.front() {
                    let mut req = match spare.pop() {
                        Some(r) => r,
                        None => match part.try_acquire() {
                            Ok(mut r) => {
                                part.model().sample_input(r.input_mut().map_err(fail)?);
                                r
                            }
                            Err(RequestError::NoFreeSlot) => break,
                            Err(e) => return Err(fail(e)),
                        },
                    };
                    let sent = now_ns();
                    match req.try_submit() {
                        Ok(()) => {}
                        Err(RequestError::Full) => {
                            spare.push(req);
                            break;
                        }
                        Err(e) => return Err(fail(e)),
                    }
                    backlog.pop_front();
                    let scheduled = if schedule.is_some() { scheduled } else { sent };
                    in_flight.push((req, scheduled, sent));
                }
                // Collect what finished.
                let mut i = 0;
                while i < in_flight.len() {
                    match in_flight[i].0.poll() {
                        pinned_runtime::Status::Pending => i += 1,
                        pinned_runtime::Status::Failed(f) => {
                            return Err(fail(RequestError::Failed(f)))
                        }
                        _ => {
                            let done = now_ns();
                            let (req, scheduled, sent) = in_flight.swap_remove(i);
                            count_unseen(&recorder, done);
                            recorder.record(&Timing {
                                scheduled_ns: scheduled,
                                issued_ns: sent,
                                completed_ns: done,
                            });
                            spare.push(req);
                        }
                    }
                }
                note(&mut recorder);
                if carried_in.is_none() && recorder.measure_from_ns() != u64::MAX {
                    carried_in = Some((in_flight.len() + backlog.len()) as u64);
                }
                if stopping && in_flight.is_empty() {
                    // Arrivals of the window that never got a slot.
                    let from = recorder.measure_from_ns();
                    unissued = backlog.iter().filter(|&&t| t >= from).count() as u64;
                    break;
                }
                idle_until_next(schedule.as_ref(), &backlog, &mut in_flight);
            }
        }
    }
    Ok(HostResult {
        offered_qps: match load {
            Load::Open { qps } => Some(qps),
            _ => None,
        },
        // Every issued request is waited for, so in the window issued =
        // completed; offered adds the arrivals still waiting for a slot.
        offered: recorder.completed + unissued,
        carried_in: unseen
            + match load {
                Load::Closed => 1,
                _ => carried_in.unwrap_or(0),
            },
        issued: recorder.completed,
        recorder,
    })
}

/// Between events: with requests in flight and nothing due soon, wait on
/// the oldest (per the partition's strategy) until the next send time;
/// with nothing in flight, sleep until shortly before the next send and
/// spin the rest (a sleep overshoots by tens of microseconds).
fn idle_until_next(
    schedule: Option<&PoissonSchedule>,
    backlog: &std::collections::VecDeque<u64>,
    in_flight: &mut [(Request, u64, u64)],
) {
    /// Below this gap the host spins: a sleep's overshoot would be the error.
    const SPIN_BELOW_NS: u64 = 200_000;
    /// Longest single wait on the oldest request, so newer completions
    /// are not noticed later than this.
    const MAX_WAIT_NS: u64 = 1_000_000;
    let now = now_ns();
    let next = match schedule {
        // A backlog means no slot is free: only a completion can help.
        _ if !backlog.is_empty() => u64::MAX,
        Some(s) => s.peek_ns(),
        None => u64::MAX,
    };
    if next <= now {
        std::hint::spin_loop();
        return;
    }
    let gap = next - now;
    if let Some((req, _, _)) = in_flight.first_mut() {
        // Waiting on the oldest keeps the cores free under park/yield; a
        // timeout here is expected (the next send is due).
        let _ = req.wait(Duration::from_nanos(gap.min(MAX_WAIT_NS)));
    } else if gap > SPIN_BELOW_NS {
        std::thread::sleep(Duration::from_nanos(
            (gap - SPIN_BELOW_NS / 2).min(MAX_WAIT_NS * 10),
        ));
    } else {
        std::hint::spin_loop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_let_every_worker_hold_a_full_batch_with_one_waiting() {
        assert_eq!(slots_for(1, 2), SLOTS);
        assert_eq!(slots_for(0, 0), SLOTS);
        for (batch, workers) in [(64, 1), (64, 2), (32, 4), (128, 2)] {
            let slots = slots_for(batch, workers);
            assert!(
                slots >= batch * workers + batch,
                "{batch} x {workers}: {slots}"
            );
        }
    }
}
