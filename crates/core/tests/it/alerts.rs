//! Alerts: the store conformance suite against the in-memory store, and the
//! lifecycle as a user sees it (what opens, what is delivered, what resolves).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use trailwatch_core::alerts::conformance::{self, sample_detection};
use trailwatch_core::alerts::{
    Alert, AlertChange, AlertQuery, AlertStatus, AlertStore, Delivery, Detection, EventRef, Lifecycle, LifecycleConfig, LifecycleReport, MemoryAlertStore,
    Transition, TransitionKind,
};
use trailwatch_core::identity::{Confidence, Origin, OriginKind};
use trailwatch_core::ports::{OriginUpdate, PortError};

const T0: i64 = 1_730_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// Wall clock: long after the trail times of a backfill.
const WALL: i64 = 1_760_000_000_000;

#[tokio::test]
async fn memory_alert_store_conforms() {
    conformance::alert_store(|| async { Arc::new(MemoryAlertStore::new()) as Arc<dyn AlertStore> }).await;
}

fn setup() -> (Arc<MemoryAlertStore>, Lifecycle) {
    let store = Arc::new(MemoryAlertStore::new());
    let lifecycle = Lifecycle::new(store.clone(), vec!["webhook".into()], LifecycleConfig::default());
    (store, lifecycle)
}

fn alice(event_id: &str, at: i64) -> Detection {
    sample_detection("console-signin-without-mfa", "alice", event_id, at)
}

async fn current(store: &dyn AlertStore, key: &str) -> Option<Alert> {
    store.current(&[key.to_owned()]).await.unwrap().remove(key)
}

async fn all_alerts(store: &dyn AlertStore) -> Vec<Alert> {
    store.list(&AlertQuery { limit: 1000, ..Default::default() }).await.unwrap().alerts
}

async fn due(store: &dyn AlertStore) -> Vec<Delivery> {
    store.due("webhook", i64::MAX, 1000).await.unwrap()
}

fn kinds(transitions: &[Transition]) -> Vec<(TransitionKind, bool)> {
    transitions.iter().map(|t| (t.kind, t.notify)).collect()
}

/// Revisions go up one by one and the alert's is its last transition's.
async fn assert_revisions(store: &dyn AlertStore, alert: &Alert) {
    let transitions = store.transitions(&alert.id).await.unwrap();
    let revisions: Vec<u64> = transitions.iter().map(|t| t.revision).collect();
    assert_eq!(revisions, (1..=transitions.len() as u64).collect::<Vec<_>>(), "transitions of {} have increasing revisions", alert.id);
    assert_eq!(Some(alert.revision), revisions.last().copied(), "an alert's revision is its last transition's");
}

