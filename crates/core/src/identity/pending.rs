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
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::warn;

use crate::interpose::Port;
use crate::retry::{Retrier, RetryPolicy};

use super::{issued_key, Actor, Confidence, Missing, Origin, OriginKind, PendingItem, PendingStore, Resolution, Resolver, Session};
use crate::event::Event;
use crate::ports::{OriginUpdate, PortError};
use crate::time::EpochMillis;

/// How long an event may wait for its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingConfig {
    /// In trail time: an event waits until events this much newer have been seen.
    pub bound_ms: EpochMillis,
    /// How each pending-store call is retried (no time limit: a take whose
    /// answer were abandoned would lose the events it took).
    pub retry: RetryPolicy,
}

impl Default for PendingConfig {
    fn default() -> Self {
        PendingConfig { bound_ms: 2 * 3_600_000, retry: RetryPolicy::default() }
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
    /// Waiting events the store refused to take back (it failed after they
    /// were taken from it): held here and offered again on the next call,
    /// so a store failure loses no waiting event while the process lives.
    unparked: Mutex<Vec<PendingItem>>,
}

/// Waiting events held in memory at most while the pending store fails;
/// past it the calls that park fail (and are retried), so memory stays bounded.
const MAX_UNPARKED: usize = 200_000;

impl PendingSet {
    pub fn new(resolver: Arc<Resolver>, store: Arc<dyn PendingStore>, config: PendingConfig) -> Self {
        let store = Port::wrap("pending", store, Retrier::new(RetryPolicy { timeout: None, ..config.retry }));
        PendingSet { resolver, store, config, unparked: Mutex::new(Vec::new()) }
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
        self.park(park).await?;
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
        self.flush().await;
        let items = self.store.take_waiting_on(keys).await?;
        self.settle(items, None).await
    }

    /// Settles the events that have waited past the bound: with trail time at
    /// the resolver's watermark, those older than the watermark minus the bound.
    pub async fn expire(&self) -> Result<Vec<OriginUpdate>, PortError> {
        let mut updates = self.ask_archive_again().await?;
        if let Some(watermark) = self.resolver.watermark() {
            updates.extend(self.expire_before(watermark - self.config.bound_ms).await?);
        }
        Ok(updates)
    }

    /// Resolves again the events waiting on keys the archive failed to
    /// answer for, once it may be asked again ([`Resolver::deferred`]).
    async fn ask_archive_again(&self) -> Result<Vec<OriginUpdate>, PortError> {
        let keys = self.resolver.take_deferred();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        match self.sessions_arrived(&keys).await {
            Ok(updates) => Ok(updates),
            Err(e) => {
                self.resolver.defer(keys);
                Err(e)
            }
        }
    }

    /// Settles the events older than `before` (at the end of a backfill, for
    /// example, with `EpochMillis::MAX`).
    pub async fn expire_before(&self, before: EpochMillis) -> Result<Vec<OriginUpdate>, PortError> {
        self.flush().await;
        let items = self.store.take_expired(before).await?;
        self.settle(items, Some(self.config.bound_ms)).await
    }

    /// How many events wait.
    pub async fn count(&self) -> Result<u64, PortError> {
        let held = self.lock_unparked().len() as u64;
        Ok(self.store.count().await? + held)
    }

