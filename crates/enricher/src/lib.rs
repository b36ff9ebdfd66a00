//! The enricher: takes each file's events from the collector, resolves who
//! is behind each of them, stores them, then records the file in the ledger.
//! Rules and alerts follow the history write (see [`alerting`]).
//!
//! Per batch: the sessions the batch's files issued are recorded first (so
//! the batch's own events, and events waiting from earlier files, see them),
//! then the events are resolved, stored, and the origins of earlier events
//! that a new session (or the pending bound) settled are updated; then the
//! stored events are checked against the rules (and the events whose origin
//! settled, against the rules on origin fields) and the alerts they raise
//! are stored with their outbox entries.
//!
//! Order is the invariant: a file's outcome is recorded only after every one
//! of its events is stored and its alerts are committed, so a crash in between means the file is read
//! again, and the idempotent history write makes that harmless. Messages are
//! coalesced (up to [`EnricherConfig::max_batch_events`]) into one store
//! write, outcomes held back until the write that carries their events.

pub mod alerting;
pub mod delivery;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info_span, warn, Instrument};

use trailwatch_core::event::{Event, FileBatch, FileOutcome, FileStatus};
use trailwatch_core::identity::{PendingSet, Session};
use trailwatch_core::ports::{Checkpoints, HistoryStore, OriginUpdate, PortError};
use trailwatch_core::retry::{retry, RetryPolicy};
use trailwatch_core::stats::{PipelineStats, Stage};
use trailwatch_core::time::EpochMillis;

/// The enricher's settings.
#[derive(Debug, Clone)]
pub struct EnricherConfig {
    /// Events gathered into one history write at most.
    pub max_batch_events: usize,
    /// Attempts for a store call that fails with a retryable error.
    pub attempts: u32,
    /// First retry delay; doubled each attempt (up to `retry_max`), with jitter.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// The longest one attempt of an idempotent store call (history
    /// writes and reads, the ledger) may take before it is abandoned and
    /// tried again: a store that hangs slows the pipeline, it does not stop it.
    pub call_timeout: Duration,
    /// How long a batch below `max_batch_events` waits for more messages
    /// before it is resolved: longer means fewer, larger store writes, and
    /// alerts later by up to this much.
    pub linger: Duration,
}

impl Default for EnricherConfig {
    fn default() -> Self {
        EnricherConfig {
            max_batch_events: 2000,
            attempts: 5,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            call_timeout: Duration::from_secs(120),
            linger: Duration::from_millis(10),
        }
    }
}

/// What the enricher writes to.
#[derive(Clone)]
pub struct EnricherPorts {
    pub history: Arc<dyn HistoryStore>,
    pub checkpoints: Arc<dyn Checkpoints>,
    /// Identity resolution; None stores events without origins (to measure its cost).
    pub identity: Option<Arc<PendingSet>>,
    /// Rules and alerts; None evaluates no rules.
    pub alerts: Option<alerting::AlertPorts>,
}

pub(crate) fn now_ms() -> EpochMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as EpochMillis)
}

impl EnricherConfig {
    /// How calls are retried; `bounded` adds the time limit per attempt
    /// (only for calls that are safe to abandon and repeat).
    pub fn retry_policy(&self, bounded: bool) -> RetryPolicy {
        RetryPolicy { attempts: self.attempts, base: self.retry_base, max_delay: self.retry_max, timeout: bounded.then_some(self.call_timeout) }
    }
}

/// Calls `op` until it succeeds, fails permanently, or runs out of attempts,
/// counting retries in `stats`. No time limit per attempt: for compound
/// calls that are not safe to abandon half-way (see [`with_deadline`]).
pub(crate) async fn with_retries<T, F, Fut>(config: &EnricherConfig, stats: &PipelineStats, what: &str, op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    retry(&config.retry_policy(false), &stats.port_calls, what, op).await
}

