//! Where the CPU time went during a run: per-core utilisation from
//! `/proc/stat` deltas, and per-thread CPU time, context switches and
//! migrations from `/proc/self/task/<tid>/{schedstat,sched,status}`.
//!
//! `/proc/stat` counts in USER_HZ ticks (10 ms at the usual 100 Hz), so a
//! run shorter than a few hundred ticks has coarse utilisation; the harness
//! runs for seconds.

use serde::{Deserialize, Serialize};

/// One CPU's tick counters from a `/proc/stat` `cpuN` line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    fn busy(&self) -> u64 {
        self.user + self.nice + self.system + self.irq + self.softirq + self.steal
    }
    fn total(&self) -> u64 {
        self.busy() + self.idle + self.iowait
    }
}

/// `/proc/stat` at one instant: per-CPU counters, by CPU number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProcStat {
    pub cpus: Vec<(usize, CpuTicks)>,
}

impl ProcStat {
    pub fn read() -> std::io::Result<Self> {
        Ok(Self::parse(&std::fs::read_to_string("/proc/stat")?))
    }

    /// Parses the `cpuN ...` lines (the aggregate `cpu` line is skipped;
    /// guest time is already inside user, per proc(5)).
    pub fn parse(text: &str) -> Self {
        let cpus = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let id = fields.next()?.strip_prefix("cpu")?.parse::<usize>().ok()?;
                let v: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
                let at = |i: usize| v.get(i).copied().unwrap_or(0);
                Some((
                    id,
                    CpuTicks {
                        user: at(0),
                        nice: at(1),
                        system: at(2),
                        idle: at(3),
                        iowait: at(4),
                        irq: at(5),
                        softirq: at(6),
                        steal: at(7),
                    },
                ))
            })
            .collect();
        Self { cpus }
    }
}

/// One core's share of the interval. Invariant: each percentage in 0..=100,
/// `busy_pct = user_pct + system_pct + other` (irq, softirq, steal, nice).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoreUtilisation {
    pub cpu: usize,
    pub busy_pct: f64,
    pub user_pct: f64,
    pub system_pct: f64,
}

/// Per-core utilisation between two snapshots (CPUs present in both).
pub fn utilisation(before: &ProcStat, after: &ProcStat) -> Vec<CoreUtilisation> {
    after
        .cpus
        .iter()
        .filter_map(|&(cpu, b)| {
            let (_, a) = before.cpus.iter().find(|(c, _)| *c == cpu)?;
            let total = b.total().saturating_sub(a.total());
            let pct = |x: u64, y: u64| {
                if total == 0 {
                    0.0
                } else {
                    (x.saturating_sub(y) as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
                }
            };
            Some(CoreUtilisation {
                cpu,
                busy_pct: pct(b.busy(), a.busy()),
                user_pct: pct(b.user + b.nice, a.user + a.nice),
                system_pct: pct(b.system, a.system),
            })
        })
        .collect()
}

/// A thread's scheduler counters at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCounters {
    /// Nanoseconds on a CPU (`schedstat` field 1, else `se.sum_exec_runtime`).
    pub cpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// `se.nr_migrations` from `sched` (absent without CONFIG_SCHED_DEBUG).
    pub migrations: Option<u64>,
}

impl ThreadCounters {
    /// Reads `/proc/self/task/<tid>/...`; `None` when the thread is gone.
    pub fn read(tid: i32) -> Option<Self> {
        let dir = format!("/proc/self/task/{tid}");
        let schedstat = std::fs::read_to_string(format!("{dir}/schedstat")).ok()?;
        let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
        let sched = std::fs::read_to_string(format!("{dir}/sched")).unwrap_or_default();
        Some(Self::parse(&schedstat, &status, &sched))
    }

    pub fn parse(schedstat: &str, status: &str, sched: &str) -> Self {
        let field = |text: &str, key: &str, sep: char| {
            text.lines().find_map(|l| {
                let (k, v) = l.split_once(sep)?;
                (k.trim() == key).then(|| v.trim().parse::<u64>().ok())?
            })
        };
        // `se.sum_exec_runtime` (milliseconds, six decimals) is filled even
        // where schedstats are off and `schedstat` reads 0.
        let sum_exec_ms = sched.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "se.sum_exec_runtime").then(|| v.trim().parse::<f64>().ok())?
        });
        let schedstat_ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        Self {
            cpu_ns: match sum_exec_ms {
                Some(ms) if schedstat_ns == 0 => (ms * 1e6) as u64,
                _ => schedstat_ns,
            },
            voluntary_switches: field(status, "voluntary_ctxt_switches", ':').unwrap_or(0),
            involuntary_switches: field(status, "nonvoluntary_ctxt_switches", ':').unwrap_or(0),
            migrations: field(sched, "se.nr_migrations", ':'),
        }
    }

    /// Counter growth from `before` to `self`.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            cpu_ns: self.cpu_ns.saturating_sub(before.cpu_ns),
            voluntary_switches: self
                .voluntary_switches
                .saturating_sub(before.voluntary_switches),
            involuntary_switches: self
                .involuntary_switches
                .saturating_sub(before.involuntary_switches),
            migrations: match (self.migrations, before.migrations) {
                (Some(a), Some(b)) => Some(a.saturating_sub(b)),
                _ => None,
            },
        }
    }
}

/// The calling thread's kernel id.
pub fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_delta() {
        let a = ProcStat::parse("cpu  9 9 9 9\ncpu0 100 0 50 800 10 0 0 0 0 0\ncpu1 0 0 0 1000\n");
        let b = ProcStat::parse("cpu  9 9 9 9\ncpu0 150 0 75 875 10 0 0 0 0 0\ncpu1 0 0 0 1200\n");
        let u = utilisation(&a, &b);
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].cpu, 0);
        assert!((u[0].busy_pct - 50.0).abs() < 1e-9);
        assert!((u[0].user_pct - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(u[1].busy_pct, 0.0);
    }

    #[test]
    fn thread_counters_parse_and_live() {
        let c = ThreadCounters::parse(
            "12345 678 9\n",
            "Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t3\n",
            "se.nr_migrations                             :                    4\n",
        );
        assert_eq!(c.cpu_ns, 12345);
        assert_eq!((c.voluntary_switches, c.involuntary_switches), (7, 3));
        assert_eq!(c.migrations, Some(4));
        let d = ThreadCounters::parse("0 0 0\n", "", "se.sum_exec_runtime : 1.500000\n");
        assert_eq!(d.cpu_ns, 1_500_000);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        // The kernel folds a running thread's time in at ticks and switches:
        // sleep once so the loop above is accounted.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let live = ThreadCounters::read(current_tid()).expect("own thread readable");
        assert!(
            live.cpu_ns > 0,
            "{live:?} {:?}",
            std::fs::read_to_string(format!("/proc/self/task/{}/schedstat", current_tid()))
        );
        assert!(
            ProcStat::read().unwrap().cpus.iter().any(|(c, _)| *c == 0)
                || cfg!(not(target_os = "linux"))
        );
    }
}
