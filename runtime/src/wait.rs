//! Waiting without a lock: spin budgets measured in time, `sched_yield`, and
//! parking on a futex (the raw `futex(2)` syscall).
//!
//! A worker with nothing to do and a host waiting for its answer both wait
//! the same way: spin on the word that will change, then (per partition)
//! keep spinning, yield, or sleep in the kernel until woken. The spin budget
//! is a duration, because a fixed iteration count lasts three times longer
//! on one CPU than on another.

use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::time::Duration;

use crate::clock::now_ns;
use crate::sync::CachePadded;

/// How a partition's workers wait for requests and its hosts for answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Spin until something arrives: lowest latency, one core kept busy.
    Spin,
    /// Spin for `spin_us` microseconds, then `sched_yield` between checks.
    SpinYield { spin_us: u32 },
    /// Spin for `spin_us` microseconds, then sleep on a futex until woken.
    /// A wake costs tens of microseconds (see `pinned bench ring`), which is
    /// what the spin budget is there to avoid.
    SpinPark { spin_us: u32 },
}

impl WaitStrategy {
    /// The spin budget in nanoseconds (`u64::MAX` for `Spin`).
    pub fn spin_budget_ns(self) -> u64 {
        match self {
            Self::Spin => u64::MAX,
            Self::SpinYield { spin_us } | Self::SpinPark { spin_us } => u64::from(spin_us) * 1000,
        }
    }

    /// Parses `spin`, `yield:<us>`, `park:<us>` (the harness's spelling).
    pub fn parse(text: &str) -> Option<Self> {
        let (kind, us) = match text.split_once(':') {
            Some((k, us)) => (k, Some(us.trim().parse::<u32>().ok()?)),
            None => (text, None),
        };
        match (kind.trim(), us) {
            ("spin", None) => Some(Self::Spin),
            ("yield", us) => Some(Self::SpinYield {
                spin_us: us.unwrap_or(50),
            }),
            ("park" | "futex", us) => Some(Self::SpinPark {
                spin_us: us.unwrap_or(50),
            }),
            _ => None,
        }
    }
}

/// Spins between clock reads. A `pause` is ~40 ns on Skylake and later
/// (Intel optimization manual, 2.5.4), so 32 of them check the clock about
/// every microsecond while keeping `clock_gettime` off most iterations.
const SPINS_PER_CLOCK_READ: u32 = 32;

/// Tracks a spin against its time budget.
pub(crate) struct Spinner {
    start_ns: u64,
    /// Absolute time the spin ends: start + budget, or an earlier deadline.
    end_ns: u64,
    count: u32,
}

impl Spinner {
    #[inline]
    pub(crate) fn new(strategy: WaitStrategy) -> Self {
        Self::with_deadline(strategy, u64::MAX)
    }

    /// A spin that also ends at `deadline_ns` (a `now_ns` value).
    #[inline]
    pub(crate) fn with_deadline(strategy: WaitStrategy, deadline_ns: u64) -> Self {
        let start_ns = now_ns();
        Self {
            start_ns,
            end_ns: start_ns
                .saturating_add(strategy.spin_budget_ns())
                .min(deadline_ns),
            count: 0,
        }
    }

    /// One spin; false once the budget is spent or the deadline passed.
    #[inline]
    pub(crate) fn spin(&mut self) -> bool {
        std::hint::spin_loop();
        self.count = self.count.wrapping_add(1);
        if !self.count.is_multiple_of(SPINS_PER_CLOCK_READ) || self.end_ns == u64::MAX {
            return true;
        }
        now_ns() < self.end_ns
    }

    /// Nanoseconds since the spin started.
    pub(crate) fn elapsed_ns(&self) -> u64 {
        now_ns().saturating_sub(self.start_ns)
    }
}

/// What `futex_wait` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FutexWait {
    /// Woken by `futex_wake` (or spuriously: callers re-check their word).
    Woken,
    /// The word no longer held the expected value.
    Changed,
    TimedOut,
    Interrupted,
}

/// Sleeps while `word == expected`, at most `timeout` (none: forever).
/// [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html),
/// `FUTEX_WAIT_PRIVATE`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned 32-bit atomic for the whole call;
    // `ts_ptr` is null or points at `ts`, which outlives the call; the other
    // arguments are ignored by FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return FutexWait::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => FutexWait::Changed,
        Some(libc::ETIMEDOUT) => FutexWait::TimedOut,
        _ => FutexWait::Interrupted,
    }
}

