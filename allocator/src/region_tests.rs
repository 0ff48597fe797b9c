//! Region tests on this (one-node) host; two-node placement is in
//! `tests/numa_vm.rs`.

use super::*;
use crate::numa::NodeMask;

fn node0() -> MemPolicy {
    MemPolicy::Bind(NodeMask::single(0).unwrap())
}

#[test]
fn zero_bytes_is_refused() {
    assert_eq!(
        Region::new(RegionOptions::new(0, MemPolicy::Local)).unwrap_err(),
        AllocError::ZeroSize
    );
    let e = Region::new(RegionOptions::new(usize::MAX - 10, MemPolicy::Local)).unwrap_err();
    assert!(matches!(e, AllocError::TooLarge { .. }), "{e}");
}

#[test]
fn every_page_is_prefaulted_and_counted_on_node_0() {
    let bytes = (1 << 20) + 1;
    let r = Region::new(RegionOptions::new(bytes, node0())).unwrap();
    assert_eq!(r.len(), (1 << 20) + 4096);
    assert_eq!(r.backing(), Backing::BasePages);
    let p = r.placement().unwrap();
    assert_eq!(p.total_pages, 257);
    assert_eq!(p.not_present, 0, "prefault must write every page");
    assert_eq!(p.pages_on(0), 257);
    assert_eq!(
        r.prefaulted_on(),
        Some(0),
        "node 0 has CPUs, so prefault ran there"
    );
    assert_eq!(numa::policy_of_address(r.as_ptr()).unwrap(), node0());
    assert!(r.as_slice().iter().all(|&b| b == 0));
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        json.contains(r#""nodes":[{"node":0,"pages":257}]"#),
        "{json}"
    );
}

#[test]
fn an_out_of_range_node_fails_with_the_kernels_errno() {
    let far = MemPolicy::Bind(NodeMask::single(900).unwrap());
    let e = Region::new(RegionOptions::new(4096, far)).unwrap_err();
    match &e {
        AllocError::Policy { source, .. } => assert_eq!(source.errno(), Some(libc::EINVAL)),
        other => panic!("expected a policy error, got {other}"),
    }
    assert!(e.to_string().contains("cpuset.mems"), "{e}");
}

#[test]
fn transparent_huge_pages_are_asked_for() {
    let r = Region::new(RegionOptions {
        bytes: 4 << 20,
        policy: MemPolicy::Local,
        huge_pages: HugePages::Transparent,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(r.backing(), Backing::TransparentHuge);
    assert_eq!(r.placement().unwrap().not_present, 0);
}

#[test]
fn explicit_huge_pages_or_a_clear_fallback() {
    let huge = huge_page_size();
    let mut o = RegionOptions::new(huge, node0());
    o.huge_pages = HugePages::Explicit;
    o.huge_fallback = false;
    match Region::new(o.clone()) {
        Ok(r) => {
            assert_eq!(r.backing(), Backing::ExplicitHuge);
            assert_eq!(r.page_size(), huge);
            assert_eq!(r.placement().unwrap().pages_on(0), 1);
        }
        Err(AllocError::NoHugePages { needed, free, .. }) => {
            assert_eq!(needed, 1);
            assert_eq!(free, free_huge_pages(huge));
            o.huge_fallback = true;
            let r = Region::new(o).unwrap();
            assert_eq!(r.backing(), Backing::TransparentHuge);
            assert!(r.note().unwrap().contains("nr_hugepages"), "{:?}", r.note());
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

#[test]
fn locked_region_is_locked() {
    let mut o = RegionOptions::new(64 << 10, MemPolicy::Local);
    o.lock = true;
    match Region::new(o) {
        Ok(r) => assert!(r.is_locked()),
        // Without CAP_IPC_LOCK a 64 KiB lock fits any sane limit, but report it.
        Err(e) => assert!(e.to_string().contains("RLIMIT_MEMLOCK"), "{e}"),
    }
}

/// Runs `mlock_child` in a fresh process where mlock must hit the limit.
#[test]
fn mlock_beyond_rlimit_names_the_limit() {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "region::tests::mlock_child",
            "--ignored",
            "--nocapture",
        ])
        .env("PINNED_MLOCK_CHILD", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 passed"), "{text}");
}

#[test]
#[ignore = "run by mlock_beyond_rlimit_names_the_limit in its own process"]
fn mlock_child() {
    assert_eq!(std::env::var("PINNED_MLOCK_CHILD").as_deref(), Ok("1"));
    drop_ipc_lock_capability();
    let lim = libc::rlimit {
        rlim_cur: 64 << 10,
        rlim_max: 64 << 10,
    };
    // SAFETY: `lim` is a valid rlimit; this process is a throw-away child.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) }, 0);
    let mut o = RegionOptions::new(1 << 20, MemPolicy::Local);
    o.lock = true;
    let e = Region::new(o).unwrap_err();
    assert!(matches!(e, AllocError::Lock { .. }), "{e}");
    assert!(
        e.to_string().contains("RLIMIT_MEMLOCK is 65536 bytes"),
        "{e}"
    );
}

/// Clears CAP_IPC_LOCK (bit 14) from the effective set, so root hits the
/// rlimit like anyone else. capget/capset through the raw syscalls.
fn drop_ipc_lock_capability() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_IPC_LOCK: u32 = 14;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: header and two data words, as version 3 requires.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    assert_eq!(rc, 0);
    data[0].effective &= !(1 << CAP_IPC_LOCK);
    // SAFETY: as above; dropping a capability is always permitted.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    assert_eq!(rc, 0);
}
