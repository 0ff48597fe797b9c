//! Fused epilogues: what happens to a C tile after `alpha * A*B + beta * C`,
//! while it is still in registers, so that a layer is one pass over C.
//!
//! Order, per element `(i, j)`:
//! `t = alpha * sum_p A[i,p] B[p,j] + beta * C[i,j]`,
//! `t += bias[j]`, `t = act(t)`, `t *= scale`, `t += residual[i,j]`.

use super::GemmError;
use crate::simd::{self, Simd};

/// The pointwise function applied after the bias.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// `x/2 (1 + erf(x/sqrt 2))` (BERT's exact GELU).
    GeluErf,
    /// `x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))` (GPT-2's GELU).
    GeluTanh,
}

/// A row-major matrix added to the result after everything else.
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    pub data: &'a [f32],
    /// Row stride in elements, `>= n`.
    pub ld: usize,
}

/// What to do to C before it leaves registers. Build with the chained
/// methods; the default does nothing.
///
/// ```
/// # use pinned_kernels::gemm::Epilogue;
/// let bias = vec![0.5f32; 8];
/// let epi = Epilogue::new().bias(&bias).gelu_erf();
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a [f32]>,
    pub activation: Activation,
    pub scale: Option<f32>,
    pub residual: Option<Residual<'a>>,
}

impl<'a> Epilogue<'a> {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds `bias[j]` to column `j`; `bias.len() >= n`.
    pub fn bias(mut self, bias: &'a [f32]) -> Self {
        self.bias = Some(bias);
        self
    }
    pub fn activation(mut self, act: Activation) -> Self {
        self.activation = act;
        self
    }
    pub fn relu(self) -> Self {
        self.activation(Activation::Relu)
    }
    pub fn gelu_erf(self) -> Self {
        self.activation(Activation::GeluErf)
    }
    pub fn gelu_tanh(self) -> Self {
        self.activation(Activation::GeluTanh)
    }
    /// Multiplies by `s` after the activation.
    pub fn scale(mut self, s: f32) -> Self {
        self.scale = Some(s);
        self
    }
    /// Adds `residual[i * ld + j]` last.
    pub fn residual(mut self, data: &'a [f32], ld: usize) -> Self {
        self.residual = Some(Residual { data, ld });
        self
    }

    /// True when the epilogue leaves `alpha AB + beta C` unchanged.
    pub fn is_identity(&self) -> bool {
        self.bias.is_none()
            && self.activation == Activation::None
            && self.scale.is_none()
            && self.residual.is_none()
    }

    /// Checks the operands cover an `m x n` result.
    pub(crate) fn check(&self, m: usize, n: usize) -> Result<(), GemmError> {
        if let Some(b) = self.bias {
            if b.len() < n {
                return Err(GemmError::BadOperand {
                    what: "bias",
                    detail: format!("length {} < n = {n}", b.len()),
                });
            }
        }
        if let Some(r) = self.residual {
            if m > 0 && n > 0 && (r.ld < n || r.data.len() < (m - 1) * r.ld + n) {
                return Err(GemmError::BadOperand {
                    what: "residual",
                    detail: format!(
                        "{} elements with ld {} cannot hold {m} x {n}",
                        r.data.len(),
                        r.ld
                    ),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn raw(&self) -> RawEpilogue {
        RawEpilogue {
            bias: self.bias.map_or(core::ptr::null(), <[f32]>::as_ptr),
            activation: self.activation,
            scale: self.scale,
            residual: self.residual.map_or(core::ptr::null(), |r| r.data.as_ptr()),
            residual_ld: self.residual.map_or(0, |r| r.ld),
        }
    }
}

/// The epilogue as pointers, offset to a sub-block of C by [`Self::offset`].
/// Invariant: when non-null, `bias` covers the block's columns and
/// `residual` its rows and columns (checked by [`Epilogue::check`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawEpilogue {
    pub bias: *const f32,
    pub activation: Activation,
    pub scale: Option<f32>,
    pub residual: *const f32,
    pub residual_ld: usize,
}

// SAFETY: the pointers are read-only views of slices borrowed for the call.
unsafe impl Send for RawEpilogue {}
// SAFETY: as above, nothing is written through them.
unsafe impl Sync for RawEpilogue {}

impl RawEpilogue {
    /// The same epilogue for the sub-block starting at `(row, col)`.
    pub fn offset(&self, row: usize, col: usize) -> Self {
        let mut e = *self;
        if !e.bias.is_null() {
            e.bias = e.bias.wrapping_add(col);
        }
        if !e.residual.is_null() {
            e.residual = e.residual.wrapping_add(row * e.residual_ld + col);
        }
        e
    }

    /// Applies the epilogue to the `n <= LANES` values of row `row`,
    /// columns `col..col + n` of the block.
    ///
    /// # Safety
    /// `(row, col..col + n)` must lie inside the block this view covers.
    #[inline(always)]
    pub unsafe fn apply<S: Simd>(
        &self,
        s: S,
        mut x: S::V,
        row: usize,
        col: usize,
        n: usize,
    ) -> S::V {
        let full = n == S::LANES;
        // SAFETY: `bias` covers the block's columns (struct invariant).
        let load = |p: *const f32| unsafe {
            if full {
                s.load(p)
            } else {
                s.load_partial(p, n)
            }
        };
        if !self.bias.is_null() {
            x = s.add(x, load(self.bias.wrapping_add(col)));
        }
        x = match self.activation {
            Activation::None => x,
            Activation::Relu => simd::relu(s, x),
            Activation::GeluErf => simd::gelu_erf(s, x),
            Activation::GeluTanh => simd::gelu_tanh(s, x),
        };
        if let Some(scale) = self.scale {
            x = s.mul(x, s.splat(scale));
        }
        if !self.residual.is_null() {
            let p = self.residual.wrapping_add(row * self.residual_ld + col);
            x = s.add(x, load(p));
        }
        x
    }
}
