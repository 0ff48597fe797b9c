//! `Region`: one anonymous mapping, made at start-up, whose pages are placed
//! by a memory policy *before* anything touches them, then prefaulted by
//! writing so that no page fault (and no placement decision) is left for the
//! hot path.
//!
//! Order of operations in [`Region::new`], and why:
//! 1. `mmap` (with `MAP_HUGETLB` for [`HugePages::Explicit`]; when no huge
//!    pages are reserved, fall back to THP and say so in [`Region::note`]);
//! 2. `madvise(MADV_HUGEPAGE | MADV_NOHUGEPAGE)` so THP is on or off as asked,
//!    whatever `/sys/kernel/mm/transparent_hugepage/enabled` says;
//! 3. `mbind` the policy: a page's node is decided at its first fault, so the
//!    policy must be in place before then;
//! 4. prefault by *writing* (a read maps the shared zero page and places
//!    nothing), from a thread pinned on the target node when there is one, so
//!    the kernel zeroes the pages from near memory;
//! 5. `mlock` if asked, with a clear error at `RLIMIT_MEMLOCK`.
//!
//! [`Region::placement`] reports how many pages sit on each node (move_pages
//! in query mode), as JSON-serialisable data for the harness.

use std::ffi::c_void;
use std::ptr::NonNull;

use crate::numa::{self, MbindFlags, MemPolicy, NumaError};
use crate::topology::Topology;

/// Page kind asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize)]
pub enum HugePages {
    /// 4 KiB pages only (`MADV_NOHUGEPAGE`, so page-by-page interleave is exact).
    #[default]
    Off,
    /// Transparent huge pages where the kernel can (`MADV_HUGEPAGE`).
    Transparent,
    /// Reserved huge pages (`MAP_HUGETLB`, `/proc/sys/vm/nr_hugepages`).
    Explicit,
}

/// Page kind obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Backing {
    BasePages,
    TransparentHuge,
    ExplicitHuge,
}

/// How to make a [`Region`]. `RegionOptions::new(bytes, policy)` gives the
/// defaults: 4 KiB pages, no mlock, THP fallback for explicit huge pages,
/// prefault on the policy's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionOptions {
    /// Usable bytes; the mapping is rounded up to whole pages.
    pub bytes: usize,
    pub policy: MemPolicy,
    pub huge_pages: HugePages,
    /// `mlock` the region so it is never swapped out.
    pub lock: bool,
    /// With `HugePages::Explicit` and too few reserved huge pages: use THP
    /// instead (true) or fail with [`AllocError::NoHugePages`] (false).
    pub huge_fallback: bool,
    /// Prefault from a thread pinned on the policy's node (when the policy
    /// names one node that has CPUs); otherwise from the calling thread.
    pub prefault_on_node: bool,
}

/// `RegionOptions { bytes, policy, ..Default::default() }` works too.
impl Default for RegionOptions {
    fn default() -> Self {
        Self::new(0, MemPolicy::Default)
    }
}

impl RegionOptions {
    pub fn new(bytes: usize, policy: MemPolicy) -> Self {
        Self {
            bytes,
            policy,
            huge_pages: HugePages::Off,
            lock: false,
            huge_fallback: true,
            prefault_on_node: true,
        }
    }
}

