//! The low-precision GEMM driver: validation, A packing (conversion to
//! bf16 or per-row int8), the blocked loops, and the write-out that turns
//! a microkernel's fp32 tile into C through the shared epilogue.
//!
//! Why not the fp32 driver: its packed panels are f32 `[p][j]` and its
//! microkernels keep C in vector registers; here B is grouped along K
//! (pairs or quads, the AMX tile layout), the A block is a row-major byte
//! matrix read by tile loads, and C leaves through a 32 x 32 staging
//! buffer (AMX accumulators can only be stored to memory). The loops and
//! the epilogue are the same shape.

use std::sync::OnceLock;

use super::packed::{Layout, PackedLowp, LOWP_ALIGN};
use super::strips::{drive_strips, strip_kc, RowBlock, Strip, STRIP_ROWS};
use super::{Elem, LowpPath};
use crate::cpu::cache_sizes;
use crate::gemm::{Epilogue, GemmError, MatMut, MatRef, RawEpilogue, SingleThread, Team};
use crate::isa::{AmxBf16, AmxInt8, Avx2, Avx512, Avx512Bf16, Avx512Vnni, Scalar};
use crate::simd::Simd;

/// Width of every low-precision microkernel tile: two 16-column panels.
pub(crate) const NR: usize = 32;
/// Rows of A are padded to this (one 2 x 2 AMX block).
const ROW_PAD: usize = 32;
/// Largest K for int8: `K * 255 * 127` must fit an i32 (u8 x s8 path).
pub const INT8_MAX_K: usize = 1 << 16;
/// Column block (loop 5); a multiple of `NR`.
const NC: usize = 2048;
/// Smallest row block (loop 3).
const MC_MIN: usize = 128;

/// One microkernel call's operands.
///
/// A is tile-blocked (see [`a_offset`]): row `r` of the tile, K bytes
/// `x..x + 64` (one chunk) start at `a + r * 64 + (x / 64) * 1024` for
/// `r < 16`, and rows 16..32 at `a + a_group` onwards (AMX only: the other
/// kernels' tiles never cross a 16-row group).
///
/// Invariants: `1 <= rows <= MR`; A readable so for `kc` elements of every
/// row `< rows` (for AMX, 16 or 32 rows, padding included); `b0`, `b1`
/// each readable for `kc * 16` elements; `col_sums` (int8) readable for 32
/// entries; `kc % k_step == 0`, `kc > 0`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KTile {
    pub rows: usize,
    pub a: *const u8,
    pub a_group: usize,
    pub b0: *const u8,
    pub b1: *const u8,
    pub kc: usize,
    /// The slice is all of K (so `col_sums` are the slice's code sums).
    pub full_k: bool,
    pub col_sums: *const i32,
    /// Data a later call reads, prefetched into L2 while this one runs
    /// (AMX kernels; a hint, any address is allowed).
    pub pf: *const u8,
    /// Bytes `pf` moves per K step (the AMX run kernel; the per-tile
    /// kernel's step is fixed).
    pub pf_step: usize,
    /// Where the tile's result goes in C: `out_rows` rows `out_stride`
    /// bytes apart, claimed for writing while the products run (AMX
    /// kernels; a hint like `pf`).
    pub out: *const u8,
    pub out_stride: usize,
    pub out_rows: usize,
    /// A is read once per call and B again by the next calls (the strip
    /// order): AMX loads A with the no-reuse hint, keeping B in L1.
    pub a_streams: bool,
}

impl KTile {
    /// What every row tile over one K slice of one B micro-panel shares:
    /// the slice (`b0`: its first panel, `kc` deep, columns from `j`) and
    /// C's stride. The caller sets the rest (rows, A, hints, where C goes).
    pub(super) fn for_slice(call: &Call, b0: *const u8, kc: usize, j: usize) -> Self {
        Self {
            rows: 0,
            a: core::ptr::null(),
            a_group: call.a_group,
            b0,
            b1: b0.wrapping_add(call.layout.panel_bytes()),
            kc,
            full_k: kc == call.layout.kp,
            col_sums: call.col_sums.wrapping_add(j),
            pf: core::ptr::null(),
            pf_step: 0,
            out: core::ptr::null(),
            out_stride: call.ldc * 4,
            out_rows: 0,
            a_streams: false,
        }
    }
}

/// Bytes of one A chunk: 16 rows x 64 bytes, one AMX tile.
pub(crate) const A_CHUNK: usize = 1024;

/// Where row `r`, K byte `x` of the packed A lives: 16-row groups of
/// `group` bytes, each a run of 1 KiB chunks (16 rows x 64 K bytes), so
/// every A tile is one contiguous kilobyte, like the B tiles.
#[inline(always)]
pub(super) fn a_offset(r: usize, x: usize, group: usize) -> usize {
    (r / 16) * group + (x / 64) * A_CHUNK + (r % 16) * 64 + x % 64
}

