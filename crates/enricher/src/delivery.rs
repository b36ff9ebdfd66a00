//! Delivery: drains the alert outbox into the sinks.
//!
//! The enricher writes each alert change and queues its notifying
//! transitions for every sink in the same store write (the outbox). [`run`]
//! starts one task per sink that takes what is due, delivers it in the order
//! it was queued, records it as delivered, and on a failure records the
//! attempt and when to try again (exponential backoff with jitter). A
//! delivery stays in the store until its sink took it, across restarts.
//!
//! **Order.** An alert's transitions reach a sink in revision order. When one
//! fails, the later ones of the same alert are held back until it goes
//! through. A retryable failure (sink down, 5xx, timeout) also pauses the
//! whole sink until its retry, and the pause grows with each retryable
//! failure in a row, whichever delivery probed: a sink that is down gets one
//! request per backoff period, not one per queued alert. A permanent failure
//! (the sink refused it) holds only that alert; the others go on. On start,
//! the worker reads the outstanding deliveries, due or not, to find alerts
//! whose oldest transition waits for a retry: the hold survives a restart.
//! This assumes one worker per sink and store.
//!
//! **Exactly once** is completed by the receiver: a delivery is recorded as
//! done right after the sink took it, so a stop in between sends it again,
//! and receivers drop the repeat by its dedup key `<alert id>:<revision>`.
//!
//! **Shutdown.** The worker takes no new delivery; the one in flight may
//! finish within [`DeliveryConfig::shutdown_grace`] and is recorded, else it
//! is abandoned and sent again on the next start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, warn, Instrument};

use trailwatch_core::alerts::{AlertSink, AlertStore, Delivery};
use trailwatch_core::ports::PortError;
use trailwatch_core::retry::{retry, RetryCounters, RetryPolicy};
use trailwatch_core::time::EpochMillis;

/// The delivery worker's settings.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Deliveries taken from the store per round.
    pub batch: usize,
    /// How often the outbox is read when nobody calls [`DeliveryHandle::notify`].
    pub poll_interval: Duration,
    /// Retry delay after the first failed attempt; doubled per failed attempt.
    pub backoff_base: Duration,
    /// The longest retry delay.
    pub backoff_max: Duration,
    /// An attempt with no answer by then fails, retryably.
    pub attempt_timeout: Duration,
    /// On shutdown, how long the delivery in flight (and recording it) may still take.
    pub shutdown_grace: Duration,
    /// Outstanding deliveries read on start to find held alerts.
    pub scan_limit: usize,
    /// How often the outstanding counts of [`SinkStats`] are read from the store.
    pub outstanding_every: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            batch: 100,
            poll_interval: Duration::from_millis(200),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            attempt_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            scan_limit: 10_000,
            outstanding_every: Duration::from_secs(5),
        }
    }
}

/// The delay before the next attempt after `failures` failed ones:
/// `base × 2^(failures − 1)`, capped at `max`, of which the upper half is
/// random, so retries of several workers do not arrive together.
pub fn backoff(config: &DeliveryConfig, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(32);
    let full = config.backoff_base.saturating_mul(2u32.saturating_pow(doublings)).min(config.backoff_max);
    let half = full / 2;
    let spread = u64::try_from((full - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(random_below(spread))
}

/// A number in `0..n` (0 when `n` is 0), from the standard library's
/// randomly keyed hasher: enough to spread retries.
fn random_below(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    RandomState::new().hash_one(Instant::now()) % n
}

fn now_ms() -> EpochMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX))
}

fn as_millis(d: Duration) -> EpochMillis {
    EpochMillis::try_from(d.as_millis()).unwrap_or(EpochMillis::MAX)
}

fn until(now: EpochMillis, at: EpochMillis) -> Duration {
    Duration::from_millis(u64::try_from(at.saturating_sub(now)).unwrap_or(0))
}

/// One sink's counters.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Transitions the sink took.
    pub delivered: AtomicU64,
    /// Attempts that failed; each is tried again later.
    pub failed_attempts: AtomicU64,
    /// Of the failed attempts, those the sink refused (permanent errors).
    pub rejected: AtomicU64,
    /// Deliveries waiting in the store for this sink, as last read.
    pub outstanding: AtomicU64,
}

