//! The ledger of processed objects in the `objects` and `rejects` tables.
//! Recording an outcome upserts the object's row (counting the attempt) and
//! replaces its rejected records, in one transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use trailwatch_core::event::{FileOutcome, FileStatus, RecordError, RejectedRecord};
use trailwatch_core::layout::{self, ObjectKind};
use trailwatch_core::ports::{Checkpoints, FileActivity, LedgerEntry, LedgerSummary, PortError};
use trailwatch_core::time::EpochMillis;

use super::{decode, signed, unsigned, SqliteStore};

const UPSERT: &str = "
INSERT INTO objects (key, kind, account_id, region, size, modified, status, events, rejected, bytes, attempts, error, processed_at, file_time)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?13)
ON CONFLICT (key) DO UPDATE SET
    kind = excluded.kind, account_id = excluded.account_id, region = excluded.region,
    size = excluded.size, modified = excluded.modified, status = excluded.status,
    events = excluded.events, rejected = excluded.rejected, bytes = excluded.bytes,
    attempts = objects.attempts + 1, error = excluded.error, processed_at = excluded.processed_at,
    file_time = excluded.file_time
RETURNING id";

const CLEAR_REJECTS: &str = "DELETE FROM rejects WHERE object_id = ?1";

const INSERT_REJECT: &str = "INSERT INTO rejects (object_id, record_index, event_id, reason, raw) VALUES (?1, ?2, ?3, ?4, ?5)";

/// The columns of a [`LedgerEntry`], in the order [`entry`] reads them.
const ENTRY: &str = "key, kind, account_id, region, status, size, modified, events, rejected, attempts, error, processed_at";

/// Ingest per account and region, over the files of events (not digests).
/// It reads every row of the ledger (a row per file, a small table next to
/// `events`); rows recorded before `file_time` existed count their `modified`.
const ACTIVITY: &str = "
SELECT account_id, region, max(coalesce(file_time, modified)), max(processed_at), count(*),
       sum(status = 'failed'), sum(events)
FROM objects WHERE kind <> 'digest'
GROUP BY account_id, region ORDER BY account_id, region";

const SUMMARY: &str = "SELECT status, count(*), sum(events), sum(rejected) FROM objects GROUP BY status";

fn entry(row: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        key: row.get(0)?,
        kind: decode(row, 1, "objects.kind", |s: String| ObjectKind::parse(&s).ok_or(format!("unknown object kind {s:?}")))?,
        account_id: row.get(2)?,
        region: row.get(3)?,
        status: decode(row, 4, "objects.status", parse_status)?,
        size: unsigned(row, 5, "objects.size")?,
        modified: row.get(6)?,
        events: unsigned(row, 7, "objects.events")?,
        rejected: unsigned(row, 8, "objects.rejected")?,
        attempts: decode(row, 9, "objects.attempts", |v: i64| u32::try_from(v).map_err(|_| format!("out of range: {v}")))?,
        error: row.get(10)?,
        processed_at: row.get(11)?,
    })
}

fn parse_status(s: String) -> Result<FileStatus, String> {
    FileStatus::parse(&s).ok_or(format!("unknown file status {s:?}"))
}

fn record(conn: &mut Connection, outcomes: &[FileOutcome], at: EpochMillis) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for outcome in outcomes {
        record_one(&tx, outcome, at)?;
    }
    tx.commit()
}

fn record_one(tx: &rusqlite::Transaction<'_>, outcome: &FileOutcome, at: EpochMillis) -> rusqlite::Result<()> {
    let id: i64 = tx.prepare_cached(UPSERT)?.query_row(
        params![
            outcome.key,
            outcome.kind.as_str(),
            outcome.account_id,
            outcome.region,
            signed(outcome.size),
            outcome.modified,
            outcome.status.as_str(),
            signed(outcome.events),
            signed(outcome.rejected.len() as u64),
            signed(outcome.bytes),
            outcome.error,
            at,
            layout::classify(&outcome.key).ok().map(|key| key.file_time),
        ],
        |row| row.get(0),
    )?;
    tx.prepare_cached(CLEAR_REJECTS)?.execute([id])?;
    {
        let mut insert = tx.prepare_cached(INSERT_REJECT)?;
        for r in &outcome.rejected {
            insert.execute(params![id, signed(r.error.index as u64), r.error.event_id, r.error.reason, r.raw])?;
        }
    }
    Ok(())
}