#[tokio::test]
async fn an_alert_opens_coalesces_updates_resolves_when_quiet_and_a_later_match_opens_another() {
    let (store, lifecycle) = setup();
    let key = alice("x", 0).dedup_key;

    let report = lifecycle.apply(&[alice("ev-1", T0)], WALL).await.unwrap();
    assert_eq!(report, LifecycleReport { opened: 1, updated: 0, resolved: 0, notifications: 1 });
    let first = current(store.as_ref(), &key).await.expect("an alert is open");
    assert_eq!((first.status, first.count, first.first_seen, first.last_seen), (AlertStatus::Open, 1, T0, T0));
    assert_eq!(first.origin_event.as_ref().map(|e| e.event_id.as_str()), Some("ev-1"));
    let opened = store.transitions(&first.id).await.unwrap();
    assert_eq!(opened[0].cause, "rule matched eventID ev-1 in 111111111111");
    assert_eq!((opened[0].at, opened[0].recorded_at), (T0, WALL), "a match happens in trail time and is recorded in wall time");

    // Within the 1 h window: stored, not delivered.
    for (i, minutes) in [10, 20, 50].into_iter().enumerate() {
        let report = lifecycle.apply(&[alice(&format!("ev-w{i}"), T0 + minutes * MINUTE)], WALL + 1000).await.unwrap();
        assert_eq!(report, LifecycleReport { opened: 0, updated: 1, resolved: 0, notifications: 0 });
    }
    assert_eq!(due(store.as_ref()).await.len(), 1, "updates inside the notify window are not delivered");
    // Past the window since the last delivered one: delivered.
    let report = lifecycle.apply(&[alice("ev-late", T0 + 70 * MINUTE)], WALL + 2000).await.unwrap();
    assert_eq!(report.notifications, 1);
    let deliveries = due(store.as_ref()).await;
    assert_eq!(deliveries.len(), 2);
    assert_eq!((deliveries[1].alert.count, deliveries[1].alert.last_notified), (5, T0 + 70 * MINUTE), "the update delivered carries the count so far");
    assert_eq!(deliveries[1].transition.cause, "rule matched eventID ev-late in 111111111111 (5 matches)");

    // Quiet in trail time: not at the end of the period, just after it.
    let last_seen = T0 + 70 * MINUTE;
    assert_eq!(lifecycle.sweep(last_seen + DAY, WALL + 3000).await.unwrap(), 0);
    assert_eq!(lifecycle.sweep(last_seen + DAY + 1, WALL + 3000).await.unwrap(), 1);
    assert_eq!(current(store.as_ref(), &key).await, None, "a resolved alert is not current");
    let resolved = store.get(&first.id).await.unwrap().unwrap();
    assert_eq!((resolved.status, resolved.count), (AlertStatus::Resolved, 5));
    let transitions = store.transitions(&first.id).await.unwrap();
    assert_eq!(
        kinds(&transitions),
        vec![
            (TransitionKind::Opened, true),
            (TransitionKind::Updated, false),
            (TransitionKind::Updated, false),
            (TransitionKind::Updated, false),
            (TransitionKind::Updated, true),
            (TransitionKind::Resolved, true)
        ]
    );
    let resolution = transitions.last().unwrap();
    assert_eq!((resolution.at, resolution.cause.as_str(), resolution.by.as_deref()), (last_seen + DAY, "no match for 24h", None));
    assert_revisions(store.as_ref(), &resolved).await;
    assert_eq!(lifecycle.sweep(last_seen + 2 * DAY, WALL + 4000).await.unwrap(), 0, "a resolved alert is resolved once");

    // A later match opens a new alert, with its own id.
    let report = lifecycle.apply(&[alice("ev-again", T0 + 3 * DAY)], WALL + 5000).await.unwrap();
    assert_eq!((report.opened, report.resolved), (1, 0));
    let second = current(store.as_ref(), &key).await.expect("a new alert");
    assert_ne!(second.id, first.id, "a key that opens again opens a new alert");
    assert_eq!((second.count, second.first_seen, second.revision), (1, T0 + 3 * DAY, 1));
    assert_eq!(store.get(&first.id).await.unwrap().unwrap().status, AlertStatus::Resolved, "the old alert stays resolved");
}

#[tokio::test]
async fn a_match_after_the_quiet_period_resolves_in_trail_time_within_one_batch() {
    let (store, lifecycle) = setup();
    let mut short = alice("ev-1", T0);
    short.resolve_after_ms = Some(6 * HOUR);
    let later = Detection { resolve_after_ms: Some(6 * HOUR), ..alice("ev-2", T0 + 7 * HOUR) };
    // Out of order in the batch: the lifecycle orders by event time.
    let report = lifecycle.apply(&[later, short], WALL).await.unwrap();
    assert_eq!(report, LifecycleReport { opened: 2, updated: 0, resolved: 1, notifications: 3 });
    let alerts = all_alerts(store.as_ref()).await;
    let old = alerts.iter().find(|a| a.status == AlertStatus::Resolved).expect("the first alert is resolved");
    let new = alerts.iter().find(|a| a.status == AlertStatus::Open).expect("a second alert is open");
    assert_eq!((old.first_seen, old.last_seen, new.first_seen), (T0, T0, T0 + 7 * HOUR));
    let resolution = store.transitions(&old.id).await.unwrap().pop().unwrap();
    assert_eq!((resolution.kind, resolution.at, resolution.cause.as_str()), (TransitionKind::Resolved, T0 + 6 * HOUR, "no match for 6h"));
    let deliveries = due(store.as_ref()).await;
    assert_eq!(
        deliveries.iter().map(|d| (d.alert.id.as_str(), d.transition.kind)).collect::<Vec<_>>(),
        vec![(old.id.as_str(), TransitionKind::Opened), (old.id.as_str(), TransitionKind::Resolved), (new.id.as_str(), TransitionKind::Opened)],
        "each transition is delivered with the alert as it was then"
    );
    assert_eq!(deliveries[0].alert.status, AlertStatus::Open);
}

