//! The human-readable form of `pinned info`.

use std::fmt;

use super::InfoReport;

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".to_owned(), |b| format!("{} MiB", b >> 20))
}

fn kib(bytes: Option<usize>) -> String {
    bytes.map_or_else(|| "?".to_owned(), |b| format!("{} KiB", b >> 10))
}

impl fmt::Display for InfoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.topology;
        writeln!(f, "pinned {}", self.pinned_version)?;
        if let Some(kernel) = &self.kernel {
            writeln!(f, "kernel        {kernel}")?;
        }
        writeln!(
            f,
            "NUMA nodes    {}{}",
            t.nodes.len(),
            if t.synthesized {
                " (no /sys/devices/system/node: one node assumed)"
            } else {
                ""
            }
        )?;
        for node in &t.nodes {
            if !node.online {
                writeln!(f, "  node {:<3} offline", node.id)?;
                continue;
            }
            let cpus = if node.cpus.is_empty() {
                "none".to_owned()
            } else {
                node.cpus.to_string()
            };
            let memory = if node.has_memory {
                format!(
                    "{} total, {} free",
                    mib(node.mem_total_bytes),
                    mib(node.mem_free_bytes)
                )
            } else {
                "memoryless".to_owned()
            };
            writeln!(f, "  node {:<3} cpus {cpus:<12} {memory}", node.id)?;
        }
        write!(f, "distances    ")?;
        for node in &t.nodes {
            write!(f, " {:>4}", node.id)?;
        }
        writeln!(f)?;
        for node in &t.nodes {
            write!(f, "  node {:<6}", node.id)?;
            for d in &node.distances {
                write!(f, " {d:>4}")?;
            }
            writeln!(f)?;
        }
        let p = &self.process;
        writeln!(
            f,
            "process CPUs  {} (online {})",
            p.allowed_cpus, t.online_cpus
        )?;
        if !p.excluded_cpus.is_empty() {
            writeln!(f, "  excluded by cpuset/affinity: {}", p.excluded_cpus)?;
        }
        writeln!(f, "process mems  {}", p.allowed_mems)?;
        if let Some(policy) = &p.memory_policy {
            writeln!(f, "mem policy    {policy}")?;
        }
        let c = &self.cpu;
        writeln!(f, "CPU           {}", c.model)?;
        let present: Vec<&str> = c
            .features
            .iter()
            .filter(|(_, &on)| on)
            .map(|(name, _)| *name)
            .collect();
        writeln!(f, "features      {}", present.join(" "))?;
        writeln!(
            f,
            "usable        avx2+fma={} avx512={} avx512_bf16={} avx512_vnni={} amx={}",
            c.usable.avx2_fma,
            c.usable.avx512,
            c.usable.avx512_bf16,
            c.usable.avx512_vnni,
            c.usable.amx
        )?;
        let precisions: Vec<String> = c
            .precisions
            .iter()
            .map(|(precision, path)| format!("{precision}={path}"))
            .collect();
        writeln!(f, "precisions    {}", precisions.join(" "))?;
        if let Some(why) = &c.usable.amx_error {
            writeln!(f, "  amx: {why}")?;
        }
        writeln!(
            f,
            "caches        L1d {}  L2 {}  L3 {}  line {} B",
            kib(c.caches.l1d),
            kib(c.caches.l2),
            kib(c.caches.l3),
            c.caches.line
        )?;
        let smt: Vec<String> = c.smt_siblings.iter().map(|g| g.to_string()).collect();
        writeln!(f, "SMT siblings  {}", smt.join(" | "))?;
        let m = &self.memory;
        writeln!(
            f,
            "THP           enabled={} defrag={}",
            m.thp_enabled.as_deref().unwrap_or("?"),
            m.thp_defrag.as_deref().unwrap_or("?")
        )?;
        for h in &m.hugepages {
            writeln!(
                f,
                "hugetlb       {} KiB pages: {} reserved, {} free",
                h.size_bytes >> 10,
                h.total,
                h.free
            )?;
        }
        writeln!(
            f,
            "memlock limit {}",
            m.memlock_limit_bytes
                .map_or_else(|| "unlimited".to_owned(), |b| format!("{} KiB", b >> 10))
        )?;
        writeln!(
            f,
            "perf_event_paranoid {}",
            self.perf_event_paranoid
                .map_or_else(|| "?".to_owned(), |v| v.to_string())
        )
    }
}
