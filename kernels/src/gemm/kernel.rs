//! The microkernel contract and its one generic body.
//!
//! A microkernel computes one `rows x cols` tile of C (`rows <= MR`,
//! `cols <= NR`) from a packed A micro-panel and a packed B micro-panel,
//! keeping the whole tile in registers for the `kc` loop, then combines it
//! with C and applies the epilogue on the way out. Edge tiles go through the
//! same body: `rows` picks a const instantiation (fewer accumulators, no
//! wasted FMAs), `cols` masks the last vector's loads and stores.
//!
//! Per ISA only a thin `#[target_feature]` wrapper exists
//! (`kernel_avx512.rs`, `kernel_avx2.rs`, `kernel_scalar.rs`).

use super::epilogue::RawEpilogue;
use crate::simd::Simd;

/// One tile's operands.
///
/// Invariants (upheld by the driver): `1 <= rows <= MR`, `1 <= cols <= NR`;
/// `a` holds `kc * rows` floats laid out `[p][r]`; `b` holds `kc * NR`
/// floats laid out `[p][j]` (columns past `cols` are zero padding);
/// `c + r * ldc + j` is writable (and readable) for `r < rows`, `j < cols`;
/// the epilogue, when present, is offset to this tile's `(0, 0)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tile {
    pub rows: usize,
    pub cols: usize,
    pub kc: usize,
    pub a: *const f32,
    pub b: *const f32,
    pub c: *mut f32,
    pub ldc: usize,
}

/// How the product meets C: `C = alpha * AB + beta * C` when `load_c`,
/// else `C = alpha * AB` (C is never read: it may hold NaN garbage).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileParams {
    pub alpha: f32,
    pub beta: f32,
    pub load_c: bool,
    /// Only on the last k block.
    pub epilogue: Option<RawEpilogue>,
}

/// One ISA's register tile. `MR x NR` and the body are fixed per ISA.
pub(crate) trait MicroKernel: Copy + Send + Sync {
    const MR: usize;
    const NR: usize;

    /// # Safety
    /// `t` satisfies the [`Tile`] invariants for this kernel's `MR`/`NR`.
    unsafe fn run(self, t: &Tile, p: &TileParams);
}

/// The body every ISA instantiates: `R` rows of `NV` vectors.
///
/// # Safety
/// `t` satisfies the [`Tile`] invariants with `t.rows == R` and
/// `NR == NV * S::LANES`.
#[inline(always)]
pub(crate) unsafe fn tile_body<S: Simd, const R: usize, const NV: usize>(
    s: S,
    t: &Tile,
    p: &TileParams,
) {
    let lanes = S::LANES;
    let mut acc = [[s.splat(0.0); NV]; R];
    // C is touched only at the end; start pulling its lines in now.
    for r in 0..R {
        s.prefetch(t.c.wrapping_add(r * t.ldc));
        s.prefetch(t.c.wrapping_add(r * t.ldc + t.cols - 1));
    }
    let mut a = t.a;
    let mut b = t.b;
    for _ in 0..t.kc {
        // SAFETY: `b` walks `kc` rows of `NV * LANES` floats and `a` `kc`
        // rows of `R` floats, both inside the packed panels (invariants).
        unsafe {
            let bv: [S::V; NV] = core::array::from_fn(|v| s.load(b.add(v * lanes)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av = s.splat(*a.add(r));
                for (acc_rv, bvv) in acc_r.iter_mut().zip(bv) {
                    *acc_rv = s.fma(av, bvv, *acc_rv);
                }
            }
            a = a.add(R);
            b = b.add(NV * lanes);
        }
    }

    let alpha = s.splat(p.alpha);
    let beta = s.splat(p.beta);
    for (r, acc_r) in acc.iter().enumerate() {
        let row = t.c.wrapping_add(r * t.ldc);
        for (v, &acc_rv) in acc_r.iter().enumerate() {
            let col = v * lanes;
            if col >= t.cols {
                break;
            }
            let n = lanes.min(t.cols - col);
            let dst = row.wrapping_add(col);
            let mut x = s.mul(acc_rv, alpha);
            // SAFETY: `(r, col..col + n)` is inside the tile, which is
            // readable and writable (invariants); partial ops touch only `n`.
            unsafe {
                if p.load_c {
                    let old = if n == lanes {
                        s.load(dst)
                    } else {
                        s.load_partial(dst, n)
                    };
                    x = s.fma(old, beta, x);
                }
                if let Some(e) = &p.epilogue {
                    x = e.apply(s, x, r, col, n);
                }
                if n == lanes {
                    s.store(dst, x);
                } else {
                    s.store_partial(dst, n, x);
                }
            }
        }
    }
}

/// Expands to a `match rows` over the listed const row counts.
macro_rules! dispatch_rows {
    ($s:expr, $nv:literal, $t:expr, $p:expr, [$($r:literal),*]) => {
        match $t.rows {
            // SAFETY: the caller's contract is `tile_body`'s, and the arm
            // instantiates it with `R == t.rows`.
            $($r => unsafe { $crate::gemm::kernel::tile_body::<_, $r, $nv>($s, $t, $p) },)*
            _ => debug_assert!(false, "rows {} out of range", $t.rows),
        }
    };
}
pub(crate) use dispatch_rows;
