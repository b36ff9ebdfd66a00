//! Event history in the `events` table: idempotent batch appends, pages in
//! (event time, seq) order where `seq` is the arrival order, single events by
//! id, and late origins.
//!
//! An event's actor is stored as its indexed columns plus the rest of the
//! [`Caller`]; its origin as four indexed columns plus the whole [`Origin`].
//! Those two are JSON documents that the events of a session share, stored
//! once ([`super::documents`]). The record itself is stored byte for byte.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, ToSql, TransactionBehavior};
use trailwatch_core::event::Event;
use trailwatch_core::identity::{Caller, Origin};
use trailwatch_core::ports::{
    EventFilter, HistoryCursor, HistoryPage, HistoryQuery, HistoryStore, LastEvent, OriginUpdate, PortError, SearchHit, SearchPage, WriteReport,
};
use trailwatch_core::view::RecordView;

use super::documents::{Document, DocumentCache, Documents, Loaded};
use super::{lock, signed, unsigned, SqliteStore};

const INSERT: &str = "
INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name,
                    identity_type, actor_arn, access_key_id, source_ip, error_code, read_only, raw,
                    actor_doc, shared_event_id, origin_kind, origin_principal, origin_account, confidence, origin_doc)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)
ON CONFLICT (event_time, account_id, event_id) DO NOTHING";

/// `count()` reads a counter instead of counting millions of rows. It changes
/// in the transaction that adds the rows, so it is exact; whatever deletes
/// events later (retention) must subtract in its own transaction likewise
/// (and delete the documents no event points at any more).
const ADD_TO_COUNT: &str = "UPDATE counters SET value = value + ?1 WHERE name = 'events'";

const COUNT: &str = "SELECT value FROM counters WHERE name = 'events'";

/// The newest event time per account and region (`event_regions`), kept in
/// the transaction that adds the events.
const TOUCH_REGION: &str = "
INSERT INTO event_regions (account_id, region, last_event_time) VALUES (?1, ?2, ?3)
ON CONFLICT (account_id, region) DO UPDATE SET last_event_time = max(last_event_time, excluded.last_event_time)";

/// How many rows, in arrival order, make a bucket of the `events_by_id`
/// index, as the schema writes it (`seq / 4096`).
const ID_BUCKET_ROWS: i64 = 4096;

/// The columns an [`Event`] is read from, `seq` first, in [`Reader::event`]'s order.
macro_rules! event_columns {
    () => {
        "seq, account_id, event_id, event_time, region, event_source, event_name, \
         identity_type, actor_arn, access_key_id, source_ip, error_code, read_only, raw, \
         actor_doc, shared_event_id, origin_doc"
    };
}

/// The last row: the newest bucket a lookup by id probes.
const LAST_SEQ: &str = "SELECT max(seq) FROM events";

/// One event by account and eventID within one bucket, through
/// `events_by_id` (the expressions are the index's own, so SQLite uses it).
const GET_IN_BUCKET: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM events WHERE seq / 4096 = ?1 AND substr(event_id, 1, 13) = substr(?3, 1, 13) AND account_id = ?2 AND event_id = ?3"
);

/// How many eventIDs one statement of [`get_many`] names.
const GET_MANY_CHUNK: usize = 250;

/// Events by eventID within one bucket, for `ids` eventIDs at once: the
/// lookup of [`GET_IN_BUCKET`] with lists (`?1` the bucket, `?2`… the ids),
/// so SQLite seeks `events_by_id` once per id. Accounts are checked by the caller.
fn get_many_sql(ids: usize) -> String {
    let params: Vec<String> = (2..ids + 2).map(|i| format!("?{i}")).collect();
    let prefixes: Vec<String> = params.iter().map(|p| format!("substr({p}, 1, 13)")).collect();
    format!(
        concat!("SELECT ", event_columns!(), " FROM events WHERE seq / 4096 = ?1 AND substr(event_id, 1, 13) IN ({}) AND event_id IN ({})"),
        prefixes.join(", "),
        params.join(", ")
    )
}

