//! Kernel memory settings that change placement and latency.

use pinned_allocator::{IdList, SysRoot};

#[derive(Debug, serde::Serialize)]
pub struct MemoryInfo {
    /// Transparent huge page mode: `always`, `madvise` or `never`.
    pub thp_enabled: Option<String>,
    pub thp_defrag: Option<String>,
    /// Reserved hugetlb pages per size.
    pub hugepages: Vec<HugePageSize>,
    /// `RLIMIT_MEMLOCK` soft limit in bytes; `None` means unlimited.
    pub memlock_limit_bytes: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
pub struct HugePageSize {
    pub size_bytes: u64,
    pub total: u64,
    pub free: u64,
}

impl MemoryInfo {
    pub fn collect(sys: &SysRoot) -> Self {
        let thp = |file: &str| {
            sys.read_opt(&format!("sys/kernel/mm/transparent_hugepage/{file}"))
                .and_then(|s| bracketed(&s))
        };
        Self {
            thp_enabled: thp("enabled"),
            thp_defrag: thp("defrag"),
            hugepages: hugepage_sizes(sys),
            memlock_limit_bytes: memlock_limit(sys),
        }
    }
}

/// The selected word of a sysfs choice list: `always [madvise] never` -> `madvise`.
fn bracketed(text: &str) -> Option<String> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].to_owned())
}

fn hugepage_sizes(sys: &SysRoot) -> Vec<HugePageSize> {
    let Ok(dir) = std::fs::read_dir(sys.path("sys/kernel/mm/hugepages")) else {
        return Vec::new();
    };
    let mut sizes: Vec<HugePageSize> = dir
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let kib: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            let count = |file: &str| {
                sys.read_opt(&format!("sys/kernel/mm/hugepages/{name}/{file}"))
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            Some(HugePageSize {
                size_bytes: kib * 1024,
                total: count("nr_hugepages"),
                free: count("free_hugepages"),
            })
        })
        .collect();
    sizes.sort_by_key(|s| s.size_bytes);
    sizes
}

/// The live soft limit from `getrlimit`, or a fixture's `/proc/self/limits`.
fn memlock_limit(sys: &SysRoot) -> Option<u64> {
    if sys.is_live() {
        let (soft, _hard) =
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).ok()?;
        return (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft);
    }
    let limits = sys.read_opt("proc/self/limits")?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    let soft = line.split_whitespace().nth(3)?;
    soft.parse().ok()
}

/// Groups of CPUs that share a physical core.
pub fn smt_siblings(sys: &SysRoot, online: &IdList) -> Vec<IdList> {
    let mut groups: Vec<IdList> = online
        .iter()
        .filter_map(|cpu| {
            let rel = format!("sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list");
            sys.read_opt(&rel).and_then(|s| IdList::parse(&s).ok())
        })
        .collect();
    groups.sort_by_key(|g| g.as_slice().first().copied());
    groups.dedup();
    groups
}

#[cfg(test)]
mod tests {
    use super::bracketed;

    #[test]
    fn reads_the_selected_choice() {
        assert_eq!(
            bracketed("always [madvise] never\n").as_deref(),
            Some("madvise")
        );
        assert_eq!(bracketed("never"), None);
    }
}