/// A low-precision microkernel: accumulates a `rows x 32` tile of `A * B`
/// as raw 32-bit sums (f32 for bf16; i32 for int8, scales not applied).
pub(crate) trait LowpKernel: Copy {
    const MR: usize;
    const ELEM: Elem;
    /// A is stored as `q + 128` (u8) instead of `q` (s8).
    const A_U8: bool;
    /// K block (elements) for blocks with many rows.
    const KC: usize;
    /// K block of the strip order ([`drive_strips`]), 0 for none: for
    /// kernels whose accumulators can only live in memory between calls
    /// anyway (AMX), and that stream A past a B slice kept in L1.
    const STRIP_KC: usize = 0;
    type S: Simd;
    fn simd(self) -> Self::S;
    /// Per-thread setup before the first tile (AMX: tile configuration).
    fn prepare(self) {}
    /// `acc = (load ? acc : 0) + A * B` over the tile's K slice.
    ///
    /// # Safety
    /// `t` satisfies the [`KTile`] invariants for this kernel; `acc` is
    /// readable and writable for `MR` rows (AMX: 16 rows when `rows <= 16`)
    /// of 32 values, `acc_stride` bytes apart.
    unsafe fn run(self, t: &KTile, acc: *mut u8, acc_stride: usize, load: bool);
    /// The strip order's K slice for a whole row block at once: `t.rows`
    /// rows in `t.rows.div_ceil(32)` row tiles, tile `b`'s A at `t.a + b *
    /// a_tile`, its accumulators the `b`-th 32 x 32 block (4 KiB) at `acc`;
    /// `out` / `out_rows` claim C rows as the run goes. By default one
    /// [`run`](LowpKernel::run) call per row tile (AMX: one `asm!` block
    /// for them all, [`crate::amx::tile_run`]).
    ///
    /// # Safety
    /// Each row tile's [`KTile`] (rows `min(32, t.rows - 32 b)`, A at its
    /// offset) satisfies the invariants; `acc` holds `t.rows.div_ceil(32)`
    /// blocks of 32 x 32 values with 128-byte rows.
    unsafe fn run_strip(self, t: &KTile, a_tile: usize, acc: *mut u8, load: bool) {
        for b in 0..t.rows.div_ceil(32) {
            let tile = KTile {
                rows: (t.rows - 32 * b).min(32),
                a: t.a.wrapping_add(b * a_tile),
                out_rows: 0,
                ..*t
            };
            // SAFETY: the caller's contract, per row tile.
            unsafe { self.run(&tile, acc.add(b * 32 * 32 * 4), 128, load) };
        }
    }
}

/// A validated call in raw form.
///
/// Invariants: A readable over `m x k` through `(a, rs, cs)`; C readable
/// and writable over `m x n` with stride `ldc`; the packed A buffer holds
/// `rows_pad(m) / 16` groups of `a_group` bytes and the row scales `rows_pad(m)`
/// floats; B's panels, scales and sums match `layout`.
#[derive(Clone, Copy)]
pub(super) struct Call {
    pub(super) layout: Layout,
    pub(super) m: usize,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) a: *const f32,
    pub(super) rs: usize,
    pub(super) cs: usize,
    pub(super) b: *const u8,
    pub(super) col_scales: *const f32,
    pub(super) col_sums: *const i32,
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) epilogue: Option<RawEpilogue>,
    pub(super) apack: *mut u8,
    /// Bytes per 16-row group of packed A (`16 * kp * size`).
    pub(super) a_group: usize,
    pub(super) row_scales: *mut f32,
    pub(super) a_u8: bool,
    /// Each thread converts its A row block by row block, just before the
    /// block is used, into the packed rows at the start of its own share
    /// (reused for every block, so they stay in L2); otherwise the caller
    /// packed all of A up front (threads that split the columns share it).
    pub(super) pack_blocks: bool,
}

// SAFETY: threads write disjoint rows of the packed A and disjoint C
// blocks (see `gemm_parallel`); everything else is read-only.
unsafe impl Send for Call {}
// SAFETY: as above.
unsafe impl Sync for Call {}

fn rows_pad(m: usize) -> usize {
    m.next_multiple_of(ROW_PAD)
}

/// Packed rows any kernel reads: with at most 16 rows every tile is a
/// one-row-tile AMX call (16 rows) or reads only its own rows, so the
/// second 16 rows of padding are never zeroed (half the conversion's
/// stores at M = 1).
fn rows_read(m: usize) -> usize {
    if m <= 16 {
        16
    } else {
        rows_pad(m)
    }
}

/// Bytes per 16-row group of packed A.
fn a_group_bytes(elem: Elem, kp: usize) -> usize {
    16 * kp * elem.bytes()
}

fn row_scale_bytes(m: usize) -> usize {
    (rows_pad(m) * 4).next_multiple_of(LOWP_ALIGN)
}

/// Bytes of workspace one [`gemm`] or [`gemm_parallel`] call of this
/// shape needs (the converted A and its row scales, with alignment slack).
/// It grows with `m`, so it serves every call of up to `m` rows.
pub fn scratch_bytes(elem: Elem, m: usize, k: usize) -> usize {
    let kp = k.next_multiple_of(elem.k_step());
    row_scale_bytes(m) + rows_pad(m) / 16 * a_group_bytes(elem, kp) + LOWP_ALIGN
}

