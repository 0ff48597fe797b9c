//! `pinned info`: the machine as placement sees it, collected once.
//!
//! Every file is read below a root directory (normally `/`), so the tests
//! run the same code on fixture trees of other machines. Live syscalls
//! (`sched_getaffinity`, `get_mempolicy`, `getrlimit`, CPUID) describe the
//! running process and are only used when the root is `/`.

mod display;
mod process;
mod system;

use std::path::Path;

use pinned_allocator::{SysRoot, Topology, TopologyError};
use pinned_kernels::cpu;

pub use process::ProcessInfo;
pub use system::{HugePageSize, MemoryInfo};

/// Everything `pinned info` reports; serialised as the `--json` object.
/// Field names are stable (documented in the README).
#[derive(Debug, serde::Serialize)]
pub struct InfoReport {
    pub pinned_version: &'static str,
    pub kernel: Option<String>,
    pub topology: Topology,
    pub process: ProcessInfo,
    pub cpu: CpuInfo,
    pub memory: MemoryInfo,
    /// `/proc/sys/kernel/perf_event_paranoid`; `None` when not readable.
    pub perf_event_paranoid: Option<i32>,
}

/// The CPU's model, features and caches.
#[derive(Debug, serde::Serialize)]
pub struct CpuInfo {
    pub model: String,
    /// Feature name -> present in CPUID (see `usable` for what may run).
    pub features: std::collections::BTreeMap<&'static str, bool>,
    pub usable: UsableIsa,
    pub caches: cpu::CacheSizes,
    /// Precisions this machine multiplies in hardware, with the kernel path
    /// each runs on (e.g. `f32: avx512`, `bf16: amx-bf16`, `int8: amx-int8`);
    /// a precision missing here would run on the portable fallback.
    pub precisions: std::collections::BTreeMap<&'static str, &'static str>,
    /// Groups of CPUs that share a core (SMT siblings), from sysfs.
    pub smt_siblings: Vec<pinned_allocator::IdList>,
}

/// What this process can execute: CPU support, OS register state, permission.
#[derive(Debug, serde::Serialize)]
pub struct UsableIsa {
    pub avx2_fma: bool,
    pub avx512: bool,
    pub avx512_bf16: bool,
    pub avx512_vnni: bool,
    /// The kernel granted AMX tile data to this process (`arch_prctl`).
    pub amx: bool,
    /// Why AMX is not usable, when it is not.
    pub amx_error: Option<String>,
}

impl InfoReport {
    /// Collects the report for the machine below `root`.
    pub fn collect(root: &Path) -> Result<Self, TopologyError> {
        let sys = SysRoot::new(root);
        let topology = Topology::read(&sys)?;
        let process = ProcessInfo::collect(&sys, &topology);
        Ok(Self {
            pinned_version: env!("CARGO_PKG_VERSION"),
            kernel: sys
                .read_opt("proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned()),
            cpu: CpuInfo::collect(&sys, &topology),
            memory: MemoryInfo::collect(&sys),
            perf_event_paranoid: sys
                .read_opt("proc/sys/kernel/perf_event_paranoid")
                .and_then(|s| s.trim().parse().ok()),
            topology,
            process,
        })
    }
}

impl CpuInfo {
    fn collect(sys: &SysRoot, topology: &Topology) -> Self {
        let features = cpu::cpu_features();
        let amx = cpu::request_amx_permission();
        Self {
            model: cpu::cpu_model_name(),
            features: features.named().into_iter().collect(),
            usable: UsableIsa {
                avx2_fma: features.avx2_fma_usable(),
                avx512: features.avx512_usable(),
                avx512_bf16: features.avx512_bf16_usable(),
                avx512_vnni: features.avx512_vnni_usable(),
                amx: amx.is_ok() && cpu::amx_permission_granted(),
                amx_error: amx.err().map(|e| e.to_string()),
            },
            caches: *cpu::cache_sizes(),
            precisions: pinned_kernels::precision::native_precisions()
                .into_iter()
                .map(|(precision, path)| (precision.name(), path))
                .collect(),
            smt_siblings: system::smt_siblings(sys, &topology.online_cpus),
        }
    }
}