    fn lock_unparked(&self) -> MutexGuard<'_, Vec<PendingItem>> {
        self.unparked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Parks waiting events, with any the store refused before. When the
    /// store fails they are held in memory (up to [`MAX_UNPARKED`], past
    /// which the error is returned; nothing is dropped).
    async fn park(&self, items: Vec<PendingItem>) -> Result<(), PortError> {
        let mut all = std::mem::take(&mut *self.lock_unparked());
        all.extend(items);
        if all.is_empty() {
            return Ok(());
        }
        let all: Arc<[PendingItem]> = all.into();
        match self.store.add(all.clone()).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut unparked = self.lock_unparked();
                unparked.extend(all.iter().cloned());
                warn!(error = %e, held = unparked.len(), first = %all[0].event_id, "parking waiting events failed; they are held until the pending store answers");
                if unparked.len() > MAX_UNPARKED {
                    Err(e)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Offers the held events to the store again (a failure keeps them held).
    async fn flush(&self) {
        if !self.lock_unparked().is_empty() {
            let _ = self.park(Vec::new()).await;
        }
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
        let (resolutions, deferred) = match self.resolver.resolve_batch_deferred(&actors).await {
            Ok(r) => r,
            Err(e) => {
                drop(actors);
                self.park(items).await?;
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
                // The archive could not be asked: not final yet, whatever the bound says.
                (Some(missing), Some(_)) if deferred.contains(&missing.access_key_id) => {
                    let again = PendingItem { missing_key: missing.access_key_id, missing_at: missing.at, ..item };
                    park.insert((again.account_id.clone(), again.event_id.clone()), again);
                }
                (_, Some(bound)) => updates.push(update(finalize(resolution, bound))),
                (None, None) => updates.push(update(resolution.into_origin())),
            }
        }
        self.park(park.into_values().collect()).await?;
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

    mod archive_faults {
        //! The session archive (Athena over the trail, in AWS mode) failing,
        //! permanently or not, or stalling: the events that need it wait,
        //! and resolve once it answers.

        use super::*;
        use crate::conformance::sample_event;
        use crate::faults::{FaultKind, FaultPlan, FaultRule, Faulty};
        use crate::identity::resolve::tests::session;
        use crate::identity::SessionArchive;
        use crate::memory::MemorySessionStore;
        use std::time::{Duration, Instant};

        const T0: EpochMillis = 1_760_000_000_000;
        const HOUR: EpochMillis = 3_600_000;

        /// Sessions only the archive knows (issued before the store's history began).
        struct Archive(MemorySessionStore);

        #[async_trait]
        impl SessionArchive for Archive {
            async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
                self.0.get(access_key_id, at, at).await
            }
        }

        fn used_by(key: &str, id: &str, at: EpochMillis) -> Event {
            let mut e = sample_event("508917263341", id, at);
            e.actor = Some(Caller {
                identity_type: "AssumedRole".into(),
                account_id: Some("508917263341".into()),
                access_key_id: Some(key.into()),
                ..Caller::default()
            });
            e
        }

        /// The archive fails (or stalls) with `kind` while events that need it
        /// arrive and pass their bound; then it answers.
        async fn archive_trouble_leaves_events_pending_until_it_answers(kind: FaultKind) {
            let archived = MemorySessionStore::new();
            archived.put(vec![session("ASIAOLD", T0 - HOUR)].into()).await.unwrap();
            let plan = FaultPlan::new(5, vec![FaultRule::always(kind).on("archive").hang_for(Duration::from_secs(30))]);
            let archive = Faulty::new("archive", Arc::new(Archive(archived)), plan.clone());
            let config = ResolverConfig { archive_timeout: Duration::from_millis(100), archive_retry: Duration::from_millis(200), ..ResolverConfig::default() };
            let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), Some(archive), config));
            let parked = Arc::new(MemoryPendingStore::new());
            let set = PendingSet::new(resolver.clone(), parked.clone(), PendingConfig::default());

            // ASIAOLD is in the archive; ASIANEVER was never issued.
            let started = Instant::now();
            let mut events = vec![used_by("ASIAOLD", "e-old", T0), used_by("ASIANEVER", "e-never", T0)];
            let report = set.resolve_events(&mut events).await.unwrap();
            assert!(started.elapsed() < Duration::from_secs(5), "{kind:?}: a stalled archive is given up on in time: {:?}", started.elapsed());
            assert_eq!(report.waiting, 2, "{kind:?}: both wait: {report:?}");
            for e in &events {
                let origin = e.origin.as_ref().unwrap();
                assert_eq!(origin.confidence, Confidence::Pending, "{kind:?}: {} is neither resolved nor given up: {origin:?}", e.event_id);
            }
            assert_eq!(set.count().await.unwrap(), 2);
            assert_eq!(resolver.stats().archive_failures, 1, "{kind:?}: one query failed, and the batch asked no more");

            // Trail time passes the bound while the archive is still down: nothing is made final.
            resolver.observe(T0 + 3 * HOUR);
            let updates = set.expire().await.unwrap();
            assert!(updates.is_empty(), "{kind:?}: resting archive, no event settled: {updates:?}");
            assert_eq!(set.count().await.unwrap(), 2, "{kind:?}: past the bound, still waiting on the archive");
            tokio::time::sleep(Duration::from_millis(250)).await;
            let updates = set.expire().await.unwrap();
            assert!(updates.is_empty(), "{kind:?}: asked again, still failing: {updates:?}");
            assert_eq!(set.count().await.unwrap(), 2);
            assert!(resolver.stats().archive_failures >= 2, "{kind:?}: {:?}", resolver.stats());
            assert!(plan.injected(kind) >= 2, "{kind:?}: {}", plan.report());

            // The archive answers: the event it knows resolves exactly, the other becomes final.
            plan.clear();
            tokio::time::sleep(Duration::from_millis(250)).await;
            let updates = set.expire().await.unwrap();
            let of = |id: &str| updates.iter().rev().find(|u| u.event_id == id).map(|u| u.origin.clone());
            let old = of("e-old").unwrap_or_else(|| panic!("{kind:?}: e-old settled: {updates:?}"));
            assert_eq!(
                (old.kind, old.confidence, old.principal.as_deref()),
                (OriginKind::IamUser, Confidence::Exact, Some("arn:aws:iam::508917263341:user/maria"))
            );
            assert_eq!(old.chain.len(), 1);
            let never = of("e-never").unwrap_or_else(|| panic!("{kind:?}: e-never settled: {updates:?}"));
            assert_eq!(never.confidence, Confidence::Unresolved, "{kind:?}: the archive knows no such session and the bound has passed");
            assert_eq!(set.count().await.unwrap(), 0);
            assert_eq!(resolver.stats().archive_deferred, 0);
        }

