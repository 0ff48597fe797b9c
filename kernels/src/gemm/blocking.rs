//! Block sizes (MC, KC, NB, NC) per ISA, derived from the detected caches.
//!
//! The driver's loops keep, from the inside out: the MR x NR tile of C in
//! registers for KC steps; the MR x KC micro-panel of A, reused by every
//! tile of a row of the NB-wide slice; the KC x NB slice of B in L2, which
//! every A micro-panel of the MC block passes over (the kernel prefetches
//! its micro-panels a few steps ahead); the MC x KC block of A, packed
//! once per K slice; the KC x NC block of B in L3.
//!
//! KC is large on purpose. Every KC block costs one pass of loads and
//! stores over the C tile, and C's rows are `ldc` apart, often a multiple
//! of 4 KiB, so they collide in one L1 set. On Sapphire Rapids (48 KiB L1d,
//! 2 MiB L2), with `examples/sgemm_loop`, KC = 1024 beat an L1-sized
//! KC = 432 by 5-10% on 1024^3, 256 x 1024^2 and 256 x 1536 x 384, and
//! KC = 2048 by 2-8% on shapes with K = 4096. So `KC * NR * 4 = L2 / 16`
//! (clamped to 64..=1024), `KC * NB * 4 = L2 / 2` (NB = 128 and 512 were no
//! better than 256 there), `MC * KC * 4 = L2 / 2`, and `KC * NC * 4 <= L3 / 4`
//! (a share: L3 is shared).

use crate::cpu::{cache_sizes, CacheSizes};
use crate::isa::Isa;

/// Register tile and cache blocks for one ISA.
///
/// Invariants: `MR | MC` (`MC % MR == 0`), `NR | NC`, `KC % 8 == 0`,
/// all non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Blocking {
    pub mr: usize,
    pub nr: usize,
    pub mc: usize,
    pub kc: usize,
    /// Columns of the KC x NB slice of B kept in L2 while the A micro-panels
    /// of a row block pass over it (`NR | NB`, `NB <= NC`).
    pub nb: usize,
    pub nc: usize,
}

/// Fallbacks when CPUID does not report a level (256 KiB L2, 8 MiB L3:
/// the smallest of any AVX2-era core).
const L2_DEFAULT: usize = 256 << 10;
const L3_DEFAULT: usize = 8 << 20;
/// Caps: NC bounds the per-call B scratch (KC * NC * 4 bytes) when B is
/// not pre-packed; a VM may report an L3 of hundreds of MiB.
const NC_MAX: usize = 4096;
const MC_MAX: usize = 2048;

impl Blocking {
    /// The register tile of `isa`'s microkernel.
    pub fn tile(isa: Isa) -> (usize, usize) {
        use super::kernel::MicroKernel;
        use crate::isa::{Avx2, Avx512, Scalar};
        match isa {
            Isa::Scalar => (Scalar::MR, Scalar::NR),
            Isa::Avx2 => (Avx2::MR, Avx2::NR),
            Isa::Avx512 => (Avx512::MR, Avx512::NR),
        }
    }

    /// The blocks for `isa` on this machine's caches.
    pub fn for_isa(isa: Isa) -> Self {
        let (mr, nr) = Self::tile(isa);
        Self::derive(mr, nr, cache_sizes())
    }

    /// Blocks from cache sizes (pure, for tests).
    pub fn derive(mr: usize, nr: usize, caches: &CacheSizes) -> Self {
        let l2 = caches.l2.unwrap_or(L2_DEFAULT);
        let l3 = caches.l3.unwrap_or(L3_DEFAULT);
        let kc = (l2 / 16 / (nr * 4)) / 8 * 8;
        let kc = kc.clamp(64, 1024);
        let mc = (l2 / 2 / (kc * 4)).min(MC_MAX) / mr * mr;
        let mc = mc.max(mr);
        let nc = (l3 / 4 / (kc * 4)).min(NC_MAX) / nr * nr;
        let nc = nc.max(nr);
        let nb = (l2 / 2 / (kc * 4) / nr * nr).clamp(nr, nc);
        Self {
            mr,
            nr,
            mc,
            kc,
            nb,
            nc,
        }
    }