/// `C = epilogue(alpha * A * B + beta * C)` on one thread, B pre-packed
/// bf16 or int8. `beta == 0` never reads C. `scratch` must hold
/// [`scratch_bytes`]`(b.elem(), m, k)` bytes; nothing is allocated.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    path: LowpPath,
    alpha: f32,
    a: MatRef<'_>,
    b: &PackedLowp<'_>,
    beta: f32,
    c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    scratch: &mut [u8],
) -> Result<(), GemmError> {
    gemm_parallel(&SingleThread, path, alpha, a, b, beta, c, epilogue, scratch)
}

/// [`gemm`] split over `team`'s threads (same scratch size). Threads get
/// disjoint blocks of C: whole 32-row blocks when M is large, else
/// 32-column blocks (the small-M inference case, where every thread then
/// reads its own share of the weights).
#[allow(clippy::too_many_arguments)]
pub fn gemm_parallel(
    team: &dyn Team,
    path: LowpPath,
    alpha: f32,
    a: MatRef<'_>,
    b: &PackedLowp<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    scratch: &mut [u8],
) -> Result<(), GemmError> {
    let layout = *b.layout();
    let elem = layout.elem;
    path.require(elem)?;
    let (m, k, n) = (a.rows(), a.cols(), layout.n);
    if layout.k != k || c.rows() != m || c.cols() != n {
        return Err(GemmError::Shape(format!(
            "A is {m} x {k}, B is {} x {n}, C is {} x {}",
            layout.k,
            c.rows(),
            c.cols()
        )));
    }
    if elem == Elem::Int8 && k > INT8_MAX_K {
        return Err(GemmError::Shape(format!(
            "int8 GEMM needs K <= {INT8_MAX_K} (i32 sums), got {k}"
        )));
    }
    epilogue.check(m, n)?;
    let needed = scratch_bytes(elem, m, k);
    let offset = scratch.as_ptr().align_offset(LOWP_ALIGN);
    if offset.saturating_add(needed - LOWP_ALIGN) > scratch.len() {
        return Err(GemmError::BufferTooSmall {
            what: "low-precision GEMM scratch",
            needed,
            got: scratch.len(),
        });
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let base = scratch[offset..].as_mut_ptr();
    let (ap, rs, cs) = a.raw();
    let (cp, ldc) = c.raw_mut();
    let call = Call {
        layout,
        m,
        alpha,
        beta,
        a: ap,
        rs,
        cs,
        b: b.panels_ptr(),
        col_scales: b.col_scales_ptr(),
        col_sums: b.col_sums_ptr(),
        c: cp,
        ldc,
        epilogue: (!epilogue.is_identity()).then(|| epilogue.raw()),
        row_scales: base.cast(),
        apack: base.wrapping_add(row_scale_bytes(m)),
        a_group: a_group_bytes(elem, layout.kp),
        a_u8: elem == Elem::Int8 && path == LowpPath::Avx512,
        pack_blocks: false,
    };
    let grid = Grid::choose(m, n, team.threads().max(1));
    let call = Call {
        pack_blocks: grid.tn == 1,
        ..call
    };
    if !call.pack_blocks {
        // SAFETY: `call` was validated above; no thread runs yet.
        unsafe { pack_rows(&call, 0, rows_read(m), 0) };
    }
    let job = |t: usize| {
        if t >= grid.tm * grid.tn {
            return;
        }
        let blk = grid.block(t, m, n);
        if blk.rows == 0 || blk.cols == 0 {
            return;
        }
        // SAFETY: the block lies inside C and is this thread's alone; with
        // `pack_blocks` (one thread per row block) the packed rows of its
        // share are its own, else the caller packed A before `team.run`.
        unsafe { dispatch(path, &call, blk) };
        // Non-temporal stores of C (see `drive_strips`) are ordered before
        // the team's completion signal.
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SFENCE has no preconditions (SSE2 is baseline on x86_64).
        unsafe {
            core::arch::x86_64::_mm_sfence()
        };
    };
    team.run(&job);
    Ok(())
}

/// A thread's block of C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) i0: usize,
    pub(super) rows: usize,
    pub(super) j0: usize,
    pub(super) cols: usize,
}

/// `tm x tn` blocks, one per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    tm: usize,
    tn: usize,
}

impl Grid {
    fn choose(m: usize, n: usize, threads: usize) -> Self {
        let (row_units, col_units) = (m.div_ceil(ROW_PAD), n.div_ceil(NR));
        if threads <= 1 {
            Grid { tm: 1, tn: 1 }
        } else if row_units >= 2 * threads {
            Grid { tm: threads, tn: 1 }
        } else {
            Grid {
                tm: 1,
                tn: threads.min(col_units),
            }
        }
    }

    fn block(self, t: usize, m: usize, n: usize) -> Block {
        let split = |len: usize, unit: usize, parts: usize, idx: usize| {
            let units = len.div_ceil(unit);
            let lo = (idx * units / parts * unit).min(len);
            let hi = ((idx + 1) * units / parts * unit).min(len);
            (lo, hi - lo)
        };
        let (i0, rows) = split(m, ROW_PAD, self.tm, t / self.tn);
        let (j0, cols) = split(n, NR, self.tn, t % self.tn);
        Block { i0, rows, j0, cols }
    }
}

