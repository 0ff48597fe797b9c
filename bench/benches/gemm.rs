//! `cargo bench -p pinned-bench --bench gemm`: our fp32 GEMM against
//! `matrixmultiply` and `gemm` in the same criterion group per shape, one
//! thread (`MATMUL_NUM_THREADS=1` is set before matrixmultiply's first
//! call; `pinned bench gemm` covers 2 threads), with the FMA peak measured
//! by a probe printed first. Throughput is in elements = flops, so
//! criterion's "Kelem/s" column reads as kFLOP/s.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pinned_bench::gemm_bench::{peers, probes};
use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB, SingleThread};
use pinned_kernels::Isa;
use std::time::Duration;

const SHAPES: [(usize, usize, usize); 6] = [
    (1, 1024, 1024),
    (16, 1536, 384),
    (64, 384, 1536),
    (256, 1024, 1024),
    (1, 4096, 4096),
    (512, 512, 512),
];

fn data(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 31 + seed) % 17) as f32 * 0.05 - 0.4)
        .collect()
}

fn bench_gemm(c: &mut Criterion) {
    let isa = Isa::from_env().expect("PINNED_ISA names an ISA this machine has");
    let peak = probes::fma_peak_gflops(&SingleThread, 20);
    println!("fp32 FMA peak (1 thread, probe): {peak:.1} GFLOP/s; isa {isa}");
    for (m, k, n) in SHAPES {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let packed = PackedB::new(&b, n, k, n, isa).expect("pack");
        let mut scratch = vec![0u8; gemm::gemm_scratch_bytes(m, n, k, isa)];
        let mut out = vec![0.0f32; m * n];
        let mut group = c.benchmark_group(format!("sgemm {m}x{k}x{n}"));
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        group.measurement_time(Duration::from_secs(2));
        group.warm_up_time(Duration::from_millis(300));
        group.sample_size(20);
        group.bench_function(BenchmarkId::new("pinned (packed B)", isa), |bench| {
            bench.iter(|| {
                gemm::sgemm(
                    isa,
                    1.0,
                    MatRef::new(&a, m, k, k).expect("A"),
                    BMatrix::Packed(&packed),
                    0.0,
                    MatMut::new(&mut out, m, n, n).expect("C"),
                    &Epilogue::new(),
                    &mut scratch,
                )
                .expect("sgemm")
            })
        });
        group.bench_function("matrixmultiply", |bench| {
            bench.iter(|| peers::matrixmultiply_sgemm(m, k, n, &a, &b, &mut out))
        });
        group.bench_function("gemm", |bench| {
            bench.iter(|| peers::gemm_crate_sgemm(m, k, n, &a, &b, &mut out, 1))
        });
        group.finish();
    }
}

fn single_threaded_peers() {
    // matrixmultiply reads this once, at its first call (edition 2021: safe).
    std::env::set_var("MATMUL_NUM_THREADS", "1");
}

fn benches(c: &mut Criterion) {
    single_threaded_peers();
    bench_gemm(c);
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