#[tokio::test]
async fn a_person_acknowledges_then_resolves_and_cannot_act_on_a_resolved_alert() {
    let (store, lifecycle) = setup();
    lifecycle.apply(&[alice("ev-1", T0)], WALL).await.unwrap();
    let id = all_alerts(store.as_ref()).await[0].id.clone();

    let acked = lifecycle.acknowledge(&id, "alice@example.com", Some("looking into it"), WALL + 60_000).await.unwrap();
    assert_eq!((acked.status, acked.updated_at), (AlertStatus::Acknowledged, WALL + 60_000));
    let err = lifecycle.acknowledge(&id, "bob@example.com", None, WALL + 61_000).await.unwrap_err();
    assert!(matches!(err, PortError::Invalid { .. }), "acknowledging twice: {err:?}");
    // Still takes matches, and stays acknowledged.
    lifecycle.apply(&[alice("ev-2", T0 + 2 * HOUR)], WALL + 62_000).await.unwrap();
    let updated = store.get(&id).await.unwrap().unwrap();
    assert_eq!((updated.status, updated.count), (AlertStatus::Acknowledged, 2));

    let resolved = lifecycle.resolve(&id, "bob@example.com", None, WALL + 120_000).await.unwrap();
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(store.get(&id).await.unwrap(), Some(resolved.clone()), "what resolve returns is what is stored");
    let transitions = store.transitions(&id).await.unwrap();
    let people: Vec<(TransitionKind, i64, &str, Option<&str>)> =
        transitions.iter().filter(|t| t.by.is_some()).map(|t| (t.kind, t.at, t.cause.as_str(), t.by.as_deref())).collect();
    assert_eq!(
        people,
        vec![
            (TransitionKind::Acknowledged, WALL + 60_000, "looking into it", Some("alice@example.com")),
            (TransitionKind::Resolved, WALL + 120_000, "resolved by bob@example.com", Some("bob@example.com")),
        ],
        "what a person did is recorded with when (wall clock), why and who"
    );
    assert_revisions(store.as_ref(), &resolved).await;
    let delivered: Vec<TransitionKind> = due(store.as_ref()).await.iter().map(|d| d.transition.kind).collect();
    assert_eq!(delivered, vec![TransitionKind::Opened, TransitionKind::Acknowledged, TransitionKind::Updated, TransitionKind::Resolved]);

    for result in [
        lifecycle.acknowledge(&id, "carol@example.com", None, WALL + 130_000).await,
        lifecycle.resolve(&id, "carol@example.com", None, WALL + 130_000).await,
        lifecycle.acknowledge("no-such-alert", "carol@example.com", None, WALL).await,
        lifecycle.acknowledge(&id, "  ", None, WALL).await,
    ] {
        let err = result.expect_err("refused");
        assert!(matches!(err, PortError::Invalid { .. } | PortError::NotFound { .. }) && !err.is_retryable(), "{err:?}");
    }
    assert!(matches!(lifecycle.resolve("no-such-alert", "carol", None, WALL).await, Err(PortError::NotFound { .. })));
    assert_eq!(store.transitions(&id).await.unwrap().len(), transitions.len(), "refused actions record nothing");
}

fn exact_alice() -> Origin {
    Origin {
        kind: OriginKind::IamUser,
        principal: Some("arn:aws:iam::111111111111:user/alice".into()),
        account_id: Some("111111111111".into()),
        provider: None,
        source_identity: None,
        chain: Vec::new(),
        confidence: Confidence::Exact,
        reason: None,
    }
}

