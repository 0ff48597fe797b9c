//! Per-layer precision: the runtime packs each layer's weights at model
//! load in the precision it picks ([`PackedWeights::pack`]), and every
//! call then runs that layer's GEMM through one entry point
//! ([`PackedWeights::gemm`]).
//!
//! [`native_precisions`] says which precisions this machine runs in
//! hardware (for `pinned info`): f32 always; bf16 with AMX-BF16 or
//! AVX512_BF16; int8 with AMX-INT8 or AVX512_VNNI. A non-native
//! precision still runs (the portable fallback) but slower than f32.

use crate::gemm::{self, BMatrix, Epilogue, GemmError, MatMut, MatRef, PackedB, Team};
use crate::isa::{Isa, IsaError};
use crate::lowp::{self, Elem, LowpPath, PackedLowp};

/// The element type a layer's weights are stored and multiplied in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Precision {
    F32,
    Bf16,
    Int8,
}

impl Precision {
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::Int8];

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    pub fn parse(name: &str) -> Result<Precision, PrecisionError> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| PrecisionError(name.to_owned()))
    }

    /// The low-precision element, `None` for f32.
    pub fn elem(self) -> Option<Elem> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Elem::Bf16),
            Precision::Int8 => Some(Elem::Int8),
        }
    }

    /// Bytes per weight (what a memory-bound layer reads).
    pub fn weight_bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }

    /// The hardware path this precision runs on here (`avx512`, `amx-bf16`,
    /// `avx512-vnni`...), or `None` when only the portable fallback would.
    pub fn native_path(self) -> Option<&'static str> {
        match self.elem() {
            None => Some(Isa::best().name()),
            Some(elem) => {
                let best = LowpPath::best(elem);
                (best != LowpPath::Fallback).then(|| best.describe(elem))
            }
        }
    }

    /// Whether this machine multiplies in this precision in hardware.
    pub fn is_native(self) -> bool {
        self.native_path().is_some()
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = PrecisionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An unknown precision name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown precision `{0}` (expected one of: f32, bf16, int8)")]
pub struct PrecisionError(pub String);

/// The precisions this machine runs natively, with the path each uses,
/// fastest-to-pick last: e.g. `[(F32, "avx512"), (Bf16, "amx-bf16"),
/// (Int8, "amx-int8")]`. For `pinned info`.
pub fn native_precisions() -> Vec<(Precision, &'static str)> {
    Precision::ALL
        .into_iter()
        .filter_map(|p| p.native_path().map(|path| (p, path)))
        .collect()
}

/// Which kernels run each precision: decided once per process or plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelPaths {
    pub f32: Isa,
    pub bf16: LowpPath,
    pub int8: LowpPath,
}

impl KernelPaths {
    /// The best here, unless `PINNED_ISA` / `PINNED_LOWP_PATH` force one
    /// (a forced path missing here is an error).
    pub fn from_env() -> Result<Self, IsaError> {
        Ok(Self {
            f32: Isa::from_env()?,
            bf16: LowpPath::from_env(Elem::Bf16)?,
            int8: LowpPath::from_env(Elem::Int8)?,
        })
    }

    /// The fastest paths usable here, ignoring the environment.
    pub fn best() -> Self {
        Self {
            f32: Isa::best(),
            bf16: LowpPath::best(Elem::Bf16),
            int8: LowpPath::best(Elem::Int8),
        }
    }
}

