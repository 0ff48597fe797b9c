//! The AMX run kernel: several 32 x 32 blocks of C over the same K slice
//! in one `asm!` block, each block's accumulator store and reload
//! interleaved with the next block's first tile products.
//!
//! Why: the two-row [`super::tile_kernel`] pays about 160 cycles per call
//! to fill and drain the tile pipeline. Tile registers are not renamed and
//! the tile instructions issue in program order, so a call's four
//! `TILESTORED`s wait for its last four products (about 50 cycles of
//! latency each), and the next call's four `TILELOADD`s and first operand
//! loads then all precede its first product. Here, after block `b`'s last
//! products, each accumulator is stored, refilled with block `b + 1`'s and
//! at once used by block `b + 1`'s first product on it, so only the first
//! store waits on a product's latency and the other three hide under the
//! products of the new block. The operand tiles for the new block's first
//! K step are loaded as soon as the old block's last product reading them
//! has issued, as inside a block.
//!
//! The accumulators live in memory as 32 x 32 row-major blocks of 32-bit
//! values, 128-byte rows, [`ACC_BLOCK`] bytes apart (the driver's
//! partial-sum strip), so the strides are constants of the code.

use super::tile_kernels::{OutRows, TileOp, B_TILE_BYTES};

/// Bytes of one block's accumulators: 32 rows x 32 values x 4 bytes.
pub(crate) const ACC_BLOCK: usize = 32 * 32 * 4;

/// One run of blocks for [`tile_run`].
///
/// Block `b` (`b < blocks`) multiplies the A tiles at `a + b * a_block`
/// (rows 0..16; rows 16..32 at `+ a_group`) by the B panels at `b0 + b *
/// b_block` and `b1 + b * b_block`, over `steps` K steps (1 KiB per tile
/// and step, contiguous), into the accumulators at `acc + b * ACC_BLOCK`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TileRun {
    pub a: *const u8,
    pub a_group: usize,
    pub a_block: usize,
    pub b0: *const u8,
    pub b1: *const u8,
    pub b_block: usize,
    pub steps: usize,
    pub blocks: usize,
    pub acc: *mut u8,
    /// Accumulate onto the stored values (else start from zero).
    pub load: bool,
    /// A is read once: load it with the no-reuse hint `TILELOADDT1`.
    pub a_streams: bool,
    /// Prefetched into L2, 8 lines per K step (but the switch's), then
    /// moved on by `pf_step` bytes (a hint: any address will do).
    pub pf: *const u8,
    /// Bytes `pf` moves per K step (8 lines are prefetched from where it
    /// is; a longer step leaves lines to the hardware prefetchers).
    pub pf_step: usize,
    /// C rows claimed for writing, one row (two lines) per K step after
    /// each block's first, until `out.rows` are claimed (a hint).
    pub out: OutRows,
}

/// Number of K steps of a run that prefetch (`pf`) and claim (`out`).
pub(crate) fn run_hint_steps(steps: usize, blocks: usize) -> usize {
    steps - 1 + (blocks - 1) * (steps - 2)
}

/// What the asm reads from memory, per run (fewer registers).
#[repr(C)]
struct Params {
    /// Loaded (1) or zeroed (0) accumulators.
    load: usize,
    /// Pointer change from a block's last K step to the next block's first.
    a_next: isize,
    b_next: isize,
    /// Bytes between claimed C rows.
    out_stride: usize,
    /// K steps run by the step loop in the first block and in the others
    /// (whose first step is part of the switch).
    first_steps: usize,
    next_steps: usize,
    /// Bytes `pf` moves per K step.
    pf_step: usize,
}

