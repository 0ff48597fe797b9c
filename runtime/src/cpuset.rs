//! CPU sets as people write them for `taskset -c` and `numactl`, checked
//! against the machine and against the CPUs this process may use.
//!
//! Accepted forms:
//! - `all`: every CPU the process may use;
//! - `0-3,8,10-11`: absolute CPU numbers (the kernel list format);
//! - `+0-1`: positions within the allowed set (`numactl`'s relative form);
//! - `node:0` or `node:0-1`: the allowed CPUs of those NUMA nodes
//!   (`numactl --cpunodebind`);
//! - `node0:0-1`: positions within node 0's allowed CPUs.

use pinned_allocator::{IdList, ListParseError, Topology};

/// Why a CPU set was refused; every variant names the culprit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuSetError {
    #[error(transparent)]
    Parse(#[from] ListParseError),
    #[error("cpu set '{0}' is empty")]
    Empty(String),
    #[error("cpu {cpu} does not exist on this machine (online cpus: {online})")]
    NoSuchCpu { cpu: usize, online: IdList },
    #[error("cpu {cpu} is outside the cpus this process may use ({allowed})")]
    NotAllowed { cpu: usize, allowed: IdList },
    #[error("node {node} does not exist (nodes: {nodes})")]
    NoSuchNode { node: usize, nodes: IdList },
    #[error("position {index} is past the {count} cpus of {within} ({cpus})")]
    NoSuchPosition {
        index: usize,
        count: usize,
        within: String,
        cpus: IdList,
    },
    #[error("'{0}' is not a cpu set (try '0-3,8', 'all', '+0-1', 'node:0' or 'node0:0-1')")]
    BadForm(String),
}

/// What a set is checked against: the machine and the process's mask.
#[derive(Clone, Debug)]
pub struct CpuContext {
    pub topology: Topology,
    /// The process's allowed CPUs (`sched_getaffinity` before any pinning).
    pub allowed: IdList,
}

impl CpuContext {
    pub fn new(topology: Topology, allowed: IdList) -> Self {
        Self { topology, allowed }
    }

    /// Parses and validates `spec` (forms in the module doc).
    pub fn parse(&self, spec: &str) -> Result<IdList, CpuSetError> {
        let text = spec.trim();
        let cpus = if text == "all" {
            self.allowed.clone()
        } else if let Some(rel) = text.strip_prefix('+') {
            pick(&self.allowed, &IdList::parse(rel)?, "the allowed set")?
        } else if let Some(nodes) = text.strip_prefix("node:") {
            let mut all = Vec::new();
            for node in IdList::parse(nodes)?.iter() {
                all.extend(self.node_cpus(node)?.iter());
            }
            IdList::from_ids(all)
        } else if let Some(rest) = text.strip_prefix("node") {
            let (node, rel) = rest
                .split_once(':')
                .ok_or_else(|| CpuSetError::BadForm(text.to_owned()))?;
            let node: usize = node
                .trim()
                .parse()
                .map_err(|_| CpuSetError::BadForm(text.to_owned()))?;
            let within = self.node_cpus(node)?;
            pick(&within, &IdList::parse(rel)?, &format!("node {node}"))?
        } else {
            IdList::parse(text)?
        };
        if cpus.is_empty() {
            return Err(CpuSetError::Empty(text.to_owned()));
        }
        self.validate(&cpus)?;
        Ok(cpus)
    }

    /// Every CPU must be online and inside the allowed set.
    pub fn validate(&self, cpus: &IdList) -> Result<(), CpuSetError> {
        for cpu in cpus.iter() {
            if !self.topology.online_cpus.contains(cpu) {
                return Err(CpuSetError::NoSuchCpu {
                    cpu,
                    online: self.topology.online_cpus.clone(),
                });
            }
            if !self.allowed.contains(cpu) {
                return Err(CpuSetError::NotAllowed {
                    cpu,
                    allowed: self.allowed.clone(),
                });
            }
        }
        Ok(())
    }

