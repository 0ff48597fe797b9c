//! Sweeps vary one parameter, refuse two, and keep everything else equal.

use pinned_allocator::IdList;
use pinned_bench::harness::config::{MemoryPlacement, PartitionConfig, RunConfig, Scenario};
use pinned_bench::harness::sweep::{
    interleaved_order, points, MachineShape, Point, SweepError, SweepSpec,
};

fn one_node_two_cpus() -> MachineShape {
    MachineShape {
        allowed: IdList::parse("0-1").unwrap(),
        memory_nodes: IdList::parse("0").unwrap(),
        node_of_cpu: vec![Some(0), Some(0)],
    }
}

#[test]
fn refuses_two_parameters() {
    let two = SweepSpec::parse(&["pin=on,off".into(), "qps=10,20".into()]).unwrap_err();
    assert!(matches!(two, SweepError::TwoParameters(2, _)), "{two}");
    assert!(two.to_string().contains("exactly one"), "{two}");
    let packed = SweepSpec::parse(&["pin=on,off,qps=10".into()]).unwrap_err();
    assert!(matches!(packed, SweepError::TwoParameters(..)), "{packed}");
    assert!(matches!(
        SweepSpec::parse(&[]),
        Err(SweepError::NoParameter(_))
    ));
    assert!(matches!(
        SweepSpec::parse(&["pin=on".into()]),
        Err(SweepError::OneValue(_))
    ));
    assert!(matches!(
        SweepSpec::parse(&["colour=red,blue".into()]),
        Err(SweepError::UnknownParameter(..))
    ));
    assert!(matches!(
        SweepSpec::parse(&["pin=on,on".into()]),
        Err(SweepError::Duplicate { .. })
    ));
    assert!(matches!(
        SweepSpec::parse(&["pin".into()]),
        Err(SweepError::BadForm(_))
    ));
    let ok = SweepSpec::parse(&["pin=on,off".into()]).unwrap();
    assert_eq!(ok.values, ["on", "off"]);
}

/// Only the varied field differs between the configurations.
#[test]
fn changes_only_the_varied_parameter() {
    let base = RunConfig::default();
    let spec = SweepSpec::parse(&["pin=on,off".into()]).unwrap();
    let pts = points(&spec, &base, &one_node_two_cpus()).unwrap();
    let configs: Vec<RunConfig> = pts
        .into_iter()
        .map(|p| match p {
            Point::Run { config, .. } => config,
            Point::Skipped { reason, .. } => panic!("skipped: {reason}"),
        })
        .collect();
    assert!(configs[0].partitions[0].pin && !configs[1].partitions[0].pin);
    let mut same = configs[1].clone();
    same.partitions[0].pin = true;
    assert_eq!(same, configs[0]);
}

#[test]
fn remote_is_skipped_on_one_node() {
    let spec = SweepSpec::parse(&["placement=local,remote,interleave".into()]).unwrap();
    let pts = points(&spec, &RunConfig::default(), &one_node_two_cpus()).unwrap();
    assert!(
        matches!(&pts[1], Point::Skipped { value, reason } if value == "remote" && reason.contains("one memory node"))
    );
    assert!(matches!(&pts[2], Point::Run { config, .. }
        if config.partitions[0].memory == MemoryPlacement::Interleave("all".into())));
}

#[test]
fn division_isolates_or_shares_the_same_workers() {
    let mut base = RunConfig {
        scenario: Scenario::MultiModel,
        ..RunConfig::default()
    };
    base.partitions = vec![
        PartitionConfig {
            name: "a".into(),
            ..PartitionConfig::default()
        },
        PartitionConfig {
            name: "b".into(),
            ..PartitionConfig::default()
        },
    ];
    let spec = SweepSpec::parse(&["division=isolated,shared".into()]).unwrap();
    let pts = points(&spec, &base, &one_node_two_cpus()).unwrap();
    let (Point::Run { config: iso, .. }, Point::Run { config: sh, .. }) = (&pts[0], &pts[1]) else {
        panic!("both run");
    };
    assert_eq!(iso.partitions[0].cpus.as_deref(), Some("0"));
    assert_eq!(iso.partitions[1].cpus.as_deref(), Some("1"));
    assert!(sh
        .partitions
        .iter()
        .all(|p| p.cpus.as_deref() == Some("0-1") && !p.pin));
    assert!(iso
        .partitions
        .iter()
        .chain(&sh.partitions)
        .all(|p| p.workers == Some(1)));
    // One partition cannot be divided.
    let single = points(&spec, &RunConfig::default(), &one_node_two_cpus()).unwrap_err();
    assert!(
        single.to_string().contains("two or more partitions"),
        "{single}"
    );
}

#[test]
fn interleaves_configurations() {
    let order = interleaved_order(3, 2);
    let configs: Vec<usize> = order.iter().map(|&(_, c)| c).collect();
    assert_eq!(configs, [0, 1, 2, 0, 1, 2]);
}