    /// The blocks a call of this shape uses. When all of M fits one
    /// register tile, nothing is reused across A micro-panels, so K is not
    /// blocked: the tile stays in registers for all of K and each B panel
    /// streams once, front to back (the matrix-vector path).
    ///
    /// Otherwise K splits into KC blocks ([`Self::k_blocked`]), and M into
    /// equal row blocks (300 rows with MC = 252 become 2 x 154, not 252 +
    /// 48). A block may stretch by a quarter rather than split: 256 rows
    /// stay one block, not 140 + 116.
    ///
    /// So the scratch a call needs is not monotonic in M (14 rows take K
    /// whole, 15 a KC block of it); size buffers with
    /// [`Self::scratch_floats_up_to`].
    pub fn for_shape(isa: Isa, m: usize, k: usize) -> Self {
        let b = Self::for_isa(isa);
        if m <= b.mr {
            return Self { kc: k.max(1), ..b };
        }
        let b = b.k_blocked(k);
        let blocks = m.div_ceil(b.mc + b.mc / 4);
        Self {
            mc: m.div_ceil(blocks).next_multiple_of(b.mr),
            ..b
        }
    }

    /// The K blocking of a call with more rows than one register tile: K
    /// in equal KC blocks (2048 becomes 2 x 1024, 2500 3 x 840, not 1024 +
    /// 1024 + 452: a short block pays a whole pass over C for little work),
    /// but a K up to 1.5 KC stays whole: K = 1536 in one block ran 2-4%
    /// faster than in two of 768 at 128 and 256 x 1536 x 384 (MiniLM's FFN
    /// down), B warm, interleaved, while 4096 in blocks of 1368 instead of
    /// 1024 went either way by shape. MC and NB grow to keep the A block's
    /// and the B slice's L2 shares (`MC * KC`, `NB * KC` constant); MC is
    /// the row block before M evens it out.
    fn k_blocked(self, k: usize) -> Self {
        let k = k.max(1);
        let k_blocks = if k <= self.kc + self.kc / 2 {
            1
        } else {
            k.div_ceil(self.kc)
        };
        let kc = k.div_ceil(k_blocks).next_multiple_of(8);
        let mc = (self.mc * self.kc / kc).min(MC_MAX).max(self.mr) / self.mr * self.mr;
        let nb = ((self.nb * self.kc / kc).min(self.nc) / self.nr * self.nr).max(self.nr);
        Self { mc, kc, nb, ..self }
    }

    /// Whether a `k x n` B is big enough to come from memory: then each
    /// slice's tiles prefetch the next slice into L2, ahead of its first
    /// reader (+12-16% at M = 16..64, K = N = 4096 with a cold B; +25-34%
    /// warm). Below `4 x L2` (1536 x 384, 1024^2) B is found in L2 or L3
    /// anyway, and the prefetches only hold fill buffers the loads need
    /// (-7% at M = 64, -30% at M = 16).
    pub(crate) fn prefetch_next_slice(k: usize, n: usize) -> bool {
        let l2 = cache_sizes().l2.unwrap_or(L2_DEFAULT);
        k.saturating_mul(n).saturating_mul(4) > 4 * l2
    }

    /// Floats of packed A and packed B a call of this shape needs.
    pub(crate) fn scratch_floats(&self, m: usize, n: usize, k: usize) -> (usize, usize) {
        let kc = self.kc.min(k.max(1));
        let a = self.mc.min(m) * kc;
        let b = kc * self.nc.min(n.div_ceil(self.nr) * self.nr);
        (a, b)
    }

