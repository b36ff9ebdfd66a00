//! `trailwatch onboarding`: which accounts of the organization have
//! delivered no CloudTrail logs recently, by region, against the
//! organization's account list. The embedded mode reads what the store
//! ingested; `--aws` lists the trail bucket (`crate::aws::onboarding`).
//! The assessment itself is `trailwatch_core::onboarding`.

use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::onboarding::{assess, format_window, parse_window, Delivery, OnboardingReport, OnboardingStatus, Options};
use trailwatch_core::ports::account_activity;
use trailwatch_core::time::format_utc;

use crate::aws::args::AwsOptions;
use crate::cli::{DataArgs, Secret};
use crate::pipeline;

/// The exit code when an active account delivered nothing within the window.
pub const EXIT_NOT_DELIVERING: u8 = 3;

const AFTER_HELP: &str = "\
Statuses: ONBOARDED (a log file within the window from every expected region), SILENT (delivered \
before, nothing within the window from some or all expected regions), NEVER_DELIVERED (active, no \
log file at all), SUSPENDED (Organizations says suspended, closing or closed: not expected to \
deliver), UNKNOWN_ACCOUNT (delivers logs but is not in the account list).

Exit codes: 0 when every active account of the organization delivered within the window; 3 when \
one or more are SILENT or NEVER_DELIVERED; 1 on an error. Suspended and unknown accounts never \
make it fail, so the command can run from cron or CI.

Embedded mode: the newest log file (or event) per account and region that the data directory \
ingested, against the accounts file.

AWS mode (--aws) lists the trail bucket and reads no object. Its cost in S3 LIST requests, about \
accounts × regions × days: 1 for AWSLogs/ and 1 per organization folder; 1 per account (its \
regions); per account and region one per day of the window, newest day first, stopping at the \
first day with a log file (so 1 for a region that delivered today); a region with nothing within \
the window costs about 4 more to find its last delivery. Organizations: ListAccounts, ListRoots, \
and per account ListTagsForResource and ListParents (and DescribeOrganizationalUnit once per \
OU). With --member-role-name, per SILENT or NEVER_DELIVERED account only: sts:AssumeRole, \
iam:ListAccountAliases, cloudtrail:DescribeTrails, and cloudtrail:GetTrailStatus per trail. The \
requests made are counted on standard error.";

#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct OnboardingArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// The account list: the JSON `aws organizations list-accounts` prints. Default: the copy
    /// kept in the data directory (with --aws: Organizations' ListAccounts).
    #[arg(long, env = "TRAILWATCH_ACCOUNTS")]
    pub accounts: Option<PathBuf>,
    /// How recent a log file must be: `90m`, `24h`, `7d`.
    #[arg(long, env = "TRAILWATCH_ONBOARDING_WINDOW", default_value = "24h")]
    pub window: String,
    /// Regions every active account must deliver from (comma-separated or repeated).
    /// Default: each account's own regions (those it delivered from before).
    #[arg(long, env = "TRAILWATCH_ONBOARDING_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// The report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read the trail bucket and Organizations instead of the data directory.
    #[arg(long)]
    pub aws: bool,
    #[command(flatten)]
    pub aws_options: AwsOptions,
    /// With --aws: assume this role in each SILENT or NEVER_DELIVERED account (the member-account
    /// read role the StackSet deploys; the flag alone names `trailwatch-member-read`) and report
    /// why: whether it could be assumed, its trails and whether they log, its IAM alias.
    #[arg(long, env = "TRAILWATCH_MEMBER_ROLE_NAME", num_args = 0..=1, default_missing_value = trailwatch_aws::member::DEFAULT_ROLE_NAME)]
    pub member_role_name: Option<String>,
    /// The external id the member-account role requires.
    #[arg(long, env = "TRAILWATCH_MEMBER_EXTERNAL_ID", hide_env_values = true)]
    pub member_external_id: Option<Secret>,
    /// With --aws: requests in flight at once (listings, member checks).
    #[arg(long, env = "TRAILWATCH_ONBOARDING_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
}

pub async fn onboarding(args: OnboardingArgs) -> anyhow::Result<ExitCode> {
    let window_ms = parse_window(&args.window).map_err(anyhow::Error::msg).context("--window")?;
    let regions = regions(&args.regions)?;
    if !args.aws && (args.member_role_name.is_some() || args.member_external_id.is_some()) {
        anyhow::bail!("--member-role-name and --member-external-id need --aws: the member-account role is assumed on AWS only");
    }
    if args.member_external_id.is_some() && args.member_role_name.is_none() {
        anyhow::bail!("--member-external-id needs --member-role-name");
    }
    let options = Options { now: super::now_ms(), window_ms, regions };
    let report = if args.aws { crate::aws::onboarding::report(&args, options).await? } else { embedded(&args, &options).await? };
    print(&report, args.json)?;
    Ok(exit_code(&report))
}

/// The `--regions` list, checked; None when not given.
fn regions(given: &[String]) -> anyhow::Result<Option<Vec<String>>> {
    let list: Vec<String> = given.iter().map(|r| r.trim().to_owned()).filter(|r| !r.is_empty()).collect();
    if let Some(bad) = list.iter().find(|r| r.len() > 32 || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')) {
        anyhow::bail!("--regions {bad:?}: not a region name like us-east-1");
    }
    Ok(if list.is_empty() { None } else { Some(list) })
}

