//! Requests from C: generation-checked handles over the partition's
//! pre-allocated slots, so a stale or forged handle is a status code, not a
//! use-after-free. Nothing here allocates.
//!
//! A `pinned_request` is `generation << 32 | slot`. Each slot's cell holds
//! the live `Request` and the generation it was handed out with; release
//! bumps the generation, so a second release (or any use after release)
//! no longer matches and is refused with `PINNED_WRONG_STATE`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use pinned_runtime::{Request, RequestError, Status};

use super::error::pinned_status;
use super::guard::{check_out, deref, guard, write_out, FfiError};
use super::runtime::pinned_partition;

/// A request handle: opaque, 0 is never valid.
#[allow(non_camel_case_types)]
pub type pinned_request = u64;

/// Where a request stands (`pinned_request_poll`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_request_state {
    /// Held, not submitted: the input may be written.
    PINNED_REQUEST_IDLE = 0,
    /// Submitted, not finished.
    PINNED_REQUEST_PENDING = 1,
    /// Finished: the output may be read.
    PINNED_REQUEST_DONE = 2,
    /// Finished with an error.
    PINNED_REQUEST_FAILED = 3,
}

struct Cell {
    generation: AtomicU32,
    request: Mutex<Option<Request>>,
}

/// One cell per slot of the partition, made at partition start.
pub(crate) struct RequestTable {
    cells: Box<[Cell]>,
}

fn request_status(err: RequestError) -> pinned_status {
    match err {
        RequestError::NoFreeSlot | RequestError::TimedOut => pinned_status::PINNED_TIMEOUT,
        RequestError::Full => pinned_status::PINNED_RING_FULL,
        RequestError::ShuttingDown => pinned_status::PINNED_SHUTTING_DOWN,
        RequestError::InFlight | RequestError::NotSubmitted => pinned_status::PINNED_WRONG_STATE,
        RequestError::Failed(_) => pinned_status::PINNED_MODEL_FAILED,
    }
}

impl From<RequestError> for FfiError {
    fn from(err: RequestError) -> Self {
        FfiError::new(request_status(err), err.to_string())
    }
}

impl RequestTable {
    pub fn new(slots: usize) -> Self {
        Self {
            cells: (0..slots)
                .map(|_| Cell {
                    generation: AtomicU32::new(0),
                    request: Mutex::new(None),
                })
                .collect(),
        }
    }

    fn install(&self, request: Request) -> Result<pinned_request, FfiError> {
        let slot = request.slot();
        let cell = self
            .cells
            .get(slot as usize)
            .ok_or_else(|| FfiError::new(pinned_status::PINNED_INTERNAL, "slot outside table"))?;
        let mut held = cell.request.lock().unwrap_or_else(|p| p.into_inner());
        // Generation 0 is never handed out, so handle 0 is never valid.
        let generation = cell
            .generation
            .load(Ordering::Relaxed)
            .wrapping_add(1)
            .max(1);
        cell.generation.store(generation, Ordering::Relaxed);
        *held = Some(request);
        Ok(u64::from(generation) << 32 | u64::from(slot))
    }

    /// The live request behind `handle`, locked for this call.
    fn lookup(&self, handle: pinned_request) -> Result<MutexGuard<'_, Option<Request>>, FfiError> {
        let stale = || {
            FfiError::new(
                pinned_status::PINNED_WRONG_STATE,
                format!("request handle {handle:#x} is not held (released, or never acquired)"),
            )
        };
        let cell = self
            .cells
            .get((handle & 0xffff_ffff) as usize)
            .ok_or_else(stale)?;
        let held = cell.request.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() || cell.generation.load(Ordering::Relaxed) != (handle >> 32) as u32 {
            return Err(stale());
        }
        Ok(held)
    }

    fn release(&self, handle: pinned_request) -> Result<(), FfiError> {
        let mut held = self.lookup(handle)?;
        let request = held.take();
        let cell = &self.cells[(handle & 0xffff_ffff) as usize];
        cell.generation.fetch_add(1, Ordering::Relaxed);
        drop(held);
        drop(request);
        Ok(())
    }

    /// Drops every held request (shutdown).
    pub fn release_all(&self) {
        for cell in self.cells.iter() {
            let request = cell
                .request
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            cell.generation.fetch_add(1, Ordering::Relaxed);
            drop(request);
        }
    }
}

