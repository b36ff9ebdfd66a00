//! `trailwatch backfill`: lists the trail bucket by account, region and day
//! prefix (never by a moving `StartAfter` marker, which skips files written
//! behind it), compares every log file with the ledger, hands the enricher
//! whatever the ledger lacks, and reports completeness per account and region.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use trailwatch_aws::dynamo::DynamoLedger;
use trailwatch_aws::s3::S3Source;
use trailwatch_aws::sqs::Queue;
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::ports::{Checkpoints, LedgerEntry, LogSource, ObjectMeta};
use trailwatch_core::time::{civil_from_days, parse_bound, EpochMillis};

use super::args::BackfillArgs;
use super::{queue_url, FileMessage, Settings};
use crate::commands::{emit, now_ms};

const DAY_MS: i64 = 86_400_000;
/// Keys asked of the ledger at once.
const LOOKUP: usize = 100;

/// Completeness of one account in one region over the days looked at.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Completeness {
    pub account_id: String,
    pub region: String,
    /// Log and insight files listed.
    pub files: u64,
    /// Of those, final in the ledger with the same size and time.
    pub done: u64,
    /// Handed to the enricher now (or that would be, with --dry-run).
    pub missing: u64,
    /// Of the missing, those the ledger knows as failed or partial.
    pub failed_before: u64,
    pub digests: u64,
}

impl Completeness {
    pub fn percent(&self) -> f64 {
        if self.files == 0 {
            100.0
        } else {
            self.done as f64 * 100.0 / self.files as f64
        }
    }
}

/// The account prefixes under `AWSLogs/`: organization trails nest accounts
/// under the organization id, account trails put them directly.
async fn account_prefixes(source: &S3Source, root: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for top in source.list_delimited(root, "/").await.with_context(|| format!("listing {}", source.locate(root)))? {
        let name = top.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
        if name.starts_with("o-") {
            for account in source.list_delimited(&top, "/").await.with_context(|| format!("listing {}", source.locate(&top)))? {
                let id = account.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
                if id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) {
                    out.push((id, account));
                }
            }
        } else if name.len() == 12 && name.bytes().all(|b| b.is_ascii_digit()) {
            out.push((name, top));
        }
    }
    Ok(out)
}

fn day_path(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}/{m:02}/{d:02}/")
}

pub async fn run(args: BackfillArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_options(&args.aws)?;
    let now = now_ms();
    let since = parse_bound(&args.since, now).context("--since")?;
    let until = args.until.as_deref().map(|u| parse_bound(u, now)).transpose().context("--until")?.unwrap_or(now);
    if until < since {
        anyhow::bail!("--until is before --since");
    }
    if (until - since) / DAY_MS > 800 {
        anyhow::bail!("--since to --until spans more than 800 days: backfill in parts");
    }
    for account in &args.accounts {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("--accounts {account:?}: an account id is 12 digits");
        }
    }
    let clients = settings.connect("backfill").await?;
    let bucket = settings.trail_bucket()?.to_owned();
    let queue = if args.dry_run {
        None
    } else {
        Some(Queue::new(clients.sqs.clone(), queue_url(&clients, args.enricher_queue.as_deref(), "--enricher-queue", "TRAILWATCH_ENRICHER_QUEUE").await?))
    };
    let source = S3Source::new(clients.s3.clone(), bucket.clone());
    let ledger = DynamoLedger::new(clients.dynamodb.clone(), settings.tables.ledger.clone());
    let root = format!("{}AWSLogs/", normalized_prefix(&settings.options.trail_prefix));
    let mut report: BTreeMap<(String, String), Completeness> = BTreeMap::new();
    for (account, prefix) in account_prefixes(&source, &root).await? {
        if !args.accounts.is_empty() && !args.accounts.contains(&account) {
            continue;
        }
        let trail = format!("{prefix}CloudTrail/");
        for region_prefix in source.list_delimited(&trail, "/").await.with_context(|| format!("listing {}", source.locate(&trail)))? {
            let region = region_prefix.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
            let entry = report.entry((account.clone(), region.clone())).or_insert_with(|| Completeness {
                account_id: account.clone(),
                region: region.clone(),
                ..Completeness::default()
            });
            for day in since.div_euclid(DAY_MS)..=until.div_euclid(DAY_MS) {
                let day_prefix = format!("{region_prefix}{}", day_path(day));
                let listed = source.list(&day_prefix).await.with_context(|| format!("listing {}", source.locate(&day_prefix)))?;
                backfill_day(&ledger, queue.as_ref(), &bucket, listed, entry).await.with_context(|| format!("backfilling {}", source.locate(&day_prefix)))?;
            }
        }
    }
    let rows: Vec<Completeness> = report.into_values().collect();
    print_report(&rows, args.json, args.dry_run, since, until)?;
    Ok(ExitCode::SUCCESS)
}

/// A key prefix as given (`logs`, `logs/`, `/logs/`) in the form keys start with (`logs/`, or nothing).
pub(super) fn normalized_prefix(prefix: &str) -> String {
    let p = prefix.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

async fn backfill_day(ledger: &DynamoLedger, queue: Option<&Queue>, bucket: &str, listed: Vec<ObjectMeta>, entry: &mut Completeness) -> anyhow::Result<()> {
    let mut files = Vec::new();
    for meta in listed {
        match classify(&meta.key) {
            Ok(k) if k.kind == ObjectKind::Digest => entry.digests += 1,
            Ok(_) => files.push(meta),
            Err(_) => {}
        }
    }
    for batch in files.chunks(LOOKUP) {
        let keys: Vec<String> = batch.iter().map(|m| m.key.clone()).collect();
        let known = ledger.lookup(&keys).await.context("reading the ledger")?;
        for meta in batch {
            entry.files += 1;
            let seen = known.get(&meta.key);
            if !LedgerEntry::needs_work(seen, meta) {
                entry.done += 1;
                continue;
            }
            entry.missing += 1;
            if seen.is_some() {
                entry.failed_before += 1;
            }
            if let Some(queue) = queue {
                let message = FileMessage { bucket: bucket.to_owned(), key: meta.key.clone(), size: meta.size, modified: meta.modified };
                let body = serde_json::to_string(&message).context("encoding a file message")?;
                queue.send(&body, std::time::Duration::ZERO).await.with_context(|| format!("handing s3://{bucket}/{} to the enricher", meta.key))?;
            }
        }
    }
    Ok(())
}

fn print_report(rows: &[Completeness], json: bool, dry_run: bool, since: EpochMillis, until: EpochMillis) -> anyhow::Result<()> {
    if json {
        let mut text = String::new();
        for row in rows {
            text.push_str(&serde_json::to_string(row).context("encoding the report")?);
            text.push('\n');
        }
        return emit(&text);
    }
    let verb = if dry_run { "missing" } else { "enqueued" };
    let mut text = format!("{:<14} {:<16} {:>8} {:>8} {:>9} {:>9}\n", "account", "region", "files", "done", verb, "complete");
    let (mut files, mut done, mut missing) = (0, 0, 0);
    for r in rows {
        text.push_str(&format!("{:<14} {:<16} {:>8} {:>8} {:>9} {:>8.1}%\n", r.account_id, r.region, r.files, r.done, r.missing, r.percent()));
        files += r.files;
        done += r.done;
        missing += r.missing;
    }
    text.push_str(&format!(
        "{} account/region pairs, {files} files from {} to {}: {done} done, {missing} {verb}\n",
        rows.len(),
        trailwatch_core::time::format_utc(since),
        trailwatch_core::time::format_utc(until)
    ));
    emit(&text)
}
