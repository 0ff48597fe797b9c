//! bfloat16: the top 16 bits of an IEEE f32 (1 sign, 8 exponent, 7 stored
//! mantissa bits; 8 significant bits, unit roundoff `u = 2^-8`).
//!
//! f32 -> bf16 rounds to nearest, ties to even, on the bit pattern: add
//! `0x7FFF + lsb` and truncate. This is exact RNE for every finite input,
//! overflows to infinity exactly where RNE does, and keeps denormals (no
//! flush, unlike `VCVTNEPS2BF16`). NaN is kept a NaN: sign and top payload
//! bits are kept and the quiet bit forced, so a payload living only in the
//! low 16 bits cannot turn into infinity. The AVX-512 row converter computes
//! the same bits (tested against the scalar one on random patterns), and so
//! does the AVX512_BF16 one: `VCVTNE2PS2BF16` rounds and quiets NaN the
//! same way but flushes denormals, so a row holding one is converted again
//! by the exact path (one `VFPCLASSPS` per 16 values finds them).

use core::arch::x86_64::*;

use crate::isa::{Avx512, Avx512Bf16};

/// A bfloat16 value as its bit pattern.
pub type Bf16 = u16;

/// f32 -> bf16, round to nearest even, NaN kept NaN.
#[inline]
pub fn f32_to_bf16(x: f32) -> Bf16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as Bf16;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7FFF + lsb) >> 16) as Bf16
}

/// bf16 -> f32, exact.
#[inline]
pub fn bf16_to_f32(h: Bf16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// Converts `src` into `dst[..src.len()]` with [`f32_to_bf16`] (AVX-512
/// when the token is given). `dst` must be at least as long as `src`.
pub fn convert_slice(avx512: Option<Avx512>, src: &[f32], dst: &mut [Bf16]) {
    assert!(dst.len() >= src.len(), "bf16 destination too short");
    match avx512 {
        // SAFETY: the token proves AVX-512; both pointers cover `src.len()` elements.
        Some(t) => unsafe { convert_avx512(t, src.as_ptr(), dst.as_mut_ptr(), src.len()) },
        None => {
            for (d, &s) in dst.iter_mut().zip(src) {
                *d = f32_to_bf16(s);
            }
        }
    }
}

/// Converts `n` contiguous floats at `src` to bf16 at `dst`.
///
/// # Safety
/// `src` readable and `dst` writable for `n` elements.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn convert_avx512(_t: Avx512, src: *const f32, dst: *mut Bf16, n: usize) {
    let mut i = 0;
    while i < n {
        let left = n - i;
        let mask: __mmask16 = if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as u16
        };
        // SAFETY: lanes past `left` are masked off (neither read nor written).
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, src.add(i));
            let h = round_to_bf16(x);
            _mm256_mask_storeu_epi16(dst.add(i).cast(), mask, h);
        }
        i += 16;
    }
}

/// Converts `k` contiguous floats at `src` into `chunks` runs of 32 bf16
/// (64 bytes), run `c` at `dst + c * stride`, zero past `k`: one row of a
/// tile-blocked A in one pass.
///
/// # Safety
/// `src` readable for `k` floats; each run writable; `k <= 32 * chunks`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) unsafe fn convert_to_chunks(
    _t: Avx512,
    src: *const f32,
    k: usize,
    chunks: usize,
    dst: *mut u8,
    stride: usize,
) {
    let mask = |i: usize| -> __mmask16 {
        let left = k.saturating_sub(i);
        if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as u16
        }
    };
    for c in 0..chunks {
        let i = c * 32;
        // SAFETY: masked loads read only lanes below `k`; the 64-byte run is
        // writable (contract).
        unsafe {
            let lo = round_to_bf16(_mm512_maskz_loadu_ps(mask(i), src.wrapping_add(i)));
            let hi = round_to_bf16(_mm512_maskz_loadu_ps(
                mask(i + 16),
                src.wrapping_add(i + 16),
            ));
            let v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            _mm512_storeu_si512(dst.add(c * stride).cast(), v);
        }
    }
}