/// Runs `f` on the live request behind `handle` of `partition`.
///
/// # Safety
/// `partition` must be NULL or a live partition handle.
unsafe fn with_request<T>(
    partition: *const pinned_partition,
    handle: pinned_request,
    f: impl FnOnce(&mut Request) -> Result<T, FfiError>,
) -> Result<T, FfiError> {
    // SAFETY: forwarded from the caller.
    let partition = unsafe { deref(partition, "partition") }?;
    let mut held = partition.requests.lookup(handle)?;
    let request = held
        .as_mut()
        .ok_or_else(|| FfiError::invalid("request vanished"))?;
    f(request)
}

/// Takes a free request slot, waiting up to `timeout_us` microseconds for
/// one (0 = do not wait). `PINNED_TIMEOUT` when none freed up in time.
/// `*out` is written only on success.
///
/// # Safety
/// `partition` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_acquire(
    partition: *const pinned_partition,
    timeout_us: u64,
    out: *mut pinned_request,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let partition = unsafe { deref(partition, "partition") }?;
        let request = if timeout_us == 0 {
            partition.partition.try_acquire()?
        } else {
            partition
                .partition
                .acquire(Duration::from_micros(timeout_us))?
        };
        let handle = partition.requests.install(request)?;
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, handle) };
        Ok(())
    })
}

/// Input values (fp32) one request takes, and output values it gives.
///
/// # Safety
/// `partition` NULL or live; the out-pointers NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_partition_io_len(
    partition: *const pinned_partition,
    input_len: *mut usize,
    output_len: *mut usize,
) -> pinned_status {
    guard(|| {
        check_out(input_len, "input_len")?;
        check_out(output_len, "output_len")?;
        // SAFETY: per the contract above.
        let partition = unsafe { deref(partition, "partition") }?;
        // SAFETY: both checked non-NULL.
        unsafe {
            write_out(input_len, partition.partition.input_len());
            write_out(output_len, partition.partition.output_len());
        }
        Ok(())
    })
}

/// Copies `len` input values into the request; `len` must equal the
/// partition's input length. Refused while the request is in flight.
///
/// # Safety
/// `partition` NULL or live; `data` NULL or valid for `len` reads.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_set_input(
    partition: *const pinned_partition,
    request: pinned_request,
    data: *const f32,
    len: usize,
) -> pinned_status {
    guard(|| {
        if data.is_null() {
            return Err(FfiError::null("data"));
        }
        // SAFETY: per the contract above.
        unsafe {
            with_request(partition, request, |r| {
                let input = r.input_mut()?;
                if input.len() != len {
                    return Err(FfiError::new(
                        pinned_status::PINNED_BUFFER_TOO_SMALL,
                        format!("input takes {} values, got {len}", input.len()),
                    ));
                }
                // SAFETY: `data` is valid for `len` reads per the contract.
                input.copy_from_slice(std::slice::from_raw_parts(data, len));
                Ok(())
            })
        }
    })
}

/// The body of the two buffer functions: checks the out-pointers, asks
/// the request for its buffer (`buffer` gives its address and length)
/// and writes both, only on success.
///
/// # Safety
/// `partition` NULL or live; `data` and `len` NULL or writable.
unsafe fn lend_buffer<P>(
    partition: *const pinned_partition,
    request: pinned_request,
    data: *mut P,
    len: *mut usize,
    buffer: impl FnOnce(&mut Request) -> Result<(P, usize), FfiError>,
) -> pinned_status {
    guard(|| {
        check_out(data, "data")?;
        check_out(len, "len")?;
        // SAFETY: `partition` is NULL or live (this function's contract).
        let (ptr, n) = unsafe { with_request(partition, request, buffer) }?;
        // SAFETY: both checked non-NULL, and writable by the contract.
        unsafe {
            write_out(data, ptr);
            write_out(len, n);
        }
        Ok(())
    })
}

/// Points `*data` at the request's input buffer (`*len` floats) so the
/// host can write it in place, without a copy. The pointer stays valid
/// until the request is submitted or released; refused while in flight.
/// Outputs are written only on success.
///
/// # Safety
/// `partition` NULL or live; `data` and `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_input_buffer(
    partition: *const pinned_partition,
    request: pinned_request,
    data: *mut *mut f32,
    len: *mut usize,
) -> pinned_status {
    // SAFETY: per the contract above.
    unsafe {
        lend_buffer(partition, request, data, len, |r| {
            let input = r.input_mut()?;
            Ok((input.as_mut_ptr(), input.len()))
        })
    }
}

