//! The AVX-512 microkernel's instruction mix alone, on L1-resident data: a
//! tuning aid that separates what the loop itself sustains from what the
//! GEMM around it costs (`cargo run --release -p pinned-kernels --example
//! fma_mix -- [steps per pass]`).
//!
//! Each k step of the 14 x 32 tile is 28 FMAs on 28 accumulators, fed by 2
//! vector loads of B and 14 broadcast loads of A. The loop runs four ways:
//! FMAs alone (the FMA peak), with the B loads, with the A broadcasts, and
//! with both (the kernel's mix); A and B cycle through 64 steps (11 KiB).
//!
//! On the Sapphire Rapids VM this was written on (two runs of each, best
//! of 20): FMAs alone 204-212 GFLOP/s (`pinned bench gemm`'s probe gave
//! 209-223 in the same minutes), with the B loads 100% of that, with the
//! broadcasts 91-94%, with both 86-89%. So the kernel's own mix stays
//! below 85% of the probe wherever its data is: the broadcasts, not the
//! caches, set the ceiling that the whole GEMM then loses to packing, B
//! from L2 and the passes over C.

use std::arch::x86_64::*;
use std::time::Instant;

use pinned_kernels::isa::Avx512;

/// What the loop loads each k step besides running its 28 FMAs.
#[derive(Clone, Copy, Debug)]
enum Mix {
    FmasOnly,
    VectorLoads,
    Broadcasts,
    Both,
}

/// A and B cycle through this many k steps (in L1).
const WRAP: usize = 64;

/// # Safety
/// AVX-512F and FMA available; `a` readable for `14 * WRAP` floats, `b`
/// for `32 * WRAP`.
#[target_feature(enable = "avx512f,fma")]
unsafe fn run(mix: Mix, steps: usize, a: *const f32, b: *const f32) -> f32 {
    let loads_b = matches!(mix, Mix::VectorLoads | Mix::Both);
    let broadcasts = matches!(mix, Mix::Broadcasts | Mix::Both);
    let mut acc = [[_mm512_setzero_ps(); 2]; 14];
    let (fixed_b, fixed_a) = (_mm512_set1_ps(1.0001), _mm512_set1_ps(0.9999));
    for step in 0..steps {
        let at = step % WRAP;
        // SAFETY: `at < WRAP`: rows `at * 14 .. + 14` of A and the 32
        // floats at `at * 32` of B are inside the buffers (contract).
        unsafe {
            let (pa, pb) = (a.add(at * 14), b.add(at * 32));
            let bv = if loads_b {
                [_mm512_loadu_ps(pb), _mm512_loadu_ps(pb.add(16))]
            } else {
                [fixed_b; 2]
            };
            for (r, row) in acc.iter_mut().enumerate() {
                let av = if broadcasts {
                    _mm512_set1_ps(*pa.add(r))
                } else {
                    fixed_a
                };
                row[0] = _mm512_fmadd_ps(av, bv[0], row[0]);
                row[1] = _mm512_fmadd_ps(av, bv[1], row[1]);
            }
        }
    }
    let mut sum = _mm512_setzero_ps();
    for row in acc {
        sum = _mm512_add_ps(sum, _mm512_add_ps(row[0], row[1]));
    }
    _mm512_reduce_add_ps(sum)
}

fn main() {
    if Avx512::try_new().is_none() {
        eprintln!("fma_mix needs AVX-512");
        std::process::exit(2);
    }
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let a = vec![1.0f32; 14 * WRAP];
    let b = vec![1.0f32; 32 * WRAP];
    let gflops = |mix: Mix| {
        let mut best = f64::INFINITY;
        for _ in 0..20 {
            let start = Instant::now();
            // SAFETY: AVX-512 checked above (it implies FMA on every CPU
            // that has it); the buffers hold WRAP steps of A and B.
            let x = unsafe { run(mix, steps, a.as_ptr(), b.as_ptr()) };
            std::hint::black_box(x);
            best = best.min(start.elapsed().as_secs_f64());
        }
        2.0 * 28.0 * 16.0 * steps as f64 / best / 1e9
    };
    for _round in 0..2 {
        let peak = gflops(Mix::FmasOnly);
        println!("FMAs only          {peak:6.1} GFLOP/s");
        for mix in [Mix::VectorLoads, Mix::Broadcasts, Mix::Both] {
            let g = gflops(mix);
            println!(
                "{:<18} {g:6.1} GFLOP/s  {:5.1}%",
                format!("{mix:?}"),
                100.0 * g / peak
            );
        }
    }
}