        #[tokio::test]
        async fn a_failing_archive_leaves_events_pending_until_it_answers() {
            archive_trouble_leaves_events_pending_until_it_answers(FaultKind::Retryable).await;
        }

        #[tokio::test]
        async fn an_archive_refusing_permanently_leaves_events_pending_until_it_answers() {
            archive_trouble_leaves_events_pending_until_it_answers(FaultKind::Permanent).await;
        }

        #[tokio::test]
        async fn a_stalled_archive_query_leaves_events_pending_until_it_answers() {
            archive_trouble_leaves_events_pending_until_it_answers(FaultKind::Hang).await;
        }

        #[tokio::test]
        async fn the_archive_recovering_before_the_bound_resolves_at_once() {
            let archived = MemorySessionStore::new();
            archived.put(vec![session("ASIAOLD", T0 - HOUR)].into()).await.unwrap();
            let plan = FaultPlan::new(9, vec![FaultRule::next(FaultKind::Retryable, 1).on("archive")]);
            let archive = Faulty::new("archive", Arc::new(Archive(archived)), plan.clone());
            let config = ResolverConfig { archive_retry: Duration::from_millis(50), ..ResolverConfig::default() };
            let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), Some(archive), config));
            let set = PendingSet::new(resolver.clone(), Arc::new(MemoryPendingStore::new()), PendingConfig::default());
            let mut events = vec![used_by("ASIAOLD", "e-old", T0)];
            assert_eq!(set.resolve_events(&mut events).await.unwrap().waiting, 1);
            tokio::time::sleep(Duration::from_millis(80)).await;
            let updates = set.expire().await.unwrap();
            assert_eq!(updates.len(), 1, "resolved long before the bound: {updates:?}");
            assert_eq!(updates[0].origin.confidence, Confidence::Exact);
            assert_eq!(set.count().await.unwrap(), 0);
        }

        #[tokio::test]
        async fn a_pending_store_refusing_waiting_events_back_loses_none() {
            // Retries off, to see what a store that keeps refusing does.
            let no_retry = crate::retry::RetryPolicy { attempts: 1, ..Default::default() };
            let plan = FaultPlan::quiet(2);
            let parked = Faulty::new("pending", Arc::new(MemoryPendingStore::new()), plan.clone());
            let set = PendingSet::new(
                Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default())),
                parked.clone(),
                PendingConfig { retry: no_retry, ..PendingConfig::default() },
            );
            let mut events = vec![used_by("ASIAWAIT", "e1", T0), used_by("ASIAWAIT", "e2", T0)];
            plan.add(FaultRule::next(FaultKind::Retryable, 2).on("pending").op("add"));
            let report = set.resolve_events(&mut events).await.unwrap();
            assert_eq!(report.waiting, 2);
            assert_eq!(parked.inner().count().await.unwrap(), 0, "the store refused them");
            assert_eq!(set.count().await.unwrap(), 2, "held, not lost");
            // The next call offers them again (refused once more), then the store takes them.
            set.expire().await.unwrap();
            assert_eq!(parked.inner().count().await.unwrap(), 0);
            set.expire().await.unwrap();
            assert_eq!(parked.inner().count().await.unwrap(), 2);
            assert_eq!(set.count().await.unwrap(), 2);
            assert_eq!(plan.injected(FaultKind::Retryable), 2);
        }
    }
}
