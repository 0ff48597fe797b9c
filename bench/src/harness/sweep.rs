//! `pinned sweep --vary PARAM=V1,V2,...`: one parameter changed, everything
//! else held identical, configurations run interleaved (A B A B ...) so slow
//! drift (temperature, other tenants, frequency) lands on all of them alike,
//! and each metric reported as median and spread with its ratio to the first
//! configuration and whether that ratio is beyond run-to-run noise.

use pinned_allocator::IdList;
use serde::{Deserialize, Serialize};

use super::config::{MemoryPlacement, PartitionConfig, Precision, RunConfig, Scenario};
use super::record::RunRecord;
use super::stats::{bootstrap_ratio, median, min_max, RatioTest, BOOTSTRAP_ITERATIONS};

/// The parameters a sweep can vary, and the values each accepts.
pub const PARAMETERS: &[(&str, &str)] = &[
    ("pin", "on | off"),
    (
        "placement",
        "local | remote | interleave | bind:N | preferred:N",
    ),
    ("division", "isolated | shared (two or more partitions)"),
    ("qps", "requests per second (server scenario)"),
    ("load", "fraction of offline capacity (server scenario)"),
    ("workers", "worker threads per partition"),
    ("batch", "largest batch"),
    ("max-wait-us", "batch formation wait in microseconds"),
    ("wait", "spin | yield | park"),
    ("cpus", "cpu set (taskset -c form)"),
    ("precision", "f32 | bf16 | int8"),
    ("model", "mlp | PATH"),
];

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SweepError {
    #[error("a sweep varies exactly one parameter; got {0} (--vary {1}). Run one sweep per parameter so every difference has one cause")]
    TwoParameters(usize, String),
    #[error("nothing to vary: give --vary PARAM=V1,V2 (parameters: {0})")]
    NoParameter(String),
    #[error("'{0}' is not PARAM=V1,V2,...")]
    BadForm(String),
    #[error("unknown sweep parameter '{0}' (parameters: {1})")]
    UnknownParameter(String, String),
    #[error("--vary {0} needs at least two values to compare")]
    OneValue(String),
    #[error("--vary {param}: value '{value}' appears twice")]
    Duplicate { param: String, value: String },
    #[error("--vary {param}={value}: {message}")]
    BadValue {
        param: String,
        value: String,
        message: String,
    },
}

/// The parsed `--vary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepSpec {
    pub param: String,
    pub values: Vec<String>,
}

