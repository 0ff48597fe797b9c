//! What the tuning loops share: their positional arguments and the best
//! time of a call by the wall clock and by the calling thread's CPU time.

use std::time::Instant;

/// The command line's positional arguments (after the program's name).
pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Self {
        Self(std::env::args().skip(1).collect())
    }

    /// The `i`-th argument as a number, `default` when absent or not one.
    pub fn number(&self, i: usize, default: usize) -> usize {
        self.0
            .get(i)
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    }

    /// The `i`-th argument as written.
    pub fn word(&self, i: usize) -> Option<&str> {
        self.0.get(i).map(String::as_str)
    }
}

/// The shortest seconds of the calls timed so far: `wall` by the clock,
/// `cpu` by the calling thread's CPU time (which a shared, oversubscribed
/// machine disturbs less; helper threads' time is not in it).
pub struct Best {
    pub wall: f64,
    pub cpu: f64,
}

impl Default for Best {
    fn default() -> Self {
        Self {
            wall: f64::INFINITY,
            cpu: f64::INFINITY,
        }
    }
}

impl Best {
    /// Runs `f`, keeping its times where they beat the best so far.
    pub fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let (start, cpu0) = (Instant::now(), thread_cpu_seconds());
        let out = f();
        self.wall = self.wall.min(start.elapsed().as_secs_f64());
        self.cpu = self.cpu.min(thread_cpu_seconds() - cpu0);
        out
    }
}

/// CPU time of the calling thread: immune to being descheduled on a
/// shared machine (tuning aid; the real benchmark reports wall time).
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