/// One K step inside a block (pointers first moved to the next step):
/// four products, each source tile reloaded for the next step once the
/// last product reading it has issued, 8 lines of `pf` sent to L2, and
/// one row of C claimed while rows remain.
macro_rules! run_step {
    ($op:literal, $aload:literal) => {
        concat!(
            "add {a}, {bstep}\n",
            "add {a2}, {bstep}\n",
            "add {b0}, {bstep}\n",
            "add {b1}, {bstep}\n",
            $op,
            " tmm0, tmm4, tmm6\n",
            "prefetcht1 [{pf} + 0]\n",
            "prefetcht1 [{pf} + 64]\n",
            "prefetcht1 [{pf} + 128]\n",
            $op,
            " tmm1, tmm4, tmm7\n",
            $aload,
            " tmm4, [{a} + {s64}*1]\n",
            "prefetcht1 [{pf} + 192]\n",
            "prefetcht1 [{pf} + 256]\n",
            "prefetcht1 [{pf} + 320]\n",
            $op,
            " tmm2, tmm5, tmm6\n",
            "tileloadd tmm6, [{b0} + {s64}*1]\n",
            "prefetcht1 [{pf} + 384]\n",
            "prefetcht1 [{pf} + 448]\n",
            $op,
            " tmm3, tmm5, tmm7\n",
            "tileloadd tmm7, [{b1} + {s64}*1]\n",
            $aload,
            " tmm5, [{a2} + {s64}*1]\n",
            "add {pf}, [{p} + 48]\n",
            "test {nout}, {nout}\n",
            "jz 8f\n",
            "prefetchw [{oc}]\n",
            "prefetchw [{oc} + 64]\n",
            "add {oc}, [{p} + 24]\n",
            "dec {nout}\n",
            "8:\n",
        )
    };
}

/// The switch from one block to the next, after the old block's last
/// K step's operands are loaded: its last products, interleaved with the
/// new block's first operand loads; then, per accumulator, store the old
/// value, fill the new one (`$f0..$f3`: a load or `tilezero`) and issue the
/// new block's first product on it, reloading the operands for its second
/// K step on the way.
macro_rules! run_switch {
    ($op:literal, $aload:literal, $f0:literal, $f1:literal, $f2:literal, $f3:literal) => {
        concat!(
            "add {a}, [{p} + 8]\n",
            "add {a2}, [{p} + 8]\n",
            "add {b0}, [{p} + 16]\n",
            "add {b1}, [{p} + 16]\n",
            $op,
            " tmm0, tmm4, tmm6\n",
            $op,
            " tmm1, tmm4, tmm7\n",
            $aload,
            " tmm4, [{a} + {s64}*1]\n",
            $op,
            " tmm2, tmm5, tmm6\n",
            "tileloadd tmm6, [{b0} + {s64}*1]\n",
            $op,
            " tmm3, tmm5, tmm7\n",
            "tileloadd tmm7, [{b1} + {s64}*1]\n",
            $aload,
            " tmm5, [{a2} + {s64}*1]\n",
            "add {a}, {bstep}\n",
            "add {a2}, {bstep}\n",
            "add {b0}, {bstep}\n",
            "add {b1}, {bstep}\n",
            "tilestored [{acc} + {s64}*2], tmm0\n",
            $f0,
            "\n",
            $op,
            " tmm0, tmm4, tmm6\n",
            "tilestored [{acc} + {s64}*2 + 64], tmm1\n",
            $f1,
            "\n",
            $op,
            " tmm1, tmm4, tmm7\n",
            $aload,
            " tmm4, [{a} + {s64}*1]\n",
            "tilestored [{acc} + {s64}*2 + 2048], tmm2\n",
            $f2,
            "\n",
            $op,
            " tmm2, tmm5, tmm6\n",
            "tileloadd tmm6, [{b0} + {s64}*1]\n",
            "tilestored [{acc} + {s64}*2 + 2112], tmm3\n",
            $f3,
            "\n",
            $op,
            " tmm3, tmm5, tmm7\n",
            "tileloadd tmm7, [{b1} + {s64}*1]\n",
            $aload,
            " tmm5, [{a2} + {s64}*1]\n",
            "add {acc}, 4096\n",
        )
    };
}

