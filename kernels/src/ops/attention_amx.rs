//! One attention head with its two products on AMX tiles (`TDPBF16PS`,
//! bf16 operands, fp32 sums), for models whose weight GEMMs already run
//! in bf16: there the fp32 head was a third of a request. On MiniLM's
//! heads (128 queries x 128 keys x 32) on one core: about 12 us against
//! the fp32 head's 22 us, of which the fp32 softmax is now about 6.
//!
//! Same contract as [`attention_head`](super::attention_head). The
//! operands are rounded to bf16 (nearest even) into the layouts the tile
//! kernel reads (16-row tiles of 64 bytes; B as pairs along the summed
//! index), both products go through [`tile_kernel`], and the softmax stays
//! in fp32 between them:
//! - `qa`: Q scaled by `scale`, tile-blocked, 32 of the head's columns per
//!   K step (`dk` = `d` rounded up to 32, zero-padded);
//! - `kb`: 16-key panels of K^T, per K step 16 rows of column pairs;
//! - `scores`: `rp x lp` fp32 (`rp` = rows rounded up to 16, `lp` = keys
//!   rounded up to 32);
//! - `pa`: the probabilities, tile-blocked like Q, 32 keys per K step;
//! - `vb`: 16-column panels of V, per K step 16 rows of key pairs;
//! - `ctx`: `rp x dk` fp32, copied to the output's `d` columns.

use core::arch::x86_64::*;

use super::softmax::softmax_strided;
use super::{check_head, HeadShape, OpsError};
use crate::amx::{ensure_tiles, tile_kernel, OutRows, TileOp};
use crate::bf16::round_to_bf16;
use crate::isa::AmxBf16;

/// Bytes of one tile (16 rows of 64 bytes).
const TILE: usize = 1024;

/// The sizes of one head's buffers.
#[derive(Clone, Copy)]
struct Dims {
    /// Rows rounded up to a tile.
    rp: usize,
    /// Keys rounded up to a K step.
    lp: usize,
    /// Head width rounded up to a K step (Q, K) and to two tiles (V).
    dk: usize,
}

impl Dims {
    fn new(rows: usize, len: usize, d: usize) -> Self {
        Self {
            rp: rows.next_multiple_of(16),
            lp: len.next_multiple_of(32),
            dk: d.next_multiple_of(32),
        }
    }
    /// Bytes of each buffer: qa, kb, scores, pa, vb, ctx.
    fn bytes(self) -> [usize; 6] {
        let Self { rp, lp, dk } = self;
        [
            rp * dk * 2,
            lp * dk * 2,
            rp * lp * 4,
            rp * lp * 2,
            lp * dk * 2,
            rp * dk * 4,
        ]
    }
}

/// Floats of work buffer [`attention_head_amx`] needs (plus 64 bytes of
/// alignment slack).
pub fn attention_amx_work_floats(rows: usize, len: usize, d: usize) -> usize {
    let bytes: usize = Dims::new(rows, len, d).bytes().iter().sum();
    (bytes + 64).div_ceil(4)
}

/// `out = softmax(scale * Q K^T, keep) V` for one head, both products on
/// AMX tiles in bf16 with fp32 sums (see the module). Errors as
/// [`attention_head`](super::attention_head), with
/// [`attention_amx_work_floats`] floats of work buffer.
#[allow(clippy::too_many_arguments)]
pub fn attention_head_amx(
    token: AmxBf16,
    shape: HeadShape,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keep: Option<&[bool]>,
    work: &mut [f32],
    out: &mut [f32],
) -> Result<(), OpsError> {
    let HeadShape { rows, len, d, .. } = shape;
    check_head(shape, q, k, v, keep, out, work, attention_amx_work_floats)?;
    if rows == 0 || len == 0 || d == 0 {
        return Ok(());
    }
    ensure_tiles(token);
    // SAFETY: AMX-BF16 (and the AVX-512 it implies) is proven by the token
    // and the tiles are configured on this thread; the operands and the
    // work buffer (the layout's bytes) passed `check_head`.
    unsafe { head(token, shape, scale, q, k, v, keep, work, out) };
    Ok(())
}

