//! AVX2 + FMA microkernel: 6 x 16 (two ymm per row).
//!
//! 12 accumulators + 2 B vectors + 1 broadcast = 15 of the 16 ymm
//! registers, the classic Haswell-to-Zen shape (BLIS's haswell sgemm is
//! 6 x 16 for the same reason).

use super::kernel::{dispatch_rows, MicroKernel, Tile, TileParams};
use crate::isa::Avx2;

impl MicroKernel for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;

    #[inline(always)]
    unsafe fn run(self, t: &Tile, p: &TileParams) {
        // SAFETY: the token proves AVX2 and FMA; the tile contract is the caller's.
        unsafe { kernel_avx2(self, t, p) }
    }
}

/// # Safety
/// AVX2 and FMA must be available; `t` satisfies the [`Tile`] invariants
/// for `MR = 6`, `NR = 16`.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(s: Avx2, t: &Tile, p: &TileParams) {
    dispatch_rows!(s, 2, t, p, [1, 2, 3, 4, 5, 6])
}