/// One layer's weights, packed at load in the precision chosen for it.
#[derive(Debug)]
pub enum PackedWeights<'m> {
    F32(PackedB<'m>),
    Bf16(PackedLowp<'m>),
    Int8(PackedLowp<'m>),
}

impl PackedWeights<'static> {
    /// Converts and packs a `k x n` view (e.g. `[out][in]` weights via
    /// `MatRef::t`) in `precision`, for `paths.f32`'s layout when f32.
    pub fn pack(
        b: MatRef<'_>,
        precision: Precision,
        paths: &KernelPaths,
    ) -> Result<Self, GemmError> {
        Ok(match precision {
            Precision::F32 => PackedWeights::F32(PackedB::from_view(b, paths.f32)?),
            Precision::Bf16 => PackedWeights::Bf16(PackedLowp::new(b, Elem::Bf16)),
            Precision::Int8 => PackedWeights::Int8(PackedLowp::new(b, Elem::Int8)),
        })
    }
}

impl PackedWeights<'_> {
    pub fn precision(&self) -> Precision {
        match self {
            PackedWeights::F32(_) => Precision::F32,
            PackedWeights::Bf16(_) => Precision::Bf16,
            PackedWeights::Int8(_) => Precision::Int8,
        }
    }
    pub fn k(&self) -> usize {
        match self {
            PackedWeights::F32(p) => p.k(),
            PackedWeights::Bf16(p) | PackedWeights::Int8(p) => p.k(),
        }
    }
    pub fn n(&self) -> usize {
        match self {
            PackedWeights::F32(p) => p.n(),
            PackedWeights::Bf16(p) | PackedWeights::Int8(p) => p.n(),
        }
    }

    /// Workspace bytes for any call of up to `m` rows on `threads` threads.
    pub fn scratch_bytes(&self, m: usize, threads: usize, paths: &KernelPaths) -> usize {
        match self {
            PackedWeights::F32(_) => {
                gemm::gemm_scratch_bytes_parallel(m, self.n(), self.k(), paths.f32, threads)
            }
            PackedWeights::Bf16(_) => lowp::scratch_bytes(Elem::Bf16, m, self.k()),
            PackedWeights::Int8(_) => lowp::scratch_bytes(Elem::Int8, m, self.k()),
        }
    }

    /// `C = epilogue(alpha * A * W + beta * C)` in this layer's precision.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        &self,
        team: &dyn Team,
        paths: &KernelPaths,
        alpha: f32,
        a: MatRef<'_>,
        beta: f32,
        c: MatMut<'_>,
        epilogue: &Epilogue<'_>,
        scratch: &mut [u8],
    ) -> Result<(), GemmError> {
        match self {
            PackedWeights::F32(p) => gemm::sgemm_parallel(
                team,
                paths.f32,
                alpha,
                a,
                BMatrix::Packed(p),
                beta,
                c,
                epilogue,
                scratch,
            ),
            PackedWeights::Bf16(p) => {
                lowp::gemm_parallel(team, paths.bf16, alpha, a, p, beta, c, epilogue, scratch)
            }
            PackedWeights::Int8(p) => {
                lowp::gemm_parallel(team, paths.int8, alpha, a, p, beta, c, epilogue, scratch)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::SingleThread;

    #[test]
    fn names_and_native_report() {
        for p in Precision::ALL {
            assert_eq!(Precision::parse(p.name()), Ok(p));
        }
        assert!(Precision::parse("fp8").is_err());
        let native = native_precisions();
        assert_eq!(native.first().map(|n| n.0), Some(Precision::F32));
        let f = crate::cpu::cpu_features();
        let has_bf16 = native.iter().any(|n| n.0 == Precision::Bf16);
        assert_eq!(has_bf16, LowpPath::best(Elem::Bf16) != LowpPath::Fallback);
        if has_bf16 {
            assert!(f.amx_bf16 || f.avx512_bf16);
        }
    }

    #[test]
    fn every_precision_runs_the_same_layer() {
        let (m, k, n) = (3, 70, 40);
        let w: Vec<f32> = (0..k * n)
            .map(|i| ((i * 7919) % 23) as f32 / 23.0 - 0.5)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104_729) % 17) as f32 / 17.0 - 0.5)
            .collect();
        let mut exact = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                exact[i * n + j] = (0..k)
                    .map(|p| f64::from(x[i * k + p]) * f64::from(w[p * n + j]))
                    .sum();
            }
        }
        let paths = KernelPaths::best();
        let view = MatRef::new(&w, k, n, n).expect("w");
        for precision in Precision::ALL {
            let layer = PackedWeights::pack(view, precision, &paths).expect("pack");
            assert_eq!((layer.precision(), layer.k(), layer.n()), (precision, k, n));
            let mut scratch = vec![0u8; layer.scratch_bytes(m, 1, &paths)];
            let mut y = vec![f32::NAN; m * n];
            let a = MatRef::new(&x, m, k, k).expect("x");
            let c = MatMut::new(&mut y, m, n, n).expect("y");
            layer
                .gemm(
                    &SingleThread,
                    &paths,
                    1.0,
                    a,
                    0.0,
                    c,
                    &Epilogue::new(),
                    &mut scratch,
                )
                .expect("gemm");
            // Loose: |x|, |w| <= 0.5, K = 70; int8 steps are 1/254 of 0.5.
            let tol = match precision {
                Precision::F32 => 1e-4,
                Precision::Bf16 => 0.05,
                Precision::Int8 => 0.2,
            };
            for (got, want) in y.iter().zip(&exact) {
                assert!(
                    (f64::from(*got) - want).abs() <= tol,
                    "{precision}: {got} vs {want}"
                );
            }
        }
    }
}
