//! The statistics a careful reader needs: percentiles, spread, how many
//! samples a percentile claim needs, and whether two sets of runs differ by
//! more than run-to-run noise.
//!
//! Latencies are recorded in nanoseconds into an HDR histogram with three
//! significant digits, so every percentile read back is within 0.1% of the
//! exact sample value (HdrHistogram's guarantee).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Significant decimal digits of every latency histogram: 0.1% resolution.
pub const HISTOGRAM_SIGFIG: u8 = 3;
/// Largest latency a histogram holds: one hour in nanoseconds. A slower
/// request is clamped there and counted (`saturated`), never dropped.
pub const HISTOGRAM_MAX_NS: u64 = 3_600_000_000_000;

/// A fresh latency histogram (1 ns .. 1 h, 3 significant digits).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_NS, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Records `ns` (clamped to the histogram's range); true when it was clamped.
pub fn record_clamped(hist: &mut Histogram<u64>, ns: u64) -> bool {
    let clamped = ns.clamp(1, HISTOGRAM_MAX_NS);
    hist.record(clamped)
        .expect("a clamped value is within the histogram's bounds");
    clamped != ns.max(1)
}

/// The latency distribution of one run, in nanoseconds.
///
/// Invariants (checked by `record::RunRecord::check`): `min <= p50 <= p90 <=
/// p99 <= p999 <= max`, `cv = stddev / mean` (0 when `mean` is 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ns: u64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
    pub stddev_ns: f64,
    /// Coefficient of variation, `stddev / mean`: spread without units.
    pub cv: f64,
}

impl LatencySummary {
    /// Reads the summary off a histogram (all zero when it is empty).
    pub fn from_histogram(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return Self::default();
        }
        let mean = hist.mean();
        let stddev = hist.stdev();
        // `value_at_quantile` returns the highest value equivalent to the
        // bucket, which can exceed `max()` by the bucket width: clamp so the
        // ordering invariant holds exactly.
        let at = |q: f64| hist.value_at_quantile(q).min(hist.max());
        Self {
            count: hist.len(),
            min_ns: hist.min(),
            p50_ns: at(0.50),
            p90_ns: at(0.90),
            p99_ns: at(0.99),
            p999_ns: at(0.999),
            max_ns: hist.max(),
            mean_ns: mean,
            stddev_ns: stddev,
            cv: if mean > 0.0 { stddev / mean } else { 0.0 },
        }
    }

    /// The named metric (`p50`, `p99`, `mean`, ...) in nanoseconds.
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "min" => self.min_ns as f64,
            "p50" => self.p50_ns as f64,
            "p90" => self.p90_ns as f64,
            "p99" => self.p99_ns as f64,
            "p99.9" | "p999" => self.p999_ns as f64,
            "max" => self.max_ns as f64,
            "mean" => self.mean_ns,
            "stddev" => self.stddev_ns,
            "cv" => self.cv,
            _ => return None,
        })
    }
}

