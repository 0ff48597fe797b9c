//! Telemetry and machine information into caller structs and buffers.

use std::ffi::c_char;

use hdrhistogram::Histogram;

use super::error::pinned_status;
use super::guard::{check_out, deref, guard, write_out, FfiError};
use super::runtime::pinned_partition;

/// Marks a counter the OS could not provide (never reported as 0).
pub const PINNED_UNAVAILABLE: u64 = u64::MAX;

/// Latency percentiles of one kind, in nanoseconds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct pinned_latency {
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p90_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
}

/// A partition's latencies since start (or the last reset) and its totals.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct pinned_telemetry {
    pub requests: u64,
    pub batches: u64,
    pub failures: u64,
    pub workers: u32,
    /// Submit to result.
    pub total: pinned_latency,
    /// Submit until a worker took the request.
    pub queue_wait: pinned_latency,
    /// A worker took it until the result was published.
    pub service: pinned_latency,
}

/// One worker's counters; `PINNED_UNAVAILABLE` where the OS gave nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types)]
pub struct pinned_worker_telemetry {
    pub requests: u64,
    pub batches: u64,
    pub failures: u64,
    /// Thread CPU time (`CLOCK_THREAD_CPUTIME_ID`).
    pub cpu_ns: u64,
    pub voluntary_switches: u64,
    pub involuntary_switches: u64,
    /// CPU migrations (perf software counter).
    pub migrations: u64,
    /// The CPU it last ran on, or -1.
    pub last_cpu: i32,
    pub pinned: bool,
}

fn latency(h: &Histogram<u64>) -> pinned_latency {
    pinned_latency {
        count: h.len(),
        mean_ns: h.mean(),
        p50_ns: h.value_at_quantile(0.50),
        p90_ns: h.value_at_quantile(0.90),
        p99_ns: h.value_at_quantile(0.99),
        p999_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    }
}

/// Snapshots a partition's telemetry without stopping its workers.
///
/// # Safety
/// `partition` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_partition_telemetry(
    partition: *const pinned_partition,
    out: *mut pinned_telemetry,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let partition = unsafe { deref(partition, "partition") }?;
        let t = partition.partition.telemetry_snapshot();
        let snapshot = pinned_telemetry {
            requests: t.workers.iter().map(|w| w.requests).sum(),
            batches: t.workers.iter().map(|w| w.batches).sum(),
            failures: t.workers.iter().map(|w| w.failures).sum(),
            workers: t.workers.len() as u32,
            total: latency(&t.latencies.total),
            queue_wait: latency(&t.latencies.queue_wait),
            service: latency(&t.latencies.service),
        };
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, snapshot) };
        Ok(())
    })
}

/// Snapshots worker `index` (0 <= index < workers) of a partition.
///
/// # Safety
/// `partition` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_partition_worker_telemetry(
    partition: *const pinned_partition,
    index: u32,
    out: *mut pinned_worker_telemetry,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let partition = unsafe { deref(partition, "partition") }?;
        let t = partition.partition.telemetry_snapshot();
        let w = t.workers.get(index as usize).ok_or_else(|| {
            FfiError::invalid(format!(
                "worker {index} does not exist (the partition has {})",
                t.workers.len()
            ))
        })?;
        let or_unavailable = |v: Option<u64>| v.unwrap_or(PINNED_UNAVAILABLE);
        let snapshot = pinned_worker_telemetry {
            requests: w.requests,
            batches: w.batches,
            failures: w.failures,
            cpu_ns: or_unavailable(w.cpu_ns),
            voluntary_switches: or_unavailable(w.voluntary_switches),
            involuntary_switches: or_unavailable(w.involuntary_switches),
            migrations: or_unavailable(w.migrations),
            last_cpu: w.last_cpu.map_or(-1, |c| c as i32),
            pinned: w.pinned,
        };
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, snapshot) };
        Ok(())
    })
}

/// Writes `pinned info --json` (one JSON object, NUL-terminated) into
/// `buf`. `*out_len` (when not NULL) receives the full length without the
/// NUL; `PINNED_BUFFER_TOO_SMALL` when it does not fit (nothing written).
///
/// # Safety
/// `buf` NULL or valid for `len` writes; `out_len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_info_json(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> pinned_status {
    guard(|| {
        let report = crate::info::InfoReport::collect(std::path::Path::new("/"))
            .map_err(|e| FfiError::new(pinned_status::PINNED_INTERNAL, e.to_string()))?;
        let json = serde_json::to_string(&report)
            .map_err(|e| FfiError::new(pinned_status::PINNED_INTERNAL, e.to_string()))?;
        if !out_len.is_null() {
            // SAFETY: non-NULL and writable per the contract.
            unsafe { write_out(out_len, json.len()) };
        }
        if buf.is_null() {
            return Err(FfiError::null("buf"));
        }
        if len < json.len() + 1 {
            return Err(FfiError::new(
                pinned_status::PINNED_BUFFER_TOO_SMALL,
                format!("info JSON needs {} bytes, buffer has {len}", json.len() + 1),
            ));
        }
        // SAFETY: `buf` is valid for `len >= json.len() + 1` writes.
        unsafe {
            std::ptr::copy_nonoverlapping(json.as_ptr(), buf.cast::<u8>(), json.len());
            buf.add(json.len()).write(0);
        }
        Ok(())
    })
}