/// Wakes up to `count` threads sleeping on `word`; returns how many woke.
/// [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html),
/// `FUTEX_WAKE_PRIVATE`.
pub fn futex_wake(word: &AtomicU32, count: i32) -> usize {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE only uses
    // its address as a key and reads nothing through the other arguments.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    rc.max(0) as usize
}

/// Where a partition's idle workers sleep, and how submitters wake them only
/// when someone sleeps.
///
/// Protocol (a Dekker pair, both sides fenced `SeqCst`): a sleeper reads
/// `epoch`, counts itself in `sleepers`, re-checks for work, then sleeps
/// while `epoch` is unchanged. A submitter publishes its work, then reads
/// `sleepers`; if non-zero it bumps `epoch` and wakes one. Either the
/// sleeper sees the work or the submitter sees the sleeper.
#[derive(Debug, Default)]
pub struct Doorbell {
    epoch: CachePadded<AtomicU32>,
    sleepers: CachePadded<AtomicU32>,
}

impl Doorbell {
    pub fn new() -> Self {
        Self::default()
    }

    /// Called after publishing work; a system call only if someone sleeps.
    #[inline]
    pub fn ring_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::Relaxed) != 0 {
            self.wake(1);
        }
    }

    /// Wakes every sleeper (shutdown).
    pub fn ring_all(&self) {
        fence(Ordering::SeqCst);
        self.wake(i32::MAX);
    }

    #[cold]
    #[inline(never)]
    fn wake(&self, count: i32) {
        self.epoch.fetch_add(1, Ordering::Release);
        futex_wake(&self.epoch, count);
    }

    /// Sleeps until rung, unless `has_work` already says there is work;
    /// returns true if it slept. `timeout` bounds the sleep.
    pub fn sleep_unless(&self, has_work: impl Fn() -> bool, timeout: Option<Duration>) -> bool {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let slept = if has_work() {
            false
        } else {
            futex_wait(&self.epoch, epoch, timeout);
            true
        };
        self.sleepers.fetch_sub(1, Ordering::Release);
        slept
    }

    /// Threads inside `sleep_unless` right now (a hint).
    pub fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn parses_strategies() {
        assert_eq!(WaitStrategy::parse("spin"), Some(WaitStrategy::Spin));
        assert_eq!(
            WaitStrategy::parse("yield:20"),
            Some(WaitStrategy::SpinYield { spin_us: 20 })
        );
        assert_eq!(
            WaitStrategy::parse("park:5"),
            Some(WaitStrategy::SpinPark { spin_us: 5 })
        );
        assert_eq!(WaitStrategy::parse("park:x"), None);
        assert_eq!(WaitStrategy::parse("nap"), None);
    }

    #[test]
    fn futex_wait_refuses_a_changed_word_and_times_out() {
        let word = AtomicU32::new(1);
        assert_eq!(futex_wait(&word, 0, None), FutexWait::Changed);
        assert_eq!(
            futex_wait(&word, 1, Some(Duration::from_millis(1))),
            FutexWait::TimedOut
        );
        assert_eq!(futex_wake(&word, 1), 0);
    }

    #[test]
    fn doorbell_wakes_a_sleeper_and_skips_when_work_is_there() {
        let bell = Arc::new(Doorbell::new());
        let flag = Arc::new(AtomicU32::new(0));
        assert!(!bell.sleep_unless(|| true, None));
        let (b, f) = (bell.clone(), flag.clone());
        let sleeper = std::thread::spawn(move || {
            while f.load(Ordering::Acquire) == 0 {
                b.sleep_unless(|| f.load(Ordering::Acquire) != 0, None);
            }
        });
        flag.store(1, Ordering::Release);
        bell.ring_one();
        sleeper.join().unwrap();
        assert_eq!(bell.sleepers(), 0);
    }

    #[test]
    fn spinner_runs_out_in_time() {
        let mut s = Spinner::new(WaitStrategy::SpinYield { spin_us: 1 });
        let mut n = 0u64;
        while s.spin() {
            n += 1;
        }
        assert!(n >= u64::from(SPINS_PER_CLOCK_READ) - 1);
        assert!(s.elapsed_ns() >= 1000);
    }
}
