//! Model ops over plain slices, vectorised like the GEMM: each body is
//! written once over [`Simd`] and compiled per ISA by [`dispatch`].
//!
//! All ops are row-wise over a row-major `rows x cols` slice (`rows =
//! x.len() / cols`), work in place where the result has the input's shape,
//! check every length and return [`OpsError`] (never panic), and allocate
//! nothing.
//!
//! - [`layernorm`]: `y = (x - mean) / sqrt(var + eps) * gamma + beta`.
//! - [`softmax_rows`]: numerically stable (max subtracted), with an
//!   optional keep-mask; a fully masked row becomes all zeros.
//! - [`gelu`], [`gelu_tanh`], [`add`], [`mean_pool`], [`l2_normalize`].
//! - [`attention_head`]: one head's `softmax(scale Q K^T) V`, fused;
//!   [`attention_head_amx`] the same with its products on AMX in bf16.

mod attention;
mod attention_amx;
mod elementwise;
mod norm;
mod softmax;

use attention::check_head;
pub use attention::{attention_head, attention_work_floats, HeadShape};
pub use attention_amx::{attention_amx_work_floats, attention_head_amx};
pub use elementwise::{add, gelu, gelu_tanh, mean_pool};
pub use norm::{l2_normalize, layernorm};
pub use softmax::softmax_rows;

use crate::isa::{Avx2, Avx512, Isa, IsaError, Scalar};
use crate::simd::Simd;

/// Why an op was refused. Nothing is written on error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Isa(#[from] IsaError),
    #[error("{what}: {detail}")]
    Shape { what: &'static str, detail: String },
}

/// Checks `len` is a whole number of rows of `cols`; returns `rows`.
fn rows_of(what: &'static str, len: usize, cols: usize) -> Result<usize, OpsError> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(OpsError::Shape {
            what,
            detail: format!("length {len} is not a multiple of cols = {cols}"),
        });
    }
    Ok(len / cols)
}

fn expect_len(what: &'static str, got: usize, want: usize) -> Result<(), OpsError> {
    if got != want {
        return Err(OpsError::Shape {
            what,
            detail: format!("length {got}, expected {want}"),
        });
    }
    Ok(())
}

/// An op body, generic over the SIMD token (pulp's `WithSimd` pattern).
pub(crate) trait WithSimd {
    type Output;
    fn with<S: Simd>(self, s: S) -> Self::Output;
}

/// Runs `op` compiled for `isa` (failing if `isa` is not available here).
pub(crate) fn dispatch<Op: WithSimd>(isa: Isa, op: Op) -> Result<Op::Output, OpsError> {
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
    fn on_avx512<Op: WithSimd>(s: Avx512, op: Op) -> Op::Output {
        op.with(s)
    }
    #[target_feature(enable = "avx2,fma")]
    fn on_avx2<Op: WithSimd>(s: Avx2, op: Op) -> Op::Output {
        op.with(s)
    }
    match isa {
        Isa::Avx512 => {
            let t = Avx512::try_new().ok_or_else(|| isa.unavailable())?;
            // SAFETY: the token proves the features `on_avx512` enables.
            Ok(unsafe { on_avx512(t, op) })
        }
        Isa::Avx2 => {
            let t = Avx2::try_new().ok_or_else(|| isa.unavailable())?;
            // SAFETY: the token proves the features `on_avx2` enables.
            Ok(unsafe { on_avx2(t, op) })
        }
        Isa::Scalar => Ok(op.with(Scalar::new())),
    }
}

/// A vector function of one operand, as a type with an `#[inline(always)]`
/// method rather than a closure: a closure written in a generic op body
/// does not inherit the `#[target_feature]`s of the wrapper [`dispatch`]
/// instantiates it in, so LLVM left its intrinsics as out-of-line calls
/// (measured on the MiniLM shapes: softmax over 12 x 128 x 128 scores
/// took 2 ms instead of 40 us, GELU 22 ns an element instead of 0.5).
pub(crate) trait Unary<S: Simd>: Copy {
    fn call(self, s: S, v: S::V) -> S::V;
}

/// As [`Unary`], for two operands.
pub(crate) trait Binary<S: Simd>: Copy {
    fn call(self, s: S, a: S::V, b: S::V) -> S::V;
}

/// `v`.
#[derive(Clone, Copy)]
pub(crate) struct Id;
impl<S: Simd> Unary<S> for Id {
    #[inline(always)]
    fn call(self, _: S, v: S::V) -> S::V {
        v
    }
}

