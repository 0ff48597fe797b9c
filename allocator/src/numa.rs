//! The four NUMA memory-policy syscalls, each wrapped once and typed.
//!
//! rustix and nix do not wrap `mbind(2)`, `set_mempolicy(2)`,
//! `get_mempolicy(2)` or `move_pages(2)`; glibc has no wrappers either (they
//! live in libnuma). So they go through `libc::syscall` here, with node masks
//! from [`NodeMask`] (which owns the `maxnode` convention) and errors that
//! carry the errno and say what to do about it.
//!
//! Public API used by the rest of pinned:
//! - [`MemPolicy`] `{ Default, Local, Bind(NodeMask), Preferred(node), Interleave(NodeMask) }`
//!   and [`MbindFlags`] (`STRICT`, `MOVE`);
//! - [`mbind`] (a range), [`set_mempolicy`] / [`current_policy`] (the calling thread),
//!   [`policy_of_address`], [`allowed_nodes`] (this cgroup's `cpuset.mems`);
//! - page queries through `move_pages`: [`node_of_address`], [`query_pages`],
//!   and [`move_pages_to`] to migrate.

use std::ffi::c_void;
use std::fmt;
use std::ptr;
use std::str::FromStr;

use crate::cpulist::IdList;
pub use crate::nodemask::{NodeMask, NodeOutOfRange};

// <linux/mempolicy.h>
const MPOL_DEFAULT: libc::c_int = 0;
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_BIND: libc::c_int = 2;
const MPOL_INTERLEAVE: libc::c_int = 3;
const MPOL_LOCAL: libc::c_int = 4;
/// Mode flags (`MPOL_F_STATIC_NODES`, `MPOL_F_RELATIVE_NODES`,
/// `MPOL_F_NUMA_BALANCING`) share the mode word; they sit in bits 13..16.
const MPOL_MODE_FLAGS: libc::c_int = (1 << 15) | (1 << 14) | (1 << 13);
const MPOL_F_ADDR: libc::c_ulong = 1 << 1;
const MPOL_F_MEMS_ALLOWED: libc::c_ulong = 1 << 2;
const MPOL_MF_STRICT: libc::c_uint = 1 << 0;
const MPOL_MF_MOVE: libc::c_uint = 1 << 1;

/// Where a range's (or a thread's) pages may come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum MemPolicy {
    /// Fall back to the thread's policy, or the system default (local).
    Default,
    /// The node of the CPU that first touches the page.
    Local,
    /// Only these nodes; allocation fails (or OOMs) rather than go elsewhere.
    Bind(NodeMask),
    /// This node first, any other node when it is full.
    Preferred(usize),
    /// Round-robin over these nodes, page by page (per huge page under THP).
    Interleave(NodeMask),
}

/// `mbind` flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MbindFlags(libc::c_uint);

impl MbindFlags {
    pub const NONE: Self = Self(0);
    /// Fail with EIO when pages already in the range do not follow the policy.
    pub const STRICT: Self = Self(MPOL_MF_STRICT);
    /// Migrate pages already in the range (ours only; `MOVE_ALL` is not offered).
    pub const MOVE: Self = Self(MPOL_MF_MOVE);

    pub fn bits(self) -> libc::c_uint {
        self.0
    }
}

impl std::ops::BitOr for MbindFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A failed NUMA call or a policy the kernel cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumaError {
    #[error("{call} failed with {name} (errno {errno}): {advice}")]
    Syscall {
        call: &'static str,
        errno: i32,
        name: &'static str,
        advice: String,
    },
    #[error(transparent)]
    NodeOutOfRange(#[from] NodeOutOfRange),
    #[error("a {policy} policy needs at least one node; give a list such as 0 or 0-1")]
    EmptyNodeSet { policy: &'static str },
    #[error(
        "the kernel reports policy mode {mode}, which pinned does not model \
         (5 = preferred-many, 6 = weighted-interleave); reset it, e.g. run without numactl"
    )]
    UnknownMode { mode: i32 },
    #[error(
        "policy '{text}' is not one of default, local, bind:LIST, preferred:NODE, \
         interleave:LIST (LIST like 0-1,3)"
    )]
    Parse { text: String },
}

