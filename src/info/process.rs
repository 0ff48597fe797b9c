//! What this process may use: CPUs, memory nodes, memory policy.

use pinned_allocator::{IdList, SysRoot, Topology};

#[derive(Debug, serde::Serialize)]
pub struct ProcessInfo {
    /// CPUs this process may run on (`sched_getaffinity` live; else the
    /// fixture's `Cpus_allowed_list`). A cgroup cpuset shows here.
    pub allowed_cpus: IdList,
    /// Memory nodes this process may allocate on (`Mems_allowed_list`).
    pub allowed_mems: IdList,
    /// Online CPUs outside `allowed_cpus` (taken away by a cpuset or taskset).
    pub excluded_cpus: IdList,
    /// The calling thread's memory policy, e.g. `default` or `bind:0-1`.
    pub memory_policy: Option<String>,
}

impl ProcessInfo {
    pub fn collect(sys: &SysRoot, topology: &Topology) -> Self {
        let status = sys.read_opt("proc/self/status").unwrap_or_default();
        let status_list = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| IdList::parse(v).ok())
        };
        let allowed_cpus = if sys.is_live() { live_affinity() } else { None }
            .or_else(|| status_list("Cpus_allowed_list:"))
            .unwrap_or_else(|| topology.online_cpus.clone());
        let allowed_mems =
            status_list("Mems_allowed_list:").unwrap_or_else(|| topology.memory_nodes());
        Self {
            excluded_cpus: topology.online_cpus.difference(&allowed_cpus),
            allowed_cpus,
            allowed_mems,
            memory_policy: sys.is_live().then(live_policy),
        }
    }
}

/// The calling thread's policy, or why it could not be read.
fn live_policy() -> String {
    match pinned_allocator::numa::current_policy() {
        Ok(policy) => policy.to_string(),
        Err(err) => format!("unknown ({err})"),
    }
}

/// The CPUs this thread may run on, from `sched_getaffinity`.
fn live_affinity() -> Option<IdList> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    Some(
        (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
    )
}
