//! The JSON record every run leaves in `results/`: the full configuration,
//! the machine, the raw latency histograms and the metrics derived from them,
//! so that a number can always be traced back to how it was measured.
//!
//! Schema `pinned-run/1`. Unknown fields are refused on reading, so a record
//! that validates has exactly the documented shape; [`RunRecord::check`]
//! then verifies that it is internally consistent.

use std::path::{Path, PathBuf};

use base64::Engine;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use super::cpu_usage::CoreUtilisation;
use super::fingerprint::Fingerprint;
use super::stats::LatencySummary;

pub const SCHEMA: &str = "pinned-run/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `YYYYmmddTHHMMSSZ-<scenario>[-<label>]`, also the file's stem.
    pub id: String,
    pub started_unix_ms: u64,
    /// Free text: which sweep point this run was, etc.
    pub label: String,
    pub config: RunConfig,
    pub machine: Fingerprint,
    /// Busy share of each core over the measured window (all partitions).
    pub cores: Vec<CoreUtilisation>,
    pub partitions: Vec<PartitionResult>,
}

/// What one partition did during the measured window.
///
/// Invariants: `completed <= issued`, `issued + rejected <= offered`,
/// `completed = latency.count = issue_delay.count`, `queue_wait.count =
/// service.count` within `slots + carried_in` of `completed` (the workers
/// count what they served in the window; requests at its edges differ),
/// `tps = completed / measured_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionResult {
    pub name: String,
    pub scenario: String,
    pub model: String,
    /// The CPUs the partition ran on, and its worker count.
    pub cpus: String,
    pub workers: usize,
    pub pinned: bool,
    pub measured_s: f64,
    /// Requests scheduled in the window (open loop), or sent (closed loop).
    pub offered: u64,
    /// Requests handed to the runtime in the window.
    pub issued: u64,
    /// Requests that completed in the window (the measured ones).
    pub completed: u64,
    /// Requests completed during the warm-up (not measured).
    pub warmup_completed: u64,
    /// Requests that could not be issued (ring full past the deadline).
    pub rejected: u64,
    /// Warm-up requests still queued or in flight when the window opened,
    /// plus those the workers served after their reset but the host saw
    /// before it noticed the window: served inside the workers' window
    /// (they count them), not measured. Large when the offered load
    /// exceeds capacity.
    pub carried_in: u64,
    /// Requests per second scheduled (open loop); `null` for closed loops.
    pub offered_qps: Option<f64>,
    /// Completed requests per second: the throughput.
    pub tps: f64,
    /// Scheduled send (open loop) or send (closed loop) to completion, as
    /// the host saw it: coordinated omission corrected.
    pub latency: LatencySummary,
    /// Scheduled send to actual send: how far the load fell behind.
    pub issue_delay: LatencySummary,
    /// Submit to a worker taking the request (measured by the workers).
    pub queue_wait: LatencySummary,
    /// A worker taking the request to its result (measured by the workers).
    pub service: LatencySummary,
    /// Request slots: the most requests in flight at once.
    pub slots: usize,
    /// Whether `completed` is enough for the p99 (and p99.9) claim.
    pub enough_for_p99: bool,
    pub enough_for_p999: bool,
    /// The latency histogram, HDR V2 deflate, base64 (HdrHistogram log form).
    pub latency_hdr_base64: String,
    pub worker_stats: Vec<WorkerStats>,
    pub placement: Vec<BufferPlacement>,
}

/// One worker thread over the measured window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStats {
    pub index: usize,
    /// The CPU it was pinned to; `null` when unpinned.
    pub pinned_cpu: Option<usize>,
    /// The CPU it last ran on.
    pub last_cpu: Option<usize>,
    pub cpu_time_ms: f64,
    /// `cpu_time / measured_s`, in percent of one core.
    pub cpu_pct: f64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// `null` when the kernel has no `/proc/<tid>/sched`.
    pub migrations: Option<u64>,
    pub requests: u64,
}

/// Where a buffer's pages actually are (from `move_pages` queries).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferPlacement {
    /// `weights`, `scratch`, ...
    pub buffer: String,
    pub bytes: u64,
    /// `(node, pages)`, ascending by node; pages not yet faulted are absent.
    pub pages_per_node: Vec<(usize, u64)>,
}

/// Why a record is not internally consistent.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("record schema is '{0}', expected '{SCHEMA}'")]
    Schema(String),
    #[error("partition {partition}: {message}")]
    Inconsistent { partition: String, message: String },
    #[error("core {cpu}: {message}")]
    Core { cpu: usize, message: String },
    #[error("cannot read record {path}: {message}")]
    Read { path: String, message: String },
    #[error("cannot write record {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("latency histogram: {0}")]
    Histogram(String),
}

