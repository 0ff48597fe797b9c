//! Parallel GEMM over a team of threads the caller owns.
//!
//! The result is cut into a `tm x tn` grid of blocks, one per thread
//! (N in whole NR panels, M in whole register tiles); each thread runs the
//! serial driver on its block with its own slice of the scratch. Blocks are
//! disjoint, so threads never synchronise inside the call: one
//! [`Team::run`] is the only rendezvous. No allocation, no thread creation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{
    aligned_scratch, lower, run_on_isa, BMatrix, Blocking, Epilogue, GemmError, MatMut, MatRef,
    Problem,
};
use crate::isa::Isa;

/// A fixed set of threads that runs one job on each of them.
///
/// Implement it on the runtime's pinned workers. `run` must call `job(i)`
/// exactly once for every `i in 0..threads()`, concurrently where it can
/// (the caller may run some indices itself), and return only after all
/// calls have returned.
pub trait Team: Sync {
    fn threads(&self) -> usize;
    fn run(&self, job: &(dyn Fn(usize) + Sync));
}

/// The caller alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SingleThread;

impl Team for SingleThread {
    fn threads(&self) -> usize {
        1
    }
    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        job(0)
    }
}

/// Chunks per thread along the split dimension (see [`Grid::chunked`]).
const CHUNKS_PER_THREAD: usize = 4;

/// How the `m x n` result is split: `tm * tn <= threads` blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Grid {
    tm: usize,
    tn: usize,
}

impl Grid {
    /// Picks the factorisation of `threads` with the least per-thread
    /// memory traffic: A packing (`rows * k` per NC block) plus B reads
    /// (`cols * k` per MC block), plus B packing when B is not pre-packed.
    fn choose(
        m: usize,
        n: usize,
        k: usize,
        threads: usize,
        blk: &Blocking,
        packed_b: bool,
    ) -> Self {
        let row_tiles = m.div_ceil(blk.mr).max(1);
        let panels = n.div_ceil(blk.nr).max(1);
        let mut best = (usize::MAX, Grid { tm: 1, tn: 1 });
        for tn in (1..=threads).rev() {
            if !threads.is_multiple_of(tn) {
                continue;
            }
            let tm = threads / tn;
            if tn > panels || tm > row_tiles {
                continue;
            }
            let rows = m.div_ceil(tm);
            let cols = n.div_ceil(tn);
            let mut cost = rows * k * cols.div_ceil(blk.nc) + cols * k * rows.div_ceil(blk.mc);
            if !packed_b {
                cost += cols * k;
            }
            if cost < best.0 {
                best = (cost, Grid { tm, tn });
            }
        }
        best.1
    }

    fn blocks(self) -> usize {
        self.tm * self.tn
    }

    /// The same split, each block cut into up to [`CHUNKS_PER_THREAD`]
    /// chunks (whole row tiles / NR panels) that threads claim one at a
    /// time: a thread that is late (descheduled on a busy machine) leaves
    /// its chunks to the others instead of stalling the call.
    ///
    /// Each chunk is a GEMM of its own, so cutting along N packs the A rows
    /// again per chunk, and cutting along M reads (or, plain, packs) the B
    /// columns again. Packing is pure overhead, while re-reading a packed
    /// B overlaps the FMAs unless it comes from memory: so a pre-packed B
    /// is cut along M unless the block outgrows the caches, and a plain B
    /// along the side whose other operand is smaller to pack again.
    fn chunked(self, m: usize, n: usize, k: usize, blk: &Blocking, packed_b: bool) -> Self {
        if self.blocks() == 1 {
            // One thread: nobody to hand a chunk to.
            return self;
        }
        let row_tiles = m.div_ceil(blk.mr).max(1);
        let panels = n.div_ceil(blk.nr).max(1);
        let (rows, cols) = (m.div_ceil(self.tm), n.div_ceil(self.tn));
        let along_m = if packed_b {
            !Blocking::prefetch_next_slice(k, cols)
        } else {
            cols <= rows
        };
        let m_chunks = (self.tm * CHUNKS_PER_THREAD).min(row_tiles);
        let n_chunks = (self.tn * CHUNKS_PER_THREAD).min(panels);
        // Fall back to the other side when this one has too few units.
        if (along_m && m_chunks > self.tm) || n_chunks <= self.tn {
            Grid {
                tm: m_chunks.max(self.tm),
                tn: self.tn,
            }
        } else {
            Grid {
                tm: self.tm,
                tn: n_chunks,
            }
        }
    }

