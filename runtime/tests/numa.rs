//! Partition memory, and the built-in MLP's weights, land on the node
//! asked. On a one-node machine this checks node 0; run it in
//! `/work/shared/numa-vm/run-in-numa-vm` to check two real nodes.

use std::sync::Arc;
use std::time::Duration;

use pinned_allocator::numa::node_of_address;
use pinned_allocator::Topology;
use pinned_runtime::models::{LoadOptions, Mlp, WeightPlacement};
use pinned_runtime::{
    current_affinity, Affine, PartitionConfig, Placement, Runtime, RuntimeConfig, WaitStrategy,
};

const T: Duration = Duration::from_secs(30);

#[test]
fn each_node_partition_serves_from_its_own_memory() {
    let topo = Topology::detect().unwrap();
    let allowed = current_affinity().unwrap();
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut checked = 0;
    for node in topo.nodes.iter().filter(|n| n.online && n.has_memory) {
        if node.cpus.intersection(&allowed).is_empty() {
            continue;
        }
        let name = format!("node{}", node.id);
        let part = rt
            .add_partition(
                PartitionConfig {
                    placement: Placement::Local,
                    wait: WaitStrategy::SpinPark { spin_us: 5 },
                    workers: 1,
                    slots: 4,
                    ..PartitionConfig::new(name.clone(), format!("node:{}", node.id))
                },
                Arc::new(Affine {
                    len: 1024,
                    scale: 1.0,
                    shift: 0.0,
                }),
            )
            .unwrap();
        assert_eq!(part.nodes().as_slice(), &[node.id]);
        // `node0:0` is the first allowed CPU of that node.
        let first = rt
            .cpu_context()
            .parse(&format!("node{}:0", node.id))
            .unwrap();
        assert!(node.cpus.contains(first.as_slice()[0]));
        let mut r = part.acquire(T).unwrap();
        r.input_mut().unwrap().fill(1.0);
        let input_at = r.input_mut().unwrap().as_ptr();
        r.submit().unwrap();
        r.wait(T).unwrap();
        let output_at = r.output().unwrap().as_ptr();
        assert_eq!(
            node_of_address(input_at.cast()).unwrap(),
            Some(node.id),
            "{name} input"
        );
        assert_eq!(
            node_of_address(output_at.cast()).unwrap(),
            Some(node.id),
            "{name} output"
        );
        let t = part.telemetry_snapshot();
        let cpu = t.workers[0].last_cpu.unwrap();
        assert_eq!(
            topo.node_of_cpu(cpu),
            Some(node.id),
            "{name} worker ran on cpu {cpu}"
        );
        checked += 1;
    }
    assert!(checked >= 1);
    // Inside run-in-numa-vm every node has a CPU: insist on all of them.
    if std::env::var_os("IN_NUMA_VM").is_some() {
        let nodes: usize = std::env::var("NUMA_VM_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2);
        assert_eq!(checked, nodes, "every node of the VM must be checked");
    }
    rt.shutdown();
}

/// The built-in MLP (what `pinned run` serves by default) bound to each
/// node in turn, then one copy per node.
#[test]
fn the_built_in_mlps_weights_land_where_placed() {
    let nodes = Topology::detect().unwrap().memory_nodes();
    let widths = [256, 1024, 256];
    for node in nodes.iter() {
        let options = LoadOptions::default().placement(WeightPlacement::Node(node));
        let mlp = Mlp::generated(&widths, 1, options).unwrap();
        assert_eq!(mlp.weight_nodes(), vec![(Some(node), Some(node))]);
    }
    let options = LoadOptions::default().placement(WeightPlacement::Replicate(nodes.clone()));
    let mlp = Mlp::generated(&widths, 1, options).unwrap();
    let each: Vec<_> = nodes.iter().map(|n| (Some(n), Some(n))).collect();
    assert_eq!(mlp.weight_nodes(), each, "one copy on each node");
    if std::env::var_os("IN_NUMA_VM").is_some() {
        assert!(nodes.len() >= 2, "the VM has two memory nodes");
    }
}
