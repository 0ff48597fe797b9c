//! Runs one low-precision GEMM shape in a loop and prints its best rate,
//! by the wall clock and by this thread's CPU time (which a shared,
//! oversubscribed machine disturbs less): a tuning aid.
//!
//! `cargo run --release -p pinned-kernels --example lowp_loop -- M K N
//! [iters] [bf16|int8] [threads]`; `PINNED_LOWP_PATH`, `PINNED_LOWP_KC`,
//! `PINNED_LOWP_MC`, `PINNED_LOWP_NC`, `PINNED_LOWP_STRIP_KC`,
//! `PINNED_LOWP_NT` and `PINNED_LOWP_RUNS` apply.

use std::time::Instant;

use pinned_kernels::gemm::{Epilogue, MatMut, MatRef, ThreadTeam};
use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (m, k, n, iters) = (arg(0, 2048), arg(1, 2048), arg(2, 2048), arg(3, 20));
    let elem = match args.get(4).map(String::as_str) {
        Some("int8") => Elem::Int8,
        _ => Elem::Bf16,
    };
    let threads = arg(5, 1);
    let path = LowpPath::from_env(elem)?;
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let packed = PackedLowp::new(MatRef::new(&w, k, n, n)?, elem);
    // 64-byte-aligned C, as a runtime's arena gives.
    let mut c = vec![0.0f32; m * n + 16];
    let off = c.as_ptr().align_offset(64);
    let mut scratch = vec![0u8; lowp::scratch_bytes(elem, m, k)];
    let team = ThreadTeam::new(threads)?;
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..iters {
        let (t, c0) = (Instant::now(), thread_cpu_seconds());
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
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(thread_cpu_seconds() - c0);
    }
    let ops = 2.0 * (m * n * k) as f64 / 1e9;
    println!(
        "{m}x{k}x{n} {} t={threads}: {:.1} G/s wall, {:.1} G/s by the calling thread's CPU time (best of {iters})",
        path.describe(elem),
        ops / wall,
        ops / cpu,
    );
    Ok(())
}

/// CPU time of the calling thread.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
