//! Instruction sets as types.
//!
//! Each ISA is a zero-sized token that only [`cpu_features`] detection can
//! create (`try_new() -> Option<Self>`). A kernel that needs AVX-512 takes an
//! [`Avx512`] token by value, so the `unsafe` call into its
//! `#[target_feature]` body is justified by one line: the token exists.
//!
//! [`Isa`] is the plain-data name of a path, used by plans and the force
//! switch (`PINNED_ISA=scalar|avx2|avx512`). Forcing an ISA this CPU (or
//! this OS, or valgrind's emulated CPUID) lacks is an error, never a silent
//! fallback: a test that forces AVX-512 must run AVX-512 or fail.
//!
//! Room is left for the AMX engineer: add `AmxBf16`, `Avx512Bf16`, `Vnni`
//! tokens here (AMX's `try_new` must also call `request_amx_permission`) and
//! a variant to [`Isa`] (it is `#[non_exhaustive]`).

use crate::cpu::cpu_features;

/// Proof that the scalar path may run (always).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scalar {
    _private: (),
}

impl Scalar {
    pub fn new() -> Self {
        Self { _private: () }
    }
}

impl Default for Scalar {
    fn default() -> Self {
        Self::new()
    }
}

/// Proof that AVX2 and FMA are usable (CPU bits and OS YMM state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx2 {
    _private: (),
}

impl Avx2 {
    pub fn try_new() -> Option<Self> {
        cpu_features()
            .avx2_fma_usable()
            .then_some(Self { _private: () })
    }
}

/// Proof that AVX-512 F/BW/VL/DQ are usable (CPU bits and OS ZMM/opmask
/// state in XCR0). Implies [`Avx2`] on every CPU that has shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512 {
    _private: (),
}

impl Avx512 {
    pub fn try_new() -> Option<Self> {
        let f = cpu_features();
        (f.avx512_usable() && f.avx2_fma_usable()).then_some(Self { _private: () })
    }
}

/// Proof that AVX-512 and AVX512_BF16 (`VDPBF16PS`, `VCVTNE2PS2BF16`) are usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512Bf16 {
    _private: (),
}

impl Avx512Bf16 {
    pub fn try_new() -> Option<Self> {
        Avx512::try_new()?;
        cpu_features()
            .avx512_bf16_usable()
            .then_some(Self { _private: () })
    }
    /// The AVX-512 token this one implies.
    pub fn avx512(self) -> Avx512 {
        Avx512 { _private: () }
    }
}

/// Proof that AVX-512 and AVX512_VNNI (`VPDPBUSD`) are usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Avx512Vnni {
    _private: (),
}

impl Avx512Vnni {
    pub fn try_new() -> Option<Self> {
        Avx512::try_new()?;
        cpu_features()
            .avx512_vnni_usable()
            .then_some(Self { _private: () })
    }
    /// The AVX-512 token this one implies.
    pub fn avx512(self) -> Avx512 {
        Avx512 { _private: () }
    }
}

/// Proof that AMX-TILE and AMX-BF16 are usable by this process: CPU bits,
/// OS tile state in XCR0, and `arch_prctl` permission granted (asked here,
/// once per process). AMX CPUs all have AVX-512, which the epilogues use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmxBf16 {
    _private: (),
}

impl AmxBf16 {
    pub fn try_new() -> Option<Self> {
        Avx512::try_new()?;
        let f = cpu_features();
        (f.amx_supported() && f.amx_bf16 && crate::cpu::request_amx_permission().is_ok())
            .then_some(Self { _private: () })
    }
    /// The AVX-512 token this one implies.
    pub fn avx512(self) -> Avx512 {
        Avx512 { _private: () }
    }
}

/// As [`AmxBf16`], for AMX-INT8 (`TDPBSSD` and friends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmxInt8 {
    _private: (),
}

