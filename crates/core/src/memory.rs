//! In-memory implementations of the ports, for tests and for tools that
//! need no persistence.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use crate::event::{Event, FileOutcome, FileStatus, RejectedRecord};
use crate::identity::{PendingItem, PendingStore, Session, SessionStore};
use crate::ports::{
    Checkpoints, EventFilter, FileActivity, HistoryCursor, HistoryPage, HistoryQuery, HistoryStore, LastEvent, LedgerEntry, LedgerSummary, LogSource,
    ObjectBody, ObjectMeta, OriginUpdate, PortError, SearchHit, SearchPage, WriteReport,
};
use crate::time::EpochMillis;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind; go on with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An object's bytes and modification time.
type StoredObject = (Arc<Vec<u8>>, EpochMillis);

/// Objects held in memory, keyed like a bucket.
#[derive(Default, Clone)]
pub struct MemorySource {
    objects: Arc<Mutex<BTreeMap<String, StoredObject>>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces an object.
    pub fn put(&self, key: &str, bytes: Vec<u8>, modified: EpochMillis) {
        lock(&self.objects).insert(key.to_owned(), (Arc::new(bytes), modified));
    }
}

struct SharedBytes(Arc<Vec<u8>>, usize);

impl std::io::Read for SharedBytes {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let rest = &self.0[self.1.min(self.0.len())..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.1 += n;
        Ok(n)
    }
}

#[async_trait]
impl LogSource for MemorySource {
    fn locate(&self, key: &str) -> String {
        format!("memory://{key}")
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        Ok(lock(&self.objects)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, (bytes, modified))| ObjectMeta { key: k.clone(), size: bytes.len() as u64, modified: *modified })
            .collect())
    }

    async fn open(&self, key: &str) -> Result<ObjectBody, PortError> {
        let bytes = lock(&self.objects).get(key).map(|(b, _)| b.clone()).ok_or_else(|| PortError::NotFound { what: self.locate(key) })?;
        Ok(Box::new(SharedBytes(bytes, 0)))
    }
}

/// A ledger in memory.
#[derive(Default)]
pub struct MemoryCheckpoints {
    entries: Mutex<HashMap<String, (LedgerEntry, Vec<RejectedRecord>)>>,
}

impl MemoryCheckpoints {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Checkpoints for MemoryCheckpoints {
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError> {
        let entries = lock(&self.entries);
        Ok(keys.iter().filter_map(|k| entries.get(k).map(|(e, _)| (k.clone(), e.clone()))).collect())
    }

    async fn record(&self, outcomes: Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError> {
        let mut entries = lock(&self.entries);
        for outcome in outcomes.iter() {
            let attempts = entries.get(&outcome.key).map_or(0, |(e, _)| e.attempts) + 1;
            let entry = LedgerEntry {
                key: outcome.key.clone(),
                kind: outcome.kind,
                account_id: outcome.account_id.clone(),
                region: outcome.region.clone(),
                status: outcome.status,
                size: outcome.size,
                modified: outcome.modified,
                events: outcome.events,
                rejected: outcome.rejected.len() as u64,
                attempts,
                error: outcome.error.clone(),
                processed_at: at,
            };
            entries.insert(outcome.key.clone(), (entry, outcome.rejected.clone()));
        }
        Ok(())
    }

    async fn summary(&self) -> Result<LedgerSummary, PortError> {
        let mut summary = LedgerSummary::default();
        for (e, _) in lock(&self.entries).values() {
            *summary.by_status.entry(e.status).or_default() += 1;
            summary.events += e.events;
            summary.rejected_records += e.rejected;
        }
        Ok(summary)
    }

    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError> {
        let mut out: Vec<LedgerEntry> = lock(&self.entries)
            .values()
            .filter(|(e, _)| matches!(e.status, FileStatus::Failed | FileStatus::Partial | FileStatus::Empty))
            .map(|(e, _)| e.clone())
            .collect();
        out.sort_by(|a, b| b.processed_at.cmp(&a.processed_at).then_with(|| a.key.cmp(&b.key)));
        out.truncate(limit);
        Ok(out)
    }

    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError> {
        Ok(lock(&self.entries).get(key).map(|(_, r)| r.clone()).unwrap_or_default())
    }

    async fn activity(&self) -> Result<Vec<FileActivity>, PortError> {
        let mut by_region: BTreeMap<(String, String), FileActivity> = BTreeMap::new();
        for (e, _) in lock(&self.entries).values().filter(|(e, _)| e.kind.has_events()) {
            let file_time = crate::layout::classify(&e.key).map_or(e.modified, |k| k.file_time);
            let a = by_region.entry((e.account_id.clone(), e.region.clone())).or_insert_with(|| FileActivity {
                account_id: e.account_id.clone(),
                region: e.region.clone(),
                last_file_time: file_time,
                last_processed_at: e.processed_at,
                files: 0,
                failed: 0,
                events: 0,
            });
            a.last_file_time = a.last_file_time.max(file_time);
            a.last_processed_at = a.last_processed_at.max(e.processed_at);
            a.files += 1;
            a.failed += u64::from(e.status == FileStatus::Failed);
            a.events += e.events;
        }
        Ok(by_region.into_values().collect())
    }
}

/// Event history in memory.
#[derive(Default)]
pub struct MemoryHistory {
    inner: Mutex<HistoryInner>,
}

#[derive(Default)]
struct HistoryInner {
    seen: HashMap<(String, String), HistoryCursor>,
    by_time: BTreeMap<HistoryCursor, Event>,
    seq: i64,
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        let mut inner = lock(&self.inner);
        let mut report = WriteReport::default();
        for event in events.iter().cloned() {
            let id = (event.account_id.clone(), event.event_id.clone());
            if inner.seen.contains_key(&id) {
                report.duplicates += 1;
                continue;
            }
            inner.seq += 1;
            let cursor = HistoryCursor { event_time: event.event_time, seq: inner.seq };
            inner.seen.insert(id, cursor);
            inner.by_time.insert(cursor, event);
            report.inserted += 1;
        }
        Ok(report)
    }

    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        let inner = lock(&self.inner);
        let start = query.after.map_or(HistoryCursor { event_time: query.since.unwrap_or(i64::MIN), seq: i64::MIN }, |c| HistoryCursor {
            event_time: c.event_time,
            seq: c.seq + 1,
        });
        let mut page = HistoryPage::default();
        for (cursor, event) in inner.by_time.range(start..) {
            if query.until.is_some_and(|u| event.event_time >= u) {
                break;
            }
            if query.since.is_some_and(|s| event.event_time < s) || query.account.as_ref().is_some_and(|a| *a != event.account_id) {
                continue;
            }
            if page.events.len() == query.limit {
                break;
            }
            page.events.push(event.clone());
            page.next = Some(*cursor);
        }
        if page.events.len() < query.limit {
            page.next = None;
        }
        Ok(page)
    }

