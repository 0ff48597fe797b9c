//! A model team moving its helper off the CPU of the request that leads
//! it (`team_placement.rs`: one `sched_setaffinity` per helper when the
//! leader's CPU changed) allocates nothing. The caller's thread leads lone
//! requests from one CPU, then the other; a counting global allocator sees
//! the model's calls only (the test's own re-pinning runs outside the
//! window). One test in this binary, so nothing else runs during it.

mod counting_alloc;

use counting_alloc::{ALLOCS, COUNTING, DEALLOCS};

use std::sync::atomic::Ordering;

use pinned_allocator::IdList;
use pinned_runtime::models::{LoadOptions, Mlp};
use pinned_runtime::{current_affinity, pin_current_thread, thread_affinity, Model, Scratch};

/// The kernel thread ids of this process's threads named `gemm-team-*`
/// (the model team's helpers).
fn helper_tids() -> Vec<i32> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            let tid = e.file_name().to_str()?.parse().ok()?;
            comm.starts_with("gemm-team-").then_some(tid)
        })
        .collect()
}

#[test]
fn moving_helpers_off_the_leaders_cpu_allocates_nothing() {
    let allowed = current_affinity().unwrap();
    let cpus: Vec<usize> = allowed.iter().take(2).collect();
    let [a, b] = cpus[..] else {
        eprintln!("skipped: one CPU allowed, a team cannot avoid its leader's");
        return;
    };
    let pair = IdList::from_ids(vec![a, b]);
    // Batches of 16 through 256 -> 2048 -> 256: enough work per GEMM that
    // the team is the cheaper mode and most lone requests take it.
    let options = LoadOptions::default().threads(2).cpus(pair);
    let mlp = Mlp::generated(&[256, 2048, 256], 3, options).unwrap();
    let batch = 16;
    let inputs: Vec<f32> = (0..batch * 256).map(|i| (i as f32 * 0.1).cos()).collect();
    let mut out = vec![0.0f32; batch * 256];
    let mut scratch = Scratch::standalone(mlp.scratch_size(batch)).unwrap();
    let on = [IdList::from_ids(vec![a]), IdList::from_ids(vec![b])];

    // Warm-up: helpers start, tiles and lazy state settle, modes sampled.
    for i in 0..60 {
        pin_current_thread(&on[i / 3 % 2]).unwrap();
        mlp.run(batch, &inputs, &mut out, &mut scratch).unwrap();
    }
    let helpers = helper_tids();
    assert_eq!(helpers.len(), 1, "a team of 2 has one helper");
    let helper_cpus = || thread_affinity(helpers[0]).unwrap();

    let (mut allocs, mut deallocs, mut moves) = (0, 0, 0);
    let mut last = helper_cpus();
    for i in 0..300 {
        // Switch CPUs every third request, so that requests which take the
        // team (favoured or exploring) lead from either CPU.
        pin_current_thread(&on[i / 3 % 2]).unwrap();
        COUNTING.store(true, Ordering::SeqCst);
        mlp.run(batch, &inputs, &mut out, &mut scratch).unwrap();
        COUNTING.store(false, Ordering::SeqCst);
        allocs += ALLOCS.swap(0, Ordering::SeqCst);
        deallocs += DEALLOCS.swap(0, Ordering::SeqCst);
        let now = helper_cpus();
        assert_eq!(now.len(), 1, "the helper is pinned to one CPU");
        moves += usize::from(now != last);
        last = now;
    }
    assert!(out.iter().all(|v| v.is_finite()));
    assert!(
        moves > 0,
        "the helper never moved: no request led the team from the helper's CPU"
    );
    assert_eq!(
        (allocs, deallocs),
        (0, 0),
        "allocations while leading the team from changing CPUs ({moves} moves)"
    );
}
