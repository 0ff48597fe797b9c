//! Serving allocates nothing: a counting global allocator sees 0
//! allocations and 0 deallocations while 100,000 requests are served, single
//! and batched, from several host threads, after a warm-up.
//!
//! One test in this binary, so nothing else runs during the window.

mod counting_alloc;

use counting_alloc::{ALLOCS, COUNTING, DEALLOCS};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use pinned_runtime::{
    Affine, BatchPolicy, DenseMlp, Partition, PartitionConfig, Runtime, RuntimeConfig, WaitStrategy,
};

const TOTAL: usize = 100_000;
const HOSTS: usize = 4;
/// Requests a host keeps in flight at once, so batches can form.
const WINDOW: usize = 4;
const T: Duration = Duration::from_secs(30);

/// Serves `count` requests from one host: fill `WINDOW` slots, submit all,
/// wait all, check each answer, release; returns how many were checked.
fn host(part: &Partition, count: usize, check: impl Fn(&[f32], &[f32]) -> bool) -> usize {
    let mut done = 0;
    let mut input = [0.0f32; 64];
    let mut reqs = [None, None, None, None];
    while done < count {
        let n = WINDOW.min(count - done);
        for (k, slot) in reqs.iter_mut().enumerate().take(n) {
            let mut r = part.acquire(T).expect("slot");
            let len = part.input_len();
            for (i, v) in r.input_mut().unwrap().iter_mut().enumerate() {
                *v = ((done + k) % 97) as f32 * 0.01 + i as f32 * 0.001;
            }
            input[..len].copy_from_slice(r.input_mut().unwrap());
            r.submit().expect("submit");
            *slot = Some(r);
        }
        for (k, slot) in reqs.iter_mut().enumerate().take(n) {
            let mut r = slot.take().unwrap();
            r.wait(T).expect("served");
            let len = part.input_len();
            for (i, v) in input[..len].iter_mut().enumerate() {
                *v = ((done + k) % 97) as f32 * 0.01 + i as f32 * 0.001;
            }
            assert!(check(&input[..len], r.output().unwrap()));
            r.release();
        }
        done += n;
    }
    done
}

#[test]
fn serving_allocates_nothing_after_warm_up() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let affine = Arc::new(Affine {
        len: 16,
        scale: 2.0,
        shift: 1.0,
    });
    let mlp = Arc::new(DenseMlp::new(&[16, 32, 8], 3).unwrap());
    let single = rt
        .add_partition(
            PartitionConfig {
                wait: WaitStrategy::SpinPark { spin_us: 20 },
                workers: 1,
                slots: 16,
                ..PartitionConfig::new("single", "all")
            },
            affine,
        )
        .unwrap();
    let batched = rt
        .add_partition(
            PartitionConfig {
                wait: WaitStrategy::SpinYield { spin_us: 20 },
                batch: BatchPolicy {
                    max_batch: 8,
                    max_wait_us: 20,
                },
                workers: 1,
                slots: 16,
                ..PartitionConfig::new("batched", "all")
            },
            mlp.clone(),
        )
        .unwrap();
    let affine_ok = |i: &[f32], o: &[f32]| i.iter().zip(o).all(|(x, y)| *y == x * 2.0 + 1.0);
    let mlp_ok = {
        let mlp = mlp.clone();
        // The reference allocates, so it runs only during warm-up.
        move |i: &[f32], o: &[f32]| {
            if COUNTING.load(Ordering::Relaxed) {
                return o.iter().all(|v| v.is_finite());
            }
            mlp.reference(i)
                .iter()
                .zip(o)
                .all(|(w, g)| (w - g).abs() < 1e-3)
        }
    };
    let barrier = Arc::new(Barrier::new(HOSTS + 1));
    let threads: Vec<_> = (0..HOSTS)
        .map(|h| {
            let part = if h % 2 == 0 {
                single.clone()
            } else {
                batched.clone()
            };
            let barrier = barrier.clone();
            let mlp_ok = mlp_ok.clone();
            std::thread::spawn(move || {
                let check = |i: &[f32], o: &[f32]| {
                    if h % 2 == 0 {
                        affine_ok(i, o)
                    } else {
                        mlp_ok(i, o)
                    }
                };
                // Warm-up: first touches, lazy thread-locals, histogram paths.
                host(&part, 200, check);
                barrier.wait();
                barrier.wait();
                let served = host(&part, TOTAL / HOSTS, check);
                barrier.wait();
                // Stay until counting stopped: a thread's exit frees its
                // start closure.
                barrier.wait();
                served
            })
        })
        .collect();
    barrier.wait();
    COUNTING.store(true, Ordering::SeqCst);
    barrier.wait();
    barrier.wait();
    COUNTING.store(false, Ordering::SeqCst);
    barrier.wait();
    let allocs = ALLOCS.load(Ordering::SeqCst);
    let deallocs = DEALLOCS.load(Ordering::SeqCst);
    let served: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(served, TOTAL);
    let finals = rt.shutdown();
    let requests: u64 = finals.iter().map(|t| t.requests()).sum();
    assert_eq!(requests as usize, TOTAL + HOSTS * 200);
    let batches: u64 = finals[1].workers.iter().map(|w| w.batches).sum();
    assert!(
        batches < finals[1].requests(),
        "some batches held several requests"
    );
    assert_eq!(
        (allocs, deallocs),
        (0, 0),
        "allocations during {TOTAL} requests"
    );
}
