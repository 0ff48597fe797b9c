//! The runtime a host links against: several partitions, each with its
//! pinned workers, and a draining shutdown.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use pinned_allocator::{IdList, MemPolicy, NumaError, Topology, TopologyError};

use crate::affinity::{current_affinity, AffinityError};
use crate::cpuset::{CpuContext, CpuSetError};
use crate::memory::MemoryError;
use crate::model::Model;
use crate::partition::{Partition, PartitionConfig, Placement, Shared};
use crate::telemetry::PartitionTelemetry;
use crate::worker::{self, WorkerError};

/// Why the runtime or a partition could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("reading the machine's topology: {0}")]
    Topology(#[from] TopologyError),
    #[error("reading this process's allowed cpus: {0}")]
    Affinity(#[from] AffinityError),
    #[error("partition '{partition}': {source}")]
    CpuSet {
        partition: String,
        source: CpuSetError,
    },
    #[error("partition '{0}' already exists")]
    DuplicateName(String),
    #[error("partition '{partition}': {what}")]
    BadConfig { partition: String, what: String },
    #[error("partition '{partition}': memory placement: {source}")]
    Placement {
        partition: String,
        source: Box<NumaError>,
    },
    #[error("partition '{partition}': {source}")]
    Memory {
        partition: String,
        source: MemoryError,
    },
    #[error("partition '{partition}' worker {worker}: {source}")]
    Worker {
        partition: String,
        worker: usize,
        source: WorkerError,
    },
    #[error("partition '{partition}': spawning worker {worker}: {source}")]
    Spawn {
        partition: String,
        worker: usize,
        source: std::io::Error,
    },
}

/// How the runtime sees the machine; `Default` reads the live one.
#[derive(Clone, Debug, Default)]
pub struct RuntimeConfig {
    /// `None`: read from sysfs.
    pub topology: Option<Topology>,
    /// `None`: `sched_getaffinity` of the calling thread (call `new` before
    /// pinning anything).
    pub allowed: Option<IdList>,
}

struct Running {
    partition: Partition,
    threads: Vec<JoinHandle<()>>,
}

/// Partitions of pinned workers serving models.
pub struct Runtime {
    ctx: CpuContext,
    running: Vec<Running>,
}

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let topology = match config.topology {
            Some(t) => t,
            None => Topology::detect()?,
        };
        let allowed = match config.allowed {
            Some(a) => a,
            None => current_affinity()?,
        };
        Ok(Self {
            ctx: CpuContext::new(topology, allowed),
            running: Vec::new(),
        })
    }

    /// The machine and allowed CPUs CPU sets are checked against.
    pub fn cpu_context(&self) -> &CpuContext {
        &self.ctx
    }

    /// Starts a partition: validates its CPU set, maps its request slots
    /// with its placement, spawns its workers (each pins itself, then
    /// allocates), and returns once all are serving.
    pub fn add_partition(
        &mut self,
        config: PartitionConfig,
        model: Arc<dyn Model>,
    ) -> Result<Partition, RuntimeError> {
        let name = config.name.clone();
        let bad = |what: String| RuntimeError::BadConfig {
            partition: name.clone(),
            what,
        };
        if name.is_empty() || name.contains('/') {
            return Err(bad(format!("name '{name}' must be non-empty, without '/'")));
        }
        if self.partition(&name).is_some() {
            return Err(RuntimeError::DuplicateName(name));
        }
        if config.batch.max_batch == 0 {
            return Err(bad("max_batch must be at least 1".into()));
        }
        if config.slots > u32::MAX as usize / 2 || config.ring_capacity > 1 << 30 {
            return Err(bad("too many slots or too large a ring".into()));
        }
        let cpus = self
            .ctx
            .parse(&config.cpus)
            .map_err(|source| RuntimeError::CpuSet {
                partition: name.clone(),
                source,
            })?;
        let nodes = self.ctx.nodes_of(&cpus);
        let policy = self.slot_policy(&config, &nodes)?;
        let workers = if config.workers == 0 {
            cpus.len()
        } else {
            config.workers
        };
        let shared =
            Shared::new(&config, cpus, nodes, policy, model, workers).map_err(|source| {
                RuntimeError::Memory {
                    partition: name.clone(),
                    source,
                }
            })?;
        let partition = Partition {
            shared: Arc::new(shared),
        };
        let mut running = Running {
            partition: partition.clone(),
            threads: Vec::new(),
        };
        for index in 0..workers {
            let (ready_tx, ready_rx) = sync_channel(1);
            let shared = partition.shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("pinned/{name}/{index}"))
                .spawn(move || worker::run(shared, index, ready_tx));
            let handle = match spawned {
                Ok(h) => h,
                Err(source) => {
                    stop(running);
                    return Err(RuntimeError::Spawn {
                        partition: name,
                        worker: index,
                        source,
                    });
                }
            };
            running.threads.push(handle);
            let started = ready_rx.recv().unwrap_or(Err(WorkerError::Vanished));
            if let Err(source) = started {
                stop(running);
                return Err(RuntimeError::Worker {
                    partition: name,
                    worker: index,
                    source,
                });
            }
        }
        self.running.push(running);
        Ok(partition)
    }

    fn slot_policy(
        &self,
        config: &PartitionConfig,
        cpu_nodes: &IdList,
    ) -> Result<MemPolicy, RuntimeError> {
        let memory_nodes = self.ctx.topology.memory_nodes();
        let check = |nodes: &IdList| -> Result<(), RuntimeError> {
            match nodes.iter().find(|n| !memory_nodes.contains(*n)) {
                Some(node) => Err(RuntimeError::BadConfig {
                    partition: config.name.clone(),
                    what: format!("node {node} has no memory (memory nodes: {memory_nodes})"),
                }),
                None => Ok(()),
            }
        };
        let placement_err = |source| RuntimeError::Placement {
            partition: config.name.clone(),
            source: Box::new(source),
        };
        // CPUs on memoryless nodes fall back to every memory node.
        let local = {
            let with_memory = cpu_nodes.intersection(&memory_nodes);
            if with_memory.is_empty() {
                memory_nodes.clone()
            } else {
                with_memory
            }
        };
        match &config.placement {
            Placement::Os => Ok(MemPolicy::Default),
            Placement::Local => MemPolicy::bind(&local).map_err(placement_err),
            Placement::Bind(nodes) => {
                check(nodes)?;
                MemPolicy::bind(nodes).map_err(placement_err)
            }
            Placement::Preferred(node) => {
                check(&IdList::from_ids(vec![*node]))?;
                Ok(MemPolicy::Preferred(*node))
            }
            Placement::Interleave(nodes) => {
                check(nodes)?;
                MemPolicy::interleave(nodes).map_err(placement_err)
            }
            Placement::Replicate => MemPolicy::interleave(&local).map_err(placement_err),
        }
    }

    pub fn partition(&self, name: &str) -> Option<&Partition> {
        self.running
            .iter()
            .map(|r| &r.partition)
            .find(|p| p.name() == name)
    }

    pub fn partitions(&self) -> impl Iterator<Item = &Partition> {
        self.running.iter().map(|r| &r.partition)
    }

    /// Stops accepting, lets every worker drain its ring (every accepted
    /// request completes exactly once), joins them, and returns the final
    /// telemetry of each partition.
    pub fn shutdown(mut self) -> Vec<PartitionTelemetry> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Vec<PartitionTelemetry> {
        for r in &self.running {
            r.partition.shared.close();
        }
        self.running.drain(..).map(stop).collect()
    }
}

/// Closes a partition, joins its workers, returns its final telemetry.
fn stop(running: Running) -> PartitionTelemetry {
    running.partition.shared.close();
    for t in running.threads {
        // A worker thread only ends by returning: model panics are caught
        // per request.
        let _ = t.join();
    }
    running.partition.telemetry_snapshot()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("allowed", &self.ctx.allowed.to_string())
            .field("partitions", &self.running.len())
            .finish()
    }
}
