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
    /// The detection rules: list them, or run their tests.
    Rules(RulesArgs),
    /// Alerts: list, show, acknowledge, resolve.
    Alerts(AlertsArgs),
    /// Serve the GraphQL API over the data directory (without ingesting).
    Api(ApiArgs),
    /// Run one GraphQL query against the data directory, without a server, and print the JSON response.
    Query(QueryArgs),
    /// AWS mode: consume the trail bucket's notifications; record sessions; hand files to the enricher.
    Collector(crate::aws::args::CollectorArgs),
    /// AWS mode: resolve, check rules, raise alerts (SNS) and write enriched history for the files handed on.
    Enricher(crate::aws::args::EnricherArgs),
    /// AWS mode: list the trail bucket by account, region and day; hand the enricher what the ledger lacks.
    Backfill(crate::aws::args::BackfillArgs),
    /// AWS mode: create the tables, queues, topics and bucket notifications (development accounts, emulators).
    AwsSetup(crate::aws::args::AwsSetupArgs),
    /// Which accounts of the organization delivered no CloudTrail logs within a window, by region
    /// (embedded, or --aws: Organizations against the trail bucket). Exits 3 when an active account is silent.
    Onboarding(crate::commands::onboarding::OnboardingArgs),
}

/// Where the API listens and who may use it.
#[derive(Debug, Args, Clone)]
pub struct ApiOptions {
    /// Address of the GraphQL API (`/graphql`, GraphiQL at `/`, `/healthz`, `/readyz`, `/metrics`).
    #[arg(long, env = "TRAILWATCH_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// An API token as `name:role:token` (role: viewer, responder or admin); repeatable.
    /// Without any token, one admin token is generated and printed at start.
    #[arg(long = "token", env = "TRAILWATCH_TOKEN", hide_env_values = true)]
    pub tokens: Vec<Secret>,
    /// A file of tokens, one `name:role:token` a line.
    #[arg(long, env = "TRAILWATCH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions { listen: ([127, 0, 0, 1], 8080).into(), tokens: Vec::new(), token_file: None }
    }
}

#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub api: ApiOptions,
    /// Rules (besides the built-in pack) the `rules` query lists.
    #[arg(long, env = "TRAILWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Serve from the AWS stores (DynamoDB, Athena, Organizations) instead of the data directory.
    #[arg(long)]
    pub aws: bool,
    #[command(flatten)]
    pub aws_options: crate::aws::args::AwsOptions,
    /// With --aws: do not read Organizations (accounts are then known by id only).
    #[arg(long)]
    pub no_organizations: bool,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The GraphQL query (or mutation, run as an admin).
    pub query: String,
    /// Variables, as a JSON object.
    #[arg(long)]
    pub variables: Option<String>,
    /// Rules (besides the built-in pack) the `rules` query lists.
    #[arg(long, env = "TRAILWATCH_RULES")]
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    pub command: RulesCommand,
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Every loaded rule (built-in pack plus --rules); exits non-zero naming each rule that fails to load.
    List(RulesDirArgs),
    /// Runs every rule's own test events; exits non-zero on a failure, saying which and why.
    Test(RulesDirArgs),
}

#[derive(Debug, Args)]
pub struct RulesDirArgs {
    /// Directory of rules (*.yml) added to the built-in pack; a rule with a built-in rule's id replaces it.
    #[arg(long, env = "TRAILWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Only this directory's rules, without the built-in pack.
    #[arg(long)]
    pub no_builtin: bool,
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    pub command: AlertsCommand,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Alerts, most recently changed first.
    List(AlertsListArgs),
    /// One alert with all its transitions, as JSON.
    Show {
        #[command(flatten)]
        data: DataArgs,
        id: String,
    },
    /// Acknowledge an alert: it stays open for updates and still resolves when quiet.
    Ack(AlertsOpArgs),
    /// Resolve an alert now; a later match opens a new one.
    Resolve(AlertsOpArgs),
}

