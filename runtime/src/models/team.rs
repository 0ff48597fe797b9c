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
//! Invariant: `in_flight` counts the calls between [`ModelTeam::enter`]
//! and the drop of its [`Lease`]; `busy` is set while a lease holds the
//! team, so at most one request uses it at a time.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pinned_kernels::gemm::{SingleThread, Team, ThreadTeam};

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

/// A model's optional team and the bookkeeping that lends it out.
pub(crate) struct ModelTeam {
    team: Option<ThreadTeam>,
    in_flight: AtomicUsize,
    busy: AtomicBool,
}

impl std::fmt::Debug for ModelTeam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTeam")
            .field("threads", &self.threads())
            .finish()
    }
}

impl ModelTeam {
    /// A team of `threads` (the caller included); none for 0 or 1.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let team = if threads > 1 {
            Some(ThreadTeam::new(threads)?)
        } else {
            None
        };
        Ok(Self {
            team,
            in_flight: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
        })
    }

    /// Threads a request may get (sizes the per-thread scratch).
    pub fn threads(&self) -> usize {
        self.team.as_ref().map_or(1, Team::threads)
    }

    /// Starts a request: the team when this request is the only one in
    /// flight and the team is free, else the caller's thread alone.
    pub fn enter(&self) -> Lease<'_> {
        let alone = self.in_flight.fetch_add(1, Ordering::AcqRel) == 0;
        let team = match &self.team {
            Some(t) if alone && !self.busy.swap(true, Ordering::Acquire) => Some(t),
            _ => None,
        };
        Lease { owner: self, team }
    }
}

/// One request's share: [`Lease::team`] until it drops.
pub(crate) struct Lease<'t> {
    owner: &'t ModelTeam,
    team: Option<&'t ThreadTeam>,
}

impl Lease<'_> {
    pub fn team(&self) -> &dyn Team {
        match self.team {
            Some(t) => t,
            None => &SingleThread,
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
        let t = ModelTeam::new(2).expect("team");
        assert_eq!(t.threads(), 2);
        {
            let a = t.enter();
            assert_eq!(a.team().threads(), 2);
            let b = t.enter();
            assert_eq!(b.team().threads(), 1, "overlapping request runs alone");
        }
        let c = t.enter();
        assert_eq!(c.team().threads(), 2, "lease returned on drop");
        drop(c);
        let single = ModelTeam::new(1).expect("no team");
        assert_eq!(single.enter().team().threads(), 1);
    }
}
