//! When requests are sent and how their latencies are counted, apart from
//! what serves them.
//!
//! Coordinated omission (Gil Tene): a load generator that waits for a stalled
//! system before sending its next request records one slow request where a
//! real client population would have seen hundreds. The open-loop `server`
//! scenario therefore fixes every send time in advance from a Poisson
//! schedule and counts latency from the *scheduled* time, however late the
//! request was actually issued. [`Timing`] keeps all four instants so the
//! record can split a latency into queue wait and service time.

use hdrhistogram::Histogram;

use super::stats::{latency_histogram, record_clamped, LatencySummary, SplitMix64};

/// Poisson arrivals: exponential gaps with mean `1 / rate`, from a seeded
/// generator so a configuration replays the same schedule.
#[derive(Clone, Debug)]
pub struct PoissonSchedule {
    mean_gap_ns: f64,
    rng: SplitMix64,
    next_ns: f64,
}

impl PoissonSchedule {
    /// Arrivals at `rate_per_s` starting at `start_ns` (the first arrival is
    /// one gap after the start, as in a process that was already running).
    pub fn new(rate_per_s: f64, start_ns: u64, seed: u64) -> Self {
        let mut s = Self {
            mean_gap_ns: 1e9 / rate_per_s.max(1e-9),
            rng: SplitMix64::new(seed),
            next_ns: start_ns as f64,
        };
        s.next_ns += s.gap();
        s
    }

    fn gap(&mut self) -> f64 {
        // Inverse CDF of the exponential; 1 - u is in (0, 1] so ln is finite.
        -(1.0 - self.rng.next_f64()).ln() * self.mean_gap_ns
    }

    /// The next scheduled send time, in clock nanoseconds.
    pub fn peek_ns(&self) -> u64 {
        self.next_ns as u64
    }

    /// Takes the next send time and schedules the one after.
    pub fn take(&mut self) -> u64 {
        let t = self.next_ns as u64;
        self.next_ns += self.gap();
        t
    }
}

/// The three instants of one request the host sees, in clock nanoseconds.
///
/// Invariant for a well-formed timing: `scheduled <= issued <= completed`
/// (a closed loop has `scheduled == issued`). The accessors saturate so a
/// clock read on another core a few ns behind cannot wrap. The split of
/// `issued..completed` into queue wait and service is the workers' to
/// measure (runtime telemetry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub scheduled_ns: u64,
    pub issued_ns: u64,
    pub completed_ns: u64,
}

impl Timing {
    /// What a user of an open-loop service sees: scheduled send to answer.
    pub fn latency_ns(&self) -> u64 {
        self.completed_ns.saturating_sub(self.scheduled_ns)
    }

    /// What a load generator that waited for the system would have recorded
    /// (the coordinated-omission error): actual send to answer.
    pub fn issued_latency_ns(&self) -> u64 {
        self.completed_ns.saturating_sub(self.issued_ns)
    }

    /// Scheduled send until actual send: how far the generator fell
    /// behind its schedule (no free slot, ring full, a late wake-up).
    pub fn issue_delay_ns(&self) -> u64 {
        self.issued_ns.saturating_sub(self.scheduled_ns)
    }
}

/// Collects one partition's timings, splitting warm-up from the measured
/// window by scheduled time: a request belongs to the window its user sent
/// it in.
///
/// Invariants: `latency.len() == issue_delay.len() == issued_latency.len()
/// == completed`; `completed + warmup_completed` = every timing recorded.
pub struct Recorder {
    measure_from_ns: u64,
    pub latency: Histogram<u64>,
    pub issued_latency: Histogram<u64>,
    pub issue_delay: Histogram<u64>,
    pub completed: u64,
    pub warmup_completed: u64,
    /// Timings whose latency exceeded the histogram range (clamped, counted).
    pub saturated: u64,
}

impl Recorder {
    pub fn new(measure_from_ns: u64) -> Self {
        Self {
            measure_from_ns,
            latency: latency_histogram(),
            issued_latency: latency_histogram(),
            issue_delay: latency_histogram(),
            completed: 0,
            warmup_completed: 0,
            saturated: 0,
        }
    }

    /// Moves the start of the measured window (e.g. once warm-up ends).
    pub fn set_measure_from(&mut self, ns: u64) {
        self.measure_from_ns = ns;
    }

    pub fn measure_from_ns(&self) -> u64 {
        self.measure_from_ns
    }

    pub fn record(&mut self, t: &Timing) {
        if t.scheduled_ns < self.measure_from_ns {
            self.warmup_completed += 1;
            return;
        }
        self.completed += 1;
        let mut clamped = record_clamped(&mut self.latency, t.latency_ns());
        clamped |= record_clamped(&mut self.issued_latency, t.issued_latency_ns());
        clamped |= record_clamped(&mut self.issue_delay, t.issue_delay_ns());
        self.saturated += u64::from(clamped);
    }

    pub fn latency_summary(&self) -> LatencySummary {
        LatencySummary::from_histogram(&self.latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_mean_gap_and_replay() {
        let mut a = PoissonSchedule::new(1000.0, 0, 7);
        let mut b = PoissonSchedule::new(1000.0, 0, 7);
        let n = 20_000;
        let mut last = 0;
        for _ in 0..n {
            let t = a.take();
            assert!(t >= last, "schedule is monotonic");
            assert_eq!(t, b.take(), "same seed, same schedule");
            last = t;
        }
        // Mean gap 1 ms; the sample mean of 20k exponentials has a relative
        // standard error of 1/sqrt(20k) = 0.7%, so 5% is > 7 sigma.
        let mean_gap = last as f64 / n as f64;
        assert!((mean_gap / 1e6 - 1.0).abs() < 0.05, "{mean_gap}");
    }

    #[test]
    fn warmup_is_excluded_by_scheduled_time() {
        let mut r = Recorder::new(1_000);
        let t = |s| Timing {
            scheduled_ns: s,
            issued_ns: s + 2,
            completed_ns: s + 10,
        };
        r.record(&t(500));
        r.record(&t(1_000));
        r.record(&t(2_000));
        assert_eq!((r.warmup_completed, r.completed), (1, 2));
        assert_eq!(r.latency.len(), 2);
        assert_eq!(r.issue_delay.max(), 2);
        assert_eq!(r.issued_latency.max(), 8);
    }
}
