//! `trailwatch export`: stored events as JSON Lines, in event-time order.

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use anyhow::Context;
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::event::Event;
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_core::time::parse_bound;

use crate::cli::ExportArgs;
use crate::pipeline;

const PAGE: usize = 2000;

/// Writes an event on one line: the original record, with a `trailwatch`
/// member added at its end holding what trailwatch knows of it (the origin
/// and the account: id, and alias when the accounts file names it). CloudTrail writes records compact and they go out byte
/// for byte up to that member; a record that came in pretty-printed loses its
/// line breaks (JSON strings cannot hold raw line breaks, so only whitespace goes).
fn write_line(out: &mut impl Write, event: &Event, accounts: &AccountDirectory) -> std::io::Result<()> {
    let raw = event.raw.trim_end();
    let body = raw.strip_suffix('}').unwrap_or(raw);
    if body.contains(['\n', '\r']) {
        out.write_all(body.replace(['\n', '\r'], "").as_bytes())?;
    } else {
        out.write_all(body.as_bytes())?;
    }
    if !body.trim_end().ends_with('{') {
        out.write_all(b",")?;
    }
    let account = match accounts.alias(&event.account_id) {
        Some(alias) => serde_json::json!({ "id": event.account_id, "alias": alias }),
        None => serde_json::json!({ "id": event.account_id }),
    };
    let enrichment = serde_json::json!({ "origin": event.origin, "account": account });
    out.write_all(b"\"trailwatch\":")?;
    serde_json::to_writer(&mut *out, &enrichment)?;
    out.write_all(b"}\n")
}

pub async fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let now = super::now_ms();
    let since = args.since.as_deref().map(|s| parse_bound(s, now)).transpose().context("--since")?;
    let until = args.until.as_deref().map(|s| parse_bound(s, now)).transpose().context("--until")?;
    if let Some(account) = &args.account {
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            anyhow::bail!("--account {account:?} is not a 12-digit AWS account id");
        }
    }
    let db = pipeline::database_path(&args.data.data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}: run `trailwatch ingest --data {}` first", db.display(), args.data.data.display());
    }
    let store = pipeline::open_store(&args.data.data)?;
    let accounts = pipeline::load_accounts(None, None, &args.data.data)?;
    let mut query = HistoryQuery { since, until, account: args.account, after: None, limit: PAGE };
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    loop {
        let page = store.page(&query).await.context("reading history")?;
        for event in &page.events {
            let written = write_line(&mut out, event, &accounts);
            if let Err(e) = written {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    return Ok(ExitCode::SUCCESS);
                }
                return Err(e).context("writing to standard output");
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to standard output"),
        _ => Ok(ExitCode::SUCCESS),
    }
}
