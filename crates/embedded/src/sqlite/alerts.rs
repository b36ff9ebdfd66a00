//! Alerts in the `alerts`, `alert_transitions` and `alert_outbox` tables
//! (see the schema for their indexes). A commit checks each change's base
//! revision and the one-unresolved-alert-per-key rule inside its write
//! transaction, in order, so a later change in the same commit sees the
//! earlier ones; a failed check rolls the whole commit back and reports a
//! retryable conflict. A notifying transition keeps the alert as it was right
//! after it, and its deliveries (one per sink) send that snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction, TransactionBehavior};
use trailwatch_core::alerts::{
    Alert, AlertChange, AlertCursor, AlertPage, AlertQuery, AlertStatus, AlertStore, Delivery, EventRef, Transition, TransitionKind,
};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::documents::to_json;
use super::{decode, signed, unsigned, SqliteStore};

const STORED: &str = "SELECT revision, dedup_key FROM alerts WHERE id = ?1";

const CURRENT_ID: &str = "SELECT id FROM alerts WHERE dedup_key = ?1 AND status <> 'resolved'";

const CURRENT: &str = "SELECT alert FROM alerts WHERE dedup_key = ?1 AND status <> 'resolved'";

const UPSERT: &str = "
INSERT INTO alerts (id, dedup_key, status, severity, rule_id, account_id, origin_principal, origin_event_account, origin_event_id,
                    first_seen, last_seen, quiet_at, revision, updated_at, alert)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
ON CONFLICT (id) DO UPDATE SET
    status = excluded.status, severity = excluded.severity, rule_id = excluded.rule_id, account_id = excluded.account_id,
    origin_principal = excluded.origin_principal, origin_event_account = excluded.origin_event_account,
    origin_event_id = excluded.origin_event_id, first_seen = excluded.first_seen, last_seen = excluded.last_seen,
    quiet_at = excluded.quiet_at, revision = excluded.revision, updated_at = excluded.updated_at, alert = excluded.alert";

const INSERT_TRANSITION: &str = "
INSERT INTO alert_transitions (alert_id, revision, kind, at, recorded_at, cause, by_person, notify, snapshot)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// A new delivery is due from when its transition was recorded.
const QUEUE: &str = "INSERT INTO alert_outbox (sink, alert_id, revision, next_attempt_at) VALUES (?1, ?2, ?3, ?4)";

const GET: &str = "SELECT alert FROM alerts WHERE id = ?1";

/// The columns of a [`Transition`], in the order [`transition`] reads them.
macro_rules! transition_columns {
    () => {
        "t.alert_id, t.revision, t.kind, t.at, t.recorded_at, t.cause, t.by_person, t.notify"
    };
}

const TRANSITIONS: &str = concat!("SELECT ", transition_columns!(), " FROM alert_transitions t WHERE t.alert_id = ?1 ORDER BY t.revision");

const QUIET: &str = "
SELECT alert FROM alerts
WHERE status <> 'resolved' AND quiet_at IS NOT NULL AND quiet_at < ?1
ORDER BY quiet_at, id
LIMIT ?2";

const BY_ORIGIN_EVENT: &str = "SELECT alert FROM alerts WHERE origin_event_id = ?2 AND origin_event_account = ?1 AND status <> 'resolved'";

const DUE: &str = concat!(
    "SELECT ",
    transition_columns!(),
    ", t.snapshot, o.id, o.sink, o.attempts, o.next_attempt_at, o.last_error
FROM alert_outbox o JOIN alert_transitions t ON t.alert_id = o.alert_id AND t.revision = o.revision
WHERE o.sink = ?1 AND o.done_at IS NULL AND o.next_attempt_at <= ?2
ORDER BY o.next_attempt_at, o.id
LIMIT ?3"
);

const DELIVERED: &str = "UPDATE alert_outbox SET done_at = ?2 WHERE id = ?1 AND done_at IS NULL";

const RETRY_LATER: &str = "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt_at = ?2, last_error = ?3 WHERE id = ?1 AND done_at IS NULL";

const OUTSTANDING: &str = "SELECT sink, count(*) FROM alert_outbox WHERE done_at IS NULL GROUP BY sink";

