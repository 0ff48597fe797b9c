//! The AMX microkernels: a 32 x 32 block of C (2 x 2 tiles of 16 x 16
//! 32-bit accumulators) or its 16 x 32 top half, over a whole K slice.
//!
//! Per K step (32 bf16 or 64 int8 of depth): load the A tile(s) of 16 rows
//! x 64 bytes (contiguous in the tile-blocked A), the two B tiles (16 rows x 64 bytes,
//! contiguous in the packed panels), and issue 4 (or 2) tile dot products.
//! 8 tiles: tmm0-3 accumulators, tmm4-5 A, tmm6-7 B. Each A tile feeds
//! two products and each B tile two (in the 2 x 2 form), so loads are half
//! the products, which keeps `TDP*` (16 cycles each on Sapphire Rapids)
//! the bottleneck rather than the loads when the operands are in L1.
//!
//! They mostly are not: a whole-K micro-panel of A or B (2048 bf16 deep:
//! 128 KiB) streams from L2, and a source tile can only be reloaded once
//! the last product reading it has issued, so an L2 tile load is barely
//! hidden (measured on operands in L1 / L2 / L3: about 72% / 55-60% /
//! 12% of the `TDPBF16PS` peak). The two-row form therefore also prefetches
//! into L2, 8 lines per step, what the driver says a later call will read
//! (the next B micro-panel), so that no call runs at L3 speed; and it
//! claims the C rows its result goes to (`prefetchw`, one row per step),
//! so that writing the tile back does not wait on 64 RFO misses (2048^3
//! bf16, thread CPU time: 1072-1104 -> 1112-1161 GFLOP/s).
//!
//! Each call fills and drains the tile pipeline (about 160 cycles);
//! [`super::tile_run()`] chains several blocks in one `asm!` block to hide
//! most of it (see there for what that bought, and did not, in the GEMM).

/// Where the caller will write the tile's result (C itself, not the
/// accumulators' staging): `rows` rows of at least 128 bytes, `stride`
/// bytes apart from `ptr`. The two-row kernel only prefetches these lines
/// (for writing), so a wrong address costs time, never memory safety.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OutRows {
    pub ptr: *const u8,
    pub stride: usize,
    pub rows: usize,
}

/// Which tile dot product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileOp {
    /// `TDPBF16PS`: bf16 pairs, f32 accumulation.
    Bf16,
    /// `TDPBSSD`: s8 quads, i32 accumulation.
    Int8,
}

/// Bytes of packed B per K step and 16-column panel (one B tile).
pub(crate) const B_TILE_BYTES: usize = 1024;
/// Bytes prefetched into L2 per K step (8 lines, spread between the tile
/// products): see [`tile_kernel`]'s `pf`.
pub(crate) const PF_STEP: usize = 512;

/// One K step of the two-row loop (after the first): the source tiles for
/// the next step are reloaded as soon as the last product reading them
/// has issued (tiles are not renamed), and 8 lines of `pf` go to L2.
macro_rules! two_row_step {
    ($op:literal, $aload:literal) => {
        concat!(
            "add {a}, {bstep}\n",
            "add {a2}, {bstep}\n",
            "add {b0}, {bstep}\n",
            "add {b1}, {bstep}\n",
            $op,
            " tmm0, tmm4, tmm6\n",
            "prefetcht1 [{pf}]\n",
            "prefetcht1 [{pf} + 64]\n",
            $op,
            " tmm1, tmm4, tmm7\n",
            $aload,
            " tmm4, [{a} + {s64}*1]\n",
            "prefetcht1 [{pf} + 128]\n",
            "prefetcht1 [{pf} + 192]\n",
            $op,
            " tmm2, tmm5, tmm6\n",
            "tileloadd tmm6, [{b0} + {s64}*1]\n",
            "prefetcht1 [{pf} + 256]\n",
            "prefetcht1 [{pf} + 320]\n",
            $op,
            " tmm3, tmm5, tmm7\n",
            "tileloadd tmm7, [{b1} + {s64}*1]\n",
            $aload,
            " tmm5, [{a2} + {s64}*1]\n",
            "prefetcht1 [{pf} + 384]\n",
            "prefetcht1 [{pf} + 448]\n",
            "add {pf}, {pfstep}\n",
        )
    };
}

