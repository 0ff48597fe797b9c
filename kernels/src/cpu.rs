//! What this CPU can do, detected once with `raw-cpuid`, plus what the OS
//! lets this process use (XCR0 for the AVX-512 and AMX register state, and
//! `arch_prctl` permission for AMX tile data).
//!
//! The CPU model is reported, never used for decisions: under a hypervisor it
//! is often hidden, so every choice here comes from feature bits.

use std::sync::OnceLock;

use raw_cpuid::CpuId;

/// Feature bits that matter for inference kernels.
///
/// `cpu_*` fields come from CPUID alone; the `os_*` fields say whether the
/// OS saves that register state (XCR0). A feature is usable only when both hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CpuFeatures {
    pub sse4_2: bool,
    pub avx2: bool,
    pub fma: bool,
    pub avx512f: bool,
    pub avx512bw: bool,
    pub avx512vl: bool,
    pub avx512dq: bool,
    pub avx512_vnni: bool,
    pub avx512_bf16: bool,
    pub avx512_fp16: bool,
    pub amx_tile: bool,
    pub amx_bf16: bool,
    pub amx_int8: bool,
    /// XCR0 bits 1 and 2: SSE and AVX (YMM) state enabled by the OS.
    pub os_avx: bool,
    /// XCR0 bits 5 to 7: opmask, ZMM_Hi256 and Hi16_ZMM state.
    pub os_avx512: bool,
    /// XCR0 bits 17 and 18: XTILECFG and XTILEDATA state.
    pub os_amx: bool,
}

impl CpuFeatures {
    /// Reads CPUID and XCR0 now. Prefer [`cpu_features`], which caches.
    pub fn detect() -> Self {
        let cpuid = CpuId::new();
        let mut f = Self::default();
        if let Some(info) = cpuid.get_feature_info() {
            f.sse4_2 = info.has_sse42();
            f.fma = info.has_fma();
            if info.has_oxsave() {
                let xcr0 = read_xcr0();
                f.os_avx = xcr0 & 0b110 == 0b110;
                f.os_avx512 = f.os_avx && xcr0 & 0b1110_0000 == 0b1110_0000;
                f.os_amx = xcr0 & (0b11 << 17) == 0b11 << 17;
            }
        }
        if let Some(ext) = cpuid.get_extended_feature_info() {
            f.avx2 = ext.has_avx2();
            f.avx512f = ext.has_avx512f();
            f.avx512bw = ext.has_avx512bw();
            f.avx512vl = ext.has_avx512vl();
            f.avx512dq = ext.has_avx512dq();
            f.avx512_vnni = ext.has_avx512vnni();
            f.avx512_bf16 = ext.has_avx512_bf16();
            f.avx512_fp16 = ext.has_avx512_fp16();
            f.amx_tile = ext.has_amx_tile();
            f.amx_bf16 = ext.has_amx_bf16();
            f.amx_int8 = ext.has_amx_int8();
        }
        f
    }

    /// AVX2 and FMA, with the OS saving YMM state.
    pub fn avx2_fma_usable(&self) -> bool {
        self.avx2 && self.fma && self.os_avx
    }

    /// AVX-512 F/BW/VL/DQ with the OS saving ZMM and opmask state.
    pub fn avx512_usable(&self) -> bool {
        self.avx512f && self.avx512bw && self.avx512vl && self.avx512dq && self.os_avx512
    }

    pub fn avx512_bf16_usable(&self) -> bool {
        self.avx512_usable() && self.avx512_bf16
    }

    pub fn avx512_vnni_usable(&self) -> bool {
        self.avx512_usable() && self.avx512_vnni
    }

    /// The CPU has AMX and the OS supports its state; the process still
    /// needs [`request_amx_permission`] before the first tile instruction.
    pub fn amx_supported(&self) -> bool {
        self.amx_tile && self.os_amx
    }

    /// `(name, present)` pairs in a stable order, for reports.
    pub fn named(&self) -> [(&'static str, bool); 13] {
        [
            ("sse4_2", self.sse4_2),
            ("avx2", self.avx2),
            ("fma", self.fma),
            ("avx512f", self.avx512f),
            ("avx512bw", self.avx512bw),
            ("avx512vl", self.avx512vl),
            ("avx512dq", self.avx512dq),
            ("avx512_vnni", self.avx512_vnni),
            ("avx512_bf16", self.avx512_bf16),
            ("avx512_fp16", self.avx512_fp16),
            ("amx_tile", self.amx_tile),
            ("amx_bf16", self.amx_bf16),
            ("amx_int8", self.amx_int8),
        ]
    }
}

fn read_xcr0() -> u64 {
    #[target_feature(enable = "xsave")]
    unsafe fn xgetbv0() -> u64 {
        // SAFETY: callers check CPUID.1:ECX.OSXSAVE first, which makes XGETBV legal.
        unsafe { core::arch::x86_64::_xgetbv(0) }
    }
    // SAFETY: only called after `has_oxsave()` returned true (see `detect`).
    unsafe { xgetbv0() }
}

/// The features of this CPU, detected on first use.
pub fn cpu_features() -> &'static CpuFeatures {
    static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
    FEATURES.get_or_init(CpuFeatures::detect)
}

