//! `pinned bench e2e`: pinned and its CPU inference peer (ONNX Runtime,
//! `bench/peers/`) on the same model, scenario and cores, run alternately
//! (A B A B ...) so that drift in the machine's state lands on both, and
//! the ratios pinned / peer with their spread over the rounds.
//!
//! pinned runs in this process through the harness ([`scenario::run`]); the
//! peer runs `bench/peers/peer_runner.py` in the peer's virtual
//! environment, which writes the same run record. Every record is kept in
//! the output directory, so `pinned compare` reads any pair of them.
//!
//! The built-in MLP (`mlp`, `mlp:WxWx..`) is written once to a safetensors
//! file and a manifest ([`write_mlp`]) that both engines load: the very
//! same weights, and pinned can pack them to bf16 or int8.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::config::{MemoryPlacement, PartitionConfig, Precision, RunConfig, Scenario};
use crate::harness::fingerprint::Fingerprint;
use crate::harness::record::{PartitionResult, RecordError, RunRecord};
use crate::harness::scenario;
use crate::harness::stats::{bootstrap_ratio, median, min_max, SplitMix64, BOOTSTRAP_ITERATIONS};

/// Where the peer's files live unless `PINNED_PEERS_DIR` says otherwise.
const PEERS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/peers");
/// Seed of the built-in MLP's weights.
pub const MLP_SEED: u64 = 1;

/// Why an end-to-end comparison could not be made.
#[derive(Debug, thiserror::Error)]
pub enum E2eError {
    #[error("{0}")]
    Options(String),
    #[error(
        "the ONNX Runtime peer's environment is missing ({python}): create it with `bash {dir}/setup.sh`"
    )]
    PeerMissing { python: String, dir: String },
    #[error("peer run failed ({status}): {stderr}")]
    Peer { status: String, stderr: String },
    #[error(transparent)]
    Run(#[from] scenario::RunError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> E2eError + '_ {
    move |source| E2eError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What `pinned bench e2e` runs.
#[derive(Clone, Debug)]
pub struct E2eOptions {
    /// `mlp`, `mlp:WxWx..`, `minilm` (`PINNED_MINILM_DIR`), a MiniLM
    /// directory or an MLP manifest.
    pub model: String,
    pub scenario: Scenario,
    /// pinned's weight precision; the peer runs its best, fp32.
    pub precision: Precision,
    pub cpus: Option<String>,
    pub workers: Option<usize>,
    /// pinned's workers when they should differ from the peer's intra-op
    /// threads (`workers`): one worker forming whole batches whose GEMMs
    /// run on a team over all the cores is ONNX Runtime's shape.
    pub pinned_workers: Option<usize>,
    pub batch: usize,
    pub max_wait_us: u64,
    /// MiniLM tokens per request (the peer's; pinned's harness decides its own input).
    pub seq: usize,
    /// A B pairs.
    pub rounds: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub min_count: u64,
    /// Server load as a fraction of each engine's own capacity.
    pub load: f64,
    /// `Some("onnxruntime")` when asked for explicitly: its absence is then an error.
    pub peer: Option<String>,
    pub out: PathBuf,
}

impl Default for E2eOptions {
    fn default() -> Self {
        Self {
            model: "mlp".to_owned(),
            scenario: Scenario::SingleStream,
            precision: Precision::F32,
            cpus: None,
            workers: None,
            pinned_workers: None,
            batch: 1,
            max_wait_us: 0,
            seq: 128,
            rounds: 3,
            duration_s: 5.0,
            warmup_s: 1.0,
            min_count: crate::harness::stats::min_samples_for_quantile(0.99),
            load: 0.7,
            peer: None,
            out: PathBuf::from("results/e2e"),
        }
    }
}

/// Writes the dense MLP of `widths` (GELU between layers, none after the
/// last) with deterministic weights from `seed` to `dir`: `mlp.safetensors`
/// (PyTorch `Linear` layout, `fcN.weight [out][in]`, `fcN.bias`) and the
/// manifest `mlp.json` that `Mlp::load` and `build_onnx.py` read.
/// Weights are uniform in ±1/sqrt(in), biases in ±0.1, drawn in layer
/// order, weights row by row, then biases. Returns the manifest's path.
pub fn write_mlp(dir: &Path, widths: &[usize], seed: u64) -> Result<PathBuf, E2eError> {
    if widths.len() < 2 || widths.contains(&0) {
        return Err(E2eError::Options(format!(
            "an MLP needs two or more non-zero widths, got {widths:?}"
        )));
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut rng = SplitMix64::new(seed);
    let mut unit = || (rng.next_f64() * 2.0 - 1.0) as f32;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut layers = Vec::new();
    for (i, pair) in widths.windows(2).enumerate() {
        let (inp, out) = (pair[0], pair[1]);
        let scale = 1.0 / (inp as f32).sqrt();
        let w: Vec<u8> = (0..out * inp)
            .flat_map(|_| (unit() * scale).to_le_bytes())
            .collect();
        let b: Vec<u8> = (0..out)
            .flat_map(|_| (unit() * 0.1).to_le_bytes())
            .collect();
        tensors.push((format!("fc{i}.weight"), vec![out, inp], w));
        tensors.push((format!("fc{i}.bias"), vec![out], b));
        let act = if i + 2 < widths.len() { "gelu" } else { "none" };
        layers.push(serde_json::json!({
            "weight": format!("fc{i}.weight"),
            "bias": format!("fc{i}.bias"),
            "activation": act,
        }));
    }
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| E2eError::Options(format!("safetensors view: {e}")))?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| E2eError::Options(format!("safetensors: {e}")))?;
    let weights = dir.join("mlp.safetensors");
    std::fs::write(&weights, bytes).map_err(io_err(&weights))?;
    let name: Vec<String> = widths.iter().map(usize::to_string).collect();
    let manifest = serde_json::json!({
        "name": format!("mlp-{}-seed{seed}", name.join("-")),
        "weights": "mlp.safetensors",
        "layers": layers,
    });
    let path = dir.join("mlp.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&manifest).unwrap_or_default() + "\n",
    )
    .map_err(io_err(&path))?;
    Ok(path)
}

