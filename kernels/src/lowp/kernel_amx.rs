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

/// The [`LowpKernel`] of one AMX token: tile products of `$op`.
macro_rules! amx_kernel {
    ($token:ty, $elem:expr, $op:expr, $kc:expr, $strip_kc:expr) => {
        impl LowpKernel for $token {
            const MR: usize = 32;
            const ELEM: Elem = $elem;
            const A_U8: bool = false;
            const KC: usize = $kc;
            const STRIP_KC: usize = $strip_kc;
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
                let steps = t.kc / Self::ELEM.k_step();
                // SAFETY: `prepare` configured this thread's tiles with this
                // token; the caller's contract is `run_tile_amx`'s.
                unsafe { run_tile_amx($op, t, steps, acc, acc_stride, load) }
            }
            #[inline(always)]
            unsafe fn run_strip(self, t: &KTile, a_tile: usize, acc: *mut u8, load: bool) {
                let steps = t.kc / Self::ELEM.k_step();
                // SAFETY: as `run`, for every row tile of the strip.
                unsafe { run_strip_amx($op, t, steps, a_tile, acc, load) }
            }
        }
    };
}

amx_kernel!(AmxBf16, Elem::Bf16, TileOp::Bf16, KC_BF16, STRIP_KC_BF16);
amx_kernel!(AmxInt8, Elem::Int8, TileOp::Int8, KC_INT8, STRIP_KC_INT8);

/// One [`KTile`] on the tile kernel (its two-row form above 16 rows),
/// `steps` K steps deep.
///
/// # Safety
/// As [`LowpKernel::run`], with this thread's tiles configured for `op`
/// (A rows are padded to 32, so 16 or 32 rows are readable; `acc` holds 32
/// rows, or 16 when `t.rows <= 16`).
#[inline(always)]
unsafe fn run_tile_amx(
    op: TileOp,
    t: &KTile,
    steps: usize,
    acc: *mut u8,
    acc_stride: usize,
    load: bool,
) {
    let out = out_rows(t);
    // SAFETY: the caller's contract is the tile kernel's.
    unsafe {
        tile_kernel(
            op,
            t.rows > 16,
            t.a_streams,
            t.a,
            t.a_group,
            t.b0,
            t.b1,
            steps,
            acc,
            acc_stride,
            load,
            t.pf,
            out,
        )
    }
}

/// Where `t`'s result goes in C: its `out_rows` rows are claimed ahead.
fn out_rows(t: &KTile) -> OutRows {
    OutRows {
        ptr: t.out,
        stride: t.out_stride,
        rows: t.out_rows,
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
            // Every row tile reads all 32 (padded) rows: the strip's blocks
            // hold 32 rows of accumulators; no C rows are claimed.
            let tile = KTile {
                rows: 32,
                a: t.a.wrapping_add(b * a_tile),
                out_rows: 0,
                ..*t
            };
            let acc = acc.wrapping_add(b * crate::amx::ACC_BLOCK);
            // SAFETY: the caller's contract for row tile `b` (A padded to
            // 32 rows, 32 x 32 accumulators per block, 128-byte rows).
            unsafe { run_tile_amx(op, &tile, steps, acc, 128, load) };
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
        out: out_rows(t),
    };
    // SAFETY: every row tile reads 32 rows of A (the packed A is padded to
    // 32 rows), `steps` 1 KiB tiles of each B panel (KTile invariants),
    // and its 4 KiB of accumulators; steps >= 2, blocks >= 1.
    unsafe { tile_run(op, &run) }
}
