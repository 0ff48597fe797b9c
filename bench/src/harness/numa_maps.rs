//! Where the process's pages actually are, from `/proc/self/numa_maps`
//! (what `numastat -p` reads): resident pages per node, grouped by the
//! memory policy of the mapping that holds them. The runtime maps request
//! slots and worker scratch with the partition's policy (`bind:0`,
//! `interleave:0-1`, ...) and the built-in model's weights are loaded under
//! it, so each group shows whether that memory went where it was asked to.

use std::collections::BTreeMap;

use super::record::BufferPlacement;

/// Pages per node of each policy group, bytes from each line's page size.
/// Only anonymous and heap mappings count (files and the binary would
/// drown the signal). Lines look like:
/// `7f..000 bind:0 anon=512 dirty=512 N0=512 kernelpagesize_kB=4`.
pub fn parse(text: &str) -> Vec<BufferPlacement> {
    let mut groups: BTreeMap<String, (u64, BTreeMap<usize, u64>)> = BTreeMap::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_addr), Some(policy)) = (fields.next(), fields.next()) else {
            continue;
        };
        let rest: Vec<&str> = fields.collect();
        let anonymous = rest
            .iter()
            .any(|f| f.starts_with("anon=") || *f == "heap" || *f == "stack");
        if !anonymous || rest.iter().any(|f| f.starts_with("file=")) {
            continue;
        }
        let page_kib: u64 = rest
            .iter()
            .find_map(|f| f.strip_prefix("kernelpagesize_kB="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        // `bind=static` style suffixes are flags; keep the policy and nodes.
        let policy = policy.split('=').next().unwrap_or(policy).to_owned();
        let entry = groups.entry(policy).or_default();
        for f in &rest {
            let Some((node, pages)) = f.strip_prefix('N').and_then(|s| s.split_once('=')) else {
                continue;
            };
            if let (Ok(node), Ok(pages)) = (node.parse::<usize>(), pages.parse::<u64>()) {
                *entry.1.entry(node).or_default() += pages;
                entry.0 += pages * page_kib * 1024;
            }
        }
    }
    groups
        .into_iter()
        .filter(|(_, (bytes, _))| *bytes > 0)
        .map(|(policy, (bytes, nodes))| BufferPlacement {
            buffer: format!("anonymous memory, policy {policy}"),
            bytes,
            pages_per_node: nodes.into_iter().collect(),
        })
        .collect()
}

/// The live process's placement; empty when `numa_maps` is not readable
/// (kernels without NUMA support have no such file).
pub fn read() -> Vec<BufferPlacement> {
    std::fs::read_to_string("/proc/self/numa_maps")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_policy() {
        let text = "\
55d0 default file=/usr/bin/pinned mapped=10 N0=10 kernelpagesize_kB=4
55e0 default heap anon=100 dirty=100 N0=100 kernelpagesize_kB=4
7f00 bind:0 anon=512 dirty=512 N0=512 kernelpagesize_kB=4
7f10 interleave:0-1 anon=4 dirty=4 N0=2 N1=2 kernelpagesize_kB=2048
7f20 default anon=20 dirty=20 N1=20 kernelpagesize_kB=4
";
        let p = parse(text);
        assert_eq!(p.len(), 3);
        let find = |s: &str| p.iter().find(|b| b.buffer.ends_with(s)).unwrap();
        assert_eq!(find("default").pages_per_node, vec![(0, 100), (1, 20)]);
        assert_eq!(find("default").bytes, 120 * 4096);
        assert_eq!(find("bind:0").pages_per_node, vec![(0, 512)]);
        assert_eq!(find("interleave:0-1").bytes, 4 * 2048 * 1024);
        assert!(!read().is_empty() || !std::path::Path::new("/proc/self/numa_maps").exists());
    }
}
