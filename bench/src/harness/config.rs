//! What one measurement run is: the scenario, its duration and load, and the
//! partitions it drives. Built from `pinned run` options (numactl / taskset
//! spelling) or a TOML file for multi-partition setups, and stored verbatim
//! in every record.
//!
//! A TOML file:
//! ```toml
//! scenario = "multi-model"   # single-stream | server | offline | multi-model
//! duration = 10              # seconds measured, after the warm-up
//! [[partition]]
//! name = "a"
//! cpus = "0"                 # taskset -c form; omitted = every allowed cpu
//! membind = "0"              # or interleave = "all", or preferred = 1
//! model = "mlp"
//! qps = 400                  # omitted: single-stream (closed loop)
//! [[partition]]
//! name = "b"
//! cpus = "1"
//! ```

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// The load pattern, as MLPerf LoadGen names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Closed loop: the next request is sent when the previous one returns.
    SingleStream,
    /// Open loop: Poisson arrivals at a fixed rate; latency counted from the
    /// scheduled send time (coordinated omission corrected).
    Server,
    /// Every request queued at once: throughput.
    Offline,
    /// Two or more partitions, each with its own model and load, at once.
    MultiModel,
}

impl Scenario {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Ok(match text.trim() {
            "single-stream" | "single" => Self::SingleStream,
            "server" => Self::Server,
            "offline" => Self::Offline,
            "multi-model" | "multi" => Self::MultiModel,
            other => {
                return Err(ConfigError::BadValue {
                    what: "scenario",
                    value: other.to_owned(),
                    expected: "single-stream, server, offline or multi-model",
                })
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SingleStream => "single-stream",
            Self::Server => "server",
            Self::Offline => "offline",
            Self::MultiModel => "multi-model",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a partition's memory goes, in `numactl`'s terms.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy", content = "nodes")]
pub enum MemoryPlacement {
    /// The node of the partition's CPUs (first touch by pinned workers).
    Local,
    /// `--membind N`: only these nodes (kernel list form).
    Bind(String),
    /// `--interleave all|LIST`: pages round-robin over these nodes.
    Interleave(String),
    /// `--preferred N`: this node first, others when it is full.
    Preferred(usize),
    /// A node other than the CPUs' own (the sweep's `placement=remote`).
    Remote,
}

impl fmt::Display for MemoryPlacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Bind(n) => write!(f, "membind {n}"),
            Self::Interleave(n) => write!(f, "interleave {n}"),
            Self::Preferred(n) => write!(f, "preferred {n}"),
            Self::Remote => f.write_str("remote"),
        }
    }
}

/// Weight precision requested of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Bf16,
    Int8,
}

impl Precision {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        Ok(match text.trim() {
            "f32" | "fp32" => Self::F32,
            "bf16" => Self::Bf16,
            "int8" | "i8" => Self::Int8,
            other => {
                return Err(ConfigError::BadValue {
                    what: "precision",
                    value: other.to_owned(),
                    expected: "f32, bf16 or int8",
                })
            }
        })
    }
}

/// One partition: a core set, its memory placement and one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    pub name: String,
    /// CPU set in `taskset -c` / runtime `CpuContext` form; `None` = all allowed.
    pub cpus: Option<String>,
    /// Pin each worker to one CPU of the set (`false` = `--no-pin`: workers
    /// may run anywhere in the set, the scheduler decides).
    pub pin: bool,
    /// Worker threads; `None` = one per CPU of the set.
    pub workers: Option<usize>,
    /// Threads one request may use when it is alone in flight (the model's
    /// team, on the set's CPUs); `None` = the workers' count.
    #[serde(default)]
    pub model_threads: Option<usize>,
    pub memory: MemoryPlacement,
    /// Largest batch a worker forms, and how long it waits to fill it.
    pub batch: usize,
    pub max_wait_us: u64,
    /// `spin`, `yield` or `park` (optionally `:<spin_us>`).
    pub wait: String,
    /// `mlp` (the built-in dense MLP) or a model file path.
    pub model: String,
    pub precision: Precision,
    /// Requests per second for an open-loop load; `None` = closed loop
    /// (single-stream) in a multi-model run, or derived from capacity.
    pub qps: Option<f64>,
}