    /// The allowed CPUs of `node`.
    fn node_cpus(&self, node: usize) -> Result<IdList, CpuSetError> {
        let found = self
            .topology
            .node(node)
            .filter(|n| n.online)
            .ok_or_else(|| CpuSetError::NoSuchNode {
                node,
                nodes: self
                    .topology
                    .nodes
                    .iter()
                    .filter(|n| n.online)
                    .map(|n| n.id)
                    .collect(),
            })?;
        Ok(found.cpus.intersection(&self.allowed))
    }

    /// The NUMA nodes `cpus` live on.
    pub fn nodes_of(&self, cpus: &IdList) -> IdList {
        cpus.iter()
            .filter_map(|c| self.topology.node_of_cpu(c))
            .collect()
    }
}

/// The members of `within` at `positions`.
fn pick(within: &IdList, positions: &IdList, name: &str) -> Result<IdList, CpuSetError> {
    positions
        .iter()
        .map(|i| {
            within
                .as_slice()
                .get(i)
                .copied()
                .ok_or_else(|| CpuSetError::NoSuchPosition {
                    index: i,
                    count: within.len(),
                    within: name.to_owned(),
                    cpus: within.clone(),
                })
        })
        .collect()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use pinned_allocator::Node;

    /// Two nodes of four CPUs; the process may use 0-2 and 4-7.
    fn two_nodes() -> CpuContext {
        let node = |id: usize, cpus: &str| Node {
            id,
            online: true,
            cpus: IdList::parse(cpus).unwrap(),
            mem_total_bytes: Some(1 << 30),
            mem_free_bytes: Some(1 << 29),
            has_memory: true,
            distances: vec![10, 20],
        };
        CpuContext::new(
            Topology {
                nodes: vec![node(0, "0-3"), node(1, "4-7")],
                online_cpus: IdList::parse("0-7").unwrap(),
                synthesized: false,
            },
            IdList::parse("0-2,4-7").unwrap(),
        )
    }

    #[test]
    fn all_forms() {
        let ctx = two_nodes();
        assert_eq!(ctx.parse("all").unwrap().to_string(), "0-2,4-7");
        assert_eq!(ctx.parse("0-1,5").unwrap().to_string(), "0-1,5");
        assert_eq!(ctx.parse("+2-3").unwrap().to_string(), "2,4");
        assert_eq!(ctx.parse("node:1").unwrap().to_string(), "4-7");
        assert_eq!(ctx.parse("node:0-1").unwrap().to_string(), "0-2,4-7");
        assert_eq!(ctx.parse("node1:0,2").unwrap().to_string(), "4,6");
        assert_eq!(ctx.nodes_of(&ctx.parse("2,4").unwrap()).to_string(), "0-1");
    }

    #[test]
    fn errors_name_the_culprit() {
        let ctx = two_nodes();
        let e = ctx.parse("5-9").unwrap_err();
        assert_eq!(
            e,
            CpuSetError::NoSuchCpu {
                cpu: 8,
                online: IdList::parse("0-7").unwrap()
            }
        );
        assert!(e.to_string().contains("cpu 8"), "{e}");
        let e = ctx.parse("3").unwrap_err();
        assert!(matches!(e, CpuSetError::NotAllowed { cpu: 3, .. }), "{e}");
        assert!(e.to_string().contains("cpu 3"), "{e}");
        assert!(matches!(
            ctx.parse("node:2"),
            Err(CpuSetError::NoSuchNode { node: 2, .. })
        ));
        assert!(matches!(
            ctx.parse("node0:3"),
            Err(CpuSetError::NoSuchPosition {
                index: 3,
                count: 3,
                ..
            })
        ));
        assert!(matches!(
            ctx.parse("+9"),
            Err(CpuSetError::NoSuchPosition { .. })
        ));
        assert!(matches!(ctx.parse("x"), Err(CpuSetError::Parse(_))));
        assert!(matches!(ctx.parse("nodeq"), Err(CpuSetError::BadForm(_))));
        assert!(matches!(ctx.parse(""), Err(CpuSetError::Empty(_))));
    }
}
