//! The delivery worker against a real HTTP receiver: every transition
//! arrives once and in order per alert through failures, outages, restarts
//! and refusals, and nothing is left in the outbox.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use tokio_util::sync::CancellationToken;
use trailwatch_core::alerts::{Alert, AlertChange, AlertSink, AlertStatus, AlertStore, MemoryAlertStore, Severity, Transition, TransitionKind};
use trailwatch_embedded::{SqliteStore, StdoutFormat, StdoutSink, WebhookConfig, WebhookSink};
use trailwatch_enricher::delivery::{run, DeliveryConfig, DeliveryHandle, DeliveryStats};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// The changes that take alert `id` through `kinds`, one change per transition.
fn changes(id: &str, kinds: &[TransitionKind]) -> Vec<AlertChange> {
    let now = now_ms();
    let mut out = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        let revision = i as u64 + 1;
        let status = match kind {
            TransitionKind::Opened | TransitionKind::Updated => AlertStatus::Open,
            TransitionKind::Acknowledged => AlertStatus::Acknowledged,
            TransitionKind::Resolved => AlertStatus::Resolved,
        };
        let alert = Alert {
            id: id.into(),
            dedup_key: format!("rule-x|{id}"),
            rule_id: "rule-x".into(),
            title: "Rule X".into(),
            severity: Severity::High,
            status,
            summary: format!("something about {id}"),
            account_id: "111111111111".into(),
            account_alias: None,
            origin: None,
            origin_event: None,
            group: vec![],
            first_seen: now,
            last_seen: now,
            count: revision,
            samples: vec![],
            resolve_after_ms: None,
            notify_every_ms: 0,
            last_notified: now,
            revision,
            updated_at: now,
        };
        let transition = Transition { alert_id: id.into(), revision, kind: *kind, at: now, recorded_at: now, cause: "test".into(), by: None, notify: true };
        out.push(AlertChange { alert, base_revision: (revision > 1).then_some(revision - 1), transitions: vec![transition] });
    }
    out
}

const LIFE: [TransitionKind; 4] = [TransitionKind::Opened, TransitionKind::Updated, TransitionKind::Acknowledged, TransitionKind::Resolved];

/// Commits the alerts' changes interleaved (a1, b1, c1, a2, …), queued for `sinks`.
async fn commit_interleaved(store: &dyn AlertStore, alerts: &[(&str, &[TransitionKind])], sinks: &[&str]) {
    let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
    let per_alert: Vec<Vec<AlertChange>> = alerts.iter().map(|(id, kinds)| changes(id, kinds)).collect();
    let longest = per_alert.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..longest {
        for alert in &per_alert {
            if let Some(change) = alert.get(step) {
                store.commit(vec![change.clone()].into(), &sinks).await.unwrap();
            }
        }
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Hit {
    key: String,
    body_key: String,
    status: u16,
    at: Instant,
}

impl Hit {
    fn alert(&self) -> &str {
        self.key.split_once(':').map_or("", |(a, _)| a)
    }
    fn revision(&self) -> u64 {
        self.key.split_once(':').and_then(|(_, r)| r.parse().ok()).unwrap_or(0)
    }
}

type Decide = dyn Fn(usize, &str) -> (u16, String) + Send + Sync;

struct Shared {
    hits: Mutex<Vec<Hit>>,
    decide: Box<Decide>,
    delay: Duration,
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body_key = serde_json::from_slice::<serde_json::Value>(&body).ok().and_then(|v| v["dedupKey"].as_str().map(str::to_owned)).unwrap_or_default();
    let (status, text) = {
        let mut hits = shared.hits.lock().unwrap();
        let (status, text) = (shared.decide)(hits.len(), &key);
        hits.push(Hit { key, body_key, status, at: Instant::now() });
        (status, text)
    };
    tokio::time::sleep(shared.delay).await;
    (StatusCode::from_u16(status).unwrap(), text)
}

#[derive(Clone)]
struct Receiver {
    shared: Arc<Shared>,
}

impl Receiver {
    fn new(delay: Duration, decide: impl Fn(usize, &str) -> (u16, String) + Send + Sync + 'static) -> Self {
        Receiver { shared: Arc::new(Shared { hits: Mutex::new(Vec::new()), decide: Box::new(decide), delay }) }
    }

    async fn serve(&self, listener: tokio::net::TcpListener) {
        let app = Router::new().route("/hook", post(handle)).with_state(self.shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }

    /// Listens on a free port of 127.0.0.1; returns the webhook URL.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        self.serve(listener).await;
        format!("http://{addr}/hook")
    }

    fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| (200..300).contains(&h.status)).collect()
    }
}

