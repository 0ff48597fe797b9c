//! `pinned info` on fixture sysfs/procfs trees of machines this one is not,
//! and on the live machine through the binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use pinned::info::InfoReport;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/sysfs")
        .join(name)
}

fn ids(list: &pinned::allocator::IdList) -> Vec<usize> {
    list.as_slice().to_vec()
}

#[test]
fn two_node_machine() {
    let r = InfoReport::collect(&fixture("two-node")).unwrap();
    let t = &r.topology;
    assert!(!t.synthesized);
    assert_eq!(t.nodes.len(), 2);
    assert_eq!(ids(&t.nodes[0].cpus), [0, 1]);
    assert_eq!(ids(&t.nodes[1].cpus), [2, 3]);
    assert_eq!(t.nodes[0].distances, [10, 21]);
    assert_eq!(t.nodes[1].distances, [21, 10]);
    assert_eq!(t.nodes[1].mem_total_bytes, Some(8 << 30));
    assert_eq!(t.nodes[1].mem_free_bytes, Some(4 << 30));
    assert_eq!(t.node_of_cpu(3), Some(1));
    assert_eq!(ids(&r.process.allowed_cpus), [0, 1, 2, 3]);
    assert!(r.process.excluded_cpus.is_empty());
    assert_eq!(ids(&r.process.allowed_mems), [0, 1]);
    assert_eq!(r.memory.thp_enabled.as_deref(), Some("always"));
    assert_eq!(r.memory.thp_defrag.as_deref(), Some("madvise"));
    assert_eq!(r.memory.hugepages.len(), 1);
    assert_eq!(r.memory.hugepages[0].size_bytes, 2 << 20);
    assert_eq!(
        (r.memory.hugepages[0].total, r.memory.hugepages[0].free),
        (16, 8)
    );
    assert_eq!(r.memory.memlock_limit_bytes, Some(65536));
    assert_eq!(r.perf_event_paranoid, Some(1));
    assert_eq!(r.kernel.as_deref(), Some("6.1.0-fixture"));
    let smt: Vec<Vec<usize>> = r.cpu.smt_siblings.iter().map(ids).collect();
    assert_eq!(smt, [vec![0, 2], vec![1, 3]]);
}

#[test]
fn four_nodes_with_a_memoryless_and_an_offline_node() {
    let r = InfoReport::collect(&fixture("four-node-memoryless")).unwrap();
    let t = &r.topology;
    assert_eq!(t.nodes.len(), 5, "possible nodes 0-4, node 4 offline");
    let memoryless: Vec<usize> = t
        .nodes
        .iter()
        .filter(|n| n.is_memoryless())
        .map(|n| n.id)
        .collect();
    assert_eq!(memoryless, [2]);
    assert_eq!(ids(&t.nodes[2].cpus), [4, 5]);
    assert!(!t.nodes[4].online);
    assert!(t.nodes[4].cpus.is_empty());
    assert_eq!(ids(&t.memory_nodes()), [0, 1, 3]);
    // Distances cover every listed node; the offline node's are unknown (0).
    assert_eq!(t.nodes[0].distances, [10, 12, 20, 20, 0]);
    assert_eq!(t.nodes[3].distances, [20, 20, 12, 10, 0]);
    assert_eq!(t.max_node(), 4);
    assert_eq!(ids(&r.process.allowed_mems), [0, 1, 3]);
}

#[test]
fn cpuset_restricted_process() {
    let r = InfoReport::collect(&fixture("cpuset-restricted")).unwrap();
    assert_eq!(ids(&r.topology.online_cpus), (0..8).collect::<Vec<_>>());
    assert_eq!(ids(&r.process.allowed_cpus), [2, 3, 6]);
    assert_eq!(ids(&r.process.excluded_cpus), [0, 1, 4, 5, 7]);
    assert_eq!(ids(&r.process.allowed_mems), [1]);
}

#[test]
fn machine_without_a_node_directory_is_one_node_with_all_cpus() {
    let r = InfoReport::collect(&fixture("no-numa")).unwrap();
    let t = &r.topology;
    assert!(t.synthesized);
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(ids(&t.nodes[0].cpus), [0, 1, 2, 3]);
    assert_eq!(t.nodes[0].distances, [10]);
    assert_eq!(t.nodes[0].mem_total_bytes, Some(16 << 30));
    assert!(r.to_string().contains("one node assumed"));
}

#[test]
fn a_root_that_does_not_exist_still_reports_one_node() {
    let r = InfoReport::collect(Path::new("/nonexistent/pinned-fixture")).unwrap();
    assert_eq!(r.topology.nodes.len(), 1);
    assert_eq!(ids(&r.topology.nodes[0].cpus), [0]);
}

#[test]
fn a_corrupt_cpulist_is_an_error_naming_the_file() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corrupt-sysfs");
    let node = dir.join("sys/devices/system/node/node0");
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(dir.join("sys/devices/system/node/online"), "0\n").unwrap();
    std::fs::write(node.join("cpulist"), "0-x\n").unwrap();
    let err = InfoReport::collect(&dir).unwrap_err().to_string();
    assert!(
        err.contains("node0/cpulist") && err.contains("'0-x'"),
        "{err}"
    );
}

#[test]
fn live_json_has_the_documented_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinned"))
        .args(["info", "--json"])
        .output()
        .expect("running pinned info --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("valid JSON");
    for path in [
        "/pinned_version",
        "/topology/nodes/0/cpus",
        "/topology/nodes/0/distances",
        "/topology/nodes/0/mem_total_bytes",
        "/topology/online_cpus",
        "/process/allowed_cpus",
        "/process/allowed_mems",
        "/process/memory_policy",
        "/cpu/model",
        "/cpu/features/avx512f",
        "/cpu/features/amx_bf16",
        "/cpu/usable/amx",
        "/cpu/caches/l2",
        "/cpu/precisions/f32",
        "/cpu/smt_siblings",
        "/memory/thp_enabled",
        "/memory/hugepages",
        "/memory/memlock_limit_bytes",
        "/perf_event_paranoid",
    ] {
        assert!(v.pointer(path).is_some(), "field {path} missing in {v}");
    }
    let allowed = v
        .pointer("/process/allowed_cpus")
        .unwrap()
        .as_array()
        .unwrap();
    assert!(!allowed.is_empty());
}

#[test]
fn info_on_a_fixture_through_the_binary() {
    let out = Command::new(env!("CARGO_BIN_EXE_pinned"))
        .args(["info", "--root"])
        .arg(fixture("two-node"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NUMA nodes    2"), "{text}");
    assert!(text.contains("node 1   cpus 2-3"), "{text}");
}
