//! The panic boundary around every `extern "C"` body, and the error type
//! the bodies return.

use std::panic::{catch_unwind, AssertUnwindSafe};

use super::error::{pinned_status, set_last_error};

/// A refused call: its status code and the message `pinned_last_error` gives.
#[derive(Debug)]
pub(crate) struct FfiError {
    pub status: pinned_status,
    pub message: String,
}

impl FfiError {
    pub fn new(status: pinned_status, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn null(what: &str) -> Self {
        Self::new(
            pinned_status::PINNED_NULL_ARGUMENT,
            format!("{what} is NULL"),
        )
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(pinned_status::PINNED_INVALID_ARGUMENT, message)
    }
}

/// Runs `body`; maps its error (or a caught panic) to a status code and
/// records the message for `pinned_last_error`. Outputs are written by the
/// body only after everything that can fail has succeeded.
pub(crate) fn guard(body: impl FnOnce() -> Result<(), FfiError>) -> pinned_status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => pinned_status::PINNED_OK,
        Ok(Err(err)) => {
            set_last_error(err.message);
            err.status
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            set_last_error(format!("internal error (caught at the C boundary): {what}"));
            pinned_status::PINNED_INTERNAL
        }
    }
}

/// Borrows `*ptr` or refuses a NULL pointer, naming the argument.
///
/// # Safety
/// A non-NULL `ptr` must point to a live `T` for the returned lifetime.
pub(crate) unsafe fn deref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, FfiError> {
    // SAFETY: forwarded to the caller: non-NULL means valid.
    unsafe { ptr.as_ref() }.ok_or_else(|| FfiError::null(what))
}

/// Reads a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// A non-NULL `ptr` must point to a NUL-terminated string that lives for `'a`.
pub(crate) unsafe fn c_str<'a>(
    ptr: *const std::ffi::c_char,
    what: &str,
) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::null(what));
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let bytes = unsafe { std::ffi::CStr::from_ptr(ptr) };
    bytes
        .to_str()
        .map_err(|e| FfiError::invalid(format!("{what} is not valid UTF-8: {e}")))
}

/// Like [`c_str`], but NULL means "not given".
///
/// # Safety
/// As for [`c_str`].
pub(crate) unsafe fn opt_c_str<'a>(
    ptr: *const std::ffi::c_char,
    what: &str,
) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        Ok(None)
    } else {
        // SAFETY: forwarded.
        unsafe { c_str(ptr, what) }.map(Some)
    }
}

/// Writes `value` through an out-pointer, refusing NULL. Call it last, once
/// nothing else can fail, so outputs are written only on success.
///
/// # Safety
/// A non-NULL `out` must be valid for one write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: checked non-NULL by the caller before any work (see `check_out`).
    unsafe { out.write(value) }
}

/// Refuses a NULL out-pointer before any work is done.
pub(crate) fn check_out<T>(out: *mut T, what: &str) -> Result<(), FfiError> {
    if out.is_null() {
        Err(FfiError::null(what))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_internal_status_with_its_message() {
        let status = guard(|| panic!("boom"));
        assert_eq!(status, pinned_status::PINNED_INTERNAL);
        let mut buf = [0u8; 128];
        // SAFETY: `buf` is 128 writable bytes.
        unsafe {
            super::super::pinned_last_error(
                buf.as_mut_ptr().cast(),
                buf.len(),
                std::ptr::null_mut(),
            )
        };
        let msg = std::ffi::CStr::from_bytes_until_nul(&buf)
            .unwrap()
            .to_str()
            .unwrap();
        assert!(msg.contains("boom"), "{msg}");
    }
}
