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
//! each mode and runs the cheaper one. The favoured mode's own samples
//! show when it gets dearer; only the other mode getting cheaper needs a
//! look, so a lone request in [`EXPLORE`] tries it, and each try that
//! finds it still dearer doubles the interval, up to [`EXPLORE_MAX`].
//! A fixed 1 in 128 cost the tail: MiniLM's explored single-thread runs
//! (1.8x the team's) were 0.8% of requests and set its p99.
//!
//! Invariant: `in_flight` counts the calls between [`ModelTeam::enter`]
//! and the drop of its [`Lease`]; `busy` is set while a lease holds the
//! team, so at most one request uses it at a time; `next_explore` is
//! `usize::MAX` while a lease explores (one at a time).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::time::Instant;

use std::sync::Arc;

use pinned_allocator::IdList;
use pinned_kernels::gemm::{SingleThread, Team, ThreadTeam};

use super::team_placement::HelperPlacement;

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

/// Lone requests between tries of the mode not in favour, at first and
/// after a try finds it cheaper.
pub(crate) const EXPLORE: usize = 128;
/// The longest interval between tries (well under 0.1% of requests).
pub(crate) const EXPLORE_MAX: usize = 8192;
/// Lone requests until the mode a request's own sample just took the
/// favour from is tried again. One slow sample (a helper descheduled on a
/// shared host) can flip the favour, and after a long run of lost tries
/// the next try was up to EXPLORE_MAX requests away: MiniLM fp32 on a team
/// of 2 then spent whole 5 s runs alone (20.6 ms p50 against 12.6 ms).
/// Few, as the requests until then run alone, in the tail: a per-request
/// trace showed each flip as a run of this many at 21-22 ms.
pub(crate) const RECHECK_AFTER_FLIP: usize = 4;

