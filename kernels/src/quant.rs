//! Symmetric int8 quantisation: `x ~= scale * q`, `q in [-127, 127]`,
//! `scale = max|x| / 127` over a group (one weight output channel, or one
//! activation row). -128 is never produced, so `-q` always fits and the
//! `s8 x s8` products stay within `127^2`.
//!
//! Error per element: `|x - scale * q| <= scale / 2` (plus one f32 rounding
//! of `x / scale`). A group of zeros gets scale 1 and all-zero codes.
//! Non-finite inputs make the group's scale non-finite, so its dequantised
//! results are NaN rather than silently wrong.

use core::arch::x86_64::*;

use crate::isa::Avx512;

/// Largest code magnitude.
pub const QMAX: f32 = 127.0;

/// The scale of a group whose largest magnitude is `max_abs`.
#[inline]
pub fn scale_for(max_abs: f32) -> f32 {
    if max_abs == 0.0 {
        1.0
    } else {
        max_abs / QMAX
    }
}

/// `round_ties_even(x * inv_scale)` clamped to `[-127, 127]`; NaN maps to 0.
#[inline]
pub fn quantize(x: f32, inv_scale: f32) -> i8 {
    (x * inv_scale).round_ties_even().clamp(-QMAX, QMAX) as i8
}

/// `scale * q`.
#[inline]
pub fn dequantize(q: i8, scale: f32) -> f32 {
    scale * f32::from(q)
}

/// The largest `|x|` (NaN if any element is NaN).
pub fn max_abs(xs: impl IntoIterator<Item = f32>) -> f32 {
    xs.into_iter().fold(0.0f32, |m, x| {
        if x.is_nan() || m.is_nan() {
            f32::NAN
        } else {
            m.max(x.abs())
        }
    })
}

/// Quantises one row: returns its scale and writes `src.len()` codes to
/// `dst`. With `offset_u8`, codes are stored as `q + 128` (u8 bit
/// patterns, as `VPDPBUSD` wants its unsigned operand).
pub fn quantize_row(avx512: Option<Avx512>, src: &[f32], dst: &mut [u8], offset_u8: bool) -> f32 {
    let scale = row_scale(avx512, src);
    quantize_with(avx512, src, dst, scale, offset_u8);
    scale
}

/// The scale of a row: `scale_for(max |x|)`, NaN if any element is NaN.
pub fn row_scale(avx512: Option<Avx512>, src: &[f32]) -> f32 {
    match avx512 {
        // SAFETY: the token proves AVX-512; `src` covers `src.len()` elements.
        Some(t) => scale_for(unsafe { max_abs_avx512(t, src.as_ptr(), src.len()) }),
        None => scale_for(max_abs(src.iter().copied())),
    }
}

/// Writes the codes of `src` under `scale` to `dst` (see [`quantize_row`]).
pub fn quantize_with(
    avx512: Option<Avx512>,
    src: &[f32],
    dst: &mut [u8],
    scale: f32,
    offset_u8: bool,
) {
    assert!(dst.len() >= src.len(), "int8 destination too short");
    match avx512 {
        // SAFETY: the token proves AVX-512; both pointers cover `src.len()` elements.
        Some(t) => unsafe {
            quantize_avx512(
                t,
                src.as_ptr(),
                dst.as_mut_ptr(),
                src.len(),
                scale,
                offset_u8,
            )
        },
        None => {
            let inv = 1.0 / scale;
            let flip = if offset_u8 { 0x80 } else { 0 };
            for (d, &x) in dst.iter_mut().zip(src) {
                *d = quantize(x, inv) as u8 ^ flip;
            }
        }
    }
}

/// Quantises `k` contiguous floats under `scale` into `chunks` runs of 64
/// codes, run `c` at `dst + c * stride`, zero past `k` (see
/// [`quantize_with`] for the codes).
///
/// # Safety
/// `src` readable for `k` floats; each run writable; `k <= 64 * chunks`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn quantize_to_chunks(
    _t: Avx512,
    src: *const f32,
    k: usize,
    chunks: usize,
    dst: *mut u8,
    stride: usize,
    scale: f32,
    offset_u8: bool,
) {
    let inv = _mm512_set1_ps(1.0 / scale);
    let lo = _mm512_set1_ps(-QMAX);
    let hi = _mm512_set1_ps(QMAX);
    let flip = _mm_set1_epi8(if offset_u8 { -128 } else { 0 });
    for c in 0..chunks {
        for q in 0..4 {
            let i = c * 64 + q * 16;
            let mask = if i >= k { 0 } else { tail_mask(k, i) };
            // SAFETY: masked loads read only lanes below `k`; the run is
            // writable (contract). Lanes past `k` load 0 and store code 0
            // (before the u8 offset, which padding must not get: masked).
            unsafe {
                let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, src.wrapping_add(i)), inv);
                let x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
                let codes = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(x));
                let codes = _mm_mask_blend_epi8(mask, codes, _mm_xor_si128(codes, flip));
                _mm_storeu_si128(dst.add(c * stride + q * 16).cast(), codes);
            }
        }
    }
}

