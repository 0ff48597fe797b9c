//! `pinned run`, `pinned sweep` and `pinned compare`: options (clap, in
//! `numactl` / `taskset` spelling) turned into configurations, runs,
//! records, tables and plots. The root crate's CLI flattens these.

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use pinned_allocator::Topology;

use super::config::{MemoryPlacement, PartitionConfig, Precision, RunConfig, Scenario};
use super::plot::{self, Bar, LoadPoint};
use super::record::{decode_histogram, unix_ms_now, utc_stamp, RunRecord};
use super::scenario;
use super::stats::latency_histogram;
use super::sweep::{self, MachineShape, Point, SweepSpec};
use super::table;

type BoxError = Box<dyn std::error::Error>;

/// Options shared by `run` and `sweep`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Partition CPUs, `taskset -c` form (`0-1`, `all`, `node:0`, `+0`).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Bind memory to these nodes (`numactl --membind`).
    #[arg(long, conflicts_with_all = ["interleave", "preferred"])]
    pub membind: Option<String>,
    /// Interleave memory over these nodes, or `all` (`numactl --interleave`).
    #[arg(long, conflicts_with = "preferred")]
    pub interleave: Option<String>,
    /// Prefer this node, fall back to others (`numactl --preferred`).
    #[arg(long)]
    pub preferred: Option<usize>,
    /// Do not pin workers to single CPUs (the scheduler places them).
    #[arg(long)]
    pub no_pin: bool,
    /// Worker threads per partition (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest batch a worker forms.
    #[arg(long)]
    pub batch: Option<usize>,
    /// How long a worker waits to fill a batch, in microseconds.
    #[arg(long)]
    pub max_wait_us: Option<u64>,
    /// How idle workers and waiting hosts wait: spin, yield or park
    /// (`yield:US` / `park:US` set the spin budget first).
    #[arg(long)]
    pub wait: Option<String>,
    /// `mlp` (built-in 1024-4096-1024-4096-1024), `mlp:256x1024x256`, a
    /// MiniLM directory or an MLP manifest (JSON).
    #[arg(long)]
    pub model: Option<String>,
    /// Weight precision: f32, bf16 or int8 (every model, the built-in MLP too).
    #[arg(long)]
    pub precision: Option<String>,
    /// single-stream, server, offline or multi-model (default: single-stream,
    /// then offline capacity, then server at --load of it).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Seconds measured per scenario (after the warm-up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up excluded from the measurement.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Open-loop arrival rate (server scenario), requests per second.
    #[arg(long)]
    pub qps: Option<f64>,
    /// Server load as a fraction of the measured offline capacity.
    #[arg(long)]
    pub load: Option<f64>,
    /// Completed requests needed at least (default: enough for p99).
    #[arg(long)]
    pub min_count: Option<u64>,
    /// Seed of the arrival schedule.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Multi-partition setup (TOML; see the README).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where records and plots go.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl RunArgs {
    /// The configuration these options describe (file first, options over it).
    pub fn to_config(&self) -> Result<RunConfig, BoxError> {
        let mut config = match &self.config {
            Some(path) => RunConfig::from_toml_file(path)?,
            None => RunConfig::default(),
        };
        if let Some(s) = &self.scenario {
            config.scenario = Scenario::parse(s)?;
        }
        if let Some(d) = self.duration {
            config.duration_s = d;
        }
        if let Some(w) = self.warmup {
            config.warmup_s = w;
        }
        if let Some(m) = self.min_count {
            config.min_count = m;
        }
        if let Some(l) = self.load {
            config.load_fraction = l;
        }
        if let Some(s) = self.seed {
            config.seed = s;
        }
        let precision = self
            .precision
            .as_deref()
            .map(Precision::parse)
            .transpose()?;
        for p in &mut config.partitions {
            self.apply(p, precision);
        }
        config.validate()?;
        Ok(config)
    }

    fn apply(&self, p: &mut PartitionConfig, precision: Option<Precision>) {
        if let Some(c) = &self.cpus {
            p.cpus = Some(c.clone());
        }
        if let Some(n) = &self.membind {
            p.memory = MemoryPlacement::Bind(n.clone());
        }
        if let Some(n) = &self.interleave {
            p.memory = MemoryPlacement::Interleave(n.clone());
        }
        if let Some(n) = self.preferred {
            p.memory = MemoryPlacement::Preferred(n);
        }
        if self.no_pin {
            p.pin = false;
        }
        if let Some(w) = self.workers {
            p.workers = Some(w);
        }
        if let Some(b) = self.batch {
            p.batch = b;
        }
        if let Some(u) = self.max_wait_us {
            p.max_wait_us = u;
        }
        if let Some(w) = &self.wait {
            p.wait = w.clone();
        }
        if let Some(m) = &self.model {
            p.model = m.clone();
        }
        if let Some(pr) = precision {
            p.precision = pr;
        }
        if let Some(q) = self.qps {
            p.qps = Some(q);
        }
    }
}

