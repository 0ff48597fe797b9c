//! Pointwise ops and pooling.

use super::{dispatch, expect_len, rows_of, MulBy, OpsError, Sum, Unary, WithSimd};
use crate::isa::Isa;
use crate::simd::{self, Simd};

struct Map<'a, F> {
    x: &'a mut [f32],
    f: F,
}

/// A pointwise function generic over the SIMD token.
trait Pointwise: Copy {
    fn apply<S: Simd>(self, s: S, v: S::V) -> S::V;
}

impl<F: Pointwise> WithSimd for Map<'_, F> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        super::map_inplace(s, self.x, Lift(self.f));
    }
}

/// A [`Pointwise`] function as a [`Unary`] for one token type.
#[derive(Clone, Copy)]
struct Lift<F>(F);
impl<S: Simd, F: Pointwise> Unary<S> for Lift<F> {
    #[inline(always)]
    fn call(self, s: S, v: S::V) -> S::V {
        self.0.apply(s, v)
    }
}

#[derive(Clone, Copy)]
struct GeluErf;
impl Pointwise for GeluErf {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, v: S::V) -> S::V {
        simd::gelu_erf(s, v)
    }
}

#[derive(Clone, Copy)]
struct GeluTanh;
impl Pointwise for GeluTanh {
    #[inline(always)]
    fn apply<S: Simd>(self, s: S, v: S::V) -> S::V {
        simd::gelu_tanh(s, v)
    }
}

/// GELU (erf form, BERT's) in place.
pub fn gelu(isa: Isa, x: &mut [f32]) -> Result<(), OpsError> {
    dispatch(isa, Map { x, f: GeluErf })
}

/// GELU (tanh approximation, GPT-2's) in place.
pub fn gelu_tanh(isa: Isa, x: &mut [f32]) -> Result<(), OpsError> {
    dispatch(isa, Map { x, f: GeluTanh })
}

/// `x += y` (equal lengths).
pub fn add(isa: Isa, x: &mut [f32], y: &[f32]) -> Result<(), OpsError> {
    expect_len("add operand", y.len(), x.len())?;
    dispatch(isa, Add { x, y })
}

struct Add<'a> {
    x: &'a mut [f32],
    y: &'a [f32],
}

impl WithSimd for Add<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        super::zip_inplace(s, self.x, self.y, Sum);
    }
}

/// Mean over the rows of `x` (`rows x cols`) into `out` (`cols`): the
/// sentence embedding of token embeddings. With `keep` (one flag per row),
/// only kept rows count; none kept gives zeros.
pub fn mean_pool(
    isa: Isa,
    x: &[f32],
    cols: usize,
    keep: Option<&[bool]>,
    out: &mut [f32],
) -> Result<(), OpsError> {
    let rows = rows_of("mean_pool input", x.len(), cols)?;
    expect_len("mean_pool output", out.len(), cols)?;
    if let Some(k) = keep {
        expect_len("mean_pool mask", k.len(), rows)?;
    }
    dispatch(isa, MeanPool { x, cols, keep, out })
}

struct MeanPool<'a> {
    x: &'a [f32],
    cols: usize,
    keep: Option<&'a [bool]>,
    out: &'a mut [f32],
}

impl WithSimd for MeanPool<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        self.out.fill(0.0);
        let mut count = 0usize;
        for (r, row) in self.x.chunks_exact(self.cols).enumerate() {
            if self.keep.is_some_and(|k| !k[r]) {
                continue;
            }
            count += 1;
            super::zip_inplace(s, self.out, row, Sum);
        }
        if count > 0 {
            let inv = s.splat(1.0 / count as f32);
            super::map_inplace(s, self.out, MulBy(inv));
        }
    }
}