/// A late origin, found through the unique index.
const SET_ORIGIN: &str = "
UPDATE events SET origin_kind = ?4, origin_principal = ?5, origin_account = ?6, confidence = ?7, origin_doc = ?8
WHERE event_time = ?1 AND account_id = ?2 AND event_id = ?3";

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// An actor is stored but for its indexed columns, so that the sessions of
/// one role and session name share a document.
impl Document for Caller {
    fn part(&self) -> Self {
        Caller { identity_type: String::new(), arn: None, access_key_id: None, ..self.clone() }
    }

    fn key(&self) -> u64 {
        hash_of((&self.identity_type, &self.arn, &self.access_key_id, &self.principal_id))
    }
}

/// An origin is stored whole.
impl Document for Origin {
    fn key(&self) -> u64 {
        let last = self.chain.last().map(|hop| (&hop.access_key_id, hop.time));
        hash_of((self.kind, &self.principal, self.confidence, self.chain.len(), last))
    }
}

/// Writes a batch in one transaction; events already stored are counted, not written.
fn append(conn: &mut Connection, cache: &mut DocumentCache, events: &[Event]) -> rusqlite::Result<WriteReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = WriteReport::default();
    let mut newest: HashMap<(&str, &str), i64> = HashMap::new();
    let (actors, origins) = {
        let (mut actors, mut origins) = (Documents::new(&tx, &cache.actors), Documents::new(&tx, &cache.origins));
        let mut insert = tx.prepare_cached(INSERT)?;
        for e in events {
            let actor_doc = e.actor.as_ref().map(|a| actors.id(a)).transpose()?;
            let origin = e.origin.as_ref();
            let origin_doc = origin.map(|o| origins.id(o)).transpose()?;
            let written = insert.execute(params![
                e.account_id,
                e.event_id,
                e.event_time,
                e.region,
                e.event_source,
                e.event_name,
                e.identity_type(),
                e.actor_arn(),
                e.access_key_id(),
                e.source_ip,
                e.error_code,
                e.read_only,
                e.raw,
                actor_doc,
                e.shared_event_id,
                origin.map(|o| o.kind.as_str()),
                origin.and_then(|o| o.principal.as_deref()),
                origin.and_then(|o| o.account_id.as_deref()),
                origin.map(|o| o.confidence.as_str()),
                origin_doc,
            ])?;
            if written == 0 {
                report.duplicates += 1;
            } else {
                report.inserted += 1;
                let t = newest.entry((&e.account_id, &e.region)).or_insert(e.event_time);
                *t = (*t).max(e.event_time);
            }
        }
        (actors.stored(), origins.stored())
    };
    if report.inserted > 0 {
        tx.prepare_cached(ADD_TO_COUNT)?.execute([signed(report.inserted)])?;
    }
    if !newest.is_empty() {
        let mut touch = tx.prepare_cached(TOUCH_REGION)?;
        for ((account, region), time) in newest {
            touch.execute(params![account, region, time])?;
        }
    }
    tx.commit()?;
    cache.actors.remember(actors);
    cache.origins.remember(origins);
    Ok(report)
}

/// Reads events from rows of [`event_columns`], with the documents they
/// point at (each parsed once per read).
struct Reader<'c> {
    conn: &'c Connection,
    actors: Loaded<Caller>,
    origins: Loaded<Origin>,
}

impl<'c> Reader<'c> {
    fn new(conn: &'c Connection) -> Self {
        Reader { conn, actors: Loaded::new("events.actor_doc"), origins: Loaded::new("events.origin_doc") }
    }

