//! `trailwatch resolve`: who is behind an access key.

use std::process::ExitCode;

use anyhow::Context;
use trailwatch_core::identity::{Actor, Caller, Resolution};
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_core::time::{format_utc, parse_bound};

use crate::cli::ResolveArgs;
use crate::pipeline;

pub async fn resolve(args: ResolveArgs) -> anyhow::Result<ExitCode> {
    let key = args.access_key_id.trim();
    if key.len() < 16 || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        anyhow::bail!("{key:?} is not an AWS access key id (letters and digits, like ASIAEXAMPLE1234567890)");
    }
    let db = pipeline::database_path(&args.data.data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}: run `trailwatch ingest --data {}` first", db.display(), args.data.data.display());
    }
    let store = pipeline::open_store(&args.data.data)?;
    let at = match &args.at {
        Some(at) => parse_bound(at, super::now_ms()).context("--at")?,
        None => newest_event_time(store.as_ref()).await?.unwrap_or_else(super::now_ms),
    };
    let identity = pipeline::identity(&store);
    // Retention is judged in trail time, as during ingest.
    identity.resolver().observe(at);
    // The key used as a session's would be: an assumed-role caller with that key.
    let caller = Caller { identity_type: "AssumedRole".into(), access_key_id: Some(key.to_owned()), ..Default::default() };
    let resolution = identity.resolver().resolve(Actor::new(&caller, at)).await.context("resolving")?;
    let (origin, missing) = match resolution {
        Resolution::Resolved(origin) => (origin, None),
        Resolution::Waiting { origin, missing, fallback } => (fallback.unwrap_or(origin), Some(missing.describe())),
    };
    let mut out = serde_json::json!({ "accessKeyId": key, "at": format_utc(at), "origin": origin });
    if let Some(missing) = missing {
        out["missing"] = serde_json::Value::String(missing);
    }
    println!("{}", serde_json::to_string_pretty(&out).context("formatting")?);
    Ok(ExitCode::SUCCESS)
}

/// The time of the newest stored event, found from the end of history.
async fn newest_event_time(store: &dyn HistoryStore) -> anyhow::Result<Option<i64>> {
    // Pages run oldest first; a lower bound near now keeps this to the last events.
    let mut since = super::now_ms() - 86_400_000;
    for _ in 0..12 {
        let page = store.page(&HistoryQuery { since: Some(since), limit: 1, ..Default::default() }).await.context("reading history")?;
        if page.events.is_empty() {
            since -= 30 * 86_400_000;
            continue;
        }
        let mut query = HistoryQuery { since: Some(since), limit: 5000, ..Default::default() };
        let mut newest = None;
        loop {
            let page = store.page(&query).await.context("reading history")?;
            newest = page.events.last().map(|e| e.event_time).or(newest);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(newest),
            }
        }
    }
    Ok(None)
}