/// As [`convert_to_chunks`], two `VCVTNE2PS2BF16` per run instead of two
/// rounding sequences: A's conversion is a tenth of a 2048^3 bf16 GEMM
/// and more of a narrow one (2048 x 2048 x 128, thread CPU time, 3
/// interleaved runs: 759-776 -> 827-839 GFLOP/s; 2048^3 within noise, 1-3%).
/// Same bits: a row with a denormal is redone by [`convert_to_chunks`].
///
/// # Safety
/// As [`convert_to_chunks`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")]
pub(crate) unsafe fn convert_to_chunks_bf16(
    t: Avx512Bf16,
    src: *const f32,
    k: usize,
    chunks: usize,
    dst: *mut u8,
    stride: usize,
) {
    let mask = |i: usize| -> __mmask16 {
        let left = k.saturating_sub(i);
        if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as u16
        }
    };
    // VFPCLASSPS category 0x20: denormal.
    let mut denormal: __mmask16 = 0;
    for c in 0..chunks {
        let i = c * 32;
        // SAFETY: masked loads read only lanes below `k` (zero elsewhere);
        // the 64-byte run is writable (contract).
        unsafe {
            let lo = _mm512_maskz_loadu_ps(mask(i), src.wrapping_add(i));
            let hi = _mm512_maskz_loadu_ps(mask(i + 16), src.wrapping_add(i + 16));
            denormal |= _mm512_fpclass_ps_mask::<0x20>(lo) | _mm512_fpclass_ps_mask::<0x20>(hi);
            let v: __m512i = core::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(dst.add(c * stride).cast(), v);
        }
    }
    if denormal != 0 {
        // SAFETY: the caller's contract, unchanged; the token's features
        // include AVX-512 F/BW/VL/DQ.
        unsafe { convert_to_chunks(t.avx512(), src, k, chunks, dst, stride) };
    }
}