macro_rules! tile_run_fn {
    ($name:ident, $op:literal, $aload:literal) => {
        /// # Safety
        /// As [`tile_run`].
        #[inline(never)]
        unsafe fn $name(r: &TileRun) {
            let step_bytes = (B_TILE_BYTES * (r.steps - 1)) as isize;
            let p = Params {
                load: usize::from(r.load),
                a_next: r.a_block as isize - step_bytes,
                b_next: r.b_block as isize - step_bytes,
                out_stride: r.out.stride,
                first_steps: r.steps - 1,
                next_steps: r.steps - 2,
                pf_step: r.pf_step,
            };
            // SAFETY: the caller's contract (see `tile_run`): tiles
            // configured, every tile load and store in bounds, steps >= 2,
            // blocks >= 1. Prefetches never fault. `p` is read only.
            unsafe {
                core::arch::asm!(
                    // Block 0: fill the accumulators and the first operands.
                    "cmp qword ptr [{p}], 0",
                    "je 3f",
                    "tileloadd tmm0, [{acc} + {s64}*2]",
                    "tileloadd tmm1, [{acc} + {s64}*2 + 64]",
                    "tileloadd tmm2, [{acc} + {s64}*2 + 2048]",
                    "tileloadd tmm3, [{acc} + {s64}*2 + 2112]",
                    "jmp 2f",
                    "3:",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    concat!($aload, " tmm4, [{a} + {s64}*1]"),
                    "tileloadd tmm6, [{b0} + {s64}*1]",
                    "tileloadd tmm7, [{b1} + {s64}*1]",
                    concat!($aload, " tmm5, [{a2} + {s64}*1]"),
                    // `n`: the K steps left in this block after the one
                    // whose operands are loaded.
                    "mov {n}, [{p} + 32]",
                    "30:",
                    "test {n}, {n}",
                    "jz 12f",
                    "31:",
                    run_step!($op, $aload),
                    "dec {n}",
                    "jnz 31b",
                    "12:",
                    "dec {blocks}",
                    "jz 20f",
                    "cmp qword ptr [{p}], 0",
                    "je 13f",
                    run_switch!(
                        $op,
                        $aload,
                        "tileloadd tmm0, [{acc} + {s64}*2 + 4096]",
                        "tileloadd tmm1, [{acc} + {s64}*2 + 4160]",
                        "tileloadd tmm2, [{acc} + {s64}*2 + 6144]",
                        "tileloadd tmm3, [{acc} + {s64}*2 + 6208]"
                    ),
                    "jmp 14f",
                    "13:",
                    run_switch!(
                        $op,
                        $aload,
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3"
                    ),
                    "14:",
                    "mov {n}, [{p} + 40]",
                    "jmp 30b",
                    "20:",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    concat!($op, " tmm1, tmm4, tmm7"),
                    concat!($op, " tmm2, tmm5, tmm6"),
                    concat!($op, " tmm3, tmm5, tmm7"),
                    "tilestored [{acc} + {s64}*2], tmm0",
                    "tilestored [{acc} + {s64}*2 + 64], tmm1",
                    "tilestored [{acc} + {s64}*2 + 2048], tmm2",
                    "tilestored [{acc} + {s64}*2 + 2112], tmm3",
                    p = in(reg) &p,
                    a = inout(reg) r.a => _,
                    a2 = inout(reg) r.a.wrapping_add(r.a_group) => _,
                    b0 = inout(reg) r.b0 => _,
                    b1 = inout(reg) r.b1 => _,
                    s64 = in(reg) 64usize,
                    bstep = const B_TILE_BYTES,
                    blocks = inout(reg) r.blocks => _,
                    n = out(reg) _,
                    acc = inout(reg) r.acc => _,
                    pf = inout(reg) r.pf => _,
                    oc = inout(reg) r.out.ptr => _,
                    nout = inout(reg) r.out.rows => _,
                    options(nostack)
                )
            }
        }
    };
}

tile_run_fn!(bf16_run, "tdpbf16ps", "tileloadd");
tile_run_fn!(bf16_run_stream_a, "tdpbf16ps", "tileloaddt1");
tile_run_fn!(int8_run, "tdpbssd", "tileloadd");
tile_run_fn!(int8_run_stream_a, "tdpbssd", "tileloaddt1");