fn waiting() -> Origin {
    Origin {
        kind: OriginKind::Unresolved,
        principal: None,
        account_id: None,
        provider: None,
        source_identity: None,
        chain: Vec::new(),
        confidence: Confidence::Pending,
        reason: Some("waiting for the session of ASIAEXAMPLE".into()),
    }
}

#[tokio::test]
async fn an_origin_settled_later_updates_the_alert_and_is_delivered() {
    let (store, lifecycle) = setup();
    let pending = Detection { origin: Some(waiting()), ..alice("ev-1", T0) };
    lifecycle.apply(&[pending], WALL).await.unwrap();
    let alert = all_alerts(store.as_ref()).await.remove(0);
    assert_eq!(alert.origin.as_ref().map(|o| o.confidence), Some(Confidence::Pending));

    let update = |event_id: &str, origin: Origin| OriginUpdate { account_id: "111111111111".into(), event_id: event_id.into(), event_time: T0, origin };
    assert_eq!(lifecycle.origins_settled(&[update("ev-other", exact_alice())], WALL + 1000).await.unwrap(), 0, "other events change nothing");
    assert_eq!(lifecycle.origins_settled(&[update("ev-1", exact_alice())], WALL + 2000).await.unwrap(), 1);
    let settled = store.get(&alert.id).await.unwrap().unwrap();
    assert_eq!(settled.origin, Some(exact_alice()));
    let last = store.transitions(&alert.id).await.unwrap().pop().unwrap();
    assert_eq!(
        (last.kind, last.notify, last.cause.as_str()),
        (TransitionKind::Updated, true, "origin resolved: iam_user arn:aws:iam::111111111111:user/alice (exact)")
    );
    let deliveries = due(store.as_ref()).await;
    assert_eq!(deliveries.len(), 2, "the settled origin is delivered");
    assert_eq!(deliveries[1].alert.origin, Some(exact_alice()), "the delivery carries the new origin");
    assert_eq!(lifecycle.origins_settled(&[update("ev-1", exact_alice())], WALL + 3000).await.unwrap(), 0, "the same origin again changes nothing");
    assert_revisions(store.as_ref(), &settled).await;

    // A resolved alert keeps the origin it had.
    lifecycle.resolve(&alert.id, "alice@example.com", None, WALL + 4000).await.unwrap();
    let failed = Origin { confidence: Confidence::Unresolved, ..waiting() };
    assert_eq!(lifecycle.origins_settled(&[update("ev-1", failed)], WALL + 5000).await.unwrap(), 0);
}

#[tokio::test]
async fn a_later_match_with_a_better_origin_replaces_a_waiting_one() {
    let (store, lifecycle) = setup();
    let first = Detection { origin: Some(waiting()), summary: "sign-in by someone".into(), ..alice("ev-1", T0) };
    let second = alice("ev-2", T0 + MINUTE);
    let unknown = Detection { origin: None, ..alice("ev-3", T0 + 2 * MINUTE) };
    let derived = Origin { confidence: Confidence::Derived, principal: Some("alice".into()), ..exact_alice() };
    let also_settled = Detection { origin: Some(derived), ..alice("ev-4", T0 + 3 * MINUTE) };
    lifecycle.apply(&[first], WALL).await.unwrap();
    let report = lifecycle.apply(&[second.clone(), unknown, also_settled], WALL).await.unwrap();
    assert_eq!(report.notifications, 1, "learning who is behind the alert is delivered at once, inside the notify window");
    let alert = all_alerts(store.as_ref()).await.remove(0);
    let transitions = store.transitions(&alert.id).await.unwrap();
    let told: Vec<&Transition> = transitions.iter().filter(|t| t.notify).collect();
    assert_eq!(told.len(), 2, "opened, then the origin: {transitions:?}");
    assert!(told[1].cause.contains("origin resolved: iam_user"), "{}", told[1].cause);
    assert_eq!(alert.origin, second.origin, "a settled origin beats a waiting one; no origin, or another settled one, does not replace it");
    assert_eq!(alert.origin_event.as_ref().map(|e| e.event_id.as_str()), Some("ev-2"));
    assert_eq!(alert.summary, second.summary, "the summary follows the origin's event");
    let late = OriginUpdate { account_id: "111111111111".into(), event_id: "ev-1".into(), event_time: T0, origin: exact_alice() };
    assert_eq!(lifecycle.origins_settled(&[late], WALL).await.unwrap(), 0, "the first event is no longer the alert's origin event");
}

