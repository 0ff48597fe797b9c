//! The strip order's inner loops alone, outside the GEMM (a tuning aid,
//! `examples/amx_micro.rs`): one K slice of a B micro-panel against
//! `blocks` row tiles of A, the accumulators a strip of 32 x 32 blocks, as
//! one run kernel (`tile_run`) or as one two-row tile kernel call per row
//! tile.
//!
//! What it showed on the Sapphire Rapids VM this was written on (bf16,
//! 8 K steps x 4 row tiles, A from a 512 KiB buffer; GFLOP/s by the wall
//! clock, fraction of the `TDPBF16PS` probe): with B in L1, per-tile calls
//! 1850-2090 (55-62%), the run 2250-2520 (65-75%); with B slices cycling
//! through 128 KiB (L2) and an 8 MiB stream prefetched into L2 as the GEMM
//! does for the next micro-panel, 1450-1670 (42-50%) against 1700-1890
//! (52-56%). Inside the 2048^3 GEMM the run measured no better than the
//! per-tile calls (see `lowp::driver::drive_strips`).
//!
//! The operands' values matter: on zeros the same loops ran 68-75%
//! (per-tile calls) and 83-91% (run) of the probe with B in L1, against
//! 59-62% and 72-78% on bf16 ones or on values spread over [-1, 1), which
//! measured alike (two rounds each, 2026-11-29). The peak probe itself,
//! with no tile loads, measured the same on zeros, ones and spread values.
//! So kernels are tuned on nonzero data ([`ProbeData`]); a GEMM whose
//! packed A is still zero (a skipped conversion) runs fast for that reason.

use std::time::Duration;

use super::probe::BF16_OPS_PER_TDP;
use super::{ensure_tiles, tile_kernel, tile_run, OutRows, TileOp, TileRun, PF_STEP};
use crate::isa::AmxBf16;

/// One probe's shape.
#[derive(Clone, Copy, Debug)]
pub struct StripProbe {
    /// K steps (32 bf16 each) per slice, at least 2.
    pub steps: usize,
    /// Row tiles (32 rows each) per slice.
    pub blocks: usize,
    /// A is read from a buffer of this many KiB, slice after slice.
    pub a_kib: usize,
    /// B slices cycle through this many KiB (0: one slice, stays in L1).
    pub b_kib: usize,
    /// MiB of a separate buffer prefetched into L2 as the kernels go, as
    /// the GEMM prefetches the next B micro-panel (0: none).
    pub pf_mib: usize,
    /// One run kernel per slice, else one kernel call per row tile.
    pub run: bool,
    /// What A and B hold.
    pub data: ProbeData,
}

/// The operands' values. The tile units run measurably faster on zeros
/// (see the module docs), so a tuning run must not measure on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeData {
    /// bf16 1.0 everywhere, as the peak probe's source tiles.
    Ones,
    /// Values spread over [-1, 1), as a model's.
    Spread,
    /// Zeros.
    Zeros,
}

impl ProbeData {
    /// `n` bf16 bit patterns of this kind.
    fn values(self, n: usize) -> Vec<u16> {
        let mut x = 0x9E37_79B9u32;
        (0..n)
            .map(|_| match self {
                Self::Ones => 0x3F80,
                Self::Zeros => 0,
                Self::Spread => {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    crate::bf16::f32_to_bf16((x % 2000) as f32 / 1000.0 - 1.0)
                }
            })
            .collect()
    }
}

/// 64-byte-aligned start of a buffer (tile loads that straddle lines run
/// at a third of the speed).
fn aligned<T>(v: &[T]) -> *const u8 {
    let p = v.as_ptr().cast::<u8>();
    p.wrapping_add(p.align_offset(64))
}

/// Best rate of `probe` over `budget`, GFLOP/s; `None` without AMX-BF16.
pub fn strip_gflops(probe: StripProbe, budget: Duration) -> Option<f64> {
    let t = AmxBf16::try_new()?;
    ensure_tiles(t);
    let steps = probe.steps.max(2);
    let blocks = probe.blocks.max(1);
    // One row tile's A slice: two 16-row groups of `steps` KiB.
    let a_tile = 2 * steps * 1024;
    let a_slices = (probe.a_kib * 1024 / (a_tile * blocks)).max(1);
    let b_slice = 2 * steps * 1024;
    let b_slices = (probe.b_kib * 1024 / b_slice).max(1);
    let abuf = probe.data.values(a_slices * blocks * a_tile / 2 + 32);
    let bbuf = probe.data.values(b_slices * b_slice / 2 + 32);
    let acc = vec![0f32; blocks * 32 * 32 + 16];
    let pfbuf = vec![1u8; (probe.pf_mib << 20).max(1)];
    let (a, b, accp) = (aligned(&abuf), aligned(&bbuf), aligned(&acc) as *mut u8);
    let pf_per_slice = blocks * steps * PF_STEP;
    let pf_slices = (pfbuf.len() / pf_per_slice).max(1);
    let ops = 4.0 * (steps * blocks) as f64 * BF16_OPS_PER_TDP;
    let rounds = 256;
    let mut n = 0usize;
    let round = || {
        for r in 0..rounds {
            n += 1;
            let a0 = a.wrapping_add((r % a_slices) * blocks * a_tile);
            let b0 = b.wrapping_add((r % b_slices) * b_slice);
            let pf = if probe.pf_mib == 0 {
                a0
            } else {
                pfbuf.as_ptr().wrapping_add((n % pf_slices) * pf_per_slice)
            };
            let out = OutRows {
                ptr: accp,
                stride: 0,
                rows: 0,
            };
            if probe.run {
                let run = TileRun {
                    a: a0,
                    a_group: steps * 1024,
                    a_block: a_tile,
                    b0,
                    b1: b0.wrapping_add(steps * 1024),
                    b_block: 0,
                    steps,
                    blocks,
                    acc: accp,
                    load: r > 0,
                    a_streams: true,
                    pf,
                    pf_step: PF_STEP,
                    out,
                };
                // SAFETY: tiles configured above; each block's A (two row
                // groups of `steps` KiB) and both B panels lie in the
                // buffers, `acc` holds `blocks` 32 x 32 blocks; steps >= 2.
                unsafe { tile_run(TileOp::Bf16, &run) };
            } else {
                for blk in 0..blocks {
                    // SAFETY: as above, one row tile per call.
                    unsafe {
                        tile_kernel(
                            TileOp::Bf16,
                            true,
                            true,
                            a0.wrapping_add(blk * a_tile),
                            steps * 1024,
                            b0,
                            b0.wrapping_add(steps * 1024),
                            steps,
                            accp.add(blk * 4096),
                            128,
                            r > 0,
                            pf.wrapping_add(blk * steps * PF_STEP),
                            out,
                        )
                    };
                }
            }
        }
    };
    Some(super::probe::best_rate(budget, rounds as f64 * ops, round) / 1e9)
}