macro_rules! tile_kernel_fn {
    ($name:ident, $op:literal, $aload:literal, two_rows) => {
        /// # Safety
        /// As [`tile_kernel`] with two row tiles.
        #[inline(never)]
        unsafe fn $name(a: *const u8, a_group: usize, b0: *const u8, b1: *const u8, steps: usize, c: *mut u8, cs: usize, load: bool, pf: *const u8, out: OutRows) {
            // The first `with_out` loop steps also claim one row (two lines)
            // of the output tile each, `prefetchw`, so that its write-back
            // after the call finds it in cache instead of waiting on an RFO.
            let with_out = out.rows.min(steps - 1);
            let rest = steps - 1 - with_out;
            // SAFETY: the caller's contract (see `tile_kernel`): tiles
            // configured, every load and store address in bounds, steps >= 1.
            // Prefetches never fault.
            unsafe {
                core::arch::asm!(
                    "test {load}, {load}",
                    "jz 3f",
                    "tileloadd tmm0, [{c} + {cs}*1]",
                    "tileloadd tmm1, [{c} + {cs}*1 + 64]",
                    "lea {load}, [{c} + {cs}*8]",
                    "lea {load}, [{load} + {cs}*8]",
                    "tileloadd tmm2, [{load} + {cs}*1]",
                    "tileloadd tmm3, [{load} + {cs}*1 + 64]",
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
                    "test {n1}, {n1}",
                    "jz 6f",
                    "5:",
                    two_row_step!($op, $aload),
                    "prefetchw [{oc}]",
                    "prefetchw [{oc} + 64]",
                    "add {oc}, {ocs}",
                    "dec {n1}",
                    "jnz 5b",
                    "6:",
                    "test {n2}, {n2}",
                    "jz 4f",
                    "7:",
                    two_row_step!($op, $aload),
                    "dec {n2}",
                    "jnz 7b",
                    "4:",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    concat!($op, " tmm1, tmm4, tmm7"),
                    concat!($op, " tmm2, tmm5, tmm6"),
                    concat!($op, " tmm3, tmm5, tmm7"),
                    "lea {pf}, [{c} + {cs}*8]",
                    "lea {pf}, [{pf} + {cs}*8]",
                    "tilestored [{c} + {cs}*1], tmm0",
                    "tilestored [{c} + {cs}*1 + 64], tmm1",
                    "tilestored [{pf} + {cs}*1], tmm2",
                    "tilestored [{pf} + {cs}*1 + 64], tmm3",
                    a = inout(reg) a => _,
                    a2 = inout(reg) a.wrapping_add(a_group) => _,
                    b0 = inout(reg) b0 => _,
                    b1 = inout(reg) b1 => _,
                    s64 = in(reg) 64usize,
                    bstep = const B_TILE_BYTES,
                    n1 = inout(reg) with_out => _,
                    n2 = inout(reg) rest => _,
                    c = in(reg) c,
                    cs = in(reg) cs,
                    load = inout(reg) usize::from(load) => _,
                    pf = inout(reg) pf => _,
                    pfstep = const PF_STEP,
                    oc = inout(reg) out.ptr => _,
                    ocs = in(reg) out.stride,
                    options(nostack)
                )
            }
        }
    };
    ($name:ident, $op:literal, one_row) => {
        /// # Safety
        /// As [`tile_kernel`] with one row tile.
        #[inline(never)]
        unsafe fn $name(a: *const u8, _a_group: usize, b0: *const u8, b1: *const u8, steps: usize, c: *mut u8, cs: usize, load: bool, _pf: *const u8, _out: OutRows) {
            // SAFETY: as in the two-row form, for 16 rows of A and C.
            unsafe {
                core::arch::asm!(
                    "test {load}, {load}",
                    "jz 3f",
                    "tileloadd tmm0, [{c} + {cs}*1]",
                    "tileloadd tmm1, [{c} + {cs}*1 + 64]",
                    "jmp 2f",
                    "3:",
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "2:",
                    "tileloadd tmm4, [{a} + {s64}*1]",
                    "tileloadd tmm6, [{b0} + {s64}*1]",
                    "tileloadd tmm7, [{b1} + {s64}*1]",
                    "dec {n}",
                    "jz 4f",
                    "5:",
                    "add {a}, {bstep}",
                    "add {b0}, {bstep}",
                    "add {b1}, {bstep}",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    "tileloadd tmm6, [{b0} + {s64}*1]",
                    concat!($op, " tmm1, tmm4, tmm7"),
                    "tileloadd tmm4, [{a} + {s64}*1]",
                    "tileloadd tmm7, [{b1} + {s64}*1]",
                    "dec {n}",
                    "jnz 5b",
                    "4:",
                    concat!($op, " tmm0, tmm4, tmm6"),
                    concat!($op, " tmm1, tmm4, tmm7"),
                    "tilestored [{c} + {cs}*1], tmm0",
                    "tilestored [{c} + {cs}*1 + 64], tmm1",
                    a = inout(reg) a => _,
                    b0 = inout(reg) b0 => _,
                    b1 = inout(reg) b1 => _,
                    s64 = in(reg) 64usize,
                    bstep = const B_TILE_BYTES,
                    n = inout(reg) steps => _,
                    c = in(reg) c,
                    cs = in(reg) cs,
                    load = in(reg) usize::from(load),
                    options(nostack)
                )
            }
        }
    };
}

