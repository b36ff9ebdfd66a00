//! Counters the pipeline keeps while it runs, read by the CLI's summary and
//! progress display and exported as metrics by the AWS services: files and
//! events, identity resolution, alert transitions by kind and severity
//! ([`TransitionCounts`], counted by [`CountingAlertStore`]), and how far
//! behind the trail ingest is per account and region ([`IngestClock`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::alerts::{Alert, AlertChange, AlertPage, AlertQuery, AlertStore, Delivery, EventRef, Severity, Transition, TransitionKind};
use crate::event::{Event, FileOutcome};
use crate::layout::ObjectKind;
use crate::ports::PortError;
use crate::time::EpochMillis;

/// Shared, lock-free counters of one pipeline run.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Objects listed in the source (every scan).
    pub objects_listed: AtomicU64,
    /// Log and insight files the collector read to the end or gave up on.
    pub files_read: AtomicU64,
    /// Files whose every record was accepted.
    pub files_done: AtomicU64,
    /// Files read with some records rejected.
    pub files_partial: AtomicU64,
    /// Files with no records.
    pub files_empty: AtomicU64,
    /// Files that could not be read to the end.
    pub files_failed: AtomicU64,
    /// Files read, then recorded as failed because their events could not
    /// be resolved, stored or alerted on (a later scan reads them again).
    pub files_store_failed: AtomicU64,
    /// Digest files recorded.
    pub digests: AtomicU64,
    /// Files already in the ledger, not read again.
    pub files_unchanged: AtomicU64,
    /// Files waiting to be read in the current scan.
    pub files_queued: AtomicU64,
    pub events_parsed: AtomicU64,
    /// Sessions issued by the credential-issuing records read.
    pub sessions_captured: AtomicU64,
    /// Events resolved on arrival, by confidence, and events still waiting.
    pub resolved_exact: AtomicU64,
    pub resolved_derived: AtomicU64,
    pub resolved_unresolved: AtomicU64,
    pub resolved_waiting: AtomicU64,
    /// Events that name no one to resolve (no `userIdentity` to follow).
    pub resolved_no_actor: AtomicU64,
    /// Stored events whose origin changed later (a late session, or the bound passing).
    pub origins_updated: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    /// History writes (one transaction each) the events were stored in.
    pub history_writes: AtomicU64,
    /// Rule matches (a threshold rule counts the matches of its bursts).
    pub detections: AtomicU64,
    /// Alert transitions from ingest (a person's are not counted here).
    pub alerts_opened: AtomicU64,
    pub alerts_updated: AtomicU64,
    pub alerts_resolved: AtomicU64,
    pub bytes_compressed: AtomicU64,
    pub bytes_uncompressed: AtomicU64,
    /// Notifying alert transitions committed, by kind and severity (counted
    /// where the store is wrapped in a [`CountingAlertStore`]).
    pub transitions: TransitionCounts,
    /// Ingest lag and the newest event stored, per account and region.
    pub ingest: IngestClock,
    /// Time spent in each stage of the pipeline.
    pub stages: StageTimes,
    /// Port calls of the collector and the enricher retried (after a
    /// retryable error or no answer in time), and given up on.
    pub port_calls: crate::retry::RetryCounters,
    /// Events read and not yet written (or given up on): what the pipeline
    /// holds in memory between the reader and the store.
    pub events_in_flight: AtomicU64,
    /// The most events in flight at once during the run.
    pub events_in_flight_peak: AtomicU64,
    skipped: Mutex<BTreeMap<&'static str, (u64, String)>>,
}