#[derive(Debug, Args)]
pub struct AlertsListArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// open, acknowledged, resolved, active (open or acknowledged) or all.
    #[arg(long, default_value = "active")]
    pub status: String,
    /// At least this severity: informational, low, medium, high, critical.
    #[arg(long)]
    pub severity: Option<String>,
    /// Only this rule id.
    #[arg(long)]
    pub rule: Option<String>,
    /// Only this account (12 digits).
    #[arg(long)]
    pub account: Option<String>,
    /// Only alerts whose origin is this principal (user ARN, subject, …).
    #[arg(long)]
    pub origin: Option<String>,
    /// Last seen at or after this time (a time, a date, or a duration back from now).
    #[arg(long)]
    pub since: Option<String>,
    /// How many at most.
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AlertsOpArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The alert id (`trailwatch alerts list` shows it).
    pub id: String,
    /// Who does it (default: $USER).
    #[arg(long)]
    pub by: Option<String>,
    /// Why, recorded with the transition.
    #[arg(long)]
    pub note: Option<String>,
}

/// Detection and alert delivery, for `run` and `ingest`. Its `Debug` shows
/// the webhook URL as scheme and host only (its path or query may hold a credential).
#[derive(Args, Clone, Default)]
pub struct AlertArgs {
    /// Directory of rules (*.yml) added to the built-in pack; a rule with a built-in rule's id replaces it.
    #[arg(long, env = "TRAILWATCH_RULES")]
    pub rules: Option<PathBuf>,
    /// Evaluate no rules (to measure what the pack costs).
    #[arg(long)]
    pub no_rules: bool,
    /// Account names: the JSON `aws organizations list-accounts` prints. Default: `accounts.json`
    /// in the trail directory, else the copy kept in the data directory.
    #[arg(long, env = "TRAILWATCH_ACCOUNTS")]
    pub accounts: Option<PathBuf>,
    /// Print every alert transition on standard output (`run` always does).
    #[arg(long)]
    pub print_alerts: bool,
    /// Append every alert transition to this JSON Lines file.
    #[arg(long, env = "TRAILWATCH_ALERTS_FILE")]
    pub alerts_file: Option<PathBuf>,
    /// POST every alert transition to this URL.
    #[arg(long, env = "TRAILWATCH_WEBHOOK", hide_env_values = true)]
    pub webhook: Option<String>,
    /// Body of webhook posts: `generic` (the transition and the alert) or `pagerduty` (Events API v2).
    #[arg(long, env = "TRAILWATCH_WEBHOOK_FORMAT", default_value = "generic", value_parser = ["generic", "pagerduty"])]
    pub webhook_format: String,
    /// PagerDuty integration (routing) key, for `--webhook-format pagerduty`.
    #[arg(long, env = "TRAILWATCH_PAGERDUTY_ROUTING_KEY", hide_env_values = true)]
    pub pagerduty_routing_key: Option<Secret>,
    /// Extra header on webhook posts, `Name: value` (repeatable), e.g. an Authorization header.
    #[arg(long = "webhook-header")]
    pub webhook_headers: Vec<Secret>,
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
    /// Keep no event history: events are read, resolved and checked against
    /// the rules, sessions and alerts are stored, but the events themselves are
    /// dropped (to measure the pipeline apart from the history store, or to
    /// run alerting only). History searches then find nothing.
    #[arg(long)]
    pub no_history: bool,
    /// Public keys of the trail's digest files, as `aws cloudtrail list-public-keys` prints them
    /// (`{"PublicKeyList":[{"Fingerprint","Value"}]}`). Without it, digests are still checked
    /// (chain, gaps, log file hashes) but their signatures are not. `run` without --trail uses
    /// the demo trail's own keys.
    #[arg(long, env = "TRAILWATCH_PUBLIC_KEYS")]
    pub public_keys: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub pipeline: PipelineArgs,
    #[command(flatten)]
    pub alerts: AlertArgs,
    #[command(flatten)]
    pub api: ApiOptions,
    /// Do not serve the GraphQL API.
    #[arg(long)]
    pub no_api: bool,
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
    #[command(flatten)]
    pub alerts: AlertArgs,
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
    /// Inject known security incidents (a brute-forced console login, root usage, a stopped trail,
    /// SSH opened to the world, spot instances, a CI chain changing IAM in production) and list the
    /// alerts they must raise in expected.json. Needs at least 6 accounts and 1000 events.
    #[arg(long)]
    pub incidents: bool,
    /// Use these account ids (management first, comma-separated) instead of generated ones:
    /// the trail of an organization that exists elsewhere.
    #[arg(long, value_delimiter = ',')]
    pub account_ids: Vec<String>,
    /// Use this organization id (`o-…`) instead of a generated one.
    #[arg(long)]
    pub org_id: Option<String>,
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

impl std::fmt::Debug for AlertArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertArgs")
            .field("rules", &self.rules)
            .field("no_rules", &self.no_rules)
            .field("accounts", &self.accounts)
            .field("print_alerts", &self.print_alerts)
            .field("alerts_file", &self.alerts_file)
            .field("webhook", &self.webhook.as_deref().map(url_origin))
            .field("webhook_format", &self.webhook_format)
            .field("pagerduty_routing_key", &self.pagerduty_routing_key)
            .field("webhook_headers", &self.webhook_headers)
            .finish()
    }
}

