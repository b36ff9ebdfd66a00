//! Event history in the `events` table: idempotent batch appends, and pages in
//! (event time, seq) order where `seq` is the arrival order.

use async_trait::async_trait;
use rusqlite::{params, Connection, ToSql, TransactionBehavior};
use trailwatch_core::event::Event;
use trailwatch_core::ports::{HistoryCursor, HistoryPage, HistoryQuery, HistoryStore, PortError, WriteReport};

use super::{signed, unsigned, SqliteStore};

const INSERT: &str = "
INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name,
                    identity_type, actor_arn, access_key_id, source_ip, error_code, read_only, raw)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
ON CONFLICT (event_time, account_id, event_id) DO NOTHING";

/// `count()` reads a counter instead of counting millions of rows. It changes
/// in the transaction that adds the rows, so it is exact; whatever deletes
/// events later (retention) must subtract in its own transaction likewise.
const ADD_TO_COUNT: &str = "UPDATE counters SET value = value + ?1 WHERE name = 'events'";

const COUNT: &str = "SELECT value FROM counters WHERE name = 'events'";

/// The columns a page reads, `seq` first.
const COLUMNS: &str = "seq, account_id, event_id, event_time, region, event_source, event_name, \
                       identity_type, actor_arn, access_key_id, source_ip, error_code, read_only, raw";

/// Writes a batch in one transaction; events already stored are counted, not written.
fn append(conn: &mut Connection, events: &[Event]) -> rusqlite::Result<WriteReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = WriteReport::default();
    {
        let mut insert = tx.prepare_cached(INSERT)?;
        for e in events {
            let written = insert.execute(params![
                e.account_id,
                e.event_id,
                e.event_time,
                e.region,
                e.event_source,
                e.event_name,
                e.identity_type,
                e.actor_arn,
                e.access_key_id,
                e.source_ip,
                e.error_code,
                e.read_only,
                e.raw,
            ])?;
            if written == 0 {
                report.duplicates += 1;
            } else {
                report.inserted += 1;
            }
        }
    }
    if report.inserted > 0 {
        tx.prepare_cached(ADD_TO_COUNT)?.execute([signed(report.inserted)])?;
    }
    tx.commit()?;
    Ok(report)
}

/// Where a page starts: after the cursor, or at `since` (inclusive), whichever
/// is later. One bound, so SQLite seeks the `events_time` index to it
/// instead of picking one of two bounds and filtering the other.
fn lower_bound(query: &HistoryQuery) -> Option<HistoryCursor> {
    let since = query.since.map(|t| HistoryCursor { event_time: t, seq: i64::MIN });
    match (query.after, since) {
        (Some(after), Some(since)) => Some(after.max(since)),
        (after, since) => after.or(since),
    }
}

/// The statement of a page: only the conditions the query uses, so that the
/// time bounds are a range of the `events_time` index. At most 8 variants,
/// each prepared once per connection.
fn page_sql(query: &HistoryQuery) -> String {
    let mut conditions = Vec::new();
    if lower_bound(query).is_some() {
        // `seq` is never i64::MIN, so (since, i64::MIN) keeps `since` inclusive.
        conditions.push("(event_time, seq) > (?, ?)");
    }
    if query.until.is_some() {
        conditions.push("event_time < ?");
    }
    if query.account.is_some() {
        // `+` keeps SQLite from serving this from `events_identity` and then
        // sorting the whole account: until an (account_id, event_time) index
        // exists, walking the time index and filtering is the bounded plan.
        conditions.push("+account_id = ?");
    }
    let filter = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    format!("SELECT {COLUMNS} FROM events {filter} ORDER BY event_time, seq LIMIT ?")
}

fn page(conn: &Connection, query: &HistoryQuery) -> rusqlite::Result<HistoryPage> {
    let limit = signed(query.limit as u64);
    let start = lower_bound(query);
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(5);
    if let Some(start) = &start {
        values.push(&start.event_time);
        values.push(&start.seq);
    }
    if let Some(until) = &query.until {
        values.push(until);
    }
    if let Some(account) = &query.account {
        values.push(account);
    }
    values.push(&limit);
    let mut statement = conn.prepare_cached(&page_sql(query))?;
    let mut rows = statement.query(values.as_slice())?;
    let mut page = HistoryPage::default();
    let mut last = None;
    while let Some(row) = rows.next()? {
        let event = Event {
            account_id: row.get(1)?,
            event_id: row.get(2)?,
            event_time: row.get(3)?,
            region: row.get(4)?,
            event_source: row.get(5)?,
            event_name: row.get(6)?,
            identity_type: row.get(7)?,
            actor_arn: row.get(8)?,
            access_key_id: row.get(9)?,
            source_ip: row.get(10)?,
            error_code: row.get(11)?,
            read_only: row.get(12)?,
            raw: row.get(13)?,
        };
        last = Some(HistoryCursor { event_time: event.event_time, seq: row.get(0)? });
        page.events.push(event);
    }
    // A full page may have more after it; a short one is the last.
    if query.limit > 0 && page.events.len() == query.limit {
        page.next = last;
    }
    Ok(page)
}

/// Events stored, from the counter kept by [`append`].
pub(super) fn count(conn: &Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached(COUNT)?.query_row([], |row| unsigned(row, 0, "counters.value"))
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn append(&self, events: std::sync::Arc<[Event]>) -> Result<WriteReport, PortError> {
        if events.is_empty() {
            return Ok(WriteReport::default());
        }
        self.write(move |conn| append(conn, &events)).await
    }

    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        let query = query.clone();
        self.read(move |conn| page(conn, &query)).await
    }

    async fn count(&self) -> Result<u64, PortError> {
        self.read(|conn| count(conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_use_the_time_index_without_sorting() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let queries = [
            HistoryQuery { limit: 10, ..Default::default() },
            HistoryQuery { since: Some(1), until: Some(2), limit: 10, ..Default::default() },
            HistoryQuery {
                since: Some(1),
                account: Some("111122223333".into()),
                after: Some(HistoryCursor { event_time: 5, seq: 3 }),
                limit: 10,
                ..Default::default()
            },
        ];
        for query in queries {
            let sql = format!("EXPLAIN QUERY PLAN {}", page_sql(&query));
            let mut statement = conn.prepare(&sql).expect("explain");
            let plan: Vec<String> = statement
                .query_map(rusqlite::params_from_iter(std::iter::repeat_n(0, sql.matches('?').count())), |row| row.get(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("plan rows");
            let plan = plan.join("; ");
            assert!(plan.contains("events_time"), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        }
    }
}
