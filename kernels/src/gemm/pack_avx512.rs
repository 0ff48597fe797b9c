//! AVX-512 packing of A: sixteen columns of a row tile at a time, read as
//! up to 16 row vectors and transposed in registers, so packing costs a
//! few shuffles per element instead of a scalar load and store each. It
//! matters where N is short: a row tile of A is packed once and reused by
//! only `N / NR` register tiles (12 at N = 384).

use core::arch::x86_64::*;

use super::pack::{pack_a, pack_b, row_tiles, Strided};
use crate::isa::Avx512;

/// Packs like [`pack_a`]; rows of A must be contiguous (`cs == 1`) and
/// `mr <= 16` for the fast path, anything else goes to [`pack_a`].
///
/// # Safety
/// As [`pack_a`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_a_avx512(
    _: Avx512,
    a: Strided,
    rows: usize,
    kc: usize,
    mr: usize,
    dst: *mut f32,
) {
    if a.cs != 1 || mr > 16 {
        // SAFETY: the caller's contract is `pack_a`'s.
        return unsafe { pack_a(a, rows, kc, mr, dst) };
    }
    let full = kc / 16 * 16;
    let mut out = dst;
    for (start, h) in row_tiles(rows, mr) {
        let tile = a.at(start, 0);
        let mask: __mmask16 = ((1u32 << h) - 1) as u16;
        for p0 in (0..full).step_by(16) {
            let mut v = [_mm512_setzero_ps(); 16];
            for (r, vr) in v.iter_mut().enumerate() {
                if r < h {
                    // SAFETY: row `start + r < rows`, columns `p0..p0 + 16 <= kc`,
                    // readable by the contract.
                    *vr = unsafe { _mm512_loadu_ps(tile.ptr.add(r * tile.rs + p0)) };
                }
            }
            let w = transpose16(v);
            for (i, wi) in w.iter().enumerate() {
                // SAFETY: column `p0 + i < kc` of this tile's panel: `h`
                // floats at `out + (p0 + i) * h`, inside `dst`'s `rows * kc`.
                unsafe { _mm512_mask_storeu_ps(out.add((p0 + i) * h), mask, *wi) };
            }
        }
        for p in full..kc {
            for r in 0..h {
                // SAFETY: as above, for the last `kc % 16` columns.
                unsafe { *out.add(p * h + r) = *tile.ptr.add(r * tile.rs + p) };
            }
        }
        // SAFETY: tiles are back to back, `rows * kc` floats in all.
        out = unsafe { out.add(h * kc) };
    }
}

/// Packs like [`pack_b`] (from row 0 of each panel) for `nr == 32` and contiguous rows (`cs == 1`),
/// two vectors per panel row, walking B row by row so that its reads
/// stream (a panel-by-panel walk would jump `ldb` floats per row); anything
/// else goes to [`pack_b`].
///
/// # Safety
/// As [`pack_b`].
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_b_avx512(
    _: Avx512,
    b: Strided,
    kc: usize,
    cols: usize,
    nr: usize,
    dst: *mut f32,
    panel_stride: usize,
) {
    if b.cs != 1 || nr != 32 {
        // SAFETY: the caller's contract is `pack_b`'s.
        return unsafe { pack_b(b, kc, cols, nr, dst, panel_stride, 0) };
    }
    let lanes = |w: usize| -> __mmask16 { ((1u32 << w.min(16)) - 1) as u16 };
    for p in 0..kc {
        for (panel, j0) in (0..cols).step_by(32).enumerate() {
            let w = (cols - j0).min(32);
            // SAFETY: row `p < kc`, columns `j0..j0 + w <= cols` of B are
            // readable, and the masked loads touch only those; the panel
            // row `k_offset + p` of panel `panel < cols.div_ceil(32)` is
            // writable (contract), 32 floats, zero past `w`.
            unsafe {
                let src = b.ptr.add(p * b.rs + j0);
                let lo = _mm512_maskz_loadu_ps(lanes(w), src);
                let hi = _mm512_maskz_loadu_ps(lanes(w.saturating_sub(16)), src.wrapping_add(16));
                let row = dst.add(panel * panel_stride + p * 32);
                _mm512_storeu_ps(row, lo);
                _mm512_storeu_ps(row.add(16), hi);
            }
        }
    }
}

