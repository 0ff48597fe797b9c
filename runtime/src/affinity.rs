//! Thread placement syscalls: `sched_setaffinity`, `sched_getaffinity`,
//! `sched_getcpu`, each wrapped once.

use pinned_allocator::IdList;

/// Why a pin failed.
#[derive(Debug, thiserror::Error)]
pub enum AffinityError {
    #[error("cpu {cpu} is beyond what a cpu_set_t can hold ({max})")]
    CpuTooLarge { cpu: usize, max: usize },
    #[error("cannot pin to an empty cpu set")]
    Empty,
    #[error("sched_setaffinity({cpus}) failed: {source}")]
    Set {
        cpus: IdList,
        source: std::io::Error,
    },
    #[error("sched_getaffinity failed: {0}")]
    Get(std::io::Error),
    #[error("asked for cpus {wanted} but the kernel kept {got}")]
    Mismatch { wanted: IdList, got: IdList },
}

/// Largest CPU number a fixed `cpu_set_t` holds (`CPU_SETSIZE`).
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

fn to_cpu_set(cpus: &IdList) -> Result<libc::cpu_set_t, AffinityError> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter() {
        if cpu >= MAX_CPUS {
            return Err(AffinityError::CpuTooLarge {
                cpu,
                max: MAX_CPUS - 1,
            });
        }
        // SAFETY: `cpu < CPU_SETSIZE`, checked above, so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    Ok(set)
}

fn from_cpu_set(set: &libc::cpu_set_t) -> IdList {
    (0..MAX_CPUS)
        // SAFETY: every index is below CPU_SETSIZE, inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

/// The CPUs the calling thread may run on
/// ([sched_getaffinity(2)](https://man7.org/linux/man-pages/man2/sched_getaffinity.2.html)).
/// Called from the main thread before any pinning, this is the process's
/// allowed set (its cpuset, `taskset` mask).
pub fn current_affinity() -> Result<IdList, AffinityError> {
    // SAFETY: all-zero is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and exactly `size_of::<cpu_set_t>()` bytes;
    // pid 0 is the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(AffinityError::Get(std::io::Error::last_os_error()));
    }
    Ok(from_cpu_set(&set))
}

/// The CPUs thread `tid` (a kernel thread id, see [`current_tid`]) may run on.
pub fn thread_affinity(tid: i32) -> Result<IdList, AffinityError> {
    // SAFETY: all-zero is a valid empty cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and exactly the size passed; an unknown tid
    // is reported as ESRCH, not undefined behaviour.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(AffinityError::Get(std::io::Error::last_os_error()));
    }
    Ok(from_cpu_set(&set))
}

/// The calling thread's kernel id ([gettid(2)](https://man7.org/linux/man-pages/man2/gettid.2.html)).
pub fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Pins the calling thread to `cpus`
/// ([sched_setaffinity(2)](https://man7.org/linux/man-pages/man2/sched_setaffinity.2.html))
/// and checks with `sched_getaffinity` that the kernel kept exactly that set.
pub fn pin_current_thread(cpus: &IdList) -> Result<(), AffinityError> {
    pin_thread(0, cpus)
}

/// Pins thread `tid` (a kernel thread id of this process, see
/// [`current_tid`]; 0: the calling thread) to `cpus`, and checks that the
/// kernel kept exactly that set.
pub fn pin_thread(tid: i32, cpus: &IdList) -> Result<(), AffinityError> {
    if cpus.is_empty() {
        return Err(AffinityError::Empty);
    }
    let set = to_cpu_set(cpus)?;
    // SAFETY: `set` is an initialized cpu_set_t of the size passed; an
    // unknown tid is reported as ESRCH, not undefined behaviour.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(AffinityError::Set {
            cpus: cpus.clone(),
            source: std::io::Error::last_os_error(),
        });
    }
    let got = if tid == 0 {
        current_affinity()?
    } else {
        thread_affinity(tid)?
    };
    if &got != cpus {
        return Err(AffinityError::Mismatch {
            wanted: cpus.clone(),
            got,
        });
    }
    Ok(())
}

/// Pins thread `tid` (0: the calling thread) to the one CPU `cpu`, as
/// [`pin_thread`] but allocating nothing: callable on a request's path.
pub fn pin_thread_to_cpu(tid: i32, cpu: usize) -> Result<(), AffinityError> {
    if cpu >= MAX_CPUS {
        return Err(AffinityError::CpuTooLarge {
            cpu,
            max: MAX_CPUS - 1,
        });
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: all-zero is the empty cpu_set_t; `cpu < CPU_SETSIZE`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is an initialized cpu_set_t of the size passed; an
    // unknown tid is reported as ESRCH.
    if unsafe { libc::sched_setaffinity(tid, size, &set) } != 0 {
        return Err(AffinityError::Set {
            cpus: IdList::from_ids(vec![cpu]),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: all-zero is a valid empty cpu_set_t.
    let mut got: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `got` is writable and of the size passed.
    if unsafe { libc::sched_getaffinity(tid, size, &mut got) } != 0 {
        return Err(AffinityError::Get(std::io::Error::last_os_error()));
    }
    // SAFETY: `cpu < CPU_SETSIZE`; CPU_COUNT reads the set only.
    if unsafe { !libc::CPU_ISSET(cpu, &got) || libc::CPU_COUNT(&got) != 1 } {
        return Err(AffinityError::Mismatch {
            wanted: IdList::from_ids(vec![cpu]),
            got: from_cpu_set(&got),
        });
    }
    Ok(())
}

/// The CPU the calling thread is running on now
/// ([sched_getcpu(3)](https://man7.org/linux/man-pages/man3/sched_getcpu.3.html)).
#[inline]
pub fn current_cpu() -> Option<usize> {
    // SAFETY: sched_getcpu takes no arguments and only reads kernel state.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn pin_to_each_allowed_cpu_then_restore() {
        let allowed = current_affinity().unwrap();
        assert!(!allowed.is_empty());
        std::thread::spawn(move || {
            for cpu in allowed.iter() {
                let one = IdList::from_ids(vec![cpu]);
                pin_current_thread(&one).unwrap();
                assert_eq!(current_affinity().unwrap(), one);
                assert_eq!(current_cpu(), Some(cpu));
            }
            pin_current_thread(&allowed).unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn pins_another_thread_by_its_id() {
        let allowed = current_affinity().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            done_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        for cpu in allowed.iter() {
            pin_thread_to_cpu(tid, cpu).unwrap();
            assert_eq!(thread_affinity(tid).unwrap(), IdList::from_ids(vec![cpu]));
        }
        pin_thread(tid, &allowed).unwrap();
        assert_eq!(thread_affinity(tid).unwrap(), allowed);
        assert!(matches!(
            pin_thread_to_cpu(tid, MAX_CPUS),
            Err(AffinityError::CpuTooLarge { .. })
        ));
        done_tx.send(()).unwrap();
        other.join().unwrap();
    }

    #[test]
    fn refuses_empty_and_huge_sets() {
        assert!(matches!(
            pin_current_thread(&IdList::default()),
            Err(AffinityError::Empty)
        ));
        assert!(matches!(
            pin_current_thread(&IdList::from_ids(vec![MAX_CPUS + 1])),
            Err(AffinityError::CpuTooLarge { .. })
        ));
    }
}
