//! The alert lifecycle: detections in, alerts and transitions out.
//!
//! The idea: detections are grouped by dedup key and replayed one by one, in
//! event-time order, against the key's unresolved alert, as if each had
//! arrived alone. A match after the alert's quiet period resolves it (at
//! `last_seen + resolve_after`, in trail time) and opens a new one; otherwise
//! it updates the alert, and the update is delivered only when the rule's
//! notify window has passed since the last delivered one (in trail time
//! too). Updates in between are written as one stored-only transition. So
//! the alerts, and the notifications, do not depend on how detections were
//! cut into batches: a backfill raises what live ingest raised.
//!
//! Every transition is written as its own [`AlertChange`] (one commit holds
//! them all, chained by revision), so each delivery carries the alert as it
//! was right after its transition. A commit that meets a change made
//! meanwhile (another enricher, a person) fails as a whole; the lifecycle
//! reads again and redoes it, a bounded number of times.
//!
//! An alert's id is derived from its dedup key and the event that opened it:
//! live ingest and a replay of the same trail name their alerts alike, and a
//! key that opens again opens with another event, so another id. An event
//! that already opened an alert (a file read again after its alert was
//! resolved) does not open another.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::{Alert, AlertChange, AlertStatus, AlertStore, Detection, EventRef, Transition, TransitionKind};
use crate::identity::{Confidence, Origin};
use crate::interpose::Port;
use crate::ports::{OriginUpdate, PortError};
use crate::retry::{Retrier, RetryPolicy};
use crate::time::EpochMillis;

/// How the lifecycle keeps alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// Matching events kept per alert: the first half (rounded up), then the latest.
    pub max_samples: usize,
    /// Tries of a write that meets changes made meanwhile (at least 1).
    pub max_attempts: u32,
    /// Quiet alerts resolved per write by [`Lifecycle::sweep`] (at least 1).
    pub sweep_batch: usize,
    /// How each store call is retried after a retryable error (with no
    /// time limit: a commit is not abandoned half-way).
    pub retry: RetryPolicy,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { max_samples: 20, max_attempts: 5, sweep_batch: 500, retry: RetryPolicy::default() }
    }
}

/// What one [`Lifecycle::apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifecycleReport {
    /// Alerts opened.
    pub opened: u64,
    /// Alerts that were open before and took new matches.
    pub updated: u64,
    /// Alerts resolved because their quiet period passed before a new match.
    pub resolved: u64,
    /// Transitions queued for the sinks (each once per sink).
    pub notifications: u64,
}

/// Turns detections into alerts and keeps them (see the module's doc).
pub struct Lifecycle {
    store: Arc<dyn AlertStore>,
    sinks: Vec<String>,
    config: LifecycleConfig,
}

impl Lifecycle {
    /// A lifecycle writing to `store` and queueing notifications for each of `sinks`.
    pub fn new(store: Arc<dyn AlertStore>, sinks: Vec<String>, config: LifecycleConfig) -> Self {
        // One change of one alert costs several store calls: each is
        // retried, so one transient error does not fail them all. Not the
        // commit: a conflict is redone on the new state (`max_attempts`).
        let store = Port::wrap("alerts", store, Retrier::except(RetryPolicy { timeout: None, ..config.retry }, &["commit"]));
        Lifecycle { store, sinks, config }
    }