tile_kernel_fn!(bf16_2x2, "tdpbf16ps", "tileloadd", two_rows);
tile_kernel_fn!(bf16_2x2_stream_a, "tdpbf16ps", "tileloaddt1", two_rows);
tile_kernel_fn!(bf16_1x2, "tdpbf16ps", one_row);
tile_kernel_fn!(int8_2x2, "tdpbssd", "tileloadd", two_rows);
tile_kernel_fn!(int8_2x2_stream_a, "tdpbssd", "tileloaddt1", two_rows);
tile_kernel_fn!(int8_1x2, "tdpbssd", one_row);

/// Accumulates `acc += A * [B0 B1]` for 32 (or, with `two_row_tiles ==
/// false`, 16) rows of A and 32 columns of B over `steps` K steps. The
/// 32-bit accumulators (f32 for bf16, i32 for int8) live at `acc`, 32 per
/// row, rows `acc_stride` bytes apart: loaded from there first when
/// `load`, else started at zero, and stored back at the end.
///
/// # Safety
/// - The tile configuration is loaded on this thread
///   ([`super::ensure_tiles`]) and the CPU has the instruction of `op`.
/// - A is tile-blocked: step `s`'s A tile is the 1 KiB at `a + s * 1024`
///   (16 rows x 64 bytes), and the second row tile's at `a + a_group + s *
///   1024`; all readable.
/// - `b0` and `b1` are each readable for `steps * 1024` bytes (packed panels).
/// - `acc` is readable and writable for `16` (or `32`) rows of 128 bytes
///   at stride `acc_stride`; `steps >= 1`.
///
/// `pf` is only prefetched by the two-row form (into L2, [`PF_STEP`]
/// bytes per K step from there on, `steps - 1` steps): any address will
/// do, since prefetches never fault; the driver points it at data a later
/// call will read. (The one-row form serves at most 16 rows, where each B
/// micro-panel streams past once and the hardware prefetchers do better
/// alone: measured 2-3% slower with it at M = 1 and 16.)
///
/// `a_streams` (two-row form): A is read once and B again by the next
/// calls, so A is loaded with `TILELOADDT1` (no reuse) and B stays in L1
/// (the driver's strip order). With whole-K calls, where nothing stays in
/// L1, the hint measured 2% slower.
#[inline]
pub(crate) unsafe fn tile_kernel(
    op: TileOp,
    two_row_tiles: bool,
    a_streams: bool,
    a: *const u8,
    a_group: usize,
    b0: *const u8,
    b1: *const u8,
    steps: usize,
    acc: *mut u8,
    acc_stride: usize,
    load: bool,
    pf: *const u8,
    out: OutRows,
) {
    debug_assert!(steps >= 1);
    // SAFETY: the caller's contract, unchanged.
    unsafe {
        match (op, two_row_tiles) {
            (TileOp::Bf16, true) if a_streams => {
                bf16_2x2_stream_a(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
            (TileOp::Int8, true) if a_streams => {
                int8_2x2_stream_a(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
            (TileOp::Bf16, true) => {
                bf16_2x2(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
            (TileOp::Bf16, false) => {
                bf16_1x2(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
            (TileOp::Int8, true) => {
                int8_2x2(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
            (TileOp::Int8, false) => {
                int8_1x2(a, a_group, b0, b1, steps, acc, acc_stride, load, pf, out)
            }
        }
    }
}