/// Points `*data` at the finished request's output (`*len` floats), to
/// read in place. Valid until the request is released or its input is
/// written again. `PINNED_WRONG_STATE` before it finished.
///
/// # Safety
/// `partition` NULL or live; `data` and `len` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_output_buffer(
    partition: *const pinned_partition,
    request: pinned_request,
    data: *mut *const f32,
    len: *mut usize,
) -> pinned_status {
    // SAFETY: per the contract above.
    unsafe {
        lend_buffer(partition, request, data, len, |r| {
            let output = r.output()?;
            Ok((output.as_ptr(), output.len()))
        })
    }
}

/// Submits the request. `blocking` false: `PINNED_RING_FULL` at once when
/// the ring has no room (the request stays held, its input intact).
///
/// # Safety
/// `partition` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_submit(
    partition: *const pinned_partition,
    request: pinned_request,
    blocking: bool,
) -> pinned_status {
    guard(|| {
        // SAFETY: per the contract above.
        unsafe {
            with_request(partition, request, |r| {
                if blocking {
                    r.submit()?
                } else {
                    r.try_submit()?
                }
                Ok(())
            })
        }
    })
}

/// Waits up to `timeout_us` microseconds for the request to finish.
/// `PINNED_TIMEOUT` leaves it in flight; `PINNED_MODEL_FAILED` when the
/// model failed it.
///
/// # Safety
/// `partition` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_wait(
    partition: *const pinned_partition,
    request: pinned_request,
    timeout_us: u64,
) -> pinned_status {
    guard(|| {
        // SAFETY: per the contract above.
        unsafe {
            with_request(partition, request, |r| {
                Ok(r.wait(Duration::from_micros(timeout_us))?)
            })
        }
    })
}

/// Where the request stands, without waiting. `*out` written on success.
///
/// # Safety
/// `partition` NULL or live; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_poll(
    partition: *const pinned_partition,
    request: pinned_request,
    out: *mut pinned_request_state,
) -> pinned_status {
    guard(|| {
        check_out(out, "out")?;
        // SAFETY: per the contract above.
        let state = unsafe {
            with_request(partition, request, |r| {
                Ok(match r.poll() {
                    Status::Idle => pinned_request_state::PINNED_REQUEST_IDLE,
                    Status::Pending => pinned_request_state::PINNED_REQUEST_PENDING,
                    Status::Done => pinned_request_state::PINNED_REQUEST_DONE,
                    Status::Failed(_) => pinned_request_state::PINNED_REQUEST_FAILED,
                })
            })
        }?;
        // SAFETY: `out` is non-NULL (checked).
        unsafe { write_out(out, state) };
        Ok(())
    })
}

/// Copies the finished request's output into `data` (`len` must be at
/// least the partition's output length; the length copied goes to
/// `*written` when not NULL).
///
/// # Safety
/// `partition` NULL or live; `data` NULL or valid for `len` writes;
/// `written` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_get_output(
    partition: *const pinned_partition,
    request: pinned_request,
    data: *mut f32,
    len: usize,
    written: *mut usize,
) -> pinned_status {
    guard(|| {
        if data.is_null() {
            return Err(FfiError::null("data"));
        }
        // SAFETY: per the contract above.
        unsafe {
            with_request(partition, request, |r| {
                let output = r.output()?;
                if len < output.len() {
                    return Err(FfiError::new(
                        pinned_status::PINNED_BUFFER_TOO_SMALL,
                        format!("output has {} values, buffer holds {len}", output.len()),
                    ));
                }
                // SAFETY: `data` is valid for `len >= output.len()` writes.
                std::slice::from_raw_parts_mut(data, output.len()).copy_from_slice(output);
                if !written.is_null() {
                    write_out(written, output.len());
                }
                Ok(())
            })
        }
    })
}

/// Gives the slot back. A request still in flight completes and then frees
/// its slot. A second release of the same handle is `PINNED_WRONG_STATE`.
///
/// # Safety
/// `partition` NULL or live.
#[no_mangle]
pub unsafe extern "C" fn pinned_request_release(
    partition: *const pinned_partition,
    request: pinned_request,
) -> pinned_status {
    guard(|| {
        // SAFETY: per the contract above.
        let partition = unsafe { deref(partition, "partition") }?;
        partition.requests.release(request)
    })
}
