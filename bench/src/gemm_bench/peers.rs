//! The peer libraries' fp32 GEMMs behind safe, checked calls, so that every
//! benchmark calls them the same way (their best settings, dense
//! row-major operands).

/// Panics unless the slices hold dense row-major `m x k`, `k x n`, `m x n`.
fn check(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &[f32]) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "peer GEMM operands too short for {m} x {k} x {n}"
    );
}

/// `c = a b` with `matrixmultiply` (threads: its `MATMUL_NUM_THREADS`,
/// read once per process).
pub fn matrixmultiply_sgemm(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    check(m, k, n, a, b, c);
    // SAFETY: checked above: a is m x k, b k x n, c m x n, dense row-major.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// `c = a b` with the `gemm` crate (built with its `x86-v4` feature, its
/// AVX-512 kernels) on `threads` rayon threads (1: none).
pub fn gemm_crate_sgemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    threads: usize,
) {
    check(m, k, n, a, b, c);
    let par = if threads <= 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // SAFETY: checked above; read_dst = false, so dst = 1.0 * a b and
    // dst is never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}