/// 16 f32 -> 16 bf16 bit patterns, same rule as [`f32_to_bf16`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
pub(crate) fn round_to_bf16(x: __m512) -> __m256i {
    let v = _mm512_castps_si512(x);
    let hi = _mm512_srli_epi32::<16>(v);
    let lsb = _mm512_and_si512(hi, _mm512_set1_epi32(1));
    let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF));
    let rounded = _mm512_srli_epi32::<16>(_mm512_add_epi32(v, bias));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let quiet = _mm512_or_si512(hi, _mm512_set1_epi32(0x40));
    _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to even (1).
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        // Just above halfway rounds up.
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20)), 0x3F81);
        assert_eq!(f32_to_bf16(-2.0), 0xC000);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7F80);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xFF80);
        // f32::MAX is above bf16's largest finite + half an ulp: infinity.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
        // The smallest f32 denormal is below half a bf16 denormal ulp: zero.
        assert_eq!(f32_to_bf16(f32::from_bits(1)), 0);
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
    }

    #[test]
    fn nan_stays_nan_even_with_low_payload() {
        for bits in [0x7FC0_0000u32, 0x7F80_0001, 0xFF80_0001, 0x7FFF_FFFF] {
            let h = f32_to_bf16(f32::from_bits(bits));
            assert!(bf16_to_f32(h).is_nan(), "{bits:#x} -> {h:#x}");
            assert_eq!(h & 0x8000, ((bits >> 16) & 0x8000) as u16, "sign kept");
        }
    }

    #[test]
    fn vector_matches_scalar() {
        let Some(t) = Avx512::try_new() else {
            eprintln!("skipped: no AVX-512");
            return;
        };
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let src: Vec<f32> = (0..1000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                f32::from_bits(state as u32)
            })
            .chain([
                f32::NAN,
                -0.0,
                f32::MAX,
                f32::MIN_POSITIVE,
                1.0 + 2f32.powi(-8),
            ])
            .collect();
        for len in [0, 1, 15, 16, 17, src.len()] {
            let mut got = vec![0xAAAAu16; len + 3];
            convert_slice(Some(t), &src[..len], &mut got);
            for i in 0..len {
                assert_eq!(got[i], f32_to_bf16(src[i]), "{:#x}", src[i].to_bits());
            }
            assert_eq!(&got[len..], &[0xAAAA; 3], "wrote past the end");
        }
    }

    #[test]
    fn bf16_instruction_rows_match_scalar() {
        let Some(t) = Avx512Bf16::try_new() else {
            eprintln!("skipped: no AVX512_BF16");
            return;
        };
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u32
        };
        // Rows of random patterns, of ordinary values, and ordinary values
        // with one denormal (flushed by the instruction, kept here).
        let random: Vec<f32> = (0..100).map(|_| f32::from_bits(next())).collect();
        let ordinary: Vec<f32> = (0..100).map(|i| i as f32 * 0.37 - 11.0).collect();
        let mut with_denormal = ordinary.clone();
        with_denormal[57] = f32::from_bits(0x0000_1234);
        let specials = vec![
            f32::NAN,
            -0.0,
            0.0,
            f32::INFINITY,
            f32::MAX,
            1.0 + 2f32.powi(-8),
        ];
        for row in [&random, &ordinary, &with_denormal, &specials] {
            for k in [1, 31, 32, 33, row.len()] {
                let k = k.min(row.len());
                let chunks = k.div_ceil(32);
                let mut got = vec![0xAAu8; chunks * 128];
                // SAFETY: `row` holds `k` floats; run `c` is the 64 bytes at
                // `c * 128` of `got`.
                unsafe {
                    convert_to_chunks_bf16(t, row.as_ptr(), k, chunks, got.as_mut_ptr(), 128)
                };
                for c in 0..chunks {
                    for e in 0..32 {
                        let h =
                            u16::from_le_bytes([got[c * 128 + 2 * e], got[c * 128 + 2 * e + 1]]);
                        let p = c * 32 + e;
                        let want = if p < k { f32_to_bf16(row[p]) } else { 0 };
                        assert_eq!(
                            h,
                            want,
                            "k {k}, element {p}: {:#x}",
                            row.get(p).map_or(0, |x| x.to_bits())
                        );
                    }
                    assert!(
                        got[c * 128 + 64..(c + 1) * 128].iter().all(|&b| b == 0xAA),
                        "wrote between runs"
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The round trip is the nearest bf16: within half an ulp
        /// (relative `2^-8`), and no other bf16 neighbour is closer.
        #[test]
        fn round_trip_is_nearest(bits in any::<u32>()) {
            let x = f32::from_bits(bits);
            let h = f32_to_bf16(x);
            let y = bf16_to_f32(h);
            if x.is_nan() {
                prop_assert!(y.is_nan());
            } else if y.is_finite() {
                let err = (f64::from(y) - f64::from(x)).abs();
                for nb in [h.wrapping_add(1), h.wrapping_sub(1)] {
                    let z = bf16_to_f32(nb);
                    if z.is_finite() && !z.is_nan() {
                        prop_assert!(err <= (f64::from(z) - f64::from(x)).abs());
                    }
                }
                // Relative half-ulp, or half of bf16's smallest denormal (2^-133).
                prop_assert!(err <= f64::from(x).abs() * 2f64.powi(-8) + 2f64.powi(-134));
            } else {
                // Overflow only past bf16's largest finite plus half an ulp.
                prop_assert!(x.abs() >= 3.3961776e38);
            }
        }

        /// bf16 values survive f32 -> bf16 -> f32 unchanged.
        #[test]
        fn representable_values_round_trip(h in any::<u16>()) {
            let x = bf16_to_f32(h);
            prop_assume!(!x.is_nan());
            prop_assert_eq!(f32_to_bf16(x), h);
        }
    }
}
