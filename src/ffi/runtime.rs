//! Runtime and partition handles.
//!
//! `pinned_runtime` owns its partitions; a `pinned_partition*` is borrowed
//! from it and stays valid until `pinned_runtime_free`. Setting up
//! (new / add / load) is serialised by a lock; serving requests through a
//! partition takes no runtime lock.

use std::collections::BTreeMap;
use std::ffi::c_char;
use std::sync::{Arc, Mutex};

use ::pinned_runtime::{
    BatchPolicy, Model, Partition, PartitionConfig, Placement, Runtime, RuntimeConfig,
    RuntimeError, WaitStrategy,
};

use super::error::pinned_status;
use super::guard::{c_str, check_out, deref, guard, opt_c_str, write_out, FfiError};
use super::model::{model_spec, pinned_model_config};
use super::request::RequestTable;
use crate::config::{ConfigError, RuntimeSpec};

/// How idle workers and waiting hosts wait (`pinned_partition_config.wait`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_wait {
    /// Spin: lowest latency, a core kept busy.
    PINNED_WAIT_SPIN = 0,
    /// Spin for `spin_us`, then `sched_yield`.
    PINNED_WAIT_YIELD = 1,
    /// Spin for `spin_us`, then sleep on a futex.
    PINNED_WAIT_PARK = 2,
}

/// A partition: a CPU set, its memory placement, its workers and batching.
/// Fill with `pinned_partition_config_default`, then set what you need.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct pinned_partition_config {
    /// Unique name (required), e.g. "mlp".
    pub name: *const c_char,
    /// CPUs as for `taskset -c` / `numactl`: "0-3,8", "all", "node:0".
    /// NULL means "all".
    pub cpus: *const c_char,
    /// "os", "local" (default when NULL), "bind:0", "preferred:1",
    /// "interleave:0-1", "replicate".
    pub placement: *const c_char,
    /// A `pinned_wait` value.
    pub wait: u32,
    /// Spin budget in microseconds before yielding or parking.
    pub spin_us: u32,
    /// Worker threads; 0 = one per CPU of the set.
    pub workers: u32,
    /// Requests a worker may run as one batch (1 = no batching).
    pub max_batch: u32,
    /// How long a worker waits for a batch to fill, in microseconds.
    pub max_wait_us: u32,
    /// Pre-allocated request slots; 0 = 64.
    pub slots: u32,
    /// Pin each worker to its CPU (false leaves placement to the OS).
    pub pin: bool,
}

/// The runtime: partitions of pinned workers.
#[allow(non_camel_case_types)]
pub struct pinned_runtime {
    state: Mutex<State>,
}

struct State {
    runtime: Option<Runtime>,
    /// Partitions added but with no model loaded yet.
    pending: BTreeMap<String, PartitionConfig>,
    /// Started partitions, boxed so the addresses handed to C stay put
    /// when the vector grows.
    #[allow(clippy::vec_box)]
    started: Vec<Box<pinned_partition>>,
}

/// A started partition: serve requests through it (`pinned_request_*`).
#[allow(non_camel_case_types)]
pub struct pinned_partition {
    pub(crate) partition: Partition,
    pub(crate) requests: RequestTable,
}

pub(crate) fn runtime_status(err: &RuntimeError) -> pinned_status {
    match err {
        RuntimeError::CpuSet { .. } | RuntimeError::Placement { .. } => {
            pinned_status::PINNED_BAD_PLACEMENT
        }
        RuntimeError::Memory { .. } => pinned_status::PINNED_OUT_OF_MEMORY,
        RuntimeError::DuplicateName(_) | RuntimeError::BadConfig { .. } => {
            pinned_status::PINNED_INVALID_ARGUMENT
        }
        _ => pinned_status::PINNED_INTERNAL,
    }
}

impl From<RuntimeError> for FfiError {
    fn from(err: RuntimeError) -> Self {
        FfiError::new(runtime_status(&err), err.to_string())
    }
}

impl From<ConfigError> for FfiError {
    fn from(err: ConfigError) -> Self {
        let status = match &err {
            ConfigError::Runtime(e) => runtime_status(e),
            ConfigError::Model { .. } | ConfigError::Load { .. } => pinned_status::PINNED_BAD_MODEL,
            _ => pinned_status::PINNED_INVALID_ARGUMENT,
        };
        FfiError::new(status, err.to_string())
    }
}

