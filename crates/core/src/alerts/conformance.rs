//! The conformance suite every [`AlertStore`] must pass: each function takes
//! an empty store and panics with a message naming the broken behaviour.
//! Adapters call them from their tests (see `crate::conformance`).

use std::collections::HashMap;
use std::sync::Arc;

use super::{Alert, AlertChange, AlertQuery, AlertStatus, AlertStore, Detection, EventRef, Severity, Transition, TransitionKind};
use crate::conformance::sample_origin;
use crate::identity::{Confidence, Origin, OriginKind};
use crate::time::EpochMillis;

const T0: EpochMillis = 1_730_000_000_000;
const HOUR: i64 = 3_600_000;
const ACCOUNT: &str = "111111111111";

/// An event by id in `ACCOUNT`.
pub fn sample_event_ref(event_id: &str, event_time: EpochMillis) -> EventRef {
    EventRef { account_id: ACCOUNT.into(), event_id: event_id.into(), event_time }
}

/// A realistic open alert at revision 1, first and last seen at `seen`,
/// changed at `seen + 1000` (wall clock).
pub fn sample_alert(id: &str, dedup_key: &str, seen: EpochMillis) -> Alert {
    let event = sample_event_ref(&format!("ev-{id}"), seen);
    Alert {
        id: id.into(),
        dedup_key: dedup_key.into(),
        rule_id: "console-signin-without-mfa".into(),
        title: "Console sign-in without MFA".into(),
        severity: Severity::Medium,
        status: AlertStatus::Open,
        summary: format!("Console sign-in without MFA for alice in \"prod\" ({ACCOUNT}) from 198.51.100.7"),
        account_id: ACCOUNT.into(),
        account_alias: Some("prod".into()),
        origin: Some(sample_origin(Confidence::Exact)),
        origin_event: Some(event.clone()),
        group: vec![("recipientAccountId".into(), ACCOUNT.into()), ("userIdentity.arn".into(), format!("arn:aws:iam::{ACCOUNT}:user/alice"))],
        first_seen: seen,
        last_seen: seen,
        count: 1,
        samples: vec![event],
        resolve_after_ms: Some(24 * HOUR),
        notify_every_ms: HOUR,
        last_notified: seen,
        revision: 1,
        updated_at: seen + 1000,
    }
}

/// A detection of `rule` for the group `user` in `ACCOUNT`, with a 24 h quiet
/// period and a 1 h notify window.
pub fn sample_detection(rule: &str, user: &str, event_id: &str, event_time: EpochMillis) -> Detection {
    let arn = format!("arn:aws:iam::{ACCOUNT}:user/{user}");
    let origin = Origin {
        kind: OriginKind::IamUser,
        principal: Some(arn.clone()),
        account_id: Some(ACCOUNT.into()),
        provider: None,
        source_identity: None,
        chain: Vec::new(),
        confidence: Confidence::Exact,
        reason: None,
    };
    Detection {
        rule_id: rule.into(),
        title: "Console sign-in without MFA".into(),
        severity: Severity::Medium,
        dedup_key: format!("{rule}|{ACCOUNT}|{arn}"),
        group: vec![("recipientAccountId".into(), ACCOUNT.into()), ("userIdentity.arn".into(), arn)],
        event: sample_event_ref(event_id, event_time),
        account_alias: Some("prod".into()),
        summary: format!("Console sign-in without MFA for {user} in \"prod\" ({ACCOUNT})"),
        origin: Some(origin),
        resolve_after_ms: Some(24 * HOUR),
        notify_every_ms: HOUR,
    }
}

fn transition(alert: &Alert, kind: TransitionKind, notify: bool) -> Transition {
    Transition {
        alert_id: alert.id.clone(),
        revision: alert.revision,
        kind,
        at: alert.last_seen,
        recorded_at: alert.updated_at,
        cause: format!("{} in the conformance suite", kind.as_str()),
        by: (kind == TransitionKind::Acknowledged).then(|| "alice@example.com".to_owned()),
        notify,
    }
}

/// A new alert (revision 1) with its `Opened` transition.
fn opened(alert: &Alert) -> AlertChange {
    assert_eq!(alert.revision, 1, "a sample alert opens at revision 1");
    AlertChange { alert: alert.clone(), base_revision: None, transitions: vec![transition(alert, TransitionKind::Opened, true)] }
}

