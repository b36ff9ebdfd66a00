//! A port around a port: [`Port`] implements every port trait by passing
//! each call through a hook ([`Interpose`]) on its way to the inner
//! implementation. The hooks: [`crate::retry::Retrier`] retries each call
//! (with backoff, jitter and a time limit), [`crate::faults::FaultPlan`]
//! injects faults for tests.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::alerts::{Alert, AlertChange, AlertPage, AlertQuery, AlertSink, AlertStore, Delivery, EventRef, Transition};
use crate::event::{Event, FileOutcome, RejectedRecord};
use crate::identity::{PendingItem, PendingStore, Session, SessionArchive, SessionStore};
use crate::integrity::{Completeness, DigestRecord, Finding, FindingKind, IntegrityStore, ListedFile, SignatureSource};
use crate::ports::{
    Checkpoints, EventFilter, FileActivity, HistoryPage, HistoryQuery, HistoryStore, LastEvent, LedgerEntry, LedgerSummary, LogSource, ObjectBody, ObjectMeta,
    OriginUpdate, PortError, SearchPage, WriteReport,
};
use crate::time::EpochMillis;

/// A port call's answer, boxed.
pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, PortError>> + Send + 'a>>;

/// A call that can be made again (each time a new request).
pub type Call<'a, T> = Box<dyn FnMut() -> Answer<'a, T> + Send + 'a>;

/// What a [`Port`] does with each call: make it (once, or more), or not.
pub trait Interpose: Send + Sync + 'static {
    /// `port` and `op` name the call (`history`, `append`).
    fn around<'a, T: Send + 'a>(&'a self, port: &'static str, op: &'static str, call: Call<'a, T>) -> Answer<'a, T>;
}

/// A port whose calls go through `hook` before reaching `inner`.
pub struct Port<P: ?Sized, H> {
    port: &'static str,
    hook: Arc<H>,
    inner: Arc<P>,
}

impl<P: ?Sized, H: Interpose> Port<P, H> {
    /// `port` names the port in the hook's logs and counts (`history`, `ledger`, `archive`…).
    pub fn wrap(port: &'static str, inner: Arc<P>, hook: Arc<H>) -> Arc<Self> {
        Arc::new(Port { port, hook, inner })
    }

    pub fn inner(&self) -> &Arc<P> {
        &self.inner
    }

    fn call<'a, T: Send + 'a>(&'a self, op: &'static str, call: impl FnMut() -> Answer<'a, T> + Send + 'a) -> Answer<'a, T> {
        self.hook.around(self.port, op, Box::new(call))
    }
}

#[async_trait]
impl<H: Interpose, P: LogSource + ?Sized> LogSource for Port<P, H> {
    fn locate(&self, key: &str) -> String {
        self.inner.locate(key)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, PortError> {
        self.call("list", move || self.inner.list(prefix)).await
    }
    async fn open(&self, key: &str) -> Result<ObjectBody, PortError> {
        self.call("open", move || self.inner.open(key)).await
    }
}

#[async_trait]
impl<H: Interpose, P: Checkpoints + ?Sized> Checkpoints for Port<P, H> {
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError> {
        self.call("lookup", move || self.inner.lookup(keys)).await
    }
    async fn record(&self, outcomes: Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError> {
        self.call("record", move || self.inner.record(outcomes.clone(), at)).await
    }
    async fn summary(&self) -> Result<LedgerSummary, PortError> {
        self.call("summary", move || self.inner.summary()).await
    }
    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError> {
        self.call("problems", move || self.inner.problems(limit)).await
    }
    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError> {
        self.call("rejected", move || self.inner.rejected(key)).await
    }
    async fn activity(&self) -> Result<Vec<FileActivity>, PortError> {
        self.call("activity", move || self.inner.activity()).await
    }
    async fn completeness(&self) -> Result<Vec<Completeness>, PortError> {
        self.call("completeness", move || self.inner.completeness()).await
    }
}

#[async_trait]
impl<H: Interpose, P: HistoryStore + ?Sized> HistoryStore for Port<P, H> {
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        self.call("append", move || self.inner.append(events.clone())).await
    }
    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        self.call("page", move || self.inner.page(query)).await
    }
    async fn count(&self) -> Result<u64, PortError> {
        self.call("count", move || self.inner.count()).await
    }
    async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        self.call("set_origins", move || self.inner.set_origins(updates.clone())).await
    }
    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
        self.call("get", move || self.inner.get(account_id, event_id)).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        self.call("get_many", move || self.inner.get_many(keys)).await
    }
    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
        self.call("search", move || self.inner.search(filter)).await
    }
    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        self.call("last_events", move || self.inner.last_events()).await
    }
}