fn webhook(url: &str) -> Arc<dyn AlertSink> {
    Arc::new(WebhookSink::new(WebhookConfig::new("webhook", url)).unwrap())
}

fn fast_config() -> DeliveryConfig {
    DeliveryConfig {
        batch: 4,
        poll_interval: Duration::from_millis(10),
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(80),
        attempt_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        scan_limit: 1000,
        outstanding_every: Duration::from_millis(20),
    }
}

struct Worker {
    stats: Arc<DeliveryStats>,
    handle: DeliveryHandle,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start(store: &Arc<impl AlertStore + 'static>, sinks: Vec<Arc<dyn AlertSink>>, config: DeliveryConfig) -> Worker {
    let stats = Arc::new(DeliveryStats::default());
    let handle = DeliveryHandle::new();
    let shutdown = CancellationToken::new();
    let store: Arc<dyn AlertStore> = store.clone();
    let task = tokio::spawn(run(store, sinks, config, stats.clone(), handle.clone(), shutdown.clone()));
    Worker { stats, handle, shutdown, task }
}

impl Worker {
    async fn stop(self) -> Arc<DeliveryStats> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(15), self.task).await.expect("the worker stops").unwrap();
        self.stats
    }
}

async fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn outstanding(store: &dyn AlertStore) -> u64 {
    store.outstanding().await.unwrap().values().sum()
}

