//! Event history in S3, read back through Athena.
//!
//! **Layout.** An append writes gzipped JSON Lines, one event a line, one
//! object per (account, region, UTC day of the event time); origins settled
//! later go beside them. These are the tables of
//! [`ddl::enriched_events_ddl`] and [`ddl::origin_updates_ddl`]:
//!
//! ```text
//! <prefix>/account=<12 digits>/region=<region>/date=<YYYY-MM-DD>/<newest event ms>-<events>-<sha256>.json.gz
//! <prefix>-origins/account=<12 digits>/date=<YYYY-MM-DD>/<written ms>-<sha256>.json.gz
//! ```
//!
//! A line holds exactly the columns those tables declare: the fields
//! searches filter on as columns, the actor and the origin as JSON strings,
//! the record byte for byte, and `seq` and `written_at`.
//!
//! **Idempotency.** An event object's name is a function of its events only
//! (the SHA-256 of their sorted keys) and it is written with
//! `If-None-Match: *`: appending the same batch again (the enricher does
//! after a crash) writes nothing and counts the batch as duplicates. A
//! re-read that batches the same events *differently* writes a second copy
//! of them under another name; S3 cannot tell, so those count as inserted.
//! Reads therefore keep one row per (`account_id`, `event_id`): the first
//! written (lowest `seq`), so an event's position never moves and its
//! stored origin is the first one, as in every other store.
//!
//! **Origins settled later.** An [`OriginUpdate`] names no region, so it
//! cannot sit in its event's partition: updates are their own table, and
//! reads take each event's newest update (highest `written_at`; within a
//! batch only an event's last update is written) over its stored origin.
//!
//! **Positions.** `seq` is `written_at × 10⁶ + (name hash mod 100) × 10⁴ +
//! line`: arrival order across appends (by the writer's clock, strictly
//! increasing within a process), batch order within one; unique unless two
//! processes write objects in the same millisecond with the same name hash.
//!
//! **Cost.** Athena bills the bytes of the partitions a query reads, not the
//! rows it returns. Searches read the days of their range (≤ 31) and, when
//! named, one account and one region. Reads with no range (`get`,
//! `get_many`, `count`, `page` without `since`) read the last
//! `lookback_days` days ([`DEFAULT_LOOKBACK_DAYS`]): older events are not
//! found by them. A page's query returns up to ten pages of rows; the
//! following pages are read from that execution (`GetQueryResults` with its
//! token) for [`CONTINUATION_TTL`], so they show history as it was at the
//! first page. `last_events` lists S3 instead of querying.

mod objects;
mod sql;

pub use objects::{read_event_object, read_origins_object, StoredEvent, StoredOrigin};
pub use sql::{result_column_names, result_row};

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use trailwatch_core::event::Event;
use trailwatch_core::ports::{
    EventFilter, HistoryCursor, HistoryPage, HistoryQuery, HistoryStore, LastEvent, OriginUpdate, PortError, SearchHit, SearchPage, WriteReport,
};
use trailwatch_core::time::EpochMillis;

use crate::athena::{ddl, Athena, QueryPage};
use crate::error::AwsResult;
use objects::{bounded, partition_value, plan_events, plan_origins, Bucket};
use sql::{count_sql, event_of_row, keys_sql, scan_sql, ResultColumns, Scan, Sql, Tables};

/// The most events one object holds; a larger group is cut in batch order.
pub const MAX_OBJECT_EVENTS: usize = 5_000;

/// How far back reads without a time range look, by default.
pub const DEFAULT_LOOKBACK_DAYS: u32 = 90;

/// Keys one `get_many` query asks for; a larger batch costs more queries.
pub const MAX_KEYS_PER_QUERY: usize = 500;

/// How long the rest of a query execution serves the next pages.
pub const CONTINUATION_TTL: Duration = Duration::from_secs(300);

/// Requests to S3 in flight at once (uploads of an append, listings).
const S3_CONCURRENCY: usize = 16;

/// A query returns up to this many pages of rows, and at most `MAX_QUERY_ROWS`.
const PAGES_PER_QUERY: usize = 10;
const MAX_QUERY_ROWS: usize = 10_000;

/// The most rows `GetQueryResults` returns at once.
const MAX_PAGE_ROWS: usize = 1000;

const DAY_MS: EpochMillis = 86_400_000;

/// The partition value of an event's region: its name when it is one
/// (lowercase letters, digits and `-`), else `unknown` (records without
/// `awsRegion`). Athena sees [`ddl::COMMERCIAL_REGIONS`] and `unknown`;
/// objects of other regions are stored all the same.
pub fn region_partition(region: &str) -> &str {
    let valid = !region.is_empty() && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        region
    } else {
        "unknown"
    }
}

