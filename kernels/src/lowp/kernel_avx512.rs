//! AVX-512 dot-product microkernels, the first fallback when AMX is
//! missing: `VDPBF16PS` (bf16 pairs into f32) and `VPDPBUSD` (u8 x s8
//! quads into i32), 8 rows x 32 columns (16 zmm accumulators).
//!
//! Both read B in the same grouped layout as the AMX tiles: one 64-byte
//! panel row is one zmm of 16 pairs (quads), and A's pair (quad) for a
//! row is broadcast as one 32-bit lane.
//!
//! `VPDPBUSD` multiplies an unsigned by a signed byte, so A is stored as
//! `q + 128`: the sum is then `sum q_a q_b + 128 * sum q_b`, and the
//! second term (per column, computed at pack time) is subtracted here.

use core::arch::x86_64::*;

use super::driver::{KTile, LowpKernel, A_CHUNK};
use super::Elem;
use crate::isa::{Avx512, Avx512Bf16, Avx512Vnni};

const MR: usize = 8;

/// Byte offset of row `r`'s 32-bit lane `g` (pair or quad) in a
/// tile-blocked A slice: 16 lanes per 64-byte row chunk, chunks 1 KiB apart.
#[inline(always)]
fn a_lane(r: usize, g: usize) -> usize {
    r * 64 + (g / 16) * A_CHUNK + (g % 16) * 4
}

impl LowpKernel for Avx512Bf16 {
    const MR: usize = MR;
    const ELEM: Elem = Elem::Bf16;
    const A_U8: bool = false;
    /// A 32-column micro-panel of 384 K values is 24 KiB: half of L1d.
    const KC: usize = 384;
    type S = Avx512;
    fn simd(self) -> Avx512 {
        self.avx512()
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc: *mut u8, acc_stride: usize, load: bool) {
        // SAFETY: the token proves AVX512_BF16; bounds are the caller's.
        unsafe {
            match t.rows {
                1 => dot_bf16::<1>(t, acc, acc_stride, load),
                2 => dot_bf16::<2>(t, acc, acc_stride, load),
                3 => dot_bf16::<3>(t, acc, acc_stride, load),
                4 => dot_bf16::<4>(t, acc, acc_stride, load),
                5 => dot_bf16::<5>(t, acc, acc_stride, load),
                6 => dot_bf16::<6>(t, acc, acc_stride, load),
                7 => dot_bf16::<7>(t, acc, acc_stride, load),
                _ => dot_bf16::<8>(t, acc, acc_stride, load),
            }
        }
    }
}

impl LowpKernel for Avx512Vnni {
    const MR: usize = MR;
    const ELEM: Elem = Elem::Int8;
    const A_U8: bool = true;
    const KC: usize = 768;
    type S = Avx512;
    fn simd(self) -> Avx512 {
        self.avx512()
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc: *mut u8, acc_stride: usize, load: bool) {
        // SAFETY: the token proves AVX512_VNNI; bounds are the caller's.
        unsafe {
            match t.rows {
                1 => dot_u8s8::<1>(t, acc, acc_stride, load),
                2 => dot_u8s8::<2>(t, acc, acc_stride, load),
                3 => dot_u8s8::<3>(t, acc, acc_stride, load),
                4 => dot_u8s8::<4>(t, acc, acc_stride, load),
                5 => dot_u8s8::<5>(t, acc, acc_stride, load),
                6 => dot_u8s8::<6>(t, acc, acc_stride, load),
                7 => dot_u8s8::<7>(t, acc, acc_stride, load),
                _ => dot_u8s8::<8>(t, acc, acc_stride, load),
            }
        }
    }
}