fn alert(row: &Row<'_>) -> rusqlite::Result<Alert> {
    decode(row, 0, "alerts.alert", |json: String| serde_json::from_str(&json).map_err(|e| format!("invalid alert JSON: {e}")))
}

fn transition(row: &Row<'_>) -> rusqlite::Result<Transition> {
    Ok(Transition {
        alert_id: row.get(0)?,
        revision: unsigned(row, 1, "alert_transitions.revision")?,
        kind: decode(row, 2, "alert_transitions.kind", |s: String| TransitionKind::parse(&s).ok_or(format!("unknown transition kind {s:?}")))?,
        at: row.get(3)?,
        recorded_at: row.get(4)?,
        cause: row.get(5)?,
        by: row.get(6)?,
        notify: row.get(7)?,
    })
}

/// A row of [`DUE`]: the transition's columns, its snapshot, then the outbox's.
fn delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        transition: transition(row)?,
        alert: decode(row, 8, "alert_transitions.snapshot", |json: Option<String>| {
            serde_json::from_str(json.as_deref().ok_or("a queued transition without its alert")?).map_err(|e| format!("invalid alert JSON: {e}"))
        })?,
        id: row.get(9)?,
        sink: row.get(10)?,
        attempts: decode(row, 11, "alert_outbox.attempts", |v: i64| u32::try_from(v).map_err(|_| format!("out of range: {v}")))?,
        next_attempt_at: row.get(12)?,
        last_error: row.get(13)?,
    })
}

fn conflict(id: &str, message: String) -> PortError {
    PortError::backend(format!("alert {id}"), format!("{message}; read it again and redo the change"), true)
}

