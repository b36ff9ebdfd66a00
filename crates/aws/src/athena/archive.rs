//! The session archive over the raw trail: the events that issued a batch's
//! unknown keys, found by one Athena query.
//!
//! The query reads only the `date` partitions that can hold an issuing event
//! (from the earliest use minus the longest session, to the latest use plus
//! the delivery margin) and only STS and Identity Center credential calls,
//! and matches the keys in the response. Athena scans whole JSON files, so
//! what keeps a query cheap is the partitions, not the columns; the columns
//! are still few (those the session capture reads), to keep results small.
//! Each row is reassembled into a CloudTrail record and given to the same
//! [`capture`] the collector uses, so there is one reader of issuing events.
//!
//! Keys, dates: execution parameters. The table name: an identifier checked
//! by [`ddl::identifier`]. A key the trail does not hold is remembered
//! ([`MissCache`]) for `negative_ttl`, by key and hour of use, so a batch
//! that keeps seeing it does not pay for it again.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use trailwatch_core::identity::{capture, Session, SessionArchive, WINDOW_SLACK_MS};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;
use trailwatch_core::view::RecordView;

use super::{ddl, Athena, QueryResult};
use crate::error::AwsResult;

/// Keys asked in one query at most; a batch with more costs more queries.
pub const MAX_KEYS_PER_QUERY: usize = 200;

/// How long after an event its file may be delivered (the `date` folder is
/// the delivery day): the query reads this far past the latest use.
pub const DELIVERY_MARGIN: Duration = Duration::from_secs(2 * 3600);

const HOUR_MS: EpochMillis = 3_600_000;

/// What the query selects, as `(expression, column name)`: the fields the
/// session capture reads. The names are the result's columns.
pub const SESSION_COLUMNS: &[(&str, &str)] = &[
    ("\"account\"", "key_account"),
    ("eventid", "event_id"),
    ("eventtime", "event_time"),
    ("eventsource", "event_source"),
    ("eventname", "event_name"),
    ("errorcode", "error_code"),
    ("recipientaccountid", "recipient_account_id"),
    ("sharedeventid", "shared_event_id"),
    ("useridentity.type", "identity_type"),
    ("useridentity.principalid", "principal_id"),
    ("useridentity.arn", "arn"),
    ("useridentity.accountid", "account_id"),
    ("useridentity.accesskeyid", "access_key_id"),
    ("useridentity.username", "user_name"),
    ("useridentity.invokedby", "invoked_by"),
    ("useridentity.identityprovider", "identity_provider"),
    ("useridentity.onbehalfof.userid", "on_behalf_of_user_id"),
    ("useridentity.onbehalfof.identitystorearn", "identity_store_arn"),
    ("useridentity.sessioncontext.sourceidentity", "source_identity"),
    ("useridentity.sessioncontext.ec2roledelivery", "ec2_role_delivery"),
    ("useridentity.sessioncontext.sessionissuer.arn", "session_issuer_arn"),
    ("useridentity.sessioncontext.webidfederationdata.federatedprovider", "federated_provider"),
    ("requestparameters", "request_parameters"),
    ("responseelements", "response_elements"),
];

/// Where each result column goes in the reassembled record's `userIdentity`.
const IDENTITY_FIELDS: &[(&str, &[&str])] = &[
    ("identity_type", &["type"]),
    ("principal_id", &["principalId"]),
    ("arn", &["arn"]),
    ("account_id", &["accountId"]),
    ("access_key_id", &["accessKeyId"]),
    ("user_name", &["userName"]),
    ("invoked_by", &["invokedBy"]),
    ("identity_provider", &["identityProvider"]),
    ("on_behalf_of_user_id", &["onBehalfOf", "userId"]),
    ("identity_store_arn", &["onBehalfOf", "identityStoreArn"]),
    ("source_identity", &["sessionContext", "sourceIdentity"]),
    ("ec2_role_delivery", &["sessionContext", "ec2RoleDelivery"]),
    ("session_issuer_arn", &["sessionContext", "sessionIssuer", "arn"]),
    ("federated_provider", &["sessionContext", "webIdFederationData", "federatedProvider"]),
];

/// Where the other result columns go in the record.
const RECORD_FIELDS: &[(&str, &str)] = &[
    ("event_id", "eventID"),
    ("event_time", "eventTime"),
    ("event_source", "eventSource"),
    ("event_name", "eventName"),
    ("error_code", "errorCode"),
    ("recipient_account_id", "recipientAccountId"),
    ("shared_event_id", "sharedEventID"),
];

/// Counts since the archive was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Athena queries run.
    pub queries: u64,
    /// Keys asked in them.
    pub keys_asked: u64,
    /// Keys not asked because the trail recently had no issuing event for them.
    pub negative_hits: u64,
    /// Sessions found.
    pub sessions_found: u64,
    /// Rows that did not make a session (not an issuing event after all, unreadable JSON).
    pub rows_skipped: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    keys_asked: AtomicU64,
    negative_hits: AtomicU64,
    sessions_found: AtomicU64,
    rows_skipped: AtomicU64,
}