/// Nearest-rank percentile of sorted samples (`q` in 0..=1): the smallest
/// value with at least `q` of the samples at or below it.
pub fn percentile_sorted(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// z for a two-sided 99% confidence interval (Φ⁻¹(0.995)).
const Z_99: f64 = 2.575_829_3;

/// How many samples a claim about quantile `q` needs: the normal-approximation
/// count at which the fraction of samples beyond `q` is known within its own
/// size at 99% confidence, `z² q / (1 - q)`. It gives 657 for p99 and 6,629
/// for p99.9, within 1% of MLPerf LoadGen's early-stopping minimums (662 and
/// 6,636) and the same rule for any other quantile.
pub fn min_samples_for_quantile(q: f64) -> u64 {
    if q <= 0.0 {
        return 1;
    }
    if q >= 1.0 {
        return u64::MAX;
    }
    (Z_99 * Z_99 * q / (1.0 - q)).ceil() as u64
}

/// The highest standard percentile (p50, p90, p99, p99.9) that `count`
/// samples support, for labelling a table honestly.
pub fn supported_percentile(count: u64) -> Option<f64> {
    [0.999, 0.99, 0.9, 0.5]
        .into_iter()
        .find(|&q| count >= min_samples_for_quantile(q))
}

/// Mean, sample standard deviation and coefficient of variation.
pub fn mean_stddev(xs: &[f64]) -> (f64, f64, f64) {
    if xs.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 {
        xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    let sd = var.sqrt();
    (mean, sd, if mean != 0.0 { sd / mean.abs() } else { 0.0 })
}

/// Median of unsorted values (mean of the middle two for an even count).
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// Spread of repeated runs: the smallest and largest value.
pub fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny, fast, well-mixed generator,
/// seeded explicitly so every schedule and resample is reproducible.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// Whether configuration B differs from A beyond run-to-run noise.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioTest {
    /// median(B) / median(A).
    pub ratio: f64,
    /// 95% bootstrap confidence interval of that ratio.
    pub ci_low: f64,
    pub ci_high: f64,
    /// True when the interval excludes 1: the difference is beyond noise.
    pub significant: bool,
}

/// Resamples each set with replacement `iterations` times and takes the 2.5th
/// and 97.5th percentiles of median(B*)/median(A*) (percentile bootstrap,
/// Efron & Tibshirani ch. 13). Deterministic for a given `seed`. `None` when
/// either set is empty or A's median is zero.
pub fn bootstrap_ratio(a: &[f64], b: &[f64], iterations: usize, seed: u64) -> Option<RatioTest> {
    let (ma, mb) = (median(a), median(b));
    if a.is_empty() || b.is_empty() || ma == 0.0 || !ma.is_finite() || !mb.is_finite() {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut resample = |xs: &[f64], buf: &mut Vec<f64>| {
        buf.clear();
        buf.extend((0..xs.len()).map(|_| xs[rng.below(xs.len())]));
        median(buf)
    };
    let (mut ba, mut bb) = (Vec::new(), Vec::new());
    let mut ratios: Vec<f64> = (0..iterations.max(1))
        .filter_map(|_| {
            let ra = resample(a, &mut ba);
            let rb = resample(b, &mut bb);
            (ra != 0.0).then(|| rb / ra)
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    let pick =
        |q: f64| ratios[((q * (ratios.len() - 1) as f64).round() as usize).min(ratios.len() - 1)];
    let (lo, hi) = (pick(0.025), pick(0.975));
    Some(RatioTest {
        ratio: mb / ma,
        ci_low: lo,
        ci_high: hi,
        significant: lo > 1.0 || hi < 1.0,
    })
}

/// Resample count used by sweeps and `pinned compare`: enough that the 2.5%
/// tail holds 250 resamples.
pub const BOOTSTRAP_ITERATIONS: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_edges() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile_sorted(&v, 0.5), Some(50));
        assert_eq!(percentile_sorted(&v, 0.99), Some(99));
        assert_eq!(percentile_sorted(&v, 1.0), Some(100));
        assert_eq!(percentile_sorted(&v, 0.0), Some(1));
        assert_eq!(percentile_sorted(&[], 0.5), None);
    }

    #[test]
    fn sample_minimums_match_loadgen_within_one_percent() {
        let p99 = min_samples_for_quantile(0.99) as f64;
        let p999 = min_samples_for_quantile(0.999) as f64;
        assert!((p99 / 662.0 - 1.0).abs() < 0.01, "{p99}");
        assert!((p999 / 6636.0 - 1.0).abs() < 0.01, "{p999}");
        assert_eq!(supported_percentile(700), Some(0.99));
        assert_eq!(supported_percentile(10), Some(0.5));
        assert_eq!(supported_percentile(5), None);
    }

    #[test]
    fn mean_stddev_known() {
        let (m, sd, cv) = mean_stddev(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!(m, 5.0);
        assert!((sd - 2.138_089_935).abs() < 1e-6);
        assert!((cv - sd / 5.0).abs() < 1e-12);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
    }
}