impl RunRecord {
    /// Verifies the counts add up, the percentiles are ordered, the
    /// utilisations are percentages and the stored histogram matches.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.schema != SCHEMA {
            return Err(RecordError::Schema(self.schema.clone()));
        }
        for core in &self.cores {
            for (what, v) in [
                ("busy", core.busy_pct),
                ("user", core.user_pct),
                ("system", core.system_pct),
            ] {
                if !(0.0..=100.0).contains(&v) {
                    return Err(RecordError::Core {
                        cpu: core.cpu,
                        message: format!("{what} {v}% outside 0..100"),
                    });
                }
            }
            if core.user_pct + core.system_pct > core.busy_pct + 1e-6 {
                return Err(RecordError::Core {
                    cpu: core.cpu,
                    message: "user + system exceeds busy".to_owned(),
                });
            }
        }
        if self.partitions.is_empty() {
            return Err(RecordError::Inconsistent {
                partition: "-".to_owned(),
                message: "no partition results".to_owned(),
            });
        }
        self.partitions.iter().try_for_each(PartitionResult::check)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a record always serializes")
    }

    pub fn from_json(text: &str) -> Result<Self, RecordError> {
        serde_json::from_str(text).map_err(|e| RecordError::Read {
            path: "<text>".to_owned(),
            message: e.to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<Self, RecordError> {
        let text = std::fs::read_to_string(path).map_err(|e| RecordError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| RecordError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Writes `<dir>/<id>.json` (creating `dir`) and returns its path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, RecordError> {
        let path = dir.join(format!("{}.json", self.id));
        let write_err = |source| RecordError::Write {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(write_err)?;
        std::fs::write(&path, self.to_json() + "\n").map_err(write_err)?;
        Ok(path)
    }
}

impl PartitionResult {
    pub fn check(&self) -> Result<(), RecordError> {
        let bad = |message: String| {
            Err(RecordError::Inconsistent {
                partition: self.name.clone(),
                message,
            })
        };
        if self.completed > self.issued {
            return bad(format!(
                "completed {} > issued {}",
                self.completed, self.issued
            ));
        }
        if self.issued + self.rejected > self.offered {
            return bad(format!(
                "issued {} + rejected {} > offered {}",
                self.issued, self.rejected, self.offered
            ));
        }
        for (what, s) in [
            ("latency", &self.latency),
            ("issue_delay", &self.issue_delay),
        ] {
            if s.count != self.completed {
                return bad(format!(
                    "{what}.count {} != completed {}",
                    s.count, self.completed
                ));
            }
        }
        if self.queue_wait.count != self.service.count {
            return bad(format!(
                "queue_wait.count {} != service.count {}",
                self.queue_wait.count, self.service.count
            ));
        }
        let edge = self.slots as u64 + self.carried_in;
        if self.service.count.abs_diff(self.completed) > edge {
            return bad(format!(
                "workers served {} in the window, {} completed: more apart than the {} slots + {} carried in",
                self.service.count, self.completed, self.slots, self.carried_in
            ));
        }
        for (what, s) in [
            ("latency", &self.latency),
            ("issue_delay", &self.issue_delay),
            ("queue_wait", &self.queue_wait),
            ("service", &self.service),
        ] {
            let order = [s.min_ns, s.p50_ns, s.p90_ns, s.p99_ns, s.p999_ns, s.max_ns];
            if order.windows(2).any(|w| w[0] > w[1]) {
                return bad(format!("{what} percentiles out of order: {order:?}"));
            }
            if s.count > 0 && !(s.mean_ns >= s.min_ns as f64 && s.mean_ns <= s.max_ns as f64) {
                return bad(format!("{what} mean {} outside min..max", s.mean_ns));
            }
        }
        if self.measured_s <= 0.0 {
            return bad(format!("measured window {} s", self.measured_s));
        }
        let tps = self.completed as f64 / self.measured_s;
        if (tps - self.tps).abs() > 1e-6 * tps.max(1.0) {
            return bad(format!(
                "tps {} != completed / measured_s = {tps}",
                self.tps
            ));
        }
        let per_worker: u64 = self.worker_stats.iter().map(|w| w.requests).sum();
        // The workers' counters are read when the window opens, a moment
        // after its first requests may have been served: at most `slots`.
        if !self.worker_stats.is_empty() && per_worker + (self.slots as u64) < self.completed {
            return bad(format!(
                "workers served {per_worker} requests, fewer than the {} completed less {} slots",
                self.completed, self.slots
            ));
        }
        let hist = decode_histogram(&self.latency_hdr_base64)?;
        if hist.len() != self.completed {
            return bad(format!(
                "stored histogram holds {} samples, completed is {}",
                hist.len(),
                self.completed
            ));
        }
        if LatencySummary::from_histogram(&hist).p99_ns != self.latency.p99_ns {
            return bad("stored histogram's p99 differs from latency.p99_ns".to_owned());
        }
        Ok(())
    }
}

/// HDR V2 deflate bytes, base64 (what HdrHistogram's log writers store).
pub fn encode_histogram(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(hist, &mut bytes)
        .expect("serializing to a Vec cannot fail");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_histogram(text: &str) -> Result<Histogram<u64>, RecordError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| RecordError::Histogram(e.to_string()))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| RecordError::Histogram(format!("{e:?}")))
}

/// `YYYYmmddTHHMMSSZ` for a Unix time in milliseconds (UTC, civil calendar
/// from days since 1970 by Howard Hinnant's `civil_from_days`).
pub fn utc_stamp(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips() {
        let mut h = super::super::stats::latency_histogram();
        for v in [1_000u64, 2_000, 3_000, 1_000_000] {
            h.record(v).unwrap();
        }
        let back = decode_histogram(&encode_histogram(&h)).unwrap();
        assert_eq!(back.len(), 4);
        assert_eq!(back.max(), h.max());
        assert!(decode_histogram("not base64!").is_err());
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(951_782_400_000), "20000229T000000Z");
        assert_eq!(utc_stamp(1_795_916_400_000), "20261129T014000Z");
    }
}