/// [`with_retries`] with [`EnricherConfig::call_timeout`] per attempt, for
/// single idempotent store calls.
pub(crate) async fn with_deadline<T, F, Fut>(config: &EnricherConfig, stats: &PipelineStats, what: &str, op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, PortError>>,
{
    retry(&config.retry_policy(true), &stats.port_calls, what, op).await
}

/// Records the batch's sessions, resolves its events in place, and settles
/// events waiting on the new sessions or past the bound. The origin updates
/// for events stored earlier go to `updates`, also those settled before a
/// later step failed (their events were taken from the pending set).
async fn resolve(
    config: &EnricherConfig,
    identity: &PendingSet,
    sessions: Vec<Session>,
    events: &mut [Event],
    stats: &PipelineStats,
    updates: &mut Vec<OriginUpdate>,
) -> Result<(), PortError> {
    let started = Instant::now();
    if !sessions.is_empty() {
        let sessions: Arc<[Session]> = sessions.into();
        updates.extend(with_retries(config, stats, "session record", || identity.record_sessions(sessions.to_vec())).await?);
    }
    stats.stages.since(Stage::Sessions, started);
    let started = Instant::now();
    let policy = config.retry_policy(false);
    let mut attempt = 1;
    let report = loop {
        match identity.resolve_events(events).await {
            Ok(report) => break report,
            Err(e) if e.is_retryable() && attempt < policy.attempts => {
                PipelineStats::add(&stats.port_calls.retried, 1);
                warn!(attempt, error = %e, "identity resolution: retrying");
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                PipelineStats::add(&stats.port_calls.gave_up, 1);
                return Err(e);
            }
        }
    };
    PipelineStats::add(&stats.resolved_exact, report.exact);
    PipelineStats::add(&stats.resolved_derived, report.derived);
    PipelineStats::add(&stats.resolved_unresolved, report.unresolved);
    PipelineStats::add(&stats.resolved_waiting, report.waiting);
    let named = report.exact + report.derived + report.unresolved + report.waiting;
    PipelineStats::add(&stats.resolved_no_actor, (events.len() as u64).saturating_sub(named));
    updates.extend(with_retries(config, stats, "pending expiry", || identity.expire()).await?);
    stats.stages.since(Stage::Resolve, started);
    Ok(())
}

/// One coalesced batch, resolved, on its way to the writing half.
struct Resolved {
    events: Vec<Event>,
    /// Origins settled for events stored earlier.
    updates: Vec<OriginUpdate>,
    /// The files the events came from, in order.
    keys: Vec<Arc<str>>,
    /// Files finished in this batch.
    outcomes: Vec<FileOutcome>,
    /// Files whose events could not be resolved, with why.
    failed: Vec<(Arc<str>, String)>,
    /// Events received from the collector for this batch (counted in flight until written).
    received: u64,
}

/// Resolved batches waiting for the writing half: one, so that resolving
/// the next batch overlaps writing this one, and memory stays bounded.
const RESOLVED_WAITING: usize = 1;

/// Runs until the collector's side of the channel is closed and everything
/// received is stored and recorded. `shutdown` is not a reason to drop work
/// already received: the collector stops sending on shutdown, and this loop
/// drains what is left.
///
/// Two halves run at once, joined by a channel that keeps batches in order:
/// one coalesces messages and resolves their events, the other stores them,
/// raises their alerts and records their files. A batch's origin updates
/// follow the batches before it, so the events they update are stored first.
pub async fn run(config: EnricherConfig, ports: EnricherPorts, rx: mpsc::Receiver<FileBatch>, stats: Arc<PipelineStats>, shutdown: CancellationToken) {
    let (tx, resolved) = mpsc::channel(RESOLVED_WAITING);
    let writer = tokio::spawn(write_batches(config.clone(), ports.clone(), resolved, stats.clone()));
    resolve_batches(&config, &ports, rx, &stats, &shutdown, tx).await;
    if let Err(e) = writer.await {
        error!(error = %e, "the enricher's writer stopped unexpectedly; unrecorded files will be read again");
    }
}

/// The first half: coalesces messages (up to [`EnricherConfig::max_batch_events`]) and resolves them.
async fn resolve_batches(
    config: &EnricherConfig,
    ports: &EnricherPorts,
    mut rx: mpsc::Receiver<FileBatch>,
    stats: &PipelineStats,
    shutdown: &CancellationToken,
    tx: mpsc::Sender<Resolved>,
) {
    while let Some(first) = rx.recv().await {
        let mut events: Vec<Event> = Vec::new();
        let mut sessions: Vec<Session> = Vec::new();
        let mut keys: Vec<Arc<str>> = Vec::new();
        let mut outcomes: Vec<FileOutcome> = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                FileBatch::Events { key, events: mut chunk, sessions: mut issued } => {
                    if keys.last() != Some(&key) {
                        keys.push(key);
                    }
                    sessions.append(&mut issued);
                    if events.is_empty() {
                        events = chunk;
                    } else {
                        events.append(&mut chunk);
                    }
                }
                FileBatch::Finished(outcome) => outcomes.push(outcome),
            }
            if events.len() < config.max_batch_events {
                next = match rx.try_recv() {
                    Ok(message) => Some(message),
                    // Reading is under way: the next file's events are a moment away, and
                    // every batch costs a few store transactions whatever its size.
                    Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout(config.linger, rx.recv()).await.ok().flatten(),
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                };
            }
        }
        let span = info_span!("enricher.resolve", events = events.len(), files = outcomes.len());
        let received = events.len() as u64;
        let mut batch = Resolved { events, updates: Vec::new(), keys, outcomes, failed: Vec::new(), received };
        if let Some(identity) = &ports.identity {
            match resolve(config, identity, sessions, &mut batch.events, stats, &mut batch.updates).instrument(span).await {
                Ok(()) => {}
                Err(e) => {
                    error!(error = %e, events = batch.events.len(), "identity resolution failed; the files will be read again");
                    batch.failed = batch.keys.iter().map(|key| (key.clone(), format!("identity resolution failed: {e}"))).collect();
                    batch.events.clear();
                }
            }
        }
        if let Err(lost) = tx.send(batch).await {
            stats.let_go(lost.0.received);
            error!("the enricher's writer is gone; unrecorded files will be read again");
            return;
        }
        if shutdown.is_cancelled() && rx.is_closed() && rx.is_empty() {
            break;
        }
    }
}