impl PipelineStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Events taken in by the pipeline (read, queued for the store).
    pub fn take_in(&self, events: u64) {
        let now = self.events_in_flight.fetch_add(events, Relaxed) + events;
        self.events_in_flight_peak.fetch_max(now, Relaxed);
    }

    /// Events the pipeline is done with (stored, or given up on).
    pub fn let_go(&self, events: u64) {
        // Saturating: a batch handed over by a caller that did not count it in is not an underflow.
        let _ = self.events_in_flight.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(events)));
    }

    /// Counts an object that is not a trail file, keeping one example key per reason.
    pub fn skip(&self, reason: &'static str, key: &str) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        let entry = skipped.entry(reason).or_insert_with(|| (0, key.to_owned()));
        entry.0 += 1;
    }

    /// Skips by reason: (reason, count, an example key).
    pub fn skipped(&self) -> Vec<(&'static str, u64, String)> {
        let skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        skipped.iter().map(|(r, (n, k))| (*r, *n, k.clone())).collect()
    }

    /// Clears the skip counts (a watching scan counts each object once per scan).
    pub fn reset_skipped(&self) {
        self.skipped.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A stage of the pipeline, as [`StageTimes`] accounts for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Decompressing log files (and reading them from the source).
    Gunzip,
    /// Splitting files into records and validating each into an event.
    Parse,
    /// Finding the sessions that credential-issuing records issued.
    Capture,
    /// Recording sessions in the session store, and settling the events that waited for them.
    Sessions,
    /// Resolving events to their origins, including events waiting for a session.
    Resolve,
    /// Checking stored events against the rules.
    Rules,
    /// The alert lifecycle: opening, updating and resolving alerts, with their outbox entries.
    Alerts,
    /// Writing events to history, and the origins settled later.
    Store,
    /// Recording files in the ledger.
    Ledger,
}

impl Stage {
    pub const ALL: [Stage; 9] =
        [Stage::Gunzip, Stage::Parse, Stage::Capture, Stage::Sessions, Stage::Resolve, Stage::Rules, Stage::Alerts, Stage::Store, Stage::Ledger];

    /// The stage's name in summaries and metrics.
    pub fn label(self) -> &'static str {
        match self {
            Stage::Gunzip => "gunzip",
            Stage::Parse => "parse",
            Stage::Capture => "capture",
            Stage::Sessions => "sessions",
            Stage::Resolve => "resolve",
            Stage::Rules => "rules",
            Stage::Alerts => "alerts",
            Stage::Store => "store",
            Stage::Ledger => "ledger",
        }
    }
}

/// Time spent per [`Stage`], summed over every thread that ran it (reading
/// runs on several workers at once, so its stages can add up to more than
/// the time that passed). For a stage that waits on a store, the time of
/// the wait.
#[derive(Debug, Default)]
pub struct StageTimes {
    nanos: [AtomicU64; Stage::ALL.len()],
}

