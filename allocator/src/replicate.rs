//! Per-node replication of a read-only buffer: one copy bound to each node
//! in a set, so every worker reads weights from its own node's memory.
//!
//! ```
//! use pinned_allocator::{replicate, NodeMask};
//! let weights = vec![7u8; 10_000];
//! let copies = replicate(&weights, &NodeMask::single(0)?)?;
//! assert_eq!(copies.for_node(0), &weights[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::numa::{MemPolicy, NodeMask, NumaError};
use crate::region::{AllocError, Placement, Region, RegionOptions};
use crate::topology::Topology;

/// Why replication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicateError {
    #[error("replicating onto no nodes: give at least one node")]
    NoNodes,
    #[error("the copy on node {node}: {source}")]
    Copy { node: usize, source: AllocError },
}

/// One copy per node. Invariant: `copies` is sorted by node, non-empty, and
/// every region holds `len` bytes equal to the source, bound to its node.
#[derive(Debug)]
pub struct Replicated {
    copies: Vec<(usize, Region)>,
    /// For each node id up to the highest known one, the index in `copies`
    /// of the nearest copy (by the kernel's distance table).
    nearest: Vec<usize>,
    len: usize,
}

/// Copies `bytes` onto each node of `nodes`, each copy in a region bound
/// (`MemPolicy::Bind`) to its node and prefaulted there.
pub fn replicate(bytes: &[u8], nodes: &NodeMask) -> Result<Replicated, ReplicateError> {
    if nodes.is_empty() {
        return Err(ReplicateError::NoNodes);
    }
    let mut copies = Vec::with_capacity(nodes.count());
    for node in nodes.iter() {
        let policy = MemPolicy::Bind(NodeMask::single(node).map_err(|e| ReplicateError::Copy {
            node,
            source: AllocError::Policy {
                bytes: bytes.len(),
                source: NumaError::from(e),
            },
        })?);
        // A zero-byte buffer still gets a (one-page) region, so `for_node`
        // has something to point into.
        let mut region = Region::new(RegionOptions::new(bytes.len().max(1), policy))
            .map_err(|source| ReplicateError::Copy { node, source })?;
        region.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
        copies.push((node, region));
    }
    let nearest = nearest_copies(&copies);
    Ok(Replicated {
        copies,
        nearest,
        len: bytes.len(),
    })
}

fn nearest_copies(copies: &[(usize, Region)]) -> Vec<usize> {
    let Ok(topo) = Topology::detect() else {
        return Vec::new();
    };
    let ids: Vec<usize> = topo.nodes.iter().map(|n| n.id).collect();
    let mut nearest = vec![0; topo.max_node() + 1];
    for (pos, node) in topo.nodes.iter().enumerate() {
        let distance = |copy_node: usize| {
            ids.iter()
                .position(|&id| id == copy_node)
                .and_then(|col| topo.nodes[pos].distances.get(col).copied())
                .filter(|&d| d > 0)
                .unwrap_or(u32::MAX)
        };
        nearest[node.id] = (0..copies.len())
            .min_by_key(|&i| (distance(copies[i].0), copies[i].0))
            .unwrap_or(0);
    }
    nearest
}

impl Replicated {
    /// The copy for a worker on `node`: its own, or else the nearest one
    /// (by the kernel's distances; the lowest node when unknown).
    pub fn for_node(&self, node: usize) -> &[u8] {
        let i = match self.copies.binary_search_by_key(&node, |c| c.0) {
            Ok(i) => i,
            Err(_) => self.nearest.get(node).copied().unwrap_or(0),
        };
        &self.copies[i].1.as_slice()[..self.len]
    }

    /// The copy placed on `node`, if there is one.
    pub fn copy_on(&self, node: usize) -> Option<&[u8]> {
        let i = self.copies.binary_search_by_key(&node, |c| c.0).ok()?;
        Some(&self.copies[i].1.as_slice()[..self.len])
    }

    /// Nodes holding a copy.
    pub fn nodes(&self) -> NodeMask {
        NodeMask::from_nodes(self.copies.iter().map(|c| c.0)).unwrap_or_default()
    }

    /// Length of each copy.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where each copy's pages are, by node.
    pub fn placement(&self) -> Result<Vec<(usize, Placement)>, NumaError> {
        self.copies
            .iter()
            .map(|(node, r)| Ok((*node, r.placement()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_copy_on_node_0_equal_to_the_source() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7) as u8).collect();
        let r = replicate(&src, &NodeMask::single(0).unwrap()).unwrap();
        assert_eq!(r.copy_on(0).unwrap(), &src[..]);
        assert_ne!(r.for_node(0).as_ptr(), src.as_ptr());
        // A node without a copy reads the nearest one instead.
        assert_eq!(r.for_node(5), &src[..]);
        assert_eq!(r.copy_on(5), None);
        let placement = r.placement().unwrap();
        assert_eq!(placement[0].1.pages_on(0), placement[0].1.total_pages);
        assert_eq!(r.nodes().to_string(), "0");
    }

    #[test]
    fn empty_node_sets_and_buffers() {
        assert_eq!(
            replicate(b"x", &NodeMask::new()).unwrap_err(),
            ReplicateError::NoNodes
        );
        let r = replicate(&[], &NodeMask::single(0).unwrap()).unwrap();
        assert!(r.for_node(0).is_empty());
    }

    #[test]
    fn a_node_outside_the_cpuset_names_the_node() {
        let e = replicate(b"x", &NodeMask::from_nodes([0, 700]).unwrap()).unwrap_err();
        assert!(matches!(e, ReplicateError::Copy { node: 700, .. }), "{e}");
        assert!(e.to_string().contains("node 700"), "{e}");
    }
}
