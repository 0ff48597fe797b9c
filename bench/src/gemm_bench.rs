//! `pinned bench gemm [--quick] [--json] [--threads 1,2]`: our fp32 GEMM
//! against `matrixmultiply` and `gemm` in the same run, beside this
//! machine's FMA peak and read bandwidth measured by probes in that run.
//!
//! Shapes: a cache-resident reference (28 x 1024 x 256), square 256..2048
//! (B plain, packed per call, as the peers do), and
//! the inference shapes M in {1, 4, 16, 64, 256} x (K, N) in {(384, 1536),
//! (1536, 384), (1024, 1024), (4096, 4096)} with B pre-packed once (model
//! weights are; the peers pack theirs per call, which is their cost).
//!
//! `matrixmultiply` reads its thread count (`MATMUL_NUM_THREADS`) once per
//! process, so each thread count is measured in a child process (this same
//! command line re-run with [`CHILD_ENV`] set); the parent collects the
//! children's JSON records and prints them.
//!
//! Timing: each sample runs enough calls to last a few milliseconds (at
//! least one call), the best of many samples counts (the least-disturbed
//! window on a shared machine), and the three libraries are interleaved
//! sample by sample so that load affects all of them alike. The probes run
//! in the same interleaving: the FMA probe with every shape (peak% divides
//! by the best probe of a thread count's whole run, so a disturbed start
//! cannot flatter it; adj% by the probe raced beside that shape, the
//! machine's speed in the same windows), the read-bandwidth probe with each M = 1
//! shape over its own buffer of B's size (so it is exactly as warm in L3).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use pinned_kernels::gemm::{self, BMatrix, Epilogue, MatMut, MatRef, PackedB, Team, ThreadTeam};
use pinned_kernels::Isa;

use crate::race::{fill, race, Timing};

pub mod peers;
pub mod probes;

/// Set (to the thread count) in the child processes.
pub const CHILD_ENV: &str = "PINNED_GEMM_BENCH_CHILD";

#[derive(Clone, Debug)]
pub struct GemmBenchOptions {
    /// Fewer, shorter samples (about a minute in all).
    pub quick: bool,
    /// One JSON record per line instead of the table.
    pub json: bool,
    /// Thread counts to measure (default 1 and 2).
    pub threads: Vec<usize>,
    /// Force an ISA (as `PINNED_ISA`); default: `PINNED_ISA` or the best.
    pub isa: Option<String>,
    /// `f32` (default), or `bf16` / `int8` for the low-precision GEMM
    /// beside our fp32 one and the AMX peak ([`crate::lowp_bench`]).
    pub precision: Option<String>,
}

