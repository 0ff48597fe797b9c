//! The `pinned` command line: `info`, `bench ...`, and (with the runtime) `run`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::info::InfoReport;

#[derive(Parser, Debug)]
#[command(
    name = "pinned",
    version,
    about = "A CPU inference runtime that owns placement"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// What a performance engineer checks first: NUMA nodes, allowed CPUs and
    /// memory, memory policy, CPU features, caches, huge pages, limits.
    Info {
        /// Print one JSON object (field names documented in the README).
        #[arg(long)]
        json: bool,
        /// Read sysfs and procfs below this directory instead of `/` (for fixtures).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Microbenchmarks that report ratios against peers measured in the same run.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure: the built-in MLP (or --model) on a partition, single-stream
    /// then server at 70% of the measured capacity; numactl/taskset options.
    Run(pinned_bench::harness::commands::RunArgs),
    /// Vary exactly one parameter (--vary PARAM=V1,V2), runs interleaved,
    /// medians with bootstrap confidence intervals, SVG plots.
    Sweep(pinned_bench::harness::commands::SweepArgs),
    /// What differs between two run records, and the metric deltas.
    Compare(pinned_bench::harness::commands::CompareArgs),
    /// The system libraries to link after libpinned.a (or, with
    /// --pkg-config PREFIX, a pinned.pc for that install prefix).
    LinkFlags {
        #[arg(long, value_name = "PREFIX")]
        pkg_config: Option<String>,
    },
    /// Sentence embeddings (all-MiniLM-L6-v2) of each text, as one batch.
    Embed(EmbedArgs),
}

#[derive(clap::Args, Debug)]
struct EmbedArgs {
    /// The texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
    /// Directory with model.safetensors, tokenizer.json, config.json
    /// (default: $PINNED_MINILM_DIR).
    #[arg(long, value_name = "DIR")]
    model_dir: Option<PathBuf>,
    /// Weight precision: f32, bf16 or int8.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Weight placement: os, node:N, interleave:LIST, replicate:LIST.
    #[arg(long, default_value = "os")]
    placement: String,
    /// Longest input in tokens (longer texts are truncated).
    #[arg(long, default_value_t = 512)]
    max_seq: usize,
    /// One JSON object: model, precision, kernel, embeddings.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// fp32 GEMM vs `matrixmultiply` and `gemm`, with the FMA peak and read
    /// bandwidth measured in the same run.
    Gemm {
        /// Fewer, shorter samples.
        #[arg(long)]
        quick: bool,
        /// One JSON record per shape and thread count, one per line.
        #[arg(long)]
        json: bool,
        /// Thread counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Force an ISA (scalar, avx2, avx512); default `PINNED_ISA` or the best.
        #[arg(long)]
        isa: Option<String>,
        /// bf16 or int8: the low-precision GEMM beside our fp32 GEMM and the
        /// AMX peak probe (path: `PINNED_LOWP_PATH` or the best); default f32.
        #[arg(long)]
        precision: Option<String>,
    },
    /// Request ring round trip (p50/p99/p99.9, spin and futex) and
    /// throughput beside a two-cache-line ping-pong floor and crossbeam's
    /// `ArrayQueue`, plus the futex wake cost.
    Ring {
        /// Fewer iterations.
        #[arg(long)]
        quick: bool,
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// Host and worker CPUs as `A,B`; default the first two allowed.
        #[arg(long)]
        cpus: Option<String>,
    },
    /// pinned and ONNX Runtime (bench/peers) alternately on the same model,
    /// scenario and cores; prints pinned/peer ratios of p50, p99, p99.9,
    /// stddev and TPS with their spread over the rounds.
    E2e(E2eArgs),
}