    async fn count(&self) -> Result<u64, PortError> {
        Ok(lock(&self.inner).by_time.len() as u64)
    }

    async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        let mut inner = lock(&self.inner);
        let mut updated = 0;
        for update in updates.iter() {
            let Some(cursor) = inner.seen.get(&(update.account_id.clone(), update.event_id.clone())).copied() else { continue };
            if let Some(event) = inner.by_time.get_mut(&cursor) {
                event.origin = Some(update.origin.clone());
                updated += 1;
            }
        }
        Ok(updated)
    }

    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
        let inner = lock(&self.inner);
        Ok(inner.seen.get(&(account_id.to_owned(), event_id.to_owned())).and_then(|c| inner.by_time.get(c)).cloned())
    }

    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        let inner = lock(&self.inner);
        let cursors: BTreeSet<HistoryCursor> = keys.iter().filter_map(|key| inner.seen.get(key).copied()).collect();
        Ok(cursors.iter().filter_map(|c| inner.by_time.get(c)).cloned().collect())
    }

    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
        filter.validate()?;
        let inner = lock(&self.inner);
        let since = HistoryCursor { event_time: filter.since, seq: i64::MIN };
        let start = filter.after.map_or(since, |c| since.max(HistoryCursor { event_time: c.event_time, seq: c.seq.saturating_add(1) }));
        let end = HistoryCursor { event_time: filter.until, seq: i64::MIN };
        let mut page = SearchPage::default();
        if start >= end {
            return Ok(page);
        }
        for (cursor, event) in inner.by_time.range(start..end).filter(|(_, e)| filter.matches(e)).take(filter.limit) {
            page.hits.push(SearchHit { cursor: *cursor, event: event.clone() });
            page.next = Some(*cursor);
        }
        if page.hits.len() < filter.limit {
            page.next = None;
        }
        Ok(page)
    }

    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        let mut last: BTreeMap<(&str, &str), EpochMillis> = BTreeMap::new();
        let inner = lock(&self.inner);
        for e in inner.by_time.values() {
            let t = last.entry((&e.account_id, &e.region)).or_insert(e.event_time);
            *t = (*t).max(e.event_time);
        }
        Ok(last.into_iter().map(|((a, r), t)| LastEvent { account_id: a.to_owned(), region: r.to_owned(), event_time: t }).collect())
    }
}

/// History that keeps nothing: appends are taken and dropped, reads find
/// nothing. For running the pipeline without a history store, to measure it
/// apart from the store, or to raise alerts without keeping events.
#[derive(Debug, Default)]
pub struct DiscardHistory {
    taken: std::sync::atomic::AtomicU64,
}