/// The model path both engines load for `spec`, writing the MLP if needed.
pub fn resolve_model(spec: &str, out: &Path) -> Result<PathBuf, E2eError> {
    if let Some(widths) = pinned_runtime::mlp_spec_widths(spec) {
        let widths = widths.map_err(|e| E2eError::Options(e.to_string()))?;
        let tag: Vec<String> = widths.iter().map(usize::to_string).collect();
        let dir = out
            .join("models")
            .join(format!("mlp-{}-seed{MLP_SEED}", tag.join("x")));
        let manifest = dir.join("mlp.json");
        if manifest.is_file() && dir.join("mlp.safetensors").is_file() {
            return Ok(manifest);
        }
        return write_mlp(&dir, &widths, MLP_SEED);
    }
    if spec == "minilm" {
        let var = pinned_runtime::models::MINILM_DIR_VAR;
        return std::env::var_os(var).map(PathBuf::from).ok_or_else(|| {
            E2eError::Options(format!(
                "--model minilm reads {var}: export {var}=\"$(.ci/fetch-minilm.sh)\""
            ))
        });
    }
    let path = PathBuf::from(spec);
    if path.exists() {
        Ok(path)
    } else {
        Err(E2eError::Options(format!(
            "model '{spec}' is neither mlp, mlp:WxW.., minilm nor an existing path"
        )))
    }
}