/// Transposes a 16 x 16 block held as 16 row vectors.
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(v: [__m512; 16]) -> [__m512; 16] {
    // Pairs of rows interleaved within 128-bit lanes: t[2i] holds columns
    // 4L, 4L+1 of rows 2i, 2i+1 in lane L; t[2i+1] columns 4L+2, 4L+3.
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]);
    }
    // Quads: u[4g + j] holds column 4L + j of rows 4g..4g+4 in lane L.
    let mut u = [_mm512_setzero_ps(); 16];
    let pd = _mm512_castps_pd;
    for g in 0..4 {
        let (t0, t1, t2, t3) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t0), pd(t2)));
        u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t0), pd(t2)));
        u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(pd(t1), pd(t3)));
        u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(pd(t1), pd(t3)));
    }
    // Column 4L + j gathers lane L of u[j], u[4 + j], u[8 + j], u[12 + j].
    let mut w = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let lo01 = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
        let lo23 = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
        let hi01 = _mm512_shuffle_f32x4::<0xEE>(u[j], u[4 + j]);
        let hi23 = _mm512_shuffle_f32x4::<0xEE>(u[8 + j], u[12 + j]);
        w[j] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        w[4 + j] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
        w[8 + j] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        w[12 + j] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_portable_packer() {
        let Some(isa) = Avx512::try_new() else {
            return;
        };
        for (rows, kc, mr, ld) in [
            (14, 16, 14, 16),
            (29, 37, 14, 40),
            (5, 100, 14, 101),
            (16, 33, 16, 33),
            (3, 15, 4, 15),
        ] {
            let a: Vec<f32> = (0..rows * ld).map(|i| i as f32).collect();
            let view = Strided {
                ptr: a.as_ptr(),
                rs: ld,
                cs: 1,
            };
            let (mut want, mut got) =
                (vec![-1.0f32; rows * kc + 16], vec![-1.0f32; rows * kc + 16]);
            // SAFETY: `a` holds rows x ld >= rows x kc; both buffers hold rows * kc.
            unsafe {
                pack_a(view, rows, kc, mr, want.as_mut_ptr());
                pack_a_avx512(isa, view, rows, kc, mr, got.as_mut_ptr());
            }
            assert_eq!(got, want, "rows {rows} kc {kc} mr {mr}");
        }
    }

    #[test]
    fn packs_b_like_the_portable_packer() {
        let Some(isa) = Avx512::try_new() else {
            return;
        };
        for (kc, cols, ld) in [
            (1usize, 1usize, 1usize),
            (7, 32, 32),
            (9, 47, 50),
            (3, 100, 100),
            (5, 16, 17),
        ] {
            let b: Vec<f32> = (0..kc * ld).map(|i| i as f32 + 1.0).collect();
            let view = Strided {
                ptr: b.as_ptr(),
                rs: ld,
                cs: 1,
            };
            let panels = cols.div_ceil(32);
            // Panels `kc + 2` rows apart: the last two rows of each must
            // stay untouched.
            let stride = (kc + 2) * 32;
            let (mut want, mut got) = (
                vec![-1.0f32; panels * stride],
                vec![-1.0f32; panels * stride],
            );
            // SAFETY: `b` holds kc x ld >= kc x cols; both buffers hold
            // every panel's rows 1..=kc.
            unsafe {
                pack_b(view, kc, cols, 32, want.as_mut_ptr(), stride, 0);
                pack_b_avx512(isa, view, kc, cols, 32, got.as_mut_ptr(), stride);
            }
            assert_eq!(got, want, "kc {kc} cols {cols}");
        }
    }
}