/// Writes the changes in one transaction, or none of them: the outer error
/// is SQLite's, the inner one a change the stored state refuses.
fn commit(conn: &mut Connection, changes: &[AlertChange], sinks: &[String]) -> rusqlite::Result<Result<(), PortError>> {
    if let Some(invalid) = changes.iter().find_map(|c| c.check().err()) {
        return Ok(Err(invalid));
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for change in changes {
        if let Err(refused) = write_change(&tx, change, sinks)? {
            return Ok(Err(refused)); // dropping `tx` rolls back
        }
    }
    tx.commit()?;
    Ok(Ok(()))
}

fn write_change(tx: &Transaction<'_>, change: &AlertChange, sinks: &[String]) -> rusqlite::Result<Result<(), PortError>> {
    let a = &change.alert;
    let stored = tx.prepare_cached(STORED)?.query_row([&a.id], |row| Ok((unsigned(row, 0, "alerts.revision")?, row.get::<_, String>(1)?))).optional()?;
    if stored.as_ref().map(|(revision, _)| *revision) != change.base_revision {
        let message = match (stored.as_ref().map(|s| s.0), change.base_revision) {
            (Some(revision), None) => format!("already stored (revision {revision}), the change opens it"),
            (None, Some(base)) => format!("not stored, the change was made from revision {base}"),
            (stored, base) => format!("stored at revision {stored:?}, the change was made from revision {base:?}"),
        };
        return Ok(Err(conflict(&a.id, message)));
    }
    if let Some((_, key)) = stored.filter(|(_, key)| *key != a.dedup_key) {
        return Ok(Err(PortError::Invalid { what: format!("alert {}", a.id), message: format!("dedup key {key} changed to {}", a.dedup_key) }));
    }
    if a.status != AlertStatus::Resolved {
        let holder: Option<String> = tx.prepare_cached(CURRENT_ID)?.query_row([&a.dedup_key], |row| row.get(0)).optional()?;
        if let Some(other) = holder.filter(|other| *other != a.id) {
            return Ok(Err(conflict(&a.id, format!("alert {other} is already unresolved for dedup key {}", a.dedup_key))));
        }
    }
    let json = to_json(a)?;
    let quiet_at = a.resolve_after_ms.map(|after| a.last_seen.saturating_add(after));
    tx.prepare_cached(UPSERT)?.execute(params![
        a.id,
        a.dedup_key,
        a.status.as_str(),
        a.severity as i64,
        a.rule_id,
        a.account_id,
        a.origin.as_ref().and_then(|o| o.principal.as_deref()),
        a.origin_event.as_ref().map(|e| e.account_id.as_str()),
        a.origin_event.as_ref().map(|e| e.event_id.as_str()),
        a.first_seen,
        a.last_seen,
        quiet_at,
        signed(a.revision),
        a.updated_at,
        json,
    ])?;
    let mut insert = tx.prepare_cached(INSERT_TRANSITION)?;
    let mut queue = tx.prepare_cached(QUEUE)?;
    for t in &change.transitions {
        let snapshot = t.notify.then_some(json.as_str());
        insert.execute(params![t.alert_id, signed(t.revision), t.kind.as_str(), t.at, t.recorded_at, t.cause, t.by, t.notify, snapshot])?;
        if t.notify {
            for sink in sinks {
                queue.execute(params![sink, t.alert_id, signed(t.revision), t.recorded_at])?;
            }
        }
    }
    Ok(Ok(()))
}

/// The listing's statement and its parameters.
fn list_statement(query: &AlertQuery) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut param = |v: Value| {
        values.push(v);
        format!("?{}", values.len())
    };
    let mut conditions: Vec<String> = Vec::new();
    if let Some(statuses) = &query.status {
        let list: Vec<String> = statuses.iter().map(|s| param(Value::Text(s.as_str().to_owned()))).collect();
        conditions.push(if list.is_empty() { "0".to_owned() } else { format!("status IN ({})", list.join(", ")) });
    }
    if let Some(severity) = query.severity_at_least {
        conditions.push(format!("severity >= {}", param(Value::Integer(severity as i64))));
    }
    for (column, value) in [("rule_id", &query.rule_id), ("account_id", &query.account_id), ("origin_principal", &query.origin_principal)] {
        if let Some(value) = value {
            conditions.push(format!("{column} = {}", param(Value::Text(value.clone()))));
        }
    }
    if let Some(since) = query.since {
        conditions.push(format!("last_seen >= {}", param(Value::Integer(since))));
    }
    if let Some(until) = query.until {
        conditions.push(format!("first_seen < {}", param(Value::Integer(until))));
    }
    if let Some(after) = &query.after {
        let at = param(Value::Integer(after.updated_at));
        let id = param(Value::Text(after.id.clone()));
        conditions.push(format!("updated_at <= {at} AND (updated_at < {at} OR id < {id})"));
    }
    let limit = param(Value::Integer(signed(query.limit as u64)));
    let filter = if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
    (format!("SELECT alert FROM alerts{filter} ORDER BY updated_at DESC, id DESC LIMIT {limit}"), values)
}

fn list(conn: &Connection, query: &AlertQuery) -> rusqlite::Result<AlertPage> {
    if query.limit == 0 {
        return Ok(AlertPage::default());
    }
    let (sql, values) = list_statement(query);
    let alerts: Vec<Alert> = conn.prepare(&sql)?.query_map(params_from_iter(values), alert)?.collect::<Result<_, _>>()?;
    let next = if alerts.len() == query.limit { alerts.last().map(|a| AlertCursor { updated_at: a.updated_at, id: a.id.clone() }) } else { None };
    Ok(AlertPage { alerts, next })
}