/// `scheme://host[:port]/…` of a URL: no user, password, path or query.
pub fn url_origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}/…")
}

/// A value that must not appear in logs or debug output (keys, tokens).
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err("empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// Every secret option, given on the command line, stays out of `Debug`.
    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let secrets = ["tok-a1b2c3d4e5f6a7b8c9", "rk-0f1e2d3c4b5a69788", "hdr-99887766554433", "hookpath-5544332211", "pw-77665544", "ext-id-1234567890"];
        let run = Cli::try_parse_from([
            "trailwatch",
            "run",
            "--token",
            &format!("ada:admin:{}", secrets[0]),
            "--webhook",
            &format!("https://user:{}@hooks.example.com/services/{}?key={}", secrets[4], secrets[3], secrets[3]),
            "--webhook-format",
            "pagerduty",
            "--pagerduty-routing-key",
            secrets[1],
            "--webhook-header",
            &format!("Authorization: Bearer {}", secrets[2]),
        ])
        .expect("run parses");
        let api =
            Cli::try_parse_from(["trailwatch", "api", "--aws", "--organizations-external-id", secrets[5], "--token", &format!("v:viewer:{}", secrets[0])])
                .expect("api parses");
        let onboarding = Cli::try_parse_from(["trailwatch", "onboarding", "--aws", "--member-role-name", "r", "--member-external-id", secrets[5]])
            .expect("onboarding parses");
        for parsed in [run, api, onboarding] {
            let shown = format!("{parsed:?} {parsed:#?}");
            for secret in secrets {
                assert!(!shown.contains(secret), "{secret} shows in {shown}");
            }
            assert!(shown.contains("Secret(…)"), "{shown}");
        }
        assert_eq!(url_origin("https://u:p@hooks.example.com:8443/a/b?c=d"), "https://hooks.example.com:8443/…");
    }

    /// `--pending-bound-minutes` sets how long in trail time an event waits for a missing session.
    #[test]
    fn the_pending_bound_is_a_setting_of_the_aws_services() {
        let bound = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Some(Command::Enricher(e))) => Ok(crate::aws::enricher::pending_config(&e.aws).bound_ms),
            Ok(other) => panic!("not the enricher: {other:?}"),
            Err(e) => Err(e.kind()),
        };
        assert_eq!(bound(&["trailwatch", "enricher"]), Ok(2 * 3_600_000), "two hours unless told");
        assert_eq!(bound(&["trailwatch", "enricher", "--pending-bound-minutes", "1440"]), Ok(86_400_000));
        assert_eq!(
            bound(&["trailwatch", "enricher", "--pending-bound-minutes", "0"]),
            Err(clap::error::ErrorKind::ValueValidation),
            "no wait at all is refused"
        );
    }
}