#[tokio::test]
async fn samples_keep_the_first_ten_and_the_latest_ten() {
    let (store, lifecycle) = setup();
    let detections: Vec<Detection> = (0..35).map(|i| alice(&format!("ev-{i:02}"), T0 + i * MINUTE)).collect();
    lifecycle.apply(&detections[..12], WALL).await.unwrap();
    lifecycle.apply(&detections[12..], WALL).await.unwrap();
    let alert = all_alerts(store.as_ref()).await.remove(0);
    assert_eq!(alert.count, 35);
    let samples: Vec<&str> = alert.samples.iter().map(|s| s.event_id.as_str()).collect();
    let expected: Vec<String> = (0..10).chain(25..35).map(|i| format!("ev-{i:02}")).collect();
    assert_eq!(samples, expected);
}

#[tokio::test]
async fn the_same_detections_again_are_not_counted_twice() {
    let (store, lifecycle) = setup();
    let batch = vec![alice("ev-1", T0), alice("ev-2", T0 + MINUTE)];
    lifecycle.apply(&batch, WALL).await.unwrap();
    let before = all_alerts(store.as_ref()).await;
    let report = lifecycle.apply(&batch, WALL + 1000).await.unwrap();
    assert_eq!(report, LifecycleReport::default(), "a batch read again changes nothing");
    assert_eq!(all_alerts(store.as_ref()).await, before);

    // The event that opened an alert a person resolved does not open another.
    lifecycle.resolve(&before[0].id, "alice@example.com", None, WALL + 2000).await.unwrap();
    let report = lifecycle.apply(&batch[..1], WALL + 3000).await.unwrap();
    assert_eq!(report.opened, 0);
    let report = lifecycle.apply(&[batch[0].clone(), alice("ev-3", T0 + 2 * MINUTE)], WALL + 4000).await.unwrap();
    assert_eq!(report.opened, 1, "a new match opens a new alert");
    let new = current(store.as_ref(), &batch[0].dedup_key).await.unwrap();
    assert_eq!((new.count, new.first_seen), (1, T0 + 2 * MINUTE));
}

#[tokio::test]
async fn rules_that_never_resolve_and_rules_that_deliver_every_update() {
    let (store, lifecycle) = setup();
    let forever = |id: &str, at: i64| Detection { resolve_after_ms: None, notify_every_ms: 0, ..alice(id, at) };
    lifecycle.apply(&[forever("ev-1", T0)], WALL).await.unwrap();
    assert_eq!(lifecycle.sweep(T0 + 365 * DAY, WALL).await.unwrap(), 0, "an alert without a quiet period is only resolved by a person");
    let report = lifecycle.apply(&[forever("ev-2", T0 + 30 * DAY), forever("ev-3", T0 + 30 * DAY + 1)], WALL).await.unwrap();
    assert_eq!(report, LifecycleReport { opened: 0, updated: 1, resolved: 0, notifications: 2 }, "a window of 0 delivers every update");
    assert_eq!(all_alerts(store.as_ref()).await.len(), 1);
}

