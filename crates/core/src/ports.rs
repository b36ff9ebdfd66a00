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

use std::collections::HashMap;
use std::io::Read;

use async_trait::async_trait;

use crate::event::{Event, FileOutcome, FileStatus, RejectedRecord};
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
