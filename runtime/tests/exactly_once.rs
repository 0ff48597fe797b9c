//! Every accepted request completes exactly once and its answer is its own:
//! many producers, several workers per partition, batching, abandoned
//! handles, a full ring, and a shutdown racing the producers.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pinned_runtime::{
    BatchPolicy, Model, ModelError, PartitionConfig, Placement, RequestError, Runtime,
    RuntimeConfig, Scratch, ScratchSize, WaitStrategy,
};

const PRODUCERS: usize = 4;
const PER_PRODUCER: usize = 3_000;
const T: Duration = Duration::from_secs(30);

/// Counts how often each request id ran; answers `[id, -id]`.
struct Tally {
    runs: Vec<AtomicU32>,
}

impl Model for Tally {
    fn name(&self) -> &str {
        "tally"
    }
    fn input_len(&self) -> usize {
        1
    }
    fn output_len(&self) -> usize {
        2
    }
    fn scratch_size(&self, _: usize) -> ScratchSize {
        ScratchSize::default()
    }
    fn run(&self, b: usize, i: &[f32], o: &mut [f32], _: &mut Scratch) -> Result<(), ModelError> {
        for k in 0..b {
            let id = i[k] as usize;
            self.runs[id].fetch_add(1, Ordering::Relaxed);
            o[2 * k] = i[k];
            o[2 * k + 1] = -i[k];
        }
        Ok(())
    }
}

fn runtime_with(
    wait: WaitStrategy,
    max_batch: usize,
    ids: usize,
) -> (Runtime, pinned_runtime::Partition, Arc<Tally>) {
    let tally = Arc::new(Tally {
        runs: (0..ids).map(|_| AtomicU32::new(0)).collect(),
    });
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let part = rt
        .add_partition(
            PartitionConfig {
                wait,
                batch: BatchPolicy {
                    max_batch,
                    max_wait_us: 10,
                },
                workers: 2,
                slots: 32,
                ring_capacity: 8,
                pin: false,
                placement: Placement::Os,
                ..PartitionConfig::new("once", "all")
            },
            tally.clone(),
        )
        .unwrap();
    (rt, part, tally)
}

#[test]
fn many_producers_each_request_once_with_its_own_answer() {
    for (wait, batch) in [
        (WaitStrategy::SpinPark { spin_us: 5 }, 1),
        (WaitStrategy::SpinYield { spin_us: 5 }, 4),
    ] {
        let total = PRODUCERS * PER_PRODUCER;
        let (rt, part, tally) = runtime_with(wait, batch, total);
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|p| {
                let part = part.clone();
                std::thread::spawn(move || {
                    let mut abandoned = 0;
                    for n in 0..PER_PRODUCER {
                        let id = p * PER_PRODUCER + n;
                        let mut r = part.acquire(T).unwrap();
                        r.input_mut().unwrap()[0] = id as f32;
                        // Alternate the blocking and the non-blocking submit.
                        if n % 2 == 0 {
                            r.submit().unwrap();
                        } else {
                            loop {
                                match r.try_submit() {
                                    Ok(()) => break,
                                    Err(RequestError::Full) => std::thread::yield_now(),
                                    Err(e) => panic!("{e}"),
                                }
                            }
                        }
                        if n % 7 == 3 {
                            // Dropped in flight: it still runs once, and
                            // its slot comes back.
                            drop(r);
                            abandoned += 1;
                            continue;
                        }
                        r.wait(T).unwrap();
                        assert_eq!(r.output().unwrap(), &[id as f32, -(id as f32)]);
                    }
                    abandoned
                })
            })
            .collect();
        let abandoned: usize = producers.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(abandoned > 0);
        let finals = rt.shutdown();
        for (id, runs) in tally.runs.iter().enumerate() {
            assert_eq!(runs.load(Ordering::Relaxed), 1, "request {id} ({wait:?})");
        }
        assert_eq!(finals[0].requests() as usize, total);
        // Every slot came back, abandoned ones included.
        let mut all = Vec::new();
        while let Ok(r) = part.try_acquire() {
            all.push(r);
        }
        assert!(all.is_empty(), "closed partitions hand out nothing");
    }
}

#[test]
fn shutdown_racing_producers_completes_every_accepted_request_once() {
    let ids = PRODUCERS * PER_PRODUCER;
    let (rt, part, tally) = runtime_with(WaitStrategy::SpinPark { spin_us: 2 }, 2, ids);
    let go = Arc::new(AtomicBool::new(false));
    let accepted: Vec<AtomicBool> = (0..ids).map(|_| AtomicBool::new(false)).collect();
    let accepted = Arc::new(accepted);
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let (part, go, accepted) = (part.clone(), go.clone(), accepted.clone());
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                let mut held = Vec::new();
                for n in 0..PER_PRODUCER {
                    let id = p * PER_PRODUCER + n;
                    let mut r = match part.acquire(T) {
                        Ok(r) => r,
                        Err(RequestError::ShuttingDown) => break,
                        Err(e) => panic!("{e}"),
                    };
                    r.input_mut().unwrap()[0] = id as f32;
                    match r.submit() {
                        Ok(()) => accepted[id].store(true, Ordering::Relaxed),
                        Err(RequestError::ShuttingDown) => break,
                        Err(e) => panic!("{e}"),
                    }
                    held.push((id, r));
                    if held.len() == 4 {
                        for (id, mut r) in held.drain(..) {
                            r.wait(T).unwrap();
                            assert_eq!(r.output().unwrap()[0], id as f32);
                        }
                    }
                }
                // Requests accepted before the shutdown finish after it.
                for (id, mut r) in held {
                    r.wait(T).unwrap();
                    assert_eq!(r.output().unwrap()[0], id as f32);
                }
            })
        })
        .collect();
    go.store(true, Ordering::Release);
    std::thread::sleep(Duration::from_millis(20));
    let finals = rt.shutdown();
    for t in producers {
        t.join().unwrap();
    }
    let mut count = 0u64;
    for id in 0..ids {
        let runs = tally.runs[id].load(Ordering::Relaxed);
        let expected = u32::from(accepted[id].load(Ordering::Relaxed));
        assert_eq!(runs, expected, "request {id}");
        count += u64::from(runs);
    }
    assert_eq!(finals[0].requests(), count);
}
