//! The embedded pipeline (collector, enricher, alert delivery, digest
//! checks) over a generated trail, with every port wrapped in a fault
//! injector: what it stores, resolves, raises and delivers must equal a
//! fault-free run of the same trail, and the trouble must show in the
//! counters and the logs.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use trailwatch_collector::{CollectorConfig, CollectorPorts, Mode, CHUNK_EVENTS};
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::{AlertQuery, AlertSink, AlertStore, Delivery, Lifecycle, LifecycleConfig};
use trailwatch_core::faults::{FaultKind, FaultPlan, FaultRule, Faulty};
use trailwatch_core::identity::{PendingConfig, PendingSet, PendingStore, Resolver, ResolverConfig, SessionArchive, SessionStore};
use trailwatch_core::integrity::{IntegrityAlerts, IntegrityChecker, IntegrityPorts, IntegrityStore, PublicKeys, SidecarSignatures, SignatureSource};
use trailwatch_core::ports::{Checkpoints, HistoryQuery, HistoryStore, LogSource, PortError};
use trailwatch_core::retry::RetryPolicy;
use trailwatch_core::rules::{RuleSet, RuleSource};
use trailwatch_core::stats::PipelineStats;
use trailwatch_embedded::{DirSource, SqliteStore};
use trailwatch_enricher::alerting::{AlertPorts, StoredEvents};
use trailwatch_enricher::delivery::{self, DeliveryConfig, DeliveryHandle, DeliveryStats};
use trailwatch_enricher::{EnricherConfig, EnricherPorts};
use trailwatch_gen::{GenConfig, GenReport};

/// Every port of the pipeline, by the name the fault rules use.
const PORTS: [&str; 10] = ["source", "ledger", "history", "sessions", "archive", "pending", "alerts", "sink", "integrity", "signatures"];

/// A sink that keeps the dedup key of every delivery it takes.
#[derive(Default)]
struct Recorder {
    keys: Mutex<Vec<String>>,
}

#[async_trait]
impl AlertSink for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        self.keys.lock().unwrap().push(delivery.dedup_key());
        Ok(())
    }
}

/// Log lines, kept in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    /// Routes this thread's logs (and so, on a current-thread runtime, the pipeline's) here.
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || logs.clone()).with_ansi(false).with_max_level(tracing::Level::WARN).finish();
        tracing::subscriber::set_default(subscriber)
    }
}

fn generate(dir: &Path, events: u64, seed: u64) -> GenReport {
    let config = GenConfig { accounts: 6, events, seed, incidents: true, ..GenConfig::default() };
    trailwatch_gen::generate(&config, dir, &|_| {}).unwrap()
}

/// How a run is composed.
struct Shape {
    workers: usize,
    channel: usize,
    enricher: EnricherConfig,
    mode: Mode,
}

impl Shape {
    fn once() -> Self {
        let enricher = EnricherConfig { retry_base: Duration::from_millis(5), retry_max: Duration::from_millis(200), ..EnricherConfig::default() };
        Shape { workers: 2, channel: 16, enricher, mode: Mode::Once }
    }
}

/// The pipeline over `db` and `trail`, every port through `plan`.
struct Pipeline {
    stats: Arc<PipelineStats>,
    store: Arc<SqliteStore>,
    sink: Arc<Recorder>,
}

impl Pipeline {
    fn new(db: &Path, sink: Arc<Recorder>) -> Self {
        Pipeline { stats: Arc::new(PipelineStats::default()), store: Arc::new(SqliteStore::open(db).unwrap()), sink }
    }

