//! Hardware probes run beside the GEMM benchmark, in the same process and
//! on the same team: the fp32 FMA peak and the read bandwidth.
// AVX-512 intrinsics are stable since Rust 1.89; the workspace's
// `rust-version` (1.85) predates them, the toolchain (1.95) does not.
#![allow(clippy::incompatible_msrv)]

use core::arch::x86_64::*;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use pinned_kernels::gemm::Team;
use pinned_kernels::isa::{Avx2, Avx512};

/// Independent accumulators in the FMA probe: with 4-cycle latency and two
/// FMA ports, 8 chains keep both ports full; 16 leaves margin.
const CHAINS: usize = 16;
/// Probe iterations per call (each is CHAINS FMAs).
const FMA_ITERS: u64 = 1 << 18;

/// `FMA_ITERS * CHAINS` dependent-by-chain FMAs on zmm registers.
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
unsafe fn fma_loop_avx512(seed: f32) -> f32 {
    let x = _mm512_set1_ps(0.999_999);
    let y = _mm512_set1_ps(seed);
    let mut acc = [_mm512_set1_ps(seed); CHAINS];
    for _ in 0..FMA_ITERS {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    let mut s = _mm512_setzero_ps();
    for a in acc {
        s = _mm512_add_ps(s, a);
    }
    _mm512_reduce_add_ps(s)
}

/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop_avx2(seed: f32) -> f32 {
    let x = _mm256_set1_ps(0.999_999);
    let y = _mm256_set1_ps(seed);
    let mut acc = [_mm256_set1_ps(seed); CHAINS];
    for _ in 0..FMA_ITERS {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut out = [0.0f32; 8];
    let mut s = _mm256_setzero_ps();
    for a in acc {
        s = _mm256_add_ps(s, a);
    }
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// Flops one probe call performs on the widest ISA here, and the call.
fn fma_probe() -> (f64, fn(f32) -> f32) {
    fn avx512(seed: f32) -> f32 {
        // SAFETY: chosen only when `Avx512::try_new()` succeeded.
        unsafe { fma_loop_avx512(seed) }
    }
    fn avx2(seed: f32) -> f32 {
        // SAFETY: chosen only when `Avx2::try_new()` succeeded.
        unsafe { fma_loop_avx2(seed) }
    }
    fn scalar(seed: f32) -> f32 {
        let mut acc = [seed; CHAINS];
        for _ in 0..FMA_ITERS {
            for a in acc.iter_mut() {
                *a = *a * 0.999_999 + seed;
            }
            acc = black_box(acc);
        }
        acc.iter().sum()
    }
    let per_iter = |lanes: usize| (FMA_ITERS as usize * CHAINS * lanes * 2) as f64;
    if Avx512::try_new().is_some() {
        (per_iter(16), avx512)
    } else if Avx2::try_new().is_some() {
        (per_iter(8), avx2)
    } else {
        (per_iter(1), scalar)
    }
}

/// One round of the FMA probe on every thread of a team: a benchmark can
/// race [`FmaProbe::pass`] against its GEMMs, so that the peak is measured
/// in the same windows (and under the same disturbance) as they are.
pub struct FmaProbe {
    flop: f64,
    probe: fn(f32) -> f32,
    sink: AtomicU32,
}

impl Default for FmaProbe {
    fn default() -> Self {
        let (flop, probe) = fma_probe();
        Self {
            flop,
            probe,
            sink: AtomicU32::new(0),
        }
    }
}

impl FmaProbe {
    /// Flops of one pass on one thread.
    pub fn flop_per_thread(&self) -> f64 {
        self.flop
    }

    pub fn pass(&self, team: &dyn Team) {
        team.run(&|t| {
            let r = (self.probe)(1e-7 * (t + 1) as f32);
            self.sink.fetch_add(r.to_bits(), Ordering::Relaxed);
        });
        black_box(self.sink.load(Ordering::Relaxed));
    }

    /// GFLOP/s of the whole team for a pass that took `seconds`.
    pub fn gflops(&self, team: &dyn Team, seconds: f64) -> f64 {
        self.flop * team.threads() as f64 / seconds / 1e9
    }
}

/// The fp32 FMA peak of the team's threads together, GFLOP/s (best of
/// `reps` rounds, each thread running one probe call).
pub fn fma_peak_gflops(team: &dyn Team, reps: usize) -> f64 {
    let probe = FmaProbe::default();
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(3) {
        let start = Instant::now();
        probe.pass(team);
        best = best.min(start.elapsed().as_secs_f64());
    }
    probe.gflops(team, best)
}

/// How far ahead the bandwidth probe prefetches (4 KiB).
const PREFETCH_FLOATS: usize = 1024;

/// Sum of `x`, read with wide loads and 4 accumulators.
///
/// # Safety
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(x: &[f32]) -> f32 {
    let mut acc = [_mm512_setzero_ps(); 4];
    let chunks = x.chunks_exact(64);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        // Software prefetch as the GEMM does: without it this VM's hardware
        // prefetchers leave a single stream well below the memory's rate.
        _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().wrapping_add(PREFETCH_FLOATS).cast());
        _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().wrapping_add(PREFETCH_FLOATS + 16).cast());
        _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().wrapping_add(PREFETCH_FLOATS + 32).cast());
        _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().wrapping_add(PREFETCH_FLOATS + 48).cast());
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` has 64 floats; lane group `i` is `c[16 i .. 16 i + 16]`.
            *a = _mm512_add_ps(*a, unsafe { _mm512_loadu_ps(c.as_ptr().add(16 * i)) });
        }
    }
    let s = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(s) + tail
}

fn sum(x: &[f32]) -> f32 {
    if Avx512::try_new().is_some() {
        // SAFETY: AVX-512F checked just above.
        unsafe { sum_avx512(x) }
    } else {
        // 8 independent partial sums: enough for SSE/AVX2 auto-vectorisation.
        let mut acc = [0.0f32; 8];
        let chunks = x.chunks_exact(8);
        let tail: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (a, v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        acc.iter().sum::<f32>() + tail
    }
}

/// A buffer the team streams, each thread its own contiguous share: the
/// limit of a matrix-vector product whose weights are that size. A benchmark
/// can race [`ReadProbe::pass`] against the GEMMs, so that the probe's buffer
/// is exactly as warm (or as cold) in L3 as each GEMM's weights.
pub struct ReadProbe {
    buf: Vec<f32>,
    sink: AtomicU32,
}

impl ReadProbe {
    pub fn new(floats: usize) -> Self {
        Self {
            buf: (0..floats).map(|i| (i % 7) as f32).collect(),
            sink: AtomicU32::new(0),
        }
    }

    pub fn bytes(&self) -> usize {
        self.buf.len() * 4
    }

    /// Reads the whole buffer once, split over the team.
    pub fn pass(&self, team: &dyn Team) {
        let (floats, threads) = (self.buf.len(), team.threads());
        team.run(&|t| {
            let lo = t * floats / threads;
            let hi = (t + 1) * floats / threads;
            self.sink
                .fetch_add(sum(&self.buf[lo..hi]).to_bits(), Ordering::Relaxed);
        });
        black_box(self.sink.load(Ordering::Relaxed));
    }
}

/// Read bandwidth (GB/s) of the team streaming a warm `floats`-long buffer
/// over and over (best of `samples`).
pub fn read_bandwidth_gbps(team: &dyn Team, floats: usize, samples: usize) -> f64 {
    let probe = ReadProbe::new(floats);
    probe.pass(team);
    let mut best = f64::INFINITY;
    for _ in 0..samples.max(10) {
        let start = Instant::now();
        let mut passes = 0u32;
        while passes < 2 || start.elapsed().as_secs_f64() < 0.002 {
            probe.pass(team);
            passes += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / passes as f64);
    }
    probe.bytes() as f64 / best / 1e9
}