impl AmxInt8 {
    pub fn try_new() -> Option<Self> {
        Avx512::try_new()?;
        let f = cpu_features();
        (f.amx_supported() && f.amx_int8 && crate::cpu::request_amx_permission().is_ok())
            .then_some(Self { _private: () })
    }
    /// The AVX-512 token this one implies.
    pub fn avx512(self) -> Avx512 {
        Avx512 { _private: () }
    }
}

/// Which kernel family to run. Plain data; turn it into a token with the
/// matching `try_new` at plan time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[non_exhaustive]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
}

/// The environment variable that forces an ISA for the whole process.
pub const ISA_ENV: &str = "PINNED_ISA";

/// Why an ISA cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IsaError {
    #[error("ISA `{0}` was forced but this CPU/OS does not provide it (available: {1})")]
    Unavailable(&'static str, String),
    #[error("unknown ISA name `{0}` (expected one of: scalar, avx2, avx512)")]
    UnknownName(String),
    #[error("unknown low-precision path `{0}` (expected one of: amx, avx512, fallback)")]
    UnknownLowpPath(String),
}

impl Isa {
    /// Every ISA this crate has kernels for, slowest first.
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => Avx2::try_new().is_some(),
            Isa::Avx512 => Avx512::try_new().is_some(),
        }
    }

    /// The ISAs usable here, slowest first (tests loop over these).
    pub fn available() -> impl Iterator<Item = Isa> {
        Self::ALL.into_iter().filter(|isa| isa.is_available())
    }

    /// The fastest usable ISA, ignoring the environment.
    pub fn best() -> Isa {
        Self::available().last().unwrap_or(Isa::Scalar)
    }

    /// Parses a name; does not check availability.
    pub fn parse(name: &str) -> Result<Isa, IsaError> {
        Self::ALL
            .into_iter()
            .find(|isa| isa.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| IsaError::UnknownName(name.to_owned()))
    }

    /// The named ISA, or an error saying it is missing here.
    pub fn force(name: &str) -> Result<Isa, IsaError> {
        Self::parse(name)?.require()
    }

    /// `self` if usable here, else [`IsaError::Unavailable`].
    pub fn require(self) -> Result<Isa, IsaError> {
        if self.is_available() {
            Ok(self)
        } else {
            Err(self.unavailable())
        }
    }

    /// The error saying `self` is missing here (and what is available).
    pub fn unavailable(self) -> IsaError {
        let names: Vec<&str> = Self::available().map(Isa::name).collect();
        IsaError::Unavailable(self.name(), names.join(", "))
    }

    /// `PINNED_ISA` when set (failing loudly if that ISA is missing),
    /// else [`Isa::best`].
    pub fn from_env() -> Result<Isa, IsaError> {
        match std::env::var(ISA_ENV) {
            Ok(name) if !name.trim().is_empty() => Self::force(&name),
            _ => Ok(Self::best()),
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = IsaError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_agree_with_std_detection() {
        assert_eq!(
            Avx2::try_new().is_some(),
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        );
        if Avx512::try_new().is_some() {
            assert!(std::arch::is_x86_feature_detected!("avx512f"));
        }
    }

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Ok(isa));
            assert_eq!(isa.to_string().parse::<Isa>(), Ok(isa));
        }
        assert_eq!(Isa::parse(" AVX512 "), Ok(Isa::Avx512));
        assert!(matches!(Isa::parse("sse9"), Err(IsaError::UnknownName(_))));
    }

    #[test]
    fn forcing_a_missing_isa_fails_loudly() {
        for isa in Isa::ALL {
            match Isa::force(isa.name()) {
                Ok(got) => {
                    assert_eq!(got, isa);
                    assert!(isa.is_available());
                }
                Err(IsaError::Unavailable(name, _)) => {
                    assert_eq!(name, isa.name());
                    assert!(!isa.is_available());
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!(Isa::force("scalar"), Ok(Isa::Scalar));
    }

    #[test]
    fn best_is_available() {
        assert!(Isa::best().is_available());
        assert_eq!(Isa::available().next(), Some(Isa::Scalar));
    }
}