    /// Block `t`'s `(i0, j0, rows, cols)`.
    fn block(
        self,
        t: usize,
        m: usize,
        n: usize,
        mr: usize,
        nr: usize,
    ) -> (usize, usize, usize, usize) {
        let (bi, bj) = (t / self.tn, t % self.tn);
        let (i0, i1) = split(m, mr, self.tm, bi);
        let (j0, j1) = split(n, nr, self.tn, bj);
        (i0, j0, i1 - i0, j1 - j0)
    }
}

/// Part `idx` of `len` cut into `parts` runs of whole `unit`s, as even as
/// possible.
fn split(len: usize, unit: usize, parts: usize, idx: usize) -> (usize, usize) {
    let units = len.div_ceil(unit);
    let lo = (idx * units / parts * unit).min(len);
    let hi = ((idx + 1) * units / parts * unit).min(len);
    (lo, hi)
}

/// Bytes of workspace enough for every [`sgemm_parallel`] call on
/// `threads` threads with this `k`, at most `m` rows and at most `n`
/// columns (every thread's share, each aligned): a buffer sized for the
/// largest batch serves the smaller ones.
pub fn gemm_scratch_bytes_parallel(
    m: usize,
    n: usize,
    k: usize,
    isa: Isa,
    threads: usize,
) -> usize {
    // Every chunk of a call is at most `m x n`, and the bound is monotonic.
    let share = share_floats(Blocking::scratch_floats_up_to(isa, m, n, k), false);
    share * 4 * threads.max(1) + super::PANEL_ALIGN
}

/// Floats of one thread's share of the scratch: packed A and, unless B
/// comes pre-packed, packed B, each a whole number of 64-byte lines.
fn share_floats((a, b): (usize, usize), packed_b: bool) -> usize {
    a.next_multiple_of(16) + if packed_b { 0 } else { b.next_multiple_of(16) }
}

/// The largest per-thread scratch (floats, multiple of 16) over the chunks.
fn per_thread_floats(
    m: usize,
    n: usize,
    k: usize,
    isa: Isa,
    threads: usize,
    packed_b: bool,
) -> usize {
    let whole = Blocking::for_shape(isa, m, k);
    let grid = Grid::choose(m, n, k, threads, &whole, packed_b).chunked(m, n, k, &whole, packed_b);
    (0..grid.blocks())
        .map(|t| {
            let (_, _, rows, cols) = grid.block(t, m, n, whole.mr, whole.nr);
            let blk = Blocking::for_shape(isa, rows, k);
            share_floats(blk.scratch_floats(rows, cols, k), packed_b)
        })
        .max()
        .unwrap_or(0)
}

