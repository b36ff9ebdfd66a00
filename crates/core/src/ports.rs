//! The ports: what the services need from the world, in trailwatch's own
//! types. Each has an in-memory implementation ([`crate::memory`]), an
//! embedded one (`trailwatch-embedded`), and a conformance suite
//! ([`crate::conformance`]) that every implementation passes.
//!
//! Other ports live beside their types: `SessionStore`, `SessionArchive` and
//! `PendingStore` in [`crate::identity`], `AlertStore` and `AlertSink` in
//! [`crate::alerts`]. Still to come, on the same pattern: `AliasSource`
//! (account names from Organizations with overrides; the embedded mode reads
//! an accounts file into [`crate::accounts::AccountDirectory`]).

use std::collections::{HashMap, HashSet};
use std::io::Read;

use async_trait::async_trait;

use crate::event::{Event, FileOutcome, FileStatus, RejectedRecord};
use crate::identity::OriginKind;
use crate::layout::ObjectKind;
use crate::time::EpochMillis;

/// An error from a port, without the adapter's own error types.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The object or item does not exist.
    #[error("{what}: not found")]
    NotFound { what: String },
    /// The backend failed; `retryable` says whether trying again may help.
    #[error("{what}: {message}")]
    Backend { what: String, message: String, retryable: bool },
    /// The request itself was wrong (bad input): retrying will not help.
    #[error("{what}: {message}")]
    Invalid { what: String, message: String },
}

impl PortError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PortError::Backend { retryable: true, .. })
    }

    pub fn backend(what: impl Into<String>, message: impl ToString, retryable: bool) -> Self {
        PortError::Backend { what: what.into(), message: message.to_string(), retryable }
    }
}

/// An object of the trail as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    pub modified: EpochMillis,
}

/// An object's bytes, as stored (gzip for trail files), read as a stream.
pub type ObjectBody = Box<dyn Read + Send>;

/// Where log files come from: the trail bucket, or a local directory laid out like it.
#[async_trait]
pub trait LogSource: Send + Sync {
    /// Where an object lives, for messages: `s3://bucket/key` or a file path.
    fn locate(&self, key: &str) -> String;

    /// Every object whose key starts with `prefix`, in key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError>;

    /// Opens an object for streaming.
    async fn open(&self, key: &str) -> Result<ObjectBody, PortError>;
}

/// What the ledger knows of one object.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub key: String,
    pub kind: ObjectKind,
    pub account_id: String,
    pub region: String,
    pub status: FileStatus,
    pub size: u64,
    pub modified: EpochMillis,
    pub events: u64,
    pub rejected: u64,
    pub attempts: u32,
    pub error: Option<String>,
    pub processed_at: EpochMillis,
}

impl LedgerEntry {
    /// Whether the listed object must be read (again): never seen, failed
    /// before, or changed since it was read.
    pub fn needs_work(entry: Option<&LedgerEntry>, meta: &ObjectMeta) -> bool {
        match entry {
            None => true,
            Some(e) => !e.status.is_final() || e.size != meta.size || e.modified != meta.modified,
        }
    }
}

/// Counts of ledger entries by status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerSummary {
    pub by_status: HashMap<FileStatus, u64>,
    pub events: u64,
    pub rejected_records: u64,
}

/// The ledger of processed objects: proof of what was read, and of what failed.
#[async_trait]
pub trait Checkpoints: Send + Sync {
    /// The entries of those keys that have one.
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError>;

    /// Records files' outcomes (and their rejected records), all or none. A
    /// second outcome for the same key replaces the first and counts an attempt.
    async fn record(&self, outcomes: std::sync::Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError>;

    /// Counts by status.
    async fn summary(&self) -> Result<LedgerSummary, PortError>;

    /// Entries that are failed, partial or empty, newest first.
    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError>;

    /// Records rejected from one object.
    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError>;

    /// Ingest health: per account and region, the files of events (logs and
    /// insights, not digests) recorded. Accounts by id, regions by name.
    async fn activity(&self) -> Result<Vec<FileActivity>, PortError>;

    /// The ledger against the digests: per account and region, the log files
    /// the digests list, how many the ledger has seen, and what their check
    /// found (see [`crate::integrity`]). Empty where digests are not checked.
    async fn completeness(&self) -> Result<Vec<crate::integrity::Completeness>, PortError> {
        Ok(Vec::new())
    }
}

/// What the ledger knows of one account's files in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileActivity {
    pub account_id: String,
    pub region: String,
    /// The newest file's time: from its key (CloudTrail names a file by the
    /// end of the interval it covers), or its `modified` when the key has none.
    pub last_file_time: EpochMillis,
    /// When a file of this account and region was last recorded (wall clock).
    pub last_processed_at: EpochMillis,
    /// Files recorded, whatever their status.
    pub files: u64,
    /// Files whose last attempt failed.
    pub failed: u64,
    /// Events stored from these files.
    pub events: u64,
}

