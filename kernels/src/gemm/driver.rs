//! The blocked driver: the BLIS loops around one microkernel, per ISA.

use super::blocking::Blocking;
use super::kernel::{MicroKernel, Tile, TileParams};
use super::pack::row_tiles;
use super::{BSource, Problem};
use crate::isa::{Avx2, Avx512, Isa, Scalar};

/// Dispatches to the kernel of `isa`.
///
/// # Safety
/// As [`run_blocked`]; `isa` must be available (checked by `lower`).
pub(crate) unsafe fn run_on_isa(isa: Isa, p: &Problem, blk: &Blocking, scratch: *mut f32) {
    // SAFETY: the caller's contract; each token comes from `try_new`.
    unsafe {
        match isa {
            Isa::Avx512 => {
                if let Some(t) = Avx512::try_new() {
                    run_blocked(t, p, blk, scratch);
                }
            }
            Isa::Avx2 => {
                if let Some(t) = Avx2::try_new() {
                    run_blocked(t, p, blk, scratch);
                }
            }
            Isa::Scalar => run_blocked(Scalar::new(), p, blk, scratch),
        }
    }
}

/// The BLIS loops around one microkernel (plus one: see `Blocking::nb`).
///
/// # Safety
/// `p` satisfies the [`Problem`] invariants with `m, n > 0`; `blk` is
/// `K`'s blocking; `scratch` is writable for `p.scratch_floats(blk)` floats
/// (A part rounded up to 16) and aligned to [`PANEL_ALIGN`].
pub(crate) unsafe fn run_blocked<K: MicroKernel>(
    kern: K,
    p: &Problem,
    blk: &Blocking,
    scratch: *mut f32,
) {
    let (mr, nr) = (K::MR, K::NR);
    debug_assert_eq!((blk.mr, blk.nr), (mr, nr));
    let (a_floats, _) = p.scratch_floats(blk);
    let a_buf = scratch;
    let b_buf = scratch.wrapping_add(a_floats.next_multiple_of(16));
    let kc_max = blk.kc.min(p.k.max(1));
    let k_blocks = p.k.div_ceil(kc_max).max(1);
    // One row tile streams B once anyway (M <= MR).
    let cold = matches!(p.b, BSource::Packed { cold: true, .. });
    let prefetch = p.m > mr && (cold || Blocking::prefetch_next_slice(p.k, p.n));

    // Loop 6 (jc, step NC): a column block of B and C.
    for jc in (0..p.n).step_by(blk.nc) {
        let ncb = blk.nc.min(p.n - jc);
        // Even slices: 384 columns become 2 x 192, not 320 + 64 (a narrow
        // slice reuses each A micro-panel for few tiles).
        let nb = ncb.div_ceil(ncb.div_ceil(blk.nb)).next_multiple_of(nr);
        let blk = &Blocking { nb, ..*blk };
        // Loop 5 (pc, step KC): a K slice, so an MR x KC A micro-panel fits L1.
        for kb in 0..k_blocks {
            let pc = kb * kc_max;
            let kcb = kc_max.min(p.k - pc);
            let (b_ptr, b_stride) = match p.b {
                BSource::Packed {
                    ptr, panel_stride, ..
                } => (
                    ptr.wrapping_add(jc / nr * panel_stride + pc * nr),
                    panel_stride,
                ),
                BSource::Plain(b) => {
                    // SAFETY: B is readable over k x n (Problem invariant),
                    // and b_buf holds kc x round_up(nc, NR) floats.
                    unsafe { kern.pack_b(b.at(pc, jc), kcb, ncb, b_buf, kcb * nr) };
                    (b_buf.cast_const(), kcb * nr)
                }
            };
            let first = kb == 0;
            let last = kb + 1 == k_blocks;
            let mut params = TileParams {
                alpha: p.alpha,
                beta: if first { p.beta } else { 1.0 },
                load_c: !first || p.beta != 0.0,
                epilogue: None,
            };
            // Loop 4 (ic, step MC): a row block of A, packed once.
            for ic in (0..p.m).step_by(blk.mc) {
                let mcb = blk.mc.min(p.m - ic);
                // SAFETY: A is readable over m x k; a_buf holds mc x kc floats.
                unsafe { kern.pack_a(p.a.at(ic, pc), mcb, kcb, a_buf) };
                let row_tile_count = mcb.div_ceil(mr);
                // Loop 3 (jn, step NB): a KC x NB slice of B that stays in L2
                // while every A micro-panel of the block passes over it.
                for jn in (0..ncb).step_by(blk.nb) {
                    let nbb = blk.nb.min(ncb - jn);
                    // The slice after this one, prefetched into L2 by this
                    // slice's tiles: the next NB columns, else (from the
                    // start) the next row block's or the next K slice's
                    // first. Its first reader would otherwise wait on memory
                    // at every step (see `Blocking::prefetch_next_slice`).
                    let at = SlicePos {
                        jc,
                        ncb,
                        pc,
                        kcb,
                        ic,
                        jn,
                    };
                    let next = NextSlice::after(p, blk, &at, b_ptr, b_stride);
                    let share = next
                        .filter(|_| prefetch)
                        .map(|(_, kc_next)| (kc_next * nr).div_ceil(row_tile_count));
                    let mut a_panel = a_buf.cast_const();
                    // Loop 2 (ir, step <= MR): one A micro-panel, loaded into
                    // L1 by its first tile and reused by the rest of the row.
                    for (t, (ir, rows)) in row_tiles(mcb, mr).enumerate() {
                        // Loop 1 (jr, step NR): B micro-panels streaming from
                        // L2; the microkernel holds the C tile in registers.
                        for jr in (jn..jn + nbb).step_by(nr) {
                            let (i, j) = (ic + ir, jc + jr);
                            params.epilogue = if last {
                                p.epilogue.map(|e| e.offset(i, j))
                            } else {
                                None
                            };
                            let q = (jr - jn) / nr;
                            let b_panel = b_ptr.wrapping_add(jr / nr * b_stride);
                            let (l2_next, l2_step) = match (next, share) {
                                (Some((slice, _)), Some(share)) => {
                                    (slice.panel(q).wrapping_add(t * share), share.div_ceil(kcb))
                                }
                                _ => (b_panel, 0),
                            };
                            // The next tile: this row's next panel, else
                            // the next row's first.
                            let jr_next = if jr + nr < jn + nbb { jr + nr } else { jn };
                            let tile = Tile {
                                rows,
                                cols: nr.min(ncb - jr),
                                kc: kcb,
                                a: a_panel,
                                b: b_panel,
                                c: p.c.wrapping_add(i * p.ldc + j),
                                ldc: p.ldc,
                                l2_next,
                                l2_step,
                                b_next: b_ptr.wrapping_add(jr_next / nr * b_stride),
                            };
                            // SAFETY: the tile lies inside C (i + rows <= m,
                            // j + cols <= n), its A panel holds rows x kcb
                            // packed floats, its B panel kcb x NR; Tile
                            // invariants hold.
                            unsafe { kern.run(&tile, &params) };
                        }
                        a_panel = a_panel.wrapping_add(rows * kcb);
                    }
                }
            }
        }
    }
}