/// The delivery counters, per sink (for the summary and, later, metrics).
#[derive(Debug, Default)]
pub struct DeliveryStats {
    sinks: Mutex<BTreeMap<String, Arc<SinkStats>>>,
}

impl DeliveryStats {
    /// The counters of one sink (created at zero).
    pub fn sink(&self, name: &str) -> Arc<SinkStats> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sinks.entry(name.to_owned()).or_default().clone()
    }

    /// Every sink's counters, by name.
    pub fn sinks(&self) -> Vec<(String, Arc<SinkStats>)> {
        let sinks = self.sinks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sinks.iter().map(|(name, stats)| (name.clone(), stats.clone())).collect()
    }

    fn total(&self, counter: impl Fn(&SinkStats) -> &AtomicU64) -> u64 {
        self.sinks().iter().map(|(_, s)| counter(s).load(Relaxed)).sum()
    }

    pub fn delivered(&self) -> u64 {
        self.total(|s| &s.delivered)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.total(|s| &s.failed_attempts)
    }

    pub fn rejected(&self) -> u64 {
        self.total(|s| &s.rejected)
    }

    pub fn outstanding(&self) -> u64 {
        self.total(|s| &s.outstanding)
    }
}

/// Wakes the sink workers: call [`notify`](DeliveryHandle::notify) after a
/// commit that queued deliveries, so they go out now rather than at the
/// next poll. Cheap to clone; a call while no worker runs does nothing.
#[derive(Debug, Clone, Default)]
pub struct DeliveryHandle {
    wakers: Arc<Mutex<Vec<Weak<Notify>>>>,
}

impl DeliveryHandle {
    pub fn new() -> Self {
        DeliveryHandle::default()
    }

    /// Tells every running sink worker to read the outbox now. A worker busy
    /// delivering reads it again as soon as it is done.
    pub fn notify(&self) {
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakers.retain(|waker| match waker.upgrade() {
            Some(notify) => {
                notify.notify_one();
                true
            }
            None => false,
        });
    }

    fn register(&self) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let mut wakers = self.wakers.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        wakers.push(Arc::downgrade(&notify));
        notify
    }
}

/// Delivers the outbox to `sinks`, one task per sink, until `shutdown`;
/// returns once every task has stopped (see the module doc for the order
/// kept, retries and shutdown). `handle` wakes the tasks early.
pub async fn run(
    store: Arc<dyn AlertStore>,
    sinks: Vec<Arc<dyn AlertSink>>,
    config: DeliveryConfig,
    stats: Arc<DeliveryStats>,
    handle: DeliveryHandle,
    shutdown: CancellationToken,
) {
    let config = Arc::new(config);
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_owned()).collect();
    let mut tasks = JoinSet::new();
    for sink in sinks {
        let name = sink.name().to_owned();
        let worker = SinkWorker {
            store: store.clone(),
            stats: stats.sink(&name),
            name: name.clone(),
            sink,
            config: config.clone(),
            wake: handle.register(),
            shutdown: shutdown.clone(),
            held: HashMap::new(),
            paused_until: None,
            streak: 0,
            unrecorded: Vec::new(),
            extra: 0,
            store_warnings: Throttle::new(Duration::from_secs(30)),
        };
        tasks.spawn(worker.run().instrument(info_span!("delivery.sink", sink = %name)));
    }
    let mut warnings = Throttle::new(Duration::from_secs(60));
    loop {
        refresh_outstanding(&*store, &stats, &names, &mut warnings).await;
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Err(e)) => error!(error = %e, "a delivery task failed"),
                Some(Ok(())) => {}
            },
            () = tokio::time::sleep(config.outstanding_every) => {}
        }
    }
    let _ = tokio::time::timeout(config.shutdown_grace, refresh_outstanding(&*store, &stats, &names, &mut warnings)).await;
}

