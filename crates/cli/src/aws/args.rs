//! The AWS services' options. Every option also comes from the environment
//! (`TRAILWATCH_*`, plus the SDK's own `AWS_*`); values are checked once, in
//! [`super::Settings`], and a missing one is named with its flag and variable.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Secret;

/// Where the services find AWS and the shared resources.
#[derive(Debug, Args, Clone, Default)]
pub struct AwsOptions {
    /// AWS region (default: from AWS_REGION or the profile).
    #[arg(long, env = "TRAILWATCH_REGION")]
    pub region: Option<String>,
    /// One endpoint for every AWS service: a local emulator (S3 then uses path-style addressing).
    #[arg(long, env = "TRAILWATCH_AWS_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// Role assumed for Organizations reads (the management or delegated-administrator account).
    #[arg(long, env = "TRAILWATCH_ORGANIZATIONS_ROLE_ARN")]
    pub organizations_role_arn: Option<String>,
    /// External id the Organizations role requires.
    #[arg(long, env = "TRAILWATCH_ORGANIZATIONS_EXTERNAL_ID", hide_env_values = true)]
    pub organizations_external_id: Option<Secret>,
    /// Prefix of the DynamoDB tables: `<prefix>-sessions`, `-ledger`, `-pending`, `-alerts`, `-aliases`.
    #[arg(long, env = "TRAILWATCH_TABLE_PREFIX", default_value = "trailwatch")]
    pub table_prefix: String,
    /// The organization trail's bucket.
    #[arg(long, env = "TRAILWATCH_TRAIL_BUCKET")]
    pub trail_bucket: Option<String>,
    /// Key prefix of the trail in its bucket (before `AWSLogs/`), if the trail has one.
    #[arg(long, env = "TRAILWATCH_TRAIL_PREFIX", default_value = "")]
    pub trail_prefix: String,
    /// Bucket of the enriched history (default: the trail bucket).
    #[arg(long, env = "TRAILWATCH_HISTORY_BUCKET")]
    pub history_bucket: Option<String>,
    /// Key prefix of the enriched history.
    #[arg(long, env = "TRAILWATCH_HISTORY_PREFIX", default_value = "trailwatch/events")]
    pub history_prefix: String,
    /// Athena database holding the trail and history tables.
    #[arg(long, env = "TRAILWATCH_ATHENA_DATABASE", default_value = "trailwatch")]
    pub athena_database: String,
    /// Athena workgroup (its bytes-scanned limit and result location apply).
    #[arg(long, env = "TRAILWATCH_ATHENA_WORKGROUP", default_value = "primary")]
    pub athena_workgroup: String,
    /// Athena result location (`s3://…/`), when the workgroup does not enforce one.
    #[arg(long, env = "TRAILWATCH_ATHENA_OUTPUT")]
    pub athena_output: Option<String>,
    /// Table over the raw organization trail.
    #[arg(long, env = "TRAILWATCH_ATHENA_TRAIL_TABLE", default_value = "cloudtrail")]
    pub athena_trail_table: String,
    /// Table over the enriched history.
    #[arg(long, env = "TRAILWATCH_ATHENA_EVENTS_TABLE", default_value = "events")]
    pub athena_events_table: String,
    /// Largest scan one Athena query may make, in bytes.
    #[arg(long, env = "TRAILWATCH_ATHENA_MAX_BYTES", default_value_t = 10_000_000_000)]
    pub athena_max_bytes: u64,
    /// Address of `/metrics` and `/healthz` (collector and enricher).
    #[arg(long, env = "TRAILWATCH_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds one attempt of an AWS request may take before it is abandoned and tried again (an SQS long poll adds its wait).
    #[arg(long, env = "TRAILWATCH_AWS_ATTEMPT_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=900))]
    pub aws_attempt_timeout: u64,
    /// Tries of one AWS request, the first included (throttling, 5xx, resets and timeouts are tried again, with backoff and jitter).
    #[arg(long, env = "TRAILWATCH_AWS_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub aws_max_attempts: u32,
    /// Seconds an Athena query may run before it is stopped (the events that needed it wait and are tried again).
    #[arg(long, env = "TRAILWATCH_ATHENA_TIMEOUT", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub athena_timeout: u64,
    /// Seconds identity resolution waits, after Athena failed or timed out, before asking it again (the events that need it wait meanwhile).
    #[arg(long, env = "TRAILWATCH_ATHENA_RETRY", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub athena_retry: u64,
    /// Minutes of trail time (behind the newest event seen) an event waits for a missing session
    /// before its origin becomes final: the fallback the record offers, else unresolved. Raise it
    /// for backfills that deliver accounts far apart in trail time.
    #[arg(long, env = "TRAILWATCH_PENDING_BOUND_MINUTES", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub pending_bound_minutes: u64,
}

