//! The harness's statistics on distributions whose answers are known.

use pinned_bench::harness::loadgen::{Recorder, Timing};
use pinned_bench::harness::stats::{
    bootstrap_ratio, latency_histogram, percentile_sorted, LatencySummary, SplitMix64,
};

/// 1..=100_000 µs in a shuffled order: every percentile is known exactly.
#[test]
fn percentiles_of_a_uniform_set() {
    let mut values: Vec<u64> = (1..=100_000u64).map(|v| v * 1_000).collect();
    let mut rng = SplitMix64::new(3);
    for i in (1..values.len()).rev() {
        values.swap(i, rng.below(i + 1));
    }
    let mut hist = latency_histogram();
    for &v in &values {
        hist.record(v).unwrap();
    }
    let s = LatencySummary::from_histogram(&hist);
    let mut sorted = values.clone();
    sorted.sort_unstable();
    for (q, got) in [
        (0.5, s.p50_ns),
        (0.9, s.p90_ns),
        (0.99, s.p99_ns),
        (0.999, s.p999_ns),
    ] {
        let exact = percentile_sorted(&sorted, q).unwrap();
        assert_eq!(exact, (q * 100_000.0).round() as u64 * 1_000);
        // HDR with 3 significant digits: within 0.1% of the exact value.
        let err = (got as f64 - exact as f64).abs() / exact as f64;
        assert!(err <= 1e-3, "q={q}: hdr {got} vs exact {exact}");
    }
    assert_eq!(s.count, 100_000);
    assert!(
        (s.mean_ns - 50_000_500.0).abs() / 50_000_500.0 < 1e-3,
        "{}",
        s.mean_ns
    );
    // Uniform on [0, N]: stddev = N / sqrt(12).
    let sd = 100_000_000.0 / 12f64.sqrt();
    assert!((s.stddev_ns - sd).abs() / sd < 1e-2, "{}", s.stddev_ns);
    assert!((s.cv - s.stddev_ns / s.mean_ns).abs() < 1e-12);
}

/// An exponential distribution's median is ln 2 times its mean and its
/// p99 ln 100 times: check both from 200k seeded samples.
#[test]
fn percentiles_of_an_exponential_set() {
    let mut rng = SplitMix64::new(11);
    let mean_ns = 100_000.0;
    let mut hist = latency_histogram();
    for _ in 0..200_000 {
        let v = -(1.0 - rng.next_f64()).ln() * mean_ns;
        hist.record(v.max(1.0) as u64).unwrap();
    }
    let s = LatencySummary::from_histogram(&hist);
    // Sampling error of a quantile estimate at n = 200k is well under 2%.
    let close = |got: u64, want: f64| (got as f64 - want).abs() / want < 0.02;
    assert!(close(s.p50_ns, mean_ns * 2f64.ln()), "p50 {}", s.p50_ns);
    assert!(close(s.p99_ns, mean_ns * 100f64.ln()), "p99 {}", s.p99_ns);
    assert!((s.cv - 1.0).abs() < 0.02, "cv {}", s.cv);
}

/// A scripted stall: requests scheduled every 1 ms for 10 s, served in
/// 100 µs, except that the server stops dead from 2.0 s to 2.5 s. A load
/// generator that waits for the server sends the stalled requests late and
/// sees one slow request; counting from the schedule shows the 500 users
/// who waited.
#[test]
fn coordinated_omission_is_corrected() {
    const MS: u64 = 1_000_000;
    const SERVICE: u64 = 100_000;
    let (stall_from, stall_to) = (2_000 * MS, 2_500 * MS);
    let mut recorder = Recorder::new(0);
    let mut server_free = 0u64;
    let mut host_free = 0u64;
    for i in 1..=10_000u64 {
        let scheduled = i * MS;
        // The generator cannot send before its previous request returned
        // (the coordinated-omission behaviour).
        let issued = scheduled.max(host_free);
        let mut start = issued.max(server_free);
        if start >= stall_from && start < stall_to {
            start = stall_to;
        }
        let completed = start + SERVICE;
        server_free = completed;
        host_free = completed;
        recorder.record(&Timing {
            scheduled_ns: scheduled,
            issued_ns: issued,
            completed_ns: completed,
        });
    }
    let corrected = LatencySummary::from_histogram(&recorder.latency);
    let naive = LatencySummary::from_histogram(&recorder.issued_latency);
    assert_eq!(corrected.count, 10_000);
    // The naive view: only the one request that hit the stall was slow.
    let naive_slow = recorder.issued_latency.count_between(MS, u64::MAX);
    assert_eq!(naive_slow, 1);
    assert!(naive.p99_ns < MS, "naive p99 {}", naive.p99_ns);
    // The corrected view: every request scheduled during the stall waited
    // for its end; ~500 of 10 000 (5%) exceed 1 ms, so p99 is deep in it.
    let slow = recorder.latency.count_between(MS, u64::MAX);
    assert!((499..=560).contains(&slow), "{slow} slow requests");
    assert!(
        corrected.p99_ns > 300 * MS,
        "corrected p99 {}",
        corrected.p99_ns
    );
    assert!(corrected.max_ns >= 499 * MS && corrected.max_ns <= 501 * MS);
    assert!(corrected.p50_ns < MS);
    // The issue delay is exactly what the naive view hides.
    assert!(LatencySummary::from_histogram(&recorder.issue_delay).max_ns > 400 * MS);
}

/// Same distribution twice: not significant. Shifted by 10%: significant.
#[test]
fn significance_on_identical_and_shifted_samples() {
    let mut rng = SplitMix64::new(5);
    let noise = |rng: &mut SplitMix64| 100.0 + (rng.next_f64() - 0.5) * 4.0;
    let a: Vec<f64> = (0..7).map(|_| noise(&mut rng)).collect();
    let same: Vec<f64> = (0..7).map(|_| noise(&mut rng)).collect();
    let shifted: Vec<f64> = (0..7).map(|_| noise(&mut rng) * 1.1).collect();
    let t = bootstrap_ratio(&a, &same, 10_000, 1).unwrap();
    assert!(!t.significant, "{t:?}");
    assert!(t.ci_low < 1.0 && t.ci_high > 1.0);
    let t = bootstrap_ratio(&a, &shifted, 10_000, 1).unwrap();
    assert!(t.significant, "{t:?}");
    assert!(t.ci_low > 1.05 && t.ratio > 1.05 && t.ratio < 1.15, "{t:?}");
    // Identical inputs give the exact ratio 1 and an interval around it.
    let t = bootstrap_ratio(&a, &a, 1_000, 2).unwrap();
    assert_eq!(t.ratio, 1.0);
    assert!(!t.significant);
    assert!(bootstrap_ratio(&[], &a, 10, 1).is_none());
}
