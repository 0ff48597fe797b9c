//! Where a model team's helper threads run: one CPU of the partition each,
//! never the CPU of the request that borrows the team.
//!
//! A helper allowed on every CPU of the partition shares a core with the
//! request's worker whenever the scheduler leaves it there: the worker of a
//! lone request changes from one request to the next, and the scheduler
//! moves a spinning helper off a busy core only when it rebalances. Every
//! fork-join of the request then waits for a helper that gets half a core
//! while another core idles. So each helper is pinned to one CPU, and when
//! a request leads from the CPU of a helper, the helpers move to the other
//! CPUs first (one `sched_setaffinity` each, only when the leader's CPU
//! changed; the usual case costs one `sched_getcpu`).
//!
//! Invariant: `tids[h]` is helper `h`'s kernel thread id once it started
//! (0 before); `cpu[h]` is the one CPU it is pinned to; `leader` is the CPU
//! the current assignment keeps free (`usize::MAX`: none yet). Only the
//! holder of the team (one request at a time) re-assigns.

use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};

use pinned_allocator::IdList;

use crate::affinity::{current_cpu, current_tid, pin_thread_to_cpu, AffinityError};

pub(crate) struct HelperPlacement {
    cpus: Vec<usize>,
    tids: Vec<AtomicI32>,
    cpu: Vec<AtomicUsize>,
    leader: AtomicUsize,
}

impl HelperPlacement {
    /// Placement for `helpers` threads over the partition's `cpus`; the
    /// first plan keeps the first CPU free.
    pub(crate) fn new(cpus: &IdList, helpers: usize) -> Self {
        let cpus: Vec<usize> = cpus.iter().collect();
        let first = cpus.first().copied().unwrap_or(0);
        let plan = Self::plan(&cpus, first, helpers);
        Self {
            tids: (0..helpers).map(|_| AtomicI32::new(0)).collect(),
            cpu: plan.into_iter().map(AtomicUsize::new).collect(),
            leader: AtomicUsize::new(first),
            cpus,
        }
    }

    /// The CPU of each helper when the leader runs on `leader`: the other
    /// CPUs in turn (all of them, if the partition has only the leader's).
    fn plan(cpus: &[usize], leader: usize, helpers: usize) -> Vec<usize> {
        (0..helpers).map(|h| cpu_for(cpus, h, leader)).collect()
    }

    /// Run by helper `h` (0-based) on its own thread as it starts.
    pub(crate) fn start_helper(&self, h: usize) -> Result<(), AffinityError> {
        self.tids[h].store(current_tid(), Ordering::Release);
        pin_thread_to_cpu(0, self.cpu[h].load(Ordering::Relaxed))
    }

    /// Called by the request that now holds the team: moves the helpers
    /// off its CPU if the current plan has one there. A helper that cannot
    /// be moved stays where it is (slower, still correct). Allocates
    /// nothing: it runs on the request's path.
    pub(crate) fn keep_off_leader(&self) {
        let Some(leader) = current_cpu() else { return };
        if self.leader.load(Ordering::Relaxed) == leader {
            return;
        }
        self.leader.store(leader, Ordering::Relaxed);
        for (h, (tid, cpu)) in self.tids.iter().zip(&self.cpu).enumerate() {
            let (tid, want) = (tid.load(Ordering::Acquire), cpu_for(&self.cpus, h, leader));
            if tid == 0 || cpu.load(Ordering::Relaxed) == want {
                continue;
            }
            if pin_thread_to_cpu(tid, want).is_ok() {
                cpu.store(want, Ordering::Relaxed);
            }
        }
    }

    /// Each helper's CPUs as the kernel reports them.
    #[cfg(test)]
    pub(crate) fn helper_masks(&self) -> Vec<IdList> {
        self.tids
            .iter()
            .map(|t| crate::affinity::thread_affinity(t.load(Ordering::Acquire)).expect("mask"))
            .collect()
    }
}

/// Helper `h`'s CPU when the leader runs on `leader`: the `h`-th (modulo
/// their count) of `cpus` other than the leader's, or of all `cpus` if
/// the leader's is the only one. [`HelperPlacement::plan`] is this for
/// every helper; the request path calls it alone, allocating nothing.
fn cpu_for(cpus: &[usize], h: usize, leader: usize) -> usize {
    let others = cpus.iter().filter(|&&c| c != leader).count();
    if others == 0 {
        return cpus[h % cpus.len()];
    }
    let nth = h % others;
    cpus.iter()
        .copied()
        .filter(|&c| c != leader)
        .nth(nth)
        .unwrap_or(leader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_keep_the_leaders_cpu_free_when_there_is_another() {
        assert_eq!(HelperPlacement::plan(&[0, 1], 0, 1), [1]);
        assert_eq!(HelperPlacement::plan(&[0, 1], 1, 1), [0]);
        assert_eq!(HelperPlacement::plan(&[2, 5, 7], 5, 3), [2, 7, 2]);
        // A leader outside the partition (not pinned): any CPU will do.
        assert_eq!(HelperPlacement::plan(&[0, 1], 9, 2), [0, 1]);
        assert_eq!(HelperPlacement::plan(&[2, 5, 7], 9, 4), [2, 5, 7, 2]);
        // One CPU: the helpers share it.
        assert_eq!(HelperPlacement::plan(&[3], 3, 2), [3, 3]);
        assert_eq!(HelperPlacement::plan(&[3], 9, 2), [3, 3]);
        // More helpers than other CPUs: they go round again.
        assert_eq!(HelperPlacement::plan(&[0, 1], 0, 3), [1, 1, 1]);
        assert_eq!(HelperPlacement::plan(&[2, 5, 7], 7, 5), [2, 5, 2, 5, 2]);
    }
}