/// How a service reads its queue.
#[derive(Debug, Args, Clone)]
pub struct QueueOptions {
    /// Seconds a receive waits for messages (long polling, at most 20).
    #[arg(long, env = "TRAILWATCH_WAIT_SECONDS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=20))]
    pub wait_seconds: u64,
    /// Seconds a received message stays invisible; extended while its file is processed.
    #[arg(long, env = "TRAILWATCH_VISIBILITY_SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=43_200))]
    pub visibility_seconds: u64,
    /// Files processed at the same time.
    #[arg(long, env = "TRAILWATCH_WORKERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub workers: u16,
    /// Seconds between reads of the queue's and its dead-letter queue's depth for /metrics (with --metrics-listen).
    #[arg(long, env = "TRAILWATCH_QUEUE_METRICS_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub queue_metrics_seconds: u64,
}

#[derive(Debug, Args)]
pub struct CollectorArgs {
    #[command(flatten)]
    pub aws: AwsOptions,
    #[command(flatten)]
    pub queue: QueueOptions,
    /// Queue of the trail bucket's object notifications (URL or name).
    #[arg(long, env = "TRAILWATCH_NOTIFICATION_QUEUE")]
    pub notification_queue: Option<String>,
    /// Queue the enricher reads (URL or name).
    #[arg(long, env = "TRAILWATCH_ENRICHER_QUEUE")]
    pub enricher_queue: Option<String>,
    /// Seconds a file waits in the enricher queue, so sessions from files delivered at the same time land first.
    #[arg(long, env = "TRAILWATCH_ENRICHER_DELAY", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=900))]
    pub enricher_delay: u64,
    /// Seconds a claimed file stays this collector's before another may take it.
    #[arg(long, env = "TRAILWATCH_CLAIM_SECONDS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(30..=43_200))]
    pub claim_seconds: u64,
}

#[derive(Debug, Args)]
pub struct EnricherArgs {
    #[command(flatten)]
    pub aws: AwsOptions,
    #[command(flatten)]
    pub queue: QueueOptions,
    /// Queue the collector hands files to (URL or name).
    #[arg(long, env = "TRAILWATCH_ENRICHER_QUEUE")]
    pub enricher_queue: Option<String>,
    /// SNS topic every alert transition is published to.
    #[arg(long, env = "TRAILWATCH_ALERT_TOPIC_ARN")]
    pub alert_topic_arn: Option<String>,
    /// Directory of rules (*.yml) added to the built-in pack.
    #[arg(long, env = "TRAILWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Seconds between refreshes of the account list from Organizations.
    #[arg(long, env = "TRAILWATCH_ACCOUNTS_REFRESH", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(10..))]
    pub accounts_refresh: u64,
    /// Do not read Organizations (accounts are then known by id only).
    #[arg(long)]
    pub no_organizations: bool,
    /// Minutes an event may arrive behind the newest event seen and still count in threshold
    /// windows (files arrive out of order; raise it for backfills).
    #[arg(long, env = "TRAILWATCH_RULE_LATENESS_MINUTES", default_value_t = 15, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub rule_lateness_minutes: u64,
    /// Do not query Athena for sessions the session table lacks.
    #[arg(long)]
    pub no_athena: bool,
    /// Do not check digest files (signature, chain, listed log files): they are then only recorded.
    #[arg(long, env = "TRAILWATCH_NO_DIGEST_CHECK")]
    pub no_digest_check: bool,
    /// Public keys of digest signatures (the JSON `aws cloudtrail list-public-keys` prints);
    /// keys not in it are asked of CloudTrail's ListPublicKeys in each digest's region.
    #[arg(long, env = "TRAILWATCH_PUBLIC_KEYS")]
    pub public_keys: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub aws: AwsOptions,
    /// Queue the enricher reads (URL or name): missing files are handed to it.
    #[arg(long, env = "TRAILWATCH_ENRICHER_QUEUE")]
    pub enricher_queue: Option<String>,
    /// First day to look at: `2026-11-01` or a time.
    #[arg(long)]
    pub since: String,
    /// Last day to look at (default: today).
    #[arg(long)]
    pub until: Option<String>,
    /// Only these accounts (12 digits, comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// Report completeness without enqueueing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AwsSetupArgs {
    #[command(flatten)]
    pub aws: AwsOptions,
    /// Name prefix of the queues and the alert topic.
    #[arg(long, default_value = "trailwatch")]
    pub name_prefix: String,
    /// Receives before a notification goes to the dead-letter queue.
    #[arg(long, default_value_t = 5)]
    pub max_receive_count: u32,
}