/// Detections for three people over five days, in trail-time order.
fn five_days() -> Vec<Detection> {
    let mut out = Vec::new();
    // Alice: a burst every 20 minutes for 3 hours on day 0, then again on day 3.
    for day in [0, 3] {
        for i in 0..10 {
            out.push(alice(&format!("alice-{day}-{i}"), T0 + day * DAY + i * 20 * MINUTE));
        }
    }
    // Bob: every 5 hours for 4 days, never quiet for 24 h.
    for i in 0..20 {
        out.push(sample_detection("console-signin-without-mfa", "bob", &format!("bob-{i}"), T0 + 2 * HOUR + i * 5 * HOUR));
    }
    // Carol: a 6 h quiet period, matches 7 h apart.
    for i in 0..12 {
        let mut d = sample_detection("root-login", "carol", &format!("carol-{i}"), T0 + 3 * HOUR + i * 7 * HOUR);
        d.resolve_after_ms = Some(6 * HOUR);
        d.notify_every_ms = 0;
        out.push(d);
    }
    out.sort_by_key(|d| d.event.event_time);
    out
}

/// The alerts without what depends on when and in how many writes they were made.
async fn comparable(store: &dyn AlertStore) -> Vec<(Alert, Vec<(TransitionKind, i64, String)>)> {
    let mut out = Vec::new();
    for mut alert in all_alerts(store).await {
        let delivered: Vec<(TransitionKind, i64, String)> =
            store.transitions(&alert.id).await.unwrap().into_iter().filter(|t| t.notify).map(|t| (t.kind, t.at, t.cause)).collect();
        alert.revision = 0;
        alert.updated_at = 0;
        out.push((alert, delivered));
    }
    out.sort_by(|a, b| a.0.id.cmp(&b.0.id));
    out
}

#[tokio::test]
async fn a_backfill_raises_and_resolves_the_same_alerts_as_live_ingest() {
    let detections = five_days();
    let end = detections.last().unwrap().event.event_time + 2 * DAY;

    // Live: small batches as files arrive, a sweep after each at the newest event time.
    let (live_store, live) = setup();
    for (i, batch) in detections.chunks(3).enumerate() {
        live.apply(batch, WALL + i as i64 * 1000).await.unwrap();
        live.sweep(batch.last().unwrap().event.event_time, WALL + i as i64 * 1000 + 500).await.unwrap();
    }
    live.sweep(end, WALL + 999_999).await.unwrap();

    // Backfill: all of it in large batches, days later, one sweep at the end.
    let (backfill_store, backfill) = setup();
    for batch in detections.chunks(25) {
        backfill.apply(batch, WALL + 50 * DAY).await.unwrap();
    }
    backfill.sweep(end, WALL + 50 * DAY).await.unwrap();

    let live_alerts = comparable(live_store.as_ref()).await;
    let backfill_alerts = comparable(backfill_store.as_ref()).await;
    // Alice: 2 alerts; Bob: 1; Carol: every match 7 h apart with a 6 h period: 12.
    assert_eq!(live_alerts.len(), 15);
    assert!(live_alerts.iter().all(|(a, _)| a.status == AlertStatus::Resolved));
    assert_eq!(live_alerts, backfill_alerts, "the same alerts, counts, samples and delivered transitions");
    let bob = live_alerts.iter().find(|(a, _)| a.dedup_key.contains("bob")).unwrap();
    assert_eq!(bob.0.count, 20);
    let updates = bob.1.iter().filter(|(kind, _, _)| *kind == TransitionKind::Updated).count();
    assert_eq!(updates, 19, "matches 5 h apart with a 1 h window: each is delivered");
}

/// A store in which another writer acknowledges the alert being changed just
/// before the first `interfere` commits, or that fails every commit.
struct Contended {
    inner: MemoryAlertStore,
    interfere: AtomicU32,
    commits: AtomicU32,
    always_fail: Option<bool>,
}

impl Contended {
    fn new(interfere: u32, always_fail: Option<bool>) -> Self {
        Contended { inner: MemoryAlertStore::new(), interfere: AtomicU32::new(interfere), commits: AtomicU32::new(0), always_fail }
    }
}

