//! pinned-allocator: the machine's NUMA topology and memory that stays where
//! it is put.
//!
//! - [`numa`]: the memory-policy syscalls, [`NodeMask`], [`MemPolicy`].
//! - [`region`]: one mapping, policy applied before the first touch, prefaulted.
//! - [`arena`]: a bump allocator over a region, with frames for per-request scratch.
//! - [`pool`]: fixed-size blocks taken and given back by many threads, lock-free.
//! - [`replicate`]: one copy of a read-only buffer per node.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cpulist;
mod nodemask;
pub mod numa;
pub mod region;
pub mod topology;

pub use cpulist::{IdList, ListParseError};
pub use numa::{MbindFlags, MemPolicy, NodeMask, NumaError};
pub use region::{AllocError, Backing, HugePages, Placement, Region, RegionOptions};
pub use topology::{Node, SysRoot, Topology, TopologyError};