#[derive(clap::Args, Debug)]
struct E2eArgs {
    /// The peer; when given and its environment is missing, the command fails.
    #[arg(long)]
    peer: Option<String>,
    /// `mlp`, `mlp:WxWx..`, `minilm` (PINNED_MINILM_DIR), a MiniLM dir or MLP manifest.
    #[arg(long, default_value = "mlp")]
    model: String,
    /// single-stream, server (each engine at --load of its own capacity) or offline.
    #[arg(long, default_value = "single-stream")]
    scenario: String,
    /// pinned's weight precision (f32, bf16, int8); the peer runs f32.
    #[arg(long, default_value = "f32")]
    precision: String,
    /// CPU list (taskset -c form); default all allowed.
    #[arg(long)]
    cpus: Option<String>,
    /// Worker threads (pinned) = intra-op threads (peer); default one per CPU.
    #[arg(long)]
    workers: Option<usize>,
    /// pinned's workers alone, when they should differ from the peer's
    /// threads (e.g. 1: one worker forms whole batches, its GEMMs on all cores).
    #[arg(long)]
    pinned_workers: Option<usize>,
    #[arg(long, default_value_t = 1)]
    batch: usize,
    #[arg(long, default_value_t = 0)]
    max_wait_us: u64,
    /// MiniLM tokens per request.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// A B pairs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Completed requests each run needs at least (default: enough for p99).
    #[arg(long)]
    min_count: Option<u64>,
    /// Server load as a fraction of each engine's own capacity.
    #[arg(long, default_value_t = 0.7)]
    load: f64,
    /// Directory for the run records.
    #[arg(long, default_value = "results/e2e")]
    out: PathBuf,
}

/// Writes `text` to stdout; a closed pipe (`pinned info | head`) is not an error.
fn emit(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("pinned: {err}");
            1
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Embed(a) => {
            let placement = pinned_runtime::models::WeightPlacement::parse(&a.placement)
                .ok_or_else(|| format!("bad --placement `{}`", a.placement))?;
            emit(&pinned_runtime::models::embed(
                &pinned_runtime::models::EmbedRequest {
                    model_dir: a.model_dir,
                    texts: a.texts,
                    precision: a.precision.parse()?,
                    placement,
                    max_seq: a.max_seq,
                    json: a.json,
                },
            )?)?;
        }
        Command::LinkFlags { pkg_config } => match pkg_config {
            Some(prefix) => emit(&crate::link::pkg_config(&prefix))?,
            None => emit(&format!("{}\n", crate::link::NATIVE_STATIC_LIBS))?,
        },
        Command::Run(args) => pinned_bench::harness::commands::run(&args)?,
        Command::Sweep(args) => pinned_bench::harness::commands::sweep(&args)?,
        Command::Compare(args) => pinned_bench::harness::commands::compare(&args)?,
        Command::Info { json, root } => {
            let report = InfoReport::collect(&root)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
        }
        Command::Bench(bench) => match bench {
            BenchCommand::Gemm {
                quick,
                json,
                threads,
                isa,
                precision,
            } => pinned_bench::gemm_bench::run(&pinned_bench::gemm_bench::GemmBenchOptions {
                quick,
                json,
                threads,
                isa,
                precision,
            })?,
            BenchCommand::E2e(a) => {
                use pinned_bench::harness::config::{Precision, Scenario};
                let defaults = pinned_bench::e2e::E2eOptions::default();
                let options = pinned_bench::e2e::E2eOptions {
                    model: a.model,
                    scenario: Scenario::parse(&a.scenario)?,
                    precision: Precision::parse(&a.precision)?,
                    cpus: a.cpus,
                    workers: a.workers,
                    pinned_workers: a.pinned_workers,
                    batch: a.batch,
                    max_wait_us: a.max_wait_us,
                    seq: a.seq,
                    rounds: a.rounds,
                    duration_s: a.duration,
                    warmup_s: a.warmup,
                    min_count: a.min_count.unwrap_or(defaults.min_count),
                    load: a.load,
                    peer: a.peer,
                    out: a.out,
                };
                pinned_bench::e2e::run(&options)?;
            }
            BenchCommand::Ring { quick, json, cpus } => {
                pinned_bench::ring_bench::run(&pinned_bench::ring_bench::RingBenchOptions {
                    quick,
                    json,
                    cpus,
                })?
            }
        },
    }
    Ok(())
}
