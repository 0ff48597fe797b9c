//! End to end: a partition serves the dense MLP; typed errors for misuse;
//! backpressure; a panicking model fails one request and the worker goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinned_runtime::{
    Affine, BatchPolicy, DenseMlp, Failure, Model, ModelError, PartitionConfig, Placement,
    RequestError, Runtime, RuntimeConfig, RuntimeError, Scratch, ScratchSize, Status, WaitStrategy,
};

const T: Duration = Duration::from_secs(20);

fn config(name: &str, wait: WaitStrategy) -> PartitionConfig {
    PartitionConfig {
        wait,
        ..PartitionConfig::new(name, "all")
    }
}

#[test]
fn mlp_end_to_end_single_and_batched() {
    let mlp = Arc::new(DenseMlp::new(&[24, 40, 16], 5).unwrap());
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    for (name, batch, wait) in [
        ("single", 1, WaitStrategy::SpinPark { spin_us: 20 }),
        ("batched", 4, WaitStrategy::SpinYield { spin_us: 20 }),
    ] {
        let part = rt
            .add_partition(
                PartitionConfig {
                    batch: BatchPolicy {
                        max_batch: batch,
                        max_wait_us: 200,
                    },
                    workers: 1,
                    ..config(name, wait)
                },
                mlp.clone(),
            )
            .unwrap();
        assert_eq!((part.input_len(), part.output_len()), (24, 16));
        let mut reqs: Vec<_> = (0..6).map(|_| part.acquire(T).unwrap()).collect();
        for (r, req) in reqs.iter_mut().enumerate() {
            let input = req.input_mut().unwrap();
            for (i, v) in input.iter_mut().enumerate() {
                *v = ((r * 31 + i) as f32 * 0.1).cos();
            }
            req.submit().unwrap();
        }
        for (r, mut req) in reqs.into_iter().enumerate() {
            req.wait(T).unwrap();
            let input: Vec<f32> = (0..24).map(|i| ((r * 31 + i) as f32 * 0.1).cos()).collect();
            let want = mlp.reference(&input);
            for (g, w) in req.output().unwrap().iter().zip(&want) {
                assert!((g - w).abs() < 1e-3, "{name} request {r}: {g} vs {w}");
            }
            req.release();
        }
        let t = part.telemetry_snapshot();
        assert_eq!(t.requests(), 6);
        assert!(t.workers[0].batches >= 1 && t.workers[0].batches <= 6);
    }
    let finals = rt.shutdown();
    assert_eq!(finals.len(), 2);
    assert!(finals.iter().all(|t| t.latencies.total.len() == 6));
}

#[test]
fn misuse_is_a_typed_error_and_loses_nothing() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let model = Arc::new(Affine {
        len: 3,
        scale: 2.0,
        shift: 1.0,
    });
    let part = rt
        .add_partition(
            PartitionConfig {
                slots: 2,
                workers: 1,
                ..config("p", WaitStrategy::SpinPark { spin_us: 10 })
            },
            model,
        )
        .unwrap();
    let mut a = part.try_acquire().unwrap();
    let b = part.try_acquire().unwrap();
    assert_eq!(part.try_acquire().unwrap_err(), RequestError::NoFreeSlot);
    assert_eq!(
        part.acquire(Duration::from_millis(2)).unwrap_err(),
        RequestError::NoFreeSlot
    );
    assert_eq!(a.poll(), Status::Idle);
    assert_eq!(a.wait(T), Err(RequestError::NotSubmitted));
    assert_eq!(a.output().unwrap_err(), RequestError::NotSubmitted);
    a.input_mut().unwrap().copy_from_slice(&[1.0, 2.0, 3.0]);
    a.submit().unwrap();
    a.wait(T).unwrap();
    assert_eq!(a.poll(), Status::Done);
    assert_eq!(a.output().unwrap(), &[3.0, 5.0, 7.0]);
    // Resubmitting a finished request reuses its slot.
    a.input_mut().unwrap()[0] = 10.0;
    a.submit().unwrap();
    a.wait(T).unwrap();
    assert_eq!(a.output().unwrap(), &[21.0, 5.0, 7.0]);
    drop(b);
    let c = part.try_acquire().unwrap();
    drop(c);
    drop(a);
    let finals = rt.shutdown();
    assert_eq!(finals[0].requests(), 2);
}