fn lookup(conn: &mut Connection, keys: &[String]) -> rusqlite::Result<HashMap<String, LedgerEntry>> {
    // One read transaction: every entry from the same state of the ledger.
    let tx = conn.transaction()?;
    let mut found = HashMap::new();
    {
        let mut select = tx.prepare_cached(&format!("SELECT {ENTRY} FROM objects WHERE key = ?1"))?;
        for key in keys {
            if let Some(e) = select.query_row([key], entry).optional()? {
                found.insert(e.key.clone(), e);
            }
        }
    }
    tx.commit()?;
    Ok(found)
}

pub(super) fn summary(conn: &Connection) -> rusqlite::Result<LedgerSummary> {
    let mut summary = LedgerSummary::default();
    let mut select = conn.prepare_cached(SUMMARY)?;
    let mut rows = select.query([])?;
    while let Some(row) = rows.next()? {
        let status = decode(row, 0, "objects.status", parse_status)?;
        summary.by_status.insert(status, unsigned(row, 1, "count")?);
        summary.events += unsigned(row, 2, "objects.events")?;
        summary.rejected_records += unsigned(row, 3, "objects.rejected")?;
    }
    Ok(summary)
}

fn problems(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<LedgerEntry>> {
    // The WHERE clause is the `objects_problems` index's own, so SQLite uses that index.
    let sql = format!(
        "SELECT {ENTRY} FROM objects WHERE status IN ('failed', 'partial', 'empty') \
         ORDER BY processed_at DESC, key LIMIT ?1"
    );
    let mut select = conn.prepare_cached(&sql)?;
    let rows = select.query_map([signed(limit as u64)], entry)?;
    rows.collect()
}

fn activity(conn: &Connection) -> rusqlite::Result<Vec<FileActivity>> {
    let mut select = conn.prepare_cached(ACTIVITY)?;
    let rows = select.query_map([], |row| {
        Ok(FileActivity {
            account_id: row.get(0)?,
            region: row.get(1)?,
            last_file_time: row.get(2)?,
            last_processed_at: row.get(3)?,
            files: unsigned(row, 4, "count")?,
            failed: unsigned(row, 5, "failed")?,
            events: unsigned(row, 6, "objects.events")?,
        })
    })?;
    rows.collect()
}

fn rejected(conn: &Connection, key: &str) -> rusqlite::Result<Vec<RejectedRecord>> {
    let mut select = conn.prepare_cached(
        "SELECT r.record_index, r.event_id, r.reason, r.raw FROM rejects r JOIN objects o ON o.id = r.object_id \
         WHERE o.key = ?1 ORDER BY r.rowid",
    )?;
    let rows = select.query_map([key], |row| {
        Ok(RejectedRecord {
            error: RecordError {
                index: decode(row, 0, "rejects.record_index", |v: i64| usize::try_from(v).map_err(|_| format!("out of range: {v}")))?,
                event_id: row.get(1)?,
                reason: row.get(2)?,
            },
            raw: row.get(3)?,
        })
    })?;
    rows.collect()
}

#[async_trait]
impl Checkpoints for SqliteStore {
    async fn completeness(&self) -> Result<Vec<trailwatch_core::integrity::Completeness>, PortError> {
        trailwatch_core::integrity::IntegrityStore::completeness(self).await
    }

    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let keys = keys.to_vec();
        self.read(move |conn| lookup(conn, &keys)).await
    }

    async fn record(&self, outcomes: std::sync::Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError> {
        if outcomes.is_empty() {
            return Ok(());
        }
        self.write(move |conn| record(conn, &outcomes, at)).await
    }

    async fn summary(&self) -> Result<LedgerSummary, PortError> {
        self.read(|conn| summary(conn)).await
    }

    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError> {
        self.read(move |conn| problems(conn, limit)).await
    }

    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError> {
        let key = key.to_owned();
        self.read(move |conn| rejected(conn, &key)).await
    }

    async fn activity(&self) -> Result<Vec<FileActivity>, PortError> {
        self.read(|conn| activity(conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_use_their_partial_index() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let sql =
            format!("EXPLAIN QUERY PLAN SELECT {ENTRY} FROM objects WHERE status IN ('failed', 'partial', 'empty') ORDER BY processed_at DESC, key LIMIT 5");
        let plan: Vec<String> = conn.prepare(&sql).expect("explain").query_map([], |row| row.get(3)).expect("plan").collect::<Result<_, _>>().expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("objects_problems") && !plan.contains("TEMP B-TREE"), "{plan}");
    }
}
