//! What the kernel tests share: deterministic data and an f64 `erf`.
//! Each test binary uses its own subset.
#![allow(dead_code)]

/// Deterministic values in [-1, 1) with no structure a kernel could
/// exploit (xorshift64 from `seed`; the same seed gives the same values).
pub fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

extern "C" {
    /// C99 `erf` from the system libm (std links it on Linux).
    fn erf(x: f64) -> f64;
}

/// `erf(x)` in f64: the references' GELU.
pub fn erf64(x: f64) -> f64 {
    // SAFETY: libm's erf is a pure function of one double.
    unsafe { erf(x) }
}