/// # Safety
/// AVX512_BF16 available; `t` satisfies the KTile invariants with
/// `t.rows == R` (reads stay within the `R` rows); `out` is readable and
/// writable for `R` rows of 32 f32, `stride` bytes apart.
#[inline(always)]
unsafe fn dot_bf16<const R: usize>(t: &KTile, out: *mut u8, stride: usize, load: bool) {
    // SAFETY: every load is inside the A rows (`kc` bf16 = `kc / 2` lanes
    // each) or the two panels (`kc * 16` bf16 each); `out` as above.
    unsafe {
        let row = |r: usize| out.add(r * stride).cast::<f32>();
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        if load {
            for (r, acc_r) in acc.iter_mut().enumerate() {
                *acc_r = [_mm512_loadu_ps(row(r)), _mm512_loadu_ps(row(r).add(16))];
            }
        }
        for g in 0..t.kc / 2 {
            let b0: __m512bh = core::mem::transmute(_mm512_loadu_si512(t.b0.add(g * 64).cast()));
            let b1: __m512bh = core::mem::transmute(_mm512_loadu_si512(t.b1.add(g * 64).cast()));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let pair = t.a.add(a_lane(r, g)).cast::<i32>().read_unaligned();
                let a: __m512bh = core::mem::transmute(_mm512_set1_epi32(pair));
                acc_r[0] = _mm512_dpbf16_ps(acc_r[0], a, b0);
                acc_r[1] = _mm512_dpbf16_ps(acc_r[1], a, b1);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            _mm512_storeu_ps(row(r), acc_r[0]);
            _mm512_storeu_ps(row(r).add(16), acc_r[1]);
        }
    }
}

/// # Safety
/// AVX512_VNNI available; as [`dot_bf16`] (i32 sums at `out`), A holding
/// `q + 128` bytes and `t.col_sums` 32 column code sums.
#[inline(always)]
unsafe fn dot_u8s8<const R: usize>(t: &KTile, out: *mut u8, stride: usize, load: bool) {
    // SAFETY: as in `dot_bf16`, with `kc / 4` quads per row and panel row.
    unsafe {
        let row = |r: usize| out.add(r * stride).cast::<__m512i>();
        let mut acc = [[_mm512_setzero_si512(); 2]; R];
        for g in 0..t.kc / 4 {
            let b0 = _mm512_loadu_si512(t.b0.add(g * 64).cast());
            let b1 = _mm512_loadu_si512(t.b1.add(g * 64).cast());
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let quad = t.a.add(a_lane(r, g)).cast::<i32>().read_unaligned();
                let a = _mm512_set1_epi32(quad);
                acc_r[0] = _mm512_dpbusd_epi32(acc_r[0], a, b0);
                acc_r[1] = _mm512_dpbusd_epi32(acc_r[1], a, b1);
            }
        }
        // The u8 offset adds 128 * (column code sum over this K slice);
        // padding codes are 0, so the slice sum is the pack-time sum only
        // when the slice is all of K: split slices are corrected below.
        let corr = correction(t);
        for (r, acc_r) in acc.iter().enumerate() {
            for h in 0..2 {
                let mut v = _mm512_sub_epi32(acc_r[h], corr[h]);
                if load {
                    v = _mm512_add_epi32(v, _mm512_loadu_si512(row(r).add(h).cast()));
                }
                _mm512_storeu_si512(row(r).add(h).cast(), v);
            }
        }
    }
}

/// `128 * sum_p q_b[p, j]` over this tile's K slice, for its 32 columns.
///
/// # Safety
/// As [`dot_u8s8`].
#[inline(always)]
unsafe fn correction(t: &KTile) -> [__m512i; 2] {
    // SAFETY: the panel reads match the kernel's own (same `kc`), and the
    // full-K sums are 32 readable entries.
    unsafe {
        if t.full_k {
            let c0 = _mm512_loadu_si512(t.col_sums.cast());
            let c1 = _mm512_loadu_si512(t.col_sums.add(16).cast());
            return [_mm512_slli_epi32::<7>(c0), _mm512_slli_epi32::<7>(c1)];
        }
        // Sum the slice's codes: VPDPBUSD with all-ones u8 against B.
        let ones = _mm512_set1_epi8(1);
        let mut s = [_mm512_setzero_si512(); 2];
        for g in 0..t.kc / 4 {
            s[0] = _mm512_dpbusd_epi32(s[0], ones, _mm512_loadu_si512(t.b0.add(g * 64).cast()));
            s[1] = _mm512_dpbusd_epi32(s[1], ones, _mm512_loadu_si512(t.b1.add(g * 64).cast()));
        }
        [_mm512_slli_epi32::<7>(s[0]), _mm512_slli_epi32::<7>(s[1])]
    }
}