#[async_trait]
impl AlertStore for Contended {
    async fn current(&self, dedup_keys: &[String]) -> Result<std::collections::HashMap<String, Alert>, PortError> {
        self.inner.current(dedup_keys).await
    }

    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        if let Some(retryable) = self.always_fail {
            return Err(PortError::backend("alerts", "the database is locked", retryable));
        }
        if self.interfere.load(Ordering::SeqCst) > 0 {
            self.interfere.fetch_sub(1, Ordering::SeqCst);
            if let Some(mut stored) = self.inner.get(&changes[0].alert.id).await? {
                let base = stored.revision;
                stored.revision += 1;
                stored.status = AlertStatus::Acknowledged;
                let t = Transition {
                    alert_id: stored.id.clone(),
                    revision: stored.revision,
                    kind: TransitionKind::Acknowledged,
                    at: WALL,
                    recorded_at: WALL,
                    cause: "seen".into(),
                    by: Some("dana@example.com".into()),
                    notify: true,
                };
                let ack = AlertChange { alert: stored, base_revision: Some(base), transitions: vec![t] };
                self.inner.commit(vec![ack].into(), sinks).await?;
            }
        }
        self.inner.commit(changes, sinks).await
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        self.inner.get(id).await
    }

    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        self.inner.transitions(id).await
    }

    async fn list(&self, query: &AlertQuery) -> Result<trailwatch_core::alerts::AlertPage, PortError> {
        self.inner.list(query).await
    }

    async fn quiet(&self, now: i64, limit: usize) -> Result<Vec<Alert>, PortError> {
        self.inner.quiet(now, limit).await
    }

    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        self.inner.with_origin_events(events).await
    }

    async fn due(&self, sink: &str, now: i64, limit: usize) -> Result<Vec<Delivery>, PortError> {
        self.inner.due(sink, now, limit).await
    }

    async fn delivered(&self, ids: &[i64], at: i64) -> Result<(), PortError> {
        self.inner.delivered(ids, at).await
    }

    async fn retry_later(&self, id: i64, next_attempt_at: i64, error: &str) -> Result<(), PortError> {
        self.inner.retry_later(id, next_attempt_at, error).await
    }

    async fn outstanding(&self) -> Result<std::collections::HashMap<String, u64>, PortError> {
        self.inner.outstanding().await
    }
}

#[tokio::test]
async fn a_write_that_meets_a_change_made_meanwhile_is_redone_on_the_new_state() {
    let store = Arc::new(Contended::new(0, None));
    let lifecycle = Lifecycle::new(store.clone(), vec!["webhook".into()], LifecycleConfig::default());
    lifecycle.apply(&[alice("ev-1", T0)], WALL).await.unwrap();
    let id = all_alerts(store.as_ref()).await[0].id.clone();

    store.interfere.store(2, Ordering::SeqCst);
    let report = lifecycle.apply(&[alice("ev-2", T0 + 2 * HOUR)], WALL + 1000).await.unwrap();
    assert_eq!(report.updated, 1);
    assert_eq!(store.commits.load(Ordering::SeqCst), 1 + 3, "two conflicts, then the write goes through");
    let alert = store.get(&id).await.unwrap().unwrap();
    assert_eq!((alert.status, alert.count), (AlertStatus::Acknowledged, 2), "the redone write keeps the other writer's change and adds its own");
    let transitions = store.transitions(&id).await.unwrap();
    assert_eq!(
        transitions.iter().map(|t| t.kind).collect::<Vec<_>>(),
        vec![TransitionKind::Opened, TransitionKind::Acknowledged, TransitionKind::Acknowledged, TransitionKind::Updated]
    );
    assert_revisions(store.as_ref(), &alert).await;

    // A store that stays busy: tried a bounded number of times, then the error is the caller's.
    for (retryable, tries) in [(true, 5), (false, 1)] {
        let failing = Arc::new(Contended::new(0, Some(retryable)));
        let lifecycle = Lifecycle::new(failing.clone(), vec![], LifecycleConfig::default());
        let err = lifecycle.apply(&[alice("ev-1", T0)], WALL).await.unwrap_err();
        assert_eq!(err.is_retryable(), retryable);
        assert_eq!(failing.commits.load(Ordering::SeqCst), tries, "retryable errors are tried {tries} times");
    }
}