/// The second half: stores each resolved batch, updates settled origins,
/// raises alerts, then records the batch's files. A file's outcome comes in
/// the batch of its last events or a later one, so a failure is remembered
/// until its outcome arrives.
async fn write_batches(config: EnricherConfig, ports: EnricherPorts, mut rx: mpsc::Receiver<Resolved>, stats: Arc<PipelineStats>) {
    let mut failed: HashMap<Arc<str>, String> = HashMap::new();
    let mut alerting = ports.alerts.clone().map(alerting::Alerting::new);
    // Origin updates a failed write left over, tried again with the next batch.
    let mut carried: Vec<OriginUpdate> = Vec::new();
    let mut carried_tries = 0;
    while let Some(Resolved { events, updates, keys, mut outcomes, failed: unresolved, received }) = rx.recv().await {
        failed.extend(unresolved);
        let span = info_span!("enricher.write", events = events.len(), files = outcomes.len());
        async {
            let started = Instant::now();
            let mut stored: Arc<[Event]> = Arc::new([]);
            if !events.is_empty() {
                let count = events.len() as u64;
                let batch: Arc<[Event]> = events.into();
                let result = with_deadline(&config, &stats, "history append", || ports.history.append(batch.clone())).await;
                match result {
                    Ok(report) => {
                        PipelineStats::add(&stats.history_writes, 1);
                        PipelineStats::add(&stats.events_stored, report.inserted);
                        PipelineStats::add(&stats.events_duplicate, report.duplicates);
                        stats.ingest.events_stored(&batch);
                        stored = batch;
                    }
                    Err(e) => {
                        error!(error = %e, events = count, "storing events failed; their files will be read again");
                        for key in &keys {
                            failed.insert(key.clone(), format!("storing its events failed: {e}"));
                        }
                    }
                }
            }
            let updates: Arc<[OriginUpdate]> = if carried.is_empty() {
                updates.into()
            } else {
                // Older updates first: an event updated twice keeps the newer origin.
                std::mem::take(&mut carried).into_iter().chain(updates).collect()
            };
            if !updates.is_empty() {
                match with_deadline(&config, &stats, "origin update", || ports.history.set_origins(updates.clone())).await {
                    Ok(n) => {
                        carried_tries = 0;
                        PipelineStats::add(&stats.origins_updated, n)
                    }
                    // The events these settle were taken from the pending set: dropped
                    // here, they would keep their earlier origin for good. Even after
                    // a permanent error they are tried again, a few batches on.
                    Err(e) if updates.len() <= MAX_CARRIED && carried_tries < MAX_CARRIED_TRIES => {
                        carried_tries += 1;
                        error!(error = %e, updates = updates.len(), tries = carried_tries, "updating origins of stored events failed; trying again with the next batch");
                        carried = updates.to_vec();
                    }
                    Err(e) => {
                        carried_tries = 0;
                        error!(error = %e, updates = updates.len(), "updating origins of stored events failed; they keep their earlier origin")
                    }
                }
            }
            stats.stages.since(Stage::Store, started);
            if let Some(alerting) = &mut alerting {
                if let Err(e) = alerting.process(&config, ports.history.as_ref(), &stored, &updates, &stats).await {
                    error!(error = %e, events = stored.len(), "raising alerts failed; the files will be read again");
                    for key in &keys {
                        failed.entry(key.clone()).or_insert_with(|| format!("raising its alerts failed: {e}"));
                    }
                }
            }
            for outcome in &mut outcomes {
                if let Some(reason) = failed.remove(outcome.key.as_str()) {
                    PipelineStats::add(&stats.files_store_failed, 1);
                    outcome.status = FileStatus::Failed;
                    outcome.error = Some(reason);
                }
            }
            if !outcomes.is_empty() {
                let started = Instant::now();
                let files = outcomes.len();
                let outcomes: Arc<[FileOutcome]> = outcomes.into();
                let at = now_ms();
                match with_deadline(&config, &stats, "ledger record", || ports.checkpoints.record(outcomes.clone(), at)).await {
                    Ok(()) => stats.ingest.files_recorded(&outcomes, now_ms()),
                    Err(e) => error!(files, first = %outcomes[0].key, error = %e, "recording files in the ledger failed; they will be read again"),
                }
                stats.stages.since(Stage::Ledger, started);
            }
            stats.let_go(received);
        }
        .instrument(span)
        .await;
    }
    if let Some(alerting) = &mut alerting {
        alerting.flush(&config, &stats).await;
    }
    if !carried.is_empty() {
        let updates: Arc<[OriginUpdate]> = carried.into();
        match with_deadline(&config, &stats, "origin update", || ports.history.set_origins(updates.clone())).await {
            Ok(n) => PipelineStats::add(&stats.origins_updated, n),
            Err(e) => {
                error!(error = %e, updates = updates.len(), "updating origins of stored events failed at the end of the run; they keep their earlier origin")
            }
        }
    }
}

