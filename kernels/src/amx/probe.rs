//! Peak throughput probes for `TDPBF16PS` and `TDPBSSD`: the roofline the
//! low-precision GEMM is judged against (`pinned bench gemm`).
//!
//! Six independent accumulator tiles (tmm0-5) against two source tiles
//! (tmm6-7) already loaded, no memory traffic in the loop: six chains
//! cover the instruction's latency at one issue per 16 cycles. Several
//! short rounds run and the best is kept, since the machine is shared.

use std::time::{Duration, Instant};

use super::{ensure_tiles, TILE_ROWS, TILE_ROW_BYTES};
use crate::isa::{AmxBf16, AmxInt8};

/// Multiply-adds per tile instruction, counted as 2 operations each:
/// `16 x 16` outputs, each a dot of 32 bf16 pairs (or 64 int8 quads).
pub const BF16_OPS_PER_TDP: f64 = (16 * 16 * 32 * 2) as f64;
pub const INT8_OPS_PER_TDP: f64 = (16 * 16 * 64 * 2) as f64;

/// Instructions per `asm!` round trip.
const ITERS: usize = 512;
const TDPS_PER_ITER: usize = 6;
/// TDP instructions one probe round issues.
const PROBE_TDPS: f64 = (ITERS * TDPS_PER_ITER) as f64;

macro_rules! probe_loop {
    ($name:ident, $op:literal) => {
        /// # Safety
        /// Tiles configured on this thread and the instruction available.
        unsafe fn $name(src: *const u8, iters: usize) {
            // SAFETY: the caller's contract; `src` holds one full tile
            // (16 rows of 64 bytes, stride 64).
            unsafe {
                core::arch::asm!(
                    "tileloadd tmm6, [{src} + {s64}*1]",
                    "tileloadd tmm7, [{src} + {s64}*1]",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "tilezero tmm4",
                    "tilezero tmm5",
                    "2:",
                    concat!($op, " tmm0, tmm6, tmm7"),
                    concat!($op, " tmm1, tmm6, tmm7"),
                    concat!($op, " tmm2, tmm6, tmm7"),
                    concat!($op, " tmm3, tmm6, tmm7"),
                    concat!($op, " tmm4, tmm6, tmm7"),
                    concat!($op, " tmm5, tmm6, tmm7"),
                    "dec {n}",
                    "jnz 2b",
                    src = in(reg) src,
                    s64 = in(reg) 64usize,
                    n = inout(reg) iters => _,
                    options(nostack, readonly)
                )
            }
        }
    };
}

probe_loop!(bf16_loop, "tdpbf16ps");
probe_loop!(int8_loop, "tdpbssd");

/// One tile of source data: bf16 1.0 pairs, or int8 ones.
#[repr(C, align(64))]
struct SourceTile([u8; TILE_ROWS * TILE_ROW_BYTES]);

/// The best rate of `round` (which performs `ops_per_round` operations)
/// over short repeats for about `budget`, in operations per second, after
/// one warm-up round (power licence, tile state). The best, not the mean:
/// the machine is shared.
pub(super) fn best_rate(budget: Duration, ops_per_round: f64, mut round: impl FnMut()) -> f64 {
    round();
    let start = Instant::now();
    let mut best = 0.0f64;
    while start.elapsed() < budget || best == 0.0 {
        let t = Instant::now();
        round();
        let secs = t.elapsed().as_secs_f64();
        if secs > 0.0 {
            best = best.max(ops_per_round / secs);
        }
    }
    best
}

/// Measured peak of `TDPBF16PS` on the calling thread, in GFLOP/s, or
/// `None` when AMX-BF16 is not usable here. Runs for about `budget`.
pub fn amx_bf16_peak_gflops(budget: Duration) -> Option<f64> {
    let t = AmxBf16::try_new()?;
    ensure_tiles(t);
    let mut src = SourceTile([0; TILE_ROWS * TILE_ROW_BYTES]);
    for pair in src.0.chunks_exact_mut(2) {
        pair.copy_from_slice(&0x3F80u16.to_le_bytes());
    }
    // SAFETY: tiles configured above with an AMX-BF16 token; src is one tile.
    let rate = best_rate(budget, PROBE_TDPS * BF16_OPS_PER_TDP, || unsafe {
        bf16_loop(src.0.as_ptr(), ITERS)
    });
    Some(rate / 1e9)
}

/// Measured peak of `TDPBSSD` on the calling thread, in GOP/s (a
/// multiply-add is 2 operations), or `None` without AMX-INT8.
pub fn amx_int8_peak_gops(budget: Duration) -> Option<f64> {
    let t = AmxInt8::try_new()?;
    ensure_tiles(t);
    let src = SourceTile([1; TILE_ROWS * TILE_ROW_BYTES]);
    // SAFETY: tiles configured above with an AMX-INT8 token; src is one tile.
    let rate = best_rate(budget, PROBE_TDPS * INT8_OPS_PER_TDP, || unsafe {
        int8_loop(src.0.as_ptr(), ITERS)
    });
    Some(rate / 1e9)
}

/// The bf16 2 x 2 tile microkernel itself on cache-resident operands
/// (`steps` K steps per call, A and B of `steps` KiB each per row tile and
/// panel), in GFLOP/s: the ceiling of the GEMM above the instruction peak.
pub fn amx_bf16_kernel_gflops(steps: usize, budget: Duration) -> Option<f64> {
    let t = AmxBf16::try_new()?;
    ensure_tiles(t);
    let steps = steps.max(1);
    // Tile loads that straddle cache lines run at a third of the speed:
    // operands are 64-byte aligned, as the GEMM's packed panels are.
    let aligned = |v: &Vec<u16>| {
        v.as_ptr()
            .cast::<u8>()
            .wrapping_add(v.as_ptr().cast::<u8>().align_offset(64))
    };
    let abuf = vec![0x3F80u16; 2 * steps * 512 + 32];
    let bbuf = vec![0x3F80u16; 2 * steps * 512 + 32];
    let (a, b) = (aligned(&abuf), aligned(&bbuf));
    let acc = vec![0f32; 32 * 32 + 16];
    let accp = acc
        .as_ptr()
        .cast::<u8>()
        .wrapping_add(acc.as_ptr().cast::<u8>().align_offset(64)) as *mut u8;
    let ops = 4.0 * steps as f64 * BF16_OPS_PER_TDP;
    let round = || {
        for _ in 0..ITERS / 8 {
            // SAFETY: tiles configured above; A and B each hold two runs of
            // `steps` KiB (row tiles / panels); `acc` holds 32 x 32 f32.
            unsafe {
                super::tile_kernel(
                    super::TileOp::Bf16,
                    true,
                    false,
                    a,
                    steps * 1024,
                    b,
                    b.add(steps * 1024),
                    steps,
                    accp,
                    128,
                    false,
                    a,
                    super::OutRows {
                        ptr: accp,
                        stride: 0,
                        rows: 0,
                    },
                )
            };
        }
    };
    Some(best_rate(budget, (ITERS / 8) as f64 * ops, round) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_report_a_positive_rate_when_amx_exists() {
        match amx_bf16_peak_gflops(Duration::from_millis(1)) {
            Some(r) => assert!(r > 0.0 && r.is_finite()),
            None => assert!(AmxBf16::try_new().is_none()),
        }
        match amx_int8_peak_gops(Duration::from_millis(1)) {
            Some(r) => assert!(r > 0.0 && r.is_finite()),
            None => assert!(AmxInt8::try_new().is_none()),
        }
    }
}