/// What a write to history did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteReport {
    pub inserted: u64,
    /// Events already stored (same `eventID` in the same account).
    pub duplicates: u64,
}

/// A bounded read of history, in event-time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub since: Option<EpochMillis>,
    pub until: Option<EpochMillis>,
    pub account: Option<String>,
    /// Continue after this position (from [`HistoryPage::next`]).
    pub after: Option<HistoryCursor>,
    pub limit: usize,
}

/// A position in history: event time, then the store's own sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HistoryCursor {
    pub event_time: EpochMillis,
    pub seq: i64,
}

/// One page of history.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistoryPage {
    pub events: Vec<Event>,
    /// Where the next page starts; None when this page is the last.
    pub next: Option<HistoryCursor>,
}

/// Stored event history. Writes are idempotent on (`account_id`, `event_id`):
/// a record delivered twice (CloudTrail does that, rarely) is stored once. A
/// redelivered record carries its original `eventTime`, and stores may use it
/// to keep their uniqueness index local in time.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// Appends events; those already stored are counted as duplicates and left as they are.
    /// The batch is shared so a caller can retry it after a retryable error.
    async fn append(&self, events: std::sync::Arc<[Event]>) -> Result<WriteReport, PortError>;

    /// Reads a page in (event time, arrival) order.
    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError>;

    /// How many events are stored.
    async fn count(&self) -> Result<u64, PortError>;

    /// Replaces the origin of stored events (a late resolution); returns how
    /// many events were found and updated.
    async fn set_origins(&self, updates: std::sync::Arc<[OriginUpdate]>) -> Result<u64, PortError>;

    /// One stored event.
    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError>;

    /// The stored events of these (account id, event id) keys, each once, in
    /// no particular order; keys not stored are left out. Stores answer a
    /// batch in one round trip (the API's sample events of a page of
    /// alerts); this default asks [`HistoryStore::get`] key by key.
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        let mut seen = HashSet::with_capacity(keys.len());
        let mut found = Vec::with_capacity(keys.len());
        for (account_id, event_id) in keys {
            if seen.insert((account_id, event_id)) {
                found.extend(self.get(account_id, event_id).await?);
            }
        }
        Ok(found)
    }

    /// A page of the events that match every filter set, in (event time,
    /// arrival) order. Refused with [`PortError::Invalid`] when the filter
    /// is not [`EventFilter::validate`]d. See [`EventFilter`] for the paging
    /// contract.
    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError>;

    /// Per account and region, the newest event time stored. Accounts by id,
    /// regions by name.
    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError>;
}

/// The widest time range a search may cover.
pub const MAX_SEARCH_RANGE_MS: EpochMillis = 31 * 24 * 3_600_000;

/// The most events a search page may ask for.
pub const MAX_SEARCH_LIMIT: usize = 1000;

/// A search of history ([`HistoryStore::search`]): a required time range
/// `[since, until)` (since inclusive, until exclusive) of at most
/// [`MAX_SEARCH_RANGE_MS`], and filters that each must match exactly
/// (`None` does not filter). Strings compare exactly, case included.
///
/// Paging: pass a page's `next` back as `after` with the same filter. The
/// cursor is a position (event time, store sequence), not an offset, so events
/// stored between pages with a later position show up on later pages, and
/// none is repeated or skipped. An event stored later with an earlier
/// position than the cursor (a late log file) is not on the following pages.
/// A page holds at most `limit` events; keep following `next` until it is
/// `None`: a store may return a short (even empty) page with a `next` when it
/// stops early to bound the work one page costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub since: EpochMillis,
    pub until: EpochMillis,
    pub account: Option<String>,
    pub region: Option<String>,
    pub event_source: Option<String>,
    pub event_name: Option<String>,
    /// The actor's ARN as the record gives it (`userIdentity.arn`).
    pub actor_arn: Option<String>,
    /// The resolved origin's principal ([`crate::identity::Origin::principal`]).
    pub origin_principal: Option<String>,
    pub origin_kind: Option<OriginKind>,
    pub source_ip: Option<String>,
    pub error_code: Option<String>,
    /// Events whose record says `readOnly`; records that do not say match neither.
    pub read_only: Option<bool>,
    /// Continue after this position (from [`HistoryPage::next`]).
    pub after: Option<HistoryCursor>,
    pub limit: usize,
}

impl EventFilter {
    /// A filter over `[since, until)` with no other condition.
    pub fn new(since: EpochMillis, until: EpochMillis, limit: usize) -> Self {
        EventFilter {
            since,
            until,
            account: None,
            region: None,
            event_source: None,
            event_name: None,
            actor_arn: None,
            origin_principal: None,
            origin_kind: None,
            source_ip: None,
            error_code: None,
            read_only: None,
            after: None,
            limit,
        }
    }

