//! `pinned bench gemm --precision bf16|int8`: our low-precision GEMM beside
//! our own fp32 GEMM (same shapes, same run, samples interleaved) and
//! beside the AMX peak measured in this run by a `TDPBF16PS` / `TDPBSSD`
//! throughput probe (`pinned_kernels::amx::probe`).
//!
//! Shapes: 2048^3 (compute-bound: the fraction of the AMX peak) and the
//! inference shapes M in {1, 16, 64} x (K, N) in {(1024, 1024), (4096,
//! 4096)} (weight-bound at small M: the ratio to fp32 shows the halved or
//! quartered weight bytes). Weights are pre-packed once for both paths.
//! Rates are GFLOP/s for bf16 and GOP/s for int8 (a multiply-add is 2).

use std::io::Write;
use std::time::Duration;

use pinned_kernels::amx::probe;
use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB, Team, ThreadTeam};
use pinned_kernels::lowp::{self, Elem, LowpPath, PackedLowp};
use pinned_kernels::Isa;

use crate::gemm_bench::{GemmBenchError, GemmBenchOptions};
use crate::race::{fill, race, Timing};

/// One measured shape.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LowpRecord {
    pub shape: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub threads: usize,
    /// `bf16` or `int8`.
    pub precision: String,
    /// The low-precision kernel (`amx-bf16`, `avx512-vnni`, `fallback-fp32`...).
    pub path: String,
    /// GFLOP/s (bf16) or GOP/s (int8).
    pub rate: f64,
    /// Our fp32 GEMM on the same shape (pre-packed B), same run.
    pub f32_gflops: f64,
    pub ratio_vs_f32: f64,
    /// `TDPBF16PS` / `TDPBSSD` probe peak for `threads` threads, this run
    /// (absent without AMX).
    pub amx_peak: Option<f64>,
    pub peak_fraction: Option<f64>,
    /// Weight bytes read per second (packed B bytes / time per call).
    pub weight_gbps: f64,
}

/// Runs the low-precision benchmark for `elem` on each thread count.
pub fn run(opts: &GemmBenchOptions, elem: Elem) -> Result<(), GemmBenchError> {
    let isa = match &opts.isa {
        Some(name) => Isa::force(name)?,
        None => Isa::from_env()?,
    };
    let path = LowpPath::from_env(elem)?;
    let mut out = std::io::stdout().lock();
    let mut records = Vec::new();
    for &threads in &opts.threads {
        let team = ThreadTeam::new(threads.max(1))?;
        let peak = amx_peak(&team, elem, if opts.quick { 50 } else { 200 });
        eprintln!(
            "[gemm bench] {} on {}, {threads} thread(s), fp32 isa {isa}, AMX peak {}",
            elem.name(),
            path.describe(elem),
            peak.map_or("n/a".to_owned(), |p| format!("{p:.0} G{}/s", unit(elem)))
        );
        for (m, k, n) in shapes() {
            let rec = measure(&team, isa, path, elem, (m, k, n), peak, opts.quick)?;
            eprintln!(
                "[gemm bench] {:>16} t={threads}: {} {:8.1} G{}/s, fp32 {:7.1}, x{:.2}{}",
                rec.shape,
                rec.path,
                rec.rate,
                unit(elem),
                rec.f32_gflops,
                rec.ratio_vs_f32,
                rec.peak_fraction.map_or(String::new(), |f| format!(
                    ", {:.1}% of AMX peak",
                    f * 100.0
                ))
            );
            if opts.json {
                writeln!(out, "{}", serde_json::to_string(&rec)?)?;
            }
            records.push(rec);
        }
    }
    if !opts.json {
        write!(out, "{}", table(&records, elem))?;
    }
    Ok(())
}

fn unit(elem: Elem) -> &'static str {
    match elem {
        Elem::Bf16 => "FLOP",
        Elem::Int8 => "OP",
    }
}

fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v = vec![(2048, 2048, 2048)];
    for (k, n) in [(1024, 1024), (4096, 4096)] {
        for m in [1, 16, 64] {
            v.push((m, k, n));
        }
    }
    v
}

/// The probe run on every thread of the team at once, summed.
fn amx_peak(team: &ThreadTeam, elem: Elem, ms: u64) -> Option<f64> {
    let budget = Duration::from_millis(ms);
    let rates: Vec<std::sync::Mutex<Option<f64>>> = (0..team.threads())
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    team.run(&|t| {
        let r = match elem {
            Elem::Bf16 => probe::amx_bf16_peak_gflops(budget),
            Elem::Int8 => probe::amx_int8_peak_gops(budget),
        };
        if let Ok(mut slot) = rates[t].lock() {
            *slot = r;
        }
    });
    rates
        .iter()
        .map(|r| r.lock().ok().and_then(|g| *g))
        .sum::<Option<f64>>()
}

