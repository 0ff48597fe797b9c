//! After creation, arena and pool operations never touch the heap: a
//! counting global allocator sees no call from the steady-state loop.
//! (No syscalls either: see the `steady_state` example under strace.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use pinned_allocator::{Arena, MemPolicy, Pool};

/// Counts allocations made by the current thread only, so the test
/// harness's other threads cannot disturb the count.
struct Counting;

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to `System` unchanged; the counter is a
// const-initialised thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        CALLS.with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `layout` is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CALLS.with(|c| c.set(c.get() + 1));
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        CALLS.with(|c| c.set(c.get() + 1));
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

fn calls() -> u64 {
    CALLS.with(Cell::get)
}

#[test]
fn steady_state_makes_no_heap_calls() {
    let mut arena = Arena::new(1 << 20, MemPolicy::Local).unwrap();
    let pool = Pool::new(512, 16, 64, MemPolicy::Local).unwrap();
    let before = calls();
    let mut sum = 0u64;
    for i in 0..10_000u64 {
        let frame = arena.mark();
        let a = arena.alloc::<u64>(64, i).unwrap();
        let b = arena.alloc_aligned::<f32>(100, 64, 0.5).unwrap();
        let c = arena.alloc_uninit::<u32>(33).unwrap();
        sum += a[63] + b.len() as u64 + c.len() as u64;
        let mut blk = pool.take().unwrap();
        blk.as_mut_slice()[0] = i as u8;
        pool.give(blk);
        if arena.alloc::<u8>(2 << 20, 0).is_err() {
            sum += 1;
        }
        arena.reset_to(frame);
        if i % 100 == 0 {
            arena.reset();
        }
    }
    let after = calls();
    assert!(sum > 0);
    assert_eq!(after - before, 0, "the steady-state loop touched the heap");
    // The counter does count: creating a pool allocates its free list.
    let _pool = Pool::new(64, 4, 8, MemPolicy::Local).unwrap();
    assert!(calls() > after);
}
