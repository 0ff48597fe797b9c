//! Memory that stays on the partition's node: one anonymous mapping per
//! buffer, its NUMA policy set with `mbind` before the first touch, then
//! touched by the (already pinned) thread that asked for it.
//!
//! Buffers of 2 MiB and more (model weights above all) ask for transparent
//! huge pages (`MADV_HUGEPAGE`) before that touch: most kernels ship THP
//! in `madvise` mode, so without the advice a 67 MB weight stream walks
//! 16k 4 KiB pages per request, and the hardware prefetchers stop at
//! every page boundary. Measured here, single-stream on one worker,
//! interleaved (a busy host): the 67 MB fp32 MLP at batch 1 (read-bound)
//! 3.0-3.5 -> 2.5-2.6 ms p50 over 4 pairs, MiniLM fp32 25.4-27.0 ->
//! 22.9-23.5 ms, MiniLM bf16 5.4-5.7 -> 5.3-5.4 ms. `PINNED_HUGE_PAGES=off`
//! keeps every buffer on base pages, to measure what they give.

use std::ptr::NonNull;
use std::sync::OnceLock;

use pinned_allocator::{numa, MbindFlags, MemPolicy, NumaError};

/// Why node memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("mmap of {bytes} bytes failed: {source}")]
    Map {
        bytes: usize,
        source: std::io::Error,
    },
    #[error("placing {bytes} bytes with policy {policy}: {source}")]
    Policy {
        bytes: usize,
        /// The policy as `bind:0-1` etc. (a node mask is large to carry).
        policy: String,
        source: Box<NumaError>,
    },
    #[error("scratch arena: {0}")]
    Arena(Box<pinned_allocator::AllocError>),
    #[error("{what} of {count} elements overflows the address space")]
    Overflow { what: &'static str, count: usize },
}

/// A zero-filled, page-aligned buffer of `T` placed by a memory policy.
///
/// Invariant: `ptr` maps `bytes >= len * size_of::<T>()` bytes, readable and
/// writable, owned by this value alone until drop unmaps them.
pub(crate) struct NodeBuffer<T> {
    ptr: NonNull<T>,
    len: usize,
    bytes: usize,
}

// SAFETY: the buffer is plain memory owned by this value; sharing it across
// threads is governed by whoever hands out access (slots' state machine).
unsafe impl<T: Send> Send for NodeBuffer<T> {}
// SAFETY: as above; `&NodeBuffer` only exposes raw pointers.
unsafe impl<T: Sync> Sync for NodeBuffer<T> {}

/// Plain numbers that are valid when all bytes are zero.
pub(crate) trait Zeroable: Copy {}
impl Zeroable for f32 {}
impl Zeroable for u8 {}

impl<T: Zeroable> NodeBuffer<T> {
    /// Maps `len` elements (at least one page), applies `policy` (`Default`
    /// leaves placement to the OS), and touches every page from the
    /// calling thread so they are faulted in now, not on the hot path.
    pub(crate) fn new(
        len: usize,
        policy: &MemPolicy,
        what: &'static str,
    ) -> Result<Self, MemoryError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or(MemoryError::Overflow { what, count: len })?
            .max(1);
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected, and the result is checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(MemoryError::Map {
                bytes,
                source: std::io::Error::last_os_error(),
            });
        }
        let ptr = NonNull::new(addr.cast::<T>()).ok_or(MemoryError::Map {
            bytes,
            source: std::io::Error::from_raw_os_error(libc::ENOMEM),
        })?;
        let buffer = Self { ptr, len, bytes };
        if bytes >= HUGE_PAGE_MIN && huge_pages_wanted() {
            // SAFETY: advice on the mapping made above, ours alone. A kernel
            // without THP refuses it, which only leaves base pages.
            unsafe { libc::madvise(addr, bytes, libc::MADV_HUGEPAGE) };
        }
        if *policy != MemPolicy::Default {
            numa::mbind(addr.cast(), bytes, policy, MbindFlags::NONE).map_err(|source| {
                MemoryError::Policy {
                    bytes,
                    policy: policy.to_string(),
                    source: Box::new(source),
                }
            })?;
        }
        buffer.prefault();
        Ok(buffer)
    }

    /// Writes one byte per page so the pages exist (zeroes are what an
    /// anonymous page holds anyway).
    fn prefault(&self) {
        let page = page_size();
        let base = self.ptr.as_ptr().cast::<u8>();
        for offset in (0..self.bytes).step_by(page) {
            // SAFETY: `offset < bytes`, inside the mapping we own.
            unsafe { std::ptr::write_volatile(base.add(offset), 0) };
        }
    }
}