impl NumaError {
    /// The errno of a failed syscall.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Syscall { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl MemPolicy {
    /// Mode and node mask as the kernel takes them. An empty mask is passed
    /// as a null pointer with `maxnode = 0`.
    fn to_raw(self) -> Result<(libc::c_int, NodeMask), NumaError> {
        Ok(match self {
            Self::Default => (MPOL_DEFAULT, NodeMask::new()),
            Self::Local => (MPOL_LOCAL, NodeMask::new()),
            Self::Preferred(node) => (MPOL_PREFERRED, NodeMask::single(node)?),
            Self::Bind(m) | Self::Interleave(m) if m.is_empty() => {
                return Err(NumaError::EmptyNodeSet {
                    policy: self.name(),
                })
            }
            Self::Bind(m) => (MPOL_BIND, m),
            Self::Interleave(m) => (MPOL_INTERLEAVE, m),
        })
    }

    fn from_raw(mode: libc::c_int, mask: NodeMask) -> Result<Self, NumaError> {
        Ok(match mode & !MPOL_MODE_FLAGS {
            MPOL_DEFAULT => Self::Default,
            MPOL_LOCAL => Self::Local,
            // Kernels before 3.8 report "local" as preferred with no node.
            MPOL_PREFERRED => match mask.first() {
                Some(node) => Self::Preferred(node),
                None => Self::Local,
            },
            MPOL_BIND => Self::Bind(mask),
            MPOL_INTERLEAVE => Self::Interleave(mask),
            other => return Err(NumaError::UnknownMode { mode: other }),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Local => "local",
            Self::Bind(_) => "bind",
            Self::Preferred(_) => "preferred",
            Self::Interleave(_) => "interleave",
        }
    }

    /// Nodes the policy names (empty for `Default` and `Local`).
    pub fn nodes(&self) -> NodeMask {
        match self {
            Self::Default | Self::Local => NodeMask::new(),
            Self::Bind(m) | Self::Interleave(m) => *m,
            Self::Preferred(n) => NodeMask::single(*n).unwrap_or_default(),
        }
    }

    /// `Bind` to the nodes of a kernel-format list (not empty).
    pub fn bind(nodes: &IdList) -> Result<Self, NumaError> {
        let p = Self::Bind(NodeMask::try_from(nodes)?);
        p.to_raw().map(|_| p)
    }

    /// `Interleave` over the nodes of a kernel-format list (not empty).
    pub fn interleave(nodes: &IdList) -> Result<Self, NumaError> {
        let p = Self::Interleave(NodeMask::try_from(nodes)?);
        p.to_raw().map(|_| p)
    }
}

/// `default`, `local`, `bind:0-1`, `preferred:1`, `interleave:0,1`.
impl fmt::Display for MemPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default | Self::Local => f.write_str(self.name()),
            Self::Bind(m) | Self::Interleave(m) => write!(f, "{}:{m}", self.name()),
            Self::Preferred(n) => write!(f, "preferred:{n}"),
        }
    }
}

impl FromStr for MemPolicy {
    type Err = NumaError;
    fn from_str(text: &str) -> Result<Self, NumaError> {
        let bad = || NumaError::Parse {
            text: text.to_owned(),
        };
        let (kind, arg) = text.trim().split_once(':').unwrap_or((text.trim(), ""));
        let list = || IdList::parse(arg).map_err(|_| bad());
        match kind {
            "default" if arg.is_empty() => Ok(Self::Default),
            "local" if arg.is_empty() => Ok(Self::Local),
            "bind" => Self::bind(&list()?),
            "interleave" => Self::interleave(&list()?),
            "preferred" => Ok(Self::Preferred(arg.trim().parse().map_err(|_| bad())?)),
            _ => Err(bad()),
        }
    }
}

/// Sets the memory policy of `len` bytes at `addr` (page aligned).
///
/// Safe: the policy decides only where pages are placed; the kernel checks
/// the range (EFAULT/ENOMEM when unmapped) and never changes contents,
/// even when `MOVE` migrates. See mbind(2).
pub fn mbind(
    addr: *mut u8,
    len: usize,
    policy: &MemPolicy,
    flags: MbindFlags,
) -> Result<(), NumaError> {
    let (mode, mask) = policy.to_raw()?;
    let maxnode = if mask.is_empty() {
        0
    } else {
        NodeMask::kernel_maxnode()
    };
    raw_mbind(addr, len, mode, &mask, maxnode, flags)
}

