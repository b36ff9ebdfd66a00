//! `trailwatch onboarding --aws`: Organizations' account list against the
//! trail bucket's listing. Objects are listed, never read: per account the
//! regions under `AWSLogs/[org-id/]<account>/CloudTrail/`, and per region the
//! day folders of the window, newest first, until one holds a log file; a
//! region with none within the window walks its year, month and day folders
//! down to its newest day instead of listing its history. With
//! `--member-role-name`, the accounts that fail the check are asked why
//! through their member-account read role (`trailwatch_aws::member`).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use trailwatch_aws::member::{MemberReader, MemberRole};
use trailwatch_aws::organizations::load_directory;
use trailwatch_aws::s3::S3Source;
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::onboarding::{assess, Delivery, OnboardingReport, Options};
use trailwatch_core::ports::{LogSource, ObjectMeta};
use trailwatch_core::time::{civil_from_days, days_from_civil, EpochMillis};

use super::backfill::normalized_prefix;
use super::Settings;
use crate::commands::onboarding::{read_accounts, OnboardingArgs};

const DAY_MS: EpochMillis = 86_400_000;
/// Day folders a silent region's descent lists at most before giving up
/// (folders that hold only folder markers).
const DESCENT_LISTINGS: usize = 8;

/// The report for the organization and the trail bucket of `args`.
pub async fn report(args: &OnboardingArgs, options: Options) -> anyhow::Result<OnboardingReport> {
    let member_role = match &args.member_role_name {
        Some(name) if !MemberRole::valid_name(name) => anyhow::bail!("--member-role-name {name:?}: not an IAM role name"),
        Some(name) => Some(MemberRole::new(name.clone(), args.member_external_id.as_ref().map(|s| s.expose().to_owned()))),
        None => None,
    };
    let settings = Settings::from_options(&args.aws_options)?;
    let clients = settings.connect("onboarding").await?;
    let directory = match &args.accounts {
        Some(path) => read_accounts(path)?,
        None => load_directory(&clients.organizations).await.context("listing the organization's accounts (Organizations ListAccounts)")?,
    };
    let source = S3Source::new(clients.s3.clone(), settings.trail_bucket()?.to_owned());
    let root = format!("{}AWSLogs/", normalized_prefix(&settings.options.trail_prefix));
    let limit = usize::from(args.concurrency);
    let deliveries = deliveries(&source, &root, options.now, options.window_ms, limit).await?;
    let mut report = assess(&directory, &deliveries, &options);
    if let Some(role) = member_role {
        let reader = Arc::new(MemberReader::new(&clients, role));
        let ids: Vec<String> = report.needing_attention().map(|a| a.account_id.clone()).collect();
        let checks = bounded(ids, limit, move |id| {
            let reader = reader.clone();
            async move { Ok::<_, anyhow::Error>((id.clone(), reader.check(&id).await)) }
        })
        .await?;
        for (id, check) in checks {
            report.attach_member(&id, check);
        }
    }
    let calls = clients.calls.snapshot();
    let listed: Vec<String> = calls.iter().map(|(op, n)| format!("{op} ×{n}")).collect();
    eprintln!("onboarding: {} AWS requests ({})", clients.calls.total(), listed.join(", "));
    Ok(report)
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The last path segment of a prefix: `AWSLogs/o-x/111122223333/` → `111122223333`.
fn last_segment(prefix: &str) -> &str {
    prefix.trim_end_matches('/').rsplit('/').next().unwrap_or_default()
}

/// The newest log file per account and region in the bucket.
async fn deliveries(source: &S3Source, root: &str, now: EpochMillis, window_ms: EpochMillis, limit: usize) -> anyhow::Result<Vec<Delivery>> {
    // Organization trails nest accounts under the organization id; account trails put them directly.
    let mut accounts: Vec<(String, String)> = Vec::new();
    let mut orgs = Vec::new();
    for top in source.list_delimited(root, "/").await.with_context(|| format!("listing {}", source.locate(root)))? {
        let name = last_segment(&top);
        if name.starts_with("o-") {
            orgs.push(top);
        } else if is_account(name) {
            accounts.push((name.to_owned(), top));
        }
    }
    let nested = bounded(orgs, limit, |org| {
        let source = source.clone();
        async move { source.list_delimited(&org, "/").await.with_context(|| format!("listing {}", source.locate(&org))) }
    })
    .await?;
    accounts.extend(nested.into_iter().flatten().filter(|p| is_account(last_segment(p))).map(|p| (last_segment(&p).to_owned(), p)));

    let regions = bounded(accounts, limit, |(account, prefix)| {
        let source = source.clone();
        async move {
            let trail = format!("{prefix}CloudTrail/");
            let regions = source.list_delimited(&trail, "/").await.with_context(|| format!("listing {}", source.locate(&trail)))?;
            Ok::<_, anyhow::Error>(regions.into_iter().map(|r| (account.clone(), r)).collect::<Vec<_>>())
        }
    })
    .await?;
    let newest = bounded(regions.into_iter().flatten().collect(), limit, |(account, region_prefix)| {
        let source = source.clone();
        async move {
            let last = newest_delivery(&source, &region_prefix, now, window_ms).await?;
            Ok::<_, anyhow::Error>((account, last_segment(&region_prefix).to_owned(), last))
        }
    })
    .await?;
    // An account under both an organization and an account trail: the newer file counts.
    let mut by_region: BTreeMap<(String, String), EpochMillis> = BTreeMap::new();
    for (account, region, last) in newest {
        if let Some(last) = last {
            let entry = by_region.entry((account, region)).or_insert(last);
            *entry = (*entry).max(last);
        }
    }
    Ok(by_region.into_iter().map(|((account_id, region), last)| Delivery { account_id, region, last }).collect())
}

fn day_folder(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}/{m:02}/{d:02}/")
}

