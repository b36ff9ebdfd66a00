//! `trailwatch ledger`: what was read, and what went wrong where.

use std::process::ExitCode;

use anyhow::Context;
use trailwatch_core::event::FileStatus;
use trailwatch_core::ports::Checkpoints;
use trailwatch_core::time::format_utc;

use crate::cli::LedgerArgs;
use crate::pipeline;
use crate::summary::thousands;

pub async fn ledger(args: LedgerArgs) -> anyhow::Result<ExitCode> {
    let db = pipeline::database_path(&args.data.data);
    if !db.exists() {
        anyhow::bail!("no trailwatch database at {}", db.display());
    }
    let store = pipeline::open_store(&args.data.data)?;
    if let Some(key) = args.rejected {
        for r in store.rejected(&key).await.context("reading rejected records")? {
            let line = serde_json::json!({"record": r.error.index, "eventID": r.error.event_id, "reason": r.error.reason, "raw": r.raw});
            println!("{line}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let summary = store.summary().await.context("reading the ledger")?;
    let count = |s: FileStatus| thousands(summary.by_status.get(&s).copied().unwrap_or(0));
    println!(
        "files: {} done, {} partial, {} empty, {} failed, {} digest",
        count(FileStatus::Done),
        count(FileStatus::Partial),
        count(FileStatus::Empty),
        count(FileStatus::Failed),
        count(FileStatus::Digest)
    );
    println!("events recorded from files: {} · records rejected: {}", thousands(summary.events), thousands(summary.rejected_records));
    let problems = store.problems(args.problems).await.context("reading the ledger")?;
    if !problems.is_empty() {
        println!("problems, newest first:");
        for p in problems {
            println!(
                "  {:<7} {} (attempts {}, {}, {} events kept, {} records rejected)\n          {}",
                p.status.as_str(),
                p.key,
                p.attempts,
                format_utc(p.processed_at),
                p.events,
                p.rejected,
                p.error.as_deref().unwrap_or("-")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