    /// Floats of packed A and packed B enough for every call with this
    /// `k`, at most `m` rows and at most `n` columns: what a buffer sized
    /// once for the largest batch must hold. The need of `m` rows alone can
    /// fall short for fewer: up to MR rows take all of K in one block, and
    /// the row block changes as M evens out. Monotonic in `m` and `n`.
    pub(crate) fn scratch_floats_up_to(isa: Isa, m: usize, n: usize, k: usize) -> (usize, usize) {
        let base = Self::for_isa(isa);
        let m = m.max(1);
        let short = m.min(base.mr);
        let (mut a, mut b) = Self::for_shape(isa, short, k).scratch_floats(short, n, k);
        if m > base.mr {
            let blocked = base.k_blocked(k);
            // Evening out stretches a row block by at most a quarter of MC,
            // then rounds it up to whole register tiles.
            let rows = m.min((blocked.mc + blocked.mc / 4).next_multiple_of(blocked.mr));
            let (a_rows, b_rows) = Self {
                mc: rows,
                ..blocked
            }
            .scratch_floats(rows, n, k);
            a = a.max(a_rows);
            b = b.max(b_rows);
        }
        (a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_respect_invariants_for_many_caches() {
        for l1 in [32 << 10, 48 << 10] {
            for l2 in [256 << 10, 1 << 20, 2 << 20] {
                for l3 in [None, Some(4 << 20), Some(480 << 20)] {
                    let caches = CacheSizes {
                        l1d: Some(l1),
                        l2: Some(l2),
                        l3,
                        line: 64,
                    };
                    for isa in Isa::ALL {
                        let (mr, nr) = Blocking::tile(isa);
                        let b = Blocking::derive(mr, nr, &caches);
                        assert_eq!(b.mc % b.mr, 0, "{b:?}");
                        assert_eq!(b.nc % b.nr, 0, "{b:?}");
                        assert_eq!(b.kc % 8, 0, "{b:?}");
                        assert!(b.kc * b.nr * 4 <= (l2 / 16).max(64 * nr * 4), "{b:?}");
                        assert!(b.mc * b.kc * 4 <= (l2 / 2).max(b.mr * b.kc * 4), "{b:?}");
                        assert!(b.mc > 0 && b.nc > 0 && b.nc <= NC_MAX);
                    }
                }
            }
        }
    }

    #[test]
    fn k_splits_into_even_blocks_unless_it_is_at_most_one_and_a_half() {
        let base = Blocking::for_isa(Isa::Scalar).kc;
        let whole = base + base / 2;
        assert_eq!(
            Blocking::for_shape(Isa::Scalar, 256, whole).kc,
            whole.next_multiple_of(8)
        );
        let over = Blocking::for_shape(Isa::Scalar, 256, whole + 8);
        assert_eq!(over.kc, (whole + 8).div_ceil(2).next_multiple_of(8));
        assert_eq!(Blocking::for_shape(Isa::Scalar, 256, 4 * base).kc, base);
    }

    /// A buffer sized for `m` rows serves every call with fewer rows (14
    /// rows take K whole, 15 a KC block of it; row blocks change as M
    /// evens out), for all ISAs' tiles and K on either side of KC.
    #[test]
    fn the_sizing_for_m_rows_covers_every_smaller_call() {
        for isa in Isa::ALL {
            for k in [1, 7, 64, 384, 1000, 1536, 2049, 4096, 5000] {
                for n in [1, 33, 384, 4096] {
                    let mut need = (0, 0);
                    for m in (1..=1500).chain((1501..=6000).step_by(7)) {
                        let exact = Blocking::for_shape(isa, m, k).scratch_floats(m, n, k);
                        need = (need.0.max(exact.0), need.1.max(exact.1));
                        let (a, b) = Blocking::scratch_floats_up_to(isa, m, n, k);
                        assert!(a >= need.0 && b >= need.1, "{isa} m {m} n {n} k {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn small_m_streams_all_of_k() {
        let b = Blocking::for_shape(Isa::Scalar, 1, 5000);
        assert_eq!(b.kc, 5000);
        let b = Blocking::for_shape(Isa::Scalar, 100, 5000);
        assert!(b.kc < 5000);
    }
}