    fn event(&mut self, row: &Row<'_>) -> rusqlite::Result<Event> {
        let raw: String = row.get(13)?;
        let identity_type: Option<String> = row.get(7)?;
        let actor = match (identity_type, row.get::<_, Option<i64>>(14)?) {
            (None, _) => None,
            (Some(identity_type), doc) => {
                let rest = match doc {
                    Some(id) => self.actors.get(self.conn, id)?,
                    // Written before actors were stored whole: read it again from the record.
                    None => RecordView::parse(raw.as_bytes()).ok().and_then(|view| view.user_identity.as_ref().map(Caller::from_view)).unwrap_or_default(),
                };
                Some(Caller { identity_type, arn: row.get(8)?, access_key_id: row.get(9)?, ..rest })
            }
        };
        let origin = row.get::<_, Option<i64>>(16)?.map(|id| self.origins.get(self.conn, id)).transpose()?;
        Ok(Event {
            account_id: row.get(1)?,
            event_id: row.get(2)?,
            event_time: row.get(3)?,
            region: row.get(4)?,
            event_source: row.get(5)?,
            event_name: row.get(6)?,
            actor,
            shared_event_id: row.get(15)?,
            source_ip: row.get(10)?,
            error_code: row.get(11)?,
            read_only: row.get(12)?,
            raw,
            origin,
        })
    }
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
    format!(concat!("SELECT ", event_columns!(), " FROM events {} ORDER BY event_time, seq LIMIT ?"), filter)
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
    let mut reader = Reader::new(conn);
    while let Some(row) = rows.next()? {
        let event = reader.event(row)?;
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

/// One event by account and eventID: probes the arrival buckets of
/// `events_by_id`, newest first, and stops at the first match. A recently
/// stored event (the usual question) is found in a few probes; one that is
/// not stored costs a probe per 4,096 events, each a seek of a few pages.
fn get(conn: &mut Connection, account_id: &str, event_id: &str) -> rusqlite::Result<Option<Event>> {
    // One read transaction: every bucket probed in the same state of history.
    let tx = conn.transaction()?;
    let found = {
        let last: Option<i64> = tx.prepare_cached(LAST_SEQ)?.query_row([], |row| row.get(0))?;
        let newest = last.map_or(-1, |seq| seq / ID_BUCKET_ROWS);
        let mut probe = tx.prepare_cached(GET_IN_BUCKET)?;
        let mut reader = Reader::new(&tx);
        let mut found = None;
        for bucket in (0..=newest).rev() {
            found = probe.query_row(params![bucket, account_id, event_id], |row| reader.event(row)).optional()?;
            if found.is_some() {
                break;
            }
        }
        found
    };
    tx.commit()?;
    Ok(found)
}

/// Many events by account and eventID, as [`get`] finds one, in one read
/// transaction: per chunk of eventIDs, one statement probes the arrival
/// buckets newest first, every id of the chunk at once, and stops when each
/// key is found. The statements are as many as buckets probed, whatever the
/// number of keys.
fn get_many(conn: &mut Connection, keys: &[(String, String)]) -> rusqlite::Result<Vec<Event>> {
    // The accounts wanted per eventID (the same eventID may be asked of several accounts).
    let mut accounts: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (account_id, event_id) in keys {
        accounts.entry(event_id.as_str()).or_default().push(account_id.as_str());
    }
    let ids: Vec<&str> = accounts.keys().copied().collect();
    let mut found = Vec::new();
    let tx = conn.transaction()?;
    {
        let last: Option<i64> = tx.prepare_cached(LAST_SEQ)?.query_row([], |row| row.get(0))?;
        let newest = last.map_or(-1, |seq| seq / ID_BUCKET_ROWS);
        let mut reader = Reader::new(&tx);
        for chunk in ids.chunks(GET_MANY_CHUNK) {
            let mut left: HashSet<(String, String)> =
                chunk.iter().flat_map(|id| accounts[id].iter().map(move |account| ((*account).to_owned(), (*id).to_owned()))).collect();
            // Not cached: its text depends on the chunk's size, and it would push out the statements that are.
            let mut probe = tx.prepare(&get_many_sql(chunk.len()))?;
            for bucket in (0..=newest).rev() {
                if left.is_empty() {
                    break;
                }
                let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() + 1);
                values.push(&bucket);
                values.extend(chunk.iter().map(|id| id as &dyn ToSql));
                let mut rows = probe.query(values.as_slice())?;
                while let Some(row) = rows.next()? {
                    let key: (String, String) = (row.get(1)?, row.get(2)?);
                    if left.remove(&key) {
                        found.push(reader.event(row)?);
                    }
                }
            }
        }
    }
    tx.commit()?;
    Ok(found)
}

/// Replaces the origins of stored events in one transaction; returns how many were found.
fn set_origins(conn: &mut Connection, cache: &mut DocumentCache, updates: &[OriginUpdate]) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut updated = 0;
    let origins = {
        let mut origins = Documents::new(&tx, &cache.origins);
        let mut update = tx.prepare_cached(SET_ORIGIN)?;
        for u in updates {
            let o = &u.origin;
            let doc = origins.id(o)?;
            updated +=
                update.execute(params![u.event_time, u.account_id, u.event_id, o.kind.as_str(), o.principal, o.account_id, o.confidence.as_str(), doc])? as u64;
        }
        origins.stored()
    };
    tx.commit()?;
    cache.origins.remember(origins);
    Ok(updated)
}