impl DiscardHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Events appended and dropped so far.
    pub fn taken(&self) -> u64 {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl HistoryStore for DiscardHistory {
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        self.taken.fetch_add(events.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(WriteReport { inserted: events.len() as u64, duplicates: 0 })
    }

    async fn page(&self, _query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        Ok(HistoryPage::default())
    }

    async fn count(&self) -> Result<u64, PortError> {
        Ok(0)
    }

    async fn set_origins(&self, _updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        Ok(0)
    }

    async fn get(&self, _account_id: &str, _event_id: &str) -> Result<Option<Event>, PortError> {
        Ok(None)
    }

    async fn get_many(&self, _keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        Ok(Vec::new())
    }

    async fn search(&self, _filter: &EventFilter) -> Result<SearchPage, PortError> {
        Ok(SearchPage::default())
    }

    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        Ok(Vec::new())
    }
}

/// How long past its expiration [`MemorySessionStore`] keeps a session by default.
pub const DEFAULT_SESSION_RETENTION_MS: EpochMillis = 24 * 3_600_000;

/// Sessions in memory, by access key id, each key's sessions in issue order.
pub struct MemorySessionStore {
    retention_ms: EpochMillis,
    sessions: Mutex<HashMap<String, Vec<Session>>>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_SESSION_RETENTION_MS)
    }
}

impl MemorySessionStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that keeps sessions `retention_ms` past their expiration.
    pub fn with_retention(retention_ms: EpochMillis) -> Self {
        MemorySessionStore { retention_ms, sessions: Mutex::new(HashMap::new()) }
    }

    /// Drops sessions whose retention has passed at `now`; returns how many.
    pub fn purge(&self, now: EpochMillis) -> usize {
        let mut all = lock(&self.sessions);
        let before: usize = all.values().map(Vec::len).sum();
        all.retain(|_, list| {
            list.retain(|s| s.expires_at + self.retention_ms >= now);
            !list.is_empty()
        });
        before - all.values().map(Vec::len).sum::<usize>()
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        lock(&self.sessions).values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn put(&self, sessions: Arc<[Session]>) -> Result<(), PortError> {
        let mut all = lock(&self.sessions);
        for session in sessions.iter() {
            let list = all.entry(session.access_key_id.clone()).or_default();
            match list.iter_mut().find(|s| s.same_issue(session)) {
                Some(stored) => stored.merge(session),
                None => {
                    let at = list.partition_point(|s| s.issued_at <= session.issued_at);
                    list.insert(at, session.clone());
                }
            }
        }
        Ok(())
    }

    async fn get(&self, access_key_id: &str, at: EpochMillis, now: EpochMillis) -> Result<Option<Session>, PortError> {
        let all = lock(&self.sessions);
        let Some(list) = all.get(access_key_id) else { return Ok(None) };
        Ok(list.iter().rev().find(|s| s.valid_at(at) && s.expires_at + self.retention_ms >= now).cloned())
    }
}

/// Events waiting for a session, in memory.
#[derive(Default)]
pub struct MemoryPendingStore {
    inner: Mutex<PendingInner>,
}

type EventKey = (String, String);

#[derive(Default)]
struct PendingInner {
    items: HashMap<EventKey, PendingItem>,
    by_key: HashMap<String, BTreeSet<EventKey>>,
    by_time: BTreeSet<(EpochMillis, EventKey)>,
}

impl PendingInner {
    fn remove(&mut self, id: &EventKey) -> Option<PendingItem> {
        let item = self.items.remove(id)?;
        if let Some(ids) = self.by_key.get_mut(&item.missing_key) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_key.remove(&item.missing_key);
            }
        }
        self.by_time.remove(&(item.event_time, id.clone()));
        Some(item)
    }
}

impl MemoryPendingStore {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl PendingStore for MemoryPendingStore {
    async fn add(&self, items: Arc<[PendingItem]>) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        for item in items.iter() {
            let id = (item.account_id.clone(), item.event_id.clone());
            inner.remove(&id);
            inner.by_key.entry(item.missing_key.clone()).or_default().insert(id.clone());
            inner.by_time.insert((item.event_time, id.clone()));
            inner.items.insert(id, item.clone());
        }
        Ok(())
    }

    async fn take_waiting_on(&self, keys: &[String]) -> Result<Vec<PendingItem>, PortError> {
        let mut inner = lock(&self.inner);
        let ids: Vec<EventKey> = keys.iter().filter_map(|k| inner.by_key.get(k)).flatten().cloned().collect();
        let mut out: Vec<PendingItem> = ids.iter().filter_map(|id| inner.remove(id)).collect();
        out.sort_by(|a, b| (a.event_time, &a.account_id, &a.event_id).cmp(&(b.event_time, &b.account_id, &b.event_id)));
        Ok(out)
    }

    async fn take_expired(&self, before: EpochMillis) -> Result<Vec<PendingItem>, PortError> {
        let mut inner = lock(&self.inner);
        let ids: Vec<EventKey> = inner.by_time.iter().take_while(|(t, _)| *t < before).map(|(_, id)| id.clone()).collect();
        Ok(ids.iter().filter_map(|id| inner.remove(id)).collect())
    }

    async fn count(&self) -> Result<u64, PortError> {
        Ok(lock(&self.inner).items.len() as u64)
    }
}
