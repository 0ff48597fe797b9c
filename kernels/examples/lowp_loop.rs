//! Runs one low-precision GEMM shape in a loop and prints its best rate,
//! by the wall clock and by this thread's CPU time (which a shared,
//! oversubscribed machine disturbs less): a tuning aid.
//!
//! `cargo run --release -p pinned-kernels --example lowp_loop -- M K N
//! [iters] [bf16|int8] [threads] [evict MiB]`; `PINNED_LOWP_PATH`, `PINNED_LOWP_KC`,
//! `PINNED_LOWP_MC`, `PINNED_LOWP_NC`, `PINNED_LOWP_STRIP_KC`,
//! `PINNED_LOWP_NT` and `PINNED_LOWP_RUNS` apply.

use pinned_kernels::gemm::{Epilogue, MatMut, MatRef, ThreadTeam};
use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};

mod common;
use common::{Args, Best};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let arg = |i: usize, d: usize| args.number(i, d);
    let (m, k, n, iters) = (arg(0, 2048), arg(1, 2048), arg(2, 2048), arg(3, 20));
    let elem = match args.word(4) {
        Some("int8") => Elem::Int8,
        _ => Elem::Bf16,
    };
    let threads = arg(5, 1);
    // Optional: MiB of other data streamed between calls, so B starts cold
    // (as a model's weights do, each layer's evicted by the others').
    let evict: Vec<f32> = vec![1.0; arg(6, 0) << 18];
    let path = LowpPath::from_env(elem)?;
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let packed = PackedLowp::new(MatRef::new(&w, k, n, n)?, elem);
    // 64-byte-aligned C, as a runtime's arena gives.
    let mut c = vec![0.0f32; m * n + 16];
    let off = c.as_ptr().align_offset(64);
    let mut scratch = vec![0u8; lowp::scratch_bytes(elem, m, k)];
    let team = ThreadTeam::new(threads)?;
    let mut best = Best::default();
    for _ in 0..iters {
        std::hint::black_box(evict.iter().fold(0.0f32, |s, x| s.max(*x)));
        best.time(|| -> Result<(), Box<dyn std::error::Error>> {
            lowp::gemm_parallel(
                &team,
                path,
                1.0,
                MatRef::new(&a, m, k, k)?,
                &packed,
                0.0,
                MatMut::new(&mut c[off..off + m * n], m, n, n)?,
                &Epilogue::new(),
                &mut scratch,
            )?;
            Ok(())
        })?;
    }
    let ops = 2.0 * (m * n * k) as f64 / 1e9;
    println!(
        "{m}x{k}x{n} {} t={threads}: {:.1} G/s wall, {:.1} G/s by the calling thread's CPU time (best of {iters})",
        path.describe(elem),
        ops / best.wall,
        ops / best.cpu,
    );
    Ok(())
}