/// # Safety
/// As [`attention_head_amx`] after its checks.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")]
unsafe fn head(
    token: AmxBf16,
    shape: HeadShape,
    scale: f32,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keep: Option<&[bool]>,
    work: &mut [f32],
    out: &mut [f32],
) {
    let HeadShape {
        rows,
        len,
        d,
        ld,
        ldo,
    } = shape;
    let dims = Dims::new(rows, len, d);
    let Dims { rp, lp, dk } = dims;
    // Carve the buffers, 64-byte aligned, inside `work` (sizes from `Dims`,
    // checked by the caller).
    let base = work.as_mut_ptr().cast::<u8>();
    let mut at = base.align_offset(64);
    let mut bufs = [core::ptr::null_mut::<u8>(); 6];
    for (buf, bytes) in bufs.iter_mut().zip(dims.bytes()) {
        *buf = base.wrapping_add(at);
        at += bytes;
    }
    let [qa, kb, scores, pa, vb, ctx] = bufs;
    let (scores, ctx) = (scores.cast::<f32>(), ctx.cast::<f32>());
    // SAFETY: every buffer is inside `work`; Q, K, V rows and columns are
    // inside `check_head`'s bounds; AMX and AVX-512 proven by the token.
    unsafe {
        pack_rows(q.as_ptr(), ld, rows, d, rp, dk, scale, qa);
        pack_key_panels(k.as_ptr(), ld, len, d, lp, dk, kb);
        products(qa, kb, rp, lp, dk / 32, scores, lp);
        let all = core::slice::from_raw_parts_mut(scores, rows * lp);
        softmax_strided(token.avx512(), all, rows, lp, len, keep);
        for row in all.chunks_exact_mut(lp) {
            row[len..].fill(0.0);
        }
        // Rows past `rows` of P are zeros (their context rows are dropped).
        pack_rows(scores, lp, rows, lp, rp, lp, 1.0, pa);
        pack_value_panels(v.as_ptr(), ld, len, d, lp, dk, vb);
        products(pa, vb, rp, dk, lp / 32, ctx, dk);
        for r in 0..rows {
            core::ptr::copy_nonoverlapping(ctx.add(r * dk), out.as_mut_ptr().add(r * ldo), d);
        }
    }
}

/// `n <= 32` floats at `src` (the rest read as zeros), times `scale`, as
/// 32 bf16 in order: lane `i` (32 bits) holds elements `2i` (low half)
/// and `2i + 1`.
///
/// # Safety
/// AVX-512 usable; `src..src + n` readable.
#[inline(always)]
unsafe fn bf16x32(src: *const f32, n: usize, scale: f32) -> __m512i {
    let mask = |from: usize| (((1u32 << n.saturating_sub(from).min(16)) - 1) as u16) as __mmask16;
    // SAFETY: masked-off lanes are not read.
    unsafe {
        let scale = _mm512_set1_ps(scale);
        let lo = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(0), src), scale);
        let hi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask(16), src.wrapping_add(16)), scale);
        _mm512_inserti64x4::<1>(_mm512_castsi256_si512(round_to_bf16(lo)), round_to_bf16(hi))
    }
}

/// A (Q or P): `rows` rows of `cols` floats at stride `ld`, times `scale`,
/// into tiles: row `r`'s K step `s` (32 values) is the 64 bytes at tile
/// `(r / 16) * (ck / 32) + s`, row `r % 16`. Rows `rows..rp` and columns
/// `cols..ck` are zeros.
///
/// # Safety
/// AVX-512 usable; the rows readable; `dst` writable for `rp * ck * 2`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn pack_rows(
    src: *const f32,
    ld: usize,
    rows: usize,
    cols: usize,
    rp: usize,
    ck: usize,
    scale: f32,
    dst: *mut u8,
) {
    let steps = ck / 32;
    for r in 0..rp {
        for s in 0..steps {
            let c = s * 32;
            let n = if r < rows {
                cols.saturating_sub(c).min(32)
            } else {
                0
            };
            let at = dst.wrapping_add(((r / 16) * steps + s) * TILE + (r % 16) * 64);
            // SAFETY: `n` values inside row `r`; 64 bytes inside `dst`.
            unsafe {
                _mm512_store_si512(at.cast(), bf16x32(src.wrapping_add(r * ld + c), n, scale))
            };
        }
    }
}

/// B of the scores (K^T): 16-key panels; per K step (32 head columns) 16
/// rows of column pairs, 16 keys each. Keys `len..lp` are zeros.
///
/// # Safety
/// AVX-512 usable; `len` rows of `d` readable at stride `ld`; `dst`
/// writable for `lp * dk * 2` bytes.
#[inline(always)]
unsafe fn pack_key_panels(
    k: *const f32,
    ld: usize,
    len: usize,
    d: usize,
    lp: usize,
    dk: usize,
    dst: *mut u8,
) {
    let steps = dk / 32;
    let lanes = dst.cast::<u32>();
    let mut pairs = [0u32; 16];
    for j in 0..lp {
        for s in 0..steps {
            let n = if j < len {
                d.saturating_sub(s * 32).min(32)
            } else {
                0
            };
            // SAFETY: `n` values inside key `j`'s row; `pairs` is 64 bytes.
            unsafe {
                let x = bf16x32(k.wrapping_add(j * ld + s * 32), n, 1.0);
                _mm512_storeu_si512(pairs.as_mut_ptr().cast(), x);
            }
            let tile = ((j / 16) * steps + s) * 256;
            for (row, pair) in pairs.iter().enumerate() {
                // SAFETY: inside panel `j / 16`'s tile `s` (256 lanes).
                unsafe { *lanes.add(tile + row * 16 + j % 16) = *pair };
            }
        }
    }
}

