//! AVX-512 microkernel: 14 x 32 (two zmm per row).
//!
//! 28 accumulators + 2 B vectors + 1 broadcast = 31 of the 32 zmm
//! registers. Each k step issues 28 FMAs against 2 vector loads and 14
//! broadcast loads (`vbroadcastss zmm, m32`, load ports only). That mix
//! alone, on L1-resident data, runs at 86-89% of an FMA-only loop here
//! (`examples/fma_mix.rs`): the broadcasts cost it, not the caches. FMAs
//! with `{1to16}` memory operands (28 loads a step) and the 6 x 64 and
//! 8 x 48 tiles measured slower.

use super::kernel::{dispatch_rows, MicroKernel, Tile, TileParams};
use super::pack::Strided;
use super::pack_avx512::{pack_a_avx512, pack_b_avx512};
use crate::isa::Avx512;

impl MicroKernel for Avx512 {
    const MR: usize = 14;
    const NR: usize = 32;

    #[inline(always)]
    unsafe fn run(self, t: &Tile, p: &TileParams) {
        // SAFETY: the token proves AVX-512; the tile contract is the caller's.
        unsafe { kernel_avx512(self, t, p) }
    }

    unsafe fn pack_a(self, a: Strided, rows: usize, kc: usize, dst: *mut f32) {
        // SAFETY: the token proves AVX-512; the contract is `pack_a`'s.
        unsafe { pack_a_avx512(self, a, rows, kc, Self::MR, dst) }
    }

    unsafe fn pack_b(self, b: Strided, kc: usize, cols: usize, dst: *mut f32, panel_stride: usize) {
        // SAFETY: the token proves AVX-512; the contract is `pack_b`'s.
        unsafe { pack_b_avx512(self, b, kc, cols, Self::NR, dst, panel_stride) }
    }
}

/// # Safety
/// AVX-512F/BW/VL/DQ and FMA must be available; `t` satisfies the
/// [`Tile`] invariants for `MR = 14`, `NR = 32`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn kernel_avx512(s: Avx512, t: &Tile, p: &TileParams) {
    dispatch_rows!(s, 2, t, p, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14])
}
