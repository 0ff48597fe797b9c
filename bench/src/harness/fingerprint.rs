//! The machine and build a run was measured on, compact enough to store in
//! every record and to diff in `pinned compare`: two numbers from different
//! microcode, kernels, THP modes or builds are not the same experiment.

use std::collections::BTreeMap;

use pinned_allocator::{SysRoot, Topology};
use serde::{Deserialize, Serialize};

/// Invariant: `nodes.len() >= 1`; `online_cpus` is the union of the nodes' CPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fingerprint {
    pub hostname: String,
    pub cpu_model: String,
    pub microcode: Option<String>,
    /// Features the kernels may use, e.g. `avx2 fma avx512f amx_bf16`.
    pub cpu_features: Vec<String>,
    pub cache_l1d_bytes: Option<usize>,
    pub cache_l2_bytes: Option<usize>,
    pub cache_l3_bytes: Option<usize>,
    /// `uname -sr` plus the build string (`uname -v`).
    pub kernel: String,
    pub online_cpus: String,
    /// The CPUs this process may use (its affinity mask at start).
    pub allowed_cpus: String,
    pub nodes: Vec<NodeFingerprint>,
    /// `true` when the kernel exposes no NUMA sysfs and one node was assumed.
    pub topology_synthesized: bool,
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    /// `scaling_governor` per CPU, grouped: `{"performance": "0-1"}`.
    pub governors: BTreeMap<String, String>,
    pub build: BuildInfo,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFingerprint {
    pub id: usize,
    pub cpus: String,
    pub mem_total_bytes: Option<u64>,
    pub distances: Vec<u32>,
}

/// How this binary was built (set by bench/build.rs).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildInfo {
    pub git_revision: String,
    /// `clean`, `dirty` (uncommitted changes to tracked files) or `unknown`.
    pub git_tree: String,
    pub profile: String,
    pub opt_level: String,
    pub debug_assertions: bool,
    pub target: String,
    /// Compile-time target features (run-time dispatch picks the kernels).
    pub target_features: String,
    pub rustc: String,
    pub version: String,
}

