//! Per-thread OS counters: CPU migrations from a `perf_event_open` software
//! counter, context switches from `getrusage(RUSAGE_THREAD)`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `PERF_TYPE_SOFTWARE` (include/uapi/linux/perf_event.h).
const PERF_TYPE_SOFTWARE: u32 = 1;
/// `PERF_COUNT_SW_CPU_MIGRATIONS` (include/uapi/linux/perf_event.h).
const PERF_COUNT_SW_CPU_MIGRATIONS: u64 = 4;
/// `PERF_FLAG_FD_CLOEXEC` (include/uapi/linux/perf_event.h).
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
/// `PERF_ATTR_SIZE_VER8`: the kernel accepts any size it knows and checks
/// that bytes past its own size are zero.
const PERF_ATTR_SIZE: usize = 136;

/// `struct perf_event_attr` (the `libc` crate does not carry it): `type` at
/// offset 0, `size` at 4, `config` at 8, everything else zero, which leaves
/// the counter enabled and counting user and kernel mode. Kernel mode must
/// stay in: the scheduler counts a migration in kernel context, so
/// `exclude_kernel` would read zero, and a refused open is reported as
/// unavailable instead.
#[repr(C, align(8))]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    rest: [u8; PERF_ATTR_SIZE - 16],
}

impl PerfEventAttr {
    fn software(config: u64) -> Self {
        Self {
            type_: PERF_TYPE_SOFTWARE,
            size: PERF_ATTR_SIZE as u32,
            config,
            rest: [0; PERF_ATTR_SIZE - 16],
        }
    }
}

/// `PERF_COUNT_SW_CPU_MIGRATIONS` counting the calling thread, on any CPU.
///
/// `None` from [`MigrationCounter::open`] means the kernel refused (e.g.
/// `perf_event_paranoid` or a seccomp filter): callers report the count as
/// unavailable, never as zero.
#[derive(Debug)]
pub struct MigrationCounter {
    fd: OwnedFd,
}

impl MigrationCounter {
    /// Opens the counter for the calling thread
    /// ([perf_event_open(2)](https://man7.org/linux/man-pages/man2/perf_event_open.2.html)).
    pub fn open() -> Option<Self> {
        let attr = PerfEventAttr::software(PERF_COUNT_SW_CPU_MIGRATIONS);
        // SAFETY: `attr` is a zero-filled `perf_event_attr` of the size it
        // declares, alive across the call; pid 0 = calling thread, cpu -1 =
        // any CPU, group -1 = none.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_perf_event_open,
                &attr as *const PerfEventAttr,
                0 as libc::pid_t,
                -1 as libc::c_int,
                -1 as libc::c_int,
                PERF_FLAG_FD_CLOEXEC,
            )
        };
        if fd < 0 {
            return None;
        }
        // SAFETY: the kernel returned a fresh file descriptor that nothing
        // else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Some(Self { fd })
    }

    /// Migrations so far (from any thread: the counter follows its task).
    pub fn read(&self) -> Option<u64> {
        let mut value = 0u64;
        // SAFETY: reads at most 8 bytes into `value`, which is 8 bytes and
        // writable; the fd is open for as long as `self` lives.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut value as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        (n == 8).then_some(value)
    }
}

/// Context switches of the calling thread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextSwitches {
    pub voluntary: u64,
    pub involuntary: u64,
}

/// `getrusage(RUSAGE_THREAD)` for the calling thread
/// ([getrusage(2)](https://man7.org/linux/man-pages/man2/getrusage.2.html)).
pub fn thread_context_switches() -> Option<ContextSwitches> {
    // SAFETY: rusage is plain data; all-zero is valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is writable and lives across the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    (rc == 0).then_some(ContextSwitches {
        voluntary: usage.ru_nvcsw as u64,
        involuntary: usage.ru_nivcsw as u64,
    })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn context_switches_count_sleeps() {
        let before = thread_context_switches().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
        let after = thread_context_switches().unwrap();
        assert!(after.voluntary > before.voluntary);
    }

    #[test]
    fn migration_counter_reads_when_the_kernel_allows_it() {
        // Where perf events are refused, `open` is None and there is
        // nothing to read; where they work, a read succeeds.
        if let Some(counter) = MigrationCounter::open() {
            let first = counter.read().expect("an open counter reads");
            assert!(counter.read().unwrap() >= first);
        }
    }
}
