//! fp32 GEMM: `C = epilogue(alpha * op(A) * B + beta * C)`.
//!
//! # API (stable; the runtime codes against it)
//!
//! ```
//! use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB};
//! use pinned_kernels::Isa;
//! # fn main() -> Result<(), gemm::GemmError> {
//! let isa = Isa::from_env()?;                      // PINNED_ISA or the best here
//! let (m, k, n) = (4, 384, 1536);
//! let w = vec![0.01f32; k * n];                    // weights, row-major k x n
//! // Load time: pack the weights once into caller memory (e.g. a node arena).
//! let mut mem = vec![0u8; PackedB::bytes_needed(k, n, isa)];
//! let packed = PackedB::pack_into(&w, n, k, n, isa, &mut mem)?;
//! // Plan time: size the per-call workspace once.
//! let mut scratch = vec![0u8; gemm::gemm_scratch_bytes(m, n, k, isa)];
//! // Per request: no allocation inside.
//! let x = vec![1.0f32; m * k];
//! let bias = vec![0.5f32; n];
//! let mut y = vec![0.0f32; m * n];
//! gemm::sgemm(
//!     isa, 1.0,
//!     MatRef::new(&x, m, k, k)?,
//!     BMatrix::Packed(&packed),
//!     0.0,                                         // beta = 0: C is not read
//!     MatMut::new(&mut y, m, n, n)?,
//!     &Epilogue::new().bias(&bias).gelu_erf(),
//!     &mut scratch,
//! )?;
//! # Ok(()) }
//! ```
//!
//! - [`PackedB::bytes_needed`]`(k, n, isa)`, [`PackedB::pack_into`]`(b, ldb,
//!   k, n, isa, mem: &mut [u8])`, [`PackedB::pack_view_into`] (any view, e.g.
//!   `[out][in]` weights via [`MatRef::t`]), owned [`PackedB::new`].
//! - [`gemm_scratch_bytes`]`(m, n, k, isa)`, enough for any call of up to
//!   `m` rows; [`sgemm`] checks the scratch and every shape and returns
//!   [`GemmError`], never panics.
//! - `op(A)`: [`MatRef::new`] is row-major with row stride `ld`;
//!   [`MatRef::t`] transposes the view. B is [`BMatrix::Packed`] (weights)
//!   or [`BMatrix::Plain`] (packed per call into the scratch).
//! - [`Epilogue`]: `bias`, `relu`/`gelu_erf`/`gelu_tanh`, `scale`,
//!   `residual`, applied in that order while the tile is in registers.
//! - Parallel: [`sgemm_parallel`] over a caller's [`Team`] (implement it
//!   on pinned workers; [`ThreadTeam`] is a persistent one for tests and
//!   benches), workspace [`gemm_scratch_bytes_parallel`].
//!
//! # Driver
//!
//! The five BLIS loops live in [`run_blocked`], generic over the
//! [`kernel::MicroKernel`] trait; per ISA only the microkernel differs.

mod blocking;
mod driver;
mod epilogue;
pub(crate) mod kernel;
mod kernel_avx2;
mod kernel_avx512;
mod kernel_scalar;
mod pack;
mod pack_avx512;
mod packed_b;
mod parallel;

pub use blocking::Blocking;
pub use epilogue::{Activation, Epilogue, Residual};
pub use packed_b::{PackedB, PANEL_ALIGN};
pub use parallel::{gemm_scratch_bytes_parallel, sgemm_parallel, SingleThread, Team, ThreadTeam};

use crate::isa::{Isa, IsaError};
pub(crate) use driver::run_on_isa;
pub(crate) use epilogue::RawEpilogue;
use pack::Strided;