/// The minutes that lead `events_origin` (`event_time / 60000`, as the schema writes it).
const ORIGIN_BUCKET_MS: i64 = 60_000;

const LAST_EVENTS: &str = "SELECT account_id, region, last_event_time FROM event_regions ORDER BY account_id, region";

/// Where a search starts: after the cursor, or at `since` (inclusive), whichever is later.
fn search_start(filter: &EventFilter) -> HistoryCursor {
    let since = HistoryCursor { event_time: filter.since, seq: i64::MIN };
    filter.after.map_or(since, |after| after.max(since))
}

/// A search page's statement and its values in placeholder order. When it
/// reads `events_origin`, the first value is the minute read; the last value
/// is always the limit.
struct SearchStatement {
    sql: String,
    values: Vec<Value>,
    by_minute: bool,
}

/// With an origin principal, a search reads `events_origin` one minute at a
/// time (minute and principal equal, then the time range: entries come in
/// (event_time, seq) order); without, it seeks the time range of
/// `events_time`. `INDEXED BY` pins the plan: no filter turns it into a scan,
/// and SQLite refuses the statement rather than run it without its index.
/// The other filters are checked on each row (`+` keeps SQLite from serving
/// them from another index). Only the conditions set are in the statement,
/// so each combination is its own cached statement.
fn search_statement(filter: &EventFilter) -> SearchStatement {
    let start = search_start(filter);
    let (mut conditions, mut values) = (Vec::new(), Vec::new());
    let by_minute = filter.origin_principal.is_some();
    if let Some(principal) = &filter.origin_principal {
        conditions.extend(["event_time / 60000 = ?", "origin_principal = ?"]);
        values.extend([Value::Null, Value::Text(principal.clone())]);
    }
    // `seq` is never i64::MIN, so (since, i64::MIN) keeps `since` inclusive.
    conditions.extend(["(event_time, seq) > (?, ?)", "event_time < ?"]);
    values.extend([Value::Integer(start.event_time), Value::Integer(start.seq), Value::Integer(filter.until)]);
    let texts = [
        ("+account_id = ?", &filter.account),
        ("+region = ?", &filter.region),
        ("+event_source = ?", &filter.event_source),
        ("+event_name = ?", &filter.event_name),
        ("+actor_arn = ?", &filter.actor_arn),
        ("+source_ip = ?", &filter.source_ip),
        ("+error_code = ?", &filter.error_code),
    ];
    for (condition, value) in texts {
        if let Some(value) = value {
            conditions.push(condition);
            values.push(Value::Text(value.clone()));
        }
    }
    if let Some(kind) = filter.origin_kind {
        conditions.push("+origin_kind = ?");
        values.push(Value::Text(kind.as_str().to_owned()));
    }
    if let Some(read_only) = filter.read_only {
        conditions.push("+read_only = ?");
        values.push(Value::Integer(read_only.into()));
    }
    values.push(Value::Integer(signed(filter.limit as u64)));
    let index = if by_minute { "events_origin" } else { "events_time" };
    let sql =
        format!(concat!("SELECT ", event_columns!(), " FROM events INDEXED BY {} WHERE {} ORDER BY event_time, seq LIMIT ?"), index, conditions.join(" AND "));
    SearchStatement { sql, values, by_minute }
}