/// mbind with an explicit `maxnode` (0 passes no mask), so tests can pin the
/// convention; everything else goes through [`mbind`].
pub(crate) fn raw_mbind(
    addr: *mut u8,
    len: usize,
    mode: libc::c_int,
    mask: &NodeMask,
    maxnode: libc::c_ulong,
    flags: MbindFlags,
) -> Result<(), NumaError> {
    if NodeMask::kernel_write_bytes(maxnode.max(1)) > std::mem::size_of::<NodeMask>() {
        return Err(syscall_error("mbind", libc::EINVAL));
    }
    let mask_ptr = if maxnode == 0 {
        ptr::null()
    } else {
        mask.as_ptr()
    };
    // SAFETY: the mask outlives the call and holds at least `maxnode - 1`
    // bits (checked above); the kernel validates the range and only reads
    // the mask.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr,
            len,
            mode,
            mask_ptr,
            maxnode,
            flags.bits(),
        )
    };
    check("mbind", rc)
}

/// Sets the calling thread's policy for its future allocations
/// (set_mempolicy(2)).
pub fn set_mempolicy(policy: &MemPolicy) -> Result<(), NumaError> {
    let (mode, mask) = policy.to_raw()?;
    let (mask_ptr, maxnode) = mask_arg(&mask);
    // SAFETY: the mask outlives the call and holds `maxnode - 1` bits.
    let rc = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, mask_ptr, maxnode) };
    check("set_mempolicy", rc)
}

/// The calling thread's policy (get_mempolicy(2) with no flags).
pub fn current_policy() -> Result<MemPolicy, NumaError> {
    let (mode, mask) = get_mempolicy(ptr::null(), 0)?;
    MemPolicy::from_raw(mode, mask)
}

/// The policy governing the page at `addr` (`MPOL_F_ADDR`).
pub fn policy_of_address(addr: *const u8) -> Result<MemPolicy, NumaError> {
    let (mode, mask) = get_mempolicy(addr, MPOL_F_ADDR)?;
    MemPolicy::from_raw(mode, mask)
}

/// Nodes this thread may allocate on: its cgroup's `cpuset.mems`
/// (`MPOL_F_MEMS_ALLOWED`).
pub fn allowed_nodes() -> Result<NodeMask, NumaError> {
    let (_, mask) = get_mempolicy(ptr::null(), MPOL_F_MEMS_ALLOWED)?;
    Ok(mask)
}

fn get_mempolicy(
    addr: *const u8,
    flags: libc::c_ulong,
) -> Result<(libc::c_int, NodeMask), NumaError> {
    let mut mode: libc::c_int = 0;
    let mut mask = NodeMask::new();
    raw_get_mempolicy(
        &mut mode,
        &mut mask,
        NodeMask::kernel_maxnode(),
        addr,
        flags,
    )?;
    Ok((mode, mask))
}

/// get_mempolicy with an explicit `maxnode`, so tests can pin the
/// convention; everything else goes through [`get_mempolicy`].
pub(crate) fn raw_get_mempolicy(
    mode: &mut libc::c_int,
    mask: &mut NodeMask,
    maxnode: libc::c_ulong,
    addr: *const u8,
    flags: libc::c_ulong,
) -> Result<(), NumaError> {
    if NodeMask::kernel_write_bytes(maxnode.max(1)) > std::mem::size_of::<NodeMask>() {
        return Err(syscall_error("get_mempolicy", libc::EINVAL));
    }
    // SAFETY: `mode` and `mask` are valid for writes; the kernel writes at
    // most `kernel_write_bytes(maxnode)` bytes of mask, checked above; with
    // MPOL_F_ADDR it only looks `addr` up, never writes through it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            mode as *mut libc::c_int,
            mask.as_mut_ptr(),
            maxnode,
            addr,
            flags,
        )
    };
    check("get_mempolicy", rc)
}

/// The node holding the page at `addr`, or `None` when no page is there yet
/// (never touched, or only read, which maps the shared zero page).
/// Uses `move_pages` in query mode, which does not fault the page in.
pub fn node_of_address(addr: *const u8) -> Result<Option<usize>, NumaError> {
    let mut status = [0i32];
    query_pages(&[addr.cast()], &mut status)?;
    Ok(usize::try_from(status[0]).ok())
}

