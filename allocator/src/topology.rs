//! NUMA topology as plain data, read from sysfs.
//!
//! Every path is taken relative to a root directory (normally `/`), so tests
//! point it at fixture trees that describe machines this one is not.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::cpulist::{IdList, ListParseError};

/// A NUMA node as sysfs describes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    pub id: usize,
    /// False for a node that is possible but offline (no cpus, no memory).
    pub online: bool,
    pub cpus: IdList,
    /// `None` when the node's meminfo cannot be read (offline nodes).
    pub mem_total_bytes: Option<u64>,
    pub mem_free_bytes: Option<u64>,
    /// True when the node has memory (a node may have CPUs only).
    pub has_memory: bool,
    /// Distances to every node in `Topology::nodes`' order (10 = local).
    pub distances: Vec<u32>,
}

impl Node {
    /// A node with CPUs but no memory of its own (e.g. sub-NUMA clustering off
    /// on one socket, or a CXL layout) must not be a `Bind` target.
    pub fn is_memoryless(&self) -> bool {
        self.online && !self.has_memory
    }
}

/// The machine's nodes, sorted by id.
///
/// Invariant: every node's `distances.len() == nodes.len()`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    pub nodes: Vec<Node>,
    /// CPUs the kernel has online (`/sys/devices/system/cpu/online`).
    pub online_cpus: IdList,
    /// True when `/sys/devices/system/node` is missing (a kernel without
    /// `CONFIG_NUMA`, or a container that hides it): one node 0 was made up.
    pub synthesized: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("parsing {path}: {source}")]
    List {
        path: PathBuf,
        source: ListParseError,
    },
    #[error("parsing {path}: {what}")]
    Format { path: PathBuf, what: String },
}

/// Reads `root/sys/...` and `root/proc/...`; `root` is `/` on a live system.
#[derive(Clone, Debug)]
pub struct SysRoot {
    root: PathBuf,
}

impl Default for SysRoot {
    fn default() -> Self {
        Self::new("/")
    }
}

impl SysRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// True when this is the running system rather than a fixture tree, so
    /// live syscalls (`sched_getaffinity`, `get_mempolicy`) describe it.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    pub fn read(&self, rel: &str) -> Result<String, TopologyError> {
        let path = self.path(rel);
        fs::read_to_string(&path).map_err(|source| TopologyError::Io { path, source })
    }

    /// The file's contents, or `None` when it does not exist or is unreadable.
    pub fn read_opt(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.path(rel)).ok()
    }

    pub fn read_list(&self, rel: &str) -> Result<IdList, TopologyError> {
        let text = self.read(rel)?;
        IdList::parse(&text).map_err(|source| TopologyError::List {
            path: self.path(rel),
            source,
        })
    }
}

const NODE_DIR: &str = "sys/devices/system/node";

impl Topology {
    /// The live machine's topology.
    pub fn detect() -> Result<Self, TopologyError> {
        Self::read(&SysRoot::default())
    }

    pub fn read(root: &SysRoot) -> Result<Self, TopologyError> {
        let online_cpus = online_cpus(root)?;
        if !root.exists(NODE_DIR) {
            return Ok(Self::single_node(root, online_cpus));
        }
        let possible = match root.read_opt(&format!("{NODE_DIR}/possible")) {
            Some(_) => root.read_list(&format!("{NODE_DIR}/possible"))?,
            None => root.read_list(&format!("{NODE_DIR}/online"))?,
        };
        let online = root.read_list(&format!("{NODE_DIR}/online"))?;
        let with_memory = match root.read_opt(&format!("{NODE_DIR}/has_memory")) {
            Some(_) => Some(root.read_list(&format!("{NODE_DIR}/has_memory"))?),
            None => None,
        };
        let mut nodes = Vec::new();
        for id in possible.iter() {
            let is_online = online.contains(id);
            if !is_online {
                nodes.push(Node {
                    id,
                    online: false,
                    cpus: IdList::default(),
                    mem_total_bytes: None,
                    mem_free_bytes: None,
                    has_memory: false,
                    distances: Vec::new(),
                });
                continue;
            }
            let dir = format!("{NODE_DIR}/node{id}");
            let cpus = root.read_list(&format!("{dir}/cpulist"))?;
            let (total, free) = node_meminfo(root, &format!("{dir}/meminfo"))?;
            let has_memory = match &with_memory {
                Some(list) => list.contains(id),
                None => total.unwrap_or(0) > 0,
            };
            let distances = parse_distances(root, &format!("{dir}/distance"))?;
            nodes.push(Node {
                id,
                online: true,
                cpus,
                mem_total_bytes: total,
                mem_free_bytes: free,
                has_memory,
                distances,
            });
        }
        // The kernel lists distances to online nodes only; give every node a
        // row over all of `nodes` (0 = unknown, for offline ones).
        let online_ids: Vec<usize> = nodes.iter().filter(|n| n.online).map(|n| n.id).collect();
        let all_ids: Vec<usize> = nodes.iter().map(|n| n.id).collect();
        for node in &mut nodes {
            let row = std::mem::take(&mut node.distances);
            if node.online && row.len() != online_ids.len() {
                return Err(TopologyError::Format {
                    path: root.path(&format!("{NODE_DIR}/node{}/distance", node.id)),
                    what: format!(
                        "{} distances for {} online nodes",
                        row.len(),
                        online_ids.len()
                    ),
                });
            }
            node.distances = all_ids
                .iter()
                .map(|id| {
                    online_ids
                        .iter()
                        .position(|o| o == id)
                        .and_then(|p| row.get(p).copied())
                        .unwrap_or(0)
                })
                .collect();
        }
        Ok(Self {
            nodes,
            online_cpus,
            synthesized: false,
        })
    }