/// A search page (the filter is validated): one statement over the time
/// range, or one per minute of it for an origin principal, until the page is
/// full. All in one read transaction, so every minute comes from the same state.
fn search(conn: &mut Connection, filter: &EventFilter) -> rusqlite::Result<SearchPage> {
    let start = search_start(filter);
    let mut page = SearchPage::default();
    if start.event_time >= filter.until || filter.limit == 0 {
        return Ok(page);
    }
    let mut statement = search_statement(filter);
    let minutes = if statement.by_minute { start.event_time / ORIGIN_BUCKET_MS..=(filter.until - 1) / ORIGIN_BUCKET_MS } else { 0..=0 };
    let tx = conn.transaction()?;
    {
        let mut select = tx.prepare_cached(&statement.sql)?;
        let mut reader = Reader::new(&tx);
        let mut last = None;
        for minute in minutes {
            if statement.by_minute {
                statement.values[0] = Value::Integer(minute);
            }
            if let Some(limit) = statement.values.last_mut() {
                *limit = Value::Integer(signed((filter.limit - page.hits.len()) as u64));
            }
            let mut rows = select.query(params_from_iter(statement.values.iter()))?;
            while let Some(row) = rows.next()? {
                let event = reader.event(row)?;
                let cursor = HistoryCursor { event_time: event.event_time, seq: row.get(0)? };
                last = Some(cursor);
                page.hits.push(SearchHit { cursor, event });
            }
            if page.hits.len() >= filter.limit {
                break;
            }
        }
        // A full page may have more after it; a short one is the last.
        if page.hits.len() >= filter.limit {
            page.next = last;
        }
    }
    tx.commit()?;
    Ok(page)
}

/// The newest event time per account and region, from `event_regions`.
fn last_events(conn: &Connection) -> rusqlite::Result<Vec<LastEvent>> {
    let mut select = conn.prepare_cached(LAST_EVENTS)?;
    let rows = select.query_map([], |row| Ok(LastEvent { account_id: row.get(0)?, region: row.get(1)?, event_time: row.get(2)? }))?;
    rows.collect()
}