/// 0 when every active account delivered within the window, else 3.
pub fn exit_code(report: &OnboardingReport) -> ExitCode {
    if report.all_delivering {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_DELIVERING)
    }
}

/// Reads an accounts file (without keeping a copy: this command only reads).
pub fn read_accounts(path: &Path) -> anyhow::Result<AccountDirectory> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the accounts file {}", path.display()))?;
    Ok(AccountDirectory::from_list_accounts(&text, &path.display().to_string())?)
}

/// The embedded mode: the store's newest file and event per account and region.
async fn embedded(args: &OnboardingArgs, options: &Options) -> anyhow::Result<OnboardingReport> {
    let data = &args.data.data;
    let db = pipeline::database_path(data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}: run `trailwatch ingest --data {}` first", db.display(), data.display());
    }
    let mut directory = match &args.accounts {
        Some(path) => read_accounts(path)?,
        None if pipeline::accounts_copy(data).is_file() => read_accounts(&pipeline::accounts_copy(data))?,
        None => anyhow::bail!(
            "no account list to compare with: pass --accounts FILE (the JSON `aws organizations list-accounts` prints), \
             or ingest with one so {} keeps a copy",
            data.display()
        ),
    };
    crate::api::FileAliases::apply(data, &mut directory)?;
    let store = pipeline::open_store(data)?;
    let activity = account_activity(store.as_ref(), store.as_ref()).await.context("reading the newest file and event per account and region")?;
    let deliveries = Delivery::from_activity(&activity);
    Ok(assess(&directory, &deliveries, options))
}

/// Prints the report: a table, or JSON.
pub fn print(report: &OnboardingReport, json: bool) -> anyhow::Result<()> {
    if json {
        return super::emit(&(serde_json::to_string_pretty(report).context("encoding the report")? + "\n"));
    }
    super::emit(&table(report))
}

/// `text` cut to `width` characters, with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

/// The report as a table a person reads: those needing attention first.
pub fn table(report: &OnboardingReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:<12}  {:<24}  {:<22}  {:<15}  {:<22}  {:<20}  reason", "account", "name", "ou path", "status", "regions silent", "last delivery");
    for a in &report.accounts {
        let last = a.last_delivery.map_or_else(|| "-".to_owned(), format_utc);
        let silent = if a.silent_regions.is_empty() { "-".to_owned() } else { a.silent_regions.join(",") };
        let reason = a.full_reason();
        let _ = writeln!(
            out,
            "{:<12}  {:<24}  {:<22}  {:<15}  {:<22}  {:<20}  {}",
            a.account_id,
            fit(a.name.as_deref().unwrap_or("-"), 24),
            fit(a.ou_path.as_deref().unwrap_or("-"), 22),
            a.status.as_str(),
            fit(&silent, 22),
            last,
            if reason.is_empty() { "-" } else { &reason }
        );
    }
    let c = &report.counts;
    let _ = writeln!(
        out,
        "\n{} accounts: {} onboarded, {} silent, {} never delivered, {} suspended, {} unknown",
        c.accounts, c.onboarded, c.silent, c.never_delivered, c.suspended, c.unknown_accounts
    );
    let regions = if report.regions.is_empty() { "none".to_owned() } else { report.regions.join(", ") };
    let expected = if report.regions_given { "expected of every active account" } else { "each account is held to its own" };
    let _ = writeln!(out, "window {} (since {}); regions: {regions} ({expected})", format_window(report.window_seconds * 1000), format_utc(report.since));
    let failing = c.of(OnboardingStatus::Silent) + c.of(OnboardingStatus::NeverDelivered);
    if failing > 0 {
        let _ = writeln!(out, "{failing} active account(s) delivered nothing within the window (exit code {EXIT_NOT_DELIVERING})");
    } else {
        let _ = writeln!(out, "every active account delivered within the window");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_puts_problems_first_and_names_the_exit_code() {
        let dir = AccountDirectory::from_list_accounts(
            r#"[{"Id":"111111111111","Name":"Prod Payments","OuPath":"Root/Workloads/Prod"},{"Id":"222222222222","Name":"Sandbox"}]"#,
            "a",
        )
        .unwrap();
        let now = 1_776_000_000_000;
        let deliveries = [Delivery { account_id: "111111111111".into(), region: "us-east-1".into(), last: now - 60_000 }];
        let report = assess(&dir, &deliveries, &Options { now, window_ms: 86_400_000, regions: None });
        let text = table(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("222222222222  Sandbox") && lines[1].contains("NEVER_DELIVERED"), "{text}");
        assert!(lines[2].starts_with("111111111111  Prod Payments") && lines[2].contains("ONBOARDED"), "{text}");
        assert!(text.contains("2 accounts: 1 onboarded, 0 silent, 1 never delivered"), "{text}");
        assert!(text.contains("window 24h (since "), "{text}");
        assert!(text.contains("1 active account(s) delivered nothing within the window (exit code 3)"), "{text}");
        assert_eq!(exit_code(&report), ExitCode::from(3));
    }

    #[test]
    fn regions_are_checked() {
        assert_eq!(regions(&[]).unwrap(), None);
        assert_eq!(regions(&["us-east-1".into(), " eu-west-1".into()]).unwrap(), Some(vec!["us-east-1".into(), "eu-west-1".into()]));
        assert!(regions(&["US East".into()]).is_err());
        assert_eq!(fit("Acme Production Payments Europe", 10), "Acme Prod…");
    }
}