fn is_account_id(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// The wall clock in milliseconds, strictly increasing across calls in this
/// process (so two writes never share a `written_at`).
fn write_time() -> EpochMillis {
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as EpochMillis);
    let previous = LAST.fetch_max(now, Ordering::SeqCst);
    if previous >= now {
        LAST.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        now
    }
}

fn now_ms() -> EpochMillis {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as EpochMillis)
}

fn invalid(what: impl Into<String>, message: impl Into<String>) -> PortError {
    PortError::Invalid { what: what.into(), message: message.into() }
}

// ---------------------------------------------------------------------------
// Continuations

/// The rest of a query execution, for the page after a full one.
#[derive(Clone)]
struct Continuation {
    sql: Arc<Sql>,
    /// Athena's page token; None once every row was read.
    token: Option<String>,
    rows_read: usize,
    /// The query's LIMIT: reaching it means there may be more rows after.
    rows_max: usize,
}

/// Query executions whose later rows serve the next pages, by scan and by
/// the cursor of the page that stopped there. Entries live
/// [`CONTINUATION_TTL`]; a miss runs the query again from the cursor.
struct Continuations {
    cache: moka::future::Cache<(u64, EpochMillis, i64), Continuation>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Continuations {
    fn new() -> Self {
        Continuations {
            cache: moka::future::Cache::builder().max_capacity(10_000).time_to_live(CONTINUATION_TTL).build(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    async fn take(&self, scan: u64, cursor: HistoryCursor) -> Option<Continuation> {
        let found = self.cache.remove(&(scan, cursor.event_time, cursor.seq)).await;
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    async fn keep(&self, scan: u64, cursor: HistoryCursor, continuation: Continuation) {
        self.cache.insert((scan, cursor.event_time, cursor.seq), continuation).await;
    }
}

/// How often a next page was read from an earlier query execution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContinuationStats {
    pub hits: u64,
    pub misses: u64,
}

// ---------------------------------------------------------------------------
// The store

/// Event history as objects in S3 (the enricher writes), queried through
/// Athena (the API reads). See the module documentation.
pub struct S3History {
    bucket: Bucket,
    /// Without a trailing `/`.
    prefix: String,
    athena: Option<Arc<Athena>>,
    /// The events table.
    table: String,
    /// The origin updates table.
    origins_table: String,
    lookback_days: u32,
    continuations: Continuations,
}

impl S3History {
    /// History under `s3://<bucket>/<prefix>/`, queried as `table` (in the
    /// Athena settings' database) when `athena` is given; without it, only
    /// writes and `last_events` work.
    pub fn new(s3: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: impl Into<String>, athena: Option<Arc<Athena>>, table: String) -> Self {
        let prefix: String = prefix.into();
        S3History {
            bucket: Bucket { s3, name: Arc::from(bucket.into()) },
            prefix: prefix.trim_end_matches('/').to_owned(),
            athena,
            origins_table: format!("{table}_origins"),
            table,
            lookback_days: DEFAULT_LOOKBACK_DAYS,
            continuations: Continuations::new(),
        }
    }

    /// How far back reads without a time range look (at least a day).
    pub fn with_lookback_days(mut self, days: u32) -> Self {
        self.lookback_days = days.max(1);
        self
    }

    /// The table of origin updates ([`ddl::origin_updates_ddl`]), when it is
    /// not `<table>_origins`.
    pub fn with_origins_table(mut self, table: impl Into<String>) -> Self {
        self.origins_table = table.into();
        self
    }

    /// Where event objects are: `s3://<bucket>/<prefix>` (the events table's location).
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket.name, self.prefix)
    }

    /// Where origins objects are: `s3://<bucket>/<prefix>-origins` (the origins table's location).
    pub fn origins_location(&self) -> String {
        format!("{}-origins", self.location())
    }

    /// The key prefix of one partition of events, with its trailing `/`.
    pub fn partition_prefix(&self, account_id: &str, region: &str, day: &str) -> String {
        format!("{}/account={account_id}/region={}/date={day}/", self.prefix, region_partition(region))
    }

    /// The key prefix of one partition of origins, with its trailing `/`.
    pub fn origins_partition_prefix(&self, account_id: &str, day: &str) -> String {
        format!("{}-origins/account={account_id}/date={day}/", self.prefix)
    }

    pub fn continuation_stats(&self) -> ContinuationStats {
        ContinuationStats { hits: self.continuations.hits.load(Ordering::Relaxed), misses: self.continuations.misses.load(Ordering::Relaxed) }
    }

    fn athena(&self) -> AwsResult<(&Athena, Tables)> {
        let athena = self.athena.as_deref().ok_or_else(|| invalid(format!("history at {}", self.location()), "history queries need Athena"))?;
        let database = &athena.settings().database;
        let tables = Tables { events: ddl::qualified(database, &self.table)?, origins: ddl::qualified(database, &self.origins_table)? };
        Ok((athena, tables))
    }

    /// The start of the first day reads without a range look at: a day
    /// boundary, so the pages of one read agree on it all day.
    fn lookback_start(&self) -> EpochMillis {
        (now_ms() - i64::from(self.lookback_days) * DAY_MS).div_euclid(DAY_MS) * DAY_MS
    }

    /// One page of a scan: from the execution a previous page stopped in
    /// when it is remembered, else from a new query.
    async fn scan(&self, scan: &Scan, after: Option<HistoryCursor>, limit: usize) -> AwsResult<(Vec<SearchHit>, Option<HistoryCursor>)> {
        let start = after.map_or(scan.since, |a| a.event_time.max(scan.since));
        if limit == 0 || scan.until.is_some_and(|until| start >= until) {
            return Ok((Vec::new(), None));
        }
        let (athena, tables) = self.athena()?;
        let print = scan.fingerprint();
        let limit = limit.min(MAX_PAGE_ROWS);
        let mut resumed = None;
        if let Some(cursor) = after {
            if let Some(c) = self.continuations.take(print, cursor).await {
                match &c.token {
                    // That execution held every row after the cursor.
                    None if c.rows_read < c.rows_max => return Ok((Vec::new(), None)),
                    // It stopped at its LIMIT: a new query goes on from the cursor.
                    None => {}
                    Some(token) => match athena.query_page(&c.sql.text, &c.sql.params, Some(token.clone()), limit as i32).await {
                        Ok(page) => resumed = Some((c, page)),
                        // Results expire; the query can always run again.
                        Err(e) => tracing::debug!(error = %e, "reading the next page of an earlier query failed; querying again"),
                    },
                }
            }
        }
        let (mut continuation, mut page) = match resumed {
            Some(found) => found,
            None => {
                let rows_max = (limit * PAGES_PER_QUERY).min(MAX_QUERY_ROWS);
                let sql = Arc::new(scan_sql(&tables, scan, after, rows_max));
                let page = athena.query_page(&sql.text, &sql.params, None, limit as i32).await?;
                (Continuation { sql, token: None, rows_read: 0, rows_max }, page)
            }
        };
        let columns = ResultColumns::new(&page.columns, page.rows.len(), &page.query_execution_id)?;
        let mut hits = Vec::with_capacity(limit);
        loop {
            continuation.rows_read += page.rows.len();
            for row in &page.rows {
                let (event, seq) = event_of_row(&columns, row, &page.query_execution_id)?;
                hits.push(SearchHit { cursor: HistoryCursor { event_time: event.event_time, seq }, event });
            }
            continuation.token = page.next_token.take();
            match &continuation.token {
                Some(token) if hits.len() < limit => {
                    let more = athena.query_page(&continuation.sql.text, &continuation.sql.params, Some(token.clone()), (limit - hits.len()) as i32).await?;
                    page = QueryPage { columns: page.columns, ..more };
                }
                _ => break,
            }
        }
        // A full page may have more after it; a short one is the last.
        let next = if hits.len() >= limit { hits.last().map(|h| h.cursor) } else { None };
        if let Some(cursor) = next {
            self.continuations.keep(print, cursor, continuation).await;
        }
        Ok((hits, next))
    }

    /// The stored events of some keys, one query per [`MAX_KEYS_PER_QUERY`].
    async fn fetch(&self, keys: &[(String, String)]) -> AwsResult<Vec<Event>> {
        // Keys that cannot be stored (not an account id, an id too long for a parameter) are not found.
        let wanted: BTreeSet<(&str, &str)> =
            keys.iter().filter(|(a, id)| is_account_id(a) && id.len() <= 1000).map(|(a, id)| (a.as_str(), id.as_str())).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let (athena, tables) = self.athena()?;
        let wanted: Vec<(&str, &str)> = wanted.into_iter().collect();
        let mut found = Vec::new();
        for chunk in wanted.chunks(MAX_KEYS_PER_QUERY) {
            let accounts: BTreeSet<&str> = chunk.iter().map(|k| k.0).collect();
            let ids: BTreeSet<&str> = chunk.iter().map(|k| k.1).collect();
            let sql = keys_sql(&tables, self.lookback_start(), &accounts.into_iter().collect::<Vec<_>>(), &ids.into_iter().collect::<Vec<_>>());
            let result = athena.query(&sql.text, &sql.params).await?;
            let columns = ResultColumns::new(&result.columns, result.rows.len(), &result.query_execution_id)?;
            for row in &result.rows {
                let (event, _) = event_of_row(&columns, row, &result.query_execution_id)?;
                if chunk.binary_search(&(event.account_id.as_str(), event.event_id.as_str())).is_ok() {
                    found.push(event);
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl HistoryStore for S3History {
    /// Writes the batch's objects. `duplicates` counts the events of objects
    /// already there (the same batch appended again) and repeats within the
    /// batch; an event stored before in a batch cut differently is written
    /// again and counted as inserted: S3 cannot tell (reads keep one copy).
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        if events.is_empty() {
            return Ok(WriteReport::default());
        }
        let (objects, repeats) = plan_events(&self.prefix, &events, write_time())?;
        let (inserted, existed) = self.bucket.put_all(objects, true).await?;
        Ok(WriteReport { inserted, duplicates: existed + repeats })
    }

    /// Pages of at most 1000 events (a larger `limit` is cut); without
    /// `since`, from `lookback_days` ago. The range's days are read per query.
    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        let scan = Scan { since: query.since.unwrap_or_else(|| self.lookback_start()), until: query.until, account: query.account.clone(), ..Scan::default() };
        let (hits, next) = self.scan(&scan, query.after, query.limit).await?;
        Ok(HistoryPage { events: hits.into_iter().map(|h| h.event).collect(), next })
    }

    /// The distinct events of the last `lookback_days` days: the query reads
    /// every object of those days (Athena bills all their bytes).
    async fn count(&self) -> Result<u64, PortError> {
        let (athena, tables) = self.athena()?;
        let sql = count_sql(&tables, self.lookback_start());
        let result = athena.query(&sql.text, &sql.params).await?;
        let value = result.rows.first().and_then(|row| row.first()).and_then(|v| v.as_deref());
        value
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PortError::backend(format!("athena query {}", result.query_execution_id), format!("count: expected a number, got {value:?}"), false))
    }

    /// Writes the updates; reads apply the newest update of an event. S3
    /// cannot tell which events are stored without a query: every distinct
    /// (account, eventID) updated is counted, stored or not.
    async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let objects = plan_origins(&self.prefix, &updates, write_time())?;
        self.bucket.put_all(objects, false).await?;
        Ok(updates.iter().map(|u| (&u.account_id, &u.event_id)).collect::<HashSet<_>>().len() as u64)
    }

    /// One query over the account's last `lookback_days` days.
    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
        Ok(self.fetch(&[(account_id.to_owned(), event_id.to_owned())]).await?.pop())
    }

    /// One query per [`MAX_KEYS_PER_QUERY`] keys, over the accounts' last `lookback_days` days.
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        self.fetch(keys).await
    }

    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
        filter.validate()?;
        let (hits, next) = self.scan(&Scan::of_filter(filter), filter.after, filter.limit).await?;
        Ok(SearchPage { hits, next })
    }

