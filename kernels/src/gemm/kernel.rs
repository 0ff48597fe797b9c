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
use super::pack::{pack_a, pack_b, Strided};
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
    /// Where this tile's share of the next slice of B starts: the kernel
    /// prefetches it into L2 while it computes, `l2_step` floats a k step
    /// (0: the same line over and over, for a tile with no share). A
    /// prefetch never faults, so this may point anywhere.
    pub l2_next: *const f32,
    pub l2_step: usize,
    /// The B micro-panel of the tile that runs next: the last steps
    /// prefetch its start, where a look-ahead into this panel would run off
    /// its end. Never dereferenced, so it may point anywhere.
    pub b_next: *const f32,
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

    /// Packs `rows x kc` of A into this kernel's row-tile panels (the
    /// layout of [`pack_a`]); an ISA may do it faster.
    ///
    /// # Safety
    /// As [`pack_a`] with `mr = MR`.
    unsafe fn pack_a(self, a: Strided, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: the caller's contract is `pack_a`'s.
        unsafe { pack_a(a, rows, kc, Self::MR, dst) }
    }

    /// Packs `kc x cols` of B into this kernel's panels (the layout of
    /// [`pack_b`]); an ISA may do it faster.
    ///
    /// # Safety
    /// As [`pack_b`] with `nr = NR`.
    unsafe fn pack_b(self, b: Strided, kc: usize, cols: usize, dst: *mut f32, panel_stride: usize) {
        // SAFETY: the caller's contract is `pack_b`'s.
        unsafe { pack_b(b, kc, cols, Self::NR, dst, panel_stride, 0) }
    }
}

/// How many k steps ahead the B and A panels are prefetched: a 14-row
/// tile spends ~14 cycles a step, a 1-row tile ~4, so B's distance grows
/// as `B_PREFETCH_STEPS + B_PREFETCH_EXTRA / R` (a few KiB for the
/// matrix-vector case, enough to cover an L3 miss). The same last steps
/// prefetch the next tile's B panel and this tile's C into L1 (a few
/// hundred cycles ahead, several L2 latencies).
const B_PREFETCH_STEPS: usize = 16;
const B_PREFETCH_EXTRA: usize = 64;
const A_PREFETCH_STEPS: usize = 16;

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
    let acc = [[s.splat(0.0); NV]; R];
    // C is touched only at the end. Its rows are `ldc` apart, often a
    // multiple of 4 KiB, so they share one L1 set: pull them into L2 now and
    // into L1 only for the last few steps, where they survive.
    prefetch_c::<S, R, NV>(s, t, false);
    // The next slice's L2 prefetch costs about a cycle a step even when it
    // has nothing to do: a tile without a share runs the loop without it.
    let acc = if t.l2_step == 0 {
        // SAFETY: the caller's contract.
        unsafe { k_loop::<S, R, NV, false>(s, t, acc) }
    } else {
        // SAFETY: the caller's contract.
        unsafe { k_loop::<S, R, NV, true>(s, t, acc) }
    };
    // A wall between the hot loop and the store phase: LLVM must keep the
    // loop's accumulators in registers (one spill per tile here instead of
    // a load and a store per FMA if it merges the two and gives up on SROA).
    let acc = core::hint::black_box(acc);

    // SAFETY: the tile satisfies the invariants, as `tile_body` requires.
    unsafe { finish_general::<S, R, NV>(s, t, p, acc) }
}

/// The `kc` steps of a tile; the last look-ahead steps prefetch the next
/// tile's B panel and this tile's C into L1, and with `L2` every step
/// prefetches the tile's share of the next slice into L2.
///
/// # Safety
/// As [`tile_body`].
#[inline(always)]
unsafe fn k_loop<S: Simd, const R: usize, const NV: usize, const L2: bool>(
    s: S,
    t: &Tile,
    mut acc: [[S::V; NV]; R],
) -> [[S::V; NV]; R] {
    let (mut a, mut b) = (t.a, t.b);
    let mut next = t.l2_next;
    let ahead_steps = B_PREFETCH_STEPS + B_PREFETCH_EXTRA / R;
    let tail = ahead_steps.min(t.kc);
    let panel = NV * S::LANES;
    let mut pf_b = b.wrapping_add(ahead_steps * panel);
    for _ in 0..t.kc - tail {
        if L2 {
            s.prefetch_l2(next);
            next = next.wrapping_add(t.l2_step);
        }
        // SAFETY: `kc` steps in all, inside the packed panels (invariants).
        acc = unsafe { k_step(s, acc, &mut a, &mut b, pf_b) };
        pf_b = pf_b.wrapping_add(panel);
    }
    prefetch_c::<S, R, NV>(s, t, true);
    pf_b = t.b_next;
    for _ in 0..tail {
        if L2 {
            s.prefetch_l2(next);
            next = next.wrapping_add(t.l2_step);
        }
        // SAFETY: as above.
        acc = unsafe { k_step(s, acc, &mut a, &mut b, pf_b) };
        pf_b = pf_b.wrapping_add(panel);
    }
    acc
}