/// Converts rows `r0..r1` of A into the packed buffer at rows `at..at +
/// r1 - r0` (rows `>= m` are zeroed) and records their scales (int8, at
/// the rows' own index).
///
/// # Safety
/// `call` satisfies its invariants, `r1 <= rows_pad(m)`, `at + r1 - r0 <=
/// rows_pad(m)`, `at % 16 == r0 % 16`, and no other thread touches these
/// packed rows or scales meanwhile.
unsafe fn pack_rows(call: &Call, r0: usize, r1: usize, at: usize) {
    let avx512 = Avx512::try_new();
    let bf16_isa = Avx512Bf16::try_new();
    let (k, kp, elem) = (call.layout.k, call.layout.kp, call.layout.elem);
    let step = elem.k_step();
    for r in r0..r1 {
        let to = at + (r - r0);
        // SAFETY: chunk `t` of packed row `to < rows_pad(m)` is 64 bytes
        // inside the packed A (invariants), exclusively ours.
        let chunk = |t: usize| unsafe {
            core::slice::from_raw_parts_mut(call.apack.add(a_offset(to, t * 64, call.a_group)), 64)
        };
        // SAFETY: as above, for the row's scale.
        let scale = unsafe { &mut *call.row_scales.add(r) };
        *scale = 0.0;
        if r >= call.m {
            (0..kp / step).for_each(|t| chunk(t).fill(0));
            continue;
        }
        let src = call.a.wrapping_add(r * call.rs);
        if let (1, Some(t)) = (call.cs, avx512) {
            let base = call.apack.wrapping_add(a_offset(to, 0, call.a_group));
            // SAFETY: row `r < m` of A is readable for `k` contiguous
            // floats; its `kp / step` chunks are 64 bytes each, A_CHUNK apart,
            // inside the packed A; `k <= kp`.
            unsafe {
                match elem {
                    Elem::Bf16 => match bf16_isa {
                        Some(b) => {
                            crate::bf16::convert_to_chunks_bf16(b, src, k, kp / step, base, A_CHUNK)
                        }
                        None => crate::bf16::convert_to_chunks(t, src, k, kp / step, base, A_CHUNK),
                    },
                    Elem::Int8 => {
                        let row = core::slice::from_raw_parts(src, k);
                        *scale = crate::quant::row_scale(avx512, row);
                        crate::quant::quantize_to_chunks(
                            t,
                            src,
                            k,
                            kp / step,
                            base,
                            A_CHUNK,
                            *scale,
                            call.a_u8,
                        );
                    }
                }
            }
        } else if call.cs == 1 {
            // SAFETY: row `r < m` of A is readable for `k` contiguous floats.
            let row = unsafe { core::slice::from_raw_parts(src, k) };
            if elem == Elem::Int8 {
                *scale = crate::quant::row_scale(avx512, row);
            }
            for t in 0..kp / step {
                let dst = chunk(t);
                let part = &row[(t * step).min(k)..((t + 1) * step).min(k)];
                dst[part.len() * elem.bytes()..].fill(0);
                match elem {
                    Elem::Bf16 => {
                        // SAFETY: 64 bytes at an even address hold 32 u16.
                        let out = unsafe {
                            core::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<u16>(), 32)
                        };
                        crate::bf16::convert_slice(avx512, part, out);
                    }
                    Elem::Int8 => crate::quant::quantize_with(avx512, part, dst, *scale, call.a_u8),
                }
            }
        } else {
            // SAFETY: `(r, p)` is inside A for `p < k`.
            let at = |p: usize| unsafe { *src.add(p * call.cs) };
            let s = match elem {
                Elem::Bf16 => 0.0,
                Elem::Int8 => crate::quant::scale_for(crate::quant::max_abs((0..k).map(at))),
            };
            *scale = s;
            let flip = if call.a_u8 { 0x80 } else { 0 };
            for t in 0..kp / step {
                let dst = chunk(t);
                dst.fill(0);
                for p in t * step..((t + 1) * step).min(k) {
                    let e = p - t * step;
                    match elem {
                        Elem::Bf16 => dst[2 * e..2 * e + 2]
                            .copy_from_slice(&crate::bf16::f32_to_bf16(at(p)).to_le_bytes()),
                        Elem::Int8 => dst[e] = crate::quant::quantize(at(p), 1.0 / s) as u8 ^ flip,
                    }
                }
            }
        }
    }
}

