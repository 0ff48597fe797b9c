//! pinned-allocator benchmarks. Each comparison shares a group, so the
//! report shows the ratio from one run:
//!
//! - `arena_alloc/*`: 64 allocations of a 128-byte `[u64]` then a reset, for
//!   our `Arena`, `bumpalo::Bump` and the system allocator (`Box<[u64]>`).
//!   Throughput is in elements, so criterion prints the time per allocation.
//! - `region_prefault_64MiB/*`: creating a region and prefaulting it, with
//!   4 KiB pages, THP and explicit 2 MiB pages (when reserved:
//!   `echo 64 > /proc/sys/vm/nr_hugepages`), beside the naive peer
//!   (`mmap` + one write per page) and the ceiling (memset of memory that
//!   is already faulted in). Throughput is in bytes (GiB/s).
//!
//! `cargo bench -p pinned-bench --bench allocator -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use pinned_allocator::{AllocError, Arena, HugePages, MemPolicy, Region, RegionOptions};

const ALLOCS: usize = 64;
const ELEMS: usize = 16;

fn arena_alloc(c: &mut Criterion) {
    let mut g = c.benchmark_group("arena_alloc");
    g.throughput(Throughput::Elements(ALLOCS as u64));

    let mut arena = Arena::new(1 << 20, MemPolicy::Local).expect("arena");
    g.bench_function("pinned_arena", |b| {
        b.iter(|| {
            for i in 0..ALLOCS {
                let s = arena.alloc::<u64>(ELEMS, i as u64).expect("fits");
                black_box(s);
            }
            arena.reset();
        })
    });

    let mut bump = bumpalo::Bump::with_capacity(1 << 20);
    g.bench_function("bumpalo", |b| {
        b.iter(|| {
            for i in 0..ALLOCS {
                let s = bump.alloc_slice_fill_copy(ELEMS, i as u64);
                black_box(s);
            }
            bump.reset();
        })
    });

    let mut held: Vec<Box<[u64]>> = Vec::with_capacity(ALLOCS);
    g.bench_function("system_alloc", |b| {
        b.iter(|| {
            for i in 0..ALLOCS {
                held.push(black_box(vec![i as u64; ELEMS].into_boxed_slice()));
            }
            held.clear();
        })
    });
    g.finish();
}

const REGION: usize = 64 << 20;

fn region_prefault(c: &mut Criterion) {
    let mut g = c.benchmark_group("region_prefault_64MiB");
    g.throughput(Throughput::Bytes(REGION as u64));
    g.sample_size(10);

    // Unmapping is outside the timing for every entry, and one mapping
    // lives at a time (BatchSize::PerIteration drops it before the next).
    g.bench_function("mmap_touch_4k_peer", |b| {
        b.iter_batched(|| (), |()| mmap_and_touch(REGION), BatchSize::PerIteration)
    });

    for (name, huge) in [
        ("region_4k", HugePages::Off),
        ("region_thp_2m", HugePages::Transparent),
        ("region_hugetlb_2m", HugePages::Explicit),
    ] {
        let make = move || {
            let mut o = RegionOptions::new(REGION, MemPolicy::Local);
            o.huge_pages = huge;
            o.huge_fallback = false;
            Region::new(o)
        };
        match make() {
            Ok(r) => {
                println!(
                    "{name}: backing {:?}, page {} bytes",
                    r.backing(),
                    r.page_size()
                )
            }
            Err(e @ AllocError::NoHugePages { .. }) => {
                println!("{name}: skipped: {e}");
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        }
        g.bench_function(name, |b| {
            b.iter_batched(|| (), |()| make().expect("region"), BatchSize::PerIteration)
        });
    }

    let mut faulted = vec![1u8; REGION];
    g.bench_function("memset_faulted_ceiling", |b| {
        b.iter(|| {
            // SAFETY: `faulted` is a live, writable buffer of REGION bytes.
            unsafe { std::ptr::write_bytes(faulted.as_mut_ptr(), 0, REGION) };
            black_box(&mut faulted);
        })
    });
    g.finish();
}

/// A plain mapping, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; nothing refers to it any more.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// The naive peer: a plain mapping, first-touched one byte per 4 KiB page.
fn mmap_and_touch(len: usize) -> Mapping {
    // SAFETY: a fresh private anonymous mapping; checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(ptr, libc::MAP_FAILED, "mmap of {len} bytes");
    let base = ptr.cast::<u8>();
    for off in (0..len).step_by(4096) {
        // SAFETY: off < len, inside the mapping just made.
        unsafe { base.add(off).write_volatile(1) };
    }
    Mapping { ptr, len }
}

criterion_group!(benches, arena_alloc, region_prefault);
criterion_main!(benches);