/// Accumulates `r.blocks` 32 x 32 blocks of `A * [B0 B1]` over `r.steps`
/// K steps each (see [`TileRun`]), f32 (bf16) or i32 (int8) values.
///
/// # Safety
/// - The tile configuration is loaded on this thread
///   ([`super::ensure_tiles`]) and the CPU has the instruction of `op`.
/// - `r.steps >= 2`, `r.blocks >= 1`.
/// - For every block `b`: the `r.steps` A tiles of 1 KiB at `r.a + b *
///   r.a_block + s * 1024` and at `+ r.a_group` are readable, and so are
///   `r.steps * 1024` bytes at `r.b0 + b * r.b_block` and `r.b1 + b *
///   r.b_block`.
/// - `r.acc` is readable and writable for `r.blocks * ACC_BLOCK` bytes.
#[inline]
pub(crate) unsafe fn tile_run(op: TileOp, r: &TileRun) {
    debug_assert!(r.steps >= 2 && r.blocks >= 1);
    // SAFETY: the caller's contract, unchanged.
    unsafe {
        match (op, r.a_streams) {
            (TileOp::Bf16, true) => bf16_run_stream_a(r),
            (TileOp::Bf16, false) => bf16_run(r),
            (TileOp::Int8, true) => int8_run_stream_a(r),
            (TileOp::Int8, false) => int8_run(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amx::{ensure_tiles, tile_kernel};
    use crate::isa::{AmxBf16, AmxInt8};

    /// Small integers (exact in bf16 and in f32 sums) as bf16 or int8
    /// bytes, from a simple generator.
    fn fill(bytes: &mut [u8], op: TileOp, seed: u32) {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 7) as i32 - 3
        };
        match op {
            TileOp::Bf16 => {
                for pair in bytes.chunks_exact_mut(2) {
                    let bits = ((next() as f32).to_bits() >> 16) as u16;
                    pair.copy_from_slice(&bits.to_le_bytes());
                }
            }
            TileOp::Int8 => bytes.iter_mut().for_each(|b| *b = next() as i8 as u8),
        }
    }

    /// The run kernel against one two-row kernel call per block, bit for
    /// bit (integer data: every sum is exact), over block counts, K depths,
    /// strides between blocks, loaded or zeroed accumulators and both
    /// A load hints.
    #[test]
    fn run_matches_one_call_per_block() {
        let ops: Vec<TileOp> = [
            AmxBf16::try_new().map(|t| {
                ensure_tiles(t);
                TileOp::Bf16
            }),
            AmxInt8::try_new().map(|t| {
                ensure_tiles(t);
                TileOp::Int8
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if ops.is_empty() {
            eprintln!("skipped: AMX not usable here");
            return;
        }
        for op in ops {
            for blocks in 1..=5 {
                for steps in [2, 3, 8, 9] {
                    for (load, a_streams, shared_b) in [
                        (false, true, true),
                        (true, true, false),
                        (true, false, true),
                    ] {
                        // Gaps between groups, blocks and panels catch a
                        // wrong stride.
                        let a_group = steps * 1024 + 1024;
                        let a_block = 2 * a_group + 2048;
                        let panel = steps * 1024 + 1024;
                        let b_block = if shared_b { 0 } else { 2 * panel };
                        let mut a = vec![0u8; blocks * a_block + 64];
                        let mut b = vec![0u8; blocks * 2 * panel + 64];
                        let mut acc0 = vec![0u8; blocks * ACC_BLOCK + 64];
                        fill(&mut a, op, 1 + steps as u32);
                        fill(&mut b, op, 7 + blocks as u32);
                        // Start values: small integers as f32 or i32.
                        for (i, v) in acc0.chunks_exact_mut(4).enumerate() {
                            let x = (i % 11) as i32 - 5;
                            let bits = match op {
                                TileOp::Bf16 => (x as f32).to_bits(),
                                TileOp::Int8 => x as u32,
                            };
                            v.copy_from_slice(&bits.to_le_bytes());
                        }
                        let mut want = acc0.clone();
                        let mut got = acc0.clone();
                        let out = OutRows {
                            ptr: got.as_ptr(),
                            stride: 128,
                            rows: 32,
                        };
                        for blk in 0..blocks {
                            let b0 = b.as_ptr().wrapping_add(blk * b_block);
                            // SAFETY: tiles configured above for `op`; block
                            // `blk`'s A (two groups of `steps` KiB), both B
                            // panels and 4 KiB of accumulators are in the
                            // buffers; steps >= 1.
                            unsafe {
                                tile_kernel(
                                    op,
                                    true,
                                    a_streams,
                                    a.as_ptr().add(blk * a_block),
                                    a_group,
                                    b0,
                                    b0.add(panel),
                                    steps,
                                    want.as_mut_ptr().add(blk * ACC_BLOCK),
                                    128,
                                    load,
                                    a.as_ptr(),
                                    out,
                                )
                            };
                        }
                        let run = TileRun {
                            a: a.as_ptr(),
                            a_group,
                            a_block,
                            b0: b.as_ptr(),
                            b1: b.as_ptr().wrapping_add(panel),
                            b_block,
                            steps,
                            blocks,
                            acc: got.as_mut_ptr(),
                            load,
                            a_streams,
                            pf: b.as_ptr(),
                            pf_step: 64,
                            out,
                        };
                        // SAFETY: as above, for all blocks; steps >= 2.
                        unsafe { tile_run(op, &run) };
                        assert!(
                            got == want,
                            "{op:?} blocks {blocks} steps {steps} load {load} a_streams {a_streams} shared_b {shared_b}"
                        );
                    }
                }
            }
        }
    }
}
