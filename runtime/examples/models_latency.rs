//! Single-request latency of the real models served by pinned partitions:
//! MiniLM-L6 at sequence length 128 (fp32 and bf16; 1 worker with one
//! client, 2 workers with two clients, one request in flight per client)
//! and the built-in MLP (1024-4096-1024-4096-1024, fp32) per call at batch
//! 1 and 64. Prints p50/p99 in microseconds.
//!
//!   PINNED_MINILM_DIR=... cargo run --release -p pinned-runtime --example models_latency [requests]

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinned_kernels::precision::Precision;
use pinned_runtime::models::{LoadOptions, MiniLm, MINILM_DIR_VAR};
use pinned_runtime::{
    DenseMlp, Model, Partition, PartitionConfig, Runtime, RuntimeConfig, Scratch, DEFAULT_MLP,
};

const SEQ: usize = 128;
const T: Duration = Duration::from_secs(60);

fn percentiles(mut us: Vec<f64>) -> (f64, f64, usize) {
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((us.len() as f64 * q) as usize).min(us.len() - 1)];
    (at(0.50), at(0.99), us.len())
}

/// One client: `n` requests one after another, each timed submit to done.
fn client(part: &Partition, model: &MiniLm, ids: &[u32], mask: &[u32], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut r = part.acquire(T).expect("slot");
        model
            .encode_request(ids, mask, r.input_mut().expect("input"))
            .expect("encode");
        let start = Instant::now();
        r.submit().expect("submit");
        r.wait(T).expect("served");
        out.push(start.elapsed().as_secs_f64() * 1e6);
        r.release();
    }
    out
}

fn minilm(dir: &str, precision: Precision, workers: usize, n: usize) {
    let model = Arc::new(
        MiniLm::load_dir(
            dir,
            LoadOptions::default().precision(precision).max_seq(SEQ),
        )
        .expect("load"),
    );
    let ids: Vec<u32> = std::iter::once(101)
        .chain((1..SEQ - 1).map(|i| 1000 + (i as u32 * 37) % 20000))
        .chain([102])
        .collect();
    let mask = vec![1u32; SEQ];
    let mut rt = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let part = rt
        .add_partition(
            PartitionConfig {
                workers,
                slots: 4,
                ..PartitionConfig::new("minilm", "all")
            },
            model.clone(),
        )
        .expect("partition");
    client(&part, &model, &ids, &mask, 20); // warm-up
    let lat: Vec<f64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| s.spawn(|| client(&part, &model, &ids, &mask, n)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client"))
            .collect()
    });
    let (p50, p99, count) = percentiles(lat);
    println!(
        "minilm-l6 seq {SEQ} {:<4} on {:<9} workers {workers} clients {workers}: p50 {:>8.0} us  p99 {:>8.0} us  ({count} requests)",
        precision.name(),
        model.kernel_path(),
        p50,
        p99
    );
    rt.shutdown();
}

fn mlp(batch: usize, n: usize) {
    let model = DenseMlp::new(&DEFAULT_MLP, 1).expect("mlp");
    let mut scratch = Scratch::standalone(model.scratch_size(batch)).expect("scratch");
    let inputs: Vec<f32> = (0..batch * model.input_len())
        .map(|i| (i as f32 * 0.01).sin())
        .collect();
    let mut out = vec![0.0; batch * model.output_len()];
    let cpu = pinned_runtime::current_cpu().unwrap_or(0);
    let _ = pinned_runtime::pin_current_thread(&pinned_allocator::IdList::from_ids(vec![cpu]));
    for _ in 0..10 {
        model
            .run(batch, &inputs, &mut out, &mut scratch)
            .expect("run");
    }
    let lat = (0..n)
        .map(|_| {
            let start = Instant::now();
            model
                .run(batch, &inputs, &mut out, &mut scratch)
                .expect("run");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (p50, p99, count) = percentiles(lat);
    println!("{} fp32 batch {batch:>2} (one call, pinned thread): p50 {p50:>8.0} us  p99 {p99:>8.0} us  ({count} calls)", model.name());
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    match std::env::var(MINILM_DIR_VAR) {
        Ok(dir) => {
            for precision in [Precision::F32, Precision::Bf16] {
                for workers in [1, 2] {
                    minilm(&dir, precision, workers, n);
                }
            }
        }
        Err(_) => eprintln!("{MINILM_DIR_VAR} not set: MiniLM skipped"),
    }
    mlp(1, n);
    mlp(64, (n / 10).max(100));
}
