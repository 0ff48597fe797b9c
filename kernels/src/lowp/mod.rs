//! bf16 and int8 GEMM: `C = epilogue(alpha * A * B + beta * C)` with fp32
//! A and C, and B pre-converted weights ([`PackedLowp`]).
//!
//! # API
//!
//! ```
//! use pinned_kernels::gemm::{Epilogue, MatMut, MatRef};
//! use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};
//! # fn main() -> Result<(), pinned_kernels::gemm::GemmError> {
//! let (m, k, n) = (4, 384, 1536);
//! let w = vec![0.01f32; k * n];
//! // Load time: convert + pack once (pack_into for caller memory).
//! let packed = PackedLowp::new(MatRef::new(&w, k, n, n)?, Elem::Bf16);
//! let path = LowpPath::from_env(Elem::Bf16)?;      // PINNED_LOWP_PATH or the best
//! let mut scratch = vec![0u8; lowp::scratch_bytes(Elem::Bf16, m, k)];
//! let x = vec![1.0f32; m * k];
//! let mut y = vec![0.0f32; m * n];
//! lowp::gemm(path, 1.0, MatRef::new(&x, m, k, k)?, &packed, 0.0,
//!            MatMut::new(&mut y, m, n, n)?, &Epilogue::new().relu(), &mut scratch)?;
//! # Ok(()) }
//! ```
//!
//! - bf16: A rounded to bf16 while it is packed, products exact in fp32,
//!   fp32 accumulation. int8: A quantised per row (symmetric, dynamic),
//!   weights per column, i32 accumulation, dequantised to fp32 before the
//!   epilogue. Same [`Epilogue`](crate::gemm::Epilogue), errors and
//!   [`Team`](crate::gemm::Team) as the fp32 GEMM.
//! - Paths ([`LowpPath`]): `amx` (tiles, 32 x 32 blocks), `avx512`
//!   (`VDPBF16PS` / `VPDPBUSD`), `fallback` (portable fp32 / i32 code, any
//!   CPU). The packed layout is the same for all three.

mod driver;
mod kernel_amx;
mod kernel_avx512;
mod kernel_portable;
mod packed;
mod strips;

pub use driver::{gemm, gemm_parallel, scratch_bytes, INT8_MAX_K};
pub use packed::{PackedBf16, PackedInt8, PackedLowp, LOWP_ALIGN};

use crate::isa::{AmxBf16, AmxInt8, Avx512Bf16, Avx512Vnni, IsaError};

/// The weight element type of a low-precision GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Elem {
    Bf16,
    Int8,
}

impl Elem {
    pub fn name(self) -> &'static str {
        match self {
            Elem::Bf16 => "bf16",
            Elem::Int8 => "int8",
        }
    }
    /// Bytes per element.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Elem::Bf16 => 2,
            Elem::Int8 => 1,
        }
    }
    /// Values grouped along K in one 32-bit lane (bf16 pairs, int8 quads).
    pub(crate) fn group(self) -> usize {
        4 / self.bytes()
    }
    /// K depth of one 64-byte tile row: the padding unit of K.
    pub(crate) fn k_step(self) -> usize {
        64 / self.bytes()
    }
}

/// Which implementation runs a low-precision GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum LowpPath {
    /// Portable code (fp32 accumulation for bf16, i32 for int8); any CPU.
    Fallback,
    /// AVX512_BF16 `VDPBF16PS` (bf16) or AVX512_VNNI `VPDPBUSD` (int8).
    Avx512,
    /// AMX tiles: `TDPBF16PS` (bf16) or `TDPBSSD` (int8).
    Amx,
}

/// The environment variable that forces a low-precision path.
pub const LOWP_PATH_ENV: &str = "PINNED_LOWP_PATH";

impl LowpPath {
    /// Slowest first.
    pub const ALL: [LowpPath; 3] = [LowpPath::Fallback, LowpPath::Avx512, LowpPath::Amx];