    /// Opens, updates and (when a match comes after a quiet period) resolves
    /// alerts for these detections, in one write.
    pub async fn apply(&self, detections: &[Detection], wall_now: EpochMillis) -> Result<LifecycleReport, PortError> {
        let mut groups: BTreeMap<&str, Vec<&Detection>> = BTreeMap::new();
        for d in detections {
            groups.entry(d.dedup_key.as_str()).or_default().push(d);
        }
        if groups.is_empty() {
            return Ok(LifecycleReport::default());
        }
        for group in groups.values_mut() {
            group.sort_by(|a, b| event_order(&a.event).cmp(&event_order(&b.event)));
        }
        let keys: Vec<String> = groups.keys().map(|k| (*k).to_owned()).collect();
        // Alert ids already taken: their opening events open nothing again.
        let mut taken = HashSet::new();
        let mut attempt = 1;
        loop {
            let current = self.store.current(&keys).await?;
            let plan = loop {
                let mut plan = Plan::default();
                for (key, group) in &groups {
                    let alert = current.get(*key).filter(|a| a.status != AlertStatus::Resolved).cloned();
                    self.plan_key(alert, group, &taken, wall_now, &mut plan);
                }
                let mut reused = false;
                for id in &plan.opened {
                    if self.store.get(id).await?.is_some() {
                        reused = taken.insert(id.clone()) || reused;
                    }
                }
                if !reused {
                    break plan;
                }
            };
            match self.commit(plan.changes).await {
                Ok(()) => return Ok(plan.report),
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Resolves the alerts that have been quiet past their period at
    /// `trail_now` (the newest event time seen). Returns how many.
    pub async fn sweep(&self, trail_now: EpochMillis, wall_now: EpochMillis) -> Result<u64, PortError> {
        let batch = self.config.sweep_batch.max(1);
        let mut resolved = 0;
        let mut attempt = 1;
        loop {
            let quiet = self.store.quiet(trail_now, batch).await?;
            let changes: Vec<AlertChange> = quiet
                .iter()
                .filter_map(|alert| {
                    let after = alert.resolve_after_ms?;
                    let at = alert.last_seen.saturating_add(after);
                    Some(single_change(alert.clone(), TransitionKind::Resolved, at, quiet_cause(after), None, wall_now))
                })
                .collect();
            if changes.is_empty() {
                return Ok(resolved);
            }
            let n = changes.len() as u64;
            match self.commit(changes).await {
                Ok(()) => {
                    resolved += n;
                    attempt = 1;
                    if quiet.len() < batch {
                        return Ok(resolved);
                    }
                }
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// Gives the alerts whose origin event was resolved late its new origin,
    /// and tells the sinks. Returns how many alerts changed.
    pub async fn origins_settled(&self, updates: &[OriginUpdate], wall_now: EpochMillis) -> Result<u64, PortError> {
        if updates.is_empty() {
            return Ok(0);
        }
        let events: Vec<EventRef> =
            updates.iter().map(|u| EventRef { account_id: u.account_id.clone(), event_id: u.event_id.clone(), event_time: u.event_time }).collect();
        let origins: HashMap<(&str, &str), &Origin> = updates.iter().map(|u| ((u.account_id.as_str(), u.event_id.as_str()), &u.origin)).collect();
        let mut attempt = 1;
        loop {
            let alerts = self.store.with_origin_events(&events).await?;
            let changes: Vec<AlertChange> = alerts
                .into_iter()
                .filter_map(|mut alert| {
                    let event = alert.origin_event.as_ref()?;
                    let origin = *origins.get(&(event.account_id.as_str(), event.event_id.as_str()))?;
                    if alert.origin.as_ref() == Some(origin) {
                        return None;
                    }
                    alert.origin = Some(origin.clone());
                    Some(single_change(alert, TransitionKind::Updated, wall_now, origin_cause(origin), None, wall_now))
                })
                .collect();
            if changes.is_empty() {
                return Ok(0);
            }
            let n = changes.len() as u64;
            match self.commit(changes).await {
                Ok(()) => return Ok(n),
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    /// A person has seen the alert: it stays unresolved and keeps taking matches.
    pub async fn acknowledge(&self, id: &str, by: &str, note: Option<&str>, wall_now: EpochMillis) -> Result<Alert, PortError> {
        self.by_person(id, TransitionKind::Acknowledged, by, note, wall_now).await
    }

    /// A person resolves the alert: a later match opens a new one.
    pub async fn resolve(&self, id: &str, by: &str, note: Option<&str>, wall_now: EpochMillis) -> Result<Alert, PortError> {
        self.by_person(id, TransitionKind::Resolved, by, note, wall_now).await
    }

    async fn by_person(&self, id: &str, kind: TransitionKind, by: &str, note: Option<&str>, wall_now: EpochMillis) -> Result<Alert, PortError> {
        let invalid = |message: String| PortError::Invalid { what: format!("alert {id}"), message };
        if by.trim().is_empty() {
            return Err(invalid(format!("{} needs the person who did it", kind.as_str())));
        }
        let cause = match note.map(str::trim).filter(|n| !n.is_empty()) {
            Some(note) => note.to_owned(),
            None => format!("{} by {by}", kind.as_str()),
        };
        let mut attempt = 1;
        loop {
            let alert = self.store.get(id).await?.ok_or_else(|| PortError::NotFound { what: format!("alert {id}") })?;
            match (alert.status, kind) {
                (AlertStatus::Resolved, _) => return Err(invalid("it is resolved already".into())),
                (AlertStatus::Acknowledged, TransitionKind::Acknowledged) => return Err(invalid("it is acknowledged already".into())),
                _ => {}
            }
            let change = single_change(alert, kind, wall_now, cause.clone(), Some(by), wall_now);
            let alert = change.alert.clone();
            match self.commit(vec![change]).await {
                Ok(()) => return Ok(alert),
                Err(e) if e.is_retryable() && attempt < self.config.max_attempts => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn commit(&self, changes: Vec<AlertChange>) -> Result<(), PortError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.store.commit(changes.into(), &self.sinks).await
    }

    /// The changes one dedup key's detections make to its unresolved alert
    /// (`alert`), detections in event-time order.
    fn plan_key(&self, alert: Option<Alert>, detections: &[&Detection], taken: &HashSet<String>, wall_now: EpochMillis, plan: &mut Plan) {
        let mut open = alert.map(|alert| Working { base: Some(alert.revision), alert, unsent: None, existed: true, took_matches: false });
        for d in detections {
            if let Some(w) = open.as_mut() {
                if w.alert.samples.iter().any(|s| same_event(s, &d.event)) {
                    continue; // an event counted already (its file read again)
                }
                if let Some(after) = w.alert.resolve_after_ms.filter(|after| d.event.event_time > w.alert.last_seen.saturating_add(*after)) {
                    let at = w.alert.last_seen.saturating_add(after);
                    w.flush(wall_now, plan);
                    w.push(TransitionKind::Resolved, at, quiet_cause(after), None, wall_now, plan);
                    plan.report.resolved += 1;
                    open = None;
                }
            }
            match open.as_mut() {
                Some(w) => w.take_match(d, self.config.max_samples, wall_now, plan),
                None => {
                    let id = alert_id(&d.dedup_key, &d.event);
                    if !taken.contains(&id) {
                        plan.opened.push(id.clone());
                        open = Some(Working::open(id, d, wall_now, plan));
                    }
                }
            }
        }
        if let Some(mut w) = open {
            w.flush(wall_now, plan);
        }
    }
}

/// What one apply writes, in order, and what that does.
#[derive(Default)]
struct Plan {
    changes: Vec<AlertChange>,
    report: LifecycleReport,
    /// Ids of the alerts it opens.
    opened: Vec<String>,
}

/// One alert while a plan changes it.
struct Working {
    alert: Alert,
    /// The revision stored, or written by the plan so far; None while new.
    base: Option<u64>,
    /// The cause of matches taken since the last transition, not delivered.
    unsent: Option<String>,
    /// Whether the alert was open before this plan.
    existed: bool,
    took_matches: bool,
}

impl Working {
    fn open(id: String, d: &Detection, wall_now: EpochMillis, plan: &mut Plan) -> Working {
        let alert = Alert {
            id,
            dedup_key: d.dedup_key.clone(),
            rule_id: d.rule_id.to_string(),
            title: d.title.to_string(),
            severity: d.severity,
            status: AlertStatus::Open,
            summary: d.summary.clone(),
            account_id: d.event.account_id.clone(),
            account_alias: d.account_alias.clone(),
            origin: d.origin.clone(),
            origin_event: Some(d.event.clone()),
            group: d.group.clone(),
            first_seen: d.event.event_time,
            last_seen: d.event.event_time,
            count: 1,
            samples: vec![d.event.clone()],
            resolve_after_ms: d.resolve_after_ms,
            notify_every_ms: d.notify_every_ms,
            last_notified: d.event.event_time,
            revision: 0,
            updated_at: wall_now,
        };
        let mut w = Working { alert, base: None, unsent: None, existed: false, took_matches: false };
        let cause = format!("rule matched eventID {} in {}", d.event.event_id, d.event.account_id);
        w.push(TransitionKind::Opened, d.event.event_time, cause, None, wall_now, plan);
        plan.report.opened += 1;
        w
    }

    fn take_match(&mut self, d: &Detection, max_samples: usize, wall_now: EpochMillis, plan: &mut Plan) {
        let a = &mut self.alert;
        a.count += 1;
        a.first_seen = a.first_seen.min(d.event.event_time);
        a.last_seen = a.last_seen.max(d.event.event_time);
        add_sample(&mut a.samples, &d.event, max_samples);
        // A match that names who is behind the alert when it was not known
        // yet is news for the receivers, whatever the notify window.
        let mut origin_news = None;
        if origin_rank(d.origin.as_ref()) > origin_rank(a.origin.as_ref()) {
            a.origin.clone_from(&d.origin);
            a.origin_event = Some(d.event.clone());
            a.summary.clone_from(&d.summary);
            if origin_rank(d.origin.as_ref()) == 2 {
                origin_news = d.origin.as_ref().map(origin_cause);
            }
        }
        // The rule as it is now (it may have been edited since the alert opened).
        a.title = d.title.to_string();
        a.severity = d.severity;
        a.resolve_after_ms = d.resolve_after_ms;
        a.notify_every_ms = d.notify_every_ms;
        if d.account_alias.is_some() {
            a.account_alias.clone_from(&d.account_alias);
        }
        if self.existed && !self.took_matches {
            plan.report.updated += 1;
        }
        self.took_matches = true;
        let mut cause = format!("rule matched eventID {} in {} ({} matches)", d.event.event_id, d.event.account_id, a.count);
        if let Some(news) = origin_news {
            cause = format!("{cause}; {news}");
            let at = d.event.event_time;
            self.push(TransitionKind::Updated, at, cause, None, wall_now, plan);
        } else if a.last_seen.saturating_sub(a.last_notified) >= a.notify_every_ms {
            a.last_notified = a.last_seen;
            let at = a.last_seen;
            self.push(TransitionKind::Updated, at, cause, None, wall_now, plan);
        } else {
            self.unsent = Some(cause);
        }
    }

    /// Writes matches taken since the last transition as a stored-only update.
    fn flush(&mut self, wall_now: EpochMillis, plan: &mut Plan) {
        if let Some(cause) = self.unsent.take() {
            let at = self.alert.last_seen;
            self.alert.revision += 1;
            let t = transition(&mut self.alert, TransitionKind::Updated, at, cause, None, false, wall_now);
            self.emit(t, plan);
        }
    }

    /// Adds a notifying transition.
    fn push(&mut self, kind: TransitionKind, at: EpochMillis, cause: String, by: Option<&str>, wall_now: EpochMillis, plan: &mut Plan) {
        self.unsent = None;
        self.alert.revision += 1;
        let t = transition(&mut self.alert, kind, at, cause, by, true, wall_now);
        self.emit(t, plan);
    }

    fn emit(&mut self, t: Transition, plan: &mut Plan) {
        if t.notify {
            plan.report.notifications += 1;
        }
        plan.changes.push(AlertChange { alert: self.alert.clone(), base_revision: self.base, transitions: vec![t] });
        self.base = Some(self.alert.revision);
    }
}

/// The transition that brings `alert` (its revision already counted) to
/// `kind`'s status.
fn transition(alert: &mut Alert, kind: TransitionKind, at: EpochMillis, cause: String, by: Option<&str>, notify: bool, wall_now: EpochMillis) -> Transition {
    match kind {
        TransitionKind::Acknowledged => alert.status = AlertStatus::Acknowledged,
        TransitionKind::Resolved => alert.status = AlertStatus::Resolved,
        TransitionKind::Opened | TransitionKind::Updated => {}
    }
    alert.updated_at = wall_now;
    Transition { alert_id: alert.id.clone(), revision: alert.revision, kind, at, recorded_at: wall_now, cause, by: by.map(str::to_owned), notify }
}

/// A stored alert changed by one notifying transition.
fn single_change(mut alert: Alert, kind: TransitionKind, at: EpochMillis, cause: String, by: Option<&str>, wall_now: EpochMillis) -> AlertChange {
    let base = alert.revision;
    alert.revision += 1;
    let t = transition(&mut alert, kind, at, cause, by, true, wall_now);
    AlertChange { alert, base_revision: Some(base), transitions: vec![t] }
}

fn event_order(e: &EventRef) -> (EpochMillis, &str, &str) {
    (e.event_time, e.account_id.as_str(), e.event_id.as_str())
}

fn same_event(a: &EventRef, b: &EventRef) -> bool {
    a.event_id == b.event_id && a.account_id == b.account_id
}

/// Keeps the first half of `max` (rounded up) and the latest after them.
fn add_sample(samples: &mut Vec<EventRef>, event: &EventRef, max: usize) {
    let first = max.div_ceil(2);
    samples.push(event.clone());
    while samples.len() > max {
        samples.remove(first.min(samples.len() - 1));
    }
}

/// Settled origins (exact, derived) are better than waiting or failed ones,
/// which are better than none.
fn origin_rank(origin: Option<&Origin>) -> u8 {
    match origin.map(|o| o.confidence) {
        Some(Confidence::Exact | Confidence::Derived) => 2,
        Some(Confidence::Pending | Confidence::Unresolved) => 1,
        None => 0,
    }
}

/// An alert's id: 128 bits of FNV-1a over its dedup key and the event that
/// opened it, as 32 hex digits.
pub fn alert_id(dedup_key: &str, opened_by: &EventRef) -> String {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for part in [dedup_key, opened_by.account_id.as_str(), opened_by.event_id.as_str()] {
        for byte in part.bytes().chain([0]) {
            hash = (hash ^ u128::from(byte)).wrapping_mul(PRIME);
        }
    }
    format!("{hash:032x}")
}

/// `24h`, `90m`, `7d`: the largest unit that divides the period, as rules
/// write them (days from two days on).
pub fn format_period(ms: i64) -> String {
    const DAY: i64 = 86_400_000;
    const UNITS: [(i64, &str); 4] = [(DAY, "d"), (3_600_000, "h"), (60_000, "m"), (1000, "s")];
    match UNITS.iter().find(|(unit, _)| ms != 0 && ms % unit == 0 && (*unit != DAY || ms >= 2 * DAY)) {
        Some((unit, name)) => format!("{}{name}", ms / unit),
        None => format!("{ms}ms"),
    }
}

fn quiet_cause(after: i64) -> String {
    format!("no match for {}", format_period(after))
}

fn origin_cause(origin: &Origin) -> String {
    if origin.confidence == Confidence::Unresolved {
        return format!("origin could not be resolved: {}", origin.reason.as_deref().unwrap_or("no reason given"));
    }
    match &origin.principal {
        Some(principal) => format!("origin resolved: {} {principal} ({})", origin.kind.as_str(), origin.confidence.as_str()),
        None => format!("origin resolved: {} ({})", origin.kind.as_str(), origin.confidence.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> EventRef {
        EventRef { account_id: "111111111111".into(), event_id: id.into(), event_time: 0 }
    }

    #[test]
    fn ids_are_stable_and_differ_by_key_and_opening_event() {
        let id = alert_id("rule|111111111111", &event("e1"));
        assert_eq!(id.len(), 32);
        assert_eq!(id, alert_id("rule|111111111111", &event("e1")), "the same opening gives the same id");
        assert_ne!(id, alert_id("rule|111111111111", &event("e2")), "a reopening has another id");
        assert_ne!(id, alert_id("rule|222222222222", &event("e1")), "another key has another id");
        // Parts are separated: moving a character between them changes the id.
        assert_ne!(alert_id("ab", &EventRef { account_id: "c".into(), ..event("d") }), alert_id("a", &EventRef { account_id: "bc".into(), ..event("d") }));
    }

    #[test]
    fn samples_keep_the_first_and_the_latest() {
        let mut samples = Vec::new();
        for i in 0..30 {
            add_sample(&mut samples, &event(&format!("e{i:02}")), 20);
        }
        let ids: Vec<&str> = samples.iter().map(|s| s.event_id.as_str()).collect();
        let expected: Vec<String> = (0..10).chain(20..30).map(|i| format!("e{i:02}")).collect();
        assert_eq!(ids, expected);
        let mut one = Vec::new();
        for i in 0..3 {
            add_sample(&mut one, &event(&format!("e{i}")), 1);
        }
        assert_eq!(one, vec![event("e0")], "a cap of one keeps the first");
    }

    #[test]
    fn periods_read_in_their_largest_unit() {
        assert_eq!(format_period(24 * 3_600_000), "24h");
        assert_eq!(format_period(7 * 24 * 3_600_000), "7d");
        assert_eq!(format_period(6 * 3_600_000), "6h");
        assert_eq!(format_period(36 * 3_600_000), "36h");
        assert_eq!(format_period(90 * 60_000), "90m");
        assert_eq!(format_period(1500), "1500ms");
    }
}
