//! The ONNX Runtime peer runner (bench/peers/peer_runner.py) writes the
//! harness's run record. This parses a record it wrote with the harness's
//! own reader, which refuses unknown fields, and checks it for internal
//! consistency (counts, percentile order, the stored HDR histogram's p99):
//! a schema change on either side fails here until the other follows.

use pinned_bench::harness::compare;
use pinned_bench::harness::config::Scenario;
use pinned_bench::harness::record::{decode_histogram, RunRecord, SCHEMA};

const EXAMPLE: &str = include_str!("../peers/example-record.json");

#[test]
fn peer_record_parses_and_checks() {
    let record = RunRecord::from_json(EXAMPLE).expect("the peer's record has the harness's shape");
    assert_eq!(record.schema, SCHEMA);
    record.check().expect("the peer's record is consistent");
    assert_eq!(record.config.scenario, Scenario::Server);
    let p = &record.partitions[0];
    assert!(p.model.contains("onnxruntime"), "{}", p.model);
    assert!(p.completed > 0);
    let hist = decode_histogram(&p.latency_hdr_base64).unwrap();
    assert_eq!(hist.len(), p.completed);
    assert_eq!(hist.max(), p.latency.max_ns);
    assert_eq!(
        hist.value_at_quantile(0.5).min(hist.max()),
        p.latency.p50_ns
    );
}

#[test]
fn peer_record_compares_with_itself() {
    let record = RunRecord::from_json(EXAMPLE).unwrap();
    let text = compare::report(&record, &record, "peer", "peer").expect("compare reads it");
    assert!(text.contains("Partition p0"), "{text}");
    let deltas = compare::latency_deltas(&record.partitions[0], &record.partitions[0]).unwrap();
    assert!(deltas.iter().all(|d| d.ratio == 1.0));
}