    /// From S3 listings, no query: per account and region partition, the
    /// newest day's object names carry their newest event time. Costs
    /// 1 + accounts + 2 × (account, region) list requests. Regions are
    /// partition values (`unknown` for records without one).
    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        let root = format!("{}/", self.prefix);
        let what = format!("listing s3://{}/{root}", self.bucket.name);
        let accounts = self.bucket.clone().list(root, true).await?;
        let regions: Vec<Vec<String>> = bounded(accounts.into_iter().map(|a| self.bucket.clone().list(a, true)), &what).await?;
        let newest = regions.into_iter().flatten().map(|region| {
            let bucket = self.bucket.clone();
            async move { Ok((bucket.newest_event(region.clone()).await?, region)) }
        });
        let mut found: Vec<LastEvent> = bounded(newest, &what)
            .await?
            .into_iter()
            .filter_map(|(time, folder)| {
                let account = partition_value(folder.trim_end_matches('/').rsplit_once('/')?.0, "account")?;
                Some(LastEvent { account_id: account.to_owned(), region: partition_value(&folder, "region")?.to_owned(), event_time: time? })
            })
            .collect();
        found.sort_by(|a, b| (&a.account_id, &a.region).cmp(&(&b.account_id, &b.region)));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_times_never_repeat() {
        let times: Vec<EpochMillis> = (0..1000).map(|_| write_time()).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "strictly increasing");
    }
}