/// `stored` changed by one transition of `kind`, `edit` applied, at `wall` (wall clock).
fn next(stored: &Alert, kind: TransitionKind, notify: bool, wall: EpochMillis, edit: impl FnOnce(&mut Alert)) -> AlertChange {
    let mut alert = stored.clone();
    edit(&mut alert);
    alert.revision = stored.revision + 1;
    alert.updated_at = wall;
    match kind {
        TransitionKind::Acknowledged => alert.status = AlertStatus::Acknowledged,
        TransitionKind::Resolved => alert.status = AlertStatus::Resolved,
        TransitionKind::Opened | TransitionKind::Updated => {}
    }
    let t = transition(&alert, kind, notify);
    AlertChange { alert, base_revision: Some(stored.revision), transitions: vec![t] }
}

fn sinks(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

async fn commit(store: &dyn AlertStore, changes: Vec<AlertChange>, to: &[&str]) {
    store.commit(changes.into(), &sinks(to)).await.expect("commit");
}

/// Commits, reads, revisions: a write is all or nothing, a stale revision or
/// a second unresolved alert for a dedup key fails it (retryably), and
/// transitions come back in order.
pub async fn alert_commits(store: &dyn AlertStore) {
    let key = "console-signin-without-mfa|111111111111|alice".to_owned();
    let other_key = "console-signin-without-mfa|111111111111|bob".to_owned();
    assert!(store.current(std::slice::from_ref(&key)).await.expect("current").is_empty(), "no alert yet");
    assert_eq!(store.get("a-1").await.expect("get"), None);
    assert!(store.transitions("a-1").await.expect("transitions").is_empty());

    let a1 = sample_alert("a-1", &key, T0);
    let open = opened(&a1);
    commit(store, vec![open.clone()], &["stdout"]).await;
    assert_eq!(store.get("a-1").await.expect("get"), Some(a1.clone()), "an alert comes back as written, samples, group and origin included");
    let current = store.current(&[key.clone(), other_key.clone()]).await.expect("current");
    assert_eq!(current, HashMap::from([(key.clone(), a1.clone())]), "current finds the unresolved alert of each key that has one");
    assert_eq!(store.transitions("a-1").await.expect("transitions"), open.transitions);

    // A change with two transitions, then one more change on top of it in the same write.
    let mut two = next(&a1, TransitionKind::Updated, false, T0 + 5000, |a| {
        a.count = 3;
        a.last_seen = T0 + HOUR / 2;
        a.samples.push(sample_event_ref("ev-a-1-b", T0 + HOUR / 2));
    });
    let mut second = transition(&two.alert, TransitionKind::Updated, true);
    second.revision = 3;
    two.alert.revision = 3;
    two.transitions.push(second);
    let ack = next(&two.alert, TransitionKind::Acknowledged, true, T0 + 6000, |_| {});
    commit(store, vec![two.clone(), ack.clone()], &["stdout"]).await;
    let stored = store.get("a-1").await.expect("get").expect("stored");
    assert_eq!(stored, ack.alert, "changes of one alert chained in one write all apply, in order");
    let revisions: Vec<(u64, TransitionKind)> = store.transitions("a-1").await.expect("transitions").iter().map(|t| (t.revision, t.kind)).collect();
    assert_eq!(
        revisions,
        vec![(1, TransitionKind::Opened), (2, TransitionKind::Updated), (3, TransitionKind::Updated), (4, TransitionKind::Acknowledged)],
        "transitions come back oldest first"
    );
    assert_eq!(store.transitions("a-1").await.expect("transitions")[3], ack.transitions[0], "a transition comes back whole (by, cause, notify)");
    let outstanding_before = store.outstanding().await.expect("outstanding");

    // A stale revision fails the whole write: the new alert written with it is not stored.
    let b1 = sample_alert("b-1", &other_key, T0);
    let stale = next(&a1, TransitionKind::Resolved, true, T0 + 7000, |_| {});
    let err = store.commit(vec![opened(&b1), stale].into(), &sinks(&["stdout"])).await.expect_err("a change made from a stale revision is refused");
    assert!(err.is_retryable(), "a stale revision is retryable (read again and redo): {err}");
    assert_eq!(store.get("b-1").await.expect("get"), None, "nothing of a refused write is stored");
    assert_eq!(store.get("a-1").await.expect("get"), Some(ack.alert.clone()), "the alert a refused write would have changed is unchanged");
    assert_eq!(store.transitions("a-1").await.expect("transitions").len(), 4, "no transition of a refused write is stored");
    assert_eq!(store.outstanding().await.expect("outstanding"), outstanding_before, "no delivery of a refused write is queued");

    let err = store.commit(vec![opened(&a1)].into(), &[]).await.expect_err("opening an alert id that exists is refused");
    assert!(err.is_retryable(), "{err}");
    let ghost = next(&sample_alert("ghost", "ghost-key", T0), TransitionKind::Updated, false, T0, |_| {});
    assert!(store.commit(vec![ghost].into(), &[]).await.expect_err("changing an alert that is not stored is refused").is_retryable());

    // At most one unresolved alert per dedup key.
    let a2 = sample_alert("a-2", &key, T0 + 30 * HOUR);
    let err = store.commit(vec![opened(&a2)].into(), &[]).await.expect_err("a second unresolved alert for a dedup key is refused");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(store.get("a-2").await.expect("get"), None);
    let resolve = next(&ack.alert, TransitionKind::Resolved, true, T0 + 30 * HOUR, |_| {});
    commit(store, vec![resolve.clone(), opened(&a2)], &[]).await;
    assert_eq!(store.get("a-1").await.expect("get").map(|a| a.status), Some(AlertStatus::Resolved));
    assert_eq!(
        store.current(std::slice::from_ref(&key)).await.expect("current").get(&key).map(|a| a.id.as_str()),
        Some("a-2"),
        "resolving the old alert and opening a new one for its key in one write: the new one is current"
    );
    let resolve_again = next(&resolve.alert, TransitionKind::Updated, false, T0 + 31 * HOUR, |_| {});
    commit(store, vec![resolve_again], &[]).await;
    assert_eq!(store.current(std::slice::from_ref(&key)).await.expect("current")[&key].id, "a-2", "changing a resolved alert does not make it current again");

    // A malformed change is invalid, not a conflict.
    let mut gap = next(&a2, TransitionKind::Updated, false, T0 + 31 * HOUR, |_| {});
    gap.transitions[0].revision = 5;
    let err = store.commit(vec![gap].into(), &[]).await.expect_err("a transition revision that skips is refused");
    assert!(!err.is_retryable(), "a malformed change is not worth retrying: {err}");
    let mut foreign = next(&a2, TransitionKind::Updated, false, T0 + 31 * HOUR, |_| {});
    foreign.transitions[0].alert_id = "a-1".into();
    assert!(!store.commit(vec![foreign].into(), &[]).await.expect_err("a transition of another alert is refused").is_retryable());
    assert_eq!(store.get("a-2").await.expect("get"), Some(a2), "refused changes leave the alert as it was");
}

/// One alert for the listing: `n` orders ids, the rest varies the filters.
struct Listed {
    id: &'static str,
    status: AlertStatus,
    severity: Severity,
    rule: &'static str,
    account: &'static str,
    principal: Option<&'static str>,
    first_seen: EpochMillis,
    last_seen: EpochMillis,
    updated_at: EpochMillis,
    resolve_after: Option<i64>,
}

fn listed() -> Vec<Listed> {
    let l = |id, status, severity, rule, account, principal, first_seen, last_seen, updated_at, resolve_after| Listed {
        id,
        status,
        severity,
        rule,
        account,
        principal,
        first_seen,
        last_seen,
        updated_at,
        resolve_after,
    };
    use AlertStatus::{Acknowledged, Open, Resolved};
    use Severity::{Critical, High, Informational, Low, Medium};
    let alice = Some("arn:aws:iam::111111111111:user/alice");
    let bob = Some("arn:aws:iam::222222222222:user/bob");
    vec![
        l("l-01", Open, High, "root-login", "111111111111", alice, T0, T0 + HOUR, T0 + 10, Some(6 * HOUR)),
        l("l-02", Acknowledged, Critical, "root-login", "222222222222", bob, T0 + HOUR, T0 + 2 * HOUR, T0 + 20, Some(24 * HOUR)),
        l("l-03", Resolved, Medium, "mfa-off", "111111111111", alice, T0 + 2 * HOUR, T0 + 3 * HOUR, T0 + 20, Some(HOUR)),
        l("l-04", Open, Low, "mfa-off", "222222222222", None, T0 + 3 * HOUR, T0 + 10 * HOUR, T0 + 30, None),
        l("l-05", Open, Informational, "trail-stopped", "111111111111", bob, T0 + 4 * HOUR, T0 + 4 * HOUR, T0 + 20, Some(2 * HOUR)),
        l("l-06", Resolved, High, "trail-stopped", "333333333333", alice, T0 + 5 * HOUR, T0 + 6 * HOUR, T0 + 40, Some(HOUR)),
        l("l-07", Acknowledged, Medium, "root-login", "111111111111", alice, T0 + 6 * HOUR, T0 + 7 * HOUR, T0 + 5, Some(HOUR)),
    ]
}

fn ids(alerts: &[Alert]) -> Vec<&str> {
    alerts.iter().map(|a| a.id.as_str()).collect()
}

/// Listing (filters, newest change first, paging), quiet alerts and alerts
/// by origin event.
pub async fn alert_listing(store: &dyn AlertStore) {
    for l in listed() {
        let mut alert = sample_alert(l.id, &format!("{}|{}|{}", l.rule, l.account, l.id), l.first_seen);
        alert.severity = l.severity;
        alert.rule_id = l.rule.into();
        alert.account_id = l.account.into();
        alert.origin = l.principal.map(|p| Origin { principal: Some(p.into()), ..sample_origin(Confidence::Exact) });
        alert.last_seen = l.last_seen;
        alert.resolve_after_ms = l.resolve_after;
        alert.updated_at = l.updated_at;
        let mut changes = vec![opened(&alert)];
        if l.status != AlertStatus::Open {
            let kind = if l.status == AlertStatus::Resolved { TransitionKind::Resolved } else { TransitionKind::Acknowledged };
            changes.push(next(&alert, kind, true, l.updated_at, |_| {}));
        }
        commit(store, changes, &[]).await;
    }
    let list = |query: AlertQuery| async move { store.list(&AlertQuery { limit: 100, ..query }).await.expect("list").alerts };

    let all = list(AlertQuery::default()).await;
    assert_eq!(ids(&all), vec!["l-06", "l-04", "l-05", "l-03", "l-02", "l-01", "l-07"], "alerts are listed newest change first, ties by id, newest first");
    let stored = &all[3];
    assert_eq!((stored.status, stored.revision, stored.updated_at), (AlertStatus::Resolved, 2, T0 + 20), "the listing returns alerts whole");

    let mut paged = Vec::new();
    let mut query = AlertQuery { limit: 3, ..Default::default() };
    loop {
        let page = store.list(&query).await.expect("page");
        assert!(page.alerts.len() <= 3, "a page holds at most `limit` alerts");
        paged.extend(page.alerts);
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids(&paged), ids(&all), "paging visits every alert once, in listing order");

    let open = list(AlertQuery { status: Some(vec![AlertStatus::Open, AlertStatus::Acknowledged]), ..Default::default() }).await;
    assert_eq!(ids(&open), vec!["l-04", "l-05", "l-02", "l-01", "l-07"], "status filters by any of the statuses");
    let severe = list(AlertQuery { severity_at_least: Some(Severity::High), ..Default::default() }).await;
    assert_eq!(ids(&severe), vec!["l-06", "l-02", "l-01"], "severity_at_least keeps that severity and worse");
    let rule = list(AlertQuery { rule_id: Some("root-login".into()), ..Default::default() }).await;
    assert_eq!(ids(&rule), vec!["l-02", "l-01", "l-07"]);
    let account = list(AlertQuery { account_id: Some("222222222222".into()), ..Default::default() }).await;
    assert_eq!(ids(&account), vec!["l-04", "l-02"]);
    let principal = list(AlertQuery { origin_principal: alice_principal(), ..Default::default() }).await;
    assert_eq!(ids(&principal), vec!["l-06", "l-03", "l-01", "l-07"], "origin_principal filters by the origin's principal");
    let window = list(AlertQuery { since: Some(T0 + 3 * HOUR), until: Some(T0 + 5 * HOUR), ..Default::default() }).await;
    assert_eq!(ids(&window), vec!["l-04", "l-05", "l-03"], "since: last seen at or after; until: first seen before");
    let combined = list(AlertQuery {
        status: Some(vec![AlertStatus::Acknowledged]),
        rule_id: Some("root-login".into()),
        account_id: Some("111111111111".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&combined), vec!["l-07"], "filters combine");
    let mut query = AlertQuery { severity_at_least: Some(Severity::Medium), limit: 2, ..Default::default() };
    let first = store.list(&query).await.expect("page");
    assert_eq!((ids(&first.alerts), first.next.is_some()), (vec!["l-06", "l-03"], true));
    query.after = first.next;
    let rest = store.list(&query).await.expect("page");
    assert_eq!(ids(&rest.alerts), vec!["l-02", "l-01"], "a filtered listing pages on");
    query.after = rest.next;
    let last = store.list(&query).await.expect("page");
    assert_eq!((ids(&last.alerts), last.next), (vec!["l-07"], None), "a page that is not full is the last");

    // Quiet: unresolved, with a period, last seen more than the period before `now`.
    // Quiet at: l-01 T0+7h, l-02 T0+26h, l-05 T0+6h, l-07 T0+8h (l-04 never; l-03 and l-06 are resolved).
    assert!(store.quiet(T0 + 6 * HOUR, 10).await.expect("quiet").is_empty(), "exactly at the end of its period an alert is not quiet yet");
    let quiet = store.quiet(T0 + 8 * HOUR + 1, 10).await.expect("quiet");
    assert_eq!(ids(&quiet), vec!["l-05", "l-01", "l-07"], "quiet alerts come longest quiet first; resolved and never-resolving ones are not");
    assert_eq!(ids(&store.quiet(T0 + 8 * HOUR + 1, 2).await.expect("quiet")), vec!["l-05", "l-01"], "quiet takes at most `limit`");
    assert_eq!(store.quiet(T0 + 100 * HOUR, 10).await.expect("quiet").len(), 4);

    // By origin event: unresolved alerts only, by account and eventID.
    let by_origin = store
        .with_origin_events(&[
            sample_event_ref("ev-l-01", T0),
            sample_event_ref("ev-l-03", T0 + 2 * HOUR),
            sample_event_ref("ev-l-07", T0 + 6 * HOUR),
            EventRef { account_id: "999999999999".into(), ..sample_event_ref("ev-l-05", T0 + 4 * HOUR) },
            sample_event_ref("ev-unknown", T0),
        ])
        .await
        .expect("with origin events");
    let mut found = ids(&by_origin);
    found.sort_unstable();
    assert_eq!(found, vec!["l-01", "l-07"], "alerts by origin event: the event's account must match, resolved alerts are left out");
    assert!(store.with_origin_events(&[]).await.expect("with origin events").is_empty());
}

fn alice_principal() -> Option<String> {
    Some("arn:aws:iam::111111111111:user/alice".into())
}

/// The outbox: notifying transitions queued per sink with the alert as it
/// was, due by time, delivered once, retried with their error kept.
pub async fn alert_outbox(store: &dyn AlertStore) {
    let wall = T0 + 1000;
    assert!(store.outstanding().await.expect("outstanding").is_empty(), "nothing outstanding in an empty store");
    assert!(store.due("webhook", wall, 10).await.expect("due").is_empty());

    let a1 = sample_alert("o-1", "outbox-key", T0);
    commit(store, vec![opened(&a1)], &["stdout", "webhook"]).await;
    let quiet_update = next(&a1, TransitionKind::Updated, false, wall + 10, |a| a.count = 2);
    commit(store, vec![quiet_update.clone()], &["stdout", "webhook"]).await;
    let update = next(&quiet_update.alert, TransitionKind::Updated, true, wall + 20, |a| {
        a.count = 5;
        a.last_seen = T0 + 2 * HOUR;
    });
    commit(store, vec![update.clone()], &["stdout", "webhook"]).await;
    let b1 = sample_alert("o-2", "outbox-other-key", T0);
    commit(store, vec![opened(&b1)], &[]).await;
    assert_eq!(
        store.outstanding().await.expect("outstanding"),
        HashMap::from([("stdout".to_owned(), 2), ("webhook".to_owned(), 2)]),
        "each notifying transition is queued once per sink; stored-only ones and writes without sinks queue nothing"
    );

    assert!(store.due("webhook", wall - 1, 10).await.expect("due").is_empty(), "a delivery is due from when its transition was recorded");
    let due = store.due("webhook", wall + 20, 10).await.expect("due");
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.sink == "webhook" && d.attempts == 0 && d.last_error.is_none()));
    assert!(due[0].id < due[1].id, "deliveries are numbered in the order they were queued");
    assert_eq!((due[0].alert.clone(), due[0].transition.clone()), (a1.clone(), opened(&a1).transitions[0].clone()), "a delivery carries the alert as opened");
    assert_eq!(
        (due[1].alert.clone(), due[1].transition.clone()),
        (update.alert.clone(), update.transitions[0].clone()),
        "a delivery carries the alert as it was right after its transition"
    );
    assert_eq!((due[0].dedup_key(), due[1].dedup_key()), ("o-1:1".to_owned(), "o-1:3".to_owned()));
    assert_eq!(due[0].next_attempt_at, wall);
    assert_eq!(store.due("webhook", wall + 20, 1).await.expect("due"), due[..1].to_vec(), "due takes at most `limit`, oldest first");
    assert_eq!(revisions(&store.due("stdout", wall + 20, 10).await.expect("due")), vec![1, 3], "every sink gets its own deliveries");

    // A failed attempt: later, counted, its error kept.
    store.retry_later(due[0].id, wall + 60_000, "POST https://hooks.example.com/trailwatch: HTTP 503").await.expect("retry later");
    let now_due = store.due("webhook", wall + 30_000, 10).await.expect("due");
    assert_eq!(now_due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![due[1].id], "a delivery to retry is not due before its time");
    let later = store.due("webhook", wall + 60_000, 10).await.expect("due");
    assert_eq!(later.iter().map(|d| d.id).collect::<Vec<_>>(), vec![due[1].id, due[0].id], "due deliveries come by the time they are due");
    let retried = &later[1];
    assert_eq!(
        (retried.attempts, retried.next_attempt_at, retried.last_error.as_deref()),
        (1, wall + 60_000, Some("POST https://hooks.example.com/trailwatch: HTTP 503"))
    );
    assert_eq!((&retried.alert, &retried.transition), (&due[0].alert, &due[0].transition), "a retried delivery still carries its alert");
    store.retry_later(due[0].id, wall + 120_000, "connection refused").await.expect("retry later");
    let again = store.due("webhook", wall + 120_000, 10).await.expect("due");
    assert_eq!((again[1].attempts, again[1].last_error.as_deref()), (2, Some("connection refused")), "attempts add up; the last error is kept");

    // Delivered: never due again.
    store.delivered(&[due[1].id], wall + 130_000).await.expect("delivered");
    assert_eq!(store.due("webhook", i64::MAX, 10).await.expect("due").iter().map(|d| d.id).collect::<Vec<_>>(), vec![due[0].id]);
    store.delivered(&[due[1].id], wall + 140_000).await.expect("delivering twice is harmless");
    assert!(store.retry_later(due[1].id, wall + 200_000, "late failure").await.is_err(), "a delivered delivery is not retried");
    assert!(store.retry_later(987_654, wall, "unknown").await.is_err(), "an unknown delivery is an error");
    assert_eq!(store.outstanding().await.expect("outstanding"), HashMap::from([("stdout".to_owned(), 2), ("webhook".to_owned(), 1)]));
    let stdout: Vec<i64> = store.due("stdout", i64::MAX, 10).await.expect("due").iter().map(|d| d.id).collect();
    store.delivered(&[stdout[0], stdout[1], due[0].id], wall + 150_000).await.expect("delivered");
    assert!(store.outstanding().await.expect("outstanding").values().all(|n| *n == 0), "nothing outstanding once all is delivered");
    assert!(store.due("stdout", i64::MAX, 10).await.expect("due").is_empty());
    assert!(store.due("webhook", i64::MAX, 10).await.expect("due").is_empty());

    // The deliveries queued in one write with the change, for a change with several notifying transitions.
    let ack = next(&update.alert, TransitionKind::Acknowledged, true, wall + 200_000, |_| {});
    let resolve = next(&ack.alert, TransitionKind::Resolved, true, wall + 200_000, |_| {});
    commit(store, vec![ack.clone(), resolve.clone()], &["webhook"]).await;
    let due = store.due("webhook", wall + 200_000, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|d| (d.transition.kind, d.alert.status)).collect::<Vec<_>>(),
        vec![(TransitionKind::Acknowledged, AlertStatus::Acknowledged), (TransitionKind::Resolved, AlertStatus::Resolved)],
        "changes of one write are queued in order, each with its own alert"
    );
}

fn revisions(deliveries: &[super::Delivery]) -> Vec<u64> {
    deliveries.iter().map(|d| d.transition.revision).collect()
}

/// Runs every section, each on a fresh store from `new_store`.
pub async fn alert_store<F, Fut>(new_store: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Arc<dyn AlertStore>>,
{
    alert_commits(new_store().await.as_ref()).await;
    alert_listing(new_store().await.as_ref()).await;
    alert_outbox(new_store().await.as_ref()).await;
}
