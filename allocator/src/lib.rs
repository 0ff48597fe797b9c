//! pinned-allocator: the machine's NUMA topology and memory that stays where
//! it is put.
//!
//! - [`numa`]: the memory-policy syscalls, [`NodeMask`], [`MemPolicy`],
//!   `current_policy()`, page queries (`node_of_address`, `query_pages`).
//! - [`region`]: one mapping, policy applied before the first touch,
//!   prefaulted by writing; THP / hugetlb / mlock options; `placement()`.
//! - [`arena`]: a bump allocator over a region, with frames (`mark` /
//!   `reset_to`) for per-request scratch.
//! - [`pool`]: fixed-size blocks taken and given back by many threads, lock-free.
//! - [`replicate`](mod@replicate): one copy of a read-only buffer per node.
//!
//! Nothing after creation (allocating, resetting, taking, giving) makes a
//! syscall or touches the heap.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod arena;
pub mod cpulist;
mod freelist;
mod nodemask;
pub mod numa;
pub mod pool;
pub mod region;
pub mod replicate;
mod sync;
pub mod topology;

pub use arena::{Arena, ArenaError, Mark};
pub use cpulist::{IdList, ListParseError};
pub use numa::{MbindFlags, MemPolicy, NodeMask, NumaError};
pub use pool::{Block, Pool, PoolError};
pub use region::{AllocError, Backing, HugePages, NodePages, Placement, Region, RegionOptions};
pub use replicate::{replicate, ReplicateError, Replicated};
pub use topology::{Node, SysRoot, Topology, TopologyError};
