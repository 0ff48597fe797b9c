//! One attention head over one sequence, fused: `out = softmax(scale Q
//! K^T, keep) V`, for the narrow heads of BERT-style encoders (d = 32 or
//! 64), straight from the fused QKV rows.
//!
//! The GEMM driver is built for large operands: on a 128 x 128 x 32 head it
//! packs A and B per call and spent twice the FMA time (measured on the
//! MiniLM shapes: 11 us per head for the scores, 13 us for the context).
//! Here K is transposed once into the work buffer (zero-padded to whole
//! key tiles), the scores come from `QR x KV` register tiles that
//! broadcast Q straight from its rows, each row is soft-maxed while it is
//! in L1, and the context from `CR x CV` tiles that broadcast the
//! probabilities and load V's rows.

use super::softmax::softmax_strided;
use super::{dispatch, OpsError, WithSimd};
use crate::isa::Isa;
use crate::simd::Simd;

/// Query rows per score tile.
const QR: usize = 6;
/// Key vectors per score tile: `QR * KV = 24` accumulators, plus `KV`
/// key vectors and one broadcast, fit AVX-512's 32 registers.
const KV: usize = 4;
/// Query rows per context tile.
const CR: usize = 8;
/// Head-width vectors per context tile (`CR * CV = 16` accumulators).
const CV: usize = 2;
/// Keys are padded to a multiple of this in the work buffer: a whole
/// number of `KV`-vector tiles for every ISA (16, 8 or 1 lanes).
const KEY_PAD: usize = 64;

/// Where one head's operands live. Row `r` of Q is `q[r * ld..][..d]`;
/// key and value `j` are `k[j * ld..][..d]` and `v[j * ld..][..d]` (the
/// fused QKV rows of a layer, each offset to the head); context row `r`
/// goes to `out[r * ldo..][..d]`. Invariant (checked): `d <= ld`,
/// `d <= ldo`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Query rows.
    pub rows: usize,
    /// Keys (the sequence length).
    pub len: usize,
    /// Head width.
    pub d: usize,
    /// Row stride of Q, K and V.
    pub ld: usize,
    /// Row stride of the output.
    pub ldo: usize,
}

/// Floats of work buffer [`attention_head`] needs: K transposed and the
/// score rows, both padded to whole key tiles.
pub fn attention_work_floats(rows: usize, len: usize, d: usize) -> usize {
    (rows + 2 * d) * len.next_multiple_of(KEY_PAD)
}

/// `out = softmax(scale * Q K^T) V` for one head (see [`HeadShape`]).
/// `keep`, when given, holds one flag per key: masked keys get
/// probability 0; a row with no key kept gives zeros. `work` holds
/// [`attention_work_floats`] floats; nothing is allocated.
#[allow(clippy::too_many_arguments)]
pub fn attention_head(
    isa: Isa,
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
    check_head(shape, q, k, v, keep, out, work, attention_work_floats)?;
    if rows == 0 || len == 0 || d == 0 {
        return Ok(());
    }
    let head = Head {
        shape,
        scale,
        q,
        k,
        v,
        keep,
        work,
        out,
    };
    dispatch(isa, head)
}

/// The checks every head makes: strides, Q/K/V/output lengths, the mask's
/// length, then the work buffer against `work_floats(rows, len, d)` (the
/// head's own size function, called only for a non-empty head whose
/// operands passed). Empty heads pass.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_head(
    shape: HeadShape,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    keep: Option<&[bool]>,
    out: &[f32],
    work: &[f32],
    work_floats: fn(usize, usize, usize) -> usize,
) -> Result<(), OpsError> {
    let HeadShape {
        rows,
        len,
        d,
        ld,
        ldo,
    } = shape;
    let bad = |detail: String| {
        Err(OpsError::Shape {
            what: "attention head",
            detail,
        })
    };
    if rows == 0 || len == 0 || d == 0 {
        return Ok(());
    }
    let span = |n: usize, stride: usize| (n - 1) * stride + d;
    if d > ld || d > ldo {
        return bad(format!("head width {d} exceeds a row stride ({ld}, {ldo})"));
    }
    if q.len() < span(rows, ld) || k.len() < span(len, ld) || v.len() < span(len, ld) {
        return bad(format!(
            "Q, K, V of {}, {}, {} floats cannot hold {rows} / {len} rows of {d} at stride {ld}",
            q.len(),
            k.len(),
            v.len()
        ));
    }
    if out.len() < span(rows, ldo) {
        return bad(format!("output of {} floats", out.len()));
    }
    if keep.is_some_and(|m| m.len() != len) {
        return bad(format!(
            "mask of {:?} flags for {len} keys",
            keep.map(<[bool]>::len)
        ));
    }
    let needed = work_floats(rows, len, d);
    if work.len() < needed {
        return bad(format!(
            "work buffer of {} floats, needs {needed}",
            work.len()
        ));
    }
    Ok(())
}

