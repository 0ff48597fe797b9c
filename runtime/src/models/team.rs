//! Intra-request threads for a model: a persistent GEMM team that one
//! request at a time may borrow.
//!
//! A partition with several workers serves one request per worker. When
//! only one request is in flight (single-stream, light load), the other
//! workers' cores sit idle, while a peer such as ONNX Runtime spreads that
//! one request over all its intra-op threads. A model loaded with
//! `threads > 1` keeps a [`ThreadTeam`] of that size and lends it to a
//! request that finds itself alone; a request that overlaps another runs
//! on its own worker, as before, so the team never oversubscribes the
//! cores under load.
//!
//! A fork-join team only pays when its helpers get their cores: where
//! other tenants keep them busy, every join waits for a preempted helper
//! (measured here, MiniLM f32 with 2 threads: 52 ms p50 against 30 ms on
//! one). So the model keeps the mean cost per token of lone requests in
//! each mode, runs the cheaper one, and tries the other on one lone
//! request in [`EXPLORE`] (under 1%, so p99 stays in the chosen mode).
//!
//! Invariant: `in_flight` counts the calls between [`ModelTeam::enter`]
//! and the drop of its [`Lease`]; `busy` is set while a lease holds the
//! team, so at most one request uses it at a time.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use std::sync::Arc;

use pinned_allocator::IdList;
use pinned_kernels::gemm::{SingleThread, Team, ThreadTeam};

use crate::affinity::pin_current_thread;

/// Overrides the threads a model was loaded with (`1`: every request on
/// its worker alone), to compare both on a machine whose other cores are
/// busy: a fork-join team waits for a preempted helper.
pub const MODEL_THREADS_ENV: &str = "PINNED_MODEL_THREADS";

/// `threads`, unless [`MODEL_THREADS_ENV`] holds a number.
pub(crate) fn threads_or_env(threads: usize) -> usize {
    std::env::var(MODEL_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(threads)
}

/// One lone request in this many runs in the mode not in favour.
pub(crate) const EXPLORE: usize = 128;

/// A model's optional team and the bookkeeping that lends it out.
pub(crate) struct ModelTeam {
    team: Option<ThreadTeam>,
    in_flight: AtomicUsize,
    busy: AtomicBool,
    /// Lone requests started (picks the exploring ones).
    lone: AtomicUsize,
    /// Mean nanoseconds per token of lone requests alone (`[0]`) and on
    /// the team (`[1]`), as f32 bits; 0 until the first sample. Updated
    /// without locks: two racing updates lose one sample, no more.
    cost: [AtomicU32; 2],
}

impl std::fmt::Debug for ModelTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTeam")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ModelTeam {
    /// A team of `threads` (the caller included); none for 0 or 1. With
    /// `cpus`, its helper threads run only there (the partition's cores:
    /// a lent team must not leave the partition's node); a failure to pin
    /// them fails the load.
    pub fn new(threads: usize, cpus: Option<&IdList>) -> std::io::Result<Self> {
        let team = if threads > 1 {
            Some(match cpus {
                Some(cpus) => {
                    let cpus = cpus.clone();
                    let failed = Arc::new(AtomicUsize::new(0));
                    let bad = Arc::clone(&failed);
                    let team = ThreadTeam::with_start(
                        threads,
                        Arc::new(move |_| {
                            if pin_current_thread(&cpus).is_err() {
                                bad.fetch_add(1, Ordering::Release);
                            }
                        }),
                    )?;
                    // `with_start` returns once every helper has pinned itself.
                    if failed.load(Ordering::Acquire) > 0 {
                        return Err(std::io::Error::other(
                            "could not pin the model's team to the partition's CPUs",
                        ));
                    }
                    team
                }
                None => ThreadTeam::new(threads)?,
            })
        } else {
            None
        };
        Ok(Self {
            team,
            in_flight: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            lone: AtomicUsize::new(0),
            cost: [AtomicU32::new(0), AtomicU32::new(0)],
        })
    }

    /// Threads a request may get (sizes the per-thread scratch).
    pub fn threads(&self) -> usize {
        self.team.as_ref().map_or(1, Team::threads)
    }

    /// Starts a request: the team when this request is the only one in
    /// flight, the team is free and the team is the cheaper mode (or
    /// this request explores it), else the caller's thread alone.
    pub fn enter(&self) -> Lease<'_> {
        let alone = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        let team = match &self.team {
            Some(t) if alone && self.prefer_team() && !self.busy.swap(true, Ordering::Acquire) => {
                Some(t)
            }
            _ => None,
        };
        Lease {
            owner: self,
            team,
            alone,
            start: Instant::now(),
        }
    }

    fn prefer_team(&self) -> bool {
        let n = self.lone.fetch_add(1, Ordering::Relaxed);
        let [single, team] = self
            .cost
            .each_ref()
            .map(|c| f32::from_bits(c.load(Ordering::Relaxed)));
        // Sample alone first, then the team, then follow the cheaper.
        let favour = single > 0.0 && (team == 0.0 || team < single);
        if n % EXPLORE == EXPLORE - 1 {
            !favour
        } else {
            favour
        }
    }

    /// Folds one lone request's cost per token into its mode's mean.
    fn record(&self, on_team: bool, ns_per_token: f32) {
        let slot = &self.cost[usize::from(on_team)];
        let old = f32::from_bits(slot.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            ns_per_token
        } else {
            old + (ns_per_token - old) / 4.0
        };
        slot.store(new.max(f32::MIN_POSITIVE).to_bits(), Ordering::Relaxed);
    }
}

