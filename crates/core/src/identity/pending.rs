//! Events waiting for a session, and what becomes of them.
//!
//! An event whose chain reaches a session not known yet is stored with a
//! `pending` origin (or the derived fallback, by policy) and parked in the
//! [`PendingStore`] under the missing key. When sessions arrive, the events
//! waiting on their keys are resolved again: they become exact, or wait on a
//! key further back. Past the bound, measured in trail time (the newest
//! event time seen, so a backfill of last year behaves like live data), they
//! become final: the derived fallback when the record offers one, else
//! `unresolved` with the reason. Each change comes back as an
//! [`OriginUpdate`] for history.

use std::collections::HashMap;
use std::sync::Arc;

use super::{issued_key, Actor, Confidence, Missing, Origin, OriginKind, PendingItem, PendingStore, Resolution, Resolver, Session};
use crate::event::Event;
use crate::ports::{OriginUpdate, PortError};
use crate::time::EpochMillis;

/// How long an event may wait for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingConfig {
    /// In trail time: an event waits until events this much newer have been seen.
    pub bound_ms: EpochMillis,
}

impl Default for PendingConfig {
    fn default() -> Self {
        PendingConfig { bound_ms: 2 * 3_600_000 }
    }
}

/// What resolving a batch of events did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolveReport {
    pub exact: u64,
    pub derived: u64,
    pub unresolved: u64,
    /// Parked to wait for a session.
    pub waiting: u64,
}

/// The item that parks `event` until `missing` arrives.
pub fn pending_item(event: &Event, missing: &Missing) -> Option<PendingItem> {
    Some(PendingItem {
        account_id: event.account_id.clone(),
        event_id: event.event_id.clone(),
        event_time: event.event_time,
        actor: event.actor.clone()?,
        shared_event_id: event.shared_event_id.clone(),
        missing_key: missing.access_key_id.clone(),
        missing_at: missing.at,
    })
}

/// `2h`, `90m`, `45s`.
fn duration_text(ms: EpochMillis) -> String {
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1000),
    }
}

/// The final origin of a resolution once the bound has passed: a waiting
/// one becomes its derived fallback, or `unresolved`, with the reason
/// ("no session for ASIA… used at T arrived within 2h").
pub fn finalize(resolution: Resolution, bound_ms: EpochMillis) -> Origin {
    let (origin, missing, fallback) = match resolution {
        Resolution::Resolved(origin) => return origin,
        Resolution::Waiting { origin, missing, fallback } => (origin, missing, fallback),
    };
    let within = duration_text(bound_ms);
    let why = if missing.caller_copy {
        format!("{} did not arrive within {within}", missing.describe())
    } else {
        format!("no session for {} used at {} arrived within {within}", missing.access_key_id, crate::time::format_utc(missing.at))
    };
    match fallback {
        Some(mut f) => {
            f.reason = Some(format!("{why}; {}", f.reason.as_deref().unwrap_or("derived")));
            f
        }
        None => Origin {
            kind: OriginKind::Unresolved,
            confidence: Confidence::Unresolved,
            reason: Some(why),
            principal: None,
            account_id: None,
            provider: None,
            ..origin
        },
    }
}

/// The pending set: resolves events, parks the waiting ones, and settles
/// them when their sessions arrive or the bound passes.
pub struct PendingSet {
    resolver: Arc<Resolver>,
    store: Arc<dyn PendingStore>,
    config: PendingConfig,
}

impl PendingSet {
    pub fn new(resolver: Arc<Resolver>, store: Arc<dyn PendingStore>, config: PendingConfig) -> Self {
        PendingSet { resolver, store, config }
    }

    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    pub fn config(&self) -> PendingConfig {
        self.config
    }

    /// Resolves a batch of events in place (sets `origin`) and parks those
    /// that wait. Events that name no one keep `origin: None`.
    pub async fn resolve_events(&self, events: &mut [Event]) -> Result<ResolveReport, PortError> {
        let issued: Vec<Option<String>> = events.iter().map(issued_key).collect();
        let (positions, actors): (Vec<usize>, Vec<Actor<'_>>) =
            events.iter().zip(&issued).enumerate().filter_map(|(i, (e, key))| Some((i, Actor { issued_key: key.as_deref(), ..Actor::of_event(e)? }))).unzip();
        let resolutions = self.resolver.resolve_batch(&actors).await?;
        drop(actors);
        let mut report = ResolveReport::default();
        let mut park = Vec::new();
        for (i, resolution) in positions.into_iter().zip(resolutions) {
            let event = &mut events[i];
            if let Some(item) = resolution.missing().and_then(|m| pending_item(event, m)) {
                park.push(item);
                report.waiting += 1;
            } else {
                match resolution.origin().confidence {
                    Confidence::Exact => report.exact += 1,
                    Confidence::Derived => report.derived += 1,
                    Confidence::Pending | Confidence::Unresolved => report.unresolved += 1,
                }
            }
            event.origin = Some(resolution.into_origin());
        }
        if !park.is_empty() {
            self.store.add(park.into()).await?;
        }
        Ok(report)
    }

    /// Records sessions (see [`Resolver::record_sessions`]) and resolves the
    /// events that were waiting on them.
    pub async fn record_sessions(&self, sessions: Vec<Session>) -> Result<Vec<OriginUpdate>, PortError> {
        let keys = self.resolver.record_sessions(sessions).await?;
        self.sessions_arrived(&keys).await
    }

    /// Resolves again the events waiting on these keys. Those resolved, and
    /// those now waiting on a key further back, come back as updates; the
    /// latter are parked again.
    pub async fn sessions_arrived(&self, keys: &[String]) -> Result<Vec<OriginUpdate>, PortError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let items = self.store.take_waiting_on(keys).await?;
        self.settle(items, None).await
    }

