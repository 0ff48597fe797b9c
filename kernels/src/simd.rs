//! One narrow SIMD vocabulary, implemented by each ISA token.
//!
//! Kernel bodies (GEMM microkernel, epilogue, model ops) are written once as
//! `#[inline(always)]` generic functions over [`Simd`]; each ISA adds a thin
//! `#[target_feature]` wrapper that instantiates the body with its token, so
//! the intrinsics inline into code compiled for that ISA.
//!
//! Arithmetic is safe: the token's existence proves the instructions exist.
//! Memory access takes raw pointers and is `unsafe`.

use core::arch::x86_64::*;

use crate::isa::{Avx2, Avx512, Scalar};

/// A vector of `LANES` f32 and the operations the kernels need.
pub trait Simd: Copy + Send + Sync + 'static {
    type V: Copy;
    const LANES: usize;

    fn splat(self, x: f32) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`, fused where the ISA has FMA.
    fn fma(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn abs(self, a: Self::V) -> Self::V;
    /// `|mag|` with the sign of `sign`.
    fn copysign(self, mag: Self::V, sign: Self::V) -> Self::V;
    /// Round to nearest, ties to even.
    fn round(self, a: Self::V) -> Self::V;
    /// `2^n` for lanes holding integers in `[-126, 127]`.
    fn pow2i(self, n: Self::V) -> Self::V;
    fn reduce_sum(self, a: Self::V) -> f32;
    fn reduce_max(self, a: Self::V) -> f32;

    /// # Safety
    /// `p..p + LANES` must be readable (no alignment needed).
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p..p + LANES` must be writable (no alignment needed).
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// Loads `n < LANES` lanes, zeroing the rest; touches only those `n`.
    ///
    /// # Safety
    /// `p..p + n` must be readable.
    unsafe fn load_partial(self, p: *const f32, n: usize) -> Self::V;
    /// Stores the first `n < LANES` lanes; touches only those `n`.
    ///
    /// # Safety
    /// `p..p + n` must be writable.
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: Self::V);
    /// Stores all lanes past the caches where the ISA can (a non-temporal
    /// store; the caller fences before others read), else as [`store`].
    ///
    /// # Safety
    /// `p..p + LANES` must be writable and `p` aligned to `LANES * 4` bytes.
    ///
    /// [`store`]: Simd::store
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32, v: Self::V) {
        // SAFETY: the caller's contract covers `store`'s.
        unsafe { self.store(p, v) }
    }

    /// Hint that `p` will be read soon (into L1). Never faults, whatever `p` is.
    fn prefetch(self, p: *const f32);
    /// Hint that `p` will be read later (into L2). Never faults.
    fn prefetch_l2(self, p: *const f32);
}

impl Simd for Scalar {
    type V = f32;
    const LANES: usize = 1;