/// A checked call: every pointer below stays inside its slice.
struct Head<'a> {
    shape: HeadShape,
    scale: f32,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    keep: Option<&'a [bool]>,
    work: &'a mut [f32],
    out: &'a mut [f32],
}

impl WithSimd for Head<'_> {
    type Output = ();
    #[inline(always)]
    fn with<S: Simd>(self, s: S) {
        let Head {
            shape,
            scale,
            q,
            k,
            v,
            keep,
            work,
            out,
        } = self;
        let HeadShape { rows, len, d, .. } = shape;
        let lp = len.next_multiple_of(KEY_PAD);
        let (kt, rest) = work.split_at_mut(d * lp);
        let (vc, scores) = rest.split_at_mut(d * lp);
        transpose_keys(k, shape, kt, lp);
        copy_values(v, shape, vc);
        // SAFETY: `attention_head` checked Q's rows, the work buffer (K^T:
        // `d x lp`, scores: `rows x lp`), and `d <= ld`.
        unsafe { scores_tiles(s, shape, scale, q, kt, scores, lp) };
        softmax_strided(s, scores, rows, lp, len, keep);
        let packed = HeadShape { ld: d, ..shape };
        // SAFETY: as above; V's `len` rows now `d` apart in `vc` (`d x lp`
        // floats), the output's rows as checked.
        unsafe { context_tiles(s, packed, vc, scores, lp, out) };
    }
}

/// `vc[j * d..][..d] = v[j][..d]`: the context tiles read every value row
/// once per tile of query rows, and the fused QKV rows are `ld` apart (4.5
/// KiB in MiniLM), so in place the 128 rows share 8 of L1's 64 sets and
/// come from L2 on every pass; packed they stay in L1.
#[inline(always)]
fn copy_values(v: &[f32], shape: HeadShape, vc: &mut [f32]) {
    let HeadShape { len, d, ld, .. } = shape;
    for (dst, row) in vc.chunks_exact_mut(d).zip(v.chunks(ld)).take(len) {
        dst.copy_from_slice(&row[..d]);
    }
}

/// `kt[p * lp + j] = k[j][p]`, keys `len..lp` zero.
#[inline(always)]
fn transpose_keys(k: &[f32], shape: HeadShape, kt: &mut [f32], lp: usize) {
    let HeadShape { len, d, ld, .. } = shape;
    for (j, key) in k.chunks(ld).take(len).enumerate() {
        for (p, &x) in key[..d].iter().enumerate() {
            kt[p * lp + j] = x;
        }
    }
    for col in kt.chunks_exact_mut(lp).take(d) {
        col[len..].fill(0.0);
    }
}

/// `scores[r][j] = scale * sum_p q[r][p] kt[p][j]` for `j < lp`.
///
/// # Safety
/// Q holds `rows` rows of `d` at stride `ld`; `kt` holds `d x lp` and
/// `scores` `rows x lp` floats; `lp` is a multiple of `KV * LANES`.
#[inline(always)]
unsafe fn scores_tiles<S: Simd>(
    s: S,
    shape: HeadShape,
    scale: f32,
    q: &[f32],
    kt: &[f32],
    scores: &mut [f32],
    lp: usize,
) {
    let HeadShape { rows, d, ld, .. } = shape;
    let (lanes, scale) = (S::LANES, s.splat(scale));
    let (q, kt, out) = (q.as_ptr(), kt.as_ptr(), scores.as_mut_ptr());
    let mut r0 = 0;
    while r0 < rows {
        let rb = QR.min(rows - r0);
        // Tail tiles repeat the last row rather than read past Q.
        let mut qrow = [q; QR];
        for (i, p) in qrow.iter_mut().enumerate() {
            *p = q.wrapping_add((r0 + i.min(rb - 1)) * ld);
        }
        let mut c = 0;
        while c < lp {
            let mut acc = [[s.splat(0.0); KV]; QR];
            for p in 0..d {
                let mut b = [s.splat(0.0); KV];
                for (x, bv) in b.iter_mut().enumerate() {
                    // SAFETY: `p < d`, `c + KV * LANES <= lp` (caller).
                    *bv = unsafe { s.load(kt.add(p * lp + c + x * lanes)) };
                }
                for (row, a) in acc.iter_mut().zip(qrow) {
                    // SAFETY: `a` is one of Q's `rows` rows, `p < d`.
                    let qa = s.splat(unsafe { *a.add(p) });
                    for (av, bv) in row.iter_mut().zip(b) {
                        *av = s.fma(qa, bv, *av);
                    }
                }
            }
            for (i, row) in acc.iter().enumerate().take(rb) {
                for (x, av) in row.iter().enumerate() {
                    // SAFETY: row `r0 + i < rows`, columns inside `lp`.
                    unsafe { s.store(out.add((r0 + i) * lp + c + x * lanes), s.mul(*av, scale)) };
                }
            }
            c += KV * lanes;
        }
        r0 += QR;
    }
}

