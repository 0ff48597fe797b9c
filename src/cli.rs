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
}

#[derive(Subcommand, Debug)]
enum BenchCommand {}

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
        Command::Info { json, root } => {
            let report = InfoReport::collect(&root)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
        }
        Command::Bench(bench) => match bench {},
    }
    Ok(())
}