/// Keys the trail had no issuing event for, by key and hour of use. A miss
/// answers later uses in the same hour (the query covered the whole session
/// length before them) for `negative_ttl` of wall time, after which the
/// trail may have received the file.
struct MissCache {
    inner: moka::future::Cache<(String, EpochMillis), ()>,
}

impl MissCache {
    fn new(ttl: Duration) -> Self {
        MissCache { inner: moka::future::Cache::builder().max_capacity(100_000).time_to_live(ttl).build() }
    }

    async fn contains(&self, key: &str, at: EpochMillis) -> bool {
        self.inner.contains_key(&(key.to_owned(), at.div_euclid(HOUR_MS)))
    }

    async fn insert(&self, key: &str, at: EpochMillis) {
        self.inner.insert((key.to_owned(), at.div_euclid(HOUR_MS)), ()).await;
    }
}

/// [`SessionArchive`] over the raw trail table (see [`ddl::raw_trail_ddl`]).
pub struct AthenaArchive {
    athena: Arc<Athena>,
    /// `"database"."table"`, checked.
    table: String,
    lookback_ms: EpochMillis,
    misses: MissCache,
    counters: Counters,
}

impl AthenaArchive {
    /// `table` is the raw trail table in the runner's database; `lookback`
    /// the longest a session lives (36 h: `GetSessionToken` and
    /// `GetFederationToken`); `negative_ttl` how long a key not found is not
    /// asked again. Fails when the database or table is not an identifier.
    pub fn new(athena: Arc<Athena>, table: String, lookback: Duration, negative_ttl: Duration) -> AwsResult<Self> {
        let table = ddl::qualified(&athena.settings().database, &table)?;
        let lookback_ms = EpochMillis::try_from(lookback.as_millis()).unwrap_or(EpochMillis::MAX);
        Ok(AthenaArchive { athena, table, lookback_ms, misses: MissCache::new(negative_ttl), counters: Counters::default() })
    }

    /// The runner its queries go through (its counters: queries by outcome, bytes scanned).
    pub fn athena(&self) -> &Arc<Athena> {
        &self.athena
    }

    pub fn stats(&self) -> ArchiveStats {
        let c = &self.counters;
        ArchiveStats {
            queries: c.queries.load(Ordering::Relaxed),
            keys_asked: c.keys_asked.load(Ordering::Relaxed),
            negative_hits: c.negative_hits.load(Ordering::Relaxed),
            sessions_found: c.sessions_found.load(Ordering::Relaxed),
            rows_skipped: c.rows_skipped.load(Ordering::Relaxed),
        }
    }

    /// The query for `keys` keys. Its parameters: the first and last `date`
    /// partition ([`ddl::trail_day`]), then the keys.
    pub fn query_text(&self, keys: usize) -> String {
        let columns: Vec<String> = SESSION_COLUMNS.iter().map(|(expr, name)| format!("{expr} AS {name}")).collect();
        let marks = vec!["?"; keys].join(", ");
        format!(
            "SELECT {columns}
FROM {table}
WHERE \"date\" BETWEEN ? AND ?
  AND eventsource IN ('sts.amazonaws.com', 'sso.amazonaws.com')
  AND eventname IN ('AssumeRole', 'AssumeRoleWithSAML', 'AssumeRoleWithWebIdentity', 'GetFederationToken', 'GetSessionToken', 'GetRoleCredentials')
  AND coalesce(json_extract_scalar(responseelements, '$.credentials.accessKeyId'),
               json_extract_scalar(responseelements, '$.roleCredentials.accessKeyId')) IN ({marks})",
            columns = columns.join(", "),
            table = self.table,
        )
    }

    /// The partitions that can hold the events that issued keys used at `times`.
    fn days(&self, times: impl Iterator<Item = EpochMillis> + Clone) -> Option<(String, String)> {
        let first = times.clone().min()?.saturating_sub(self.lookback_ms.saturating_add(WINDOW_SLACK_MS));
        let margin = EpochMillis::try_from(DELIVERY_MARGIN.as_millis()).unwrap_or(0);
        let last = times.max()?.saturating_add(WINDOW_SLACK_MS + margin);
        Some((ddl::trail_day(first), ddl::trail_day(last)))
    }

    /// One query for these pairs: every session any of their keys issued in the range.
    async fn search(&self, wanted: &[&(String, EpochMillis)]) -> AwsResult<Vec<Session>> {
        let keys: BTreeSet<&str> = wanted.iter().map(|(k, _)| k.as_str()).collect();
        let Some((first, last)) = self.days(wanted.iter().map(|(_, at)| *at)) else { return Ok(Vec::new()) };
        let mut params = vec![first, last];
        params.extend(keys.iter().map(|k| (*k).to_owned()));
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        self.counters.keys_asked.fetch_add(keys.len() as u64, Ordering::Relaxed);
        let result = self.athena.query(&self.query_text(keys.len()), &params).await?;
        Ok(self.sessions(&result))
    }