#[inline(always)]
fn tail_mask(n: usize, i: usize) -> __mmask16 {
    let left = n - i;
    if left >= 16 {
        0xFFFF
    } else {
        ((1u32 << left) - 1) as u16
    }
}

/// `max |x|` over `n` floats, NaN if any is NaN.
///
/// # Safety
/// `src` readable for `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn max_abs_avx512(_t: Avx512, src: *const f32, n: usize) -> f32 {
    let mut m = _mm512_setzero_ps();
    let mut nan: __mmask16 = 0;
    let mut i = 0;
    while i < n {
        // SAFETY: masked-off lanes are not read.
        let x = unsafe { _mm512_maskz_loadu_ps(tail_mask(n, i), src.add(i)) };
        nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        m = _mm512_max_ps(m, _mm512_abs_ps(x));
        i += 16;
    }
    if nan != 0 {
        f32::NAN
    } else {
        _mm512_reduce_max_ps(m)
    }
}

/// Vector form of [`quantize_with`]'s scalar branch, same results (the
/// conversion rounds to nearest even under the default MXCSR, like
/// `round_ties_even`).
///
/// # Safety
/// `src` readable and `dst` writable for `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
unsafe fn quantize_avx512(
    _t: Avx512,
    src: *const f32,
    dst: *mut u8,
    n: usize,
    scale: f32,
    offset_u8: bool,
) {
    let inv = _mm512_set1_ps(1.0 / scale);
    let lo = _mm512_set1_ps(-QMAX);
    let hi = _mm512_set1_ps(QMAX);
    let flip = _mm_set1_epi8(if offset_u8 { -128 } else { 0 });
    let mut i = 0;
    while i < n {
        let mask = tail_mask(n, i);
        // SAFETY: masked-off lanes are neither read nor written.
        unsafe {
            let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, src.add(i)), inv);
            let x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
            // NaN lanes: min/max return their second operand, so they are
            // clamped to +127 here; the scale is NaN, so results are NaN anyway.
            let q = _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(x));
            _mm_mask_storeu_epi8(dst.add(i).cast(), mask, _mm_xor_si128(q, flip));
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn zeros_and_extremes() {
        assert_eq!(scale_for(0.0), 1.0);
        let row = [0.0f32, -3.0, 1.5, 3.0];
        let mut q = [0u8; 4];
        let s = quantize_row(None, &row, &mut q, false);
        assert_eq!(s, 3.0 / 127.0);
        assert_eq!(q.map(|b| b as i8), [0, -127, 64, 127]);
        let s2 = quantize_row(None, &row, &mut q, true);
        assert_eq!(s, s2);
        assert_eq!(q, [128, 1, 192, 255]);
    }

    #[test]
    fn vector_matches_scalar() {
        let Some(t) = Avx512::try_new() else {
            eprintln!("skipped: no AVX-512");
            return;
        };
        let mut state = 12345u32;
        let src: Vec<f32> = (0..203)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 24) as f32 * 8.0 - 4.0
            })
            .collect();
        for len in [1, 16, 17, 203] {
            for flip in [false, true] {
                let (mut a, mut b) = (vec![7u8; len + 2], vec![7u8; len + 2]);
                let sa = quantize_row(None, &src[..len], &mut a, flip);
                let sb = quantize_row(Some(t), &src[..len], &mut b, flip);
                assert_eq!(sa, sb);
                assert_eq!(a, b, "len {len} flip {flip}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Dequantised codes are within half a step (plus f32 rounding).
        #[test]
        fn round_trip_within_half_step(row in proptest::collection::vec(-1e4f32..1e4, 1..80), flip: bool) {
            let mut q = vec![0u8; row.len()];
            let scale = quantize_row(Avx512::try_new(), &row, &mut q, flip);
            prop_assert_eq!(scale, scale_for(max_abs(row.iter().copied())));
            for (&x, &b) in row.iter().zip(&q) {
                let code = (if flip { b ^ 0x80 } else { b }) as i8;
                prop_assert!(code != -128);
                let err = (x - dequantize(code, scale)).abs();
                prop_assert!(err <= scale * 0.5 * (1.0 + 1e-5) + x.abs() * 1e-6, "{} -> {} err {}", x, code, err);
            }
        }

        /// Codes times a scale quantise back to the same codes.
        #[test]
        fn codes_round_trip(mut codes in proptest::collection::vec(-127i8..=127, 1..80), scale in 1e-3f32..1e3, at: usize, neg: bool) {
            // One code at full scale, so the row's scale is `scale` again.
            let at = at % codes.len();
            codes[at] = if neg { -127 } else { 127 };
            let row: Vec<f32> = codes.iter().map(|&c| dequantize(c, scale)).collect();
            let mut q = vec![0u8; row.len()];
            let s = quantize_row(Avx512::try_new(), &row, &mut q, false);
            prop_assert!((s - scale).abs() <= scale * 1e-6);
            prop_assert_eq!(q.iter().map(|&b| b as i8).collect::<Vec<_>>(), codes);
        }
    }
}