    /// No node directory: one node 0 that holds every online CPU and all memory.
    fn single_node(root: &SysRoot, online_cpus: IdList) -> Self {
        let meminfo = root.read_opt("proc/meminfo").unwrap_or_default();
        let total = meminfo_field(&meminfo, "MemTotal:");
        let free = meminfo_field(&meminfo, "MemFree:");
        Self {
            nodes: vec![Node {
                id: 0,
                online: true,
                cpus: online_cpus.clone(),
                mem_total_bytes: total,
                mem_free_bytes: free,
                has_memory: true,
                distances: vec![10],
            }],
            online_cpus,
            synthesized: true,
        }
    }

    pub fn node(&self, id: usize) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Online nodes that have memory: the valid targets of a memory policy.
    pub fn memory_nodes(&self) -> IdList {
        self.nodes
            .iter()
            .filter(|n| n.online && n.has_memory)
            .map(|n| n.id)
            .collect()
    }

    /// The node a CPU belongs to.
    pub fn node_of_cpu(&self, cpu: usize) -> Option<usize> {
        self.nodes
            .iter()
            .find(|n| n.cpus.contains(cpu))
            .map(|n| n.id)
    }

    /// Highest node id the kernel may use (sizes node masks).
    pub fn max_node(&self) -> usize {
        self.nodes.iter().map(|n| n.id).max().unwrap_or(0)
    }
}

fn online_cpus(root: &SysRoot) -> Result<IdList, TopologyError> {
    if root.exists("sys/devices/system/cpu/online") {
        return root.read_list("sys/devices/system/cpu/online");
    }
    // Without sysfs, count the processors /proc/cpuinfo lists.
    let cpuinfo = root.read_opt("proc/cpuinfo").unwrap_or_default();
    let ids: Vec<usize> = cpuinfo
        .lines()
        .filter_map(|l| l.strip_prefix("processor"))
        .filter_map(|rest| {
            rest.trim_start_matches([' ', '\t', ':'])
                .trim()
                .parse()
                .ok()
        })
        .collect();
    if !ids.is_empty() {
        return Ok(IdList::from_ids(ids));
    }
    let n = if root.is_live() {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    Ok((0..n).collect())
}

/// `Node 0 MemTotal:       24576000 kB` lines; sizes in bytes.
fn node_meminfo(root: &SysRoot, rel: &str) -> Result<(Option<u64>, Option<u64>), TopologyError> {
    let Some(text) = root.read_opt(rel) else {
        return Ok((None, None));
    };
    Ok((
        meminfo_field(&text, "MemTotal:"),
        meminfo_field(&text, "MemFree:"),
    ))
}

/// Finds `key` in a meminfo-style text and returns its value in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let at = line.find(key)?;
        let mut words = line[at + key.len()..].split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        let scale = match words.next() {
            Some("kB") => 1024,
            _ => 1,
        };
        Some(value * scale)
    })
}

fn parse_distances(root: &SysRoot, rel: &str) -> Result<Vec<u32>, TopologyError> {
    let Some(text) = root.read_opt(rel) else {
        return Ok(Vec::new());
    };
    text.split_whitespace()
        .map(|w| {
            w.parse::<u32>().map_err(|_| TopologyError::Format {
                path: root.path(rel),
                what: format!("distance '{w}' is not a number"),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_values_are_bytes() {
        let t = "Node 1 MemTotal:       1024 kB\nNode 1 MemFree:        512 kB\n";
        assert_eq!(meminfo_field(t, "MemTotal:"), Some(1024 * 1024));
        assert_eq!(meminfo_field(t, "MemFree:"), Some(512 * 1024));
        assert_eq!(meminfo_field(t, "MemUsed:"), None);
    }

    #[test]
    fn live_topology_has_this_process_cpu() {
        let topo = Topology::detect().unwrap();
        assert!(!topo.nodes.is_empty());
        assert!(!topo.online_cpus.is_empty());
        for node in &topo.nodes {
            assert_eq!(node.distances.len(), topo.nodes.len());
        }
        assert!(!topo.memory_nodes().is_empty());
    }
}
