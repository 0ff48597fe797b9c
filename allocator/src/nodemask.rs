//! `NodeMask`: the node bitmap that `mbind`, `set_mempolicy` and
//! `get_mempolicy` read and write, with the kernel's `maxnode` convention
//! handled here and nowhere else.
//!
//! The convention (mm/mempolicy.c, `get_nodes`): the kernel decrements
//! `maxnode` first and then reads that many bits, so a mask of `N` bits is
//! passed as `maxnode = N + 1`. Passing `N` silently drops the highest node.
//! When writing a mask (`get_mempolicy`), it writes `ALIGN(maxnode - 1, 64) / 8`
//! bytes and refuses `maxnode < nr_node_ids`. Both are pinned down by tests
//! in `numa.rs` against the live kernel.

use std::fmt;

use crate::cpulist::IdList;

/// Words in a mask. 16 x 64 = 1024 bits, the kernel's largest possible
/// `MAX_NUMNODES` (`CONFIG_NODES_SHIFT` is at most 10, arch/x86/Kconfig), so
/// every node id any kernel can report fits, whatever `nodes/possible` says.
const WORDS: usize = 16;

/// A set of NUMA node ids, laid out exactly as the kernel's `nodemask_t`
/// (an array of `unsigned long`, bit `n % 64` of word `n / 64` is node `n`).
///
/// Invariant: only bits `< NodeMask::BITS` exist; it is `Copy`, so passing a
/// mask to a syscall never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(C)]
pub struct NodeMask {
    words: [u64; WORDS],
}

/// A node id that no kernel can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "node {node} is beyond the largest node id any kernel supports ({max}); check the node list"
)]
pub struct NodeOutOfRange {
    pub node: usize,
    pub max: usize,
}

impl NodeMask {
    /// Number of bits (nodes) the mask can hold.
    pub const BITS: usize = WORDS * 64;

    /// The empty set.
    pub const fn new() -> Self {
        Self { words: [0; WORDS] }
    }

    /// The set holding only `node`.
    pub fn single(node: usize) -> Result<Self, NodeOutOfRange> {
        let mut m = Self::new();
        m.insert(node)?;
        Ok(m)
    }

    /// The set of `nodes`; refuses an id `>= BITS` rather than dropping it.
    pub fn from_nodes(nodes: impl IntoIterator<Item = usize>) -> Result<Self, NodeOutOfRange> {
        let mut m = Self::new();
        for n in nodes {
            m.insert(n)?;
        }
        Ok(m)
    }

    pub fn insert(&mut self, node: usize) -> Result<(), NodeOutOfRange> {
        if node >= Self::BITS {
            return Err(NodeOutOfRange {
                node,
                max: Self::BITS - 1,
            });
        }
        self.words[node / 64] |= 1 << (node % 64);
        Ok(())
    }

    pub fn remove(&mut self, node: usize) {
        if node < Self::BITS {
            self.words[node / 64] &= !(1 << (node % 64));
        }
    }

    pub fn contains(&self, node: usize) -> bool {
        node < Self::BITS && self.words[node / 64] & (1 << (node % 64)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|&w| w == 0)
    }

    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Lowest node in the set.
    pub fn first(&self) -> Option<usize> {
        self.iter().next()
    }

    /// Nodes in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::BITS).filter(move |&n| self.contains(n))
    }

    pub fn to_id_list(&self) -> IdList {
        self.iter().collect()
    }

    /// The `maxnode` argument that makes the kernel read all `BITS` bits.
    /// This `+ 1` is the one place the convention lives.
    pub(crate) const fn kernel_maxnode() -> libc::c_ulong {
        Self::BITS as libc::c_ulong + 1
    }

    /// Bytes the kernel writes into a mask given `kernel_maxnode()`.
    pub(crate) const fn kernel_write_bytes(maxnode: libc::c_ulong) -> usize {
        ((maxnode as usize - 1).div_ceil(64) * 64) / 8
    }

    pub(crate) fn as_ptr(&self) -> *const libc::c_ulong {
        self.words.as_ptr().cast()
    }

    pub(crate) fn as_mut_ptr(&mut self) -> *mut libc::c_ulong {
        self.words.as_mut_ptr().cast()
    }
}

impl TryFrom<&IdList> for NodeMask {
    type Error = NodeOutOfRange;
    fn try_from(list: &IdList) -> Result<Self, Self::Error> {
        Self::from_nodes(list.iter())
    }
}

/// Kernel list form, e.g. `0-1,4`.
impl fmt::Display for NodeMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_id_list(), f)
    }
}

impl fmt::Debug for NodeMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeMask({self})")
    }
}

impl serde::Serialize for NodeMask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_land_where_the_kernel_reads_them() {
        let m = NodeMask::from_nodes([0, 1, 63, 64, 1023]).unwrap();
        assert_eq!(m.words[0], 1 | 2 | (1 << 63));
        assert_eq!(m.words[1], 1);
        assert_eq!(m.words[15], 1 << 63);
        assert_eq!(m.count(), 5);
        assert_eq!(m.to_string(), "0-1,63-64,1023");
        assert_eq!(m.first(), Some(0));
    }

    #[test]
    fn refuses_nodes_it_cannot_hold() {
        let e = NodeMask::single(1024).unwrap_err();
        assert_eq!(
            e,
            NodeOutOfRange {
                node: 1024,
                max: 1023
            }
        );
        assert!(e.to_string().contains("1024"));
        assert!(!NodeMask::new().contains(5000));
    }

    #[test]
    fn maxnode_is_bits_plus_one_and_covers_the_whole_mask() {
        assert_eq!(NodeMask::kernel_maxnode(), 1025);
        // The kernel writes back exactly our array, not a byte more.
        assert_eq!(
            NodeMask::kernel_write_bytes(NodeMask::kernel_maxnode()),
            std::mem::size_of::<NodeMask>()
        );
        // The mistake the convention guards against: maxnode = BITS drops a bit.
        assert_eq!(NodeMask::kernel_write_bytes(65), 8);
        assert_eq!(NodeMask::kernel_write_bytes(64), 8);
    }

    #[test]
    fn remove_and_round_trip_through_id_list() {
        let list = IdList::parse("0-2,7").unwrap();
        let mut m = NodeMask::try_from(&list).unwrap();
        assert_eq!(m.to_id_list(), list);
        m.remove(1);
        assert_eq!(m.to_string(), "0,2,7");
        assert!(!m.is_empty());
    }
}
