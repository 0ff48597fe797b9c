//! The AMX strip-order kernels alone, outside the GEMM: one two-row call
//! per row tile against one run kernel per K slice (a tuning aid).
//!
//! `cargo run --release -p pinned-kernels --example amx_micro -- [steps]
//! [blocks] [a_kib] [b_kib] [pf_mib] [ones|spread|zeros]`: see
//! `amx::strip_probe::StripProbe` (default: 8 4 512 0 0 ones).

use std::time::Duration;

use pinned_kernels::amx::probe::amx_bf16_peak_gflops;
use pinned_kernels::amx::strip_probe::{strip_gflops, ProbeData, StripProbe};

fn main() {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<usize> = words.iter().filter_map(|s| s.parse().ok()).collect();
    let data = match words
        .iter()
        .find(|w| w.parse::<usize>().is_err())
        .map(String::as_str)
    {
        None | Some("ones") => ProbeData::Ones,
        Some("spread") => ProbeData::Spread,
        Some("zeros") => ProbeData::Zeros,
        Some(other) => {
            eprintln!("unknown data {other:?}: ones, spread or zeros");
            std::process::exit(2);
        }
    };
    let arg = |i: usize, d: usize| args.get(i).copied().unwrap_or(d);
    let probe = StripProbe {
        steps: arg(0, 8),
        blocks: arg(1, 4),
        a_kib: arg(2, 512),
        b_kib: arg(3, 0),
        pf_mib: arg(4, 0),
        run: false,
        data,
    };
    let budget = Duration::from_millis(300);
    let Some(peak) = amx_bf16_peak_gflops(budget) else {
        eprintln!("no AMX-BF16 here");
        return;
    };
    for _ in 0..3 {
        let calls = strip_gflops(probe, budget).unwrap_or(0.0);
        let run = strip_gflops(StripProbe { run: true, ..probe }, budget).unwrap_or(0.0);
        println!(
            "{probe:?}: per-tile calls {calls:.0} ({:.0}%), run {run:.0} ({:.0}%) of the {peak:.0} GFLOP/s probe",
            100.0 * calls / peak,
            100.0 * run / peak
        );
    }
}