impl Default for PartitionConfig {
    fn default() -> Self {
        Self {
            name: "p0".to_owned(),
            cpus: None,
            pin: true,
            workers: None,
            model_threads: None,
            memory: MemoryPlacement::Local,
            batch: 1,
            max_wait_us: 0,
            wait: "park".to_owned(),
            model: "mlp".to_owned(),
            precision: Precision::F32,
            qps: None,
        }
    }
}

/// One run: a scenario over one or more partitions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub scenario: Scenario,
    /// Seconds measured after the warm-up (a minimum: the run continues
    /// until `min_count` requests completed too, up to `max_duration_s`).
    pub duration_s: f64,
    /// Seconds run and thrown away first (caches, page faults, frequency).
    pub warmup_s: f64,
    /// Completed requests the run needs at least, per partition.
    pub min_count: u64,
    /// Hard stop however few requests completed.
    pub max_duration_s: f64,
    /// Server load as a fraction of the measured offline capacity, used
    /// when a partition gives no `qps`.
    pub load_fraction: f64,
    /// Seed of the Poisson schedule (same seed, same arrival times).
    pub seed: u64,
    pub partitions: Vec<PartitionConfig>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            scenario: Scenario::SingleStream,
            duration_s: 10.0,
            warmup_s: 1.0,
            min_count: crate::harness::stats::min_samples_for_quantile(0.99),
            max_duration_s: 120.0,
            load_fraction: 0.7,
            seed: 0x5eed,
            partitions: vec![PartitionConfig::default()],
        }
    }
}

