//! Live-kernel tests of the syscall wrappers. They need one node (node 0)
//! only; two-node placement is proven in `tests/numa_vm.rs`.

use super::*;

/// One private anonymous page, unmapped on drop.
struct Page(*mut u8);

impl Page {
    fn new() -> Self {
        // SAFETY: anonymous mapping, no hint; the result is checked.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Self(p.cast())
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: we mapped this page in `new` and nothing else refers to it.
        unsafe { libc::munmap(self.0.cast(), 4096) };
    }
}

#[test]
fn kernel_reads_maxnode_minus_one_bits() {
    let page = Page::new();
    let node0 = NodeMask::single(0).unwrap();
    // maxnode = 1: the kernel reads 0 bits, sees an empty set, refuses BIND.
    let e = raw_mbind(page.0, 4096, MPOL_BIND, &node0, 1, MbindFlags::NONE).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    // maxnode = 2: it reads bit 0 and binds.
    raw_mbind(page.0, 4096, MPOL_BIND, &node0, 2, MbindFlags::NONE).unwrap();
    // What `mbind` passes for the whole mask is accepted too.
    mbind(page.0, 4096, &MemPolicy::Bind(node0), MbindFlags::NONE).unwrap();
    assert_eq!(policy_of_address(page.0).unwrap(), MemPolicy::Bind(node0));
}

#[test]
fn kernel_writes_exactly_the_words_maxnode_covers() {
    #[repr(C)]
    struct Guarded {
        mask: NodeMask,
        canary: [u64; 4],
    }
    const PATTERN: u64 = 0xA5A5_A5A5_A5A5_A5A5;
    let fill = |g: &mut Guarded| {
        for w in 0..NodeMask::BITS {
            if PATTERN & (1 << (w % 64)) != 0 {
                g.mask.insert(w).unwrap();
            }
        }
    };
    let mut g = Guarded {
        mask: NodeMask::new(),
        canary: [PATTERN; 4],
    };
    fill(&mut g);
    let mut mode = 0;
    let maxnode = NodeMask::kernel_maxnode();
    raw_get_mempolicy(
        &mut mode,
        &mut g.mask,
        maxnode,
        ptr::null(),
        MPOL_F_MEMS_ALLOWED,
    )
    .unwrap();
    assert_eq!(g.canary, [PATTERN; 4], "kernel wrote past the mask");
    assert!(g.mask.contains(0));
    assert_eq!(g.mask, allowed_nodes().unwrap(), "every word was rewritten");

    // maxnode = 65 covers one word: words 1.. keep the pattern.
    let mut g = Guarded {
        mask: NodeMask::new(),
        canary: [PATTERN; 4],
    };
    fill(&mut g);
    raw_get_mempolicy(&mut mode, &mut g.mask, 65, ptr::null(), MPOL_F_MEMS_ALLOWED).unwrap();
    assert!(g.mask.contains(0));
    assert_eq!(g.mask.iter().filter(|&n| n >= 64).count(), 15 * 32);
}

#[test]
fn thread_policy_round_trips() {
    // A fresh thread, so the policy does not leak into other tests.
    std::thread::spawn(|| {
        let node0 = NodeMask::single(0).unwrap();
        for policy in [
            MemPolicy::Bind(node0),
            MemPolicy::Preferred(0),
            MemPolicy::Interleave(node0),
            MemPolicy::Local,
            MemPolicy::Default,
        ] {
            set_mempolicy(&policy).unwrap();
            assert_eq!(current_policy().unwrap(), policy);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn node_outside_cpuset_gets_einval_with_advice() {
    let page = Page::new();
    let far = MemPolicy::Bind(NodeMask::single(1000).unwrap());
    let e = mbind(page.0, 4096, &far, MbindFlags::NONE).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
    let msg = e.to_string();
    assert!(
        msg.contains("cpuset.mems") && msg.contains("EINVAL"),
        "{msg}"
    );
    let e = set_mempolicy(&MemPolicy::Preferred(1000)).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL));
}

#[test]
fn empty_sets_and_huge_ids_are_refused_before_the_kernel() {
    let e = MemPolicy::Interleave(NodeMask::new()).to_raw().unwrap_err();
    assert_eq!(
        e,
        NumaError::EmptyNodeSet {
            policy: "interleave"
        }
    );
    assert!(matches!(
        MemPolicy::Preferred(5000).to_raw(),
        Err(NumaError::NodeOutOfRange(_))
    ));
}

#[test]
fn untouched_and_read_only_pages_are_on_no_node() {
    let page = Page::new();
    assert_eq!(node_of_address(page.0).unwrap(), None);
    // SAFETY: the page is mapped readable.
    let v = unsafe { page.0.read_volatile() };
    assert_eq!(v, 0);
    assert_eq!(
        node_of_address(page.0).unwrap(),
        None,
        "a read maps the zero page"
    );
    // SAFETY: the page is mapped writable.
    unsafe { page.0.write_volatile(1) };
    assert_eq!(node_of_address(page.0).unwrap(), Some(0));
}

#[test]
fn policies_parse_and_print() {
    for text in [
        "default",
        "local",
        "bind:0-1",
        "preferred:1",
        "interleave:0,2",
    ] {
        let p: MemPolicy = text.parse().unwrap();
        assert_eq!(p.to_string(), text);
    }
    assert!(matches!(
        "bind:".parse::<MemPolicy>(),
        Err(NumaError::EmptyNodeSet { .. })
    ));
    for bad in ["nowhere", "preferred:x", "bind:1-0", "local:3"] {
        assert!(
            matches!(bad.parse::<MemPolicy>(), Err(NumaError::Parse { .. })),
            "{bad}"
        );
    }
}
