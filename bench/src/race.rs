//! What the GEMM benchmarks share: the race that times their contenders
//! and the deterministic operands they fill.

use std::time::{Duration, Instant};

/// How a race samples: each sample runs enough calls to last about
/// `sample` (at least one call), and each contender gets `samples`.
pub(crate) struct Timing {
    sample: Duration,
    samples: usize,
}

impl Timing {
    /// Samples of `sample_ms` milliseconds, `samples` of them a contender.
    pub(crate) fn new(sample_ms: u64, samples: usize) -> Self {
        Self {
            sample: Duration::from_millis(sample_ms),
            samples,
        }
    }
}

/// Calls per sample so that one sample lasts about `target`.
fn calibrate(target: Duration, f: &mut dyn FnMut()) -> u32 {
    let start = Instant::now();
    f();
    let once = start.elapsed().max(Duration::from_nanos(100));
    (target.as_secs_f64() / once.as_secs_f64()).clamp(1.0, 1e6) as u32
}

fn time_per_call(iters: u32, f: &mut dyn FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_secs_f64() / iters as f64
}

/// Best seconds per call of each function, sampled in turn: load on a
/// shared machine affects them alike, and the best of many short windows
/// is the one least disturbed.
pub(crate) fn race(timing: &Timing, fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let iters: Vec<u32> = fs
        .iter_mut()
        .map(|f| calibrate(timing.sample, *f))
        .collect();
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..timing.samples {
        for (i, f) in fs.iter_mut().enumerate() {
            best[i] = best[i].min(time_per_call(iters[i], *f));
        }
    }
    best
}

/// `len` deterministic values in [-0.5, 0.5) (xorshift32 from `seed`).
pub(crate) fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}