/// [`super::sgemm`] split over `team`'s threads. `scratch` must hold
/// [`gemm_scratch_bytes_parallel`]`(m, n, k, isa, team.threads())` bytes.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_parallel(
    team: &dyn Team,
    isa: Isa,
    alpha: f32,
    a: MatRef<'_>,
    b: BMatrix<'_, '_>,
    beta: f32,
    mut c: MatMut<'_>,
    epilogue: &Epilogue<'_>,
    scratch: &mut [u8],
) -> Result<(), GemmError> {
    let packed_b = matches!(b, BMatrix::Packed(_));
    let problem = lower(isa, alpha, a, b, beta, &mut c, epilogue)?;
    let (m, n, k) = (problem.m, problem.n, problem.k);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let threads = team.threads().max(1);
    let share = per_thread_floats(m, n, k, isa, threads, packed_b);
    let base = aligned_scratch(scratch, share * threads)?;
    let whole = Blocking::for_shape(isa, m, k);
    let grid = Grid::choose(m, n, k, threads, &whole, packed_b).chunked(m, n, k, &whole, packed_b);
    let base = SendPtr(base);
    let next = AtomicUsize::new(0);
    let job = |t: usize| {
        if t >= threads {
            return;
        }
        let mine = base.get().wrapping_add(t * share);
        loop {
            let chunk = next.fetch_add(1, Ordering::Relaxed);
            if chunk >= grid.blocks() {
                return;
            }
            let (i0, j0, rows, cols) = grid.block(chunk, m, n, whole.mr, whole.nr);
            if rows == 0 || cols == 0 {
                continue;
            }
            let sub: Problem = problem.block(i0, j0, rows, cols, whole.nr);
            let blk = Blocking::for_shape(isa, rows, k);
            // SAFETY: `sub` is one chunk of a validated problem; each chunk
            // is claimed once and chunks are disjoint, so no other thread
            // touches its C; `mine` is thread `t`'s own `share` floats
            // (aligned: share is a multiple of 16 floats), and the team runs
            // each index on one thread at a time.
            unsafe { run_on_isa(isa, &sub, &blk, mine) };
        }
    };
    team.run(&job);
    Ok(())
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each thread offsets it to its own disjoint share of the scratch.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// A method, so closures capture the whole `Sync` wrapper, not the field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A persistent team: threads created once, woken per job.
///
/// Workers spin for [`ThreadTeam::SPIN`] after each job (a GEMM layer
/// follows another within microseconds), then sleep on a condvar. The
/// caller runs index 0 itself, then retires the job and runs every index
/// no worker has claimed yet: a descheduled worker cannot stall the call
/// (and [`sgemm_parallel`]'s chunk counter leaves such indices no work).
pub struct ThreadTeam {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    threads: usize,
}

/// Invariants: index `i` runs only after setting `claimed[i]`, which
/// happens once per job (workers: under the lock, while the job is in the
/// slot; the caller: after retiring it); `active` counts workers between
/// claiming and returning; `run` returns only when the job is retired
/// (`None`), every index is claimed and `active == 0`.
struct Shared {
    /// Bumped once per job; workers look at the slot when it changes.
    generation: AtomicUsize,
    active: AtomicUsize,
    claimed: Vec<std::sync::atomic::AtomicBool>,
    job: Mutex<Option<JobPtr>>,
    wake: Condvar,
    shutdown: std::sync::atomic::AtomicBool,
    /// Workers past their start hook (`with_start` waits for all).
    started: AtomicUsize,
}

#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize) + Sync + 'static));
// SAFETY: the pointee is `Sync` and outlives every use (see `ThreadTeam::run`).
unsafe impl Send for JobPtr {}

impl ThreadTeam {
    /// How long an idle worker (or the waiting caller) spins before
    /// sleeping (or yielding).
    pub const SPIN: Duration = Duration::from_micros(200);

    /// Starts `threads - 1` workers (the caller is the `threads`-th).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        Self::with_start(threads, Arc::new(|_| {}))
    }

    /// As [`Self::new`], each worker first running `on_start(index)` on
    /// its own thread, before any job: where the caller wants it placed
    /// (its CPUs, its name), say. Returns once every worker has run it and
    /// is ready for jobs, so nothing of a worker's start-up (its hook, its
    /// thread-local set-up) happens during the first jobs; an error if a
    /// worker could not be spawned or ended (its hook panicked) first.
    pub fn with_start(
        threads: usize,
        on_start: Arc<dyn Fn(usize) + Send + Sync>,
    ) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            claimed: (0..threads)
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            job: Mutex::new(None),
            wake: Condvar::new(),
            shutdown: std::sync::atomic::AtomicBool::new(false),
            started: AtomicUsize::new(0),
        });
        let mut handles = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let shared = Arc::clone(&shared);
            let on_start = Arc::clone(&on_start);
            handles.push(
                std::thread::Builder::new()
                    .name(format!("gemm-team-{index}"))
                    .spawn(move || {
                        on_start(index);
                        shared.started.fetch_add(1, Ordering::Release);
                        worker(&shared, index)
                    })?,
            );
        }
        let team = Self {
            shared,
            handles,
            threads,
        };
        // Dropping `team` on the error path shuts the other workers down.
        while team.shared.started.load(Ordering::Acquire) < threads - 1 {
            if team.handles.iter().any(JoinHandle::is_finished) {
                return Err(std::io::Error::other(
                    "a GEMM team thread ended while starting",
                ));
            }
            std::thread::yield_now();
        }
        Ok(team)
    }
}