#[async_trait]
impl HistoryStore for SqliteStore {
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        if events.is_empty() {
            return Ok(WriteReport::default());
        }
        let inner = Arc::clone(&self.inner);
        self.write(move |conn| append(conn, &mut lock(&inner.documents), &events)).await
    }

    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        let query = query.clone();
        self.read(move |conn| page(conn, &query)).await
    }

    async fn count(&self) -> Result<u64, PortError> {
        self.read(|conn| count(conn)).await
    }

    async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let inner = Arc::clone(&self.inner);
        self.write(move |conn| set_origins(conn, &mut lock(&inner.documents), &updates)).await
    }

    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
        let (account_id, event_id) = (account_id.to_owned(), event_id.to_owned());
        self.read(move |conn| get(conn, &account_id, &event_id)).await
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = keys.to_vec();
        self.read(move |conn| get_many(conn, &keys)).await
    }

    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
        filter.validate()?;
        let filter = filter.clone();
        self.read(move |conn| search(conn, &filter)).await
    }

    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        self.read(|conn| last_events(conn)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::ports::EventFilter;

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

    #[test]
    fn a_lookup_by_id_seeks_the_id_index_in_each_bucket() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {GET_IN_BUCKET}"))
            .expect("explain")
            .query_map(params![1, "a", "b"], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX events_by_id (<expr>=? AND <expr>=?)"), "{plan}");
    }

    #[test]
    fn a_lookup_of_many_ids_seeks_the_id_index() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", get_many_sql(3)))
            .expect("explain")
            .query_map(params![1, "a", "b", "c"], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX events_by_id (<expr>=? AND <expr>=?)"), "{plan}");
    }

    /// Keys spread over three arrival buckets and more ids than one statement names.
    #[tokio::test]
    async fn many_events_are_found_across_buckets_and_chunks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(dir.path().join("t.db")).expect("open");
        let base = 1_700_000_000_000;
        let events: Vec<Event> = (0..9_000).map(|i| trailwatch_core::conformance::sample_event("111122223333", &format!("ev-{i:05}"), base + i)).collect();
        store.append(events.clone().into()).await.expect("append");
        let wanted: Vec<&Event> = events.iter().step_by(15).collect();
        assert!(wanted.len() > GET_MANY_CHUNK);
        let mut keys: Vec<(String, String)> = wanted.iter().map(|e| (e.account_id.clone(), e.event_id.clone())).collect();
        keys.push(("444455556666".into(), "ev-00000".into()));
        keys.push(("111122223333".into(), "ev-99999".into()));
        let mut found = store.get_many(&keys).await.expect("get many");
        found.sort_by(|a, b| a.event_id.cmp(&b.event_id));
        assert_eq!(found.iter().collect::<Vec<_>>(), wanted, "every stored key once, none of another account or not stored");
    }

    #[test]
    fn every_search_seeks_an_index_and_never_sorts() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let base = EventFilter::new(1_000, 2_000, 10);
        let text = || Some("x".to_owned());
        let mut filters = vec![
            base.clone(),
            EventFilter { account: text(), ..base.clone() },
            EventFilter { region: text(), ..base.clone() },
            EventFilter { event_source: text(), ..base.clone() },
            EventFilter { event_name: text(), ..base.clone() },
            EventFilter { actor_arn: text(), ..base.clone() },
            EventFilter { origin_principal: text(), ..base.clone() },
            EventFilter { origin_kind: Some(trailwatch_core::identity::OriginKind::Root), ..base.clone() },
            EventFilter { source_ip: text(), ..base.clone() },
            EventFilter { error_code: text(), ..base.clone() },
            EventFilter { read_only: Some(false), ..base.clone() },
            EventFilter { after: Some(HistoryCursor { event_time: 1_500, seq: 7 }), ..base.clone() },
        ];
        let everything = EventFilter {
            account: text(),
            region: text(),
            event_source: text(),
            event_name: text(),
            actor_arn: text(),
            origin_kind: Some(trailwatch_core::identity::OriginKind::Root),
            source_ip: text(),
            error_code: text(),
            read_only: Some(true),
            after: Some(HistoryCursor { event_time: 1_500, seq: 7 }),
            ..base.clone()
        };
        filters.push(everything.clone());
        filters.push(EventFilter { origin_principal: text(), ..everything });
        for filter in filters {
            let mut statement = search_statement(&filter);
            if statement.by_minute {
                statement.values[0] = Value::Integer(0);
            }
            let sql = format!("EXPLAIN QUERY PLAN {}", statement.sql);
            let plan: Vec<String> = conn
                .prepare(&sql)
                .expect("explain")
                .query_map(params_from_iter(statement.values.iter()), |row| row.get(3))
                .expect("plan")
                .collect::<Result<_, _>>()
                .expect("plan rows");
            let plan = plan.join("; ");
            let seek = if filter.origin_principal.is_some() {
                "SEARCH events USING INDEX events_origin (<expr>=? AND origin_principal=? AND event_time"
            } else {
                "SEARCH events USING INDEX events_time (event_time"
            };
            assert!(plan.starts_with(seek), "{filter:?}: {plan}");
            assert!(!plan.contains("SCAN") && !plan.contains("TEMP B-TREE"), "{filter:?}: {plan}");
        }
    }
}