/// `v * v`.
#[derive(Clone, Copy)]
pub(crate) struct Square;
impl<S: Simd> Unary<S> for Square {
    #[inline(always)]
    fn call(self, s: S, v: S::V) -> S::V {
        s.mul(v, v)
    }
}

/// `v * c`.
#[derive(Clone, Copy)]
pub(crate) struct MulBy<V>(pub V);
impl<S: Simd> Unary<S> for MulBy<S::V> {
    #[inline(always)]
    fn call(self, s: S, v: S::V) -> S::V {
        s.mul(v, self.0)
    }
}

/// `a + b`.
#[derive(Clone, Copy)]
pub(crate) struct Sum;
impl<S: Simd> Binary<S> for Sum {
    #[inline(always)]
    fn call(self, s: S, a: S::V, b: S::V) -> S::V {
        s.add(a, b)
    }
}

/// `x[i] = f(x[i])`, a vector at a time, the tail masked.
#[inline(always)]
pub(crate) fn map_inplace<S: Simd>(s: S, x: &mut [f32], f: impl Unary<S>) {
    let lanes = S::LANES;
    let mut chunks = x.chunks_exact_mut(lanes);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly LANES floats.
        unsafe { s.store(c.as_mut_ptr(), f.call(s, s.load(c.as_ptr()))) };
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let n = tail.len();
        // SAFETY: partial ops touch only the `n < LANES` floats of `tail`.
        unsafe {
            let v = f.call(s, s.load_partial(tail.as_ptr(), n));
            s.store_partial(tail.as_mut_ptr(), n, v);
        }
    }
}

/// `x[i] = f(x[i], y[i])` over equal-length slices.
#[inline(always)]
pub(crate) fn zip_inplace<S: Simd>(s: S, x: &mut [f32], y: &[f32], f: impl Binary<S>) {
    let lanes = S::LANES;
    let n = x.len().min(y.len());
    let full = n / lanes * lanes;
    let (xp, yp) = (x.as_mut_ptr(), y.as_ptr());
    let mut i = 0;
    while i < full {
        // SAFETY: `i + LANES <= n`, inside both slices.
        unsafe { s.store(xp.add(i), f.call(s, s.load(xp.add(i)), s.load(yp.add(i)))) };
        i += lanes;
    }
    if full < n {
        let r = n - full;
        // SAFETY: partial ops touch only the last `r` floats of both.
        unsafe {
            let v = f.call(
                s,
                s.load_partial(xp.add(full), r),
                s.load_partial(yp.add(full), r),
            );
            s.store_partial(xp.add(full), r, v);
        }
    }
}

/// `sum_i f(x[i])`, the tail's padding lanes fed zeros (so `f(0)` must be 0).
#[inline(always)]
pub(crate) fn sum_map<S: Simd>(s: S, x: &[f32], f: impl Unary<S>) -> f32 {
    let lanes = S::LANES;
    let mut acc = [s.splat(0.0); 4];
    let mut chunks = x.chunks_exact(4 * lanes);
    for c in &mut chunks {
        for (j, a) in acc.iter_mut().enumerate() {
            // SAFETY: `c` holds 4 * LANES floats.
            *a = s.add(*a, f.call(s, unsafe { s.load(c.as_ptr().add(j * lanes)) }));
        }
    }
    let mut rest = chunks.remainder().chunks_exact(lanes);
    for c in &mut rest {
        // SAFETY: `c` holds LANES floats.
        acc[0] = s.add(acc[0], f.call(s, unsafe { s.load(c.as_ptr()) }));
    }
    let tail = rest.remainder();
    if !tail.is_empty() {
        // SAFETY: a partial load reads only the `tail.len() < LANES` floats.
        let v = unsafe { s.load_partial(tail.as_ptr(), tail.len()) };
        acc[1] = s.add(acc[1], f.call(s, v));
    }
    s.reduce_sum(s.add(s.add(acc[0], acc[1]), s.add(acc[2], acc[3])))
}

/// `max_i x[i]` (`-inf` for an empty slice).
#[inline(always)]
pub(crate) fn max<S: Simd>(s: S, x: &[f32]) -> f32 {
    let lanes = S::LANES;
    let mut acc = s.splat(f32::NEG_INFINITY);
    let mut chunks = x.chunks_exact(lanes);
    for c in &mut chunks {
        // SAFETY: `c` holds LANES floats.
        acc = s.max(acc, unsafe { s.load(c.as_ptr()) });
    }
    chunks
        .remainder()
        .iter()
        .fold(s.reduce_max(acc), |m, &v| m.max(v))
}
