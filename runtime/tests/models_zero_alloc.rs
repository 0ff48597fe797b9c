//! Serving the real models allocates nothing: a counting global allocator
//! sees 0 allocations and 0 deallocations while MiniLM (the tiny BERT, and
//! the real all-MiniLM-L6-v2 when `PINNED_MINILM_DIR` is set) and the
//! manifest MLP answer requests, single and batched with varied sequence
//! lengths, after a warm-up. One test in this binary, so nothing else runs
//! during the window.

mod counting_alloc;
mod models_common;

use counting_alloc::{ALLOCS, COUNTING, DEALLOCS};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use models_common::{fixtures, minilm_dir, write_tiny_bert};
use pinned_runtime::models::{LoadOptions, MiniLm, Mlp};
use pinned_runtime::{
    BatchPolicy, Model, Partition, PartitionConfig, Runtime, RuntimeConfig, WaitStrategy,
};
use safetensors::Dtype;

const T: Duration = Duration::from_secs(60);

/// A MiniLM partition and what its requests should give.
struct Case {
    part: Partition,
    model: Arc<MiniLm>,
    sentences: Vec<(Vec<u32>, Vec<u32>)>,
    want: Vec<Vec<f32>>,
}

impl Case {
    fn new(
        rt: &mut Runtime,
        name: &str,
        model: Arc<MiniLm>,
        sentences: Vec<(Vec<u32>, Vec<u32>)>,
        max_batch: usize,
    ) -> Self {
        let want = sentences
            .iter()
            .map(|(i, m)| model.embed_ids(&[(i, m)]).unwrap().remove(0))
            .collect();
        let part = rt
            .add_partition(
                PartitionConfig {
                    wait: WaitStrategy::SpinPark { spin_us: 20 },
                    batch: BatchPolicy {
                        max_batch,
                        max_wait_us: 50,
                    },
                    workers: 1,
                    slots: 8,
                    ..PartitionConfig::new(name, "all")
                },
                model.clone(),
            )
            .unwrap();
        Self {
            part,
            model,
            sentences,
            want,
        }
    }

    /// Serves `rounds` windows of four requests (so batches form); checks
    /// each answer against the embedding computed alone.
    fn serve(&self, rounds: usize) {
        let mut reqs = [None, None, None, None];
        for round in 0..rounds {
            for (k, slot) in reqs.iter_mut().enumerate() {
                let (ids, mask) = &self.sentences[(round + k) % self.sentences.len()];
                let mut r = self.part.acquire(T).unwrap();
                self.model
                    .encode_request(ids, mask, r.input_mut().unwrap())
                    .unwrap();
                r.submit().unwrap();
                *slot = Some(r);
            }
            for (k, slot) in reqs.iter_mut().enumerate() {
                let mut r = slot.take().unwrap();
                r.wait(T).unwrap();
                let want = &self.want[(round + k) % self.sentences.len()];
                let close = r
                    .output()
                    .unwrap()
                    .iter()
                    .zip(want)
                    .all(|(g, w)| (g - w).abs() < 1e-5);
                assert!(
                    close,
                    "served embedding differs from the one computed alone"
                );
                r.release();
            }
        }
    }
}

#[test]
fn serving_models_allocates_nothing_after_warm_up() {
    let mut rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_tiny_bert(dir.path(), Dtype::F32);
    let tiny = Arc::new(MiniLm::load_dir(dir.path(), LoadOptions::default().max_seq(16)).unwrap());
    let tiny_sentences = vec![
        (vec![1, 2, 3], vec![1, 1, 1]),
        ((0..16).map(|i| i * 3 % 50).collect(), vec![1; 16]),
        (vec![4, 9, 0, 33, 12], vec![1, 1, 0, 1, 1]),
        (vec![7], vec![1]),
        (vec![], vec![]),
    ];
    // A request alone in flight runs on the model's two-thread team.
    let team_opts = LoadOptions::default().max_seq(16).threads(2);
    let tiny_team = Arc::new(MiniLm::load_dir(dir.path(), team_opts).unwrap());
    let mut cases = vec![
        Case::new(
            &mut rt,
            "tiny-single",
            tiny.clone(),
            tiny_sentences.clone(),
            1,
        ),
        Case::new(&mut rt, "tiny-team", tiny_team, tiny_sentences.clone(), 4),
        Case::new(&mut rt, "tiny-batched", tiny, tiny_sentences, 4),
    ];
    if let Some(real_dir) = minilm_dir() {
        let real =
            Arc::new(MiniLm::load_dir(&real_dir, LoadOptions::default().max_seq(64)).unwrap());
        let tok = real.tokenizer().unwrap();
        let sentences = [
            "Hello world.",
            "A",
            "Placement decides inference latency on a CPU server, not only FLOPs.",
        ]
        .iter()
        .map(|t| {
            let e = tok.encode(t).unwrap();
            (e.ids, e.mask)
        })
        .collect();
        cases.push(Case::new(&mut rt, "minilm-batched", real, sentences, 4));
    }
    let mlp =
        Arc::new(Mlp::load(fixtures().join("mlp/tiny_mlp.json"), LoadOptions::default()).unwrap());
    let mlp_part = rt
        .add_partition(
            PartitionConfig {
                batch: BatchPolicy {
                    max_batch: 4,
                    max_wait_us: 50,
                },
                workers: 1,
                slots: 8,
                ..PartitionConfig::new("mlp", "all")
            },
            mlp.clone(),
        )
        .unwrap();
    let mlp_input: Vec<f32> = (0..mlp.input_len())
        .map(|i| (i as f32 * 0.3).sin())
        .collect();
    let serve_mlp = |n: usize| {
        for _ in 0..n {
            let mut r = mlp_part.acquire(T).unwrap();
            r.input_mut().unwrap().copy_from_slice(&mlp_input);
            r.submit().unwrap();
            r.wait(T).unwrap();
            assert!(r.output().unwrap().iter().all(|v| v.is_finite()));
            r.release();
        }
    };

    // Warm-up: first touches, lazy thread-locals, histogram paths.
    for case in &cases {
        case.serve(10);
    }
    serve_mlp(20);

    COUNTING.store(true, Ordering::SeqCst);
    for case in &cases {
        // The real model is ~200x the tiny one's work per token.
        case.serve(if case.model.hidden() > 64 { 20 } else { 100 });
    }
    serve_mlp(400);
    COUNTING.store(false, Ordering::SeqCst);

    let (allocs, deallocs) = (
        ALLOCS.load(Ordering::SeqCst),
        DEALLOCS.load(Ordering::SeqCst),
    );
    cases.clear();
    let finals = rt.shutdown();
    let batched = finals
        .iter()
        .find(|t| t.name == "tiny-batched")
        .expect("telemetry");
    let batches: u64 = batched.workers.iter().map(|w| w.batches).sum();
    assert!(
        batches < batched.requests(),
        "some batches held several requests"
    );
    assert_eq!(
        (allocs, deallocs),
        (0, 0),
        "allocations while serving the models"
    );
}