/// `out[r][..d] = sum_j scores[r][j] v[j][..d]` over the `len` keys.
///
/// # Safety
/// V holds `len` rows of `d` at stride `ld`; the output `rows` rows of `d`
/// at stride `ldo`; `scores` `rows x lp` floats, `len <= lp`.
#[inline(always)]
unsafe fn context_tiles<S: Simd>(
    s: S,
    shape: HeadShape,
    v: &[f32],
    scores: &[f32],
    lp: usize,
    out: &mut [f32],
) {
    let HeadShape {
        rows,
        len,
        d,
        ld,
        ldo,
    } = shape;
    let lanes = S::LANES;
    let (v, p, out) = (v.as_ptr(), scores.as_ptr(), out.as_mut_ptr());
    let mut r0 = 0;
    while r0 < rows {
        let rb = CR.min(rows - r0);
        let mut prow = [p; CR];
        for (i, pr) in prow.iter_mut().enumerate() {
            *pr = p.wrapping_add((r0 + i.min(rb - 1)) * lp);
        }
        let mut c = 0;
        while c < d {
            // Lanes of each vector inside the head (the last may be partial).
            let mut n = [0; CV];
            for (x, nx) in n.iter_mut().enumerate() {
                *nx = d.saturating_sub(c + x * lanes).min(lanes);
            }
            let at = v.wrapping_add(c);
            // SAFETY: keys `j < len` at stride `ld` from `v + c`, the `n[x]`
            // lanes inside `d`; `prow` are score rows of `len <= lp` floats.
            // Heads a whole number of vectors wide (32, 64) load without a
            // test per key: the tests cost a third of the context's time.
            let acc = unsafe {
                if n.iter().all(|&nx| nx == lanes) {
                    context_keys::<S, true>(s, at, ld, len, prow, n)
                } else {
                    context_keys::<S, false>(s, at, ld, len, prow, n)
                }
            };
            for (i, row) in acc.iter().enumerate().take(rb) {
                for (x, av) in row.iter().enumerate() {
                    let at = out.wrapping_add((r0 + i) * ldo + c + x * lanes);
                    // SAFETY: row `r0 + i < rows`, the `n[x]` lanes inside `d`.
                    unsafe {
                        if n[x] == lanes {
                            s.store(at, *av);
                        } else if n[x] > 0 {
                            s.store_partial(at, n[x], *av);
                        }
                    }
                }
            }
            c += CV * lanes;
        }
        r0 += CR;
    }
}

/// One context tile's sum over the `len` keys: `CR` probability rows
/// (`prow`) times `CV` vectors of V from `v` (`n[x]` lanes of vector `x`;
/// all of them when `WHOLE`).
///
/// # Safety
/// `v + j * ld` is readable for the `n[x]` lanes of each vector `x`, and
/// every `prow[i]` for `len` floats, for `j < len`.
#[inline(always)]
unsafe fn context_keys<S: Simd, const WHOLE: bool>(
    s: S,
    v: *const f32,
    ld: usize,
    len: usize,
    prow: [*const f32; CR],
    n: [usize; CV],
) -> [[S::V; CV]; CR] {
    let mut acc = [[s.splat(0.0); CV]; CR];
    for j in 0..len {
        let mut b = [s.splat(0.0); CV];
        for (x, bv) in b.iter_mut().enumerate() {
            let at = v.wrapping_add(j * ld + x * S::LANES);
            // SAFETY: the caller's contract.
            unsafe {
                if WHOLE || n[x] == S::LANES {
                    *bv = s.load(at);
                } else if n[x] > 0 {
                    *bv = s.load_partial(at, n[x]);
                }
            }
        }
        for (row, pr) in acc.iter_mut().zip(prow) {
            // SAFETY: the caller's contract, `j < len`.
            let pa = s.splat(unsafe { *pr.add(j) });
            for (av, bv) in row.iter_mut().zip(b) {
                *av = s.fma(pa, bv, *av);
            }
        }
    }
    acc
}
