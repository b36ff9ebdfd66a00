//! Events waiting for a session, in the `pending` table: one row per event
//! (account and eventID), found by the key it waits on or by its age. Taking
//! deletes and returns in one transaction, so two enrichers never both take
//! the same event.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, TransactionBehavior};
use trailwatch_core::identity::{PendingItem, PendingStore};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::documents::to_json;
use super::{decode, unsigned, SqliteStore};

const UPSERT: &str = "
INSERT INTO pending (account_id, event_id, event_time, missing_key, item) VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (account_id, event_id) DO UPDATE SET
    event_time = excluded.event_time, missing_key = excluded.missing_key, item = excluded.item";

const TAKE_WAITING_ON: &str = "DELETE FROM pending WHERE missing_key = ?1 RETURNING item";

const TAKE_EXPIRED: &str = "DELETE FROM pending WHERE event_time < ?1 RETURNING item";

const COUNT: &str = "SELECT count(*) FROM pending";

fn item(row: &rusqlite::Row<'_>) -> rusqlite::Result<PendingItem> {
    decode(row, 0, "pending.item", |json: String| serde_json::from_str(&json).map_err(|e| format!("invalid pending item JSON: {e}")))
}

fn add(conn: &mut Connection, items: &[PendingItem]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut upsert = tx.prepare_cached(UPSERT)?;
        for i in items {
            upsert.execute(params![i.account_id, i.event_id, i.event_time, i.missing_key, to_json(i)?])?;
        }
    }
    tx.commit()
}

/// Runs `delete` (a `DELETE … RETURNING item`) once per parameter, in one
/// transaction, and returns what it deleted, oldest event first.
fn take<P: rusqlite::ToSql>(conn: &mut Connection, delete: &str, each: &[P]) -> rusqlite::Result<Vec<PendingItem>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut taken = Vec::new();
    {
        let mut statement = tx.prepare_cached(delete)?;
        for p in each {
            let rows = statement.query_map([p], item)?;
            for row in rows {
                taken.push(row?);
            }
        }
    }
    tx.commit()?;
    taken.sort_by(|a, b| (a.event_time, &a.account_id, &a.event_id).cmp(&(b.event_time, &b.account_id, &b.event_id)));
    Ok(taken)
}

#[async_trait]
impl PendingStore for SqliteStore {
    async fn add(&self, items: Arc<[PendingItem]>) -> Result<(), PortError> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(move |conn| add(conn, &items)).await
    }

    async fn take_waiting_on(&self, keys: &[String]) -> Result<Vec<PendingItem>, PortError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        self.write(move |conn| take(conn, TAKE_WAITING_ON, &keys)).await
    }

    async fn take_expired(&self, before: EpochMillis) -> Result<Vec<PendingItem>, PortError> {
        self.write(move |conn| take(conn, TAKE_EXPIRED, &[before])).await
    }

    async fn count(&self) -> Result<u64, PortError> {
        self.read(|conn| conn.prepare_cached(COUNT)?.query_row([], |row| unsigned(row, 0, "count"))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> String {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let rows: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("explain")
            .query_map([0], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        rows.join("; ")
    }

    #[test]
    fn taking_seeks_its_index() {
        assert!(plan(TAKE_WAITING_ON).contains("pending_missing_key"), "{}", plan(TAKE_WAITING_ON));
        assert!(plan(TAKE_EXPIRED).contains("pending_event_time"), "{}", plan(TAKE_EXPIRED));
    }
}