/// Where the driver is: column block `jc` (`ncb` wide), K slice `pc`
/// (`kcb` long), row block `ic`, slice `jn`.
struct SlicePos {
    jc: usize,
    ncb: usize,
    pc: usize,
    kcb: usize,
    ic: usize,
    jn: usize,
}

/// The B slice a prefetch should bring into L2 next: its first panel and
/// the distance between panels (addresses only; never dereferenced).
#[derive(Clone, Copy)]
struct NextSlice {
    first: *const f32,
    panel_stride: usize,
}

impl NextSlice {
    fn panel(self, q: usize) -> *const f32 {
        self.first.wrapping_add(q * self.panel_stride)
    }

    /// The slice after `at` in the driver's order, with its
    /// K length: the next NB columns of this K slice; else this K slice's
    /// first NB columns again for the next row block; else, when B is
    /// pre-packed, the next K slice's first. `None` at the end, and for a
    /// plain B's next K slice (not packed yet).
    fn after(
        p: &Problem,
        blk: &Blocking,
        at: &SlicePos,
        b_ptr: *const f32,
        b_stride: usize,
    ) -> Option<(Self, usize)> {
        let here = |col: usize| Self {
            first: b_ptr.wrapping_add(col / blk.nr * b_stride),
            panel_stride: b_stride,
        };
        if at.jn + blk.nb < at.ncb {
            return Some((here(at.jn + blk.nb), at.kcb));
        }
        if at.ic + blk.mc < p.m {
            return Some((here(0), at.kcb));
        }
        let next_pc = at.pc + at.kcb;
        match p.b {
            BSource::Packed {
                ptr, panel_stride, ..
            } if next_pc < p.k => Some((
                Self {
                    first: ptr.wrapping_add(at.jc / blk.nr * panel_stride + next_pc * blk.nr),
                    panel_stride,
                },
                blk.kc.min(p.k - next_pc),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{lower, BMatrix, Epilogue, MatMut, MatRef, PackedB, PANEL_ALIGN};

    /// Tiny blocks so that every one of the five loops runs several times
    /// (the public tests' shapes fit one block of the real sizes).
    #[test]
    fn all_five_loops_iterate_with_tiny_blocks() {
        for isa in Isa::available() {
            let (mr, nr) = Blocking::tile(isa);
            let blk = Blocking {
                mr,
                nr,
                mc: 2 * mr,
                kc: 16,
                nb: 2 * nr,
                nc: 4 * nr,
            };
            let (m, n, k) = (5 * mr + 3, 5 * nr + 5, 50);
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32).collect();
            let packed = PackedB::new(&b, n, k, n, isa).unwrap();
            let mut cold = PackedB::new(&b, n, k, n, isa).unwrap();
            cold.set_cold(true);
            // Plain, packed, and packed cold (every tile prefetching the
            // next slice: next NB columns, next row block, next K slice).
            for (use_packed, packed) in [(false, &packed), (true, &packed), (true, &cold)] {
                let mut c = vec![1.0f32; m * n];
                let epi = Epilogue::new().bias(&bias).relu();
                let mut cm = MatMut::new(&mut c, m, n, n).unwrap();
                let bm = if use_packed {
                    BMatrix::Packed(packed)
                } else {
                    BMatrix::Plain(MatRef::new(&b, k, n, n).unwrap())
                };
                let a_view = MatRef::new(&a, m, k, k).unwrap();
                let p = lower(isa, 1.0, a_view, bm, 0.5, &mut cm, &epi).unwrap();
                let (af, bf) = p.scratch_floats(&blk);
                let mut scratch = vec![0.0f32; af.next_multiple_of(16) + bf + 16];
                let off = scratch.as_ptr().align_offset(PANEL_ALIGN);
                // SAFETY: `p` came from `lower`; the scratch holds the floats
                // `blk` needs, aligned.
                unsafe { run_on_isa(isa, &p, &blk, scratch[off..].as_mut_ptr()) };
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|q| a[i * k + q] * b[q * n + j]).sum();
                        // Small integers: every path is exact.
                        let want = (dot + 0.5 + bias[j]).max(0.0);
                        assert_eq!(
                            c[i * n + j],
                            want,
                            "{isa} packed={use_packed} cold={} ({i},{j})",
                            packed.is_cold()
                        );
                    }
                }
            }
        }
    }

