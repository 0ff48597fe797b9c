//! Pinned workers: each one's mask is its core, it ran only there, and its
//! thread is named `pinned/<partition>/<n>`. Unpinned workers keep the
//! process's whole set.

use std::sync::Arc;
use std::time::Duration;

use pinned_runtime::{
    current_affinity, thread_affinity, Affine, PartitionConfig, Placement, Runtime, RuntimeConfig,
    WaitStrategy,
};

const T: Duration = Duration::from_secs(20);

fn serve(part: &pinned_runtime::Partition, n: usize) {
    for i in 0..n {
        let mut r = part.acquire(T).unwrap();
        r.input_mut().unwrap()[0] = i as f32;
        r.submit().unwrap();
        r.wait(T).unwrap();
        assert_eq!(r.output().unwrap()[0], i as f32 + 1.0);
    }
}

#[test]
fn pinned_workers_stay_on_their_cores() {
    let allowed = current_affinity().unwrap();
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let model = || {
        Arc::new(Affine {
            len: 1,
            scale: 1.0,
            shift: 1.0,
        })
    };
    let pinned = rt
        .add_partition(
            PartitionConfig {
                wait: WaitStrategy::SpinPark { spin_us: 5 },
                ..PartitionConfig::new("aff", "all")
            },
            model(),
        )
        .unwrap();
    let free = rt
        .add_partition(
            PartitionConfig {
                wait: WaitStrategy::SpinPark { spin_us: 5 },
                pin: false,
                placement: Placement::Os,
                workers: 1,
                ..PartitionConfig::new("free", "all")
            },
            model(),
        )
        .unwrap();
    assert_eq!(pinned.workers(), allowed.len());
    serve(&pinned, 200);
    serve(&free, 20);

    let live = pinned.telemetry_snapshot();
    for w in &live.workers {
        let cpu = allowed.as_slice()[w.index % allowed.len()];
        assert_eq!(w.cpus.as_slice(), &[cpu], "worker {} set", w.index);
        let tid = w.tid.expect("worker reports its tid");
        // The kernel's view, from outside the worker.
        assert_eq!(
            thread_affinity(tid).unwrap(),
            w.cpus,
            "worker {} mask",
            w.index
        );
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap();
        assert_eq!(comm.trim(), format!("pinned/aff/{}", w.index));
    }
    let unpinned = free.telemetry_snapshot();
    let tid = unpinned.workers[0].tid.unwrap();
    assert_eq!(thread_affinity(tid).unwrap(), allowed);
    assert!(!unpinned.workers[0].pinned);

    // After shutdown the counters are final: every pinned worker last ran
    // on its core and never migrated (when the kernel lets us count).
    let finals = rt.shutdown();
    let aff = finals.iter().find(|t| t.name == "aff").unwrap();
    assert_eq!(aff.requests(), 200);
    for w in &aff.workers {
        assert_eq!(w.last_cpu, Some(w.cpus.as_slice()[0]), "worker {}", w.index);
        if let Some(migrations) = w.migrations {
            assert_eq!(migrations, 0, "worker {} migrated", w.index);
        }
        assert!(w.cpu_ns.is_some() && w.voluntary_switches.is_some());
    }
}

#[test]
fn a_cpu_outside_the_allowed_set_is_refused_by_name() {
    let allowed = current_affinity().unwrap();
    let mut rt = Runtime::new(RuntimeConfig {
        topology: None,
        // Pretend the process may use only its first CPU.
        allowed: Some(pinned_allocator::IdList::from_ids(vec![
            allowed.as_slice()[0],
        ])),
    })
    .unwrap();
    let online = rt.cpu_context().topology.online_cpus.clone();
    let other = online.iter().find(|&c| c != allowed.as_slice()[0]);
    if let Some(other) = other {
        let err = rt
            .add_partition(
                PartitionConfig::new("x", other.to_string()),
                Arc::new(Affine {
                    len: 1,
                    scale: 1.0,
                    shift: 0.0,
                }),
            )
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("cpu {other}")), "{text}");
        assert!(text.contains("outside"), "{text}");
    }
}