impl<T> NodeBuffer<T> {
    pub(crate) fn as_ptr(&self) -> *mut T {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The whole buffer, exclusively.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: `&mut self` is the only access; `len` elements are mapped
        // and initialized (zero-filled, valid for `Zeroable` T).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for NodeBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`, which nothing
        // references any more (we are being dropped).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.bytes) };
    }
}

/// Buffers from this size on ask for transparent huge pages.
const HUGE_PAGE_MIN: usize = 2 << 20;

/// `off` keeps every buffer on base pages (see the module docs).
pub const HUGE_PAGES_ENV: &str = "PINNED_HUGE_PAGES";

fn huge_pages_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| {
        std::env::var(HUGE_PAGES_ENV).map_or(true, |v| !v.trim().eq_ignore_ascii_case("off"))
    })
}

fn page_size() -> usize {
    // SAFETY: sysconf only reads a configuration value.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096).max(1)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Kilobytes of `addr`'s mapping backed by transparent huge pages.
    fn anon_huge_kb(addr: *const u8) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let at = addr as usize;
        let mut inside = false;
        for line in smaps.lines() {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            if let Some((lo, hi)) = range.filter(|_| !line.ends_with(" kB")) {
                let (lo, hi) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16));
                if let (Ok(lo), Ok(hi)) = (lo, hi) {
                    inside = lo <= at && at < hi;
                }
            } else if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb.trim().trim_end_matches("kB").trim().parse().ok();
                }
            }
        }
        None
    }

    #[test]
    fn large_buffers_get_huge_pages_where_the_kernel_has_them() {
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        let thp_on = thp.contains("[madvise]") || thp.contains("[always]");
        if !thp_on || !huge_pages_wanted() {
            eprintln!(
                "skipped: transparent huge pages are off here ({})",
                thp.trim()
            );
            return;
        }
        let big = NodeBuffer::<u8>::new(16 << 20, &MemPolicy::Local, "test").unwrap();
        let kb = anon_huge_kb(big.as_ptr()).expect("the mapping in smaps");
        // Compaction may not find every 2 MiB, but a fresh 16 MiB gets some.
        assert!(kb >= 2048, "16 MiB buffer: {kb} kB in huge pages");
        let small = NodeBuffer::<u8>::new(1 << 20, &MemPolicy::Local, "test").unwrap();
        assert_eq!(
            anon_huge_kb(small.as_ptr()),
            Some(0),
            "small buffers keep base pages"
        );
    }

    #[test]
    fn zeroed_writable_and_placed() {
        let mut b = NodeBuffer::<f32>::new(3000, &MemPolicy::Local, "test").unwrap();
        assert_eq!(b.len(), 3000);
        assert!(b.as_mut_slice().iter().all(|&x| x == 0.0));
        b.as_mut_slice()[2999] = 1.5;
        assert_eq!(b.as_mut_slice()[2999], 1.5);
        let topo = pinned_allocator::Topology::detect().unwrap();
        let last = topo.memory_nodes().max().unwrap();
        let bind = MemPolicy::bind(&pinned_allocator::IdList::from_ids(vec![last])).unwrap();
        let b = NodeBuffer::<u8>::new(0, &bind, "test").unwrap();
        assert_eq!(b.len(), 0);
        assert_eq!(
            numa::node_of_address(b.as_ptr()).unwrap(),
            Some(last),
            "prefaulted page lands on the bound node"
        );
    }
}
