//! `loom` model of the pool's lock-free protocol (`src/freelist.rs`),
//! explored over every interleaving up to a preemption bound.
//!
//! The file is compiled here with `crate::sync` mapped onto loom's atomics,
//! so the model runs in a plain `cargo test` (no `--cfg loom` rebuild).
//! Block bytes are modelled by loom `UnsafeCell`s: loom reports a data race
//! if a taker could see a block without the giver's writes being visible.

#[path = "../src/freelist.rs"]
#[allow(dead_code)]
mod freelist;

mod sync {
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

use freelist::FreeList;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;

struct Shared {
    list: FreeList,
    held: Vec<AtomicBool>,
    data: Vec<UnsafeCell<usize>>,
}

impl Shared {
    fn new(blocks: u32) -> Arc<Self> {
        Arc::new(Self {
            list: FreeList::new(blocks),
            held: (0..blocks).map(|_| AtomicBool::new(false)).collect(),
            data: (0..blocks).map(|_| UnsafeCell::new(0)).collect(),
        })
    }

    /// Takes a block, checks nobody else holds it, writes `who` into it.
    fn take(&self, who: usize) -> Option<u32> {
        let i = self.list.pop()?;
        assert!(
            !self.held[i as usize].swap(true, Ordering::Relaxed),
            "block {i} twice"
        );
        self.data[i as usize].with_mut(|p| {
            // SAFETY: the free list gave this index to us alone; loom
            // checks that claim (a race here is a reported failure).
            unsafe { *p = who };
        });
        Some(i)
    }

    fn give(&self, i: u32, who: usize) {
        self.data[i as usize].with(|p| {
            // SAFETY: as in `take`, we still hold the index.
            assert_eq!(unsafe { *p }, who);
        });
        self.held[i as usize].store(false, Ordering::Relaxed);
        self.list.push(i);
    }

    fn drain(&self) -> Vec<u32> {
        let mut all: Vec<u32> = std::iter::from_fn(|| self.list.pop()).collect();
        all.sort_unstable();
        all
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

#[test]
fn two_threads_take_and_give_without_sharing_a_block() {
    model(|| {
        let s = Shared::new(2);
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || {
                if let Some(i) = s.take(1) {
                    s.give(i, 1);
                }
            })
        };
        if let Some(i) = s.take(2) {
            s.give(i, 2);
        }
        t.join().unwrap();
        assert_eq!(s.drain(), [0, 1]);
    });
}

/// The ABA schedule: one taker reads `head = 0, next = 1` and stalls; the
/// other takes 0, takes 1, gives 0 back. Without the tag the stalled CAS
/// would succeed and hand out block 1 twice.
#[test]
fn tagged_head_defeats_aba() {
    model(|| {
        let s = Shared::new(3);
        let t = {
            let s = s.clone();
            loom::thread::spawn(move || {
                if let Some(i) = s.take(1) {
                    s.give(i, 1);
                }
            })
        };
        let a = s.take(2);
        let b = s.take(2);
        if let Some(a) = a {
            s.give(a, 2);
        }
        if let Some(b) = b {
            s.give(b, 2);
        }
        t.join().unwrap();
        assert_eq!(s.drain(), [0, 1, 2]);
    });
}

#[test]
fn an_empty_list_says_so_and_recovers() {
    model(|| {
        let s = Shared::new(1);
        let held = s.take(2).expect("one block is free");
        let t = {
            let s = s.clone();
            // Either finds the list empty or takes the block once it is back.
            loom::thread::spawn(move || {
                if let Some(i) = s.take(1) {
                    s.give(i, 1);
                }
            })
        };
        s.give(held, 2);
        t.join().unwrap();
        assert_eq!(s.drain(), [0]);
    });
}