#[test]
fn full_ring_is_backpressure_not_loss() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    // A model that blocks until released, so the ring fills.
    let gate = Arc::new(AtomicUsize::new(0));
    struct Gate(Arc<AtomicUsize>);
    impl Model for Gate {
        fn name(&self) -> &str {
            "gate"
        }
        fn input_len(&self) -> usize {
            1
        }
        fn output_len(&self) -> usize {
            1
        }
        fn scratch_size(&self, _: usize) -> ScratchSize {
            ScratchSize::default()
        }
        fn run(
            &self,
            b: usize,
            i: &[f32],
            o: &mut [f32],
            _: &mut Scratch,
        ) -> Result<(), ModelError> {
            while self.0.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            o[..b].copy_from_slice(&i[..b]);
            Ok(())
        }
    }
    let part = rt
        .add_partition(
            PartitionConfig {
                slots: 8,
                ring_capacity: 2,
                workers: 1,
                ..config("gated", WaitStrategy::SpinYield { spin_us: 5 })
            },
            Arc::new(Gate(gate.clone())),
        )
        .unwrap();
    assert_eq!(part.ring_capacity(), 2);
    let mut reqs: Vec<_> = (0..8).map(|_| part.try_acquire().unwrap()).collect();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (k, r) in reqs.iter_mut().enumerate() {
        r.input_mut().unwrap()[0] = k as f32;
        match r.try_submit() {
            Ok(()) => accepted.push(k),
            Err(RequestError::Full) => refused.push(k),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    // One taken by the worker (blocked in the model) + two in the ring, or
    // two in the ring if the worker has not woken yet.
    assert!(accepted.len() == 2 || accepted.len() == 3, "{accepted:?}");
    assert!(!refused.is_empty());
    for &k in &refused {
        // Refused requests keep their input and can be submitted later.
        assert_eq!(reqs[k].input_mut().unwrap()[0], k as f32);
        assert_eq!(reqs[k].poll(), Status::Idle);
    }
    gate.store(1, Ordering::Release);
    for &k in &refused {
        reqs[k].submit().unwrap();
    }
    for (k, r) in reqs.iter_mut().enumerate() {
        r.wait(T).unwrap();
        assert_eq!(r.output().unwrap(), &[k as f32]);
    }
    drop(reqs);
    assert_eq!(rt.shutdown()[0].requests(), 8);
}

/// Panics on a negative input, errors on NaN, copies otherwise.
struct Fragile;
impl Model for Fragile {
    fn name(&self) -> &str {
        "fragile"
    }
    fn input_len(&self) -> usize {
        1
    }
    fn output_len(&self) -> usize {
        1
    }
    fn scratch_size(&self, _: usize) -> ScratchSize {
        ScratchSize::default()
    }
    fn run(&self, b: usize, i: &[f32], o: &mut [f32], _: &mut Scratch) -> Result<(), ModelError> {
        if i[..b].iter().any(|v| *v < 0.0) {
            panic!("negative input (deliberate test panic)");
        }
        if i[..b].iter().any(|v| v.is_nan()) {
            return Err(ModelError::Shape("NaN input".into()));
        }
        o[..b].copy_from_slice(&i[..b]);
        Ok(())
    }
}

#[test]
fn a_panicking_model_fails_that_request_and_the_worker_goes_on() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let part = rt
        .add_partition(
            PartitionConfig {
                workers: 1,
                ..config("fragile", WaitStrategy::SpinPark { spin_us: 5 })
            },
            Arc::new(Fragile),
        )
        .unwrap();
    let mut r = part.acquire(T).unwrap();
    for (input, expect) in [
        (1.0, Ok(())),
        (-1.0, Err(RequestError::Failed(Failure::ModelPanic))),
        (2.0, Ok(())),
        (f32::NAN, Err(RequestError::Failed(Failure::ModelError))),
        (3.0, Ok(())),
    ] {
        r.input_mut().unwrap()[0] = input;
        r.submit().unwrap();
        assert_eq!(r.wait(T), expect, "input {input}");
        match expect {
            Ok(()) => assert_eq!(r.output().unwrap(), &[input]),
            Err(e) => assert_eq!(r.output().unwrap_err(), e),
        }
    }
    drop(r);
    let t = rt.shutdown();
    assert_eq!(t[0].workers[0].requests, 5);
    assert_eq!(t[0].workers[0].failures, 2);
}

#[test]
fn bad_configs_name_the_problem() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let model = || {
        Arc::new(Affine {
            len: 1,
            scale: 1.0,
            shift: 0.0,
        })
    };
    let e = rt
        .add_partition(PartitionConfig::new("x", "100000"), model())
        .unwrap_err();
    assert!(
        e.to_string().contains("100000") || e.to_string().contains("cpu"),
        "{e}"
    );
    let online = rt.cpu_context().topology.online_cpus.max().unwrap();
    let e = rt
        .add_partition(PartitionConfig::new("x", (online + 1).to_string()), model())
        .unwrap_err();
    assert!(matches!(e, RuntimeError::CpuSet { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("cpu {}", online + 1)),
        "{e}"
    );
    let e = rt
        .add_partition(
            PartitionConfig {
                placement: Placement::Bind(
                    "999"
                        .parse()
                        .map(|n: usize| pinned_allocator::IdList::from_ids(vec![n]))
                        .unwrap(),
                ),
                ..PartitionConfig::new("x", "all")
            },
            model(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("node 999"), "{e}");
    rt.add_partition(PartitionConfig::new("x", "all"), model())
        .unwrap();
    assert!(matches!(
        rt.add_partition(PartitionConfig::new("x", "all"), model()),
        Err(RuntimeError::DuplicateName(_))
    ));
}

#[test]
fn shutdown_refuses_new_work_but_old_handles_still_finish() {
    let rt = {
        let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
        rt.add_partition(
            PartitionConfig {
                workers: 1,
                pin: false,
                placement: Placement::Os,
                ..config("late", WaitStrategy::SpinPark { spin_us: 1 })
            },
            Arc::new(Affine {
                len: 2,
                scale: 1.0,
                shift: 1.0,
            }),
        )
        .unwrap();
        rt
    };
    let part = rt.partition("late").unwrap().clone();
    let mut held = part.try_acquire().unwrap();
    held.submit().unwrap();
    let finals = rt.shutdown();
    // Accepted before shutdown: completed by the drain.
    assert_eq!(held.poll(), Status::Done);
    assert_eq!(held.output().unwrap(), &[1.0, 1.0]);
    assert_eq!(held.submit(), Err(RequestError::ShuttingDown));
    assert_eq!(part.try_acquire().unwrap_err(), RequestError::ShuttingDown);
    assert_eq!(finals[0].requests(), 1);
}