/// The store phase: `C = alpha acc + beta C`, epilogue, store; the last
/// vector of a row masked when `cols < NR`.
///
/// Two passes: all loads of old C first, then all stores. Rows `ldc`
/// apart alias modulo 4 KiB, so a load issued after a store to the row
/// above waits for that store (and its own miss): interleaved, the tile's
/// L2 misses would run one after another.
///
/// # Safety
/// `t` satisfies the [`Tile`] invariants.
// Index loops over constant bounds: LLVM unrolls them fully and keeps the
// accumulators in registers; iterator chains with early exits it did not.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
unsafe fn finish_general<S: Simd, const R: usize, const NV: usize>(
    s: S,
    t: &Tile,
    p: &TileParams,
    mut acc: [[S::V; NV]; R],
) {
    let lanes = S::LANES;
    let alpha = s.splat(p.alpha);
    let beta = s.splat(p.beta);
    let width = |v: usize| lanes.min(t.cols.saturating_sub(v * lanes));
    for r in 0..R {
        for v in 0..NV {
            acc[r][v] = s.mul(acc[r][v], alpha);
        }
    }
    if p.load_c {
        for r in 0..R {
            for v in 0..NV {
                let (n, src) = (width(v), t.c.wrapping_add(r * t.ldc + v * lanes));
                // SAFETY: `(r, v*LANES .. + n)` is inside the tile, which is
                // readable (invariants); a partial load reads only `n` (maybe 0).
                let old = unsafe {
                    if n == lanes {
                        s.load(src)
                    } else {
                        s.load_partial(src, n)
                    }
                };
                acc[r][v] = s.fma(old, beta, acc[r][v]);
            }
        }
    }
    for r in 0..R {
        for v in 0..NV {
            let (n, col) = (width(v), v * lanes);
            let dst = t.c.wrapping_add(r * t.ldc + col);
            let mut x = acc[r][v];
            // SAFETY: `(r, col..col + n)` is inside the tile, which is
            // writable (invariants), as are the epilogue's operands there;
            // a partial store writes only `n` (maybe 0).
            unsafe {
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

/// Prefetches the tile of C, into L1 or only into L2.
#[inline(always)]
fn prefetch_c<S: Simd, const R: usize, const NV: usize>(s: S, t: &Tile, l1: bool) {
    for r in 0..R {
        let row = t.c.wrapping_add(r * t.ldc);
        for v in 0..NV {
            let p = row.wrapping_add((v * S::LANES).min(t.cols - 1));
            if l1 {
                s.prefetch(p);
            } else {
                s.prefetch_l2(p);
            }
        }
    }
}

/// One rank-1 update of the tile: `acc += a[0..R] (x) b[0..NR]`, then
/// advances both panels by one k step; prefetches one step of B at `pf_b`.
///
/// # Safety
/// `*a` must be readable for `R` floats and `*b` for `NV * LANES`.
#[inline(always)]
unsafe fn k_step<S: Simd, const R: usize, const NV: usize>(
    s: S,
    mut acc: [[S::V; NV]; R],
    a: &mut *const f32,
    b: &mut *const f32,
    pf_b: *const f32,
) -> [[S::V; NV]; R] {
    // SAFETY: the caller's contract.
    unsafe {
        for v in 0..NV {
            s.prefetch(pf_b.wrapping_add(v * S::LANES));
        }
        s.prefetch(a.wrapping_add(A_PREFETCH_STEPS * R));
        let bv: [S::V; NV] = core::array::from_fn(|v| s.load(b.add(v * S::LANES)));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = s.splat(*a.add(r));
            for (acc_rv, bvv) in acc_r.iter_mut().zip(bv) {
                *acc_rv = s.fma(av, bvv, *acc_rv);
            }
        }
        *a = a.add(R);
        *b = b.add(NV * S::LANES);
    }
    acc
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
