//! Runs one GEMM shape in a loop and prints GFLOP/s: a target for
//! `perf record` when tuning (`cargo run --release -p pinned-kernels
//! --example sgemm_loop -- M K N [iters] [plain|packed] [threads] [evict MiB]`).

use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB, ThreadTeam};
use pinned_kernels::Isa;

mod common;
use common::{Args, Best};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::from_env();
    let arg = |i: usize, d: usize| args.number(i, d);
    let (m, k, n, iters) = (arg(0, 1024), arg(1, 1024), arg(2, 1024), arg(3, 20));
    let packed = args.word(4) != Some("plain");
    let threads = arg(5, 1);
    // Optional: MiB of other data streamed between calls, so B starts cold.
    let evict: Vec<f32> = vec![1.0; arg(6, 0) << 18];
    let isa = Isa::from_env()?;
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1).collect();
    let mut c = vec![0.0f32; m * n];
    let pb = PackedB::new(&b, n, k, n, isa)?;
    let team = ThreadTeam::new(threads)?;
    let mut scratch = vec![0u8; gemm::gemm_scratch_bytes_parallel(m, n, k, isa, threads)];
    let mut best = Best::default();
    for _ in 0..iters {
        let bm = if packed {
            BMatrix::Packed(&pb)
        } else {
            BMatrix::Plain(MatRef::new(&b, k, n, n)?)
        };
        std::hint::black_box(evict.iter().fold(0.0f32, |s, x| s.max(*x)));
        best.time(|| -> Result<(), Box<dyn std::error::Error>> {
            gemm::sgemm_parallel(
                &team,
                isa,
                1.0,
                MatRef::new(&a, m, k, k)?,
                bm,
                0.0,
                MatMut::new(&mut c, m, n, n)?,
                &Epilogue::new(),
                &mut scratch,
            )?;
            Ok(())
        })?;
    }
    println!(
        "{m}x{k}x{n} {isa} {} t={threads}: {:.1} GFLOP/s wall, {:.1} by this thread's CPU time (best of {iters})",
        if packed { "packed" } else { "plain" },
        2.0 * (m * n * k) as f64 / best.wall / 1e9,
        2.0 * (m * n * k) as f64 / best.cpu / 1e9 / threads as f64
    );
    Ok(())
}
