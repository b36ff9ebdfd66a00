//! Command-line arguments. Every option can also come from the environment
//! (`TRAILWATCH_*`); values are validated here, once.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "trailwatch", version, about = "Watches every account of an AWS Organization through its CloudTrail trail")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest a trail directory and keep watching it for new files. Without
    /// --trail, generates a demo organization under the data directory and runs on it.
    Run(RunArgs),
    /// Read every new file of a trail directory once, then print a summary.
    Ingest(IngestArgs),
    /// Write stored events as JSON Lines, one original record per line, in event-time order.
    Export(ExportArgs),
    /// Generate a synthetic organization trail (deterministic for a seed).
    Gen(GenArgs),
    /// Show the ledger: files by status, and the files that failed or had records rejected.
    Ledger(LedgerArgs),
    /// Who is behind a temporary access key: the origin and chain of its session, as JSON.
    Resolve(ResolveArgs),
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The access key id (`ASIA…`) to resolve.
    pub access_key_id: String,
    /// When the key was used (the same id can be issued again later): a time, a date, or a duration back from now.
    /// Default: the newest event time stored.
    #[arg(long)]
    pub at: Option<String>,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// Directory of trailwatch's own database.
    #[arg(long, env = "TRAILWATCH_DATA", default_value = "trailwatch-data")]
    pub data: PathBuf,
}

#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Trail directory, laid out like the trail bucket (`AWSLogs/...`).
    #[arg(long, env = "TRAILWATCH_TRAIL")]
    pub trail: Option<PathBuf>,
    /// Only read keys under this prefix of the trail.
    #[arg(long, env = "TRAILWATCH_PREFIX", default_value = "")]
    pub prefix: String,
    /// Files read at the same time (default: the number of cores).
    #[arg(long, env = "TRAILWATCH_WORKERS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: Option<u16>,
    /// Store events without resolving who is behind them (to measure what resolution costs).
    #[arg(long)]
    pub no_identity: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    /// Seconds between scans of the trail directory.
    #[arg(long, env = "TRAILWATCH_INTERVAL", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
    /// Events in the generated demo organization (when --trail is not given).
    #[arg(long, default_value_t = 60_000)]
    pub demo_events: u64,
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Events at or after this time: `2024-01-15T00:00:00Z`, `2024-01-15`, or a duration back from now (`36h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Events before this time (same forms as --since).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this account (12 digits).
    #[arg(long)]
    pub account: Option<String>,
}

#[derive(Debug, Args)]
pub struct GenArgs {
    /// Output directory (created; files are laid out like the trail bucket).
    #[arg(long)]
    pub out: PathBuf,
    /// Member accounts in the organization.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(2..=5000))]
    pub accounts: u32,
    /// Days of traffic.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=400))]
    pub days: u32,
    /// Event records in all (both copies of a cross-account call count).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub events: u64,
    /// Seed: the same seed and options give the same files.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// End of the generated traffic (`2026-11-01T00:00:00Z` or a date).
    #[arg(long, default_value = "2026-11-01T00:00:00Z")]
    pub end: String,
    /// Threads (default: the number of cores; does not change the output).
    #[arg(long)]
    pub threads: Option<u16>,
}

#[derive(Debug, Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// How many problem files to list.
    #[arg(long, default_value_t = 20)]
    pub problems: usize,
    /// Print the records rejected from this object key, one JSON object per line.
    #[arg(long)]
    pub rejected: Option<String>,
}
