//! Many threads hammering a small pool: a block is never held by two
//! threads at once, its bytes are only ever the holder's, and every block
//! is back at the end.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;

use pinned_allocator::{MemPolicy, Pool};

const THREADS: usize = 4;
const BLOCKS: usize = 3;
const ROUNDS: usize = 20_000;

#[test]
fn a_block_is_held_by_one_thread_at_a_time() {
    let pool = Pool::new(64, BLOCKS, 64, MemPolicy::Local).unwrap();
    let held: Vec<AtomicBool> = (0..BLOCKS).map(|_| AtomicBool::new(false)).collect();
    let takes = AtomicUsize::new(0);
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (pool, held, takes, barrier) = (&pool, &held, &takes, &barrier);
            s.spawn(move || {
                barrier.wait();
                let mine = t as u8 + 1;
                for round in 0..ROUNDS {
                    let Some(mut b) = pool.take() else {
                        std::hint::spin_loop();
                        continue;
                    };
                    let was = held[b.index()].swap(true, Ordering::AcqRel);
                    assert!(!was, "block {} handed out twice", b.index());
                    b.as_mut_slice().fill(mine);
                    if round % 64 == 0 {
                        std::thread::yield_now();
                    }
                    assert!(
                        b.as_slice().iter().all(|&x| x == mine),
                        "another thread wrote"
                    );
                    held[b.index()].store(false, Ordering::Release);
                    takes.fetch_add(1, Ordering::Relaxed);
                    pool.give(b);
                }
            });
        }
    });
    assert!(takes.load(Ordering::Relaxed) > 0);
    let all: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
    let mut idx: Vec<_> = all.iter().map(|b| b.index()).collect();
    idx.sort_unstable();
    assert_eq!(idx, (0..BLOCKS).collect::<Vec<_>>(), "a block was lost");
}