#[async_trait]
impl<H: Interpose, P: AlertStore + ?Sized> AlertStore for Port<P, H> {
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError> {
        self.call("current", move || self.inner.current(dedup_keys)).await
    }
    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        self.call("commit", move || self.inner.commit(changes.clone(), sinks)).await
    }
    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        self.call("get", move || self.inner.get(id)).await
    }
    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        self.call("transitions", move || self.inner.transitions(id)).await
    }
    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError> {
        self.call("list", move || self.inner.list(query)).await
    }
    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.call("quiet", move || self.inner.quiet(now, limit)).await
    }
    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        self.call("with_origin_events", move || self.inner.with_origin_events(events)).await
    }
    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError> {
        self.call("due", move || self.inner.due(sink, now, limit)).await
    }
    async fn delivered(&self, ids: &[i64], at: EpochMillis) -> Result<(), PortError> {
        self.call("delivered", move || self.inner.delivered(ids, at)).await
    }
    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError> {
        self.call("retry_later", move || self.inner.retry_later(id, next_attempt_at, error)).await
    }
    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError> {
        self.call("outstanding", move || self.inner.outstanding()).await
    }
}

#[async_trait]
impl<H: Interpose, P: AlertSink + ?Sized> AlertSink for Port<P, H> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        self.call("deliver", move || self.inner.deliver(delivery)).await
    }
}

#[async_trait]
impl<H: Interpose, P: SessionStore + ?Sized> SessionStore for Port<P, H> {
    async fn put(&self, sessions: Arc<[Session]>) -> Result<(), PortError> {
        self.call("put", move || self.inner.put(sessions.clone())).await
    }
    async fn get(&self, access_key_id: &str, at: EpochMillis, now: EpochMillis) -> Result<Option<Session>, PortError> {
        self.call("get", move || self.inner.get(access_key_id, at, now)).await
    }
}

#[async_trait]
impl<H: Interpose, P: SessionArchive + ?Sized> SessionArchive for Port<P, H> {
    async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
        self.call("find", move || self.inner.find(access_key_id, at)).await
    }
    async fn find_many(&self, wanted: &[(String, EpochMillis)]) -> Result<Vec<Session>, PortError> {
        self.call("find_many", move || self.inner.find_many(wanted)).await
    }
}

#[async_trait]
impl<H: Interpose, P: PendingStore + ?Sized> PendingStore for Port<P, H> {
    async fn add(&self, items: Arc<[PendingItem]>) -> Result<(), PortError> {
        self.call("add", move || self.inner.add(items.clone())).await
    }
    async fn take_waiting_on(&self, keys: &[String]) -> Result<Vec<PendingItem>, PortError> {
        self.call("take_waiting_on", move || self.inner.take_waiting_on(keys)).await
    }
    async fn take_expired(&self, before: EpochMillis) -> Result<Vec<PendingItem>, PortError> {
        self.call("take_expired", move || self.inner.take_expired(before)).await
    }
    async fn count(&self) -> Result<u64, PortError> {
        self.call("count", move || self.inner.count()).await
    }
}

#[async_trait]
impl<H: Interpose, P: IntegrityStore + ?Sized> IntegrityStore for Port<P, H> {
    async fn record_digest(&self, digest: DigestRecord, files: Vec<ListedFile>) -> Result<(), PortError> {
        self.call("record_digest", move || self.inner.record_digest(digest.clone(), files.clone())).await
    }
    async fn update_files(&self, files: Vec<ListedFile>) -> Result<(), PortError> {
        self.call("update_files", move || self.inner.update_files(files.clone())).await
    }
    async fn problem_files(&self, account_id: &str, region: &str) -> Result<Vec<ListedFile>, PortError> {
        self.call("problem_files", move || self.inner.problem_files(account_id, region)).await
    }
    async fn digest_neighbours(&self, account_id: &str, region: &str, start: EpochMillis) -> Result<crate::integrity::Neighbours, PortError> {
        self.call("digest_neighbours", move || self.inner.digest_neighbours(account_id, region, start)).await
    }
    async fn reconcile(
        &self,
        account_id: &str,
        region: &str,
        checked: Vec<(FindingKind, String)>,
        found: Vec<Finding>,
        now: EpochMillis,
    ) -> Result<Vec<Finding>, PortError> {
        self.call("reconcile", move || self.inner.reconcile(account_id, region, checked.clone(), found.clone(), now)).await
    }
    async fn open_findings(&self, account_id: Option<&str>, region: Option<&str>) -> Result<Vec<Finding>, PortError> {
        self.call("open_findings", move || self.inner.open_findings(account_id, region)).await
    }
    async fn completeness(&self) -> Result<Vec<Completeness>, PortError> {
        self.call("completeness", move || self.inner.completeness()).await
    }
}

#[async_trait]
impl<H: Interpose, P: SignatureSource + ?Sized> SignatureSource for Port<P, H> {
    async fn signature(&self, digest_key: &str) -> Result<Option<String>, PortError> {
        self.call("signature", move || self.inner.signature(digest_key)).await
    }
}