/// Runs one configuration, writes its record and percentile plot, prints
/// its table; returns the record.
fn run_and_record(
    config: &RunConfig,
    label: &str,
    dir: &Path,
    quiet: bool,
) -> Result<RunRecord, BoxError> {
    let record = scenario::run(config, label, !quiet)?;
    record.check()?;
    let path = record.write(dir)?;
    let svg = path.with_extension("svg");
    let hists: Vec<(String, Histogram<u64>)> = record
        .partitions
        .iter()
        .map(|p| {
            Ok((
                format!("{} {}", p.name, p.scenario),
                decode_histogram(&p.latency_hdr_base64)?,
            ))
        })
        .collect::<Result<_, super::record::RecordError>>()?;
    let series: Vec<(String, &Histogram<u64>)> =
        hists.iter().map(|(l, h)| (l.clone(), h)).collect();
    plot::percentile_plot(
        &svg,
        &format!("latency by percentile: {}", record.id),
        &series,
    )?;
    print!("{}", table::run_table(&record));
    println!(
        "  record        {}\n  plot          {}\n",
        path.display(),
        svg.display()
    );
    Ok(record)
}

/// Requests per second the configuration sustains: a short offline run.
fn capacity(base: &RunConfig, dir: &Path, quiet: bool) -> Result<(f64, RunRecord), BoxError> {
    let mut c = base.clone();
    c.scenario = Scenario::Offline;
    c.duration_s = (base.duration_s / 2.0).clamp(0.5, 5.0);
    c.min_count = 1;
    c.partitions.iter_mut().for_each(|p| p.qps = None);
    let record = run_and_record(&c, "capacity", dir, quiet)?;
    let tps: f64 = record.partitions.iter().map(|p| p.tps).sum();
    if tps.is_nan() || tps <= 0.0 {
        return Err("the capacity run completed no request".into());
    }
    Ok((tps, record))
}

/// `pinned run`.
pub fn run(args: &RunArgs) -> Result<(), BoxError> {
    let explicit = args.scenario.is_some() || args.config.is_some();
    let mut config = args.to_config()?;
    let dir = &args.results;
    if !explicit {
        // The default job: single-stream, then capacity, then server at 70%.
        if args.duration.is_none() {
            config.duration_s = 6.0;
        }
        config.scenario = Scenario::SingleStream;
        run_and_record(&config, "", dir, args.quiet)?;
        let (tps, _) = capacity(&config, dir, args.quiet)?;
        config.scenario = Scenario::Server;
        let qps = tps * config.load_fraction;
        config.partitions.iter_mut().for_each(|p| p.qps = Some(qps));
        run_and_record(
            &config,
            &format!("{:.0}pct", config.load_fraction * 100.0),
            dir,
            args.quiet,
        )?;
        return Ok(());
    }
    if config.scenario == Scenario::Server && config.partitions.iter().any(|p| p.qps.is_none()) {
        let (tps, _) = capacity(&config, dir, args.quiet)?;
        let qps = tps * config.load_fraction / config.partitions.len() as f64;
        config
            .partitions
            .iter_mut()
            .filter(|p| p.qps.is_none())
            .for_each(|p| p.qps = Some(qps));
    }
    run_and_record(&config, "", dir, args.quiet)?;
    Ok(())
}

/// Options of `pinned sweep`.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// PARAM=V1,V2,... (exactly one parameter: pin, placement, division,
    /// qps, load, workers, batch, max-wait-us, wait, cpus, precision, model).
    #[arg(long, required = true)]
    pub vary: Vec<String>,
    /// Interleaved repeats of every value (A B A B ...).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    #[command(flatten)]
    pub run: RunArgs,
}

fn machine_shape() -> Result<MachineShape, BoxError> {
    let topology = Topology::detect()?;
    let allowed = pinned_runtime::current_affinity()?;
    Ok(MachineShape {
        node_of_cpu: allowed.iter().map(|c| topology.node_of_cpu(c)).collect(),
        memory_nodes: topology.memory_nodes(),
        allowed,
    })
}

/// The configuration a sweep starts from: the options, with two partitions
/// of the same model when the division of cores is what varies.
fn sweep_base(args: &SweepArgs, spec: &SweepSpec) -> Result<RunConfig, BoxError> {
    let mut base = args.run.to_config()?;
    if args.run.duration.is_none() {
        base.duration_s = 4.0;
    }
    if spec.param == "division" && base.partitions.len() < 2 {
        let mut a = base.partitions[0].clone();
        let mut b = a.clone();
        a.name = "a".to_owned();
        b.name = "b".to_owned();
        base.partitions = vec![a, b];
        base.scenario = Scenario::MultiModel;
    }
    Ok(base)
}