/// Fills `status[i]` with the node of page `pages[i]`, or a negative errno
/// (`-ENOENT`: not present, `-EFAULT`: not mapped). move_pages(2), `nodes = NULL`.
pub fn query_pages(pages: &[*const c_void], status: &mut [i32]) -> Result<(), NumaError> {
    move_pages_raw(pages, None, status)
}

/// Migrates each page to `node`; `status` gets the node reached or `-errno`.
pub fn move_pages_to(
    pages: &[*const c_void],
    node: usize,
    status: &mut [i32],
) -> Result<(), NumaError> {
    let node = i32::try_from(node).map_err(|_| NodeOutOfRange {
        node,
        max: NodeMask::BITS - 1,
    })?;
    NodeMask::single(node as usize)?;
    // A small fixed batch keeps this allocation-free.
    const BATCH: usize = 256;
    let targets = [node; BATCH];
    for (p, s) in pages.chunks(BATCH).zip(status.chunks_mut(BATCH)) {
        move_pages_raw(p, Some(&targets[..p.len()]), s)?;
    }
    Ok(())
}

fn move_pages_raw(
    pages: &[*const c_void],
    nodes: Option<&[i32]>,
    status: &mut [i32],
) -> Result<(), NumaError> {
    let count = pages.len().min(status.len());
    let nodes_ptr = nodes.map_or(ptr::null(), |n| n.as_ptr());
    // SAFETY: `pages`, `nodes` and `status` hold at least `count` entries
    // (nodes has pages.len()); pid 0 is this process. Migration keeps
    // contents, so no memory we hand out changes under us.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0 as libc::c_int,
            count as libc::c_ulong,
            pages.as_ptr(),
            nodes_ptr,
            status.as_mut_ptr(),
            0 as libc::c_int,
        )
    };
    // A positive return is the number of pages that could not be moved;
    // their status entries already say why.
    if rc >= 0 {
        Ok(())
    } else {
        check("move_pages", rc)
    }
}

fn mask_arg(mask: &NodeMask) -> (*const libc::c_ulong, libc::c_ulong) {
    if mask.is_empty() {
        (ptr::null(), 0)
    } else {
        (mask.as_ptr(), NodeMask::kernel_maxnode())
    }
}

fn check(call: &'static str, rc: libc::c_long) -> Result<(), NumaError> {
    if rc >= 0 {
        return Ok(());
    }
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    Err(syscall_error(call, errno))
}

#[cold]
pub(crate) fn syscall_error(call: &'static str, errno: i32) -> NumaError {
    let allowed = || {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines().find_map(|l| {
                    l.strip_prefix("Mems_allowed_list:")
                        .map(|v| v.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let (name, advice) = match errno {
        libc::EINVAL => (
            "EINVAL",
            format!(
                "a node is not allowed here: this cgroup's cpuset.mems allows nodes {} \
                 (Mems_allowed_list in /proc/self/status), and a node without memory cannot \
                 be bound; also check that the range is page aligned",
                allowed()
            ),
        ),
        libc::EPERM => (
            "EPERM",
            "not permitted: container runtimes' default seccomp profile blocks the NUMA \
             syscalls unless the container has CAP_SYS_NICE (docker run --cap-add SYS_NICE)"
                .to_owned(),
        ),
        libc::ENOSYS => (
            "ENOSYS",
            "this kernel has no NUMA support (CONFIG_NUMA off): use MemPolicy::Default".to_owned(),
        ),
        libc::EIO => (
            "EIO",
            "STRICT: pages already in the range are on other nodes and were not moved; \
             add MbindFlags::MOVE or bind before the first touch"
                .to_owned(),
        ),
        libc::ENOMEM => (
            "ENOMEM",
            "the kernel is out of memory for the policy or the bound nodes are full; \
             free memory there or choose Preferred/Interleave"
                .to_owned(),
        ),
        libc::EFAULT => (
            "EFAULT",
            "part of the range is not mapped by this process".to_owned(),
        ),
        libc::ESRCH => ("ESRCH", "no such process".to_owned()),
        _ => (
            "an unexpected errno",
            "see the syscall's man page".to_owned(),
        ),
    };
    NumaError::Syscall {
        call,
        errno,
        name,
        advice,
    }
}

#[cfg(test)]
#[path = "numa_tests.rs"]
mod tests;