impl BuildInfo {
    pub fn current() -> Self {
        Self {
            git_revision: env!("PINNED_GIT_REVISION").to_owned(),
            git_tree: env!("PINNED_GIT_TREE").to_owned(),
            profile: env!("PINNED_BUILD_PROFILE").to_owned(),
            opt_level: env!("PINNED_BUILD_OPT_LEVEL").to_owned(),
            debug_assertions: cfg!(debug_assertions),
            target: env!("PINNED_BUILD_TARGET").to_owned(),
            target_features: env!("PINNED_BUILD_TARGET_FEATURES").to_owned(),
            rustc: env!("PINNED_RUSTC_VERSION").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

impl Fingerprint {
    /// Reads the live machine. Anything unreadable is `None` or empty, never
    /// an error: a record from a locked-down container is still a record.
    pub fn collect() -> Self {
        let sys = SysRoot::new("/");
        let topology = Topology::detect().ok();
        let features = pinned_kernels::cpu_features()
            .named()
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| (*name).to_owned())
            .collect();
        let caches = pinned_kernels::cache_sizes();
        let allowed = pinned_runtime::current_affinity()
            .map(|l| l.to_string())
            .unwrap_or_default();
        let thp = |file: &str| {
            sys.read_opt(&format!("sys/kernel/mm/transparent_hugepage/{file}"))
                .and_then(|s| bracketed(&s))
        };
        Self {
            hostname: sys
                .read_opt("proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            cpu_model: pinned_kernels::cpu::cpu_model_name(),
            microcode: sys
                .read_opt("proc/cpuinfo")
                .and_then(|s| cpuinfo_field(&s, "microcode")),
            cpu_features: features,
            cache_l1d_bytes: caches.l1d,
            cache_l2_bytes: caches.l2,
            cache_l3_bytes: caches.l3,
            kernel: kernel_release(),
            online_cpus: topology
                .as_ref()
                .map(|t| t.online_cpus.to_string())
                .unwrap_or_default(),
            allowed_cpus: allowed,
            nodes: topology
                .as_ref()
                .map(|t| {
                    t.nodes
                        .iter()
                        .filter(|n| n.online)
                        .map(|n| NodeFingerprint {
                            id: n.id,
                            cpus: n.cpus.to_string(),
                            mem_total_bytes: n.mem_total_bytes,
                            distances: n.distances.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            topology_synthesized: topology.as_ref().is_none_or(|t| t.synthesized),
            thp_enabled: thp("enabled"),
            thp_defrag: thp("defrag"),
            governors: governors(&sys, topology.as_ref()),
            build: BuildInfo::current(),
        }
    }

    /// `(field, this, other)` for every field that differs, in a stable order.
    pub fn differences(&self, other: &Self) -> Vec<(String, String, String)> {
        let a = flatten(&serde_json::to_value(self).unwrap_or_default());
        let b = flatten(&serde_json::to_value(other).unwrap_or_default());
        diff_maps(&a, &b)
    }
}

/// Flattens a JSON value into `path -> rendered scalar` (arrays by index).
pub fn flatten(value: &serde_json::Value) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        use serde_json::Value;
        let join = |k: &str| {
            if prefix.is_empty() {
                k.to_owned()
            } else {
                format!("{prefix}.{k}")
            }
        };
        match v {
            Value::Object(map) => map.iter().for_each(|(k, v)| walk(&join(k), v, out)),
            Value::Array(items) if items.iter().all(|i| !i.is_object() && !i.is_array()) => {
                let parts: Vec<String> = items.iter().map(render).collect();
                out.insert(prefix.to_owned(), format!("[{}]", parts.join(", ")));
            }
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| walk(&join(&i.to_string()), v, out)),
            other => {
                out.insert(prefix.to_owned(), render(other));
            }
        }
    }
    fn render(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    let mut out = BTreeMap::new();
    walk("", value, &mut out);
    out
}

/// Keys whose values differ or exist on one side only (`-` marks absence).
pub fn diff_maps(
    a: &BTreeMap<String, String>,
    b: &BTreeMap<String, String>,
) -> Vec<(String, String, String)> {
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (x, y) = (a.get(k), b.get(k));
            (x != y).then(|| {
                (
                    k.clone(),
                    x.cloned().unwrap_or_else(|| "-".to_owned()),
                    y.cloned().unwrap_or_else(|| "-".to_owned()),
                )
            })
        })
        .collect()
}

/// The selected word of a sysfs choice list: `always [madvise] never` -> `madvise`.
fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

/// The first `key : value` of /proc/cpuinfo.
fn cpuinfo_field(cpuinfo: &str, key: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; zeroed is a valid initial value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname for the call.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return "unknown".to_owned();
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    format!(
        "{} {} {}",
        field(&uts.sysname),
        field(&uts.release),
        field(&uts.version)
    )
}

/// Governors grouped by value, CPUs in list form (`{"powersave": "0-1"}`);
/// empty when cpufreq is not exposed (most VMs).
fn governors(sys: &SysRoot, topology: Option<&Topology>) -> BTreeMap<String, String> {
    let mut by_gov: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for cpu in topology
        .map(|t| t.online_cpus.iter().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        if let Some(g) = sys.read_opt(&format!(
            "sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor"
        )) {
            by_gov.entry(g.trim().to_owned()).or_default().push(cpu);
        }
    }
    by_gov
        .into_iter()
        .map(|(g, cpus)| (g, pinned_allocator::IdList::from_ids(cpus).to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_this_machine() {
        let f = Fingerprint::collect();
        assert!(!f.cpu_model.is_empty());
        assert!(!f.kernel.is_empty() && f.kernel != "unknown");
        assert!(
            !f.nodes.is_empty(),
            "at least one node, synthesized or real"
        );
        assert!(!f.build.git_revision.is_empty());
        assert!(f.differences(&f).is_empty());
        let mut g = f.clone();
        g.thp_enabled = Some("never-seen".to_owned());
        let d = f.differences(&g);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0, "thp_enabled");
    }

    #[test]
    fn cpuinfo_and_brackets() {
        assert_eq!(
            cpuinfo_field("processor\t: 0\nmicrocode\t: 0x2b000590\n", "microcode").as_deref(),
            Some("0x2b000590")
        );
        assert_eq!(
            bracketed("always [madvise] never").as_deref(),
            Some("madvise")
        );
    }
}