/// A 64-byte-aligned zeroed f32 buffer of `len` (tile stores to C run at
/// full speed only on whole cache lines), as `(storage, offset)`.
fn aligned_f32(len: usize) -> (Vec<f32>, usize) {
    let v = vec![0.0f32; len + 16];
    let off = v.as_ptr().align_offset(64);
    (v, off)
}

fn measure(
    team: &ThreadTeam,
    isa: Isa,
    path: LowpPath,
    elem: Elem,
    (m, k, n): (usize, usize, usize),
    peak: Option<f64>,
    quick: bool,
) -> Result<LowpRecord, GemmBenchError> {
    let threads = team.threads();
    let a = fill(m * k, 1);
    let w = fill(k * n, 2);
    let (mut c_low, off_low) = aligned_f32(m * n);
    let (mut c_f32, off_f32) = aligned_f32(m * n);
    let low = PackedLowp::new(MatRef::new(&w, k, n, n)?, elem);
    let fp = PackedB::new(&w, n, k, n, isa)?;
    let mut s_low = vec![0u8; lowp::scratch_bytes(elem, m, k)];
    let mut s_f32 = vec![0u8; gemm::gemm_scratch_bytes_parallel(m, n, k, isa, threads)];
    let epi = Epilogue::new();

    let run_low = |c: &mut [f32], s: &mut [u8]| -> Result<(), gemm::GemmError> {
        let (am, cm) = (MatRef::new(&a, m, k, k)?, MatMut::new(c, m, n, n)?);
        lowp::gemm_parallel(team, path, 1.0, am, &low, 0.0, cm, &epi, s)
    };
    let run_f32 = |c: &mut [f32], s: &mut [u8]| -> Result<(), gemm::GemmError> {
        let (am, cm) = (MatRef::new(&a, m, k, k)?, MatMut::new(c, m, n, n)?);
        gemm::sgemm_parallel(team, isa, 1.0, am, BMatrix::Packed(&fp), 0.0, cm, &epi, s)
    };
    // Validate once outside the timed loops, so they cannot fail silently.
    run_low(&mut c_low[off_low..off_low + m * n], &mut s_low)?;
    run_f32(&mut c_f32[off_f32..off_f32 + m * n], &mut s_f32)?;
    let mut f_low = || {
        let _ = run_low(&mut c_low[off_low..off_low + m * n], &mut s_low);
    };
    let mut f_f32 = || {
        let _ = run_f32(&mut c_f32[off_f32..off_f32 + m * n], &mut s_f32);
    };
    let timing = if quick {
        Timing::new(3, 10)
    } else {
        Timing::new(6, 30)
    };
    let best = race(&timing, &mut [&mut f_low, &mut f_f32]);
    let ops = 2.0 * (m * k * n) as f64;
    let rate = ops / best[0] / 1e9;
    let f32_gflops = ops / best[1] / 1e9;
    Ok(LowpRecord {
        shape: format!("{m}x{k}x{n}"),
        m,
        k,
        n,
        threads,
        precision: elem.name().to_owned(),
        path: path.describe(elem).to_owned(),
        rate,
        f32_gflops,
        ratio_vs_f32: best[1] / best[0],
        amx_peak: peak,
        peak_fraction: peak.map(|p| rate / p),
        weight_gbps: low.weight_bytes() as f64 / best[0] / 1e9,
    })
}

/// The human report.
pub fn table(records: &[LowpRecord], elem: Elem) -> String {
    let u = unit(elem);
    let mut s = format!(
        "{:>16} {:>3} {:>13} {:>10} {:>10} {:>7} {:>10} {:>6} {:>9}\n",
        "shape MxKxN",
        "thr",
        "path",
        format!("G{u}/s"),
        "fp32 GF/s",
        "x fp32",
        format!("AMX G{u}/s"),
        "peak%",
        "W GB/s"
    );
    for r in records {
        s.push_str(&format!(
            "{:>16} {:>3} {:>13} {:>10.1} {:>10.1} {:>7.2} {:>10} {:>6} {:>9.1}\n",
            r.shape,
            r.threads,
            r.path,
            r.rate,
            r.f32_gflops,
            r.ratio_vs_f32,
            r.amx_peak.map_or("-".to_owned(), |p| format!("{p:.0}")),
            r.peak_fraction
                .map_or("-".to_owned(), |f| format!("{:.1}", f * 100.0)),
            r.weight_gbps
        ));
    }
    s
}