    #[inline(always)]
    fn splat(self, x: f32) -> f32 {
        x
    }
    #[inline(always)]
    fn add(self, a: f32, b: f32) -> f32 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32, b: f32) -> f32 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32, b: f32) -> f32 {
        a * b
    }
    #[inline(always)]
    fn div(self, a: f32, b: f32) -> f32 {
        a / b
    }
    #[inline(always)]
    fn max(self, a: f32, b: f32) -> f32 {
        if a > b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn min(self, a: f32, b: f32) -> f32 {
        if a < b {
            a
        } else {
            b
        }
    }
    #[inline(always)]
    fn fma(self, a: f32, b: f32, c: f32) -> f32 {
        // Unfused on purpose: `mul_add` is a libm call without FMA hardware.
        a * b + c
    }
    #[inline(always)]
    fn abs(self, a: f32) -> f32 {
        a.abs()
    }
    #[inline(always)]
    fn copysign(self, mag: f32, sign: f32) -> f32 {
        mag.copysign(sign)
    }
    #[inline(always)]
    fn round(self, a: f32) -> f32 {
        a.round_ties_even()
    }
    #[inline(always)]
    fn pow2i(self, n: f32) -> f32 {
        f32::from_bits(((n as i32 + 127) as u32) << 23)
    }
    #[inline(always)]
    fn reduce_sum(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    fn reduce_max(self, a: f32) -> f32 {
        a
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> f32 {
        // SAFETY: the caller guarantees `p` is readable.
        unsafe { p.read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: f32) {
        // SAFETY: the caller guarantees `p` is writable.
        unsafe { p.write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, _p: *const f32, _n: usize) -> f32 {
        // n < LANES = 1 means no lane is read.
        0.0
    }
    #[inline(always)]
    unsafe fn store_partial(self, _p: *mut f32, _n: usize, _v: f32) {}
    #[inline(always)]
    fn prefetch(self, _p: *const f32) {}
    #[inline(always)]
    fn prefetch_l2(self, _p: *const f32) {}
}

impl Simd for Avx2 {
    type V = __m256;
    const LANES: usize = 8;

    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: an `Avx2` token proves AVX2 and FMA are usable (and below).
        unsafe { _mm256_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_div_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_min_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn abs(self, a: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_andnot_ps(_mm256_set1_ps(-0.0), a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m256, sign: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe {
            let s = _mm256_set1_ps(-0.0);
            _mm256_or_ps(_mm256_andnot_ps(s, mag), _mm256_and_ps(s, sign))
        }
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe { _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m256) -> __m256 {
        // SAFETY: see `splat`.
        unsafe {
            let e = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m256) -> f32 {
        // SAFETY: see `splat`.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m256) -> f32 {
        // SAFETY: see `splat`.
        unsafe {
            let s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
            let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
            _mm_cvtss_f32(s)
        }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable floats at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m256) {
        // SAFETY: the caller guarantees 8 writable floats at `p`.
        unsafe { _mm256_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m256 {
        // SAFETY: masked-off lanes are not accessed (and cannot fault); the
        // caller guarantees the first `n` are readable.
        unsafe { _mm256_maskload_ps(p, avx2_mask(n)) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m256) {
        // SAFETY: as in `load_partial`, only the first `n` lanes are written.
        unsafe { _mm256_maskstore_ps(p, avx2_mask(n), v) }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: prefetch is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_l2(self, p: *const f32) {
        // SAFETY: prefetch is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
}

/// Lanes `0..n` set (sign bit), the rest clear.
#[inline(always)]
fn avx2_mask(n: usize) -> __m256i {
    // SAFETY: only reached from `Avx2` methods, whose token proves AVX2.
    unsafe {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx)
    }
}

impl Simd for Avx512 {
    type V = __m512;
    const LANES: usize = 16;

    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: an `Avx512` token proves AVX-512F/BW/VL/DQ (and below).
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn div(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_div_ps(a, b) }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_max_ps(a, b) }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_min_ps(a, b) }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_fmadd_ps(a, b, c) }
    }
    #[inline(always)]
    fn abs(self, a: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_abs_ps(a) }
    }
    #[inline(always)]
    fn copysign(self, mag: __m512, sign: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe {
            let s = _mm512_set1_epi32(i32::MIN);
            let m = _mm512_andnot_si512(s, _mm512_castps_si512(mag));
            let g = _mm512_and_si512(s, _mm512_castps_si512(sign));
            _mm512_castsi512_ps(_mm512_or_si512(m, g))
        }
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // SAFETY: see `splat`.
        unsafe {
            let e = _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127));
            _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e))
        }
    }
    #[inline(always)]
    fn reduce_sum(self, a: __m512) -> f32 {
        // SAFETY: see `splat`.
        unsafe { _mm512_reduce_add_ps(a) }
    }
    #[inline(always)]
    fn reduce_max(self, a: __m512) -> f32 {
        // SAFETY: see `splat`.
        unsafe { _mm512_reduce_max_ps(a) }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const f32) -> __m512 {
        // SAFETY: the caller guarantees 16 readable floats at `p`.
        unsafe { _mm512_loadu_ps(p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats at `p`.
        unsafe { _mm512_storeu_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn store_stream(self, p: *mut f32, v: __m512) {
        // SAFETY: the caller guarantees 16 writable floats at `p`, 64-byte
        // aligned.
        unsafe { _mm512_stream_ps(p, v) }
    }
    #[inline(always)]
    unsafe fn load_partial(self, p: *const f32, n: usize) -> __m512 {
        // SAFETY: masked-off lanes are neither read nor faulted on; the
        // caller guarantees the first `n` are readable.
        unsafe { _mm512_maskz_loadu_ps(avx512_mask(n), p) }
    }
    #[inline(always)]
    unsafe fn store_partial(self, p: *mut f32, n: usize, v: __m512) {
        // SAFETY: as in `load_partial`, only the first `n` lanes are written.
        unsafe { _mm512_mask_storeu_ps(p, avx512_mask(n), v) }
    }
    #[inline(always)]
    fn prefetch(self, p: *const f32) {
        // SAFETY: prefetch is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
    }
    #[inline(always)]
    fn prefetch_l2(self, p: *const f32) {
        // SAFETY: prefetch is a hint and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(p.cast()) }
    }
}

#[inline(always)]
fn avx512_mask(n: usize) -> __mmask16 {
    ((1u32 << n) - 1) as __mmask16
}

/// `e^x`, relative error about 2 ulp on `[-87, 88]` (inputs are clamped
/// there: below it the result is ~0, above it f32 would overflow).
///
/// Cody-Waite range reduction `x = n ln2 + r`, `|r| <= ln2/2`, then the
/// degree-6 Taylor polynomial of `e^r` (truncation error `r^7/7! < 1.3e-7`).
#[inline(always)]
pub fn exp<S: Simd>(s: S, x: S::V) -> S::V {
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let x = s.min(s.max(x, s.splat(-87.0)), s.splat(88.0));
    let n = s.round(s.mul(x, s.splat(std::f32::consts::LOG2_E)));
    let r = s.fma(n, s.splat(-LN2_HI), x);
    let r = s.fma(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(1.0 / 720.0);
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = s.fma(p, r, s.splat(c));
    }
    s.mul(p, s.pow2i(n))
}

/// `erf(x)`, absolute error below 4.1e-7 in f32 (1.5e-7 worse than the
/// exp-based Abramowitz & Stegun 7.1.26 it replaced, well inside GELU's
/// tests), and less than half the instructions: `x P(x^2) / Q(x^2)` with
/// `x` clamped to `[-3.9, 3.9]` (beyond it `erf` is 1 within 3.5e-8). One
/// division and ten FMAs against a division, an `exp` and eleven FMAs:
/// the GELU epilogue of MiniLM's first FFN GEMM (128 x 1536 outputs) took
/// 64 us beside a 150 us bf16 AMX GEMM.
///
/// `P` (degree 6) and `Q` (degree 4) are our fit, minimax by Lawson
/// reweighting, to `erf` on `[0, 3.9]`: `kernels/tools/erf_fit.py`.
#[inline(always)]
pub fn erf<S: Simd>(s: S, x: S::V) -> S::V {
    const P: [f32; 7] = [
        1.128_378_7,
        0.204_331_32,
        0.051_164_236,
        0.003_900_83,
        0.000_147_574_52,
        -1.997_125_5e-6,
        2.011_311_5e-8,
    ];
    const Q: [f32; 5] = [1.0, 0.514_413, 0.116_830_47, 0.014_740_118, 0.001_007_664];
    let x = s.min(s.max(x, s.splat(-3.9)), s.splat(3.9));
    let u = s.mul(x, x);
    let mut p = s.splat(P[6]);
    for c in P[..6].iter().rev() {
        p = s.fma(p, u, s.splat(*c));
    }
    let mut q = s.splat(Q[4]);
    for c in Q[..4].iter().rev() {
        q = s.fma(q, u, s.splat(*c));
    }
    s.div(s.mul(x, p), q)
}

/// GELU, erf form: `x/2 * (1 + erf(x / sqrt 2))`.
#[inline(always)]
pub fn gelu_erf<S: Simd>(s: S, x: S::V) -> S::V {
    let e = erf(s, s.mul(x, s.splat(std::f32::consts::FRAC_1_SQRT_2)));
    let half = s.mul(x, s.splat(0.5));
    s.fma(half, e, half)
}

/// GELU, tanh form: `x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`,
/// with `1 + tanh(u) = 2 - 2 / (e^{2u} + 1)`.
#[inline(always)]
pub fn gelu_tanh<S: Simd>(s: S, x: S::V) -> S::V {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let x3 = s.mul(s.mul(x, x), x);
    let u = s.mul(
        s.fma(x3, s.splat(0.044_715), x),
        s.splat(2.0 * SQRT_2_OVER_PI),
    );
    let e = exp(s, u);
    let one_plus_tanh = s.sub(s.splat(2.0), s.div(s.splat(2.0), s.add(e, s.splat(1.0))));
    s.mul(s.mul(x, s.splat(0.5)), one_plus_tanh)
}

#[inline(always)]
pub fn relu<S: Simd>(s: S, x: S::V) -> S::V {
    s.max(x, s.splat(0.0))
}