/// Why a region could not be made. Every message names the size and what
/// to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("a region of 0 bytes was asked for; give a size of at least one byte")]
    ZeroSize,
    #[error("{bytes} bytes cannot be rounded up to whole pages of {page_size} bytes")]
    TooLarge { bytes: usize, page_size: usize },
    #[error(
        "mmap of {bytes} bytes failed with errno {errno} ({reason}); lower the size or free memory"
    )]
    Map {
        bytes: usize,
        errno: i32,
        reason: String,
    },
    #[error(
        "{bytes} bytes need {needed} explicit huge pages of {page_size} bytes but only {free} \
         are free: reserve more (echo {needed} > /proc/sys/vm/nr_hugepages) or use \
         HugePages::Transparent"
    )]
    NoHugePages {
        bytes: usize,
        page_size: usize,
        needed: usize,
        free: usize,
    },
    #[error("placing {bytes} bytes: {source}")]
    Policy { bytes: usize, source: NumaError },
    #[error(
        "prefaulting {bytes} bytes under policy {policy} failed with errno {errno} ({reason}): \
         the nodes it allows lack that much free memory; shrink the region or use Preferred"
    )]
    Prefault {
        bytes: usize,
        /// The policy in its text form (`bind:1`).
        policy: String,
        errno: i32,
        reason: String,
    },
    #[error(
        "mlock of {bytes} bytes failed with errno {errno} ({reason}): RLIMIT_MEMLOCK is \
         {limit}; raise it (ulimit -l, LimitMEMLOCK= for systemd, --ulimit memlock=-1 for \
         docker), grant CAP_IPC_LOCK, or set lock: false"
    )]
    Lock {
        bytes: usize,
        limit: String,
        errno: i32,
        reason: String,
    },
}

/// One anonymous mapping with a policy; unmapped on drop.
///
/// Invariants: `ptr` is page aligned and maps `len` bytes read-write;
/// `len % page_size == 0`; every page has been written once (prefaulted).
#[derive(Debug)]
pub struct Region {
    ptr: NonNull<u8>,
    len: usize,
    page_size: usize,
    backing: Backing,
    policy: MemPolicy,
    locked: bool,
    prefaulted_on: Option<usize>,
    note: Option<String>,
}

// SAFETY: the region owns its mapping exclusively; shared access only reads
// (`as_slice`), writes need `&mut self`, so the usual borrow rules make it
// safe to send and share across threads.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// Pages of a region on one node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodePages {
    pub node: usize,
    pub pages: u64,
}

/// Where a region's pages are, counted in units of `page_size`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Placement {
    pub page_size: usize,
    pub total_pages: u64,
    /// Nodes with at least one page, by increasing node id.
    pub nodes: Vec<NodePages>,
    /// Pages the kernel reports as not present (never written, or swapped).
    pub not_present: u64,
}

impl Placement {
    pub fn pages_on(&self, node: usize) -> u64 {
        self.nodes
            .iter()
            .find(|n| n.node == node)
            .map_or(0, |n| n.pages)
    }
}

impl Region {
    pub fn new(opts: RegionOptions) -> Result<Self, AllocError> {
        if opts.bytes == 0 {
            return Err(AllocError::ZeroSize);
        }
        let base_page = base_page_size();
        let mut note = None;
        let mut region = None;
        if opts.huge_pages == HugePages::Explicit {
            let huge = huge_page_size();
            let len = round_up(opts.bytes, huge)?;
            match map(len, true) {
                Ok(ptr) => {
                    region = Some(Self::mapped(ptr, len, huge, Backing::ExplicitHuge, &opts))
                }
                Err(errno) if errno == libc::ENOMEM || errno == libc::EINVAL => {
                    let free = free_huge_pages(huge);
                    if !opts.huge_fallback {
                        return Err(AllocError::NoHugePages {
                            bytes: opts.bytes,
                            page_size: huge,
                            needed: len / huge,
                            free,
                        });
                    }
                    note = Some(format!(
                        "explicit huge pages: {} of {huge} bytes needed, {free} free \
                         (/proc/sys/vm/nr_hugepages); fell back to transparent huge pages",
                        len / huge
                    ));
                }
                Err(errno) => return Err(map_error(len, errno)),
            }
        }
        let mut region = match region {
            Some(r) => r,
            None => {
                let len = round_up(opts.bytes, base_page)?;
                let ptr = map(len, false).map_err(|errno| map_error(len, errno))?;
                Self::mapped(ptr, len, base_page, Backing::BasePages, &opts)
            }
        };
        region.note = note;
        if region.backing != Backing::ExplicitHuge {
            region.advise_thp(opts.huge_pages != HugePages::Off);
        }
        if region.policy != MemPolicy::Default {
            numa::mbind(
                region.ptr.as_ptr(),
                region.len,
                &region.policy,
                MbindFlags::NONE,
            )
            .map_err(|source| AllocError::Policy {
                bytes: region.len,
                source,
            })?;
        }
        region.prefault(opts.prefault_on_node)?;
        if opts.lock {
            region.lock()?;
        }
        Ok(region)
    }