    /// Runs collector, enricher and delivery until the collector is done
    /// (or, watching, until `done` says so), then drains the outbox.
    async fn run(&self, trail: &Path, plan: &Arc<FaultPlan>, shape: Shape, done: Option<&(dyn Fn(&Pipeline) -> bool + Sync)>) {
        let store = &self.store;
        let source: Arc<dyn LogSource> = Faulty::new("source", Arc::new(DirSource::new(trail)), plan.clone());
        let ledger: Arc<dyn Checkpoints> = Faulty::new("ledger", store.clone(), plan.clone());
        let history: Arc<dyn HistoryStore> = Faulty::new("history", store.clone(), plan.clone());
        let sessions: Arc<dyn SessionStore> = Faulty::new("sessions", store.clone(), plan.clone());
        let archive: Arc<dyn SessionArchive> = Faulty::new("archive", store.clone(), plan.clone());
        let pending: Arc<dyn PendingStore> = Faulty::new("pending", store.clone(), plan.clone());
        let alerts: Arc<dyn AlertStore> = Faulty::new("alerts", store.clone(), plan.clone());
        let sink: Arc<dyn AlertSink> = Faulty::new("sink", self.sink.clone(), plan.clone());
        let integrity: Arc<dyn IntegrityStore> = Faulty::new("integrity", store.clone(), plan.clone());
        let signatures: Arc<dyn SignatureSource> = Faulty::new("signatures", Arc::new(SidecarSignatures::new(source.clone())), plan.clone());

        let retry = RetryPolicy { attempts: 5, base: Duration::from_millis(5), max_delay: Duration::from_millis(200), timeout: Some(Duration::from_secs(20)) };
        let resolver = ResolverConfig { archive_retry: Duration::from_millis(100), store_retry: retry, ..ResolverConfig::default() };
        let pending_config = PendingConfig { retry, ..PendingConfig::default() };
        let identity = Arc::new(PendingSet::new(Arc::new(Resolver::new(sessions, Some(archive), resolver)), pending, pending_config));
        let rules = Arc::new(RuleSet::load_layers(&RuleSource::read_dir(&repo().join("rules")).unwrap(), &[]).unwrap());
        let accounts_file = trail.join("accounts.json");
        let accounts = AccountDirectory::from_list_accounts(&std::fs::read_to_string(&accounts_file).unwrap(), "accounts.json").unwrap();
        let lifecycle = Arc::new(Lifecycle::new(alerts.clone(), vec!["recorder".into()], LifecycleConfig { retry, ..LifecycleConfig::default() }));
        let handle = DeliveryHandle::new();
        let alert_ports = AlertPorts {
            rules,
            lifecycle: lifecycle.clone(),
            accounts: Arc::new(accounts.into()),
            delivery: Some(handle.clone()),
            detector: Default::default(),
            refill: Some(Arc::new(StoredEvents(history.clone()))),
        };
        let checker = Arc::new(
            IntegrityChecker::new(IntegrityPorts {
                source: source.clone(),
                signatures,
                keys: Arc::new(PublicKeys::none()),
                store: integrity,
                alerts: Some(IntegrityAlerts { lifecycle, store: alerts.clone() }),
            })
            .with_retry(retry),
        );

        let shutdown = CancellationToken::new();
        let stop_delivery = CancellationToken::new();
        let delivery_config = DeliveryConfig {
            poll_interval: Duration::from_millis(20),
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..DeliveryConfig::default()
        };
        let delivering =
            tokio::spawn(delivery::run(alerts, vec![sink], delivery_config, Arc::new(DeliveryStats::default()), handle.clone(), stop_delivery.clone()));
        let (tx, rx) = mpsc::channel(shape.channel);
        let ports = EnricherPorts { history, checkpoints: ledger.clone(), identity: Some(identity), alerts: Some(alert_ports) };
        let enricher = tokio::spawn(trailwatch_enricher::run(shape.enricher, ports, rx, self.stats.clone(), shutdown.clone()));
        let config = CollectorConfig { workers: shape.workers, mode: shape.mode, prefix: String::new(), wake: None };
        let collector = tokio::spawn(trailwatch_collector::run_with_retry(
            config,
            CollectorPorts { source, checkpoints: ledger, integrity: Some(checker) },
            tx,
            self.stats.clone(),
            shutdown.clone(),
            retry,
        ));
        if let Some(done) = done {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done(self) {
                let s = &self.stats;
                let g = PipelineStats::get;
                assert!(
                    Instant::now() < deadline,
                    "the pipeline did not catch up within a minute: files read {}, failed to store {}, events parsed {}, stored {}, in flight {}",
                    g(&s.files_read),
                    g(&s.files_store_failed),
                    g(&s.events_parsed),
                    g(&s.events_stored),
                    g(&s.events_in_flight)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            shutdown.cancel();
        }
        let collected = collector.await.unwrap();
        if let Err(e) = collected {
            // A scan that failed for good: the run ends as a service's would, and a restart carries on.
            eprintln!("the collector stopped: {e}");
        }
        enricher.await.unwrap();
        // Drain: every transition queued goes out (the fault-free store is asked).
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left: u64 = self.store.outstanding().await.unwrap().values().sum();
            if left == 0 || Instant::now() > deadline {
                break;
            }
            handle.notify();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop_delivery.cancel();
        delivering.await.unwrap();
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What a user sees of a run, from the store itself (no faults).
#[derive(Debug, PartialEq)]
struct Seen {
    events: u64,
    /// (account, event id) → (origin kind, principal, confidence, hops).
    origins: BTreeMap<(String, String), String>,
    files: u64,
    files_not_final: Vec<String>,
    sessions: u64,
    /// (rule, dedup key) → (status, count).
    alerts: BTreeMap<(String, String), (String, u64)>,
    /// Notifying transitions as `alert id:revision`.
    transitions: BTreeSet<String>,
    pending: u64,
}

async fn seen(store: &SqliteStore, db: &Path) -> Seen {
    let mut origins = BTreeMap::new();
    let mut query = HistoryQuery { limit: 1000, ..Default::default() };
    loop {
        let page = store.page(&query).await.unwrap();
        for e in &page.events {
            let o = e.origin.as_ref().map_or("none".to_owned(), |o| format!("{:?} {:?} {:?} {}", o.kind, o.principal, o.confidence, o.chain.len()));
            let old = origins.insert((e.account_id.clone(), e.event_id.clone()), o);
            assert!(old.is_none(), "{} {} is stored twice", e.account_id, e.event_id);
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let ledger = store.summary().await.unwrap();
    let files_not_final: Vec<String> = store.problems(100).await.unwrap().into_iter().filter(|e| !e.status.is_final()).map(|e| e.key).collect();
    let mut alerts = BTreeMap::new();
    let mut transitions = BTreeSet::new();
    let mut query = AlertQuery { limit: 500, ..Default::default() };
    loop {
        let page = store.list(&query).await.unwrap();
        for a in &page.alerts {
            alerts.insert((a.rule_id.clone(), a.dedup_key.clone()), (a.status.as_str().to_owned(), a.count));
            for t in store.transitions(&a.id).await.unwrap().into_iter().filter(|t| t.notify) {
                transitions.insert(format!("{}:{}", t.alert_id, t.revision));
            }
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    let connection = rusqlite::Connection::open(db).unwrap();
    let sessions: i64 = connection.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0)).unwrap();
    Seen {
        events: HistoryStore::count(store).await.unwrap(),
        origins,
        files: ledger.by_status.values().sum(),
        files_not_final,
        sessions: sessions as u64,
        alerts,
        transitions,
        pending: PendingStore::count(store).await.unwrap(),
    }
}

/// Compares a run with faults to the fault-free one, as a user would: the
/// same events once each with the same origins, every file recorded, the
/// same sessions, alerts and waiting events; every transition delivered.
fn same_as_reference(got: &Seen, want: &Seen, delivered: &[String], report: &GenReport) {
    assert_eq!(want.events, report.events, "the fault-free run stores every generated event");
    assert_eq!(want.files, report.files + report.digest_files, "the fault-free run records every file");
    assert!(want.alerts.len() as u64 >= report.alerts, "the fault-free run raises the answer key's alerts: {:?}", want.alerts);
    assert_eq!(got.events, want.events, "events stored");
    assert_eq!(got.origins.len(), want.origins.len());
    let differ: Vec<_> = got.origins.iter().filter(|(k, v)| want.origins.get(*k) != Some(*v)).take(5).collect();
    assert!(
        differ.is_empty(),
        "origins differ from the fault-free run, e.g. {differ:?} (fault-free: {:?})",
        differ.iter().map(|(k, _)| want.origins.get(*k)).collect::<Vec<_>>()
    );
    assert_eq!((got.files, &got.files_not_final), (want.files, &Vec::new()), "every file in the ledger, none left failed");
    assert_eq!(got.sessions, want.sessions, "sessions recorded");
    assert_eq!(got.alerts, want.alerts, "alerts (rule, dedup key) → (status, matches)");
    assert_eq!(got.pending, want.pending, "events still waiting");
    let keys: BTreeSet<String> = delivered.iter().cloned().collect();
    let missing: Vec<_> = got.transitions.difference(&keys).collect();
    assert!(missing.is_empty(), "transitions never delivered: {missing:?}");
    let phantom: Vec<_> = keys.difference(&got.transitions).collect();
    assert!(phantom.is_empty(), "deliveries whose dedup key is no transition: {phantom:?}");
}

/// A generated trail of 20,000 events in a temporary folder, and what a
/// fault-free run of it stores.
async fn trail_and_reference(seed: u64) -> (tempfile::TempDir, PathBuf, GenReport, Seen) {
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("trail");
    let report = generate(&trail, 20_000, seed);
    let want = reference(tmp.path(), &trail).await;
    (tmp, trail, report, want)
}

/// A fault-free run of the trail: the reference.
async fn reference(tmp: &Path, trail: &Path) -> Seen {
    let db = tmp.join("reference.db");
    let pipeline = Pipeline::new(&db, Arc::new(Recorder::default()));
    pipeline.run(trail, &FaultPlan::quiet(0), Shape::once(), None).await;
    let seen = seen(&pipeline.store, &db).await;
    assert_eq!(PipelineStats::get(&pipeline.stats.port_calls.retried), 0);
    seen
}

fn figures(label: &str, plan: &FaultPlan, stats: &PipelineStats, runs: usize, took: Duration) {
    let by_port: Vec<String> = PORTS.iter().map(|p| format!("{p} {}", plan.injected_on(p))).collect();
    let by_kind: Vec<String> = FaultKind::ALL.iter().map(|k| format!("{} {}", k.as_str(), plan.injected(*k))).collect();
    println!(
        "{label}: {runs} run(s) in {:.1} s; faults by port: {}; by kind: {}; retried {}, timed out {}, given up {}; files failed {}",
        took.as_secs_f64(),
        by_port.join(", "),
        by_kind.join(", "),
        PipelineStats::get(&stats.port_calls.retried),
        PipelineStats::get(&stats.port_calls.timed_out),
        PipelineStats::get(&stats.port_calls.gave_up),
        PipelineStats::get(&stats.files_failed),
    );
}

/// Retryable faults on every port at once, 10 to 30 % of calls each, some
/// calls slow: nothing lost, nothing doubled, nothing resolved differently.
#[tokio::test(flavor = "current_thread")]
async fn retryable_faults_on_every_port_change_nothing_a_user_sees() {
    let (tmp, trail, report, want) = trail_and_reference(21).await;

    let rules: Vec<FaultRule> = PORTS
        .iter()
        .enumerate()
        .map(|(i, port)| FaultRule::new(0.10 + 0.2 * i as f64 / 9.0, 0.0, 0.05, 0.0).slow_for(Duration::from_millis(5)).on(port))
        .collect();
    // The sink and the archive see few calls: their first ones fail for sure.
    let first = [FaultRule::next(FaultKind::Retryable, 2).on("sink"), FaultRule::next(FaultKind::Retryable, 1).on("archive")];
    let plan = FaultPlan::new(2026, first.into_iter().chain(rules).collect());
    let logs = Logs::default();
    let _capture = logs.capture();
    let db = tmp.path().join("faulty.db");
    let sink = Arc::new(Recorder::default());
    let started = Instant::now();
    let mut runs = 0;
    let mut stats = Vec::new();
    // A file whose every attempt failed is recorded as failed and read again
    // by the next scan (a restart here): at most three.
    loop {
        runs += 1;
        let pipeline = Pipeline::new(&db, sink.clone());
        pipeline.run(&trail, &plan, Shape::once(), None).await;
        let left = seen(&pipeline.store, &db).await.files_not_final;
        println!("run {runs}: {} file(s) left failed, e.g. {:?}", left.len(), left.first());
        let left = left.len();
        stats.push(pipeline.stats);
        if left == 0 || runs == 3 {
            break;
        }
    }
    let took = started.elapsed();
    let pipeline = Pipeline::new(&db, sink.clone());
    let got = seen(&pipeline.store, &db).await;
    figures("retryable 10-30% on every port", &plan, &stats[0], runs, took);
    println!("events {} of {}, files {} of {}, sessions {} (fault-free {}), alerts {} (fault-free {}), transitions {} delivered {} times, pending {} (fault-free {})",
        got.events, report.events, got.files, report.files + report.digest_files, got.sessions, want.sessions, got.alerts.len(), want.alerts.len(),
        got.transitions.len(), sink.keys.lock().unwrap().len(), got.pending, want.pending);
    same_as_reference(&got, &want, &sink.keys.lock().unwrap(), &report);

    for port in PORTS {
        assert!(plan.injected_on(port) > 0, "{port} got faults:\n{}", plan.report());
    }
    let retried: u64 = stats.iter().map(|s| PipelineStats::get(&s.port_calls.retried)).sum();
    assert!(retried > 0, "the retries show in the counters");
    let logged = logs.text();
    for line in logged.lines().filter(|l| l.contains("ERROR")).take(8) {
        println!("logged: {line}");
    }
    assert!(logged.contains("retrying") && logged.contains("injected retryable fault"), "the retries show in the logs");
    assert!(logged.contains("history.append") || logged.contains("ledger.record"), "the log names the failing port: {}", &logged[..logged.len().min(2000)]);
}

/// Bursts of permanent failures on the stores (history, ledger, sessions,
/// pending, alerts, archive), then a restart over the same store with the
/// faults gone: the restart recovers everything the bursts failed.
#[tokio::test(flavor = "current_thread")]
async fn permanent_failure_bursts_then_a_restart_lose_nothing() {
    let (tmp, trail, report, want) = trail_and_reference(22).await;

    let burst = |port: &'static str, op: &'static str, skip: u64| FaultRule::next(FaultKind::Permanent, 3).on(port).op(op).skip(skip);
    let plan = FaultPlan::new(
        7,
        vec![
            burst("history", "append", 2),
            burst("history", "set_origins", 1),
            burst("ledger", "record", 4),
            burst("sessions", "put", 3),
            burst("pending", "add", 1),
            burst("alerts", "commit", 0),
            burst("archive", "find_many", 0),
            burst("source", "open", 5),
            // The answer lost after the write: the retry must not double it.
            FaultRule::next(FaultKind::Retryable, 3).on("history").op("append").after_call().skip(3),
        ],
    );
    let logs = Logs::default();
    let _capture = logs.capture();
    let db = tmp.path().join("faulty.db");
    let sink = Arc::new(Recorder::default());
    let started = Instant::now();
    let first = Pipeline::new(&db, sink.clone());
    first.run(&trail, &plan, Shape::once(), None).await;
    let after_burst = seen(&first.store, &db).await;
    assert!(!after_burst.files_not_final.is_empty(), "the bursts failed files the user can see in the ledger");
    assert!(PipelineStats::get(&first.stats.port_calls.gave_up) > 0, "permanent errors are given up on at once");
    plan.clear();
    let restart = Pipeline::new(&db, sink.clone());
    restart.run(&trail, &plan, Shape::once(), None).await;
    let took = started.elapsed();
    let got = seen(&restart.store, &db).await;
    figures("permanent bursts, then a restart", &plan, &first.stats, 2, took);
    println!(
        "after the bursts: {} files failed; after the restart: events {} of {}, files {}, sessions {}, alerts {}, pending {}",
        after_burst.files_not_final.len(),
        got.events,
        report.events,
        got.files,
        got.sessions,
        got.alerts.len(),
        got.pending
    );
    same_as_reference(&got, &want, &sink.keys.lock().unwrap(), &report);
    assert_eq!(plan.injected(FaultKind::Permanent), 24, "every burst fired:\n{}", plan.report());
    assert_eq!(plan.injected(FaultKind::Retryable), 3, "the lost answers were injected:\n{}", plan.report());
    assert!(PipelineStats::get(&first.stats.events_duplicate) > 0, "the appends whose answer was lost were retried and found stored");
    let logged = logs.text();
    assert!(logged.contains("injected permanent fault"), "the failures are in the logs");
    assert!(logged.contains("will be read again"), "the log says what becomes of the failed files");
}

/// The history store fails every write for a long stretch: the collector
/// is held back by the bounded queues, so the events in memory stay under
/// the pipeline's bound however large the trail; once the store is back,
/// watching picks the failed files up again and nothing is lost.
#[tokio::test(flavor = "current_thread")]
async fn a_long_history_outage_keeps_memory_bounded_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("trail");
    let report = generate(&trail, 40_000, 23);
    let (workers, channel, max_batch) = (2, 2, 500);
    // Read and not yet written, at most: a chunk per worker waiting to be
    // queued, the queue, and three batches (coalescing, waiting, writing).
    let bound = ((workers + channel) * CHUNK_EVENTS + 3 * (max_batch + CHUNK_EVENTS)) as u64;
    assert!(report.events > 4 * bound, "the trail ({} events) is much larger than the bound ({bound})", report.events);

    let plan = FaultPlan::new(3, vec![FaultRule::always(FaultKind::Retryable).on("history").op("append")]);
    let db = tmp.path().join("faulty.db");
    let pipeline = Pipeline::new(&db, Arc::new(Recorder::default()));
    let enricher = EnricherConfig {
        max_batch_events: max_batch,
        attempts: 4,
        retry_base: Duration::from_millis(20),
        retry_max: Duration::from_millis(100),
        ..EnricherConfig::default()
    };
    let shape = Shape { workers, channel, enricher, mode: Mode::Watch { interval: Duration::from_millis(200) } };
    let total = report.events;
    let recovered = Mutex::new(false);
    let done = |p: &Pipeline| {
        let failed = PipelineStats::get(&p.stats.files_store_failed);
        // The outage lasts until half the trail was read, and failed, once.
        if !*recovered.lock().unwrap() && failed >= report.files / 2 {
            assert!(PipelineStats::get(&p.stats.events_stored) == 0, "nothing is stored while history is down");
            plan.clear();
            *recovered.lock().unwrap() = true;
        }
        *recovered.lock().unwrap() && PipelineStats::get(&p.stats.events_stored) >= total
    };
    let started = Instant::now();
    pipeline.run(&trail, &plan, shape, Some(&done)).await;
    let took = started.elapsed();
    let got = seen(&pipeline.store, &db).await;
    let peak = PipelineStats::get(&pipeline.stats.events_in_flight_peak);
    figures("history down for a long stretch", &plan, &pipeline.stats, 1, took);
    println!("events in flight at most {peak} (bound {bound}, trail {total}); events {} of {total}, files {}", got.events, got.files);
    assert!(peak > 0 && peak <= bound, "events held in memory at once: {peak}, bound {bound}");
    assert_eq!(PipelineStats::get(&pipeline.stats.events_in_flight), 0, "every event taken in was let go");
    assert_eq!(got.events, total, "every event stored once the store is back");
    assert!(got.files_not_final.is_empty(), "no file left failed: {:?}", got.files_not_final);
    assert!(PipelineStats::get(&pipeline.stats.port_calls.retried) > 0, "retries counted");
    assert!(PipelineStats::get(&pipeline.stats.files_store_failed) > 0, "files whose events could not be stored are counted");
    assert!(plan.injected_on("history") > 10, "{}", plan.report());
}
