//! pinned-allocator: the machine's NUMA topology and memory that stays where
//! it is put.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod cpulist;
pub mod topology;

pub use cpulist::{IdList, ListParseError};
pub use topology::{Node, SysRoot, Topology, TopologyError};
