//! Row normalisations: layernorm and L2.

use super::{dispatch, expect_len, rows_of, sum_map, Id, MulBy, OpsError, Square, WithSimd};
use crate::isa::Isa;
use crate::simd::Simd;

/// Layer normalisation of each row of `x` (`rows x cols`), in place:
/// `y = (x - mean) / sqrt(var + eps) * gamma + beta`, with the biased
/// variance computed in a second pass over `x - mean` (no cancellation).
pub fn layernorm(
    isa: Isa,
    x: &mut [f32],
    cols: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) -> Result<(), OpsError> {
    rows_of("layernorm input", x.len(), cols)?;
    expect_len("layernorm gamma", gamma.len(), cols)?;
    expect_len("layernorm beta", beta.len(), cols)?;
    dispatch(
        isa,
        LayerNorm {
            x,
            cols,
            gamma,
            beta,
            eps,
        },
    )
}

struct LayerNorm<'a> {
    x: &'a mut [f32],
    cols: usize,
    gamma: &'a [f32],
    beta: &'a [f32],
    eps: f32,
}

impl WithSimd for LayerNorm<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        let n = self.cols as f32;
        for row in self.x.chunks_exact_mut(self.cols) {
            let mean = sum_map(s, row, Id) / n;
            let var = sum_sq_dev(s, row, mean) / n;
            let rstd = 1.0 / (var + self.eps).sqrt();
            affine(s, row, mean, rstd, self.gamma, self.beta);
        }
    }
}

/// `row[i] = (row[i] - mean) * rstd * gamma[i] + beta[i]` in one pass.
#[inline(always)]
fn affine<S: Simd>(s: S, row: &mut [f32], mean: f32, rstd: f32, gamma: &[f32], beta: &[f32]) {
    let (m, r) = (s.splat(mean), s.splat(rstd));
    let n = row.len().min(gamma.len()).min(beta.len());
    let full = n / S::LANES * S::LANES;
    let (x, g, b) = (row.as_mut_ptr(), gamma.as_ptr(), beta.as_ptr());
    let mut i = 0;
    while i < full {
        // SAFETY: `i + LANES <= n`, inside all three slices.
        unsafe {
            let v = s.mul(s.sub(s.load(x.add(i)), m), r);
            s.store(x.add(i), s.fma(v, s.load(g.add(i)), s.load(b.add(i))));
        }
        i += S::LANES;
    }
    if full < n {
        let t = n - full;
        // SAFETY: partial ops touch only the last `t < LANES` floats of each.
        unsafe {
            let v = s.mul(s.sub(s.load_partial(x.add(full), t), m), r);
            let y = s.fma(
                v,
                s.load_partial(g.add(full), t),
                s.load_partial(b.add(full), t),
            );
            s.store_partial(x.add(full), t, y);
        }
    }
}

/// `sum (x - mean)^2`: the second pass of a two-pass variance, which
/// has no cancellation when `|mean| >> std` (unlike `E[x^2] - mean^2`).
#[inline(always)]
fn sum_sq_dev<S: Simd>(s: S, row: &[f32], mean: f32) -> f32 {
    let m = s.splat(mean);
    let mut acc = [s.splat(0.0); 2];
    let mut chunks = row.chunks_exact(2 * S::LANES);
    for c in &mut chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 2 * LANES floats.
            let d = s.sub(unsafe { s.load(c.as_ptr().add(j * S::LANES)) }, m);
            *a = s.fma(d, d, *a);
        }
    }
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| (v - mean) * (v - mean))
        .sum();
    s.reduce_sum(s.add(acc[0], acc[1])) + tail
}

/// Scales each row of `x` (`rows x cols`) to unit L2 norm, in place:
/// `y = x / max(||x||, eps)` (a zero row stays zero).
pub fn l2_normalize(isa: Isa, x: &mut [f32], cols: usize, eps: f32) -> Result<(), OpsError> {
    rows_of("l2_normalize input", x.len(), cols)?;
    dispatch(isa, L2Normalize { x, cols, eps })
}

struct L2Normalize<'a> {
    x: &'a mut [f32],
    cols: usize,
    eps: f32,
}

impl WithSimd for L2Normalize<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        for row in self.x.chunks_exact_mut(self.cols) {
            let norm = sum_map(s, row, Square).sqrt();
            let inv = s.splat(1.0 / norm.max(self.eps));
            super::map_inplace(s, row, MulBy(inv));
        }
    }
}
