//! pinned-runtime: partitions of pinned workers serving requests from
//! pre-allocated slots through a lock-free ring.
#![deny(unsafe_op_in_unsafe_fn)]

pub mod affinity;
pub mod clock;
pub mod cpuset;
mod memory;
pub mod model;
pub mod perf;
pub mod ring;
mod sync;
pub mod telemetry;
pub mod wait;

pub use affinity::{current_affinity, current_cpu, pin_current_thread, AffinityError};
pub use cpuset::{CpuContext, CpuSetError};
pub use ring::{Full, Ring};
pub use sync::CachePadded;
pub use wait::{Doorbell, WaitStrategy};
