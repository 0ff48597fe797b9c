//! pinned-runtime: partitions of pinned workers serving requests from
//! pre-allocated slots through a lock-free ring.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use pinned_runtime::{model::DenseMlp, PartitionConfig, Runtime, RuntimeConfig};
//!
//! let mut rt = Runtime::new(RuntimeConfig::default())?;
//! let model = Arc::new(DenseMlp::new(&[64, 128, 64], 1)?);
//! let part = rt.add_partition(PartitionConfig::new("mlp", "all"), model)?;
//! let mut req = part.acquire(Duration::from_secs(1))?;
//! req.input_mut()?.fill(0.5);
//! req.submit()?;
//! req.wait(Duration::from_secs(1))?;
//! let y0 = req.output()?[0];
//! req.release();
//! let telemetry = rt.shutdown();
//! # let _ = (y0, telemetry);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod affinity;
pub mod clock;
pub mod cpuset;
mod memory;
pub mod model;
pub mod models;
pub mod partition;
pub mod perf;
pub mod request;
pub mod ring;
#[allow(clippy::module_inception)]
pub mod runtime;
mod slots;
mod sync;
pub mod telemetry;
pub mod wait;
mod worker;

pub use affinity::{
    current_affinity, current_cpu, current_tid, pin_current_thread, thread_affinity, AffinityError,
};
pub use cpuset::{CpuContext, CpuSetError};
pub use memory::MemoryError;
pub use model::{
    mlp_spec_widths, Affine, DenseMlp, Model, ModelError, Scratch, ScratchSize, DEFAULT_MLP,
};
pub use partition::{BatchPolicy, Partition, PartitionConfig, Placement};
pub use request::{Request, RequestError, Status};
pub use ring::{Full, Ring};
pub use runtime::{Runtime, RuntimeConfig, RuntimeError};
pub use slots::Failure;
pub use sync::CachePadded;
pub use telemetry::{Latencies, PartitionTelemetry, Summary, WorkerTelemetry};
pub use wait::{Doorbell, WaitStrategy};
pub use worker::WorkerError;