impl pinned_runtime {
    fn from_runtime(runtime: Runtime) -> Self {
        Self {
            state: Mutex::new(State {
                runtime: Some(runtime),
                pending: BTreeMap::new(),
                started: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(
        state: &mut State,
        config: PartitionConfig,
        model: Arc<dyn Model>,
    ) -> Result<*mut pinned_partition, FfiError> {
        let runtime = state
            .runtime
            .as_mut()
            .ok_or_else(|| FfiError::new(pinned_status::PINNED_SHUTTING_DOWN, "runtime stopped"))?;
        let partition = runtime.add_partition(config, model)?;
        let requests = RequestTable::new(partition.slots());
        let mut handle = Box::new(pinned_partition {
            partition,
            requests,
        });
        let ptr: *mut pinned_partition = &mut *handle;
        state.started.push(handle);
        Ok(ptr)
    }
}

/// Fills `*out` with the defaults: all CPUs, local memory, park after 50 us,
/// one worker per CPU, no batching, 64 slots, pinned. `name` stays NULL.
///
/// # Safety
/// `out` must be NULL or valid for one write of the struct.
#[no_mangle]
pub unsafe extern "C" fn pinned_partition_config_default(
    out: *mut pinned_partition_config,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        let defaults = pinned_partition_config {
            name: std::ptr::null(),
            cpus: std::ptr::null(),
            placement: std::ptr::null(),
            wait: pinned_wait::PINNED_WAIT_PARK as u32,
            spin_us: 50,
            workers: 0,
            max_batch: 1,
            max_wait_us: 0,
            slots: 0,
            pin: true,
        };
        // SAFETY: `out` is non-NULL (checked) and the caller's struct.
        unsafe { write_out(out, defaults) };
        Ok(())
    })
}

/// Creates a runtime for the live machine (its topology and this thread's
/// allowed CPUs) with no partitions. Free it with `pinned_runtime_free`.
/// `*out` is written only on success.
///
/// # Safety
/// `out` must be NULL or valid for one pointer write.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_new(out: *mut *mut pinned_runtime) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        let runtime = Runtime::new(RuntimeConfig::default())?;
        let handle = Box::into_raw(Box::new(pinned_runtime::from_runtime(runtime)));
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, handle) };
        Ok(())
    })
}

/// Creates a runtime and starts every partition a TOML or JSON text
/// describes (see the README, "Configuration"). A parse error names the
/// line and column. `*out` is written only on success.
///
/// # Safety
/// `config` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_new_from_config(
    config: *const c_char,
    out: *mut *mut pinned_runtime,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let text = unsafe { c_str(config, "config") }?;
        let spec = RuntimeSpec::parse(text)?;
        let runtime = spec.start()?;
        let handle = pinned_runtime::from_runtime(runtime);
        {
            let mut state = handle.lock();
            let State {
                runtime, started, ..
            } = &mut *state;
            let runtime = runtime.as_ref().expect("just created");
            for partition in runtime.partitions() {
                started.push(Box::new(pinned_partition {
                    partition: partition.clone(),
                    requests: RequestTable::new(partition.slots()),
                }));
            }
        }
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, Box::into_raw(Box::new(handle))) };
        Ok(())
    })
}

/// Declares a partition; it starts when a model is loaded into it with
/// `pinned_runtime_load_model`. The CPU set and placement are checked then.
///
/// # Safety
/// `runtime` must be NULL or a live runtime; `config` NULL or a valid struct
/// whose strings are NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_add_partition(
    runtime: *const pinned_runtime,
    config: *const pinned_partition_config,
) -> pinned_status {
    guard(|| {
        // SAFETY: per the contract above.
        let runtime = unsafe { deref(runtime, "runtime") }?;
        // SAFETY: per the contract above.
        let config = unsafe { deref(config, "config") }?;
        // SAFETY: the struct's strings are NULL or NUL-terminated.
        let parsed = unsafe { partition_config(config) }?;
        let mut state = runtime.lock();
        let exists = state.pending.contains_key(&parsed.name)
            || state
                .started
                .iter()
                .any(|p| p.partition.name() == parsed.name);
        if exists {
            return Err(FfiError::invalid(format!(
                "partition '{}' already exists",
                parsed.name
            )));
        }
        state.pending.insert(parsed.name.clone(), parsed);
        Ok(())
    })
}