impl Default for GemmBenchOptions {
    fn default() -> Self {
        Self {
            quick: false,
            json: false,
            threads: vec![1, 2],
            isa: None,
            precision: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GemmBenchError {
    #[error(transparent)]
    Isa(#[from] pinned_kernels::IsaError),
    #[error(transparent)]
    Gemm(#[from] gemm::GemmError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("child for {threads} thread(s) failed: {detail}")]
    Child { threads: usize, detail: String },
    #[error("bad record from child: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Precision(#[from] pinned_kernels::precision::PrecisionError),
}

/// One measured shape.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// `MxKxN`.
    pub shape: String,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub threads: usize,
    pub isa: String,
    /// `packed` (pre-packed B) or `plain` (B packed inside the call).
    pub b: String,
    pub gflops: f64,
    pub matrixmultiply_gflops: f64,
    pub gemm_gflops: f64,
    /// The better of the two peers.
    pub peer_gflops: f64,
    pub ratio_vs_best_peer: f64,
    /// FMA peak of `threads` cores measured by the probe in this run.
    pub peak_gflops: f64,
    pub peak_fraction: f64,
    /// The FMA probe raced beside this shape alone (best of its samples,
    /// interleaved with the GEMMs'), and our fraction of it: the machine's
    /// peak in the very windows this shape ran in. On a shared host whose
    /// speed drifts (the one-thread probe ranged 205-243 GFLOP/s within an
    /// hour here) it is the like-for-like divisor; `peak_fraction`, over
    /// the best probe of the whole run, is the conservative one.
    pub adjacent_peak_gflops: f64,
    pub adjacent_peak_fraction: f64,
    /// M = 1 only: read bandwidth over a buffer the size of B, and the
    /// fraction of it our GEMM reached (bytes of B / time).
    pub read_gbps: Option<f64>,
    pub bandwidth_fraction: Option<f64>,
}

/// Runs the benchmark (or, in a child process, one thread count of it).
pub fn run(opts: &GemmBenchOptions) -> Result<(), GemmBenchError> {
    if let Some(p) = &opts.precision {
        if let Some(elem) = pinned_kernels::precision::Precision::parse(p)?.elem() {
            return crate::lowp_bench::run(opts, elem);
        }
    }
    let isa = match &opts.isa {
        Some(name) => Isa::force(name)?,
        None => Isa::from_env()?,
    };
    if let Some(threads) = std::env::var(CHILD_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut out = std::io::stdout().lock();
        return measure(isa, threads, opts.quick, &mut |r| {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
            out.flush()?;
            Ok(())
        });
    }
    let mut records = Vec::new();
    for &threads in &opts.threads {
        let mut run = run_child(threads)?;
        // One peak per thread count: the best probe of the whole run.
        let peak = run.iter().map(|r| r.peak_gflops).fold(0.0, f64::max);
        for r in &mut run {
            r.peak_gflops = peak;
            r.peak_fraction = r.gflops / peak;
        }
        records.extend(run);
    }
    let mut out = std::io::stdout().lock();
    if opts.json {
        for r in &records {
            writeln!(out, "{}", serde_json::to_string(r)?)?;
        }
    } else {
        write!(out, "{}", table(&records))?;
    }
    Ok(())
}

fn run_child(threads: usize) -> Result<Vec<Record>, GemmBenchError> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, threads.to_string())
        .env("MATMUL_NUM_THREADS", threads.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut records = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if line.trim_start().starts_with('{') {
                records.push(serde_json::from_str(&line)?);
            }
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(GemmBenchError::Child {
            threads,
            detail: status.to_string(),
        });
    }
    Ok(records)
}

/// A cache-resident reference, square shapes, then inference shapes.
///
/// The reference (28 x 1024 x 256, B pre-packed: every operand in L2, A's
/// micro-panels in L1) shows what the microkernels reach when memory is
/// not in the way: the ceiling for the fractions of peak below it.
fn shapes() -> Vec<(usize, usize, usize, bool)> {
    let mut v = vec![(28, 1024, 256, true)];
    v.extend([256, 512, 1024, 2048].iter().map(|&s| (s, s, s, false)));
    for (k, n) in [(384, 1536), (1536, 384), (1024, 1024), (4096, 4096)] {
        for m in [1, 4, 16, 64, 256] {
            v.push((m, k, n, true));
        }
    }
    v
}

type Emit<'a> = dyn FnMut(&Record) -> Result<(), GemmBenchError> + 'a;

fn measure(
    isa: Isa,
    threads: usize,
    quick: bool,
    emit: &mut Emit<'_>,
) -> Result<(), GemmBenchError> {
    let team = ThreadTeam::new(threads)?;
    let timing = timing(quick);
    let peak = probes::fma_peak_gflops(&team, if quick { 50 } else { 200 });
    eprintln!("[gemm bench] {threads} thread(s), isa {isa}, FMA peak {peak:.1} GFLOP/s");
    for (m, k, n, packed) in shapes() {
        let rec = measure_shape(isa, &team, &timing, (m, k, n), packed, peak)?;
        eprintln!(
            "[gemm bench] {:>16} t={threads}: {:7.1} GFLOP/s, peers {:7.1} / {:7.1}, ratio {:.2}",
            rec.shape,
            rec.gflops,
            rec.matrixmultiply_gflops,
            rec.gemm_gflops,
            rec.ratio_vs_best_peer
        );
        emit(&rec)?;
    }
    Ok(())
}

/// Short samples, many of them: on a shared machine the best of many
/// short windows is the one least disturbed by other processes.
fn timing(quick: bool) -> Timing {
    if quick {
        Timing::new(2, 15)
    } else {
        Timing::new(4, 40)
    }
}

fn measure_shape(
    isa: Isa,
    team: &ThreadTeam,
    timing: &Timing,
    (m, k, n): (usize, usize, usize),
    packed: bool,
    peak: f64,
) -> Result<Record, GemmBenchError> {
    let threads = team.threads();
    let a = fill(m * k, 1);
    let b = fill(k * n, 2);
    // Each contender reads its own copy of B: had `gemm` shared
    // `matrixmultiply`'s, it would find B warm in L3 right after it.
    let b_gemm = b.clone();
    let mut c = vec![0.0f32; m * n];
    let mut c_mm = vec![0.0f32; m * n];
    let mut c_gemm = vec![0.0f32; m * n];
    let packed_b = PackedB::new(&b, n, k, n, isa)?;
    let mut scratch = vec![0u8; gemm::gemm_scratch_bytes_parallel(m, n, k, isa, threads)];
    let epi = Epilogue::new();

    // Validate once outside the timed loop, so the loop can't fail silently.
    let ours = |c: &mut [f32], scratch: &mut [u8]| -> Result<(), gemm::GemmError> {
        let bm = if packed {
            BMatrix::Packed(&packed_b)
        } else {
            BMatrix::Plain(MatRef::new(&b, k, n, n)?)
        };
        let cm = MatMut::new(c, m, n, n)?;
        let am = MatRef::new(&a, m, k, k)?;
        if threads == 1 {
            gemm::sgemm(isa, 1.0, am, bm, 0.0, cm, &epi, scratch)
        } else {
            gemm::sgemm_parallel(team, isa, 1.0, am, bm, 0.0, cm, &epi, scratch)
        }
    };
    ours(&mut c, &mut scratch)?;

    let mut f_ours = || {
        let _ = ours(&mut c, &mut scratch);
    };
    let mut f_mm = || peers::matrixmultiply_sgemm(m, k, n, &a, &b, &mut c_mm);
    let mut f_gemm = || peers::gemm_crate_sgemm(m, k, n, &a, &b_gemm, &mut c_gemm, threads);
    // For M = 1 the read-bandwidth probe runs in the same race, streaming
    // its own buffer of B's size: when the four buffers together overflow
    // L3, each one is as cold as the others when its turn comes.
    let probe = (m == 1).then(|| probes::ReadProbe::new(k * n));
    let mut f_probe = || {
        if let Some(p) = &probe {
            p.pass(team);
        }
    };
    // The FMA probe runs in the race too: the peak of the windows the
    // GEMMs ran in (the parent keeps the best of the whole run).
    let fma = probes::FmaProbe::default();
    let mut f_fma = || fma.pass(team);
    let mut contenders: Vec<&mut dyn FnMut()> =
        vec![&mut f_ours, &mut f_mm, &mut f_gemm, &mut f_fma];
    if m == 1 {
        contenders.push(&mut f_probe);
    }
    let best = race(timing, &mut contenders);
    let adjacent = fma.gflops(team, best[3]);
    let peak = peak.max(adjacent);
    let flop = 2.0 * m as f64 * n as f64 * k as f64;
    let gf = |s: f64| flop / s / 1e9;
    let (ours_gf, mm_gf, gemm_gf) = (gf(best[0]), gf(best[1]), gf(best[2]));
    let peer = mm_gf.max(gemm_gf);

    let (read_gbps, bandwidth_fraction) = match &probe {
        Some(p) => {
            let bw = p.bytes() as f64 / best[4] / 1e9;
            let ours_gbps = (k * n * 4) as f64 / best[0] / 1e9;
            (Some(bw), Some(ours_gbps / bw))
        }
        None => (None, None),
    };
    Ok(Record {
        shape: format!("{m}x{k}x{n}"),
        m,
        k,
        n,
        threads,
        isa: isa.name().to_owned(),
        b: if packed { "packed" } else { "plain" }.to_owned(),
        gflops: ours_gf,
        matrixmultiply_gflops: mm_gf,
        gemm_gflops: gemm_gf,
        peer_gflops: peer,
        ratio_vs_best_peer: ours_gf / peer,
        peak_gflops: peak,
        peak_fraction: ours_gf / peak,
        adjacent_peak_gflops: adjacent,
        adjacent_peak_fraction: ours_gf / adjacent,
        read_gbps,
        bandwidth_fraction,
    })
}

/// The human report.
pub fn table(records: &[Record]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:>16} {:>3} {:>7} {:>6} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6} {:>9} {:>6}\n",
        "shape MxKxN",
        "thr",
        "isa",
        "B",
        "GFLOP/s",
        "mmul",
        "gemm",
        "ratio",
        "peak%",
        "adj%",
        "read GB/s",
        "bw%"
    ));
    for r in records {
        let (bw, bwf) = match (r.read_gbps, r.bandwidth_fraction) {
            (Some(b), Some(f)) => (format!("{b:.1}"), format!("{:.0}", f * 100.0)),
            _ => ("-".into(), "-".into()),
        };
        s.push_str(&format!(
            "{:>16} {:>3} {:>7} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>7.2} {:>6.1} {:>6.1} {:>9} {:>6}\n",
            r.shape,
            r.threads,
            r.isa,
            r.b,
            r.gflops,
            r.matrixmultiply_gflops,
            r.gemm_gflops,
            r.ratio_vs_best_peer,
            r.peak_fraction * 100.0,
            r.adjacent_peak_fraction * 100.0,
            bw,
            bwf
        ));
    }
    let mut peaks: Vec<(usize, f64)> = records.iter().map(|r| (r.threads, r.peak_gflops)).collect();
    peaks.dedup_by_key(|p| p.0);
    for (threads, peak) in peaks {
        s.push_str(&format!(
            "FMA peak probe, {threads} thread(s): {peak:.1} GFLOP/s (best of the run)\n"
        ));
    }
    s.push_str(
        "ratio = ours / max(matrixmultiply, gemm); peak% = ours / the run's best FMA probe; \
         adj% = ours / the probe raced beside this shape; \
         bw% = B bytes / time / read bandwidth (M = 1)\n",
    );
    s
}
