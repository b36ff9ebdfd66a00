//! Alerts, their transitions and the outbox in memory: [`MemoryAlertStore`],
//! for tests and for tools that need no persistence. It checks what every
//! store checks ([`AlertChange::check`], stale revisions, one unresolved
//! alert per dedup key) and writes a commit all or nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Alert, AlertChange, AlertCursor, AlertPage, AlertQuery, AlertStatus, AlertStore, Delivery, EventRef, Transition};
use crate::ports::PortError;
use crate::time::EpochMillis;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A commit validates before it writes anything, so a panic leaves whole data behind.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AlertChange {
    /// Whether the change is well formed, whatever is stored: at least one
    /// transition, all of this alert, with revisions following on from
    /// `base_revision` one by one up to `alert.revision`. A store refuses a
    /// change that is not with [`PortError::Invalid`].
    pub fn check(&self) -> Result<(), PortError> {
        let invalid = |message: String| PortError::Invalid { what: format!("alert {}", self.alert.id), message };
        if self.transitions.is_empty() {
            return Err(invalid("a change without a transition".into()));
        }
        let mut expected = self.base_revision.unwrap_or(0);
        for t in &self.transitions {
            expected += 1;
            if t.alert_id != self.alert.id {
                return Err(invalid(format!("a transition of alert {} in its change", t.alert_id)));
            }
            if t.revision != expected {
                return Err(invalid(format!("transition revision {} where {expected} follows", t.revision)));
            }
        }
        if expected != self.alert.revision {
            return Err(invalid(format!("the alert has revision {} but its last transition {expected}", self.alert.revision)));
        }
        Ok(())
    }
}

/// The error of a change made from a state that is no longer stored.
pub(crate) fn conflict(id: &str, message: String) -> PortError {
    PortError::backend(format!("alert {id}"), format!("{message}; read it again and redo the change"), true)
}

/// Alerts in memory. Deliveries get ids in the order they were queued.
#[derive(Default)]
pub struct MemoryAlertStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    alerts: HashMap<String, Alert>,
    transitions: HashMap<String, Vec<Transition>>,
    /// Dedup key → the id of its unresolved alert.
    unresolved: HashMap<String, String>,
    /// Deliveries not done yet, by id.
    outbox: BTreeMap<i64, Delivery>,
    last_delivery: i64,
}

impl MemoryAlertStore {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Inner {
    /// Checks the whole commit against what is stored and what its earlier
    /// changes write, before anything is written.
    fn check(&self, changes: &[AlertChange]) -> Result<(), PortError> {
        // Alert id → (revision, dedup key) as the earlier changes leave them.
        let mut staged: HashMap<&str, (u64, &str)> = HashMap::new();
        // Dedup key → its unresolved alert as the earlier changes leave it.
        let mut holders: HashMap<&str, Option<&str>> = HashMap::new();
        for change in changes {
            change.check()?;
            let alert = &change.alert;
            let id = alert.id.as_str();
            let stored = staged.get(id).copied().or_else(|| self.alerts.get(id).map(|a| (a.revision, a.dedup_key.as_str())));
            if stored.map(|(revision, _)| revision) != change.base_revision {
                let message = match (stored, change.base_revision) {
                    (Some((revision, _)), None) => format!("already stored (revision {revision}), the change opens it"),
                    (None, Some(base)) => format!("not stored, the change was made from revision {base}"),
                    (stored, base) => format!("stored at revision {stored:?}, the change was made from revision {base:?}"),
                };
                return Err(conflict(id, message));
            }
            if let Some((_, key)) = stored.filter(|(_, key)| *key != alert.dedup_key) {
                return Err(PortError::Invalid { what: format!("alert {id}"), message: format!("dedup key {} changed to {}", key, alert.dedup_key) });
            }
            let key = alert.dedup_key.as_str();
            let holder = holders.get(key).copied().unwrap_or_else(|| self.unresolved.get(key).map(String::as_str));
            if alert.status == AlertStatus::Resolved {
                if holder == Some(id) {
                    holders.insert(key, None);
                }
            } else {
                if let Some(other) = holder.filter(|other| *other != id) {
                    return Err(conflict(id, format!("alert {other} is already unresolved for dedup key {key}")));
                }
                holders.insert(key, Some(id));
            }
            staged.insert(id, (alert.revision, key));
        }
        Ok(())
    }