    fn mapped(
        ptr: NonNull<u8>,
        len: usize,
        page_size: usize,
        backing: Backing,
        o: &RegionOptions,
    ) -> Self {
        Self {
            ptr,
            len,
            page_size,
            backing,
            policy: o.policy,
            locked: false,
            prefaulted_on: None,
            note: None,
        }
    }

    /// Turns THP on or off for this range. A kernel without THP refuses
    /// with EINVAL; then the region simply has base pages.
    fn advise_thp(&mut self, on: bool) {
        let advice = if on {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: the range is our own mapping; these advices change only
        // the page size the kernel may use, never contents.
        let rc = unsafe { libc::madvise(self.ptr.as_ptr().cast(), self.len, advice) };
        if on {
            if rc == 0 {
                self.backing = Backing::TransparentHuge;
            } else if self.note.is_none() {
                self.note =
                    Some("this kernel has no transparent huge pages; using 4 KiB pages".into());
            }
        }
    }

    /// Writes every page once, from a thread on the target node if possible.
    fn prefault(&mut self, on_node: bool) -> Result<(), AllocError> {
        let target = if on_node {
            single_target_node(&self.policy)
        } else {
            None
        };
        let cpus = target.and_then(|node| {
            let topo = Topology::detect().ok()?;
            let cpus = topo.node(node)?.cpus.clone();
            (!cpus.is_empty()).then_some((node, cpus))
        });
        let (addr, len, page) = (self.ptr.as_ptr() as usize, self.len, self.page_size);
        let result = match cpus {
            Some((node, cpus)) => std::thread::scope(|s| {
                s.spawn(|| {
                    let pinned = pin_current_thread(cpus.as_slice());
                    (populate_write(addr, len, page), pinned.then_some(node))
                })
                .join()
                .unwrap_or((Err(libc::EFAULT), None))
            }),
            None => (populate_write(addr, len, page), None),
        };
        self.prefaulted_on = result.1;
        result.0.map_err(|errno| AllocError::Prefault {
            bytes: self.len,
            policy: self.policy.to_string(),
            errno,
            reason: errno_text(errno),
        })
    }

    fn lock(&mut self) -> Result<(), AllocError> {
        // SAFETY: the range is our own mapping; mlock only pins it in RAM.
        if unsafe { libc::mlock(self.ptr.as_ptr().cast(), self.len) } != 0 {
            let errno = last_errno();
            return Err(AllocError::Lock {
                bytes: self.len,
                limit: memlock_limit(),
                errno,
                reason: errno_text(errno),
            });
        }
        self.locked = true;
        Ok(())
    }

    /// Counts the region's pages per node with `move_pages` in query mode
    /// (which faults nothing in). Allocation-free apart from the result.
    pub fn placement(&self) -> Result<Placement, NumaError> {
        const BATCH: usize = 512;
        let mut per_node: Vec<u64> = Vec::new();
        let mut not_present = 0;
        let mut pages = [std::ptr::null::<c_void>(); BATCH];
        let mut status = [0i32; BATCH];
        let total = self.len / self.page_size;
        let mut done = 0;
        while done < total {
            let n = (total - done).min(BATCH);
            for (i, p) in pages[..n].iter_mut().enumerate() {
                // SAFETY: (done + i) < total, so the address is inside the mapping.
                *p = unsafe { self.ptr.as_ptr().add((done + i) * self.page_size) }.cast();
            }
            numa::query_pages(&pages[..n], &mut status[..n])?;
            for &s in &status[..n] {
                match usize::try_from(s) {
                    Ok(node) => {
                        if per_node.len() <= node {
                            per_node.resize(node + 1, 0);
                        }
                        per_node[node] += 1;
                    }
                    Err(_) => not_present += 1,
                }
            }
            done += n;
        }
        Ok(Placement {
            page_size: self.page_size,
            total_pages: total as u64,
            nodes: per_node
                .iter()
                .enumerate()
                .filter(|(_, &p)| p > 0)
                .map(|(node, &pages)| NodePages { node, pages })
                .collect(),
            not_present,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped, initialised (zeroed by the kernel,
        // then written by prefault) and only mutated through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Mapped bytes (the asked size rounded up to whole pages).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn page_size(&self) -> usize {
        self.page_size
    }

    pub fn backing(&self) -> Backing {
        self.backing
    }

    pub fn policy(&self) -> MemPolicy {
        self.policy
    }

    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// The node whose CPUs prefaulted the region, when it was pinned there.
    pub fn prefaulted_on(&self) -> Option<usize> {
        self.prefaulted_on
    }

    /// Why the region differs from what was asked (e.g. the huge page fallback).
    pub fn note(&self) -> Option<&str> {
        self.note.as_deref()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we own the mapping; every borrow of it ended with `&mut self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The one node a policy sends pages to first, if it names exactly one.
fn single_target_node(policy: &MemPolicy) -> Option<usize> {
    match policy {
        MemPolicy::Preferred(n) => Some(*n),
        MemPolicy::Bind(m) if m.count() == 1 => m.first(),
        _ => None,
    }
}

fn map(len: usize, huge: bool) -> Result<NonNull<u8>, i32> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if huge { libc::MAP_HUGETLB } else { 0 };
    // SAFETY: a fresh anonymous mapping with no address hint aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_errno());
    }
    NonNull::new(p.cast()).ok_or(libc::ENOMEM)
}

fn map_error(bytes: usize, errno: i32) -> AllocError {
    AllocError::Map {
        bytes,
        errno,
        reason: errno_text(errno),
    }
}

/// `MADV_POPULATE_WRITE` (Linux 5.14) faults every page in writable without
/// a per-page trap; older kernels refuse it with EINVAL and get one written
/// byte per page instead. Both allocate under the range's policy.
fn populate_write(addr: usize, len: usize, page: usize) -> Result<(), i32> {
    const MADV_POPULATE_WRITE: libc::c_int = 23;
    // SAFETY: the range is a private anonymous mapping we own; populating
    // it writes nothing visible (pages stay zero).
    if unsafe { libc::madvise(addr as *mut c_void, len, MADV_POPULATE_WRITE) } == 0 {
        return Ok(());
    }
    let errno = last_errno();
    if errno != libc::EINVAL {
        return Err(errno);
    }
    for off in (0..len).step_by(page) {
        // SAFETY: off < len, inside our writable mapping, which no Rust
        // reference views yet; writing zero leaves the contents unchanged.
        unsafe { ((addr + off) as *mut u8).write_volatile(0) };
    }
    Ok(())
}

/// Pins the calling thread to `cpus`; false when the kernel refuses (e.g.
/// the CPUs are outside this cgroup's cpuset), which only costs locality.
fn pin_current_thread(cpus: &[usize]) -> bool {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    for &cpu in cpus.iter().filter(|&&c| c < max) {
        // SAFETY: cpu < the set's bit count, checked by the filter.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: pid 0 is the calling thread; `set` is a valid cpu_set_t.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

pub(crate) fn base_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(v).unwrap_or(4096).max(4096)
}

/// The default huge page size (`Hugepagesize:` in /proc/meminfo), 2 MiB if unknown.
pub fn huge_page_size() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<usize>().ok())
        })
        .map_or(2 << 20, |kb| kb * 1024)
}

/// Free reserved huge pages of `size` bytes (0 when unknown).
pub fn free_huge_pages(size: usize) -> usize {
    let path = format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages",
        size / 1024
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn round_up(bytes: usize, page: usize) -> Result<usize, AllocError> {
    bytes
        .checked_next_multiple_of(page)
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or(AllocError::TooLarge {
            bytes,
            page_size: page,
        })
}

fn memlock_limit() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return "unknown".into();
    }
    if lim.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} bytes", lim.rlim_cur)
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

#[cfg(test)]
#[path = "region_tests.rs"]
mod tests;
