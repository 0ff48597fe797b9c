//! What a person reads: the table `pinned run` prints, the sweep summary,
//! and the progress bar (drawn only on a terminal).

use std::fmt::Write as _;
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

use super::record::{PartitionResult, RunRecord};
use super::stats::LatencySummary;
use super::sweep::{MetricRow, METRICS};

/// A bar of `total_ms` milliseconds, hidden when stderr is not a terminal
/// (CI logs, pipes) or when `show` is false.
pub fn progress_bar(show: bool, total_ms: f64, message: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total_ms.max(1.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:28} [{bar:40}] {elapsed}/{duration}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(message.to_owned());
    bar
}

fn us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e3)
}

/// One row of the latency part of the table.
fn latency_row(out: &mut String, name: &str, s: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6.3}",
        us(s.p50_ns),
        us(s.p90_ns),
        us(s.p99_ns),
        us(s.p999_ns),
        us(s.max_ns),
        format!("{:.1}", s.mean_ns / 1e3),
        format!("{:.1}", s.stddev_ns / 1e3),
        s.cv
    );
}

fn partition_table(out: &mut String, p: &PartitionResult) {
    let _ = writeln!(
        out,
        "partition {} | {} | model {} | cpus {} | {} workers {}",
        p.name,
        p.scenario,
        p.model,
        p.cpus,
        p.workers,
        if p.pinned { "pinned" } else { "not pinned" }
    );
    let offered = match p.offered_qps {
        Some(q) => format!("offered {q:.1} req/s, "),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "  throughput    {:.1} req/s ({offered}{} completed in {:.2} s; {} warm-up requests excluded)",
        p.tps, p.completed, p.measured_s, p.warmup_completed
    );
    let claim = if p.enough_for_p999 {
        "enough samples for p99.9"
    } else if p.enough_for_p99 {
        "enough samples for p99 (not p99.9)"
    } else {
        "TOO FEW samples for a p99 claim"
    };
    let _ = writeln!(out, "  samples       {} ({claim})", p.completed);
    let _ = writeln!(
        out,
        "  {:<13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}",
        "latency (us)", "p50", "p90", "p99", "p99.9", "max", "mean", "stddev", "cv"
    );
    latency_row(out, "end to end", &p.latency);
    latency_row(out, "issue delay", &p.issue_delay);
    latency_row(out, "queue wait", &p.queue_wait);
    latency_row(out, "service", &p.service);
    for w in &p.worker_stats {
        let _ = writeln!(
            out,
            "  worker {:<2} cpu {:<5} ran on {:<3} cpu time {:>8.1} ms ({:>5.1}% of a core)  requests {:>7}  ctx switches {}+{}  migrations {}",
            w.index,
            w.pinned_cpu.map_or("any".to_owned(), |c| c.to_string()),
            w.last_cpu.map_or("?".to_owned(), |c| c.to_string()),
            w.cpu_time_ms,
            w.cpu_pct,
            w.requests,
            w.voluntary_switches,
            w.involuntary_switches,
            w.migrations.map_or("n/a".to_owned(), |m| m.to_string())
        );
    }
}

/// The table of one run.
pub fn run_table(record: &RunRecord) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "== {} ({})", record.config.scenario, record.id);
    for p in &record.partitions {
        partition_table(&mut out, p);
    }
    if !record.cores.is_empty() {
        let cores: Vec<String> = record
            .cores
            .iter()
            .map(|c| {
                format!(
                    "cpu{} {:.0}% (usr {:.0}%, sys {:.0}%)",
                    c.cpu, c.busy_pct, c.user_pct, c.system_pct
                )
            })
            .collect();
        let _ = writeln!(out, "  core busy     {}", cores.join(", "));
    }
    if let Some(p) = record.partitions.first() {
        let pages: Vec<String> = p
            .placement
            .iter()
            .map(|b| {
                let nodes: Vec<String> = b
                    .pages_per_node
                    .iter()
                    .map(|(n, c)| format!("N{n}={c}"))
                    .collect();
                format!(
                    "{} MiB {} [{}]",
                    b.bytes >> 20,
                    b.buffer.trim_start_matches("anonymous memory, "),
                    nodes.join(" ")
                )
            })
            .collect();
        let _ = writeln!(out, "  pages         {}", pages.join("; "));
    }
    out
}

/// The summary of a sweep: per metric, each configuration's median
/// [min..max] over the repeats, its ratio to the first, and the verdict.
pub fn sweep_table(param: &str, repeats: usize, rows: &[MetricRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sweep {param}: {repeats} interleaved repeats per value; ratio = median / median of the first value; 95% bootstrap CI"
    );
    let _ = writeln!(
        out,
        "  {:<8} {:<12} {:>12} {:>25} {:>8} {:>19}  verdict",
        "metric", param, "median", "[min .. max]", "ratio", "95% CI"
    );
    for &(name, unit, _) in METRICS {
        for r in rows.iter().filter(|r| r.metric == name) {
            let (ratio, ci, verdict) = match &r.vs_first {
                Some(t) => (
                    format!("{:.3}", t.ratio),
                    format!("[{:.3}, {:.3}]", t.ci_low, t.ci_high),
                    if t.significant {
                        "beyond noise"
                    } else {
                        "within noise"
                    },
                ),
                None => ("1".to_owned(), "-".to_owned(), "(baseline)"),
            };
            let _ = writeln!(
                out,
                "  {:<8} {:<12} {:>12} {:>25} {:>8} {:>19}  {verdict}",
                format!(
                    "{name}{}",
                    if unit.is_empty() {
                        String::new()
                    } else {
                        format!(" {unit}")
                    }
                ),
                r.value,
                format!("{:.2}", r.median),
                format!("[{:.2} .. {:.2}]", r.min, r.max),
                ratio,
                ci
            );
        }
    }
    out
}
