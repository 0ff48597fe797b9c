//! Status codes and the per-thread last error message.

use std::cell::RefCell;
use std::ffi::c_char;

/// Result of every fallible C function. The numbers are stable: new codes
/// are only ever appended.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum pinned_status {
    /// Success.
    PINNED_OK = 0,
    /// A required pointer argument was NULL.
    PINNED_NULL_ARGUMENT = 1,
    /// An argument was out of range or malformed (see `pinned_last_error`).
    PINNED_INVALID_ARGUMENT = 2,
    /// A caller buffer was too small; nothing was written beyond it.
    PINNED_BUFFER_TOO_SMALL = 3,
    /// A CPU or NUMA node that does not exist or is not allowed.
    PINNED_BAD_PLACEMENT = 4,
    /// Memory could not be mapped, bound or locked.
    PINNED_OUT_OF_MEMORY = 5,
    /// The request ring is full; retry later (backpressure, nothing lost).
    PINNED_RING_FULL = 6,
    /// A wait ran out of time; the request is still in flight.
    PINNED_TIMEOUT = 7,
    /// A handle was used in the wrong state (e.g. submit of a released slot).
    PINNED_WRONG_STATE = 8,
    /// A model file was unreadable or corrupt.
    PINNED_BAD_MODEL = 9,
    /// The model failed while running this request.
    PINNED_MODEL_FAILED = 10,
    /// The runtime is shutting down.
    PINNED_SHUTTING_DOWN = 11,
    /// An internal error (a Rust panic was caught at the boundary).
    PINNED_INTERNAL = 12,
}

thread_local! {
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records `message` as the calling thread's last error.
pub fn set_last_error(message: impl Into<String>) {
    LAST_ERROR.with(|e| *e.borrow_mut() = message.into());
}

/// Copies the calling thread's last error message into `buf` (at most
/// `len` bytes including the terminating NUL; the message is truncated at
/// a UTF-8 character boundary when it does not fit) and stores the full
/// message length (without NUL) in `*out_len` when `out_len` is not NULL.
///
/// Returns `PINNED_OK`, `PINNED_NULL_ARGUMENT` when `buf` is NULL and
/// `len > 0`, or `PINNED_BUFFER_TOO_SMALL` when the message was truncated.
/// An empty message means no error was recorded on this thread.
///
/// # Safety
/// `buf` must be NULL or valid for `len` bytes of writes; `out_len` must be
/// NULL or valid for one `size_t` write.
#[no_mangle]
pub unsafe extern "C" fn pinned_last_error(
    buf: *mut c_char,
    len: usize,
    out_len: *mut usize,
) -> pinned_status {
    let result = std::panic::catch_unwind(|| {
        LAST_ERROR.with(|e| {
            let message = e.borrow();
            if !out_len.is_null() {
                // SAFETY: the caller guarantees a non-NULL `out_len` is writable.
                unsafe { out_len.write(message.len()) };
            }
            if len == 0 {
                return if message.is_empty() {
                    pinned_status::PINNED_OK
                } else {
                    pinned_status::PINNED_BUFFER_TOO_SMALL
                };
            }
            if buf.is_null() {
                return pinned_status::PINNED_NULL_ARGUMENT;
            }
            let mut take = message.len().min(len - 1);
            while !message.is_char_boundary(take) {
                take -= 1;
            }
            // SAFETY: `buf` is valid for `len` bytes and `take + 1 <= len`.
            unsafe {
                std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), take);
                buf.add(take).write(0);
            }
            if take < message.len() {
                pinned_status::PINNED_BUFFER_TOO_SMALL
            } else {
                pinned_status::PINNED_OK
            }
        })
    });
    result.unwrap_or(pinned_status::PINNED_INTERNAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(len: usize) -> (pinned_status, Vec<u8>, usize) {
        let mut buf = vec![0x55u8; len];
        let mut full = 0usize;
        // SAFETY: `buf` has `len` bytes and `full` is a valid usize.
        let status = unsafe { pinned_last_error(buf.as_mut_ptr().cast(), len, &mut full) };
        (status, buf, full)
    }

    #[test]
    fn copies_and_truncates_at_char_boundaries() {
        set_last_error("héllo");
        let (status, buf, full) = read(16);
        assert_eq!(status, pinned_status::PINNED_OK);
        assert_eq!(full, 6);
        assert_eq!(&buf[..7], b"h\xc3\xa9llo\0");
        // Room for "h" and half of "é": only "h" is copied.
        let (status, buf, _) = read(3);
        assert_eq!(status, pinned_status::PINNED_BUFFER_TOO_SMALL);
        assert_eq!(&buf[..2], b"h\0");
    }

    #[test]
    fn null_buffer_is_refused_not_written() {
        set_last_error("x");
        // SAFETY: NULL `buf` with a non-zero length must be refused without a write.
        let status = unsafe { pinned_last_error(std::ptr::null_mut(), 8, std::ptr::null_mut()) };
        assert_eq!(status, pinned_status::PINNED_NULL_ARGUMENT);
    }
}