    /// A B big enough to come from memory: the tiles run the loop that
    /// prefetches the next slice (and every slice boundary: next NB
    /// columns, next row block, next K slice). Small integers: exact.
    #[test]
    fn a_b_from_memory_takes_the_prefetching_loop() {
        let k = 1500;
        let n = (8 * cache_l2() / (k * 4)).next_multiple_of(64) + 5;
        assert!(Blocking::prefetch_next_slice(k, n));
        for isa in Isa::available() {
            let m = 2 * Blocking::for_isa(isa).mc + 3;
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 5) as f32 - 2.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 7) as f32 - 3.0).collect();
            let packed = PackedB::new(&b, n, k, n, isa).unwrap();
            let mut c = vec![0.0f32; m * n];
            let mut scratch = vec![0u8; crate::gemm::gemm_scratch_bytes(m, n, k, isa)];
            crate::gemm::sgemm(
                isa,
                1.0,
                MatRef::new(&a, m, k, k).unwrap(),
                BMatrix::Packed(&packed),
                0.0,
                MatMut::new(&mut c, m, n, n).unwrap(),
                &Epilogue::new(),
                &mut scratch,
            )
            .unwrap();
            for i in (0..m).step_by(7) {
                for j in (0..n).step_by(5) {
                    let dot: f32 = (0..k).map(|q| a[i * k + q] * b[q * n + j]).sum();
                    assert_eq!(c[i * n + j], dot, "{isa} ({i},{j})");
                }
            }
        }
    }

    fn cache_l2() -> usize {
        crate::cpu::cache_sizes().l2.unwrap_or(256 << 10)
    }
}