/// B of the context (V): 16-column panels; per K step (32 keys) 16 rows of
/// key pairs, 16 columns each. Keys `len..lp` and columns `d..dk` are
/// zeros.
///
/// # Safety
/// AVX-512 usable; `len` rows of `d` readable at stride `ld`; `dst`
/// writable for `lp * dk * 2` bytes.
#[inline(always)]
unsafe fn pack_value_panels(
    v: *const f32,
    ld: usize,
    len: usize,
    d: usize,
    lp: usize,
    dk: usize,
    dst: *mut u8,
) {
    let steps = lp / 32;
    // Lane `i` of the first half: element `i` of `a` then of `b`.
    // SAFETY: AVX-512BW usable (the caller's contract).
    let (lo_idx, hi_idx) = unsafe {
        let lo = _mm512_set_epi16(
            47, 15, 46, 14, 45, 13, 44, 12, 43, 11, 42, 10, 41, 9, 40, 8, 39, 7, 38, 6, 37, 5, 36,
            4, 35, 3, 34, 2, 33, 1, 32, 0,
        );
        (lo, _mm512_add_epi16(lo, _mm512_set1_epi16(16)))
    };
    for t in 0..lp / 2 {
        let (j0, j1) = (2 * t, 2 * t + 1);
        let (s, row) = (t / 16, t % 16);
        for c in (0..dk).step_by(32) {
            let n = |j: usize| {
                if j < len {
                    d.saturating_sub(c).min(32)
                } else {
                    0
                }
            };
            // SAFETY: `n(j)` values inside key `j`'s row; each store is one
            // 64-byte row of panel `c / 16` or `c / 16 + 1`, tile `s`.
            unsafe {
                let a = bf16x32(v.wrapping_add(j0 * ld + c), n(j0), 1.0);
                let b = bf16x32(v.wrapping_add(j1 * ld + c), n(j1), 1.0);
                let panel = |p: usize| dst.wrapping_add((p * steps + s) * TILE + row * 64);
                _mm512_store_si512(
                    panel(c / 16).cast(),
                    _mm512_permutex2var_epi16(a, lo_idx, b),
                );
                _mm512_store_si512(
                    panel(c / 16 + 1).cast(),
                    _mm512_permutex2var_epi16(a, hi_idx, b),
                );
            }
        }
    }
}

/// `c[r][j] = sum over steps of A tiles x B panels` for `rp` rows and `n`
/// columns (both multiples of 16 and 32), `c` rows `ldc` floats apart.
///
/// # Safety
/// Tiles configured on this thread (AMX-BF16); `a` holds `rp / 16` row
/// groups of `steps` tiles, `b` `n / 16` panels of `steps` tiles, `c` is
/// writable for `rp` rows of `n` floats.
#[inline(always)]
unsafe fn products(
    a: *const u8,
    b: *const u8,
    rp: usize,
    n: usize,
    steps: usize,
    c: *mut f32,
    ldc: usize,
) {
    let group = steps * TILE;
    for r in (0..rp).step_by(32) {
        let two_rows = r + 32 <= rp;
        for j in (0..n).step_by(32) {
            // SAFETY: the caller's contract; the kernel reads `steps` tiles
            // of row groups `r / 16` (and the next) and of panels `j / 16`
            // and the next, and writes 16 or 32 rows of 32 floats of C.
            unsafe {
                let acc = c.wrapping_add(r * ldc + j).cast::<u8>();
                tile_kernel(
                    TileOp::Bf16,
                    two_rows,
                    false,
                    a.wrapping_add((r / 16) * group),
                    group,
                    b.wrapping_add((j / 16) * group),
                    b.wrapping_add((j / 16 + 1) * group),
                    steps,
                    acc,
                    ldc * 4,
                    false,
                    core::ptr::null(),
                    // The result stays where the tiles store it.
                    OutRows {
                        ptr: acc,
                        stride: ldc * 4,
                        rows: if two_rows { 32 } else { 16 },
                    },
                )
            };
        }
    }
}