/// Why a GEMM call was refused. Nothing is written to C on error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GemmError {
    #[error(transparent)]
    Isa(#[from] IsaError),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("{what}: {detail}")]
    BadOperand { what: &'static str, detail: String },
    #[error("{what} too small: {needed} bytes needed, {got} given")]
    BufferTooSmall {
        what: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("B was packed for {packed} but the call asks for {requested}")]
    PackedIsaMismatch { packed: Isa, requested: Isa },
}

/// A read-only matrix view: element `(i, j)` at `data[i * rs + j * cs]`.
///
/// Invariant: when `rows, cols > 0`,
/// `(rows - 1) * rs + (cols - 1) * cs < data.len()`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows x cols` with row stride `ld >= cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize, ld: usize) -> Result<Self, GemmError> {
        if rows > 1 && ld < cols {
            return Err(GemmError::BadOperand {
                what: "matrix",
                detail: format!("row stride {ld} < {cols} columns"),
            });
        }
        let view = Self {
            data,
            rows,
            cols,
            rs: ld,
            cs: 1,
        };
        view.check_len("matrix")?;
        Ok(view)
    }

    /// The transposed view (`op(A) = A^T`), no copy.
    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn check_len(&self, what: &'static str) -> Result<(), GemmError> {
        if self.rows == 0 || self.cols == 0 {
            return Ok(());
        }
        let last = (self.rows - 1).checked_mul(self.rs).and_then(|r| {
            (self.cols - 1)
                .checked_mul(self.cs)
                .and_then(|c| r.checked_add(c))
        });
        match last {
            Some(last) if last < self.data.len() => Ok(()),
            _ => Err(GemmError::BadOperand {
                what,
                detail: format!(
                    "{} elements cannot hold {} x {} with strides ({}, {})",
                    self.data.len(),
                    self.rows,
                    self.cols,
                    self.rs,
                    self.cs
                ),
            }),
        }
    }

    pub(crate) fn raw(&self) -> (*const f32, usize, usize) {
        (self.data.as_ptr(), self.rs, self.cs)
    }
}

/// A writable row-major view with row stride `ld >= cols`.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    ld: usize,
}

impl<'a> MatMut<'a> {
    pub fn new(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        ld: usize,
    ) -> Result<Self, GemmError> {
        if rows > 1 && ld < cols {
            return Err(GemmError::BadOperand {
                what: "C",
                detail: format!("row stride {ld} < {cols} columns"),
            });
        }
        if rows > 0 && cols > 0 && (rows - 1).saturating_mul(ld).saturating_add(cols) > data.len() {
            return Err(GemmError::BadOperand {
                what: "C",
                detail: format!(
                    "{} elements cannot hold {rows} x {cols} with ld {ld}",
                    data.len()
                ),
            });
        }
        Ok(Self {
            data,
            rows,
            cols,
            ld,
        })
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Start and row stride, for the low-precision driver (`crate::lowp`).
    pub(crate) fn raw_mut(&mut self) -> (*mut f32, usize) {
        (self.data.as_mut_ptr(), self.ld)
    }
}

/// The B operand: pre-packed weights, or a plain view packed per call.
#[derive(Clone, Copy, Debug)]
pub enum BMatrix<'r, 'm> {
    Packed(&'r PackedB<'m>),
    Plain(MatRef<'r>),
}

impl BMatrix<'_, '_> {
    fn dims(&self) -> (usize, usize) {
        match self {
            BMatrix::Packed(p) => (p.k(), p.n()),
            BMatrix::Plain(v) => (v.rows(), v.cols()),
        }
    }
}

/// Bytes of workspace enough for every [`sgemm`] call with this `k`, at
/// most `m` rows and at most `n` columns (so a buffer sized for the largest
/// batch serves the smaller ones), with a plain B (a pre-packed B needs
/// less). Includes alignment slack.
pub fn gemm_scratch_bytes(m: usize, n: usize, k: usize, isa: Isa) -> usize {
    let (a, b) = Blocking::scratch_floats_up_to(isa, m, n, k);
    scratch_layout_bytes(a, b)
}

fn scratch_layout_bytes(a_floats: usize, b_floats: usize) -> usize {
    a_floats.next_multiple_of(16) * 4 + b_floats * 4 + PANEL_ALIGN
}

/// B as the driver sees it: packed panels (`panel_stride` floats apart,
/// K slices at `pc * NR`), or a strided view to pack per block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum BSource {
    Packed {
        ptr: *const f32,
        panel_stride: usize,
        /// The caller expects it in memory, not in L2 (see
        /// [`PackedB::set_cold`]).
        cold: bool,
    },
    Plain(Strided),
}

// SAFETY: read-only views of slices borrowed for the call.
unsafe impl Send for BSource {}
// SAFETY: as above.
unsafe impl Sync for BSource {}

/// One (sub-)problem in raw form, validated by the public entry points.
///
/// Invariants: A is readable over `m x k`, B over `k x n` (packed: panels
/// covering `n`), C readable and writable over `m x n` with stride `ldc`,
/// the epilogue covers `m x n`; no other thread touches this C block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Problem {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub alpha: f32,
    pub beta: f32,
    pub a: Strided,
    pub b: BSource,
    pub c: *mut f32,
    pub ldc: usize,
    pub epilogue: Option<RawEpilogue>,
}

// SAFETY: threads get disjoint C blocks (see `parallel.rs`); the rest is read-only.
unsafe impl Send for Problem {}
// SAFETY: as above.
unsafe impl Sync for Problem {}