/// `pinned sweep`.
pub fn sweep(args: &SweepArgs) -> Result<(), BoxError> {
    let spec = SweepSpec::parse(&args.vary)?;
    let repeats = args.repeats.max(1);
    let mut base = sweep_base(args, &spec)?;
    let dir = args
        .run
        .results
        .join(format!("sweep-{}-{}", utc_stamp(unix_ms_now()), spec.param));
    // An open loop needs the same offered load in every configuration:
    // measure the first configuration's capacity once and hold it fixed.
    if base.scenario == Scenario::Server
        && base.partitions.iter().any(|p| p.qps.is_none())
        && spec.param != "qps"
    {
        let (tps, _) = capacity(&base, &dir, args.run.quiet)?;
        let qps = tps * base.load_fraction / base.partitions.len() as f64;
        base.partitions.iter_mut().for_each(|p| p.qps = Some(qps));
        println!("offered load fixed for every value: {qps:.1} req/s per partition\n");
    }
    let points = sweep::points(&spec, &base, &machine_shape()?)?;
    let mut values = Vec::new();
    let mut configs = Vec::new();
    for p in points {
        match p {
            Point::Run { value, config } => {
                values.push(value);
                configs.push(config);
            }
            Point::Skipped { value, reason } => {
                println!("skipping {}={value}: {reason}", spec.param)
            }
        }
    }
    if values.is_empty() {
        return Err(format!("no value of {} can run on this machine", spec.param).into());
    }
    let mut runs: Vec<Vec<RunRecord>> = vec![Vec::new(); configs.len()];
    for (r, c) in sweep::interleaved_order(configs.len(), repeats) {
        let label = format!("{}={}-r{}", spec.param, values[c], r + 1);
        println!("-- {label}");
        runs[c].push(run_and_record(&configs[c], &label, &dir, args.run.quiet)?);
    }
    let rows = sweep::summarise(&values, &runs);
    let summary = table::sweep_table(&spec.param, repeats, &rows);
    println!("{summary}");
    std::fs::write(dir.join("summary.txt"), &summary)?;
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    for plot_path in sweep_plots(&spec, &values, &runs, &rows, &dir)? {
        println!("plot          {}", plot_path.display());
    }
    println!("records       {}", dir.display());
    Ok(())
}

/// Bars for p50, p99 and throughput, one percentile plot of every value
/// (repeats merged), and latency against throughput for a QPS sweep.
fn sweep_plots(
    spec: &SweepSpec,
    values: &[String],
    runs: &[Vec<RunRecord>],
    rows: &[sweep::MetricRow],
    dir: &Path,
) -> Result<Vec<PathBuf>, BoxError> {
    let mut written = Vec::new();
    for (metric, unit) in [("p50", "us"), ("p99", "us"), ("tps", "req/s")] {
        let bars: Vec<Bar> = rows
            .iter()
            .filter(|r| r.metric == metric)
            .map(|r| Bar {
                label: r.value.clone(),
                median: r.median,
                low: r.min,
                high: r.max,
            })
            .collect();
        let path = dir.join(format!("bars-{}.svg", metric.replace('.', "_")));
        plot::bars(
            &path,
            &format!("{metric} by {} (median, min..max of repeats)", spec.param),
            &format!("{metric} ({unit})"),
            &bars,
        )?;
        written.push(path);
    }
    let mut merged = Vec::new();
    for (value, rs) in values.iter().zip(runs) {
        let mut h = latency_histogram();
        for r in rs {
            for p in &r.partitions {
                h.add(decode_histogram(&p.latency_hdr_base64)?)?;
            }
        }
        merged.push((format!("{}={value}", spec.param), h));
    }
    let series: Vec<(String, &Histogram<u64>)> =
        merged.iter().map(|(l, h)| (l.clone(), h)).collect();
    let path = dir.join("percentiles.svg");
    plot::percentile_plot(
        &path,
        &format!("latency by percentile, {} sweep", spec.param),
        &series,
    )?;
    written.push(path);
    if spec.param == "qps" {
        let points: Vec<LoadPoint> = values
            .iter()
            .zip(runs)
            .filter_map(|(v, rs)| {
                let med = |name: &str| {
                    let xs: Vec<f64> = rs.iter().filter_map(|r| sweep::metric(r, name)).collect();
                    super::stats::median(&xs)
                };
                Some(LoadPoint {
                    offered_qps: v.parse().ok()?,
                    achieved_tps: med("tps"),
                    p50_us: med("p50"),
                    p99_us: med("p99"),
                })
            })
            .collect();
        let path = dir.join("latency-vs-throughput.svg");
        plot::latency_vs_throughput(&path, "latency against throughput (QPS sweep)", &points)?;
        written.push(path);
    }
    Ok(written)
}

/// Options of `pinned compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// The baseline record (JSON).
    pub a: PathBuf,
    /// The record compared with it.
    pub b: PathBuf,
}

/// `pinned compare`.
pub fn compare(args: &CompareArgs) -> Result<(), BoxError> {
    let a = RunRecord::read(&args.a)?;
    let b = RunRecord::read(&args.b)?;
    // A record that is not internally consistent is not evidence.
    a.check()
        .map_err(|e| format!("{}: {e}", args.a.display()))?;
    b.check()
        .map_err(|e| format!("{}: {e}", args.b.display()))?;
    let text = super::compare::report(
        &a,
        &b,
        &args.a.display().to_string(),
        &args.b.display().to_string(),
    )?;
    print!("{text}");
    Ok(())
}
