//! A steady-state arena + pool loop, for `strace -c -f`: after creation it
//! must make no mmap/brk/mbind/madvise (or any other) syscall.
//!
//! ```text
//! cargo build --release -p pinned-allocator --example steady_state
//! target/release/examples/steady_state 3 &      # loops for 3 s after "ready"
//! strace -c -f -p $(pidof steady_state)         # attach once it says ready
//! ```
//!
//! Prints `ready` when creation is done, and the loop count at the end.

use std::time::{Duration, Instant};

use pinned_allocator::{Arena, HugePages, MemPolicy, NodeMask, Pool, RegionOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(3), |s| s.parse())?;
    let node0 = MemPolicy::Bind(NodeMask::single(0)?);
    let mut options = RegionOptions::new(64 << 20, node0);
    options.huge_pages = HugePages::Transparent;
    let mut arena = Arena::with_options(options)?;
    let pool = Pool::new(4096, 64, 64, node0)?;
    println!("ready pid={}", std::process::id());
    // Checking the clock every 2^16 rounds keeps vDSO clock reads rare (and
    // they are not syscalls anyway).
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rounds = 0u64;
    let mut check = 0u64;
    loop {
        for _ in 0..1 << 16 {
            let frame = arena.mark();
            let a = arena.alloc::<f32>(1024, 0.0)?;
            let b = arena.alloc_aligned::<u8>(3000, 64, 1)?;
            check = check.wrapping_add(a.len() as u64 + u64::from(b[7]));
            let mut blk = pool.take().ok_or("pool empty")?;
            blk.as_mut_slice()[0] = rounds as u8;
            pool.give(blk);
            arena.reset_to(frame);
            rounds += 1;
        }
        arena.reset();
        if Instant::now() >= end {
            break;
        }
    }
    println!("rounds={rounds} check={check}");
    Ok(())
}