/// The peer's directory and interpreter.
pub fn peer_paths() -> (PathBuf, PathBuf) {
    let dir = std::env::var_os("PINNED_PEERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(PEERS_DIR));
    let python = dir.join(".venv/bin/python");
    (dir, python)
}

/// One engine's settings for a run (what differs between A and B).
#[derive(Clone)]
struct Side {
    qps: Option<f64>,
    /// The peer's spinning choice once made (`on`/`off`), else `both`.
    spinning: String,
}

fn pinned_config(
    o: &E2eOptions,
    model: &Path,
    scenario: Scenario,
    qps: Option<f64>,
    seconds: f64,
) -> RunConfig {
    RunConfig {
        scenario,
        duration_s: seconds,
        warmup_s: o.warmup_s,
        min_count: if scenario == o.scenario {
            o.min_count
        } else {
            0
        },
        max_duration_s: (seconds * 4.0).max(60.0),
        load_fraction: o.load,
        partitions: vec![PartitionConfig {
            name: "p0".to_owned(),
            cpus: o.cpus.clone(),
            workers: o.pinned_workers.or(o.workers),
            // Fewer workers than the peer's threads: each request (batch)
            // gets the peer's thread count as its team.
            model_threads: o.pinned_workers.map(|_| {
                o.workers
                    .unwrap_or_else(|| allowed_cpu_count(o.cpus.as_deref()))
            }),
            memory: MemoryPlacement::Local,
            batch: o.batch,
            max_wait_us: o.max_wait_us,
            model: model.display().to_string(),
            precision: o.precision,
            qps,
            ..PartitionConfig::default()
        }],
        ..RunConfig::default()
    }
}

fn run_pinned(
    o: &E2eOptions,
    model: &Path,
    scenario: Scenario,
    qps: Option<f64>,
    seconds: f64,
    label: &str,
) -> Result<RunRecord, E2eError> {
    let config = pinned_config(o, model, scenario, qps, seconds);
    let record = scenario::run(&config, label, false)?;
    warn_unless_consistent(&record);
    record.write(&o.out)?;
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
fn run_peer(
    o: &E2eOptions,
    model: &Path,
    scenario: Scenario,
    side: &Side,
    seconds: f64,
    label: &str,
    machine: &Path,
) -> Result<RunRecord, E2eError> {
    let (dir, python) = peer_paths();
    let workers = o
        .workers
        .unwrap_or_else(|| allowed_cpu_count(o.cpus.as_deref()));
    let mut cmd = Command::new(&python);
    cmd.arg(dir.join("peer_runner.py"))
        .arg("--model")
        .arg(model)
        .args(["--scenario", scenario.name()])
        .args(["--workers", &workers.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--max-wait-us", &o.max_wait_us.to_string()])
        .args(["--seq", &o.seq.to_string()])
        .args(["--duration", &seconds.to_string()])
        .args(["--warmup", &o.warmup_s.to_string()])
        .args(["--max-duration", &(seconds * 4.0).max(60.0).to_string()])
        .args(["--load", &o.load.to_string()])
        .args(["--spinning", &side.spinning])
        .args(["--label", label])
        .arg("--machine")
        .arg(machine)
        .arg("--out")
        .arg(&o.out)
        .arg("--quiet");
    let min_count = if scenario == o.scenario {
        o.min_count
    } else {
        0
    };
    cmd.args(["--min-count", &min_count.to_string()]);
    if let Some(c) = &o.cpus {
        cmd.args(["--cpus", c]);
    }
    if let Some(q) = side.qps {
        cmd.args(["--qps", &q.to_string()]);
    }
    let output = cmd.output().map_err(io_err(&python))?;
    if !output.status.success() {
        return Err(E2eError::Peer {
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    let record = RunRecord::read(&path)?;
    warn_unless_consistent(&record);
    Ok(record)
}

/// A record that fails [`RunRecord::check`] is still shown (the figures
/// stand), with the reason on stderr for whoever owns that side.
fn warn_unless_consistent(record: &RunRecord) {
    if let Err(e) = record.check() {
        eprintln!(
            "pinned bench e2e: record {} is inconsistent: {e}",
            record.id
        );
    }
}

/// CPUs in `cpus` (a `taskset -c` list), or in this process's affinity.
fn allowed_cpu_count(cpus: Option<&str>) -> usize {
    let parsed = cpus.and_then(|c| pinned_allocator::IdList::parse(c).ok());
    match parsed {
        Some(l) => l.iter().count().max(1),
        None => pinned_runtime::current_affinity()
            .map(|l| l.iter().count())
            .unwrap_or(1)
            .max(1),
    }
}

/// Reads one metric off a partition result.
pub type Metric = fn(&PartitionResult) -> f64;

/// The metrics the ratio table shows, by name.
pub const METRICS: [(&str, Metric); 5] = [
    ("p50", |p| p.latency.p50_ns as f64),
    ("p99", |p| p.latency.p99_ns as f64),
    ("p99.9", |p| p.latency.p999_ns as f64),
    ("stddev", |p| p.latency.stddev_ns),
    ("tps", |p| p.tps),
];

/// One metric over the rounds: both engines' medians and pinned / peer.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RatioRow {
    pub metric: String,
    pub pinned_median: f64,
    pub peer_median: f64,
    /// median(pinned) / median(peer).
    pub ratio: f64,
    /// Smallest and largest per-round ratio (round i's pinned / round i's peer).
    pub round_min: f64,
    pub round_max: f64,
    /// 95% bootstrap interval of the ratio of medians (`None` for one round).
    pub ci: Option<(f64, f64)>,
}

/// The ratio rows of paired rounds (`pinned[i]` ran just before `peer[i]`).
pub fn ratio_rows(pinned: &[PartitionResult], peer: &[PartitionResult]) -> Vec<RatioRow> {
    METRICS
        .iter()
        .enumerate()
        .map(|(k, (name, get))| {
            let a: Vec<f64> = peer.iter().map(get).collect();
            let b: Vec<f64> = pinned.iter().map(get).collect();
            let per_round: Vec<f64> = b
                .iter()
                .zip(&a)
                .filter(|(_, y)| **y > 0.0)
                .map(|(x, y)| x / y)
                .collect();
            let (lo, hi) = min_max(&per_round);
            let ci = (a.len() > 1)
                .then(|| bootstrap_ratio(&a, &b, BOOTSTRAP_ITERATIONS, 0xe2e + k as u64))
                .flatten()
                .map(|t| (t.ci_low, t.ci_high));
            let (pm, qm) = (median(&b), median(&a));
            RatioRow {
                metric: (*name).to_owned(),
                pinned_median: pm,
                peer_median: qm,
                ratio: if qm > 0.0 { pm / qm } else { f64::NAN },
                round_min: lo,
                round_max: hi,
                ci,
            }
        })
        .collect()
}

/// The table `pinned bench e2e` prints.
pub fn ratio_table(rows: &[RatioRow], rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:>14} {:>14} {:>9}  {:<19} {:<19}",
        "metric", "pinned", "onnxruntime", "pin/ort", "rounds min..max", "95% CI (bootstrap)"
    );
    for r in rows {
        let unit = |v: f64| {
            if r.metric == "tps" {
                format!("{v:.1}/s")
            } else {
                format!("{:.1}us", v / 1e3)
            }
        };
        let ci =
            r.ci.map_or_else(|| "-".to_owned(), |(l, h)| format!("[{l:.3}, {h:.3}]"));
        let _ = writeln!(
            out,
            "{:<8} {:>14} {:>14} {:>9.3}  {:<19} {:<19}",
            r.metric,
            unit(r.pinned_median),
            unit(r.peer_median),
            r.ratio,
            format!("{:.3}..{:.3}", r.round_min, r.round_max),
            ci
        );
    }
    let _ = writeln!(
        out,
        "medians of {rounds} alternating rounds; pin/ort below 1 is better for latency, above 1 for tps"
    );
    out
}

/// Bytes of weight matrices an MLP manifest names (what a batch-1 request
/// reads); `None` for anything else (MiniLM, a file that does not parse).
pub fn mlp_weight_bytes(manifest: &Path) -> Option<u64> {
    let spec: pinned_runtime::models::MlpManifest =
        serde_json::from_str(&std::fs::read_to_string(manifest).ok()?).ok()?;
    let file =
        pinned_runtime::models::WeightsFile::open(manifest.parent()?.join(&spec.weights)).ok()?;
    spec.layers
        .iter()
        .map(|l| {
            file.shape(&l.weight)
                .ok()
                .map(|s| s.iter().product::<usize>() as u64 * 4)
        })
        .sum()
}

/// One engine's turn in a round: in the server scenario its capacity
/// first (offline, `capacity_secs`) and `o.load` of it as the arrival
/// rate, then the measured run; prints both. `run(scenario, qps, seconds,
/// label)` runs the engine once.
fn engine_round(
    o: &E2eOptions,
    round: usize,
    engine: &str,
    capacity_secs: f64,
    mut run: impl FnMut(Scenario, Option<f64>, f64, &str) -> Result<RunRecord, E2eError>,
) -> Result<RunRecord, E2eError> {
    let mut qps = None;
    if o.scenario == Scenario::Server {
        let label = format!("e2e-capacity-r{round}-{engine}");
        let cap = run(Scenario::Offline, None, capacity_secs, &label)?;
        let tps = cap.partitions[0].tps;
        qps = Some(o.load * tps);
        println!(
            "round {round} {engine:<11} capacity {tps:.1}/s -> server at {:.1}/s",
            o.load * tps
        );
    }
    let rec = run(
        o.scenario,
        qps,
        o.duration_s,
        &format!("e2e-r{round}-{engine}"),
    )?;
    let p = &rec.partitions[0];
    let wait = &rec.config.partitions[0].wait;
    println!(
        "round {round} {engine:<11} p50 {:>9.1}us p99 {:>9.1}us tps {:>9.1}  {} (wait {wait})",
        p.latency.p50_ns as f64 / 1e3,
        p.latency.p99_ns as f64 / 1e3,
        p.tps,
        rec.id,
    );
    Ok(rec)
}

/// The weight-read limit of a bandwidth-bound MLP, measured now: one
/// thread streaming a buffer of the weights' size bounds a request's
/// latency from below, all workers streaming bound the throughput.
fn print_bandwidth_limit(bytes: u64, workers: usize, pinned: &[PartitionResult]) {
    use pinned_kernels::gemm::ThreadTeam;
    let floats = (bytes / 4) as usize;
    let bw = |threads: usize| {
        ThreadTeam::new(threads)
            .ok()
            .map(|team| crate::gemm_bench::probes::read_bandwidth_gbps(&team, floats, 5))
    };
    let (Some(one), Some(all)) = (bw(1), bw(workers)) else {
        eprintln!("pinned bench e2e: no thread team for the bandwidth probe");
        return;
    };
    let floor_us = bytes as f64 / (one * 1e9) * 1e6;
    let ceiling = all * 1e9 / bytes as f64;
    let p50 = median(
        &pinned
            .iter()
            .map(|p| p.service.p50_ns as f64 / 1e3)
            .collect::<Vec<_>>(),
    );
    let tps = median(&pinned.iter().map(|p| p.tps).collect::<Vec<_>>());
    println!(
        "weights {:.1} MB; read bandwidth now: {one:.1} GB/s (1 thread), {all:.1} GB/s ({workers} threads)",
        bytes as f64 / 1e6
    );
    println!(
        "  batch-1 limit: {floor_us:.1} us per request on one worker, {ceiling:.1} requests/s on {workers}; \
         pinned service p50 {p50:.1} us = {:.3}x the limit, tps {tps:.1} = {:.3} of the ceiling",
        p50 / floor_us,
        tps / ceiling
    );
}

/// Runs the comparison and prints its table; `Ok(false)` when the peer was
/// not asked for and is missing (pinned ran alone).
pub fn run(o: &E2eOptions) -> Result<bool, E2eError> {
    if o.rounds == 0 {
        return Err(E2eError::Options("--rounds must be >= 1".to_owned()));
    }
    if let Some(p) = o.peer.as_deref().filter(|p| *p != "onnxruntime") {
        return Err(E2eError::Options(format!(
            "unknown peer '{p}' (onnxruntime)"
        )));
    }
    if o.scenario == Scenario::MultiModel {
        return Err(E2eError::Options(
            "e2e compares one partition: single-stream, server or offline".to_owned(),
        ));
    }
    let model = resolve_model(&o.model, &o.out)?;
    let (dir, python) = peer_paths();
    let have_peer = python.is_file() && dir.join("peer_runner.py").is_file();
    if !have_peer {
        let missing = E2eError::PeerMissing {
            python: python.display().to_string(),
            dir: dir.display().to_string(),
        };
        if o.peer.is_some() {
            return Err(missing);
        }
        eprintln!("pinned bench e2e: {missing}; running pinned alone");
    }
    std::fs::create_dir_all(&o.out).map_err(io_err(&o.out))?;
    let machine_path = o.out.join("machine.json");
    let machine = serde_json::to_string_pretty(&Fingerprint::collect()).unwrap_or_default();
    std::fs::write(&machine_path, machine).map_err(io_err(&machine_path))?;

    let mut theirs = Side {
        qps: None,
        spinning: "both".to_owned(),
    };
    let (mut a, mut b) = (Vec::new(), Vec::new());
    // Server rounds: each engine at the same fraction of its own capacity
    // (offline), measured right before each of its rounds. The weights'
    // L3 residency when a round starts depends on which engine ran last,
    // so a capacity measured once, up front, can make "70%" an overload in
    // a later round (MLP batch 1: pinned measured 1,080 req/s with its
    // weights partly in L3 against a DRAM ceiling of 869).
    let capacity_secs = (o.duration_s / 2.0).max(1.0);
    for round in 0..o.rounds {
        let rec = engine_round(
            o,
            round,
            "pinned",
            capacity_secs,
            |scenario, qps, secs, label| run_pinned(o, &model, scenario, qps, secs, label),
        )?;
        a.push(rec.partitions[0].clone());
        if !have_peer {
            continue;
        }
        let rec = engine_round(
            o,
            round,
            "onnxruntime",
            capacity_secs,
            |scenario, qps, secs, label| {
                let side = Side {
                    qps,
                    ..theirs.clone()
                };
                run_peer(o, &model, scenario, &side, secs, label, &machine_path)
            },
        )?;
        // The first round chose spinning on or off; keep it for the rest.
        theirs.spinning = if rec.config.partitions[0].wait == "spin" {
            "on"
        } else {
            "off"
        }
        .to_owned();
        b.push(rec.partitions[0].clone());
    }
    if o.batch == 1 {
        if let Some(bytes) = mlp_weight_bytes(&model) {
            let workers = o
                .workers
                .unwrap_or_else(|| allowed_cpu_count(o.cpus.as_deref()));
            print_bandwidth_limit(bytes, workers, &a);
        }
    }
    if !have_peer {
        return Ok(false);
    }
    println!();
    println!(
        "{} {} pinned {:?} vs onnxruntime f32, batch {}, cpus {}, records in {}",
        o.scenario,
        model.display(),
        o.precision,
        o.batch,
        a[0].cpus,
        o.out.display()
    );
    print!("{}", ratio_table(&ratio_rows(&a, &b), o.rounds));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(p50: u64, tps: f64) -> PartitionResult {
        let record = RunRecord::from_json(include_str!("../peers/example-record.json")).unwrap();
        let mut p = record.partitions[0].clone();
        p.latency.p50_ns = p50;
        p.latency.p99_ns = 2 * p50;
        p.latency.p999_ns = 3 * p50;
        p.latency.stddev_ns = p50 as f64 / 10.0;
        p.tps = tps;
        p
    }

    #[test]
    fn ratios_are_pinned_over_peer_with_round_spread() {
        let ours = [
            partition(100, 20.0),
            partition(110, 22.0),
            partition(90, 18.0),
        ];
        let theirs = [
            partition(200, 10.0),
            partition(200, 10.0),
            partition(200, 10.0),
        ];
        let rows = ratio_rows(&ours, &theirs);
        let p50 = &rows[0];
        assert_eq!(p50.metric, "p50");
        assert_eq!(p50.ratio, 0.5);
        assert_eq!((p50.round_min, p50.round_max), (0.45, 0.55));
        let (lo, hi) = p50.ci.unwrap();
        assert!(lo <= 0.5 && 0.5 <= hi, "{lo} {hi}");
        let tps = rows.iter().find(|r| r.metric == "tps").unwrap();
        assert_eq!(tps.ratio, 2.0);
        let table = ratio_table(&rows, 3);
        assert!(
            table.contains("p99.9") && table.contains("2.000"),
            "{table}"
        );
        let single = ratio_rows(&ours[..1], &theirs[..1]);
        assert!(single[0].ci.is_none());
    }

    #[test]
    fn mlp_file_is_deterministic_and_loads_in_pinned() {
        let dir = std::env::temp_dir().join(format!("pinned-e2e-mlp-{}", std::process::id()));
        let m1 = write_mlp(&dir.join("a"), &[8, 16, 4], 7).unwrap();
        let m2 = write_mlp(&dir.join("b"), &[8, 16, 4], 7).unwrap();
        let w = |m: &Path| std::fs::read(m.parent().unwrap().join("mlp.safetensors")).unwrap();
        assert_eq!(w(&m1), w(&m2), "same seed, same bytes");
        let mlp = pinned_runtime::models::Mlp::load(&m1, Default::default()).unwrap();
        assert_eq!(mlp.widths(), &[8, 16, 4]);
        let file =
            pinned_runtime::models::WeightsFile::open(m1.parent().unwrap().join("mlp.safetensors"))
                .unwrap();
        let first = file.tensor_f32("fc0.weight", &[16, 8]).unwrap();
        let mut rng = SplitMix64::new(7);
        let expect = (rng.next_f64() * 2.0 - 1.0) as f32 / 8f32.sqrt();
        assert_eq!(
            first[0], expect,
            "weights come from SplitMix64 in the documented order"
        );
        assert_eq!(mlp_weight_bytes(&m1), Some((8 * 16 + 16 * 4) * 4));
        assert!(write_mlp(&dir.join("c"), &[8], 1).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn model_specs_resolve() {
        let out = std::env::temp_dir().join(format!("pinned-e2e-spec-{}", std::process::id()));
        let m = resolve_model("mlp:4x8x2", &out).unwrap();
        assert!(
            m.ends_with("models/mlp-4x8x2-seed1/mlp.json"),
            "{}",
            m.display()
        );
        assert_eq!(resolve_model("mlp:4x8x2", &out).unwrap(), m, "reused");
        assert!(matches!(
            resolve_model("mlp:4xq", &out),
            Err(E2eError::Options(_))
        ));
        assert!(matches!(
            resolve_model("/no/such/model", &out),
            Err(E2eError::Options(_))
        ));
        let _ = std::fs::remove_dir_all(&out);
    }
}