/// The newest log file's time among listed objects: from its key (the end
/// of the interval CloudTrail wrote it for), else its last-modified time.
fn newest_file(objects: &[ObjectMeta]) -> Option<EpochMillis> {
    objects
        .iter()
        .filter_map(|o| match classify(&o.key) {
            Ok(k) if k.kind == ObjectKind::Log => Some(k.file_time),
            Ok(_) => None,
            Err(_) => (!o.key.ends_with('/')).then_some(o.modified),
        })
        .max()
}

/// The newest log file of one region (`…/CloudTrail/<region>/`): the days
/// of the window newest first, then, when none holds a file, the newest day
/// folder before the window.
async fn newest_delivery(source: &S3Source, region_prefix: &str, now: EpochMillis, window_ms: EpochMillis) -> anyhow::Result<Option<EpochMillis>> {
    let (first_day, today) = ((now - window_ms).div_euclid(DAY_MS), now.div_euclid(DAY_MS));
    for day in (first_day..=today).rev() {
        let prefix = format!("{region_prefix}{}", day_folder(day));
        let listed = source.list(&prefix).await.with_context(|| format!("listing {}", source.locate(&prefix)))?;
        if let Some(last) = newest_file(&listed) {
            return Ok(Some(last));
        }
    }
    let mut listings = 0;
    for year in folders_newest_first(source, region_prefix).await? {
        for month in folders_newest_first(source, &year).await? {
            for day in folders_newest_first(source, &month).await? {
                let Some(number) = day_number(region_prefix, &day) else { continue };
                if (first_day..=today).contains(&number) {
                    continue; // listed above (a later folder is a clock ahead of this one)
                }
                if listings == DESCENT_LISTINGS {
                    return Ok(None);
                }
                listings += 1;
                let listed = source.list(&day).await.with_context(|| format!("listing {}", source.locate(&day)))?;
                if let Some(last) = newest_file(&listed) {
                    return Ok(Some(last));
                }
            }
        }
    }
    Ok(None)
}

async fn folders_newest_first(source: &S3Source, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut folders = source.list_delimited(prefix, "/").await.with_context(|| format!("listing {}", source.locate(prefix)))?;
    folders.reverse();
    Ok(folders)
}

/// The day number of a `<region prefix>YYYY/MM/DD/` folder.
fn day_number(region_prefix: &str, folder: &str) -> Option<i64> {
    let mut parts = folder.strip_prefix(region_prefix)?.trim_end_matches('/').split('/');
    let (y, m, d) = (parts.next()?.parse::<i64>().ok()?, parts.next()?.parse::<u32>().ok()?, parts.next()?.parse::<u32>().ok()?);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d))
}

/// Runs `f` over `items` with at most `limit` at once; the first error wins.
/// Results come back in the items' order.
async fn bounded<I, T, F, Fut>(items: Vec<I>, limit: usize, f: F) -> anyhow::Result<Vec<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut tasks = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let permits = permits.clone();
        let work = f(item);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            (i, work.await)
        });
    }
    let mut done = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined.context("a listing task stopped unexpectedly")?;
        done.push((i, result?));
    }
    done.sort_by_key(|(i, _)| *i);
    Ok(done.into_iter().map(|(_, t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_folders_round_trip() {
        let prefix = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/";
        let day = days_from_civil(2026, 4, 14);
        assert_eq!(day_folder(day), "2026/04/14/");
        assert_eq!(day_number(prefix, &format!("{prefix}2026/04/14/")), Some(day));
        assert_eq!(day_number(prefix, &format!("{prefix}2026/13/14/")), None);
        assert_eq!(day_number(prefix, "elsewhere/2026/04/14/"), None);
    }

    #[test]
    fn the_newest_file_is_read_from_its_key() {
        let key = |ts: &str| ObjectMeta {
            key: format!("AWSLogs/111122223333/CloudTrail/us-east-1/2026/04/14/111122223333_CloudTrail_us-east-1_{ts}_AbCdEf0123456789.json.gz"),
            size: 10,
            modified: 5,
        };
        let listed = vec![key("20260414T0905Z"), key("20260414T1010Z"), key("20260414T0100Z")];
        assert_eq!(newest_file(&listed), trailwatch_core::time::parse_utc("2026-04-14T10:10:00Z").ok());
        assert_eq!(newest_file(&[]), None);
    }
}