impl StageTimes {
    pub fn add(&self, stage: Stage, spent: Duration) {
        self.nanos[stage as usize].fetch_add(u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Adds the time since `started` to `stage`.
    pub fn since(&self, stage: Stage, started: Instant) {
        self.add(stage, started.elapsed());
    }

    pub fn get(&self, stage: Stage) -> Duration {
        Duration::from_nanos(self.nanos[stage as usize].load(Relaxed))
    }

    /// Every stage with its time, in pipeline order.
    pub fn all(&self) -> Vec<(Stage, Duration)> {
        Stage::ALL.iter().map(|&s| (s, self.get(s))).collect()
    }
}

/// Most (account, region) pairs [`IngestClock`] keeps. An organization has
/// accounts × regions pairs; pairs past this are counted, not kept, so the
/// metrics exported per pair stay bounded.
pub const MAX_INGEST_PLACES: usize = 5_000;

/// Upper bounds, in seconds, of the ingest lag histogram's buckets.
pub const LAG_BUCKETS_SECONDS: [f64; 14] = [1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21_600.0, 86_400.0, 604_800.0];

/// What [`IngestClock`] knows of one account and region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlaceClock {
    /// Milliseconds from the object's creation (its last-modified time) to
    /// its events being stored and the file recorded, for the last file recorded.
    pub last_lag_ms: Option<EpochMillis>,
    /// The newest event time stored.
    pub newest_event: Option<EpochMillis>,
}

/// The ingest lag histogram: cumulative counts per bucket of
/// [`LAG_BUCKETS_SECONDS`], then the count and sum of every observation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LagHistogram {
    pub cumulative: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

#[derive(Debug, Default)]
struct Clocks {
    places: BTreeMap<(String, String), PlaceClock>,
    /// Observations of pairs past [`MAX_INGEST_PLACES`] or with malformed names.
    dropped: u64,
    buckets: [u64; LAG_BUCKETS_SECONDS.len()],
    count: u64,
    sum_ms: u128,
}

impl Clocks {
    fn place(&mut self, account_id: &str, region: &str) -> Option<&mut PlaceClock> {
        if !well_formed(account_id, region) {
            self.dropped += 1;
            return None;
        }
        let key = (account_id.to_owned(), region.to_owned());
        if !self.places.contains_key(&key) && self.places.len() >= MAX_INGEST_PLACES {
            self.dropped += 1;
            return None;
        }
        Some(self.places.entry(key).or_default())
    }
}

/// An account id (12 digits) and a region name (`eu-west-1`): what may become a label.
fn well_formed(account_id: &str, region: &str) -> bool {
    account_id.len() == 12
        && account_id.bytes().all(|b| b.is_ascii_digit())
        && (1..=32).contains(&region.len())
        && region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// How far behind the trail the pipeline is, per account and region: the
/// lag of the last file recorded and the newest event stored, plus a
/// histogram of every file's lag. Bounded by [`MAX_INGEST_PLACES`].
#[derive(Debug, Default)]
pub struct IngestClock {
    clocks: Mutex<Clocks>,
}

impl IngestClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Clocks> {
        self.clocks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the newest event time per account and region of stored events.
    pub fn events_stored(&self, events: &[Event]) {
        let mut newest: HashMap<(&str, &str), EpochMillis> = HashMap::new();
        for e in events {
            let t = newest.entry((e.account_id.as_str(), e.region.as_str())).or_insert(e.event_time);
            *t = (*t).max(e.event_time);
        }
        let mut clocks = self.lock();
        for ((account_id, region), time) in newest {
            if let Some(place) = clocks.place(account_id, region) {
                place.newest_event = Some(place.newest_event.map_or(time, |t| t.max(time)));
            }
        }
    }

    /// Notes the lag of the log and insight files recorded final at `at`:
    /// from each object's last-modified time to `at` (0 when the clocks disagree).
    pub fn files_recorded(&self, outcomes: &[FileOutcome], at: EpochMillis) {
        let mut clocks = self.lock();
        for outcome in outcomes {
            if outcome.kind == ObjectKind::Digest || !outcome.status.is_final() || outcome.modified <= 0 {
                continue;
            }
            let lag = at.saturating_sub(outcome.modified).max(0);
            let seconds = lag as f64 / 1000.0;
            for (i, le) in LAG_BUCKETS_SECONDS.iter().enumerate() {
                if seconds <= *le {
                    clocks.buckets[i] += 1;
                }
            }
            clocks.count += 1;
            clocks.sum_ms += lag as u128;
            if let Some(place) = clocks.place(&outcome.account_id, &outcome.region) {
                place.last_lag_ms = Some(lag);
            }
        }
    }

    /// Every account and region seen, in order.
    pub fn places(&self) -> Vec<((String, String), PlaceClock)> {
        self.lock().places.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// Observations not kept per account and region (too many pairs, or not a
    /// 12-digit account and a region name); the histogram has them all.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    pub fn lag_histogram(&self) -> LagHistogram {
        let clocks = self.lock();
        LagHistogram {
            cumulative: LAG_BUCKETS_SECONDS.iter().copied().zip(clocks.buckets.iter().copied()).collect(),
            count: clocks.count,
            sum_seconds: clocks.sum_ms as f64 / 1000.0,
        }
    }
}

const KINDS: [TransitionKind; 4] = [TransitionKind::Opened, TransitionKind::Updated, TransitionKind::Acknowledged, TransitionKind::Resolved];
const SEVERITIES: [Severity; 5] = [Severity::Informational, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

/// Notifying alert transitions committed, by kind and severity.
#[derive(Debug, Default)]
pub struct TransitionCounts {
    counts: [[AtomicU64; SEVERITIES.len()]; KINDS.len()],
}

impl TransitionCounts {
    pub fn add(&self, kind: TransitionKind, severity: Severity, n: u64) {
        let k = KINDS.iter().position(|x| *x == kind).unwrap_or(0);
        let s = SEVERITIES.iter().position(|x| *x == severity).unwrap_or(0);
        self.counts[k][s].fetch_add(n, Relaxed);
    }

    /// Every (kind, severity) with its count, zeros included.
    pub fn snapshot(&self) -> Vec<(TransitionKind, Severity, u64)> {
        let mut all = Vec::with_capacity(KINDS.len() * SEVERITIES.len());
        for (k, kind) in KINDS.iter().enumerate() {
            for (s, severity) in SEVERITIES.iter().enumerate() {
                all.push((*kind, *severity, self.counts[k][s].load(Relaxed)));
            }
        }
        all
    }

    /// The notifying transitions in these changes, counted once they are committed.
    pub fn committed(&self, changes: &[AlertChange]) {
        for change in changes {
            for t in change.transitions.iter().filter(|t| t.notify) {
                self.add(t.kind, change.alert.severity, 1);
            }
        }
    }
}

/// An [`AlertStore`] that counts the notifying transitions it commits into
/// [`PipelineStats::transitions`] (by kind and severity); everything else
/// goes straight through.
pub struct CountingAlertStore {
    inner: Arc<dyn AlertStore>,
    stats: Arc<PipelineStats>,
}

impl CountingAlertStore {
    pub fn new(inner: Arc<dyn AlertStore>, stats: Arc<PipelineStats>) -> Self {
        CountingAlertStore { inner, stats }
    }
}

#[async_trait]
impl AlertStore for CountingAlertStore {
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError> {
        self.inner.current(dedup_keys).await
    }

    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        self.inner.commit(changes.clone(), sinks).await?;
        self.stats.transitions.committed(&changes);
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        self.inner.get(id).await
    }

    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        self.inner.transitions(id).await
    }

    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError> {
        self.inner.list(query).await
    }

    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.inner.quiet(now, limit).await
    }

    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        self.inner.with_origin_events(events).await
    }

    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError> {
        self.inner.due(sink, now, limit).await
    }

    async fn delivered(&self, ids: &[i64], at: EpochMillis) -> Result<(), PortError> {
        self.inner.delivered(ids, at).await
    }

    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError> {
        self.inner.retry_later(id, next_attempt_at, error).await
    }

    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError> {
        self.inner.outstanding().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::conformance::sample_detection;
    use crate::alerts::{Lifecycle, LifecycleConfig, MemoryAlertStore};
    use crate::conformance::sample_event;
    use crate::event::FileStatus;

    const T: EpochMillis = 1_700_000_000_000;

    fn outcome(account_id: &str, region: &str, kind: ObjectKind, status: FileStatus, modified: EpochMillis) -> FileOutcome {
        FileOutcome {
            key: format!("AWSLogs/{account_id}/CloudTrail/{region}/x.json.gz"),
            kind,
            account_id: account_id.into(),
            region: region.into(),
            size: 1,
            modified,
            status,
            events: 1,
            bytes: 1,
            rejected: vec![],
            error: None,
        }
    }

    #[test]
    fn the_newest_event_is_kept_per_account_and_region() {
        let clock = IngestClock::default();
        let mut events = vec![sample_event("111122223333", "a", T), sample_event("111122223333", "b", T + 5_000), sample_event("444455556666", "c", T - 9_000)];
        events[2].region = "eu-west-1".into();
        clock.events_stored(&events);
        clock.events_stored(&[sample_event("111122223333", "d", T - 60_000)]);
        let places = clock.places();
        let region = events[0].region.clone();
        assert_eq!(places.len(), 2, "{places:?}");
        assert_eq!(places[0].0, ("111122223333".to_owned(), region));
        assert_eq!(places[0].1.newest_event, Some(T + 5_000), "an older batch does not move it back");
        assert_eq!(places[1].1.newest_event, Some(T - 9_000));
        assert_eq!(places[0].1.last_lag_ms, None, "no file recorded yet");
    }

    #[test]
    fn the_lag_of_final_log_files_is_kept_and_bucketed() {
        let clock = IngestClock::default();
        clock.files_recorded(
            &[
                outcome("111122223333", "us-east-1", ObjectKind::Log, FileStatus::Done, T - 3_000),
                outcome("111122223333", "us-east-1", ObjectKind::Log, FileStatus::Partial, T - 700_000),
                outcome("111122223333", "eu-west-1", ObjectKind::Digest, FileStatus::Digest, T - 50_000),
                outcome("444455556666", "eu-west-1", ObjectKind::Log, FileStatus::Failed, T - 50_000),
                outcome("444455556666", "us-east-2", ObjectKind::Insight, FileStatus::Done, T + 2_000),
            ],
            T,
        );
        let places = clock.places();
        assert_eq!(places.len(), 2, "digests and failed files are not counted: {places:?}");
        assert_eq!(places[0].1.last_lag_ms, Some(700_000), "the last file recorded for the pair");
        assert_eq!(places[1].1.last_lag_ms, Some(0), "a modification time ahead of the clock is no lag");
        let h = clock.lag_histogram();
        assert_eq!((h.count, h.sum_seconds), (3, 703.0));
        let at = |le: f64| h.cumulative.iter().find(|(b, _)| *b == le).map(|(_, n)| *n);
        assert_eq!((at(1.0), at(5.0), at(600.0), at(1800.0)), (Some(1), Some(2), Some(2), Some(3)));
    }

    #[test]
    fn pairs_are_bounded_and_malformed_names_are_not_labels() {
        let clock = IngestClock::default();
        let mut events: Vec<Event> = (0..MAX_INGEST_PLACES + 10).map(|i| sample_event(&format!("{:012}", i), &format!("e{i}"), T)).collect();
        events.push(sample_event("not-an-account", "x", T));
        let mut odd = sample_event("111122223333", "y", T);
        odd.region = "us-east-1\"} 1\nfake".into();
        events.push(odd);
        clock.events_stored(&events);
        assert_eq!(clock.places().len(), MAX_INGEST_PLACES);
        assert_eq!(clock.dropped(), 12);
    }

    #[tokio::test]
    async fn committed_notifying_transitions_are_counted_by_kind_and_severity() {
        let stats = Arc::new(PipelineStats::default());
        let store: Arc<dyn AlertStore> = Arc::new(CountingAlertStore::new(Arc::new(MemoryAlertStore::new()), stats.clone()));
        let lifecycle = Lifecycle::new(store.clone(), vec!["sns".into()], LifecycleConfig::default());
        let first = sample_detection("console-signin-without-mfa", "alice", "e1", T);
        let severity = first.severity;
        let report = lifecycle.apply(&[first, sample_detection("console-signin-without-mfa", "bob", "e2", T)], T).await.unwrap();
        assert_eq!(report.opened, 2);
        // A match within the notify window: stored, not notified, not counted.
        lifecycle.apply(&[sample_detection("console-signin-without-mfa", "alice", "e3", T + 60_000)], T).await.unwrap();
        let count =
            |kind: TransitionKind| stats.transitions.snapshot().iter().filter(|(k, s, _)| *k == kind && *s == severity).map(|(_, _, n)| *n).sum::<u64>();
        assert_eq!((count(TransitionKind::Opened), count(TransitionKind::Updated)), (2, 0));
        assert_eq!(stats.transitions.snapshot().iter().map(|(_, _, n)| n).sum::<u64>(), 2, "nothing counted under another severity");
        assert_eq!(store.outstanding().await.unwrap()["sns"], 2, "the wrapped store got the outbox entries");
    }
}
