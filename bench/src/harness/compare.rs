//! `pinned compare A.json B.json`: what differs between two runs' setups
//! (configuration and machine), then each metric's change and whether it is
//! beyond the run's own noise.
//!
//! One run has no repeats to bootstrap, so the significance test works on
//! the raw latency distributions instead: both stored histograms are
//! expanded to their samples (bucket values, 0.1% resolution) and the
//! per-quantile ratio gets a bootstrap interval. Throughput has no
//! distribution in one run; its change is shown without a verdict, and a
//! sweep (repeated, interleaved runs) is the tool for that question.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::fingerprint::{diff_maps, flatten};
use super::record::{decode_histogram, PartitionResult, RecordError, RunRecord};
use super::stats::{percentile_sorted, SplitMix64};

/// Largest sample count a histogram is expanded to for resampling: beyond
/// it the histogram is subsampled proportionally (percentiles are unchanged
/// within sampling error, and 10 000 bootstrap passes stay quick).
const MAX_EXPANDED: usize = 20_000;
const RESAMPLES: usize = 1_000;

/// A latency quantile's change between two runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct QuantileDelta {
    pub quantile: f64,
    pub a_ns: u64,
    pub b_ns: u64,
    pub ratio: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub significant: bool,
}

/// The histogram's samples (bucket values), subsampled to at most `cap`.
pub fn expand(hist: &Histogram<u64>, cap: usize) -> Vec<u64> {
    let total = hist.len().max(1);
    let keep = (cap as f64 / total as f64).min(1.0);
    let mut out = Vec::with_capacity(cap.min(total as usize));
    let mut carry = 0.0;
    for v in hist.iter_recorded() {
        carry += v.count_at_value() as f64 * keep;
        let n = carry.floor();
        carry -= n;
        out.extend(std::iter::repeat_n(
            hist.highest_equivalent(v.value_iterated_to()),
            n as usize,
        ));
    }
    out
}

