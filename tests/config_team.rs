//! The configuration path (TOML/JSON, and the C ABI through it) gives its
//! models the team the harness gives them: as many threads as the
//! partition has workers, the helpers pinned one CPU each to the
//! partition's CPUs when the partition pins. One test in this binary: it
//! finds the helpers among the process's threads (`gemm-team-*`).

use std::collections::BTreeMap;

use pinned::allocator::IdList;
use pinned::config::RuntimeSpec;
use pinned::runtime::{Runtime, RuntimeConfig};

/// This process's team helpers: thread id to the CPUs it may run on.
fn helpers() -> BTreeMap<u32, IdList> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("tasks") {
        let dir = entry.expect("task").path();
        // A thread may end between the listing and the reads.
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue;
        };
        if !name.starts_with("gemm-team-") {
            continue;
        }
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .expect("Cpus_allowed_list");
        let tid = dir.file_name().unwrap().to_str().unwrap().parse().unwrap();
        found.insert(tid, IdList::parse(cpus.trim()).expect("cpu list"));
    }
    found
}

/// The helpers in `after` that were not in `before`.
fn new_helpers(before: &BTreeMap<u32, IdList>) -> Vec<IdList> {
    helpers()
        .into_iter()
        .filter(|(tid, _)| !before.contains_key(tid))
        .map(|(_, cpus)| cpus)
        .collect()
}

fn spec(workers: usize, pin: bool) -> RuntimeSpec {
    spec_with(workers, pin, "kind = \"mlp\"\nwidths = [8, 16, 4]")
}

fn spec_with(workers: usize, pin: bool, model: &str) -> RuntimeSpec {
    RuntimeSpec::parse(&format!(
        r#"
[[partition]]
name = "mlp"
cpus = "all"
workers = {workers}
pin = {pin}
[partition.model]
{model}
"#
    ))
    .expect("spec")
}

#[test]
fn the_config_path_gives_its_models_the_partitions_team() {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let ctx = runtime.cpu_context();
    let allowed = &ctx.allowed;
    let build = |workers: usize, pin: bool| {
        let spec = spec(workers, pin);
        let part = &spec.partitions[0];
        let config = part.partition_config().expect("config");
        part.model.build(&config, ctx).expect("model")
    };

    // Three workers pinned: two helpers, each on one CPU of the partition.
    let before = helpers();
    let pinned_model = build(3, true);
    let pinned = new_helpers(&before);
    assert_eq!(
        pinned.len(),
        2,
        "helpers of a 3-worker partition: {pinned:?}"
    );
    for cpus in &pinned {
        assert_eq!(cpus.len(), 1, "a helper is pinned to one CPU: {cpus}");
        assert_eq!(&cpus.intersection(allowed), cpus, "outside the partition");
    }

    // Not pinned: the helpers may run anywhere the process may.
    let before = helpers();
    let free_model = build(2, false);
    let free = new_helpers(&before);
    assert_eq!(
        free,
        std::slice::from_ref(allowed),
        "one free helper for 2 workers"
    );

    // Workers 0 (one per CPU): one thread per CPU of the partition.
    let before = helpers();
    let per_cpu_model = build(0, true);
    assert_eq!(new_helpers(&before).len(), allowed.len() - 1);

    // A manifest model (the safetensors loader, as MiniLM's): the same.
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/mlp/tiny_mlp.json"
    );
    let spec = spec_with(
        2,
        true,
        &format!("kind = \"manifest\"\npath = \"{manifest}\""),
    );
    let part = &spec.partitions[0];
    let config = part.partition_config().expect("config");
    let before = helpers();
    let manifest_model = part.model.build(&config, ctx).expect("manifest model");
    let found = new_helpers(&before);
    assert_eq!(
        found.len(),
        1,
        "helpers of a 2-worker manifest model: {found:?}"
    );
    assert_eq!(found[0].len(), 1, "a helper is pinned to one CPU");
    drop((pinned_model, free_model, per_cpu_model, manifest_model));
}