fn parameter_names() -> String {
    PARAMETERS
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

impl SweepSpec {
    /// Parses the `--vary` arguments; more than one parameter is refused,
    /// whether given as two `--vary` or packed into one (`a=1;b=2`, `a=1,b=2`).
    pub fn parse(varies: &[String]) -> Result<Self, SweepError> {
        match varies {
            [] => Err(SweepError::NoParameter(parameter_names())),
            [one] => Self::parse_one(one),
            many => Err(SweepError::TwoParameters(many.len(), many.join(" --vary "))),
        }
    }

    fn parse_one(text: &str) -> Result<Self, SweepError> {
        let equals = text.matches('=').count();
        if equals > 1 {
            return Err(SweepError::TwoParameters(equals, text.to_owned()));
        }
        let (param, values) = text
            .split_once('=')
            .ok_or_else(|| SweepError::BadForm(text.to_owned()))?;
        let param = param.trim().replace('_', "-");
        if !PARAMETERS.iter().any(|(n, _)| *n == param) {
            return Err(SweepError::UnknownParameter(param, parameter_names()));
        }
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if values.len() < 2 {
            return Err(SweepError::OneValue(param));
        }
        for (i, v) in values.iter().enumerate() {
            if values[..i].contains(v) {
                return Err(SweepError::Duplicate {
                    param,
                    value: v.clone(),
                });
            }
        }
        Ok(Self { param, values })
    }
}

/// What a sweep needs to know of the machine.
#[derive(Clone, Debug)]
pub struct MachineShape {
    /// CPUs this process may use.
    pub allowed: IdList,
    /// Nodes with memory.
    pub memory_nodes: IdList,
    /// The node of each allowed CPU (same order as `allowed`).
    pub node_of_cpu: Vec<Option<usize>>,
}

/// One configuration of a sweep, or why it is skipped on this machine.
#[derive(Clone, Debug)]
pub enum Point {
    Run { value: String, config: RunConfig },
    Skipped { value: String, reason: String },
}

/// Builds the configuration for each value: `base` with only `param` changed.
pub fn points(
    spec: &SweepSpec,
    base: &RunConfig,
    machine: &MachineShape,
) -> Result<Vec<Point>, SweepError> {
    spec.values
        .iter()
        .map(|value| apply(&spec.param, value, base, machine))
        .collect()
}

fn apply(
    param: &str,
    value: &str,
    base: &RunConfig,
    machine: &MachineShape,
) -> Result<Point, SweepError> {
    let bad = |message: String| SweepError::BadValue {
        param: param.to_owned(),
        value: value.to_owned(),
        message,
    };
    let mut config = base.clone();
    let each = |config: &mut RunConfig, f: &dyn Fn(&mut PartitionConfig)| {
        config.partitions.iter_mut().for_each(f);
    };
    match param {
        "pin" => {
            let pin = match value {
                "on" | "true" | "yes" => true,
                "off" | "false" | "no" => false,
                _ => return Err(bad("expected on or off".to_owned())),
            };
            each(&mut config, &|p| p.pin = pin);
        }
        "placement" => {
            let memory = match value {
                "local" => MemoryPlacement::Local,
                "remote" => {
                    if machine.memory_nodes.len() < 2 {
                        return Ok(Point::Skipped {
                            value: value.to_owned(),
                            reason: format!(
                                "this machine has one memory node ({}): there is no remote memory to place on",
                                machine.memory_nodes
                            ),
                        });
                    }
                    MemoryPlacement::Remote
                }
                "interleave" => MemoryPlacement::Interleave("all".to_owned()),
                other => {
                    if let Some(n) = other.strip_prefix("bind:") {
                        MemoryPlacement::Bind(n.to_owned())
                    } else if let Some(n) = other.strip_prefix("preferred:") {
                        MemoryPlacement::Preferred(
                            n.parse().map_err(|_| bad("node is a number".to_owned()))?,
                        )
                    } else {
                        return Err(bad(
                            "expected local, remote, interleave, bind:N or preferred:N".to_owned(),
                        ));
                    }
                }
            };
            each(&mut config, &|p| p.memory = memory.clone());
        }
        "division" => divide(&mut config, value, machine).map_err(bad)?,
        "qps" => {
            let qps: f64 = value
                .parse()
                .map_err(|_| bad("expected a number".to_owned()))?;
            if qps.is_nan() || qps <= 0.0 {
                return Err(bad("qps must be > 0".to_owned()));
            }
            if config.scenario == Scenario::SingleStream || config.scenario == Scenario::Offline {
                config.scenario = Scenario::Server;
            }
            each(&mut config, &|p| p.qps = Some(qps));
        }
        "load" => {
            let load: f64 = value
                .parse()
                .map_err(|_| bad("expected a fraction like 0.7".to_owned()))?;
            if load.is_nan() || load <= 0.0 {
                return Err(bad("load must be > 0".to_owned()));
            }
            config.load_fraction = load;
        }
        "workers" | "batch" | "max-wait-us" => {
            let n: u64 = value
                .parse()
                .map_err(|_| bad("expected a whole number".to_owned()))?;
            if n == 0 && param != "max-wait-us" {
                return Err(bad("must be >= 1".to_owned()));
            }
            each(&mut config, &|p| match param {
                "workers" => p.workers = Some(n as usize),
                "batch" => p.batch = n as usize,
                _ => p.max_wait_us = n,
            });
        }
        "wait" => each(&mut config, &|p| p.wait = value.to_owned()),
        "cpus" => each(&mut config, &|p| p.cpus = Some(value.to_owned())),
        "precision" => {
            let precision = Precision::parse(value).map_err(|e| bad(e.to_string()))?;
            each(&mut config, &|p| p.precision = precision);
        }
        "model" => each(&mut config, &|p| p.model = value.to_owned()),
        other => {
            return Err(SweepError::UnknownParameter(
                other.to_owned(),
                parameter_names(),
            ))
        }
    }
    config.validate().map_err(|e| bad(e.to_string()))?;
    Ok(Point::Run {
        value: value.to_owned(),
        config,
    })
}

/// `isolated`: each partition owns a disjoint, equal slice of the allowed
/// CPUs (workers pinned as the base says). `shared`: every partition may run
/// on every allowed CPU and the scheduler divides them (workers not pinned to
/// single CPUs). Both keep the same worker count per partition, so only the
/// division of cores changes.
fn divide(config: &mut RunConfig, value: &str, machine: &MachineShape) -> Result<(), String> {
    let n = config.partitions.len();
    if n < 2 {
        return Err("division needs two or more partitions (a multi-model config)".to_owned());
    }
    let cpus = machine.allowed.as_slice();
    if cpus.len() < n {
        return Err(format!(
            "{} allowed cpus cannot be divided among {n} partitions",
            cpus.len()
        ));
    }
    let per = cpus.len() / n;
    for (i, p) in config.partitions.iter_mut().enumerate() {
        let slice = IdList::from_ids(cpus[i * per..(i + 1) * per].to_vec());
        p.workers = Some(p.workers.unwrap_or(per));
        match value {
            "isolated" => p.cpus = Some(slice.to_string()),
            "shared" => {
                p.cpus = Some(machine.allowed.to_string());
                p.pin = false;
            }
            _ => return Err("expected isolated or shared".to_owned()),
        }
    }
    Ok(())
}

/// The order runs happen in: round `r` runs every configuration once, in
/// order; so the sequence is A B A B ... and drift hits each alike.
pub fn interleaved_order(configs: usize, repeats: usize) -> Vec<(usize, usize)> {
    (0..repeats)
        .flat_map(|r| (0..configs).map(move |c| (r, c)))
        .collect()
}

/// The metrics a sweep compares: (name, unit, higher is better).
pub const METRICS: &[(&str, &str, bool)] = &[
    ("tps", "req/s", true),
    ("p50", "us", false),
    ("p90", "us", false),
    ("p99", "us", false),
    ("p99.9", "us", false),
    ("mean", "us", false),
    ("cv", "", false),
];

/// One metric of a run, summed (tps) or worst-of (latencies) over its
/// partitions: a multi-model run is as good as its slowest partition.
pub fn metric(record: &RunRecord, name: &str) -> Option<f64> {
    let parts = &record.partitions;
    if parts.is_empty() {
        return None;
    }
    if name == "tps" {
        return Some(parts.iter().map(|p| p.tps).sum());
    }
    let scale = if name == "cv" { 1.0 } else { 1e-3 };
    parts
        .iter()
        .filter_map(|p| p.latency.get(name))
        .map(|v| v * scale)
        .reduce(f64::max)
}

/// A metric of one configuration over its repeats, against the first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricRow {
    pub metric: String,
    pub unit: String,
    pub value: String,
    pub runs: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Against the first configuration; `None` for the first itself.
    pub vs_first: Option<RatioTest>,
}

/// Median, spread and significance of every metric of every configuration.
/// `runs[c]` holds configuration `c`'s records (one per repeat).
pub fn summarise(values: &[String], runs: &[Vec<RunRecord>]) -> Vec<MetricRow> {
    let mut rows = Vec::new();
    for &(name, unit, _) in METRICS {
        let series: Vec<Vec<f64>> = runs
            .iter()
            .map(|rs| rs.iter().filter_map(|r| metric(r, name)).collect())
            .collect();
        for (c, xs) in series.iter().enumerate() {
            if xs.is_empty() {
                continue;
            }
            let (lo, hi) = min_max(xs);
            rows.push(MetricRow {
                metric: name.to_owned(),
                unit: unit.to_owned(),
                value: values[c].clone(),
                runs: xs.clone(),
                median: median(xs),
                min: lo,
                max: hi,
                vs_first: (c > 0)
                    .then(|| {
                        bootstrap_ratio(&series[0], xs, BOOTSTRAP_ITERATIONS, 0x5eed + c as u64)
                    })
                    .flatten(),
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaving() {
        assert_eq!(
            interleaved_order(2, 3),
            vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]
        );
    }
}