/// Bootstrap of quantile `q`'s ratio B/A over two sample sets (sorted).
pub fn quantile_delta(a: &[u64], b: &[u64], q: f64, seed: u64) -> Option<QuantileDelta> {
    let (pa, pb) = (percentile_sorted(a, q)?, percentile_sorted(b, q)?);
    if pa == 0 {
        return None;
    }
    let mut rng = SplitMix64::new(seed);
    let mut buf = Vec::new();
    let mut resampled = |xs: &[u64]| {
        buf.clear();
        buf.extend((0..xs.len()).map(|_| xs[rng.below(xs.len())]));
        buf.sort_unstable();
        percentile_sorted(&buf, q).unwrap_or(0)
    };
    let mut ratios: Vec<f64> = (0..RESAMPLES)
        .filter_map(|_| {
            let ra = resampled(a);
            let rb = resampled(b);
            (ra > 0).then(|| rb as f64 / ra as f64)
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let at =
        |p: f64| ratios[((p * (ratios.len() - 1) as f64).round() as usize).min(ratios.len() - 1)];
    let (lo, hi) = (at(0.025), at(0.975));
    Some(QuantileDelta {
        quantile: q,
        a_ns: pa,
        b_ns: pb,
        ratio: pb as f64 / pa as f64,
        ci_low: lo,
        ci_high: hi,
        significant: lo > 1.0 || hi < 1.0,
    })
}

/// The per-quantile deltas of two partitions' latency histograms.
pub fn latency_deltas(
    a: &PartitionResult,
    b: &PartitionResult,
) -> Result<Vec<QuantileDelta>, RecordError> {
    let (ha, hb) = (
        decode_histogram(&a.latency_hdr_base64)?,
        decode_histogram(&b.latency_hdr_base64)?,
    );
    let mut sa = expand(&ha, MAX_EXPANDED);
    let mut sb = expand(&hb, MAX_EXPANDED);
    sa.sort_unstable();
    sb.sort_unstable();
    Ok([0.5, 0.9, 0.99, 0.999]
        .iter()
        .enumerate()
        .filter_map(|(i, &q)| quantile_delta(&sa, &sb, q, 0xc0ffee + i as u64))
        .collect())
}

/// The full text of `pinned compare`.
pub fn report(
    a: &RunRecord,
    b: &RunRecord,
    a_name: &str,
    b_name: &str,
) -> Result<String, RecordError> {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "A: {a_name}  ({})\nB: {b_name}  ({})\n", a.id, b.id);
    let config = diff_maps(
        &flatten(&serde_json::to_value(&a.config).unwrap_or_default()),
        &flatten(&serde_json::to_value(&b.config).unwrap_or_default()),
    );
    section(w, "Configuration differences", &config);
    section(
        w,
        "Machine and build differences",
        &a.machine.differences(&b.machine),
    );
    for pa in &a.partitions {
        let Some(pb) = b.partitions.iter().find(|p| p.name == pa.name) else {
            let _ = writeln!(w, "partition {}: only in A", pa.name);
            continue;
        };
        let _ = writeln!(
            w,
            "Partition {} ({} -> {})",
            pa.name, pa.scenario, pb.scenario
        );
        let _ = writeln!(
            w,
            "  {:<10} {:>12} {:>12} {:>8}  {:<22} verdict",
            "metric", "A", "B", "B/A", "95% CI of B/A"
        );
        let _ = writeln!(
            w,
            "  {:<10} {:>12.1} {:>12.1} {:>8.3}  {:<22} (one run each: use a sweep)",
            "tps",
            pa.tps,
            pb.tps,
            ratio(pa.tps, pb.tps),
            "-"
        );
        for d in latency_deltas(pa, pb)? {
            let _ = writeln!(
                w,
                "  {:<10} {:>10.1}us {:>10.1}us {:>8.3}  [{:.3}, {:.3}]{:<8} {}",
                format!("p{}", d.quantile * 100.0),
                d.a_ns as f64 / 1e3,
                d.b_ns as f64 / 1e3,
                d.ratio,
                d.ci_low,
                d.ci_high,
                "",
                if d.significant {
                    "beyond noise"
                } else {
                    "within noise"
                }
            );
        }
        for (name, x, y) in [
            (
                "mean us",
                pa.latency.mean_ns / 1e3,
                pb.latency.mean_ns / 1e3,
            ),
            (
                "stddev us",
                pa.latency.stddev_ns / 1e3,
                pb.latency.stddev_ns / 1e3,
            ),
            ("cv", pa.latency.cv, pb.latency.cv),
            (
                "queue us",
                pa.queue_wait.p50_ns as f64 / 1e3,
                pb.queue_wait.p50_ns as f64 / 1e3,
            ),
            (
                "service us",
                pa.service.p50_ns as f64 / 1e3,
                pb.service.p50_ns as f64 / 1e3,
            ),
        ] {
            let _ = writeln!(w, "  {name:<10} {x:>12.2} {y:>12.2} {:>8.3}", ratio(x, y));
        }
    }
    for pb in &b.partitions {
        if !a.partitions.iter().any(|p| p.name == pb.name) {
            let _ = writeln!(w, "partition {}: only in B", pb.name);
        }
    }
    Ok(out)
}

fn ratio(a: f64, b: f64) -> f64 {
    if a == 0.0 {
        f64::NAN
    } else {
        b / a
    }
}

fn section(w: &mut String, title: &str, diffs: &[(String, String, String)]) {
    let _ = writeln!(w, "{title}:");
    if diffs.is_empty() {
        let _ = writeln!(w, "  (none)");
    }
    for (k, x, y) in diffs {
        let _ = writeln!(w, "  {k}: {x} -> {y}");
    }
    let _ = writeln!(w);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::stats::latency_histogram;

    #[test]
    fn expand_keeps_counts_and_caps() {
        let mut h = latency_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        assert_eq!(expand(&h, 100_000).len(), 1000);
        let capped = expand(&h, 100);
        assert!((99..=101).contains(&capped.len()), "{}", capped.len());
    }

    #[test]
    fn quantile_deltas_see_a_shift_and_not_noise() {
        let mut rng = SplitMix64::new(9);
        let mut draw = |scale: f64| -> Vec<u64> {
            let mut v: Vec<u64> = (0..5_000)
                .map(|_| (100_000.0 * scale * (1.0 + rng.next_f64())) as u64)
                .collect();
            v.sort_unstable();
            v
        };
        let (a, b, shifted) = (draw(1.0), draw(1.0), draw(1.2));
        for q in [0.5, 0.9] {
            let same = quantile_delta(&a, &b, q, 1).unwrap();
            assert!(!same.significant, "{same:?}");
            let moved = quantile_delta(&a, &shifted, q, 1).unwrap();
            assert!(moved.significant && moved.ratio > 1.1, "{moved:?}");
        }
    }
}