/// Runs `blk` on `path`'s kernel for the call's element type.
///
/// # Safety
/// As [`drive`]; the path was checked available by the caller.
unsafe fn dispatch(path: LowpPath, call: &Call, blk: Block) {
    use super::kernel_portable::{PortableBf16, PortableInt8};
    let elem = call.layout.elem;
    // SAFETY: each token comes from `try_new`, proving its features; the
    // rest is the caller's contract.
    unsafe {
        match (path, elem) {
            (LowpPath::Amx, Elem::Bf16) => {
                if let Some(t) = AmxBf16::try_new() {
                    drive_avx512(t, call, blk)
                }
            }
            (LowpPath::Amx, Elem::Int8) => {
                if let Some(t) = AmxInt8::try_new() {
                    drive_avx512(t, call, blk)
                }
            }
            (LowpPath::Avx512, Elem::Bf16) => {
                if let Some(t) = Avx512Bf16::try_new() {
                    drive_avx512_bf16(t, call, blk)
                }
            }
            (LowpPath::Avx512, Elem::Int8) => {
                if let Some(t) = Avx512Vnni::try_new() {
                    drive_avx512_vnni(t, call, blk)
                }
            }
            (LowpPath::Fallback, _) => {
                if let Some(s) = Avx512::try_new() {
                    match elem {
                        Elem::Bf16 => drive_avx512(PortableBf16(s), call, blk),
                        Elem::Int8 => drive_avx512(PortableInt8(s), call, blk),
                    }
                } else if let Some(s) = Avx2::try_new() {
                    match elem {
                        Elem::Bf16 => drive_avx2(PortableBf16(s), call, blk),
                        Elem::Int8 => drive_avx2(PortableInt8(s), call, blk),
                    }
                } else {
                    match elem {
                        Elem::Bf16 => drive(PortableBf16(Scalar::new()), call, blk),
                        Elem::Int8 => drive(PortableInt8(Scalar::new()), call, blk),
                    }
                }
            }
        }
    }
}

/// # Safety
/// AVX-512 F/BW/VL/DQ, AVX2 and FMA available; as [`drive`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn drive_avx512<K: LowpKernel>(k: K, call: &Call, blk: Block) {
    // SAFETY: the caller's contract.
    unsafe { drive(k, call, blk) }
}

/// # Safety
/// As [`drive_avx512`], plus AVX512_BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,avx512bf16")]
unsafe fn drive_avx512_bf16<K: LowpKernel>(k: K, call: &Call, blk: Block) {
    // SAFETY: the caller's contract.
    unsafe { drive(k, call, blk) }
}

/// # Safety
/// As [`drive_avx512`], plus AVX512_VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,avx512vnni")]
unsafe fn drive_avx512_vnni<K: LowpKernel>(k: K, call: &Call, blk: Block) {
    // SAFETY: the caller's contract.
    unsafe { drive(k, call, blk) }
}

/// # Safety
/// AVX2 and FMA available; as [`drive`].
#[target_feature(enable = "avx2,fma")]
unsafe fn drive_avx2<K: LowpKernel>(k: K, call: &Call, blk: Block) {
    // SAFETY: the caller's contract.
    unsafe { drive(k, call, blk) }
}