    /// Settles the events that have waited past the bound: with trail time at
    /// the resolver's watermark, those older than the watermark minus the bound.
    pub async fn expire(&self) -> Result<Vec<OriginUpdate>, PortError> {
        match self.resolver.watermark() {
            Some(watermark) => self.expire_before(watermark - self.config.bound_ms).await,
            None => Ok(Vec::new()),
        }
    }

    /// Settles the events older than `before` (at the end of a backfill, for
    /// example, with `EpochMillis::MAX`).
    pub async fn expire_before(&self, before: EpochMillis) -> Result<Vec<OriginUpdate>, PortError> {
        let items = self.store.take_expired(before).await?;
        self.settle(items, Some(self.config.bound_ms)).await
    }

    /// How many events wait.
    pub async fn count(&self) -> Result<u64, PortError> {
        self.store.count().await
    }

    /// Resolves taken items again. With `final_after`, waiting ones are
    /// finalized; without, they are parked again. On an error the taken
    /// items are parked again, so none is lost.
    async fn settle(&self, items: Vec<PendingItem>, final_after: Option<EpochMillis>) -> Result<Vec<OriginUpdate>, PortError> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        // An `AWSAccount` actor waits only on the key its own event issued.
        let actors: Vec<Actor<'_>> = items
            .iter()
            .map(|i| Actor {
                caller: &i.actor,
                at: i.event_time,
                shared_event_id: i.shared_event_id.as_deref(),
                issued_key: (i.actor.identity_type == "AWSAccount").then_some(i.missing_key.as_str()),
            })
            .collect();
        let resolutions = match self.resolver.resolve_batch(&actors).await {
            Ok(r) => r,
            Err(e) => {
                drop(actors);
                self.store.add(items.into()).await?;
                return Err(e);
            }
        };
        drop(actors);
        let mut updates = Vec::with_capacity(items.len());
        let mut park: HashMap<(String, String), PendingItem> = HashMap::new();
        for (item, resolution) in items.into_iter().zip(resolutions) {
            let update =
                |origin: Origin| OriginUpdate { account_id: item.account_id.clone(), event_id: item.event_id.clone(), event_time: item.event_time, origin };
            match (resolution.missing().cloned(), final_after) {
                (Some(missing), None) => {
                    let moved = missing.access_key_id != item.missing_key || missing.at != item.missing_at;
                    if moved {
                        updates.push(update(resolution.into_origin()));
                    }
                    let again = PendingItem { missing_key: missing.access_key_id, missing_at: missing.at, ..item };
                    park.insert((again.account_id.clone(), again.event_id.clone()), again);
                }
                (_, Some(bound)) => updates.push(update(finalize(resolution, bound))),
                (None, None) => updates.push(update(resolution.into_origin())),
            }
        }
        if !park.is_empty() {
            self.store.add(park.into_values().collect::<Vec<_>>().into()).await?;
        }
        Ok(updates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Caller, ResolverConfig, SessionStore};
    use crate::memory::MemoryPendingStore;
    use async_trait::async_trait;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!((duration_text(7_200_000), duration_text(5_400_000), duration_text(45_000)), ("2h".into(), "90m".into(), "45s".into()));
    }

    #[test]
    fn a_resolved_origin_is_final_as_it_is() {
        let origin = super::super::origin::origin(OriginKind::Root, Some("arn:aws:iam::1:root".into()), None, None);
        assert_eq!(finalize(Resolution::Resolved(origin.clone()), 1), origin);
    }

    /// A session store that is down.
    struct Down;

    #[async_trait]
    impl SessionStore for Down {
        async fn put(&self, _: Arc<[Session]>) -> Result<(), PortError> {
            Err(PortError::backend("sessions", "unavailable", true))
        }
        async fn get(&self, _: &str, _: EpochMillis, _: EpochMillis) -> Result<Option<Session>, PortError> {
            Err(PortError::backend("sessions", "unavailable", true))
        }
    }

    #[tokio::test]
    async fn a_failure_while_settling_loses_no_waiting_event() {
        let parked = Arc::new(MemoryPendingStore::new());
        let set = PendingSet::new(Arc::new(Resolver::new(Arc::new(Down), None, ResolverConfig::default())), parked.clone(), PendingConfig::default());
        let item = PendingItem {
            account_id: "629384751068".into(),
            event_id: "e1".into(),
            event_time: 1_710_000_000_000,
            actor: Caller { identity_type: "AssumedRole".into(), access_key_id: Some("ASIAWAIT".into()), ..Caller::default() },
            shared_event_id: None,
            missing_key: "ASIAWAIT".into(),
            missing_at: 1_710_000_000_000,
        };
        parked.add(vec![item.clone()].into()).await.unwrap();
        let err = set.sessions_arrived(&["ASIAWAIT".into()]).await.unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(parked.take_waiting_on(&["ASIAWAIT".into()]).await.unwrap(), vec![item], "the taken event is parked again");
    }
}