/// Why a configuration was refused; each names the bad field and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("'{value}' is not a valid {what} (expected {expected})")]
    BadValue {
        what: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Toml { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// The TOML file's shape (friendlier names than the stored record).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    scenario: Option<String>,
    duration: Option<f64>,
    warmup: Option<f64>,
    min_count: Option<u64>,
    seed: Option<u64>,
    load: Option<f64>,
    #[serde(default)]
    partition: Vec<FilePartition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePartition {
    name: Option<String>,
    cpus: Option<String>,
    pin: Option<bool>,
    workers: Option<usize>,
    model_threads: Option<usize>,
    membind: Option<String>,
    interleave: Option<String>,
    preferred: Option<usize>,
    batch: Option<usize>,
    max_wait_us: Option<u64>,
    wait: Option<String>,
    model: Option<String>,
    precision: Option<String>,
    qps: Option<f64>,
}

impl RunConfig {
    /// Reads a TOML file (format in the module doc).
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Toml { message, .. } => ConfigError::Toml {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Toml {
            path: "<text>".to_owned(),
            message: e.to_string(),
        })?;
        let mut config = Self::default();
        if let Some(s) = &file.scenario {
            config.scenario = Scenario::parse(s)?;
        }
        if let Some(d) = file.duration {
            config.duration_s = d;
        }
        if let Some(w) = file.warmup {
            config.warmup_s = w;
        }
        if let Some(m) = file.min_count {
            config.min_count = m;
        }
        if let Some(s) = file.seed {
            config.seed = s;
        }
        if let Some(l) = file.load {
            config.load_fraction = l;
        }
        if !file.partition.is_empty() {
            config.partitions = file
                .partition
                .into_iter()
                .enumerate()
                .map(|(i, p)| p.into_config(i))
                .collect::<Result<_, _>>()?;
        }
        if config.partitions.len() > 1 && file.scenario.is_none() {
            config.scenario = Scenario::MultiModel;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without the machine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !(self.duration_s > 0.0 && self.duration_s.is_finite()) {
            return bad(format!(
                "duration must be > 0 seconds, got {}",
                self.duration_s
            ));
        }
        if !(self.warmup_s >= 0.0 && self.warmup_s.is_finite()) {
            return bad(format!(
                "warm-up must be >= 0 seconds, got {}",
                self.warmup_s
            ));
        }
        if !(self.load_fraction > 0.0 && self.load_fraction.is_finite()) {
            return bad(format!("load must be > 0, got {}", self.load_fraction));
        }
        if self.partitions.is_empty() {
            return bad("at least one partition is needed".to_owned());
        }
        if self.scenario == Scenario::MultiModel && self.partitions.len() < 2 {
            return bad("multi-model needs two or more partitions (--config FILE.toml)".to_owned());
        }
        if self.scenario != Scenario::MultiModel && self.partitions.len() > 1 {
            return bad(format!(
                "{} drives one partition; {} given (use scenario = \"multi-model\")",
                self.scenario,
                self.partitions.len()
            ));
        }
        let mut names = std::collections::HashSet::new();
        for p in &self.partitions {
            if !names.insert(p.name.as_str()) {
                return bad(format!("partition name '{}' appears twice", p.name));
            }
            if p.batch == 0 {
                return bad(format!("partition {}: batch must be >= 1", p.name));
            }
            if p.workers == Some(0) {
                return bad(format!("partition {}: workers must be >= 1", p.name));
            }
            if let Some(q) = p.qps {
                if !(q > 0.0 && q.is_finite()) {
                    return bad(format!("partition {}: qps must be > 0, got {q}", p.name));
                }
            }
            pinned_runtime::WaitStrategy::parse(&wait_spelling(&p.wait)).ok_or_else(|| {
                ConfigError::BadValue {
                    what: "wait strategy",
                    value: p.wait.clone(),
                    expected: "spin, yield, park, yield:<us> or park:<us>",
                }
            })?;
        }
        Ok(())
    }
}

/// Spin budget before yielding or parking when none is given: 50 µs, about
/// the cost of one futex wake-up measured by `pinned bench ring`.
pub const DEFAULT_SPIN_US: u32 = 50;

/// `yield` / `park` without a budget get the default one.
pub fn wait_spelling(wait: &str) -> String {
    match wait.trim() {
        "yield" | "park" => format!("{}:{DEFAULT_SPIN_US}", wait.trim()),
        other => other.to_owned(),
    }
}

impl FilePartition {
    fn into_config(self, index: usize) -> Result<PartitionConfig, ConfigError> {
        let d = PartitionConfig::default();
        let given = [
            self.membind.is_some(),
            self.interleave.is_some(),
            self.preferred.is_some(),
        ];
        if given.iter().filter(|&&g| g).count() > 1 {
            return Err(ConfigError::Invalid(format!(
                "partition {index}: give at most one of membind, interleave, preferred"
            )));
        }
        let memory = match (self.membind, self.interleave, self.preferred) {
            (Some(n), _, _) => MemoryPlacement::Bind(n),
            (_, Some(n), _) => MemoryPlacement::Interleave(n),
            (_, _, Some(n)) => MemoryPlacement::Preferred(n),
            _ => MemoryPlacement::Local,
        };
        Ok(PartitionConfig {
            name: self.name.unwrap_or_else(|| format!("p{index}")),
            cpus: self.cpus,
            pin: self.pin.unwrap_or(d.pin),
            workers: self.workers,
            model_threads: self.model_threads,
            memory,
            batch: self.batch.unwrap_or(d.batch),
            max_wait_us: self.max_wait_us.unwrap_or(d.max_wait_us),
            wait: self.wait.unwrap_or(d.wait),
            model: self.model.unwrap_or(d.model),
            precision: match self.precision {
                Some(p) => Precision::parse(&p)?,
                None => d.precision,
            },
            qps: self.qps,
        })
    }
}
