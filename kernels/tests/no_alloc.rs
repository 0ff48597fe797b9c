//! The per-call paths allocate nothing: GEMM (packed and plain B, serial
//! and on a team, with an epilogue) and the model ops, once their memory
//! and scratch are sized up front. A counting global allocator watches.
//! Runs without libtest's harness (`harness = false`): the counter is
//! process-wide, and libtest's own threads allocate while a test runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB, ThreadTeam};
use pinned_kernels::{ops, Isa};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed through.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    calls_do_not_allocate();
    println!("no_alloc: ok (gemm serial/parallel, packed/plain B, epilogue, ops)");
}

fn calls_do_not_allocate() {
    let team = ThreadTeam::new(2).unwrap();
    for isa in Isa::available() {
        let (m, k, n) = (37, 70, 101);
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let bias = vec![1.0f32; n];
        let res = vec![1.0f32; m * n];
        let mut c = vec![0.0f32; m * n];
        let mut mem = vec![0u8; PackedB::bytes_needed(k, n, isa)];
        let packed = PackedB::pack_into(&b, n, k, n, isa, &mut mem).unwrap();
        let mut scratch = vec![0u8; gemm::gemm_scratch_bytes(m, n, k, isa)];
        let mut pscratch = vec![0u8; gemm::gemm_scratch_bytes_parallel(m, n, k, isa, 2)];
        let gamma = vec![1.0f32; n];
        let keep = vec![true; n];
        let mut pooled = vec![0.0f32; n];
        // Warm up detection caches (OnceLock) before counting. The team's
        // helper is past its start-up (a new thread allocates once, e.g. its
        // TLS destructor list): `ThreadTeam::new` returns only then.
        Isa::best();
        pinned_kernels::cache_sizes();

        let before = ALLOCS.load(Ordering::SeqCst);
        let epi = Epilogue::new().bias(&bias).gelu_tanh().residual(&res, n);
        for bm in [
            BMatrix::Packed(&packed),
            BMatrix::Plain(MatRef::new(&b, k, n, n).unwrap()),
        ] {
            let am = MatRef::new(&a, m, k, k).unwrap();
            gemm::sgemm(
                isa,
                1.0,
                am,
                bm,
                0.0,
                MatMut::new(&mut c, m, n, n).unwrap(),
                &epi,
                &mut scratch,
            )
            .unwrap();
            let cm = MatMut::new(&mut c, m, n, n).unwrap();
            gemm::sgemm_parallel(&team, isa, 1.0, am, bm, 1.0, cm, &epi, &mut pscratch).unwrap();
        }
        ops::layernorm(isa, &mut c, n, &gamma, &bias, 1e-5).unwrap();
        ops::softmax_rows(isa, &mut c, n, Some(&keep)).unwrap();
        ops::gelu(isa, &mut c).unwrap();
        ops::add(isa, &mut c, &res).unwrap();
        ops::mean_pool(isa, &c, n, None, &mut pooled).unwrap();
        ops::l2_normalize(isa, &mut c, n, 1e-12).unwrap();
        let after = ALLOCS.load(Ordering::SeqCst);
        assert_eq!(
            after,
            before,
            "{isa}: {} allocation(s) in the call paths",
            after - before
        );
    }
}
