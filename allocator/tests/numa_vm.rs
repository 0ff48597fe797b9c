//! Real placement on two NUMA nodes. On a one-node host these tests skip;
//! inside `run-in-numa-vm` (`IN_NUMA_VM=1`, run by `.ci/numa-vm-tests.sh`)
//! they insist on two memory nodes and check every page.
//!
//! The tests share node memory, so they run one at a time (a lock), and the
//! fill test leaves a margin so no mempolicy OOM can hit the test process.

use std::sync::{Mutex, MutexGuard};

use pinned_allocator::numa::{self, MbindFlags};
use pinned_allocator::{
    replicate, Arena, HugePages, MemPolicy, NodeMask, Pool, Region, RegionOptions, Topology,
};

const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

/// The machine's topology when it has two memory nodes; `None` (skip) on a
/// one-node host; a failure inside the VM if the nodes are missing.
fn two_nodes() -> Option<(MutexGuard<'static, ()>, Topology)> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let topo = Topology::detect().expect("reading /sys/devices/system/node");
    let nodes = topo.memory_nodes();
    let in_vm = std::env::var("IN_NUMA_VM").is_ok_and(|v| v == "1");
    if nodes.as_slice().starts_with(&[0, 1]) {
        return Some((guard, topo));
    }
    assert!(
        !in_vm,
        "inside run-in-numa-vm but the memory nodes are only {nodes}"
    );
    eprintln!("skipped: memory nodes {nodes}; run .ci/numa-vm-tests.sh for two nodes");
    None
}

fn bind(node: usize) -> MemPolicy {
    MemPolicy::Bind(NodeMask::single(node).unwrap())
}

fn region(bytes: usize, policy: MemPolicy, huge: HugePages) -> Region {
    let mut o = RegionOptions::new(bytes, policy);
    o.huge_pages = huge;
    Region::new(o).unwrap_or_else(|e| panic!("{bytes} bytes under {policy}: {e}"))
}

#[test]
fn region_bound_to_node_1_has_every_page_there() {
    let Some(_two) = two_nodes() else { return };
    for huge in [HugePages::Off, HugePages::Transparent] {
        let r = region(32 * MIB, bind(1), huge);
        let p = r.placement().unwrap();
        println!("bind:1 {huge:?}: {}", serde_json::to_string(&p).unwrap());
        assert_eq!(p.not_present, 0);
        assert_eq!(p.pages_on(1), p.total_pages, "{p:?}");
        assert_eq!(r.prefaulted_on(), Some(1), "prefault ran on node 1's CPU");
        assert_eq!(numa::policy_of_address(r.as_ptr()).unwrap(), bind(1));
    }
}

#[test]
fn arena_and_pool_memory_sits_on_their_node() {
    let Some(_two) = two_nodes() else { return };
    let arena = Arena::new(4 * MIB, bind(1)).unwrap();
    let xs = arena.alloc::<u64>(100_000, 1).unwrap();
    for x in xs.iter().step_by(512) {
        let node = numa::node_of_address((x as *const u64).cast()).unwrap();
        assert_eq!(node, Some(1));
    }
    let pool = Pool::new(4096, 64, 64, bind(0)).unwrap();
    let p = pool.region().placement().unwrap();
    assert_eq!(p.pages_on(0), p.total_pages, "{p:?}");
}

#[test]
fn interleave_spreads_pages_evenly() {
    let Some(_two) = two_nodes() else { return };
    let both = MemPolicy::Interleave(NodeMask::from_nodes([0, 1]).unwrap());
    let r = region(32 * MIB, both, HugePages::Off);
    let p = r.placement().unwrap();
    println!("interleave:0-1: {}", serde_json::to_string(&p).unwrap());
    let (n0, n1) = (p.pages_on(0), p.pages_on(1));
    assert_eq!(n0 + n1, p.total_pages);
    assert!(n0.abs_diff(n1) <= 2, "uneven interleave: {n0} vs {n1}");
}

#[test]
fn preferred_falls_back_when_its_node_is_full() {
    let Some((_two, topo)) = two_nodes() else {
        return;
    };
    let free1 = topo.node(1).unwrap().mem_free_bytes.unwrap() as usize;
    // Fill node 1 to within `left` bytes, so a Preferred(1) region bigger
    // than that must spill to node 0.
    let left = 96 * MIB;
    assert!(
        free1 > left + 64 * MIB,
        "node 1 has only {free1} bytes free"
    );
    let fill = region(free1 - left, bind(1), HugePages::Transparent);
    let fp = fill.placement().unwrap();
    assert_eq!(fp.pages_on(1), fp.total_pages);
    let want = 160 * MIB;
    let r = region(want, MemPolicy::Preferred(1), HugePages::Off);
    let p = r.placement().unwrap();
    println!(
        "preferred:1 with node 1 nearly full: {}",
        serde_json::to_string(&p).unwrap()
    );
    assert_eq!(p.not_present, 0);
    assert_eq!(p.pages_on(0) + p.pages_on(1), p.total_pages);
    assert!(
        p.pages_on(0) as usize * 4096 >= want - left,
        "expected at least {} MiB on node 0: {p:?}",
        (want - left) / MIB
    );
    drop(fill);
    // With room again, Preferred(1) stays on node 1.
    let r = region(16 * MIB, MemPolicy::Preferred(1), HugePages::Off);
    let p = r.placement().unwrap();
    assert_eq!(p.pages_on(1), p.total_pages, "{p:?}");
}

#[test]
fn replication_puts_one_copy_on_each_node() {
    let Some(_two) = two_nodes() else { return };
    let weights: Vec<u8> = (0..3 * MIB as u32).map(|i| (i % 251) as u8).collect();
    let copies = replicate(&weights, &NodeMask::from_nodes([0, 1]).unwrap()).unwrap();
    for (node, p) in copies.placement().unwrap() {
        println!(
            "copy on node {node}: {}",
            serde_json::to_string(&p).unwrap()
        );
        assert_eq!(p.pages_on(node), p.total_pages, "copy for node {node}");
    }
    assert_eq!(copies.for_node(0), &weights[..]);
    assert_eq!(copies.for_node(1), &weights[..]);
    assert_ne!(copies.for_node(0).as_ptr(), copies.for_node(1).as_ptr());
}

#[test]
fn mbind_move_migrates_and_thread_policy_reads_back() {
    let Some(_two) = two_nodes() else { return };
    let r = region(8 * MIB, bind(0), HugePages::Off);
    assert_eq!(r.placement().unwrap().pages_on(0), 2048);
    numa::mbind(
        r.as_ptr(),
        r.len(),
        &bind(1),
        MbindFlags::MOVE | MbindFlags::STRICT,
    )
    .unwrap();
    assert_eq!(r.placement().unwrap().pages_on(1), 2048);
    std::thread::spawn(|| {
        numa::set_mempolicy(&bind(1)).unwrap();
        assert_eq!(numa::current_policy().unwrap(), bind(1));
        assert_eq!(numa::allowed_nodes().unwrap().to_string(), "0-1");
    })
    .join()
    .unwrap();
}
