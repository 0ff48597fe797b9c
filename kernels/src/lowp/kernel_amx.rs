//! The AMX tile microkernels as [`LowpKernel`]s: 32 x 32 C blocks
//! (2 x 2 tiles), or 16 x 32 when at most 16 rows remain.

use super::driver::{KTile, LowpKernel};
use super::Elem;
use crate::amx::{ensure_tiles, tile_kernel, tile_run, OutRows, TileOp, TileRun};
use crate::isa::{AmxBf16, AmxInt8, Avx512};

/// K block for large-M calls: 4 KiB of K per row (2048 bf16). Measured on
/// the Sapphire Rapids VM this was written on (2048^3, best of runs):
/// KC = 256 / 512 / 1024 / 2048 gave 261 / 507 / 660 / 787 GFLOP/s: every
/// K block costs a staging pass or a reload of the C tiles, and the 2 x 2
/// tile kernel streams A and B from L2 at close to its L1 rate.
const KC_BF16: usize = 2048;
/// Int8 carries twice the K per byte: the same bytes per panel.
const KC_INT8: usize = 4096;
/// K block of the strip order (see `drive_strips`): a 512-deep B slice of
/// two panels is 32 KiB, which stays in L1 (48 KiB) while the A slices
/// stream past it with `TILELOADDT1`.
const STRIP_KC_BF16: usize = 256;
const STRIP_KC_INT8: usize = 512;

impl LowpKernel for AmxBf16 {
    const MR: usize = 32;
    const ELEM: Elem = Elem::Bf16;
    const A_U8: bool = false;
    const KC: usize = KC_BF16;
    const STRIP_KC: usize = STRIP_KC_BF16;
    type S = Avx512;
    fn simd(self) -> Avx512 {
        self.avx512()
    }
    #[inline(always)]
    fn prepare(self) {
        ensure_tiles(self);
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc: *mut u8, acc_stride: usize, load: bool) {
        // SAFETY: `prepare` configured this thread's tiles with an AMX-BF16
        // token; the KTile invariants give the bounds `tile_kernel` needs
        // (A rows are padded to 32, so 16 or 32 rows are readable; `acc`
        // holds 32 rows, or 16 when `rows <= 16`).
        unsafe {
            tile_kernel(
                TileOp::Bf16,
                t.rows > 16,
                t.a_streams,
                t.a,
                t.a_group,
                t.b0,
                t.b1,
                t.kc / 32,
                acc,
                acc_stride,
                load,
                t.pf,
                OutRows {
                    ptr: t.out,
                    stride: t.out_stride,
                    rows: t.out_rows,
                },
            )
        }
    }
    #[inline(always)]
    unsafe fn run_strip(self, t: &KTile, a_tile: usize, acc: *mut u8, load: bool) {
        // SAFETY: as `run`, for every row tile of the strip.
        unsafe { run_strip_amx(TileOp::Bf16, t, t.kc / 32, a_tile, acc, load) }
    }
}

impl LowpKernel for AmxInt8 {
    const MR: usize = 32;
    const ELEM: Elem = Elem::Int8;
    const A_U8: bool = false;
    const KC: usize = KC_INT8;
    const STRIP_KC: usize = STRIP_KC_INT8;
    type S = Avx512;
    fn simd(self) -> Avx512 {
        self.avx512()
    }
    #[inline(always)]
    fn prepare(self) {
        ensure_tiles(self);
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc: *mut u8, acc_stride: usize, load: bool) {
        // SAFETY: as for bf16, with an AMX-INT8 token.
        unsafe {
            tile_kernel(
                TileOp::Int8,
                t.rows > 16,
                t.a_streams,
                t.a,
                t.a_group,
                t.b0,
                t.b1,
                t.kc / 64,
                acc,
                acc_stride,
                load,
                t.pf,
                OutRows {
                    ptr: t.out,
                    stride: t.out_stride,
                    rows: t.out_rows,
                },
            )
        }
    }
    #[inline(always)]
    unsafe fn run_strip(self, t: &KTile, a_tile: usize, acc: *mut u8, load: bool) {
        // SAFETY: as `run`, for every row tile of the strip.
        unsafe { run_strip_amx(TileOp::Int8, t, t.kc / 64, a_tile, acc, load) }
    }
}

/// The strip order's K slice as one [`tile_run`] over all row tiles, or,
/// for a single K step (too short for the run kernel), one call per tile.
///
/// # Safety
/// As [`LowpKernel::run_strip`], with this thread's tiles configured for
/// `op` (the kernels' `prepare`); `steps` is the slice's K steps.
#[inline(always)]
unsafe fn run_strip_amx(
    op: TileOp,
    t: &KTile,
    steps: usize,
    a_tile: usize,
    acc: *mut u8,
    load: bool,
) {
    let blocks = t.rows.div_ceil(32);
    if steps < 2 {
        for b in 0..blocks {
            // SAFETY: the caller's contract for row tile `b` (A padded to
            // 32 rows, 32 x 32 accumulators per block).
            unsafe {
                tile_kernel(
                    op,
                    true,
                    t.a_streams,
                    t.a.wrapping_add(b * a_tile),
                    t.a_group,
                    t.b0,
                    t.b1,
                    steps,
                    acc.add(b * crate::amx::ACC_BLOCK),
                    128,
                    load,
                    t.pf,
                    OutRows {
                        ptr: t.out,
                        stride: t.out_stride,
                        rows: 0,
                    },
                )
            };
        }
        return;
    }
    let run = TileRun {
        a: t.a,
        a_group: t.a_group,
        a_block: a_tile,
        b0: t.b0,
        b1: t.b1,
        b_block: 0,
        steps,
        blocks,
        acc,
        load,
        a_streams: t.a_streams,
        pf: t.pf,
        pf_step: t.pf_step,
        out: OutRows {
            ptr: t.out,
            stride: t.out_stride,
            rows: t.out_rows,
        },
    };
    // SAFETY: every row tile reads 32 rows of A (the packed A is padded to
    // 32 rows), `steps` 1 KiB tiles of each B panel (KTile invariants),
    // and its 4 KiB of accumulators; steps >= 2, blocks >= 1.
    unsafe { tile_run(op, &run) }
}