fn worker(shared: &Shared, index: usize) {
    let mut seen = 0;
    loop {
        let start = Instant::now();
        while shared.generation.load(Ordering::Acquire) == seen
            && start.elapsed() < ThreadTeam::SPIN
        {
            std::hint::spin_loop();
        }
        let job = {
            let mut slot = shared.job.lock().unwrap_or_else(|e| e.into_inner());
            while shared.generation.load(Ordering::Acquire) == seen
                && !shared.shutdown.load(Ordering::Acquire)
            {
                slot = shared.wake.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            if shared.shutdown.load(Ordering::Acquire) {
                return;
            }
            seen = shared.generation.load(Ordering::Acquire);
            match *slot {
                Some(job) if !shared.claimed[index].swap(true, Ordering::AcqRel) => {
                    shared.active.fetch_add(1, Ordering::AcqRel);
                    Some(job)
                }
                _ => None,
            }
        };
        if let Some(JobPtr(job)) = job {
            // SAFETY: `run` does not return while `active` counts this worker.
            unsafe { (*job)(index) };
            shared.active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Team for ThreadTeam {
    fn threads(&self) -> usize {
        self.threads
    }

    fn run(&self, job: &(dyn Fn(usize) + Sync)) {
        if self.threads == 1 {
            job(0);
            return;
        }
        // SAFETY: only the lifetime is erased; this function does not return
        // before the job is retired and no worker is still running it.
        let erased: &(dyn Fn(usize) + Sync + 'static) = unsafe { core::mem::transmute(job) };
        {
            let mut slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            for c in &self.shared.claimed {
                c.store(false, Ordering::Relaxed);
            }
            self.shared.claimed[0].store(true, Ordering::Relaxed);
            *slot = Some(JobPtr(erased));
            self.shared.generation.fetch_add(1, Ordering::AcqRel);
        }
        self.shared.wake.notify_all();
        job(0);
        *self.shared.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // Retired: no worker can claim now. Run what nobody claimed.
        for (i, c) in self.shared.claimed.iter().enumerate().skip(1) {
            if !c.swap(true, Ordering::AcqRel) {
                job(i);
            }
        }
        // Spin briefly (workers usually finish within microseconds), then
        // yield: on an oversubscribed machine a worker may need this CPU.
        let start = Instant::now();
        while self.shared.active.load(Ordering::Acquire) > 0 {
            if start.elapsed() < Self::SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

impl Drop for ThreadTeam {
    fn drop(&mut self) {
        {
            let _slot = self.shared.job.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.shutdown.store(true, Ordering::Release);
        }
        self.shared.wake.notify_all();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_in_whole_units() {
        for len in [0, 1, 5, 31, 32, 33, 100, 1000] {
            for parts in 1..5 {
                let mut next = 0;
                for idx in 0..parts {
                    let (lo, hi) = split(len, 16, parts, idx);
                    assert_eq!(lo, next);
                    assert!(lo % 16 == 0 || lo == len);
                    next = hi;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn grid_splits_n_for_small_m() {
        let blk = Blocking::for_isa(Isa::Scalar);
        assert_eq!(
            Grid::choose(1, 4096, 4096, 2, &blk, true),
            Grid { tm: 1, tn: 2 }
        );
        assert_eq!(
            Grid::choose(64, 384, 1536, 2, &blk, true),
            Grid { tm: 1, tn: 2 }
        );
        // One NR panel of N: split M.
        assert_eq!(
            Grid::choose(1000, 4, 64, 2, &blk, true),
            Grid { tm: 2, tn: 1 }
        );
    }

    #[test]
    fn the_sizing_for_m_rows_serves_every_smaller_call() {
        for isa in Isa::ALL {
            for threads in 1..=3 {
                for (n, k) in [(384, 1536), (1536, 384), (4096, 4096), (70, 5000), (33, 7)] {
                    // The most any call of up to `m` rows asks of the buffer.
                    let mut need = 0;
                    for m in 1..=700 {
                        for packed_b in [false, true] {
                            let floats = per_thread_floats(m, n, k, isa, threads, packed_b);
                            need = need.max(floats * 4 * threads + super::super::PANEL_ALIGN);
                        }
                        let sized = gemm_scratch_bytes_parallel(m, n, k, isa, threads);
                        assert!(sized >= need, "{isa} t{threads} m {m} n {n} k {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_parallel_sizing_covers_sgemm_on_one_thread() {
        for isa in Isa::available() {
            for (m, n, k) in [(256, 256, 256), (1, 4096, 64), (300, 70, 5000)] {
                let one = gemm_scratch_bytes_parallel(m, n, k, isa, 1);
                assert!(
                    one >= super::super::gemm_scratch_bytes(m, n, k, isa),
                    "{isa} {m} {n} {k}"
                );
            }
        }
    }

    #[test]
    fn chunks_cut_the_side_that_costs_no_packing() {
        let blk = Blocking::for_shape(Isa::Scalar, 256, 256);
        let (mr, nr) = (blk.mr, blk.nr);
        let two_n = Grid { tm: 1, tn: 2 };
        // Pre-packed B that stays in cache (192 KiB a block, below 4 x
        // any L2): cut M, A is packed once.
        let g = two_n.chunked(256, 384, 256, &blk, true);
        assert_eq!(g.tn, 2, "{g:?}");
        assert!(g.tm > 1, "{g:?}");
        // A pre-packed B from memory (32 MiB a block): cut N, so B
        // streams once.
        let g = two_n.chunked(64, 4096, 4096, &blk, true);
        assert_eq!(g.tm, 1, "{g:?}");
        assert!(g.tn > 2, "{g:?}");
        // One row tile: nothing to cut along M.
        let g = two_n.chunked(mr, 4096, 64, &blk, true);
        assert_eq!(g.tm, 1, "{g:?}");
        // Plain B: repack the smaller of the two blocks.
        let g = two_n.chunked(4096, 2 * nr * 8, 256, &blk, false);
        assert!(g.tm > 1 && g.tn == 2, "{g:?}");
        let g = Grid { tm: 2, tn: 1 }.chunked(2 * mr * 8, 4096, 256, &blk, false);
        assert!(g.tn > 1 && g.tm == 2, "{g:?}");
    }

    #[test]
    fn team_runs_every_index_exactly_once_per_job() {
        let team = ThreadTeam::new(3).expect("spawn");
        for _ in 0..200 {
            let ran: [AtomicUsize; 3] = Default::default();
            team.run(&|i| {
                ran[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(ran.iter().all(|r| r.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn chunks_claimed_from_a_counter_all_run_even_if_workers_are_late() {
        // A job that needs all its chunks done, whoever runs them.
        let team = ThreadTeam::new(2).expect("spawn");
        for _ in 0..100 {
            let next = AtomicUsize::new(0);
            let done: [AtomicUsize; 16] = Default::default();
            team.run(&|_| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= 16 {
                    break;
                }
                done[c].fetch_add(1, Ordering::Relaxed);
            });
            assert!(done.iter().all(|d| d.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn with_start_returns_after_every_hook_ran() {
        for threads in 1..5 {
            let hooks = Arc::new(AtomicUsize::new(0));
            let seen = Arc::clone(&hooks);
            let _team = ThreadTeam::with_start(
                threads,
                Arc::new(move |_| {
                    // A slow hook: the return must still wait for it.
                    std::thread::sleep(Duration::from_millis(5));
                    seen.fetch_add(1, Ordering::Release);
                }),
            )
            .expect("spawn");
            assert_eq!(hooks.load(Ordering::Acquire), threads - 1);
        }
    }

    #[test]
    fn with_start_reports_a_worker_that_dies_starting() {
        let team = ThreadTeam::with_start(
            3,
            Arc::new(|i| {
                if i == 2 {
                    panic!("hook failed on purpose");
                }
            }),
        );
        assert!(team.is_err(), "a dead worker must fail the team");
    }
}