/// Origin updates carried to the next batch at most when history refuses
/// them (about 1 KB each); past it they are dropped, with an error.
const MAX_CARRIED: usize = 100_000;

/// Batches in a row that carry refused origin updates before they are dropped.
const MAX_CARRIED_TRIES: u32 = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use trailwatch_core::conformance::sample_event;
    use trailwatch_core::layout::ObjectKind;
    use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory};
    use trailwatch_core::ports::{EventFilter, HistoryPage, HistoryQuery, LastEvent, OriginUpdate, SearchPage, WriteReport};

    /// History that fails its first `failures` appends, retryably or not.
    struct Flaky {
        inner: MemoryHistory,
        failures: AtomicU32,
        retryable: bool,
    }

    #[async_trait::async_trait]
    impl HistoryStore for Flaky {
        async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
            if self.failures.load(Ordering::SeqCst) > 0 {
                self.failures.fetch_sub(1, Ordering::SeqCst);
                return Err(PortError::backend("flaky history", "database is locked", self.retryable));
            }
            self.inner.append(events).await
        }
        async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
            self.inner.page(query).await
        }
        async fn count(&self) -> Result<u64, PortError> {
            self.inner.count().await
        }
        async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
            self.inner.set_origins(updates).await
        }
        async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
            self.inner.get(account_id, event_id).await
        }
        async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
            self.inner.get_many(keys).await
        }
        async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
            self.inner.search(filter).await
        }
        async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
            self.inner.last_events().await
        }
    }

    fn outcome(key: &str, events: u64) -> FileOutcome {
        FileOutcome {
            key: key.into(),
            kind: ObjectKind::Log,
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            size: 10,
            // Created five seconds ago: the ingest lag is measured from here.
            modified: now_ms() - 5_000,
            status: FileStatus::Done,
            events,
            bytes: 100,
            rejected: vec![],
            error: None,
        }
    }

    async fn feed(history: Arc<Flaky>) -> (Arc<MemoryCheckpoints>, Arc<PipelineStats>) {
        let ledger = Arc::new(MemoryCheckpoints::new());
        let stats = Arc::new(PipelineStats::default());
        let (tx, rx) = mpsc::channel(8);
        let config = EnricherConfig { retry_base: Duration::from_millis(1), ..Default::default() };
        let task = tokio::spawn(run(
            config,
            EnricherPorts { history, checkpoints: ledger.clone(), identity: None, alerts: None },
            rx,
            stats.clone(),
            CancellationToken::new(),
        ));
        let key: Arc<str> = "a.json.gz".into();
        let events: Vec<Event> = (0..3).map(|i| sample_event("111122223333", &format!("e{i}"), 1_700_000_000_000 + i * 1000)).collect();
        tx.send(FileBatch::Events { key, events, sessions: vec![] }).await.unwrap();
        tx.send(FileBatch::Finished(outcome("a.json.gz", 3))).await.unwrap();
        drop(tx);
        task.await.unwrap();
        (ledger, stats)
    }

    #[tokio::test]
    async fn retryable_store_errors_are_retried_and_nothing_is_lost() {
        let history = Arc::new(Flaky { inner: MemoryHistory::new(), failures: AtomicU32::new(2), retryable: true });
        let (ledger, stats) = feed(history.clone()).await;
        assert_eq!(history.count().await.unwrap(), 3, "every event stored once after the retries");
        assert_eq!(PipelineStats::get(&stats.events_stored), 3);
        // The events are in eu-west-1; the file's key says us-east-1.
        let places: HashMap<String, _> = stats.ingest.places().into_iter().map(|((_, region), clock)| (region, clock)).collect();
        assert_eq!(places["eu-west-1"].newest_event, Some(1_700_000_002_000), "the newest event stored");
        let lag = places["us-east-1"].last_lag_ms.unwrap();
        assert!((5_000..60_000).contains(&lag), "from the object's creation to its file being recorded: {lag} ms");
        assert_eq!(stats.ingest.lag_histogram().count, 1);
        let entry = &ledger.lookup(&["a.json.gz".to_owned()]).await.unwrap()["a.json.gz"];
        assert_eq!(entry.status, FileStatus::Done);
    }

    /// Files that arrive within the linger go into one batch: one store write, not one per file.
    #[tokio::test]
    async fn files_arriving_within_the_linger_share_one_store_write() {
        let history = Arc::new(Flaky { inner: MemoryHistory::new(), failures: AtomicU32::new(0), retryable: true });
        let ledger = Arc::new(MemoryCheckpoints::new());
        let stats = Arc::new(PipelineStats::default());
        let (tx, rx) = mpsc::channel(8);
        let config = EnricherConfig { linger: Duration::from_millis(500), ..Default::default() };
        let ports = EnricherPorts { history: history.clone(), checkpoints: ledger.clone(), identity: None, alerts: None };
        let task = tokio::spawn(run(config, ports, rx, stats.clone(), CancellationToken::new()));
        for (n, key) in ["a.json.gz", "b.json.gz"].into_iter().enumerate() {
            let events = vec![sample_event("111122223333", &format!("e{n}"), 1_700_000_000_000)];
            tx.send(FileBatch::Events { key: key.into(), events, sessions: vec![] }).await.unwrap();
            tx.send(FileBatch::Finished(outcome(key, 1))).await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        task.await.unwrap();
        assert_eq!(history.count().await.unwrap(), 2);
        assert_eq!(PipelineStats::get(&stats.history_writes), 1, "the second file came within the linger");
    }

    #[tokio::test]
    async fn a_permanent_store_error_marks_the_file_failed_for_a_retry() {
        let history = Arc::new(Flaky { inner: MemoryHistory::new(), failures: AtomicU32::new(1), retryable: false });
        let (ledger, _) = feed(history.clone()).await;
        assert_eq!(history.count().await.unwrap(), 0);
        let entry = &ledger.lookup(&["a.json.gz".to_owned()]).await.unwrap()["a.json.gz"];
        assert_eq!(entry.status, FileStatus::Failed, "the file is read again next time");
        assert_eq!(entry.error.as_deref(), Some("storing its events failed: flaky history: database is locked"));
    }
}