/// Loads a model into the declared partition `name`, starts its workers
/// (pinned, memory placed) and returns the partition handle, valid until
/// `pinned_runtime_free`. `*out` is written only on success.
///
/// # Safety
/// `runtime` NULL or live; `name` NULL or NUL-terminated; `model` NULL or a
/// valid struct; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_load_model(
    runtime: *const pinned_runtime,
    name: *const c_char,
    model: *const pinned_model_config,
    out: *mut *mut pinned_partition,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let runtime = unsafe { deref(runtime, "runtime") }?;
        // SAFETY: per the contract above.
        let name = unsafe { c_str(name, "name") }?;
        // SAFETY: per the contract above.
        let model = unsafe { deref(model, "model") }?;
        let mut state = runtime.lock();
        let Some(config) = state.pending.get(name).cloned() else {
            return Err(FfiError::invalid(format!(
                "no partition '{name}' waits for a model (add it with pinned_runtime_add_partition first)"
            )));
        };
        // SAFETY: the model struct's pointers follow its documented contract.
        let spec = unsafe { model_spec(model) }?;
        let ctx = state
            .runtime
            .as_ref()
            .ok_or_else(|| FfiError::new(pinned_status::PINNED_SHUTTING_DOWN, "runtime stopped"))?
            .cpu_context();
        let model = spec.build(&config, ctx)?;
        let handle = pinned_runtime::start(&mut state, config, model)?;
        state.pending.remove(name);
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, handle) };
        Ok(())
    })
}

/// Looks up a started partition by name. `*out` is written only on success.
///
/// # Safety
/// `runtime` NULL or live; `name` NULL or NUL-terminated; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_partition(
    runtime: *const pinned_runtime,
    name: *const c_char,
    out: *mut *mut pinned_partition,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let runtime = unsafe { deref(runtime, "runtime") }?;
        // SAFETY: per the contract above.
        let name = unsafe { c_str(name, "name") }?;
        let mut state = runtime.lock();
        let found = state
            .started
            .iter_mut()
            .find(|p| p.partition.name() == name)
            .map(|p| &mut **p as *mut pinned_partition)
            .ok_or_else(|| FfiError::invalid(format!("no started partition '{name}'")))?;
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, found) };
        Ok(())
    })
}

/// Stops the runtime: requests already submitted complete (drain), requests
/// still held are released, workers end, memory is unmapped. Every
/// partition handle becomes invalid. NULL is ignored.
///
/// # Safety
/// `runtime` must be NULL or a handle from `pinned_runtime_new*` not yet
/// freed, and no other thread may use it or its partitions during or after.
#[no_mangle]
pub unsafe extern "C" fn pinned_runtime_free(runtime: *mut pinned_runtime) {
    if runtime.is_null() {
        return;
    }
    let _ = guard(|| {
        // SAFETY: a live handle from Box::into_raw, per the contract above.
        let handle = unsafe { Box::from_raw(runtime) };
        let mut state = handle.lock();
        for partition in &state.started {
            partition.requests.release_all();
        }
        if let Some(runtime) = state.runtime.take() {
            runtime.shutdown();
        }
        state.started.clear();
        Ok(())
    });
}

/// # Safety
/// The struct's strings must be NULL or NUL-terminated.
unsafe fn partition_config(c: &pinned_partition_config) -> Result<PartitionConfig, FfiError> {
    // SAFETY: forwarded from the caller.
    let name = unsafe { c_str(c.name, "config.name") }?;
    if name.is_empty() {
        return Err(FfiError::invalid("config.name is empty"));
    }
    // SAFETY: forwarded from the caller.
    let cpus = unsafe { opt_c_str(c.cpus, "config.cpus") }?.unwrap_or("all");
    let mut config = PartitionConfig::new(name, cpus);
    // SAFETY: forwarded from the caller.
    if let Some(text) = unsafe { opt_c_str(c.placement, "config.placement") }? {
        config.placement = Placement::parse(text).ok_or_else(|| {
            FfiError::new(
                pinned_status::PINNED_BAD_PLACEMENT,
                format!(
                    "placement '{text}' is not one of os, local, bind:LIST, preferred:NODE, interleave:LIST, replicate"
                ),
            )
        })?;
    }
    config.wait = match c.wait {
        0 => WaitStrategy::Spin,
        1 => WaitStrategy::SpinYield { spin_us: c.spin_us },
        2 => WaitStrategy::SpinPark { spin_us: c.spin_us },
        other => {
            return Err(FfiError::invalid(format!(
                "config.wait = {other} is not a pinned_wait value (0 spin, 1 yield, 2 park)"
            )))
        }
    };
    if c.max_batch == 0 {
        return Err(FfiError::invalid("config.max_batch must be at least 1"));
    }
    config.batch = BatchPolicy {
        max_batch: c.max_batch as usize,
        max_wait_us: c.max_wait_us,
    };
    config.workers = c.workers as usize;
    config.slots = c.slots as usize;
    config.pin = c.pin;
    Ok(config)
}
