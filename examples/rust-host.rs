//! A Rust host: one partition serving the built-in MLP (its weights
//! interleaved over the memory nodes, as the partition spans all CPUs),
//! driven from 4 host threads through the safe Rust API, printing latency
//! percentiles.
//!
//! `cargo run --release --example rust-host -- [requests-per-thread [width ...]]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use pinned::allocator::Topology;
use pinned::runtime::models::{LoadOptions, Mlp, WeightPlacement};
use pinned::runtime::{PartitionConfig, Runtime, RuntimeConfig, DEFAULT_MLP};

const HOST_THREADS: usize = 4;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let requests: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let widths: Vec<usize> = args.map(|a| a.parse()).collect::<Result<_, _>>()?;
    let widths = if widths.is_empty() {
        DEFAULT_MLP.to_vec()
    } else {
        widths
    };

    let mut runtime = Runtime::new(RuntimeConfig::default())?;
    let nodes = Topology::detect()?.memory_nodes();
    let options = LoadOptions::default().placement(WeightPlacement::Interleave(nodes));
    let model = Arc::new(Mlp::generated(&widths, 1, options)?);
    let partition = runtime.add_partition(PartitionConfig::new("mlp", "all"), model)?;
    println!(
        "partition mlp: {} inputs, {} outputs",
        partition.input_len(),
        partition.output_len()
    );

    let mut latencies: Vec<Duration> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..HOST_THREADS)
            .map(|id| {
                let partition = &partition;
                scope.spawn(
                    move || -> Result<Vec<Duration>, pinned::runtime::RequestError> {
                        let mut own = Vec::with_capacity(requests);
                        for i in 0..requests {
                            let start = Instant::now();
                            let mut request = partition.acquire(Duration::from_secs(1))?;
                            for (j, x) in request.input_mut()?.iter_mut().enumerate() {
                                *x = ((i + id + j) % 7) as f32 * 0.1;
                            }
                            request.submit()?;
                            request.wait(Duration::from_secs(10))?;
                            let _first = request.output()?[0];
                            request.release();
                            own.push(start.elapsed());
                        }
                        Ok(own)
                    },
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .expect("host thread panicked")
                    .expect("request failed")
            })
            .collect()
    });
    latencies.sort();
    let n = latencies.len();
    println!(
        "host-measured latency over {n} requests from {HOST_THREADS} threads: p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        latencies[n / 2].as_secs_f64() * 1e6,
        latencies[n * 99 / 100].as_secs_f64() * 1e6,
        latencies[n - 1].as_secs_f64() * 1e6,
    );
    let telemetry = runtime.shutdown();
    let served: u64 = telemetry.iter().map(|t| t.requests()).sum();
    println!("pinned telemetry: {served} requests served");
    if served as usize != n {
        return Err(format!("telemetry counted {served} requests, the host sent {n}").into());
    }
    println!("rust-host ok");
    Ok(())
}