    /// Whether a store may run this search: `since <= until`, a range of at
    /// most [`MAX_SEARCH_RANGE_MS`], and `1..=`[`MAX_SEARCH_LIMIT`] events a page.
    pub fn validate(&self) -> Result<(), PortError> {
        let invalid = |message: String| Err(PortError::Invalid { what: "event search".into(), message });
        if self.until < self.since {
            return invalid(format!("the range ends ({}) before it starts ({})", self.until, self.since));
        }
        if self.until.saturating_sub(self.since) > MAX_SEARCH_RANGE_MS {
            return invalid(format!("the range is longer than {} days", MAX_SEARCH_RANGE_MS / 86_400_000));
        }
        if self.limit == 0 || self.limit > MAX_SEARCH_LIMIT {
            return invalid(format!("a page holds 1 to {MAX_SEARCH_LIMIT} events, not {}", self.limit));
        }
        Ok(())
    }

    /// Whether an event matches every filter but the time range and cursor.
    pub fn matches(&self, event: &Event) -> bool {
        fn eq(want: &Option<String>, have: Option<&str>) -> bool {
            want.as_deref().is_none_or(|w| have == Some(w))
        }
        let origin = event.origin.as_ref();
        eq(&self.account, Some(&event.account_id))
            && eq(&self.region, Some(&event.region))
            && eq(&self.event_source, Some(&event.event_source))
            && eq(&self.event_name, Some(&event.event_name))
            && eq(&self.actor_arn, event.actor_arn())
            && eq(&self.origin_principal, origin.and_then(|o| o.principal.as_deref()))
            && self.origin_kind.is_none_or(|k| origin.map(|o| o.kind) == Some(k))
            && eq(&self.source_ip, event.source_ip.as_deref())
            && eq(&self.error_code, event.error_code.as_deref())
            && self.read_only.is_none_or(|r| event.read_only == Some(r))
    }
}

/// One page of a search: each event with its position, so a caller can
/// resume after any of them (a Relay edge's cursor, or a tail that polls
/// after the last event of a short page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchPage {
    pub hits: Vec<SearchHit>,
    /// Where the next page starts; None when the store found no more.
    pub next: Option<HistoryCursor>,
}

/// An event found, and where it is in history.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub cursor: HistoryCursor,
    pub event: Event,
}

/// The newest event stored of one account in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastEvent {
    pub account_id: String,
    pub region: String,
    pub event_time: EpochMillis,
}

/// An account seen in the trail: its newest event and its ingest per region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountActivity {
    pub account_id: String,
    /// The newest event stored, any region.
    pub last_event_time: Option<EpochMillis>,
    /// By region name.
    pub regions: Vec<RegionActivity>,
}

/// One account's ingest in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionActivity {
    pub region: String,
    pub last_event_time: Option<EpochMillis>,
    /// None when events are stored but the ledger has no file (not in normal ingest).
    pub files: Option<FileActivity>,
}

/// Accounts seen, from the ledger and history together, by account id: every
/// account and region with a file recorded or an event stored.
pub async fn account_activity(ledger: &dyn Checkpoints, history: &dyn HistoryStore) -> Result<Vec<AccountActivity>, PortError> {
    use std::collections::BTreeMap;
    let mut regions: BTreeMap<(String, String), RegionActivity> = BTreeMap::new();
    for f in ledger.activity().await? {
        let at = (f.account_id.clone(), f.region.clone());
        regions.insert(at, RegionActivity { region: f.region.clone(), last_event_time: None, files: Some(f) });
    }
    for e in history.last_events().await? {
        let region = e.region.clone();
        let entry = regions.entry((e.account_id, e.region)).or_insert_with(|| RegionActivity { region, last_event_time: None, files: None });
        entry.last_event_time = entry.last_event_time.max(Some(e.event_time));
    }
    let mut accounts: Vec<AccountActivity> = Vec::new();
    for ((account_id, _), region) in regions {
        if accounts.last().is_none_or(|a| a.account_id != account_id) {
            accounts.push(AccountActivity { account_id, last_event_time: None, regions: Vec::new() });
        }
        if let Some(account) = accounts.last_mut() {
            account.last_event_time = account.last_event_time.max(region.last_event_time);
            account.regions.push(region);
        }
    }
    Ok(accounts)
}

/// A new origin for a stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginUpdate {
    pub account_id: String,
    pub event_id: String,
    /// The event's time, so stores keyed by time find it without a scan.
    pub event_time: EpochMillis,
    pub origin: crate::identity::Origin,
}
