//! The strip order of the low-precision driver (AMX): for one row block,
//! loop 2 (jr) outside the K loop, the partial sums of a 32-column strip
//! kept in L1 while the K slices of its B micro-panel go by, then written
//! to C once (non-temporally when C is large).

use std::sync::OnceLock;

use super::driver::{a_offset, write_tile, Block, Call, KTile, LowpKernel, Out, NR};
use super::Elem;
use crate::cpu::cache_sizes;

/// Rows of C's partial-sum strip in the strip order.
pub(super) const STRIP_ROWS: usize = 128;

/// A 32-column strip of partial sums: `STRIP_ROWS / 32` tiles of 32 x 32,
/// each contiguous (rows 128 bytes apart).
#[repr(C, align(64))]
pub(super) struct Strip(pub(super) [f32; STRIP_ROWS * 32]);

/// The strip order's K block: the kernel's [`LowpKernel::STRIP_KC`] (or
/// `PINNED_LOWP_STRIP_KC`, 0 to turn it off) when the block has more than
/// 64 rows and K is deeper than one strip block; else 0.
pub(super) fn strip_kc<K: LowpKernel>(rows: usize, kp: usize) -> usize {
    static OVERRIDE: OnceLock<Option<usize>> = OnceLock::new();
    let forced = *OVERRIDE.get_or_init(|| {
        std::env::var("PINNED_LOWP_STRIP_KC")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    if K::STRIP_KC == 0 || rows <= 64 {
        return 0;
    }
    let step = K::ELEM.k_step();
    let kc = forced.unwrap_or(K::STRIP_KC).next_multiple_of(step);
    if kc == 0 || kc >= kp {
        0
    } else {
        kc
    }
}

/// Strip-order switches, read once: `PINNED_LOWP_RUNS=1` runs each K
/// slice's row tiles in one AMX `asm!` block ([`LowpKernel::run_strip`];
/// off by default: measured no better, see [`drive_strips`]);
/// `PINNED_LOWP_NT=0|1` forces the non-temporal write-back of C off or on
/// (default: on for blocks of C larger than L2, see [`stream_c`]).
#[derive(Clone, Copy)]
struct Knobs {
    runs: bool,
    nt: Option<bool>,
}

fn knobs() -> Knobs {
    static KNOBS: OnceLock<Knobs> = OnceLock::new();
    *KNOBS.get_or_init(|| {
        let get = |name: &str| std::env::var(name).ok().map(|v| v == "1");
        Knobs {
            runs: get("PINNED_LOWP_RUNS").unwrap_or(false),
            nt: get("PINNED_LOWP_NT"),
        }
    })
}

/// Whether the strip order writes this block of C with non-temporal
/// stores (when C is aligned and `beta == 0`): when the block is larger
/// than L2, its lines would leave the core before anything reads them
/// again, so they go to memory without being read for ownership first,
/// and no C rows are claimed ahead. Measured at 2048^3 on one thread (16
/// MiB of C; thread CPU time, 5-10 interleaved rounds per session, median
/// of the per-round ratios to the claimed, cached write-back, on a VM
/// whose other core was busy): bf16 1.04-1.10 over five sessions (best
/// of a quiet session 1182 against 1110 GFLOP/s), int8 1.06-1.14 over
/// three. The 8 KiB rows of C also put all 128 rows of a strip in the
/// same two L1 sets, so claiming them ahead evicted each other.
fn stream_c(blk: Block) -> bool {
    knobs().nt.unwrap_or_else(|| {
        let l2 = cache_sizes().l2.unwrap_or(1 << 20);
        blk.rows * blk.cols * 4 > l2
    })
}

/// A row block of loop 3 as [`drive_strips`] sees it.
#[derive(Clone, Copy)]
pub(super) struct RowBlock {
    pub(super) ic: usize,
    pub(super) mcb: usize,
    /// Packed row of the block's first row.
    pub(super) a_row0: usize,
    /// Another row block follows (its first B micro-panel is prefetched).
    pub(super) next_block: bool,
}

/// The strip order for one row block: loop 2 (jr) outside the K loop, so
/// that the partial sums of a 32-column strip of the row block (at most
/// [`STRIP_ROWS`] rows) stay in L1 (`strip`, 16 KiB) and each `kc`-deep B slice (`kc x 32`,
/// 16 KiB at 256 bf16) is read from L1 by every row tile after the first,
/// while the A slices stream from L2 with `TILELOADDT1` (so they do not
/// push the B slice out). Whole-K calls stream both operands from L2.
///
/// Measured with the tile kernel alone on L2-resident operands (best of
/// 300 ms, this VM): both operands from L2 about 52% of the `TDPBF16PS`
/// peak, one from L1 about 63%, both from L1 76% (8-step calls; each call
/// costs about 160 cycles of tile pipeline fill and drain, hence not
/// shorter K slices). In the 2048^3 GEMM (thread CPU time, 4 interleaved
/// runs): bf16 1160-1190 -> 1251-1292 GFLOP/s, int8 1759-1908 -> 1977-2068
/// GOP/s; KC 512 (a 32 KiB slice) measured 3-6% below 256, and row blocks
/// above 128 rows lost (MC 256: -5 to -10%).
///
/// What did not help (2048^3, one thread, thread CPU time, median ratio
/// to this code over 5-10 interleaved rounds on a VM whose other core was
/// busy): running a K slice's four row tiles in one `asm!` block with the
/// accumulator switch interleaved (`PINNED_LOWP_RUNS=1`,
/// [`crate::amx::tile_run`]: +15-20% with the kernels alone, see
/// `amx::strip_probe`, but 0.87-0.97 here); prefetching A two K steps
/// ahead into L1 (the run 2450 -> 1880 GFLOP/s alone); the next K slice
/// of B into L1 between runs (no change); 12 instead of 8 prefetched
/// lines per step, or every other line (0.85); the next row block's fp32
/// A into L2 while the kernels run (conversion 14% -> 8% of the time, the
/// kernels as much slower); KC 128 (0.99) and MC 256 with KC 128 or 256
/// (0.92, 0.98), MC 64 or 96 (0.87, 0.985); two or four 128-row strips
/// per row block taking each B micro-panel in turn, so that the second
/// reads it from L2 (0.885, 0.56: the packed A block no longer stays in
/// L2); all of A converted up front with 256-512 column blocks of B held
/// in L2 (0.85-0.9); huge pages for A, B and C (no change); A loaded
/// with `TILELOADD` instead of `TILELOADDT1` (0.92, either kernel).
/// Profiles put the kernel's stalls on its A tile loads (L2), and the
/// kernels ran at 1600-1850 GFLOP/s inside the GEMM against 2300 alone:
/// the B micro-panels, the fp32 A rows and C all stream through L2 from
/// L3 (C, 16 MiB, now leaves with non-temporal stores, see [`stream_c`]).
///
/// # Safety
/// As `driver::drive`; `rb.mcb <= STRIP_ROWS`, the block's packed A rows are
/// written, `kc % k_step == 0`, `0 < kc`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn drive_strips<K: LowpKernel>(
    k: K,
    call: &Call,
    blk: Block,
    rb: RowBlock,
    jc: usize,
    ncb: usize,
    kc: usize,
    strip: &mut Strip,
) {
    let l = &call.layout;
    let esize = l.elem.bytes();
    let k_blocks = l.kp.div_ceil(kc);
    let slice = l.kp * 16 * esize;
    // Non-temporal write-back (`PINNED_LOWP_NT=1`): C aligned, written
    // once (beta = 0), full 32-column tiles; no C rows are claimed then.
    let stream = stream_c(blk)
        && call.beta == 0.0
        && (call.c as usize).is_multiple_of(64)
        && (call.ldc * 4).is_multiple_of(64)
        && blk.j0.is_multiple_of(16);
    // Loop 2 (jr, step 32): one B micro-panel, K slice by K slice.
    for jr in (jc..jc + ncb).step_by(NR) {
        let j = blk.j0 + jr;
        let cols = NR.min(blk.cols - jr);
        let panel = call.b.wrapping_add((j / 16) * l.panel_bytes());
        // The next micro-panel goes to L2 while this one runs, as in `drive`.
        let next_j = if jr + NR < jc + ncb {
            Some(j + NR)
        } else if rb.next_block {
            Some(blk.j0 + jc)
        } else {
            None
        };
        let next_b = next_j.map(|nj| call.b.wrapping_add((nj / 16) * l.panel_bytes()));
        let mut off = 0;
        let acc = strip.0.as_mut_ptr();
        // Loop 4 (pc, step KC): one K slice of the micro-panel, in L1.
        for kb in 0..k_blocks {
            let pc = kb * kc;
            let kcb = kc.min(l.kp - pc);
            let steps = kcb / l.elem.k_step();
            if knobs().runs {
                let b0 = panel.wrapping_add(pc * 16 * esize);
                let tiles = rb.mcb.div_ceil(K::MR);
                // Loop 1 (ir, step MR) inside the kernel: the row tiles' A
                // slices stream from L2 one after the other.
                let a = call
                    .apack
                    .wrapping_add(a_offset(rb.a_row0, pc * esize, call.a_group));
                // The next micro-panel's two panels (contiguous) spread
                // over this one's runs, all their steps with hints.
                let hint_steps = crate::amx::run_hint_steps(steps.max(2), tiles);
                let pf_step = (2 * slice)
                    .div_ceil(k_blocks * hint_steps)
                    .next_multiple_of(64);
                let pf = match next_b {
                    Some(nb) if off < 2 * slice => nb.wrapping_add(off),
                    _ => a,
                };
                off += hint_steps * pf_step;
                // C rows claimed over the last K slices, a run's hint
                // steps' worth each.
                let first = k_blocks.saturating_sub(rb.mcb.div_ceil(hint_steps));
                let claimed = if kb >= first && !stream {
                    ((kb - first) * hint_steps).min(rb.mcb)
                } else {
                    rb.mcb
                };
                let c = call
                    .c
                    .wrapping_add((blk.i0 + rb.ic + claimed) * call.ldc + j);
                let tile = KTile {
                    rows: rb.mcb,
                    a,
                    pf,
                    pf_step,
                    out: c.cast(),
                    out_rows: (rb.mcb - claimed).min(hint_steps),
                    a_streams: true,
                    ..KTile::for_slice(call, b0, kcb, j)
                };
                // SAFETY: each row tile's rows, K slice and panels lie in
                // the packed A (rows padded to 32) and B (KTile
                // invariants); the strip holds `tiles <= STRIP_ROWS / 32`
                // blocks of 32 x 32 values.
                unsafe { k.run_strip(&tile, 2 * call.a_group, acc.cast(), kb > 0) };
                continue;
            }
            // The C rows of each tile are claimed for writing over the last
            // K slices, `steps - 1` rows per call.
            let per_call = steps - 1;
            let first_claim = k_blocks.saturating_sub(K::MR.div_ceil(per_call.max(1)));
            let b0 = panel.wrapping_add(pc * 16 * esize);
            // Loop 1 (ir, step MR): one A micro-panel slice, from L2.
            for (t, ir) in (rb.ic..rb.ic + rb.mcb).step_by(K::MR).enumerate() {
                let i = blk.i0 + ir;
                let rows = K::MR.min(blk.rows - ir);
                let c = call.c.wrapping_add(i * call.ldc + j);
                let a = call.apack.wrapping_add(a_offset(
                    rb.a_row0 + ir - rb.ic,
                    pc * esize,
                    call.a_group,
                ));
                let pf = match next_b {
                    Some(nb) if off < slice => nb.wrapping_add(off),
                    Some(nb) if off < 2 * slice => nb.wrapping_add(l.panel_bytes() + off - slice),
                    _ => a,
                };
                off += steps * crate::amx::PF_STEP;
                let claimed = if per_call > 0 && kb >= first_claim && !stream {
                    ((kb - first_claim) * per_call).min(rows)
                } else {
                    rows
                };
                let tile = KTile {
                    rows,
                    a,
                    pf,
                    out: c.wrapping_add(claimed * call.ldc).cast(),
                    out_rows: rows - claimed,
                    a_streams: true,
                    ..KTile::for_slice(call, b0, kcb, j)
                };
                // SAFETY: the tile's rows, K slice and panels lie in the
                // packed A and B (KTile invariants); tile `t` of the strip
                // holds 32 x 32 values (`t < mcb / 32 <= STRIP_ROWS / 32`).
                unsafe { k.run(&tile, acc.add(t * 32 * 32).cast(), 128, kb > 0) };
            }
        }
        for (t, ir) in (rb.ic..rb.ic + rb.mcb).step_by(K::MR).enumerate() {
            // SAFETY: every tile of the strip is accumulated over all of K.
            unsafe { strip_to_c(k, call, blk, acc, t, ir, j, cols, stream) };
        }
    }
}

/// Writes tile `t` of the strip (rows `ir..` of the thread's block,
/// columns `j..j + cols` of C) to C: scaled, through the epilogue, with
/// non-temporal stores when `stream` (and the tile is 32 columns wide).
///
/// # Safety
/// As [`drive_strips`]; `acc` is the strip, whose tile `t < STRIP_ROWS /
/// 32` is accumulated over all of K; the tile lies inside the block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn strip_to_c<K: LowpKernel>(
    k: K,
    call: &Call,
    blk: Block,
    acc: *mut f32,
    t: usize,
    ir: usize,
    j: usize,
    cols: usize,
    stream: bool,
) {
    let l = &call.layout;
    let i = blk.i0 + ir;
    let rows = K::MR.min(blk.rows - ir);
    // SAFETY: tile `t` of the strip holds 32 x 32 values, ours alone.
    let tile = unsafe { core::slice::from_raw_parts_mut(acc.add(t * 32 * 32), 32 * 32) };
    if K::ELEM == Elem::Int8 {
        for x in &mut tile[..rows * 32] {
            *x = x.to_bits() as i32 as f32;
        }
    }
    let out = Out {
        alpha: call.alpha,
        beta: call.beta,
        load_c: call.beta != 0.0,
        epilogue: call.epilogue.map(|e| e.offset(i, j)),
        row_scale: if l.elem == Elem::Int8 {
            call.row_scales.wrapping_add(i)
        } else {
            core::ptr::null_mut()
        },
        col_scale: call.col_scales.wrapping_add(j),
        stream: stream && cols == NR,
    };
    let c = call.c.wrapping_add(i * call.ldc + j);
    // SAFETY: (i.., j..) + rows x cols lies inside C (the block does), row
    // and column scales cover it (int8).
    unsafe { write_tile(k.simd(), tile.as_ptr(), rows, cols, c, call.ldc, &out) };
}