async fn refresh_outstanding(store: &dyn AlertStore, stats: &DeliveryStats, names: &[String], warnings: &mut Throttle) {
    match store.outstanding().await {
        Ok(counts) => {
            for name in names {
                stats.sink(name).outstanding.store(counts.get(name).copied().unwrap_or(0), Relaxed);
            }
        }
        Err(e) => {
            if let Some(suppressed) = warnings.allow() {
                warn!(error = %e, suppressed, "reading the outstanding delivery counts failed");
            }
        }
    }
}

/// Lets a repeated warning out once per period, counting those held back.
#[derive(Debug)]
struct Throttle {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(period: Duration) -> Self {
        Throttle { period, last: None, suppressed: 0 }
    }

    /// Some(number held back since the last one) when this one may be logged.
    fn allow(&mut self) -> Option<u64> {
        match self.last {
            Some(last) if last.elapsed() < self.period => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(Instant::now());
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Attempts of a store call that fails retryably, with short pauses.
const STORE_ATTEMPTS: u32 = 3;

/// The longest one outbox call may take before it is abandoned (each is
/// a read or an idempotent write, safe to repeat).
const STORE_TIMEOUT: Duration = Duration::from_secs(60);

async fn store_call<T, F, Fut>(op: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let policy = RetryPolicy { attempts: STORE_ATTEMPTS, base: Duration::from_millis(50), max_delay: Duration::from_secs(1), timeout: Some(STORE_TIMEOUT) };
    retry(&policy, &RetryCounters::default(), "alert outbox", op).await
}

/// `work`, given up `grace` after `shutdown` (None then).
async fn within_grace<T>(shutdown: &CancellationToken, grace: Duration, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        value = work => Some(value),
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => None,
    }
}

/// An alert whose transition `delivery` waits for a retry at `until`: its
/// later transitions wait behind it.
#[derive(Debug, Clone, Copy)]
struct Hold {
    delivery: i64,
    until: EpochMillis,
}

enum Round {
    /// Work was done and more may be due: go again.
    More,
    /// Nothing to do for this long (unless woken).
    Idle(Duration),
    /// Shutdown.
    Stop,
}

struct SinkWorker {
    store: Arc<dyn AlertStore>,
    sink: Arc<dyn AlertSink>,
    name: String,
    config: Arc<DeliveryConfig>,
    stats: Arc<SinkStats>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    /// By alert id.
    held: HashMap<String, Hold>,
    /// After a retryable failure: nothing is tried before then.
    paused_until: Option<EpochMillis>,
    /// Retryable failures since the sink last took a delivery: the pause
    /// grows with them whichever delivery probes the sink.
    streak: u32,
    /// Taken by the sink, but recording it failed: recorded first, never sent again.
    unrecorded: Vec<i64>,
    /// Held deliveries skipped last round: asked for on top of the batch, so
    /// a long held-back queue cannot hide the due deliveries behind it.
    extra: usize,
    store_warnings: Throttle,
}

impl SinkWorker {
    async fn run(mut self) {
        if !self.find_holds().await {
            return;
        }
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.round().await {
                Round::More => tokio::task::yield_now().await,
                Round::Idle(wait) => {
                    tokio::select! {
                        biased;
                        () = self.shutdown.cancelled() => break,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                Round::Stop => break,
            }
        }
        if !self.unrecorded.is_empty() {
            let ids = std::mem::take(&mut self.unrecorded);
            let recorded = tokio::time::timeout(self.config.shutdown_grace, store_call(|| self.store.delivered(&ids, now_ms()))).await;
            if !matches!(recorded, Ok(Ok(()))) {
                warn!(deliveries = ids.len(), "shutdown: deliveries the sink took could not be recorded; they are sent again on the next start");
            }
        }
    }

    /// Reads the outstanding deliveries and holds back the alerts whose
    /// oldest one waits for a retry. Retries until the store answers; false
    /// on shutdown first.
    async fn find_holds(&mut self) -> bool {
        loop {
            let now = now_ms();
            match store_call(|| self.store.due(&self.name, EpochMillis::MAX, self.config.scan_limit)).await {
                Ok(mut outstanding) => {
                    outstanding.sort_by_key(|d| d.id);
                    let mut seen = HashSet::new();
                    for d in outstanding {
                        if seen.insert(d.transition.alert_id.clone()) && d.next_attempt_at > now {
                            self.held.insert(d.transition.alert_id, Hold { delivery: d.id, until: d.next_attempt_at });
                        }
                    }
                    if !self.held.is_empty() {
                        info!(alerts = self.held.len(), "alerts whose oldest transition waits for a retry hold their later ones back");
                    }
                    return true;
                }
                Err(e) => {
                    self.warn_store("reading the outbox", &e);
                    tokio::select! {
                        () = self.shutdown.cancelled() => return false,
                        () = tokio::time::sleep(self.config.poll_interval.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
    }

    fn warn_store(&mut self, doing: &str, e: &PortError) {
        if let Some(suppressed) = self.store_warnings.allow() {
            warn!(error = %e, suppressed, "{doing} failed; trying again");
        }
    }

    async fn round(&mut self) -> Round {
        let now = now_ms();
        if !self.unrecorded.is_empty() {
            let ids = self.unrecorded.clone();
            match store_call(|| self.store.delivered(&ids, now)).await {
                Ok(()) => self.unrecorded.clear(),
                Err(e) => {
                    self.warn_store("recording deliveries", &e);
                    return Round::Idle(self.config.poll_interval);
                }
            }
        }
        if let Some(at) = self.paused_until {
            if now < at {
                return Round::Idle(until(now, at));
            }
            self.paused_until = None;
        }
        let batch = self.config.batch.max(1);
        let limit = batch.saturating_add(self.extra).min(self.config.scan_limit.max(batch));
        let mut due = match store_call(|| self.store.due(&self.name, now, limit)).await {
            Ok(due) => due,
            Err(e) => {
                self.warn_store("reading the outbox", &e);
                return Round::Idle(self.config.poll_interval);
            }
        };
        let complete = due.len() < limit;
        due.sort_by_key(|d| d.id);
        let mut skipped = 0;
        let mut worked = false;
        for delivery in &due {
            if self.shutdown.is_cancelled() {
                return Round::Stop;
            }
            if let Some(hold) = self.held.get(&delivery.transition.alert_id) {
                if delivery.id != hold.delivery || now < hold.until {
                    skipped += 1;
                    continue;
                }
            }
            worked = true;
            match within_grace(&self.shutdown, self.config.shutdown_grace, self.attempt(delivery)).await {
                None => {
                    warn!(dedup_key = %delivery.dedup_key(), "shutdown: gave up on the delivery in flight; it is sent again on the next start");
                    return Round::Stop;
                }
                Some(Ok(())) => self.delivered(delivery).await,
                Some(Err(e)) => {
                    if let Some(at) = self.failed(delivery, e).await {
                        return Round::Idle(until(now_ms(), at));
                    }
                }
            }
        }
        self.extra = skipped;
        if complete {
            // Every due delivery was seen: a hold whose delivery was due and
            // not among them was settled elsewhere.
            let ids: HashSet<i64> = due.iter().map(|d| d.id).collect();
            self.held.retain(|_, hold| hold.until > now || ids.contains(&hold.delivery));
        }
        if worked && !complete {
            Round::More
        } else {
            Round::Idle(self.config.poll_interval)
        }
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), PortError> {
        let limit = self.config.attempt_timeout;
        match tokio::time::timeout(limit, self.sink.deliver(delivery)).await {
            Ok(result) => result,
            Err(_) => Err(PortError::backend(self.name.clone(), format!("alert {}: no answer within {limit:?}", delivery.dedup_key()), true)),
        }
    }

    async fn delivered(&mut self, delivery: &Delivery) {
        self.stats.delivered.fetch_add(1, Relaxed);
        self.streak = 0;
        let alert = &delivery.transition.alert_id;
        if self.held.get(alert).is_some_and(|hold| hold.delivery == delivery.id) {
            self.held.remove(alert);
        }
        if delivery.attempts > 0 {
            info!(dedup_key = %delivery.dedup_key(), failed_attempts = delivery.attempts, "delivered after failed attempts");
        }
        let ids = [delivery.id];
        let recorded = within_grace(&self.shutdown, self.config.shutdown_grace, store_call(|| self.store.delivered(&ids, now_ms()))).await;
        match recorded {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                warn!(dedup_key = %delivery.dedup_key(), error = %e, "recording a delivery failed; it is recorded later, not sent again");
                self.unrecorded.push(delivery.id);
            }
            None => self.unrecorded.push(delivery.id),
        }
    }

    /// Records the failed attempt and holds the alert back; returns when the
    /// sink may be tried again if the error was retryable (the whole sink waits).
    async fn failed(&mut self, delivery: &Delivery, e: PortError) -> Option<EpochMillis> {
        let failures = delivery.attempts.saturating_add(1);
        let retryable = e.is_retryable();
        if retryable {
            self.streak = self.streak.saturating_add(1);
        }
        let delay = backoff(&self.config, failures.max(self.streak));
        let next = now_ms().saturating_add(as_millis(delay));
        self.stats.failed_attempts.fetch_add(1, Relaxed);
        let key = delivery.dedup_key();
        let retry_in_ms = as_millis(delay);
        let message = if retryable {
            warn!(dedup_key = %key, failed_attempts = failures, retry_in_ms, error = %e, "delivery failed; trying again later");
            e.to_string()
        } else {
            self.stats.rejected.fetch_add(1, Relaxed);
            error!(dedup_key = %key, failed_attempts = failures, retry_in_ms, error = %e, "the sink refused the delivery (permanent error); it is kept and tried again later");
            format!("permanent: {e}")
        };
        let recorded = within_grace(&self.shutdown, self.config.shutdown_grace, store_call(|| self.store.retry_later(delivery.id, next, &message))).await;
        if let Some(Err(e)) = recorded {
            warn!(dedup_key = %key, error = %e, "recording a failed attempt failed; it is held back in memory");
        }
        self.held.insert(delivery.transition.alert_id.clone(), Hold { delivery: delivery.id, until: next });
        if retryable {
            self.paused_until = Some(next);
            Some(next)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(base_ms: u64, max_ms: u64) -> DeliveryConfig {
        DeliveryConfig { backoff_base: Duration::from_millis(base_ms), backoff_max: Duration::from_millis(max_ms), ..DeliveryConfig::default() }
    }

    #[test]
    fn backoff_doubles_with_jitter_in_its_upper_half_up_to_the_cap() {
        let c = config(1000, 300_000);
        for failures in 1..=12u32 {
            let full = Duration::from_millis((1000u64 << (failures - 1)).min(300_000));
            for _ in 0..50 {
                let d = backoff(&c, failures);
                assert!(d >= full / 2 && d <= full, "{failures} failures: {d:?} not within {:?}..={full:?}", full / 2);
            }
        }
        assert!(backoff(&c, u32::MAX) <= Duration::from_secs(300), "no overflow far out");
        assert_eq!(backoff(&config(0, 0), 3), Duration::ZERO);
    }

    #[test]
    fn jitter_spreads_retries() {
        let c = config(1000, 300_000);
        let delays: HashSet<Duration> = (0..20).map(|_| backoff(&c, 4)).collect();
        assert!(delays.len() > 1, "twenty retries at the same moment: {delays:?}");
    }

    #[test]
    fn a_throttled_warning_counts_what_it_held_back() {
        let mut t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.allow(), Some(0));
        assert_eq!(t.allow(), None);
        assert_eq!(t.allow(), None);
        t.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(t.allow(), Some(2));
    }

    #[test]
    fn the_handle_forgets_stopped_workers() {
        let handle = DeliveryHandle::new();
        let kept = handle.register();
        drop(handle.register());
        handle.notify();
        assert_eq!(handle.wakers.lock().map(|w| w.len()).unwrap_or(0), 1);
        drop(kept);
        handle.notify();
        assert_eq!(handle.wakers.lock().map(|w| w.len()).unwrap_or(0), 0);
    }
}