/// A model's optional team and the bookkeeping that lends it out.
pub(crate) struct ModelTeam {
    team: Option<ThreadTeam>,
    /// Where the team's helpers run, when the partition pins.
    placement: Option<Arc<HelperPlacement>>,
    in_flight: AtomicUsize,
    busy: AtomicBool,
    /// Lone requests started (picks the exploring ones).
    lone: AtomicUsize,
    /// The `lone` count at which the next try starts.
    next_explore: AtomicUsize,
    /// Lone requests between tries (`EXPLORE..=EXPLORE_MAX`).
    explore_every: AtomicUsize,
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
    /// `cpus`, each helper thread runs on one of them (the partition's
    /// cores: a lent team must not leave the partition's node), away from
    /// the request's own CPU (see [`HelperPlacement`]); a failure to pin
    /// them fails the load.
    pub fn new(threads: usize, cpus: Option<&IdList>) -> std::io::Result<Self> {
        let (team, placement) = match cpus {
            _ if threads <= 1 => (None, None),
            Some(cpus) => {
                let placement = Arc::new(HelperPlacement::new(cpus, threads - 1));
                let failed = Arc::new(AtomicUsize::new(0));
                let (place, bad) = (Arc::clone(&placement), Arc::clone(&failed));
                let team = ThreadTeam::with_start(
                    threads,
                    Arc::new(move |index| {
                        if place.start_helper(index - 1).is_err() {
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
                (Some(team), Some(placement))
            }
            None => (Some(ThreadTeam::new(threads)?), None),
        };
        Ok(Self {
            team,
            placement,
            in_flight: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            lone: AtomicUsize::new(0),
            next_explore: AtomicUsize::new(EXPLORE - 1),
            explore_every: AtomicUsize::new(EXPLORE),
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
        let (want_team, explores) = match &self.team {
            Some(_) if alone => self.pick_mode(),
            _ => (false, None),
        };
        let team = match &self.team {
            Some(t) if want_team && !self.busy.swap(true, Ordering::Acquire) => Some(t),
            _ => None,
        };
        if let (Some(_), Some(placement)) = (team, &self.placement) {
            placement.keep_off_leader();
        }
        Lease {
            owner: self,
            team,
            alone,
            explores,
            start: Instant::now(),
        }
    }

    /// The favoured mode (team or not) for a lone request, unless this
    /// request tries the other one instead: then also its place in the
    /// count of lone requests.
    fn pick_mode(&self) -> (bool, Option<usize>) {
        let n = self.lone.fetch_add(1, Ordering::Relaxed);
        let [single, team] = self.costs();
        // Sample alone first, then the team, then follow the cheaper.
        let favour = single > 0.0 && (team == 0.0 || team < single);
        let due = self.next_explore.load(Ordering::Relaxed);
        let explores = n >= due
            && self
                .next_explore
                .compare_exchange(due, usize::MAX, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        (favour != explores, explores.then_some(n))
    }

    fn costs(&self) -> [f32; 2] {
        self.cost
            .each_ref()
            .map(|c| f32::from_bits(c.load(Ordering::Relaxed)))
    }

    /// Ends the try of the mode not in favour that lone request `n` made:
    /// the next one comes twice as late if that mode is still dearer
    /// (`None`: no sample), else soon.
    fn explored(&self, n: usize, still_dearer: Option<bool>) {
        let every = match still_dearer {
            Some(true) => (self.explore_every.load(Ordering::Relaxed) * 2).min(EXPLORE_MAX),
            Some(false) => EXPLORE,
            None => self.explore_every.load(Ordering::Relaxed),
        };
        self.explore_every.store(every, Ordering::Relaxed);
        self.next_explore.store(n + every, Ordering::Relaxed);
    }

    /// Folds one lone request's cost per token into its mode's mean. When
    /// that takes the favour from this mode, the other is tried again
    /// soon rather than at the next (perhaps distant) try: see
    /// [`RECHECK_AFTER_FLIP`].
    fn record(&self, on_team: bool, ns_per_token: f32) {
        let slot = &self.cost[usize::from(on_team)];
        let old = f32::from_bits(slot.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            ns_per_token
        } else {
            old + (ns_per_token - old) / 4.0
        };
        let other = self.costs()[usize::from(!on_team)];
        let lost_favour = old > 0.0 && other > 0.0 && old < other && new >= other;
        self.set_cost(on_team, new);
        if lost_favour {
            let n = self.lone.load(Ordering::Relaxed);
            self.explore_every.store(EXPLORE, Ordering::Relaxed);
            let next = self.next_explore.load(Ordering::Relaxed);
            if next != usize::MAX {
                self.next_explore
                    .store(next.min(n + RECHECK_AFTER_FLIP), Ordering::Relaxed);
            }
        }
    }

    fn set_cost(&self, on_team: bool, ns_per_token: f32) {
        let bits = ns_per_token.max(f32::MIN_POSITIVE).to_bits();
        self.cost[usize::from(on_team)].store(bits, Ordering::Relaxed);
    }
}

/// One request's share: [`Lease::team`] until it drops.
pub(crate) struct Lease<'t> {
    owner: &'t ModelTeam,
    team: Option<&'t ThreadTeam>,
    alone: bool,
    /// Tries the mode not in favour, as lone request `n` (reported back
    /// when it ends).
    explores: Option<usize>,
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
        if tokens > 0 {
            let ns = self.start.elapsed().as_nanos() as f32;
            self.finish_at(ns / tokens as f32);
        }
    }

    /// [`Self::finish`] with the cost per token given.
    fn finish_at(mut self, ns_per_token: f32) {
        if !self.alone || self.owner.team.is_none() {
            return;
        }
        let on_team = self.team.is_some();
        let Some(n) = self.explores.take() else {
            self.owner.record(on_team, ns_per_token);
            return;
        };
        // A try compares its own sample with the favoured mode's mean.
        // When it wins, its mode takes the sample as its mean, and so the
        // favour, at once: that mode's mean is up to EXPLORE_MAX requests
        // old, often from a cold start (the team's first request pays for
        // waking and configuring its helpers), and folding a quarter of
        // the way per try took seven tries, 900 requests or 4.5 s of
        // MiniLM bf16, to leave it. A lucky sample costs a few requests:
        // the mode's own samples correct its mean from the next one on.
        let other = self.owner.costs()[usize::from(!on_team)];
        let dearer = ns_per_token >= other;
        if dearer {
            self.owner.record(on_team, ns_per_token);
        } else {
            self.owner.set_cost(on_team, ns_per_token);
        }
        self.owner.explored(n, Some(dearer));
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.explores {
            // Ended without a sample (a failed request): try again later.
            self.owner.explored(n, None);
        }
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
    fn helpers_move_off_the_cpu_of_the_request_that_borrows_them() {
        let allowed = crate::affinity::current_affinity().expect("affinity");
        if allowed.len() < 2 {
            eprintln!("skipped: needs two CPUs to keep one free");
            return;
        }
        let t = ModelTeam::new(3, Some(&allowed)).expect("team");
        let placement = t.placement.as_ref().expect("pinned team");
        // The first lone request runs alone; the team is favoured after.
        t.enter().finish_at(100.0);
        let cpus: Vec<usize> = allowed.iter().collect();
        for &leader in cpus.iter().chain(cpus.iter().rev()) {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let only = IdList::from_ids(vec![leader]);
                    crate::affinity::pin_current_thread(&only).expect("pin");
                    let lease = t.enter();
                    assert_eq!(lease.team().threads(), 3);
                    for mask in placement.helper_masks() {
                        assert_eq!(mask.len(), 1, "a helper is pinned to one CPU");
                        assert_ne!(mask, only, "a helper shares the leader's CPU {leader}");
                        assert_eq!(mask.intersection(&allowed), mask, "outside the partition");
                    }
                    lease.finish_at(50.0);
                });
            });
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

    #[test]
    fn a_try_that_finds_the_other_mode_cheaper_switches_to_it() {
        let t = ModelTeam::new(2, None).expect("team");
        // A cold first team request left the team's mean far above.
        t.record(false, 100.0);
        t.record(true, 1000.0);
        let tried_at = (0..EXPLORE).find(|_| {
            let lease = t.enter();
            let team = lease.team().threads() == 2;
            lease.finish_at(if team { 50.0 } else { 100.0 });
            team
        });
        assert_eq!(tried_at, Some(EXPLORE - 1));
        // The next lone request takes the cheaper team, and so on.
        for _ in 0..8 {
            let lease = t.enter();
            assert_eq!(lease.team().threads(), 2, "the cheaper team is not taken");
            lease.finish_at(50.0);
        }
    }

    #[test]
    fn one_slow_sample_that_flips_the_favour_is_rechecked_soon() {
        let t = ModelTeam::new(2, None).expect("team");
        t.record(false, 100.0);
        t.record(true, 50.0);
        // The team is favoured and tries of the worker alone keep losing:
        // the tries drift far apart.
        t.explore_every.store(EXPLORE_MAX, Ordering::Relaxed);
        t.next_explore.store(EXPLORE_MAX, Ordering::Relaxed);
        for _ in 0..10 {
            let lease = t.enter();
            assert_eq!(lease.team().threads(), 2);
            lease.finish_at(50.0);
        }
        // One descheduled helper: a sample of 400 lifts the team's mean
        // to 137.5, above the worker's 100, and the favour flips.
        let lease = t.enter();
        assert_eq!(lease.team().threads(), 2);
        lease.finish_at(400.0);
        let alone = (0..EXPLORE_MAX)
            .take_while(|_| {
                let lease = t.enter();
                let team = lease.team().threads() == 2;
                lease.finish_at(if team { 50.0 } else { 100.0 });
                !team
            })
            .count();
        assert!(
            alone <= RECHECK_AFTER_FLIP,
            "{alone} requests alone before the team was tried again"
        );
        // The try won: the team has the favour back at once.
        let lease = t.enter();
        assert_eq!(lease.team().threads(), 2);
        lease.finish_at(50.0);
    }

    #[test]
    fn tries_the_dearer_mode_ever_more_rarely_and_soon_once_it_gets_cheaper() {
        let t = ModelTeam::new(2, None).expect("team");
        t.record(false, 100.0);
        t.record(true, 300.0);
        // Each try finds the team still dearer: the gaps double.
        let mut tries = Vec::new();
        for i in 0..EXPLORE * 15 {
            let lease = t.enter();
            if lease.team().threads() == 2 {
                tries.push(i);
                lease.finish_at(300.0);
            } else {
                lease.finish_at(100.0);
            }
        }
        let gaps: Vec<usize> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(tries[0], EXPLORE - 1);
        assert_eq!(gaps, [EXPLORE * 2, EXPLORE * 4, EXPLORE * 8]);
        // A try that finds the team cheaper brings the next one in EXPLORE.
        let until_try = |t: &ModelTeam, team_cost: f32| {
            (0..).find(|_| {
                let lease = t.enter();
                let tried = lease.team().threads() == 2;
                lease.finish_at(if tried { team_cost } else { 100.0 });
                tried
            })
        };
        // ... and the team's favour at once.
        until_try(&t, 10.0);
        assert_eq!(until_try(&t, 10.0), Some(0));
        // The gap never exceeds EXPLORE_MAX.
        let t = ModelTeam::new(2, None).expect("team");
        t.record(false, 100.0);
        t.record(true, 300.0);
        for n in 0..20 {
            t.explored(n, Some(true));
        }
        assert_eq!(t.explore_every.load(Ordering::Relaxed), EXPLORE_MAX);
    }
}