async fn drained(store: &dyn AlertStore, limit: Duration) {
    let start = Instant::now();
    while outstanding(store).await > 0 {
        assert!(start.elapsed() < limit, "the outbox still holds {:?}", store.outstanding().await.unwrap());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn expected_keys(alerts: &[(&str, usize)]) -> HashSet<String> {
    alerts.iter().flat_map(|(id, n)| (1..=*n).map(move |r| format!("{id}:{r}"))).collect()
}

/// Every key accepted exactly once, and no revision of an alert sent
/// (accepted or not) before all its earlier revisions were accepted.
fn assert_once_and_in_order(hits: &[Hit], expected: &HashSet<String>) {
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut done_upto: HashMap<String, u64> = HashMap::new();
    for hit in hits {
        assert_eq!(hit.key, hit.body_key, "the Idempotency-Key is the body's dedupKey");
        let upto = done_upto.entry(hit.alert().to_owned()).or_default();
        assert!(hit.revision() <= *upto + 1, "{} sent before revision {} of its alert was delivered: {hits:#?}", hit.key, *upto + 1);
        if (200..300).contains(&hit.status) {
            *accepted.entry(hit.key.clone()).or_default() += 1;
            *upto = (*upto).max(hit.revision());
        }
    }
    let keys: HashSet<String> = accepted.keys().cloned().collect();
    assert_eq!(&keys, expected, "every transition delivered, nothing else");
    let repeated: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "delivered more than once: {repeated:?}");
}

#[tokio::test]
async fn every_transition_reaches_a_flaky_webhook_once_in_revision_order() {
    let rx = Receiver::new(Duration::ZERO, |n, _| if n < 5 { (503, "busy".into()) } else { (200, "ok".into()) });
    let url = rx.start().await;
    let store = Arc::new(MemoryAlertStore::new());
    let alerts: [(&str, &[TransitionKind]); 3] = [("a", &LIFE), ("b", &LIFE), ("c", &LIFE[..2])];
    commit_interleaved(&*store, &alerts, &["webhook", "stdout"]).await;
    let out = SharedBuf::default();
    let stdout: Arc<dyn AlertSink> = Arc::new(StdoutSink::with_writer(out.clone(), StdoutFormat::Text));
    let worker = start(&store, vec![webhook(&url), stdout], fast_config());

    drained(&*store, Duration::from_secs(20)).await;
    let stats = worker.stop().await;

    let hits = rx.hits();
    assert_eq!(hits.iter().filter(|h| h.status == 503).count(), 5);
    assert_once_and_in_order(&hits, &expected_keys(&[("a", 4), ("b", 4), ("c", 2)]));
    let webhook_stats = stats.sink("webhook");
    assert_eq!(webhook_stats.delivered.load(std::sync::atomic::Ordering::Relaxed), 10);
    assert_eq!(webhook_stats.failed_attempts.load(std::sync::atomic::Ordering::Relaxed), 5);
    assert_eq!(webhook_stats.rejected.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(stats.delivered(), 20, "ten transitions to each of two sinks");
    assert_eq!(stats.outstanding(), 0);
    let printed = out.text();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 10, "{printed}");
    let a_lines: Vec<&&str> = lines.iter().filter(|l| l.ends_with("alert a")).collect();
    assert!(a_lines[0].contains("] opened ") && a_lines[3].contains("] resolved "), "{a_lines:?}");
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_everything_once_it_is_up() {
    // Bound but not listening: connections are refused, and no other test's
    // receiver can take the port meanwhile.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr: SocketAddr = socket.local_addr().unwrap();
    let store = Arc::new(MemoryAlertStore::new());
    let singles: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let mut alerts: Vec<(&str, &[TransitionKind])> = vec![("a", &LIFE), ("b", &LIFE[..2])];
    alerts.extend(singles.iter().map(|id| (id.as_str(), &LIFE[..1])));
    commit_interleaved(&*store, &alerts, &["webhook"]).await;
    let config = DeliveryConfig { backoff_max: Duration::from_millis(200), ..fast_config() };
    let worker = start(&store, vec![webhook(&format!("http://{addr}/hook"))], config);

    // Down for a second: the sink is probed with one delivery at a time and
    // the pause grows with every failure (10, 20, 40, … ms, at least half of
    // each, up to 200 ms) whichever delivery probes it: about ten attempts,
    // where backing off each of the 12 alerts on its own would make dozens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let probes = worker.stats.failed_attempts();
    assert!((3..=15).contains(&probes), "{probes} attempts in a second");
    let waiting = store.due("webhook", i64::MAX, 100).await.unwrap();
    assert_eq!(waiting.len(), 16, "nothing is dropped while the receiver is down");
    assert_eq!(waiting.iter().map(|d| u64::from(d.attempts)).sum::<u64>(), probes, "every attempt is recorded");
    let a1 = waiting.iter().find(|d| d.dedup_key() == "a:1").unwrap();
    let error = a1.last_error.as_deref().unwrap_or("");
    assert!(error.contains("a:1") && !error.starts_with("permanent"), "{error}");

    let rx = Receiver::new(Duration::ZERO, |_, _| (200, String::new()));
    rx.serve(socket.listen(64).unwrap()).await;
    drained(&*store, Duration::from_secs(20)).await;
    let stats = worker.stop().await;
    let mut expected = expected_keys(&[("a", 4), ("b", 2)]);
    expected.extend(singles.iter().map(|id| format!("{id}:1")));
    assert_once_and_in_order(&rx.hits(), &expected);
    assert_eq!(stats.delivered(), 16);
}

/// Stops a worker while a delivery is in flight and starts another on the
/// same store; returns the receiver's hits and the key in flight at the stop.
async fn stop_mid_way(grace: Duration) -> (Vec<Hit>, String, HashSet<String>) {
    let rx = Receiver::new(Duration::from_millis(150), |_, _| (200, String::new()));
    let url = rx.start().await;
    let store = Arc::new(MemoryAlertStore::new());
    let alerts: [(&str, &[TransitionKind]); 3] = [("a", &LIFE), ("b", &LIFE), ("c", &LIFE)];
    commit_interleaved(&*store, &alerts, &["webhook"]).await;
    let config = DeliveryConfig { shutdown_grace: grace, ..fast_config() };

    let first = start(&store, vec![webhook(&url)], config.clone());
    eventually("three requests", Duration::from_secs(10), || rx.hits().len() >= 3).await;
    let in_flight = rx.hits()[2].key.clone();
    first.stop().await;
    assert!(outstanding(&*store).await > 0, "stopped mid-way");

    let second = start(&store, vec![webhook(&url)], config);
    drained(&*store, Duration::from_secs(30)).await;
    second.stop().await;
    (rx.hits(), in_flight, expected_keys(&[("a", 4), ("b", 4), ("c", 4)]))
}

#[tokio::test]
async fn what_a_stopped_process_left_in_the_sqlite_outbox_goes_out_after_it_starts_again() {
    let rx = Receiver::new(Duration::from_millis(100), |_, _| (200, String::new()));
    let url = rx.start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trailwatch.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    commit_interleaved(&*store, &[("a", &LIFE), ("b", &LIFE)], &["webhook"]).await;

    let first = start(&store, vec![webhook(&url)], fast_config());
    eventually("three requests", Duration::from_secs(10), || rx.hits().len() >= 3).await;
    first.stop().await;
    drop(store);
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let left = outstanding(&*store).await;
    assert!((1..8).contains(&left), "{left} of 8 left after the stop");

    let second = start(&store, vec![webhook(&url)], fast_config());
    drained(&*store, Duration::from_secs(20)).await;
    second.stop().await;
    assert_once_and_in_order(&rx.hits(), &expected_keys(&[("a", 4), ("b", 4)]));
}

fn repeats(hits: &[Hit]) -> Vec<String> {
    let mut seen = HashSet::new();
    hits.iter().filter(|h| !seen.insert(h.key.clone())).map(|h| h.key.clone()).collect()
}

#[tokio::test]
async fn a_new_worker_delivers_the_rest_and_repeats_only_what_was_in_flight() {
    let (hits, in_flight, expected) = stop_mid_way(Duration::ZERO).await;
    let keys: HashSet<String> = hits.iter().map(|h| h.key.clone()).collect();
    assert_eq!(keys, expected, "nothing lost across the restart");
    assert_eq!(repeats(&hits), [in_flight], "the delivery abandoned at the stop is sent again, nothing else");
    let firsts: Vec<Hit> = {
        let mut seen = HashSet::new();
        hits.into_iter().filter(|h| seen.insert(h.key.clone())).collect()
    };
    assert_once_and_in_order(&firsts, &expected);
}

#[tokio::test]
async fn a_stop_with_time_to_finish_repeats_nothing() {
    let (hits, _, expected) = stop_mid_way(Duration::from_secs(5)).await;
    assert!(repeats(&hits).is_empty(), "the delivery in flight finished and was recorded: {:?}", repeats(&hits));
    assert_once_and_in_order(&hits, &expected);
}

#[tokio::test]
async fn a_transition_waiting_for_its_retry_holds_the_later_ones_across_a_restart() {
    let rx = Receiver::new(Duration::ZERO, |_, _| (200, String::new()));
    let url = rx.start().await;
    let store = Arc::new(MemoryAlertStore::new());
    commit_interleaved(&*store, &[("a", &LIFE[..3]), ("b", &LIFE[..1])], &["webhook"]).await;
    // A previous run failed a:1 and scheduled its retry; a:2 and a:3 are due.
    let queued = store.due("webhook", i64::MAX, 10).await.unwrap();
    let a1 = queued.iter().find(|d| d.dedup_key() == "a:1").unwrap();
    let started = Instant::now();
    store.retry_later(a1.id, now_ms() + 400, "HTTP 503 before the restart").await.unwrap();

    let worker = start(&store, vec![webhook(&url)], fast_config());
    drained(&*store, Duration::from_secs(10)).await;
    worker.stop().await;
    let hits = rx.hits();
    assert_once_and_in_order(&hits, &expected_keys(&[("a", 3), ("b", 1)]));
    assert_eq!(hits[0].key, "b:1", "other alerts are not held");
    assert!(hits[1].at.duration_since(started) >= Duration::from_millis(380), "a:1 went out at its retry time, not before");
}

/// A writer the test keeps a handle on (for the stdout sink and the log).
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_refused_transition_is_logged_retried_with_growing_backoff_and_holds_only_its_alert() {
    use tracing_subscriber::util::SubscriberInitExt;
    let log = SharedBuf::default();
    let writer = log.clone();
    // The test runtime runs every task on this thread, so a thread-local subscriber sees them.
    let _guard = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish().set_default();

    let refusals = 5;
    let reason = format!("invalid payload: {}", "x".repeat(300));
    let refused = Arc::new(Mutex::new(0));
    let rx = Receiver::new(Duration::ZERO, move |_, key| {
        let mut n = refused.lock().unwrap();
        if key == "a:2" && *n < refusals {
            *n += 1;
            (400, reason.clone())
        } else {
            (200, String::new())
        }
    });
    let url = rx.start().await;
    let store = Arc::new(MemoryAlertStore::new());
    commit_interleaved(&*store, &[("a", &LIFE[..3]), ("b", &LIFE[..2])], &["webhook"]).await;
    let config = DeliveryConfig {
        poll_interval: Duration::from_millis(5),
        backoff_base: Duration::from_millis(60),
        backoff_max: Duration::from_millis(250),
        ..fast_config()
    };
    let worker = start(&store, vec![webhook(&url)], config);

    eventually("a refusal", Duration::from_secs(10), || worker.stats.rejected() >= 1).await;
    let kept = store.due("webhook", i64::MAX, 10).await.unwrap();
    let a2 = kept.iter().find(|d| d.dedup_key() == "a:2").expect("a refused delivery is kept");
    let error = a2.last_error.clone().unwrap_or_default();
    assert!(error.starts_with("permanent") && error.contains("400"), "{error}");
    drained(&*store, Duration::from_secs(20)).await;
    let stats = worker.stop().await;

    let hits = rx.hits();
    assert_once_and_in_order(&hits, &expected_keys(&[("a", 3), ("b", 2)]));
    assert_eq!(stats.rejected(), refusals as u64);
    let tries: Vec<Instant> = hits.iter().filter(|h| h.key == "a:2").map(|h| h.at).collect();
    assert_eq!(tries.len(), refusals + 1);
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays of 60, 120, 240, then 250 ms (the cap) at full, each at least half of that.
    let at_least = [30, 60, 120, 125, 125].map(Duration::from_millis);
    assert!(gaps.iter().zip(at_least).all(|(gap, least)| *gap >= least), "the backoff grows: {gaps:?}");
    assert!(gaps.iter().all(|g| *g < Duration::from_millis(250 + 200)), "and stops growing at the cap: {gaps:?}");
    let b_done = hits.iter().filter(|h| h.key == "b:2").map(|h| h.at).next().unwrap();
    assert!(b_done < tries[refusals], "another alert is not held behind the refused one");

    let text = log.text();
    let line = text.lines().find(|l| l.contains("permanent") && l.contains("a:2")).unwrap_or_else(|| panic!("no log of the refusal in:\n{text}"));
    assert!(line.contains("ERROR") && line.contains("HTTP 400") && line.contains("invalid payload"), "{line}");
    assert!(line.contains(&"x".repeat(150)) && !line.contains(&"x".repeat(201)), "the answer's first 200 bytes: {line}");
}

#[tokio::test]
async fn notify_sends_a_committed_alert_without_waiting_for_the_poll() {
    let rx = Receiver::new(Duration::ZERO, |_, _| (200, String::new()));
    let url = rx.start().await;
    let store = Arc::new(MemoryAlertStore::new());
    let config = DeliveryConfig { poll_interval: Duration::from_secs(60), ..fast_config() };
    let worker = start(&store, vec![webhook(&url)], config);
    tokio::time::sleep(Duration::from_millis(100)).await;

    commit_interleaved(&*store, &[("a", &LIFE[..1])], &["webhook"]).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(rx.hits().is_empty(), "without a poke the worker waits for its poll");
    worker.handle.notify();
    eventually("the delivery", Duration::from_secs(5), || rx.accepted().len() == 1).await;
    worker.stop().await;
}
