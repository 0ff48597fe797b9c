//! The portable fallback: plain Rust over the same packed layout, for
//! CPUs with neither AMX nor the AVX-512 dot products (and for valgrind,
//! whose CPUID hides both). bf16 widens to f32 and accumulates in f32
//! (the fp32 path's arithmetic); int8 accumulates s8 x s8 in i32.
//!
//! One body per element type; the driver instantiates it inside an
//! AVX-512 or AVX2 `#[target_feature]` wrapper when those exist, where
//! the 32-wide inner loops vectorise, and as plain code otherwise.

use super::driver::{KTile, LowpKernel, A_CHUNK};
use super::Elem;
use crate::simd::Simd;

const MR: usize = 8;

/// bf16 fallback; `S` is the ISA the write-out runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableBf16<S>(pub S);

/// int8 fallback; `S` is the ISA the write-out runs on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortableInt8<S>(pub S);

impl<S: Simd> LowpKernel for PortableBf16<S> {
    const MR: usize = MR;
    const ELEM: Elem = Elem::Bf16;
    const A_U8: bool = false;
    const KC: usize = 384;
    type S = S;
    fn simd(self) -> S {
        self.0
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc_out: *mut u8, acc_stride: usize, load: bool) {
        for r in 0..t.rows {
            let dst = acc_out.wrapping_add(r * acc_stride);
            let mut acc = if load {
                // SAFETY: `acc_out` rows are readable (run's contract).
                unsafe { dst.cast::<[f32; 32]>().read_unaligned() }
            } else {
                [0.0f32; 32]
            };
            for g in 0..t.kc / 2 {
                // SAFETY: row `r < rows` of A holds `kc` bf16, each panel
                // `kc * 16` (KTile invariants).
                let (a0, a1, p0, p1) = unsafe {
                    let a =
                        t.a.add(r * 64 + (g / 16) * A_CHUNK + (g % 16) * 4)
                            .cast::<[u16; 2]>()
                            .read_unaligned();
                    (
                        widen(a[0]),
                        widen(a[1]),
                        t.b0.add(g * 64).cast::<[u16; 32]>().read_unaligned(),
                        t.b1.add(g * 64).cast::<[u16; 32]>().read_unaligned(),
                    )
                };
                for j in 0..16 {
                    acc[j] += a0 * widen(p0[2 * j]) + a1 * widen(p0[2 * j + 1]);
                    acc[16 + j] += a0 * widen(p1[2 * j]) + a1 * widen(p1[2 * j + 1]);
                }
            }
            // SAFETY: `acc_out` rows are writable (run's contract).
            unsafe { dst.cast::<[f32; 32]>().write_unaligned(acc) };
        }
    }
}

impl<S: Simd> LowpKernel for PortableInt8<S> {
    const MR: usize = MR;
    const ELEM: Elem = Elem::Int8;
    const A_U8: bool = false;
    const KC: usize = 768;
    type S = S;
    fn simd(self) -> S {
        self.0
    }
    #[inline(always)]
    unsafe fn run(self, t: &KTile, acc_out: *mut u8, acc_stride: usize, load: bool) {
        for r in 0..t.rows {
            let dst = acc_out.wrapping_add(r * acc_stride);
            let mut acc = if load {
                // SAFETY: `acc_out` rows are readable (run's contract).
                unsafe { dst.cast::<[i32; 32]>().read_unaligned() }
            } else {
                [0i32; 32]
            };
            for g in 0..t.kc / 4 {
                // SAFETY: as for bf16, with `kc` bytes per row and panel row.
                let (a, p0, p1) = unsafe {
                    (
                        t.a.add(r * 64 + (g / 16) * A_CHUNK + (g % 16) * 4)
                            .cast::<[i8; 4]>()
                            .read_unaligned(),
                        t.b0.add(g * 64).cast::<[i8; 64]>().read_unaligned(),
                        t.b1.add(g * 64).cast::<[i8; 64]>().read_unaligned(),
                    )
                };
                for j in 0..16 {
                    for i in 0..4 {
                        // Wrapping, as the hardware: K <= INT8_MAX_K keeps
                        // real sums in range.
                        acc[j] = acc[j].wrapping_add(i32::from(a[i]) * i32::from(p0[4 * j + i]));
                        acc[16 + j] =
                            acc[16 + j].wrapping_add(i32::from(a[i]) * i32::from(p1[4 * j + i]));
                    }
                }
            }
            // SAFETY: `acc_out` rows are writable (run's contract).
            unsafe { dst.cast::<[i32; 32]>().write_unaligned(acc) };
        }
    }
}

#[inline(always)]
fn widen(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}