impl Problem {
    /// The block `rows x cols` at `(i0, j0)`; `j0` must be a multiple of
    /// the packed B's NR.
    pub fn block(&self, i0: usize, j0: usize, rows: usize, cols: usize, nr: usize) -> Self {
        let b = match self.b {
            BSource::Packed {
                ptr,
                panel_stride,
                cold,
            } => BSource::Packed {
                ptr: ptr.wrapping_add(j0 / nr * panel_stride),
                panel_stride,
                cold,
            },
            BSource::Plain(s) => BSource::Plain(s.at(0, j0)),
        };
        Self {
            m: rows,
            n: cols,
            a: self.a.at(i0, 0),
            b,
            c: self.c.wrapping_add(i0 * self.ldc + j0),
            epilogue: self.epilogue.map(|e| e.offset(i0, j0)),
            ..*self
        }
    }

    /// Scratch floats (packed A, packed B) this problem needs.
    fn scratch_floats(&self, blk: &Blocking) -> (usize, usize) {
        let (a, b) = blk.scratch_floats(self.m, self.n, self.k);
        match self.b {
            BSource::Packed { .. } => (a, 0),
            BSource::Plain(_) => (a, b),
        }
    }
}

/// Validates a call and lowers it to a [`Problem`].
fn lower(
    isa: Isa,
    alpha: f32,
    a: MatRef<'_>,
    b: BMatrix<'_, '_>,
    beta: f32,
    c: &mut MatMut<'_>,
    epilogue: &Epilogue<'_>,
) -> Result<Problem, GemmError> {
    isa.require()?;
    let (m, k) = (a.rows(), a.cols());
    let (kb, n) = b.dims();
    if kb != k || c.rows != m || c.cols != n {
        return Err(GemmError::Shape(format!(
            "op(A) is {m} x {k}, B is {kb} x {n}, C is {} x {}",
            c.rows, c.cols
        )));
    }
    epilogue.check(m, n)?;
    let b = match b {
        BMatrix::Packed(p) => {
            if p.isa() != isa {
                return Err(GemmError::PackedIsaMismatch {
                    packed: p.isa(),
                    requested: isa,
                });
            }
            BSource::Packed {
                ptr: p.panels().as_ptr(),
                panel_stride: k * p.nr(),
                cold: p.is_cold(),
            }
        }
        BMatrix::Plain(v) => {
            let (ptr, rs, cs) = v.raw();
            BSource::Plain(Strided { ptr, rs, cs })
        }
    };
    let (aptr, rs, cs) = a.raw();
    Ok(Problem {
        m,
        n,
        k,
        alpha,
        beta,
        a: Strided { ptr: aptr, rs, cs },
        b,
        c: c.data.as_mut_ptr(),
        ldc: c.ld,
        epilogue: (!epilogue.is_identity()).then(|| epilogue.raw()),
    })
}

/// Aligns `scratch` and checks it holds `floats`; returns the aligned start.
fn aligned_scratch(scratch: &mut [u8], floats: usize) -> Result<*mut f32, GemmError> {
    let offset = scratch.as_ptr().align_offset(PANEL_ALIGN);
    if offset.saturating_add(floats * 4) > scratch.len() {
        return Err(GemmError::BufferTooSmall {
            what: "GEMM scratch",
            needed: floats * 4 + PANEL_ALIGN,
            got: scratch.len(),
        });
    }
    Ok(scratch[offset..].as_mut_ptr().cast())
}

/// `C = epilogue(alpha * op(A) * B + beta * C)` on one thread.
///
/// `beta == 0` never reads C (it may hold NaN). `scratch` must hold
/// [`gemm_scratch_bytes`]`(m, n, k, isa)` bytes; nothing is allocated.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    isa: Isa,
    alpha: f32,
    a: MatRef<'_>,
    b: BMatrix<'_, '_>,
    beta: f32,
    mut c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    scratch: &mut [u8],
) -> Result<(), GemmError> {
    let problem = lower(isa, alpha, a, b, beta, &mut c, epilogue)?;
    if problem.m == 0 || problem.n == 0 {
        return Ok(());
    }
    let blk = Blocking::for_shape(isa, problem.m, problem.k);
    let (af, bf) = problem.scratch_floats(&blk);
    let floats = af.next_multiple_of(16) + bf;
    let base = aligned_scratch(scratch, floats)?;
    // SAFETY: `lower` validated every operand against the problem's shape
    // (Problem invariants), `c` is borrowed mutably for this call, and
    // `base` holds `floats` aligned floats.
    unsafe { run_on_isa(isa, &problem, &blk, base) }
    Ok(())
}