/// Data cache sizes in bytes, from CPUID leaf 4 (deterministic cache
/// parameters). `None` when the CPU does not report that level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheSizes {
    pub l1d: Option<usize>,
    pub l2: Option<usize>,
    pub l3: Option<usize>,
    /// Bytes per cache line (CPUID leaf 1), 64 on every current x86.
    pub line: usize,
}

impl CacheSizes {
    pub fn detect() -> Self {
        let cpuid = CpuId::new();
        let mut sizes = Self {
            line: 64,
            ..Self::default()
        };
        if let Some(info) = cpuid.get_feature_info() {
            let line = info.cflush_cache_line_size() as usize * 8;
            if line > 0 {
                sizes.line = line;
            }
        }
        if let Some(caches) = cpuid.get_cache_parameters() {
            for cache in caches {
                use raw_cpuid::CacheType;
                let bytes = cache.associativity()
                    * cache.physical_line_partitions()
                    * cache.coherency_line_size()
                    * cache.sets();
                match (cache.level(), cache.cache_type()) {
                    (1, CacheType::Data) => sizes.l1d = Some(bytes),
                    (2, CacheType::Unified | CacheType::Data) => sizes.l2 = Some(bytes),
                    (3, CacheType::Unified | CacheType::Data) => sizes.l3 = Some(bytes),
                    _ => {}
                }
            }
        }
        sizes
    }
}

/// Cache sizes of this CPU, detected on first use.
pub fn cache_sizes() -> &'static CacheSizes {
    static SIZES: OnceLock<CacheSizes> = OnceLock::new();
    SIZES.get_or_init(CacheSizes::detect)
}

/// The processor brand string, e.g. `Intel(R) Xeon(R) Processor` (a
/// hypervisor may hide the real model).
pub fn cpu_model_name() -> String {
    CpuId::new()
        .get_processor_brand_string()
        .map(|b| b.as_str().trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Why this process may not use AMX tiles.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AmxError {
    #[error("this CPU has no AMX (CPUID.7.0:EDX.AMX-TILE is clear)")]
    NotOnCpu,
    #[error(
        "the OS does not enable AMX tile state (XCR0 bits 17-18 clear); a kernel >= 5.16 is needed"
    )]
    NotEnabledByOs,
    #[error("arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) was refused: errno {errno} ({message})")]
    PermissionRefused { errno: i32, message: String },
}

/// `arch_prctl` codes from `arch/x86/include/uapi/asm/prctl.h`.
const ARCH_GET_XCOMP_PERM: libc::c_int = 0x1022;
const ARCH_REQ_XCOMP_PERM: libc::c_int = 0x1023;
/// XFEATURE_XTILEDATA, the state component number of the AMX tile data.
const XFEATURE_XTILEDATA: libc::c_ulong = 18;

/// Asks the kernel once per process for permission to use AMX tile data
/// (Linux >= 5.16 requires it before the first tile instruction, else SIGILL).
/// The result is cached: later calls are free.
pub fn request_amx_permission() -> Result<(), AmxError> {
    static RESULT: OnceLock<Result<(), AmxError>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            let f = cpu_features();
            if !f.amx_tile {
                return Err(AmxError::NotOnCpu);
            }
            if !f.os_amx {
                return Err(AmxError::NotEnabledByOs);
            }
            // SAFETY: ARCH_REQ_XCOMP_PERM takes an integer feature number; no memory is passed.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_arch_prctl,
                    ARCH_REQ_XCOMP_PERM,
                    XFEATURE_XTILEDATA,
                )
            };
            if rc != 0 {
                let err = std::io::Error::last_os_error();
                return Err(AmxError::PermissionRefused {
                    errno: err.raw_os_error().unwrap_or(0),
                    message: err.to_string(),
                });
            }
            Ok(())
        })
        .clone()
}

/// Whether the kernel has already granted AMX tile data to this process
/// (`ARCH_GET_XCOMP_PERM`), without asking for it.
pub fn amx_permission_granted() -> bool {
    let mut mask: u64 = 0;
    // SAFETY: ARCH_GET_XCOMP_PERM writes one u64 through the pointer, which is valid and aligned.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_GET_XCOMP_PERM,
            &mut mask as *mut u64,
        )
    };
    rc == 0 && mask & (1 << XFEATURE_XTILEDATA) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_agrees_with_std() {
        let f = cpu_features();
        assert_eq!(f.avx2, std::arch::is_x86_feature_detected!("avx2"));
        assert_eq!(f.fma, std::arch::is_x86_feature_detected!("fma"));
        assert_eq!(
            f.avx512_usable(),
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq")
        );
    }

    #[test]
    fn cache_sizes_are_ordered_when_known() {
        let c = cache_sizes();
        assert!(c.line >= 32);
        if let (Some(l1), Some(l2)) = (c.l1d, c.l2) {
            assert!(l1 < l2, "{c:?}");
        }
    }

    #[test]
    fn amx_permission_is_consistent() {
        match request_amx_permission() {
            Ok(()) => assert!(amx_permission_granted()),
            Err(AmxError::NotOnCpu) => assert!(!cpu_features().amx_tile),
            Err(e) => eprintln!("AMX not available: {e}"),
        }
    }
}