    fn write(&mut self, change: &AlertChange, sinks: &[String]) {
        let alert = &change.alert;
        for transition in &change.transitions {
            if transition.notify {
                for sink in sinks {
                    self.last_delivery += 1;
                    let delivery = Delivery {
                        id: self.last_delivery,
                        sink: sink.clone(),
                        alert: alert.clone(),
                        transition: transition.clone(),
                        attempts: 0,
                        next_attempt_at: transition.recorded_at,
                        last_error: None,
                    };
                    self.outbox.insert(delivery.id, delivery);
                }
            }
        }
        self.transitions.entry(alert.id.clone()).or_default().extend(change.transitions.iter().cloned());
        if alert.status == AlertStatus::Resolved {
            if self.unresolved.get(&alert.dedup_key) == Some(&alert.id) {
                self.unresolved.remove(&alert.dedup_key);
            }
        } else {
            self.unresolved.insert(alert.dedup_key.clone(), alert.id.clone());
        }
        self.alerts.insert(alert.id.clone(), alert.clone());
    }
}

/// When an unresolved alert with a quiet period goes quiet.
fn quiet_at(alert: &Alert) -> Option<EpochMillis> {
    alert.resolve_after_ms.filter(|_| alert.status != AlertStatus::Resolved).map(|after| alert.last_seen.saturating_add(after))
}

#[async_trait]
impl AlertStore for MemoryAlertStore {
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError> {
        let inner = lock(&self.inner);
        Ok(dedup_keys
            .iter()
            .filter_map(|key| inner.unresolved.get(key).and_then(|id| inner.alerts.get(id)).map(|alert| (key.clone(), alert.clone())))
            .collect())
    }

    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        inner.check(&changes)?;
        for change in changes.iter() {
            inner.write(change, sinks);
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        Ok(lock(&self.inner).alerts.get(id).cloned())
    }

    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        Ok(lock(&self.inner).transitions.get(id).cloned().unwrap_or_default())
    }

    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError> {
        if query.limit == 0 {
            return Ok(AlertPage::default());
        }
        let inner = lock(&self.inner);
        let mut found: Vec<&Alert> =
            inner.alerts.values().filter(|a| query.after.as_ref().is_none_or(|after| AlertCursor::of(a) < *after) && query.matches(a)).collect();
        found.sort_by(|a, b| (b.updated_at, &b.id).cmp(&(a.updated_at, &a.id)));
        found.truncate(query.limit);
        let next = if found.len() == query.limit { found.last().map(|a| AlertCursor::of(a)) } else { None };
        Ok(AlertPage { alerts: found.into_iter().cloned().collect(), next })
    }

    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError> {
        let inner = lock(&self.inner);
        let mut quiet: Vec<(EpochMillis, &Alert)> =
            inner.unresolved.values().filter_map(|id| inner.alerts.get(id)).filter_map(|a| quiet_at(a).filter(|at| *at < now).map(|at| (at, a))).collect();
        quiet.sort_by(|(at_a, a), (at_b, b)| (at_a, &a.id).cmp(&(at_b, &b.id)));
        Ok(quiet.into_iter().take(limit).map(|(_, a)| a.clone()).collect())
    }

    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        let wanted: HashSet<(&str, &str)> = events.iter().map(|e| (e.account_id.as_str(), e.event_id.as_str())).collect();
        let inner = lock(&self.inner);
        let mut found: Vec<Alert> = inner
            .unresolved
            .values()
            .filter_map(|id| inner.alerts.get(id))
            .filter(|a| a.origin_event.as_ref().is_some_and(|e| wanted.contains(&(e.account_id.as_str(), e.event_id.as_str()))))
            .cloned()
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(found)
    }

    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError> {
        let inner = lock(&self.inner);
        let mut due: Vec<&Delivery> = inner.outbox.values().filter(|d| d.sink == sink && d.next_attempt_at <= now).collect();
        due.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(due.into_iter().take(limit).cloned().collect())
    }

    async fn delivered(&self, ids: &[i64], _at: EpochMillis) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        for id in ids {
            inner.outbox.remove(id);
        }
        Ok(())
    }

    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError> {
        let mut inner = lock(&self.inner);
        let delivery = inner.outbox.get_mut(&id).ok_or_else(|| PortError::NotFound { what: format!("outstanding delivery {id}") })?;
        delivery.attempts = delivery.attempts.saturating_add(1);
        delivery.next_attempt_at = next_attempt_at;
        delivery.last_error = Some(error.to_owned());
        Ok(())
    }

    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError> {
        let mut counts = HashMap::new();
        for d in lock(&self.inner).outbox.values() {
            *counts.entry(d.sink.clone()).or_default() += 1;
        }
        Ok(counts)
    }
}
