//! AVX-512 microkernel: 14 x 32 (two zmm per row).
//!
//! 28 accumulators + 2 B vectors + 1 broadcast = 31 of the 32 zmm
//! registers. Each k step issues 28 FMAs against 2 vector loads and 14
//! broadcasts (folded into the FMAs as `{1to16}` memory operands), well under
//! the two load ports while the two FMA ports stay busy.

use super::kernel::{dispatch_rows, MicroKernel, Tile, TileParams};
use crate::isa::Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = 14;
    const NR: usize = 32;

    #[inline(always)]
    unsafe fn run(self, t: &Tile, p: &TileParams) {
        // SAFETY: the token proves AVX-512; the tile contract is the caller's.
        unsafe { kernel_avx512(self, t, p) }
    }
}

/// # Safety
/// AVX-512F/BW/VL/DQ and FMA must be available; `t` satisfies the
/// [`Tile`] invariants for `MR = 14`, `NR = 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn kernel_avx512(s: Avx512, t: &Tile, p: &TileParams) {
    dispatch_rows!(s, 2, t, p, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
}