#[async_trait]
impl AlertStore for SqliteStore {
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError> {
        let keys = dedup_keys.to_vec();
        self.read(move |conn| {
            let mut select = conn.prepare_cached(CURRENT)?;
            let mut found = HashMap::new();
            for key in keys {
                if let Some(alert) = select.query_row([&key], alert).optional()? {
                    found.insert(key, alert);
                }
            }
            Ok(found)
        })
        .await
    }

    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        if changes.is_empty() {
            return Ok(());
        }
        let sinks = sinks.to_vec();
        self.write(move |conn| commit(conn, &changes, &sinks)).await?
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        let id = id.to_owned();
        self.read(move |conn| conn.prepare_cached(GET)?.query_row([&id], alert).optional()).await
    }

    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        let id = id.to_owned();
        self.read(move |conn| conn.prepare_cached(TRANSITIONS)?.query_map([&id], transition)?.collect()).await
    }

    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError> {
        let query = query.clone();
        self.read(move |conn| list(conn, &query)).await
    }

    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError> {
        let limit = signed(limit as u64);
        self.read(move |conn| conn.prepare_cached(QUIET)?.query_map(params![now, limit], alert)?.collect()).await
    }

    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        let mut wanted: Vec<(String, String)> = events.iter().map(|e| (e.account_id.clone(), e.event_id.clone())).collect();
        wanted.sort_unstable();
        wanted.dedup();
        self.read(move |conn| {
            let mut select = conn.prepare_cached(BY_ORIGIN_EVENT)?;
            let mut seen = HashSet::new();
            let mut found = Vec::new();
            for (account, event_id) in &wanted {
                for row in select.query_map([account, event_id], alert)? {
                    let alert = row?;
                    if seen.insert(alert.id.clone()) {
                        found.push(alert);
                    }
                }
            }
            found.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(found)
        })
        .await
    }

    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError> {
        let sink = sink.to_owned();
        let limit = signed(limit as u64);
        self.read(move |conn| conn.prepare_cached(DUE)?.query_map(params![sink, now, limit], delivery)?.collect()).await
    }

    async fn delivered(&self, ids: &[i64], at: EpochMillis) -> Result<(), PortError> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.to_vec();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                let mut done = tx.prepare_cached(DELIVERED)?;
                for id in ids {
                    done.execute(params![id, at])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError> {
        let error = error.to_owned();
        let changed = self.write(move |conn| conn.prepare_cached(RETRY_LATER)?.execute(params![id, next_attempt_at, error])).await?;
        if changed == 0 {
            return Err(PortError::NotFound { what: format!("outstanding delivery {id} in {}", self.path().display()) });
        }
        Ok(())
    }

    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError> {
        self.read(|conn| conn.prepare_cached(OUTSTANDING)?.query_map([], |row| Ok((row.get::<_, String>(0)?, unsigned(row, 1, "count")?)))?.collect()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(sql: &str) -> String {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).expect("explain");
        let nulls = std::iter::repeat_n(Value::Null, statement.parameter_count());
        let rows: Vec<String> = statement.query_map(params_from_iter(nulls), |row| row.get(3)).expect("plan").collect::<Result<_, _>>().expect("rows");
        rows.join("; ")
    }

    #[test]
    fn lookups_seek_their_indexes() {
        for (sql, index) in [
            (CURRENT, "alerts_current"),
            (CURRENT_ID, "alerts_current"),
            (QUIET, "alerts_quiet"),
            (BY_ORIGIN_EVENT, "alerts_origin_event"),
            (DUE, "alert_outbox_due"),
            (OUTSTANDING, "alert_outbox_due"),
            (TRANSITIONS, "sqlite_autoindex_alert_transitions_1"),
        ] {
            let plan = plan(sql);
            assert!(plan.contains(index), "{sql}\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "sorted by the index, not afterwards: {sql}\n{plan}");
        }
        let paged = AlertQuery { after: Some(AlertCursor { updated_at: 5, id: "x".into() }), limit: 10, ..Default::default() };
        let (sql, _) = list_statement(&paged);
        let plan = plan(&sql);
        assert!(plan.contains("alerts_listing") && !plan.contains("TEMP B-TREE"), "the listing pages along its index: {plan}");
    }

    #[test]
    fn listing_filters_bind_their_values() {
        let query = AlertQuery {
            status: Some(vec![AlertStatus::Open, AlertStatus::Acknowledged]),
            rule_id: Some("root-login'; DROP TABLE alerts; --".into()),
            limit: 3,
            ..Default::default()
        };
        let (sql, values) = list_statement(&query);
        assert!(!sql.contains("DROP"), "values are parameters, never spliced: {sql}");
        assert_eq!(values.len(), 4, "{sql}");
        let none = list_statement(&AlertQuery { status: Some(vec![]), limit: 3, ..Default::default() }).0;
        assert!(none.contains("WHERE 0"), "no status at all matches nothing: {none}");
    }
}