/// The K block: all of K when the block has few rows (nothing to reuse
/// across row tiles; the matrix-vector path streams each panel once),
/// else the kernel's `KC` (or `PINNED_LOWP_KC`, a tuning knob).
fn k_block<K: LowpKernel>(rows: usize, kp: usize) -> usize {
    static OVERRIDE: OnceLock<Option<usize>> = OnceLock::new();
    let forced = *OVERRIDE.get_or_init(|| {
        std::env::var("PINNED_LOWP_KC")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let step = K::ELEM.k_step();
    let kc = if rows <= 64 {
        kp
    } else {
        forced.unwrap_or(K::KC)
    };
    kc.next_multiple_of(step).clamp(step, kp.max(step))
}

/// `(MC, NC)` for a K block of `kc` elements: C block (`MC x NC x 4`)
/// about a quarter of L2, the A slice (`MC x KC`) and B slice (`KC x NC`)
/// together under half of it. With a single K block no partial sums come
/// back to C, so nothing asks the C block to stay in L2: NC is then the
/// full [`NC`], and each A row block is fetched from L3 once per 2048
/// columns instead of once per ~350 (measured at 2048^3 bf16, by thread
/// CPU time, three alternating runs: 1081-1105 GFLOP/s at NC = 352,
/// 1128-1151 at 2048). (When each thread converts its own A block by
/// block, [`drive`] takes all columns in one block instead.)
/// `PINNED_LOWP_MC` / `PINNED_LOWP_NC` override.
fn blocks<K: LowpKernel>(kc: usize, one_k_block: bool) -> (usize, usize) {
    static OVERRIDE: OnceLock<(Option<usize>, Option<usize>)> = OnceLock::new();
    let (fm, fn_) = *OVERRIDE.get_or_init(|| {
        let get = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
        (get("PINNED_LOWP_MC"), get("PINNED_LOWP_NC"))
    });
    let l2 = cache_sizes().l2.unwrap_or(1 << 20);
    let esize = K::ELEM.bytes();
    // NC first: a square-ish C block of l2/4 bytes, when C is revisited.
    let square = ((l2 / 16) as f64).sqrt() as usize;
    let nc = fn_
        .unwrap_or(if one_k_block { NC } else { NC.min(square) })
        .max(NR)
        / NR
        * NR;
    let by_c = l2 / 4 / (nc * 4);
    let by_a = (l2 / 2).saturating_sub(kc * nc * esize) / (kc * esize).max(1);
    // At least 128 rows: each KC x 32 B micro-panel is then reused by four
    // or more row tiles even when a deep K block leaves little room for A.
    let mc = fm.unwrap_or(by_c.min(by_a).max(MC_MIN)).max(K::MR) / K::MR * K::MR;
    (mc, nc)
}

/// The blocked loops over one thread's block of C.
///
/// # Safety
/// `call` satisfies its invariants, `blk` lies inside C and no other
/// thread writes it, its packed A rows are written, and `k` runs here.
#[inline(always)]
unsafe fn drive<K: LowpKernel>(k: K, call: &Call, blk: Block) {
    debug_assert_eq!(K::A_U8, call.a_u8, "A packed for another kernel");
    k.prepare();
    let s = k.simd();
    let l = &call.layout;
    let esize = l.elem.bytes();
    let kc_max = k_block::<K>(blk.rows, l.kp);
    let k_blocks = l.kp.div_ceil(kc_max).max(1);
    let strip_kc = strip_kc::<K>(blk.rows, l.kp);
    // MC: the A block (MC x KC bytes) takes half of L2.
    let (mc, nc) = blocks::<K>(kc_max, k_blocks == 1 || strip_kc > 0);
    // Converted block by block, A is packed again for every column block:
    // with one K block nothing keeps C's columns blocked, so there is one.
    // Row blocks stay whole 32-row units (the packed layout's 16-row
    // groups line up wherever a block lands).
    let (mc, nc) = if call.pack_blocks {
        let nc = if k_blocks == 1 || strip_kc > 0 {
            blk.cols.next_multiple_of(NR)
        } else {
            nc
        };
        ((mc / ROW_PAD).max(1) * ROW_PAD, nc)
    } else {
        (mc, nc)
    };
    // The strip order keeps a row block's partial sums in `strip`.
    let mc = if strip_kc > 0 { mc.min(STRIP_ROWS) } else { mc };
    let mut strip = Strip([0.0; STRIP_ROWS * 32]);
    let mut buf = Staging([0.0; 32 * 32]);
    let stage = buf.0.as_mut_ptr();
    // With several K blocks and beta = 0, C itself holds the raw partial
    // sums between blocks (full tiles: the kernel loads and stores C
    // directly), and only the last block scales, converts and runs the
    // epilogue. Otherwise every block goes through the staging tile.
    let raw_in_c = k_blocks > 1 && call.beta == 0.0;
    let c_aligned = (call.c as usize).is_multiple_of(64)
        && (call.ldc * 4).is_multiple_of(64)
        && blk.j0.is_multiple_of(16);

    // Loop 5 (jc, step NC): a column block of B and C.
    for jc in (0..blk.cols).step_by(nc) {
        let ncb = nc.min(blk.cols - jc);
        // Loop 3 (ic, step MC), outside the K loop: the MC x NC block of C
        // stays in L2 while the K slices accumulate into it.
        for ic in (0..blk.rows).step_by(mc) {
            let mcb = mc.min(blk.rows - ic);
            // Packed row of the block's first row.
            let a_row0 = if call.pack_blocks {
                // The padding rows past M belong to the last block.
                let r0 = blk.i0 + ic;
                let r1 = (r0 + mcb).next_multiple_of(ROW_PAD).min(rows_read(call.m));
                // SAFETY: rows r0..r1 are this thread's (whole 32-row units,
                // the padding with the last block), and so are the packed
                // rows blk.i0.. they land in (`r1 - r0 <= mc` of its share,
                // `blk.i0` and `r0` multiples of 32).
                unsafe { pack_rows(call, r0, r1, blk.i0) };
                blk.i0
            } else {
                blk.i0 + ic
            };
            if strip_kc > 0 {
                let next_block = ic + mc < blk.rows;
                let rows = RowBlock {
                    ic,
                    mcb,
                    a_row0,
                    next_block,
                };
                // SAFETY: as for the loops below: the block's packed rows
                // are written, `strip_kc` is a positive multiple of the K
                // step, `mcb <= mc <= STRIP_ROWS`.
                unsafe { drive_strips(k, call, blk, rows, jc, ncb, strip_kc, &mut strip) };
                continue;
            }
            // Loop 4 (pc, step KC): the MC x KC slice of A stays in L2 across
            // the column block. With AMX's deep KC (4 KiB of K per row) a
            // KC x 32 B micro-panel is 128 KiB: it streams from L2, not L1
            // (the 2 x 2 tile kernel then runs at about 55% of the
            // instruction peak per call, against 72% on L1-resident data).
            for kb in 0..k_blocks {
                let pc = kb * kc_max;
                let kcb = kc_max.min(l.kp - pc.min(l.kp));
                let (first, last) = (kb == 0, kb + 1 == k_blocks);
                // Loop 2 (jr, step 32): one B micro-panel (two 16-column
                // panels), from L3 for its first row tile (prefetched, see
                // below), from L2 for the others.
                for jr in (jc..jc + ncb).step_by(NR) {
                    let j = blk.j0 + jr;
                    let cols = NR.min(blk.cols - jr);
                    let b0 = call
                        .b
                        .wrapping_add((j / 16) * l.panel_bytes() + pc * 16 * esize);
                    // The next B micro-panel (this block's next one, else the
                    // first one again for the next row block) is prefetched
                    // into L2 by the AMX kernel while this one runs, a share
                    // per row tile: tile loads that miss L2 stall the tile
                    // products. Measured at 2048^3 bf16 (TSC per call, best
                    // case): a micro-panel's first row tile took 8.1k cycles
                    // against 5.5k for the others, 6.1k with the prefetch;
                    // 2-5% overall at 2048^3 and 64 x 4096 x 4096, bf16 and
                    // int8 (same-process A/B, `examples/lowp_loop.rs`).
                    let next_j = if jr + NR < jc + ncb {
                        Some(j + NR)
                    } else if ic + mc < blk.rows {
                        Some(blk.j0 + jc)
                    } else {
                        None
                    };
                    let next_b = next_j.map(|nj| {
                        call.b
                            .wrapping_add((nj / 16) * l.panel_bytes() + pc * 16 * esize)
                    });
                    let slice = kcb * 16 * esize;
                    let pf_per_call = kcb / l.elem.k_step() * crate::amx::PF_STEP;
                    // Loop 1 (ir, step MR): one A micro-panel streamed from L2.
                    for (t, ir) in (ic..ic + mcb).step_by(K::MR).enumerate() {
                        let i = blk.i0 + ir;
                        let rows = K::MR.min(blk.rows - ir);
                        let c = call.c.wrapping_add(i * call.ldc + j);
                        let a = call.apack.wrapping_add(a_offset(
                            a_row0 + ir - ic,
                            pc * esize,
                            call.a_group,
                        ));
                        // Call `t` of this micro-panel's row tiles prefetches
                        // its share of the next micro-panel's two slices.
                        let off = t * pf_per_call;
                        let pf = match next_b {
                            Some(nb) if off < slice => nb.wrapping_add(off),
                            Some(nb) if off < 2 * slice => {
                                nb.wrapping_add(l.panel_bytes() + off - slice)
                            }
                            _ => a,
                        };
                        let tile = KTile {
                            rows,
                            a,
                            pf,
                            out: c.cast(),
                            out_rows: rows,
                            ..KTile::for_slice(call, b0, kcb, j)
                        };
                        let load = raw_in_c && !first;
                        if raw_in_c && !last {
                            // Tile loads and stores straddling cache lines are
                            // about 3x slower: only aligned C goes direct.
                            let direct = rows == K::MR && cols == NR && c_aligned;
                            if direct {
                                // SAFETY: the full MR x 32 tile lies inside C.
                                unsafe { k.run(&tile, c.cast(), call.ldc * 4, load) };
                            } else {
                                // SAFETY: staging holds 32 x 32; the copies touch
                                // only the tile's rows x cols inside C.
                                unsafe {
                                    if load {
                                        copy_tile(c, call.ldc, stage, 32, rows, cols);
                                    }
                                    k.run(&tile, stage.cast(), 128, load);
                                    copy_tile(stage, 32, c, call.ldc, rows, cols);
                                }
                            }
                            continue;
                        }
                        if kcb == 0 {
                            buf.0[..rows * 32].fill(0.0);
                        } else {
                            // SAFETY: the tile's rows, K slice and panels lie in the
                            // packed A (rows padded to 32) and B (panels even in
                            // number, K padded): KTile invariants. When loading, the
                            // partial sums come from C (direct) or its copy.
                            unsafe {
                                if load {
                                    copy_tile(c, call.ldc, stage, 32, rows, cols);
                                }
                                k.run(&tile, stage.cast(), 128, load);
                            }
                        }
                        if K::ELEM == Elem::Int8 {
                            for x in &mut buf.0[..rows * 32] {
                                *x = x.to_bits() as i32 as f32;
                            }
                        }
                        let out = Out {
                            alpha: call.alpha,
                            beta: if first { call.beta } else { 1.0 },
                            load_c: !raw_in_c && (!first || call.beta != 0.0),
                            epilogue: if last {
                                call.epilogue.map(|e| e.offset(i, j))
                            } else {
                                None
                            },
                            row_scale: if l.elem == Elem::Int8 {
                                call.row_scales.wrapping_add(i)
                            } else {
                                core::ptr::null_mut()
                            },
                            col_scale: call.col_scales.wrapping_add(j),
                            stream: false,
                        };
                        // SAFETY: (i.., j..) + rows x cols lies inside C (the block
                        // does), row and column scales cover it (int8).
                        unsafe { write_tile(s, stage, rows, cols, c, call.ldc, &out) };
                    }
                }
            }
        }
    }
}

/// Copies a `rows x cols` block of 32-bit values between row-major buffers
/// (strides in elements).
///
/// # Safety
/// Both blocks lie inside their buffers and do not overlap.
#[inline(always)]
unsafe fn copy_tile(
    src: *const f32,
    lds: usize,
    dst: *mut f32,
    ldd: usize,
    rows: usize,
    cols: usize,
) {
    for r in 0..rows {
        // SAFETY: the caller's contract.
        unsafe { core::ptr::copy_nonoverlapping(src.add(r * lds), dst.add(r * ldd), cols) };
    }
}

/// The microkernel's staging tile, 32 rows of 32 floats.
#[repr(C, align(64))]
struct Staging([f32; 32 * 32]);

/// How a staged tile meets C.
pub(super) struct Out {
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) load_c: bool,
    pub(super) epilogue: Option<RawEpilogue>,
    /// Int8: the tile's row scales; null for bf16.
    pub(super) row_scale: *const f32,
    /// Int8: the tile's column scales (32 readable); ignored for bf16.
    pub(super) col_scale: *const f32,
    /// Full 64-byte-aligned rows of C (32 columns) leave with
    /// non-temporal stores.
    pub(super) stream: bool,
}

/// `C = scale * staged (+ beta * C)`, then the epilogue, row by row.
///
/// # Safety
/// `buf` holds `rows x 32` floats; `c + r * ldc + j` readable and
/// writable for `r < rows`, `j < cols <= 32`; the scales (int8) cover the
/// tile; the epilogue is offset to the tile.
#[inline(always)]
pub(super) unsafe fn write_tile<S: Simd>(
    s: S,
    buf: *const f32,
    rows: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    o: &Out,
) {
    let lanes = S::LANES;
    if o.row_scale.is_null() && !o.load_c && cols.is_multiple_of(lanes) {
        // SAFETY: the caller's contract.
        unsafe {
            if o.stream {
                write_tile_plain::<S, true>(s, buf, rows, cols, c, ldc, o);
            } else {
                write_tile_plain::<S, false>(s, buf, rows, cols, c, ldc, o);
            }
        }
        return;
    }
    for r in 0..rows {
        let row_alpha = if o.row_scale.is_null() {
            o.alpha
        } else {
            // SAFETY: the row scales cover the tile's rows.
            o.alpha * unsafe { *o.row_scale.add(r) }
        };
        let ra = s.splat(row_alpha);
        let dst_row = c.wrapping_add(r * ldc);
        let mut col = 0;
        while col < cols {
            let n = lanes.min(cols - col);
            let dst = dst_row.wrapping_add(col);
            // SAFETY: the staging row has 32 floats and `col < 32`, the
            // column scales 32; C is accessed only over its `n` valid lanes.
            unsafe {
                let mut x = s.load(buf.add(r * 32 + col));
                if !o.row_scale.is_null() {
                    x = s.mul(x, s.load(o.col_scale.add(col)));
                }
                x = s.mul(x, ra);
                if o.load_c {
                    let old = if n == lanes {
                        s.load(dst)
                    } else {
                        s.load_partial(dst, n)
                    };
                    x = s.fma(old, s.splat(o.beta), x);
                }
                if let Some(e) = &o.epilogue {
                    x = e.apply(s, x, r, col, n);
                }
                if o.stream {
                    s.store_stream(dst, x);
                } else if n == lanes {
                    s.store(dst, x);
                } else {
                    s.store_partial(dst, n, x);
                }
            }
            col += lanes;
        }
    }
}

/// [`write_tile`]'s common case, bf16 not reading C over whole vectors,
/// with its tests hoisted: the general loop tests the scales, C and the
/// width for every vector, and the compiler does not unswitch it (its
/// tests and jumps took a third of the write-back's samples in MiniLM
/// bf16).
///
/// # Safety
/// As [`write_tile`], and `cols % S::LANES == 0`; `STREAM` as `o.stream`.
#[inline(always)]
unsafe fn write_tile_plain<S: Simd, const STREAM: bool>(
    s: S,
    buf: *const f32,
    rows: usize,
    cols: usize,
    c: *mut f32,
    ldc: usize,
    o: &Out,
) {
    let alpha = s.splat(o.alpha);
    for r in 0..rows {
        let dst = c.wrapping_add(r * ldc);
        for col in (0..cols).step_by(S::LANES) {
            // SAFETY: the staging row has 32 floats and `col < cols <= 32`;
            // C's row has `cols` writable floats (caller's contract).
            unsafe {
                let x = s.mul(s.load(buf.add(r * 32 + col)), alpha);
                let x = match &o.epilogue {
                    Some(e) => e.apply(s, x, r, col, S::LANES),
                    None => x,
                };
                if STREAM {
                    s.store_stream(dst.add(col), x);
                } else {
                    s.store(dst.add(col), x);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_blocks_cover_c_in_whole_units() {
        for (m, n, threads) in [
            (1, 4096, 2),
            (64, 1024, 2),
            (2048, 2048, 2),
            (100, 33, 3),
            (5, 5, 4),
        ] {
            let g = Grid::choose(m, n, threads);
            assert!(g.tm * g.tn <= threads.max(1));
            let mut area = 0;
            for t in 0..g.tm * g.tn {
                let b = g.block(t, m, n);
                assert!(
                    b.i0.is_multiple_of(ROW_PAD) && b.j0.is_multiple_of(NR),
                    "{b:?}"
                );
                assert!(b.i0 + b.rows <= m && b.j0 + b.cols <= n);
                area += b.rows * b.cols;
            }
            assert_eq!(area, m * n, "{m} {n} {threads}");
        }
        assert_eq!(Grid::choose(1, 4096, 2), Grid { tm: 1, tn: 2 });
        assert_eq!(Grid::choose(2048, 2048, 2), Grid { tm: 2, tn: 1 });
    }

    #[test]
    fn scratch_size_checks() {
        let needed = scratch_bytes(Elem::Bf16, 3, 5);
        assert!(needed >= 32 * 32 * 2 + 32 * 4, "{needed}");
        assert!(scratch_bytes(Elem::Int8, 100, 1000) > scratch_bytes(Elem::Int8, 10, 1000));
    }
}
