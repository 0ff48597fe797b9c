//! Criterion view of `pinned bench ring`: one group, the empty-request round
//! trip through the two-cache-line ping-pong floor, our ring, crossbeam's
//! `ArrayQueue` in the same harness, and the full runtime path (spinning).
//! `pinned bench ring` adds p99/p99.9, throughput and the futex wake cost.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_queue::ArrayQueue;
use pinned_bench::ring_bench::{
    empty_partition, ping_pong, queue_round_trips, runtime_round_trips,
};
use pinned_runtime::{current_affinity, Ring, Runtime, RuntimeConfig, WaitStrategy};

/// Median round trip times the count: what criterion's `iter_custom`
/// wants, robust to the odd preempted sample on a shared machine (each call
/// starts its threads afresh; that start-up is not timed).
fn total(h: &hdrhistogram::Histogram<u64>, iters: u64) -> Duration {
    Duration::from_nanos(h.value_at_quantile(0.5).saturating_mul(iters))
}

fn round_trip(c: &mut Criterion) {
    let allowed = current_affinity().expect("sched_getaffinity");
    let host = allowed.as_slice()[0];
    let worker = *allowed.as_slice().get(1).unwrap_or(&host);
    let mut group = c.benchmark_group("ring_round_trip");
    group
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(300))
        .sample_size(20);
    group.bench_function("ping_pong_floor", |b| {
        b.iter_custom(|iters| total(&ping_pong(host, worker, iters).unwrap(), iters))
    });
    group.bench_function("ring", |b| {
        b.iter_custom(|iters| {
            let (h, _) =
                queue_round_trips(Ring::with_capacity(64), host, worker, iters, 1).unwrap();
            total(&h, iters)
        })
    });
    group.bench_function("array_queue", |b| {
        b.iter_custom(|iters| {
            let (h, _) =
                queue_round_trips(ArrayQueue::<u32>::new(64), host, worker, iters, 1).unwrap();
            total(&h, iters)
        })
    });
    group.bench_function("runtime_spin", |b| {
        let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
        let part = empty_partition(&mut rt, "crit", worker, WaitStrategy::Spin, 2).unwrap();
        b.iter_custom(|iters| {
            let (h, _) = runtime_round_trips(&part, host, iters, 1).unwrap();
            total(&h, iters)
        });
        rt.shutdown();
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