    /// The force-switch name (`amx`, `avx512`, `fallback`).
    pub fn name(self) -> &'static str {
        match self {
            LowpPath::Fallback => "fallback",
            LowpPath::Avx512 => "avx512",
            LowpPath::Amx => "amx",
        }
    }

    /// What the path runs for `elem`, for reports (`amx-bf16`,
    /// `avx512-vnni`, `fallback-fp32`...).
    pub fn describe(self, elem: Elem) -> &'static str {
        match (self, elem) {
            (LowpPath::Amx, Elem::Bf16) => "amx-bf16",
            (LowpPath::Amx, Elem::Int8) => "amx-int8",
            (LowpPath::Avx512, Elem::Bf16) => "avx512-bf16",
            (LowpPath::Avx512, Elem::Int8) => "avx512-vnni",
            (LowpPath::Fallback, Elem::Bf16) => "fallback-fp32",
            (LowpPath::Fallback, Elem::Int8) => "fallback-i32",
        }
    }

    pub fn is_available(self, elem: Elem) -> bool {
        match (self, elem) {
            (LowpPath::Fallback, _) => true,
            (LowpPath::Avx512, Elem::Bf16) => Avx512Bf16::try_new().is_some(),
            (LowpPath::Avx512, Elem::Int8) => Avx512Vnni::try_new().is_some(),
            (LowpPath::Amx, Elem::Bf16) => AmxBf16::try_new().is_some(),
            (LowpPath::Amx, Elem::Int8) => AmxInt8::try_new().is_some(),
        }
    }

    /// The paths usable here for `elem`, slowest first.
    pub fn available(elem: Elem) -> impl Iterator<Item = LowpPath> {
        Self::ALL.into_iter().filter(move |p| p.is_available(elem))
    }

    /// The fastest usable path for `elem`.
    pub fn best(elem: Elem) -> LowpPath {
        Self::available(elem).last().unwrap_or(LowpPath::Fallback)
    }

    /// Parses a name (`fp32` is accepted for `fallback`); does not check
    /// availability.
    pub fn parse(name: &str) -> Result<LowpPath, IsaError> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("fp32") {
            return Ok(LowpPath::Fallback);
        }
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| IsaError::UnknownLowpPath(name.to_owned()))
    }

    /// `self` if usable for `elem` here, else [`IsaError::Unavailable`].
    pub fn require(self, elem: Elem) -> Result<LowpPath, IsaError> {
        if self.is_available(elem) {
            Ok(self)
        } else {
            let names: Vec<&str> = Self::available(elem).map(LowpPath::name).collect();
            Err(IsaError::Unavailable(self.describe(elem), names.join(", ")))
        }
    }

    /// `PINNED_LOWP_PATH` when set (failing loudly if that path is
    /// missing for `elem`), else [`LowpPath::best`].
    pub fn from_env(elem: Elem) -> Result<LowpPath, IsaError> {
        match std::env::var(LOWP_PATH_ENV) {
            Ok(name) if !name.trim().is_empty() => Self::parse(&name)?.require(elem),
            _ => Ok(Self::best(elem)),
        }
    }
}

impl std::fmt::Display for LowpPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_missing_paths_fail_loudly() {
        for p in LowpPath::ALL {
            assert_eq!(LowpPath::parse(p.name()), Ok(p));
        }
        assert_eq!(LowpPath::parse(" FP32 "), Ok(LowpPath::Fallback));
        assert!(matches!(
            LowpPath::parse("tpu"),
            Err(IsaError::UnknownLowpPath(_))
        ));
        for elem in [Elem::Bf16, Elem::Int8] {
            assert!(LowpPath::best(elem).is_available(elem));
            for p in LowpPath::ALL {
                match p.require(elem) {
                    Ok(got) => assert!(got.is_available(elem)),
                    Err(IsaError::Unavailable(name, _)) => {
                        assert_eq!(name, p.describe(elem));
                        assert!(!p.is_available(elem));
                    }
                    Err(e) => panic!("unexpected {e}"),
                }
            }
        }
    }

    #[test]
    fn amx_path_implies_the_tokens() {
        if LowpPath::Amx.is_available(Elem::Bf16) {
            assert!(crate::cpu::amx_permission_granted());
            assert!(crate::cpu::cpu_features().amx_bf16);
        }
    }
}
