//! The committed example record has exactly the documented schema and is
//! internally consistent; damaged copies are refused.

use pinned_bench::harness::config::RunConfig;
use pinned_bench::harness::record::{RunRecord, SCHEMA};

const EXAMPLE: &str = include_str!("fixtures/example-record.json");

#[test]
fn committed_example_validates() {
    let record = RunRecord::from_json(EXAMPLE).expect("the example has the schema's shape");
    assert_eq!(record.schema, SCHEMA);
    record
        .check()
        .expect("the example is internally consistent");
    assert!(!record.machine.cpu_model.is_empty());
    assert!(!record.machine.build.git_revision.is_empty());
    let p = &record.partitions[0];
    assert!(p.completed > 0 && !p.latency_hdr_base64.is_empty());
    // Round trip: what we write is what we read.
    assert_eq!(RunRecord::from_json(&record.to_json()).unwrap(), record);
}

fn damaged(edit: impl Fn(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(EXAMPLE).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn unknown_and_missing_fields_are_refused() {
    let extra = damaged(|v| {
        v["partitions"][0]["surprise"] = 1.into();
    });
    assert!(RunRecord::from_json(&extra).is_err());
    let missing = damaged(|v| {
        v["partitions"][0].as_object_mut().unwrap().remove("tps");
    });
    assert!(RunRecord::from_json(&missing).is_err());
}

#[test]
fn inconsistent_records_fail_the_check() {
    type Damage = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Damage)> = vec![
        (
            "percentiles",
            Box::new(|v| v["partitions"][0]["latency"]["p50_ns"] = u64::MAX.into()),
        ),
        (
            "counts",
            Box::new(|v| v["partitions"][0]["completed"] = 0.into()),
        ),
        ("tps", Box::new(|v| v["partitions"][0]["tps"] = 1e12.into())),
        (
            "utilisation",
            Box::new(|v| v["cores"][0]["busy_pct"] = 101.0.into()),
        ),
        ("schema", Box::new(|v| v["schema"] = "other/9".into())),
    ];
    for (what, edit) in cases {
        let text = damaged(edit);
        let record = RunRecord::from_json(&text).unwrap();
        assert!(record.check().is_err(), "{what} damage went unnoticed");
    }
}

#[test]
fn toml_configs_parse_and_refuse_bad_input() {
    let c = RunConfig::from_toml(
        r#"
        duration = 3
        [[partition]]
        name = "a"
        cpus = "0"
        qps = 100
        [[partition]]
        name = "b"
        cpus = "1"
        interleave = "all"
        "#,
    )
    .unwrap();
    assert_eq!(c.partitions.len(), 2);
    assert_eq!(c.scenario.name(), "multi-model");
    assert_eq!(c.partitions[0].qps, Some(100.0));
    assert!(
        RunConfig::from_toml("[[partition]]\nname = \"a\"\nmembind = \"0\"\npreferred = 0\n")
            .is_err()
    );
    assert!(RunConfig::from_toml("[[partition]]\ncolour = \"red\"\n").is_err());
    assert!(RunConfig::from_toml("duration = -1\n").is_err());
    assert!(
        RunConfig::from_toml("[[partition]]\nname = \"a\"\n[[partition]]\nname = \"a\"\n").is_err()
    );
}