    /// The sessions the rows issued, read by the collector's own capture.
    fn sessions(&self, result: &QueryResult) -> Vec<Session> {
        let Some(columns) = Columns::of(result) else {
            tracing::warn!(query_execution_id = %result.query_execution_id, table = %self.table, columns = ?result.columns, "athena archive: result lacks the session columns");
            self.counters.rows_skipped.fetch_add(result.rows.len() as u64, Ordering::Relaxed);
            return Vec::new();
        };
        let mut sessions = Vec::new();
        for row in &result.rows {
            let session = columns.record(row).and_then(|(account, record)| {
                let view = RecordView::parse(record.as_bytes()).ok()?;
                capture(&view, &account)
            });
            match session {
                Some(s) => sessions.push(s),
                None => {
                    self.counters.rows_skipped.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        query_execution_id = %result.query_execution_id,
                        event_id = columns.get(row, "event_id").unwrap_or("unknown"),
                        "athena archive: a row issued no session"
                    );
                }
            }
        }
        sessions
    }
}

/// The positions of the result's columns, by name.
struct Columns {
    index: Vec<(&'static str, usize)>,
}

impl Columns {
    fn of(result: &QueryResult) -> Option<Columns> {
        let index = SESSION_COLUMNS.iter().map(|(_, name)| Some((*name, result.column(name)?))).collect::<Option<Vec<_>>>()?;
        Some(Columns { index })
    }

    fn get<'r>(&self, row: &'r [Option<String>], name: &str) -> Option<&'r str> {
        let (_, i) = self.index.iter().find(|(n, _)| *n == name)?;
        row.get(*i)?.as_deref().filter(|v| !v.is_empty())
    }

    /// The CloudTrail record a row was read from, as far as capture needs
    /// it, and the account whose folder held it.
    fn record(&self, row: &[Option<String>]) -> Option<(String, String)> {
        let mut record = Map::new();
        for (column, field) in RECORD_FIELDS {
            if let Some(v) = self.get(row, column) {
                record.insert((*field).to_owned(), Value::String(v.to_owned()));
            }
        }
        let mut identity = Map::new();
        for (column, path) in IDENTITY_FIELDS {
            if let Some(v) = self.get(row, column) {
                insert_at(&mut identity, path, v);
            }
        }
        if !identity.is_empty() {
            record.insert("userIdentity".into(), Value::Object(identity));
        }
        // The request and response are JSON texts in their columns.
        for (column, field) in [("request_parameters", "requestParameters"), ("response_elements", "responseElements")] {
            if let Some(json) = self.get(row, column) {
                record.insert(field.to_owned(), serde_json::from_str(json).ok()?);
            }
        }
        let text = serde_json::to_string(&record).ok()?;
        Some((self.get(row, "key_account")?.to_owned(), text))
    }
}

/// Sets `path` (nested objects) in `map` to the string `value`.
fn insert_at(map: &mut Map<String, Value>, path: &[&str], value: &str) {
    match path {
        [] => {}
        [last] => {
            map.insert((*last).to_owned(), Value::String(value.to_owned()));
        }
        [first, rest @ ..] => {
            let child = map.entry((*first).to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(inner) = child {
                insert_at(inner, rest, value);
            }
        }
    }
}

#[async_trait]
impl SessionArchive for AthenaArchive {
    async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
        Ok(self.find_many(&[(access_key_id.to_owned(), at)]).await?.pop())
    }

    /// One query per [`MAX_KEYS_PER_QUERY`] keys not recently missed; for
    /// each pair, the session valid then (the latest issued, both copies of
    /// a cross-account call merged).
    async fn find_many(&self, wanted: &[(String, EpochMillis)]) -> Result<Vec<Session>, PortError> {
        let mut ask = Vec::new();
        for pair in wanted {
            if self.misses.contains(&pair.0, pair.1).await {
                self.counters.negative_hits.fetch_add(1, Ordering::Relaxed);
            } else {
                ask.push(pair);
            }
        }
        let mut issued = Vec::new();
        let mut keys: Vec<&str> = ask.iter().map(|(k, _)| k.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
        while !keys.is_empty() {
            let chunk: BTreeSet<&str> = keys.drain(..keys.len().min(MAX_KEYS_PER_QUERY)).collect();
            let pairs: Vec<&(String, EpochMillis)> = ask.iter().copied().filter(|(k, _)| chunk.contains(k.as_str())).collect();
            issued.extend(self.search(&pairs).await?);
        }
        let mut found: Vec<Session> = Vec::new();
        for (key, at) in ask {
            let mut best: Option<Session> = None;
            for session in issued.iter().filter(|s| s.access_key_id == *key && s.valid_at(*at)) {
                match &mut best {
                    Some(b) if b.same_issue(session) => b.merge(session),
                    Some(b) if b.issued_at >= session.issued_at => {}
                    _ => best = Some(session.clone()),
                }
            }
            match best {
                Some(session) if !found.iter().any(|f| f.same_issue(&session)) => found.push(session),
                Some(_) => {}
                None => self.misses.insert(key, *at).await,
            }
        }
        self.counters.sessions_found.fetch_add(found.len() as u64, Ordering::Relaxed);
        Ok(found)
    }
}