/// One request's share: [`Lease::team`] until it drops.
pub(crate) struct Lease<'t> {
    owner: &'t ModelTeam,
    team: Option<&'t ThreadTeam>,
    alone: bool,
    start: Instant,
}

impl Lease<'_> {
    pub fn team(&self) -> &dyn Team {
        match self.team {
            Some(t) => t,
            None => &SingleThread,
        }
    }

    /// Ends a request that ran `tokens` tokens, recording its cost when
    /// it ran alone (an overlapped one says nothing about the team).
    pub fn finish(self, tokens: usize) {
        if self.alone && self.owner.team.is_some() && tokens > 0 {
            let ns = self.start.elapsed().as_nanos() as f32;
            self.owner.record(self.team.is_some(), ns / tokens as f32);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.team.is_some() {
            self.owner.busy.store(false, Ordering::Release);
        }
        self.owner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lends_the_team_to_a_lone_request_only() {
        let t = ModelTeam::new(2, None).expect("team");
        assert_eq!(t.threads(), 2);
        // No sample yet: alone first, then the team.
        let first = t.enter();
        assert_eq!(first.team().threads(), 1);
        first.finish(10);
        {
            let a = t.enter();
            assert_eq!(a.team().threads(), 2);
            let b = t.enter();
            assert_eq!(b.team().threads(), 1, "overlapping request runs alone");
        }
        let single = ModelTeam::new(1, None).expect("no team");
        assert_eq!(single.enter().team().threads(), 1);
    }

    #[test]
    fn helpers_run_only_on_the_given_cpus() {
        let allowed = crate::affinity::current_affinity().expect("affinity");
        let last = *allowed.as_slice().last().expect("a CPU");
        let only = IdList::from_ids(vec![last]);
        let t = ModelTeam::new(3, Some(&only)).expect("team");
        // The first lone request runs alone; the next gets the team.
        t.enter().finish(10);
        let lease = t.enter();
        let team = lease.team();
        assert_eq!(team.threads(), 3);
        // `run` may hand a late helper's index to the caller: record the
        // masks of the helper threads themselves (named `gemm-team-*`), and
        // run until both have shown up. The caller's index waits a little,
        // so that helpers sharing one CPU get to claim theirs (without it,
        // 10,000 runs sometimes saw no helper at all).
        let masks = std::sync::Mutex::new(Vec::new());
        for _ in 0..2_000 {
            team.run(&|i| {
                if i == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                let me = std::thread::current();
                if me.name().is_some_and(|n| n.starts_with("gemm-team-")) {
                    let mask = crate::affinity::thread_affinity(crate::affinity::current_tid());
                    masks.lock().unwrap().push((me.id(), mask.expect("mask")));
                }
            });
            let mut ids: Vec<_> = masks.lock().unwrap().iter().map(|m| m.0).collect();
            ids.sort_unstable_by_key(|id| format!("{id:?}"));
            ids.dedup();
            if ids.len() == 2 {
                break;
            }
        }
        let masks = masks.into_inner().unwrap();
        assert!(!masks.is_empty(), "no helper ever ran a job");
        for (_, mask) in masks {
            assert_eq!(mask, only, "a helper ran outside the given CPUs");
        }
    }

    #[test]
    fn follows_the_cheaper_mode_and_explores_the_other() {
        let t = ModelTeam::new(2, None).expect("team");
        t.record(false, 100.0);
        t.record(true, 300.0);
        let on_team: Vec<bool> = (0..2 * EXPLORE)
            .map(|_| t.enter().team().threads() == 2)
            .collect();
        assert_eq!(
            on_team.iter().filter(|&&x| x).count(),
            2,
            "explores once per EXPLORE"
        );
        // The team gets cheaper: it is preferred.
        for _ in 0..8 {
            t.record(true, 50.0);
        }
        let on_team = (0..EXPLORE)
            .filter(|_| t.enter().team().threads() == 2)
            .count();
        assert_eq!(on_team, EXPLORE - 1);
    }
}
