//! The resolver: an event's actor to the origin behind it, hop by hop.
//!
//! From the actor, follow the access key: the session valid at the time of
//! use names who asked for it, and that caller is resolved at the session's
//! issue time, until a caller that needs no session behind it (an IAM user's
//! long-term key, root, a SAML or web-identity subject, an Identity Center
//! user, an AWS service) or a federation token's session. Every session
//! followed is a [`Hop`]. Lookups go: the batch's own memo, the
//! [`SessionCache`], the [`SessionStore`], then the optional
//! [`SessionArchive`].
//!
//! An archive search can cost a query (Athena over the trail), so with an
//! archive a batch is prefetched before it is walked: the keys its actors
//! follow that the memo, cache and store do not know go to the archive in one
//! [`SessionArchive::find_many`] call, then the keys of the callers of the
//! sessions found, one call per hop level. A chain costs at most `max_hops`
//! calls, usually one; the walk then finds every session in the memo.
//!
//! When a session is missing, the actor waits ([`Resolution::Waiting`]) on
//! that key. Whether the fallback the record offers (Identity Center naming,
//! an instance profile, `sourceIdentity`) is shown meanwhile is the
//! [`FallbackPolicy`]; it becomes final only once the pending bound has
//! passed (see [`super::PendingSet`]).
//!
//! An archive that fails or does not answer within
//! [`ResolverConfig::archive_timeout`] answers nothing: the keys it was asked
//! stay unknown (not cached as missing), the actors that need them wait on
//! them, and the keys are remembered as deferred ([`Resolver::deferred`]) so
//! they are asked again once [`ResolverConfig::archive_retry`] has passed. Until
//! then the archive is not asked at all, so a failing Athena costs one query
//! per retry interval, not one per batch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::interpose::Port;
use crate::retry::{Retrier, RetryPolicy};

use super::origin::{self, Step};
use super::{
    CacheConfig, CacheLookup, CacheStats, Caller, Confidence, Hop, IssueKind, Origin, OriginKind, Session, SessionArchive, SessionCache, SessionStore,
};
use crate::event::Event;
use crate::ports::PortError;
use crate::time::{format_utc, EpochMillis};

/// What to show while the exact answer may still arrive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FallbackPolicy {
    /// Wait: a `pending` origin until the session arrives; the derived
    /// fallback only once the pending bound has passed. The default: most
    /// sessions arrive within minutes, and then the answer is `exact`. (One
    /// exception: an IAM user acting with its own temporary key, a
    /// GetSessionToken or console session, is named at once as `derived`,
    /// since the missing session can only add the hop.)
    #[default]
    AfterBound,
    /// Show the derived fallback at once (the event still waits, and becomes
    /// `exact` if its session arrives within the bound).
    Immediate,
}

/// How the resolver walks and caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// Sessions followed at most before giving up on a chain.
    pub max_hops: usize,
    pub cache: CacheConfig,
    pub fallback: FallbackPolicy,
    /// Cross-account calls remembered by `sharedEventID`, to resolve the
    /// role owner's `AWSAccount` copy through the caller's copy; bytes they
    /// may take, about. Nothing else holds them: an evicted copy leaves the
    /// owner's copy of that call waiting until the pending bound.
    pub shared_capacity_bytes: u64,
    pub shared_ttl: Duration,
    /// The longest an archive search may take (an Athena query); past it the
    /// search counts as failed and the keys stay unknown.
    pub archive_timeout: Duration,
    /// After the archive failed, how long before it is asked again.
    pub archive_retry: Duration,
    /// How each session-store call is retried (reads, and idempotent
    /// writes: safe to abandon after the time limit).
    pub store_retry: RetryPolicy,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            max_hops: 32,
            cache: CacheConfig::default(),
            fallback: FallbackPolicy::default(),
            // Not only a cache: an owner's `AWSAccount` copy whose caller's copy
            // was evicted waits until the pending bound. Large enough to hold the
            // cross-account calls of hours of a big organization's trail.
            shared_capacity_bytes: 256 << 20,
            shared_ttl: Duration::from_secs(6 * 3600),
            archive_timeout: Duration::from_secs(300),
            archive_retry: Duration::from_secs(60),
            store_retry: RetryPolicy { timeout: Some(Duration::from_secs(120)), ..RetryPolicy::default() },
        }
    }
}

/// An event's actor, when it acted.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub caller: &'a Caller,
    pub at: EpochMillis,
    /// `sharedEventID` of the event, when it has one.
    pub shared_event_id: Option<&'a str>,
    /// The access key the event itself issued, for the role owner's
    /// `AWSAccount` copy of a cross-account AssumeRole: it waits on that key
    /// for the caller's copy (see [`issued_key`]).
    pub issued_key: Option<&'a str>,
}

impl<'a> Actor<'a> {
    pub fn new(caller: &'a Caller, at: EpochMillis) -> Self {
        Actor { caller, at, shared_event_id: None, issued_key: None }
    }

    /// The actor of an event; None when the record names no one (Insights).
    pub fn of_event(event: &'a Event) -> Option<Self> {
        Some(Actor { caller: event.actor.as_ref()?, at: event.event_time, shared_event_id: event.shared_event_id.as_deref(), issued_key: None })
    }
}

/// The key a role owner's copy of a cross-account AssumeRole issued, read
/// from the record: only for `AWSAccount` actors of STS calls, so rare.
pub fn issued_key(event: &Event) -> Option<String> {
    if event.identity_type() != Some("AWSAccount") || event.event_source != "sts.amazonaws.com" || event.shared_event_id.is_none() {
        return None;
    }
    let view = crate::view::RecordView::parse(event.raw.as_bytes()).ok()?;
    super::capture(&view, &event.account_id).map(|s| s.access_key_id)
}

/// The session a waiting actor needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub access_key_id: String,
    /// When the key was used (for a missing caller's copy: when it was issued).
    pub at: EpochMillis,
    /// The session is known, but only from the role owner's copy of a
    /// cross-account call: what is missing is the caller's copy.
    pub caller_copy: bool,
}

impl Missing {
    /// What is missing, for reasons: `the session of ASIA… used at T`.
    pub fn describe(&self) -> String {
        if self.caller_copy {
            format!("the caller's copy of the cross-account call that issued {} at {}", self.access_key_id, format_utc(self.at))
        } else {
            format!("the session of {} used at {}", self.access_key_id, format_utc(self.at))
        }
    }
}

/// The result of resolving one actor.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Known as well as it will be: `exact`, `derived`, or `unresolved` with a reason.
    Resolved(Origin),
    /// A session on the chain is missing. `origin` is what to show meanwhile
    /// (`pending`, or the derived fallback under [`FallbackPolicy::Immediate`]),
    /// with the hops resolved so far; `fallback` is the derived origin the
    /// record offers, used if the session never arrives.
    Waiting { origin: Origin, missing: Missing, fallback: Option<Origin> },
}

impl Resolution {
    pub fn origin(&self) -> &Origin {
        match self {
            Resolution::Resolved(o) | Resolution::Waiting { origin: o, .. } => o,
        }
    }

    pub fn into_origin(self) -> Origin {
        match self {
            Resolution::Resolved(o) | Resolution::Waiting { origin: o, .. } => o,
        }
    }

    pub fn missing(&self) -> Option<&Missing> {
        match self {
            Resolution::Resolved(_) => None,
            Resolution::Waiting { missing, .. } => Some(missing),
        }
    }
}

/// Counts since the resolver was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// Actors resolved (re-resolutions of waiting events included).
    pub actors: u64,
    /// Session lookups answered by an earlier lookup of the same batch.
    pub batch_reuses: u64,
    pub store_lookups: u64,
    /// Keys asked of the archive (every key of every call).
    pub archive_lookups: u64,
    /// Calls to the archive ([`SessionArchive::find_many`]): one per hop
    /// level of a batch's prefetch, and one per key the prefetch missed.
    pub archive_queries: u64,
    /// Sessions the archive found (and the store was given).
    pub archive_found: u64,
    /// Archive searches that failed or did not answer in time.
    pub archive_failures: u64,
    /// Keys waiting to be asked of the archive again.
    pub archive_deferred: u64,
    /// Callers' copies of cross-account calls taken from the session the
    /// caller's copy recorded, after the shared-copy cache had let them go.
    pub copies_from_store: u64,
    pub cache: CacheStats,
}

impl ResolverStats {
    /// Session-store lookups per 1,000 actors resolved.
    pub fn store_lookups_per_thousand(&self) -> f64 {
        if self.actors == 0 {
            return 0.0;
        }
        self.store_lookups as f64 * 1000.0 / self.actors as f64
    }
}

#[derive(Default)]
struct Counters {
    actors: AtomicU64,
    batch_reuses: AtomicU64,
    store_lookups: AtomicU64,
    archive_lookups: AtomicU64,
    archive_queries: AtomicU64,
    archive_found: AtomicU64,
    archive_failures: AtomicU64,
    copies_from_store: AtomicU64,
}

/// Keys held at most in [`Deferred`]; past it a key is asked again only when
/// its events reach the pending bound.
const MAX_DEFERRED: usize = 100_000;

/// The keys an archive failure left unanswered, and when the archive may be
/// asked again.
#[derive(Default)]
struct Deferred {
    keys: HashSet<String>,
    closed_until: Option<Instant>,
}

/// The other copy of a cross-account event: its caller, and when.
#[derive(Debug)]
struct SharedCopy {
    caller: Caller,
    at: EpochMillis,
}

/// Lookups already made in one batch.
#[derive(Default)]
struct Batch {
    found: HashMap<String, Vec<Arc<Session>>>,
    missing: HashSet<(String, EpochMillis)>,
    /// Keys the archive could not answer for in this batch.
    deferred: HashSet<String>,
}

impl Batch {
    /// The session of `key` valid at `at` among those found in this batch.
    fn found(&self, key: &str, at: EpochMillis) -> Option<&Arc<Session>> {
        self.found.get(key).and_then(|all| all.iter().filter(|s| s.valid_at(at)).max_by_key(|s| s.issued_at))
    }
}

/// What the batch memo, the cache and the store know of a key at a time.
enum Known {
    Found(Arc<Session>),
    /// Known to be missing (the memo or a cached "not found").
    Missing,
    /// Not in the store: the archive may know.
    Unknown,
}

/// The keys of one hop level of a prefetch, each once, at the earliest time
/// it is used; a key already asked at a lower level is not asked again.
#[derive(Default)]
struct Level {
    wanted: Vec<(String, EpochMillis)>,
    index: HashMap<String, usize>,
}

impl Level {
    fn add(&mut self, key: String, at: EpochMillis, asked: &HashSet<String>) {
        if asked.contains(&key) {
            return;
        }
        match self.index.get(&key) {
            Some(&i) => self.wanted[i].1 = self.wanted[i].1.min(at),
            None => {
                self.index.insert(key.clone(), self.wanted.len());
                self.wanted.push((key, at));
            }
        }
    }
}

/// Resolves actors to origins. Cheap to share (`Arc<Resolver>`); all state is
/// behind the cache, the stores and atomics.
pub struct Resolver {
    store: Arc<dyn SessionStore>,
    archive: Option<Arc<dyn SessionArchive>>,
    cache: SessionCache,
    shared: moka::future::Cache<String, Arc<SharedCopy>>,
    config: ResolverConfig,
    watermark: AtomicI64,
    counters: Counters,
    deferred: Mutex<Deferred>,
}

/// The caller being resolved: the actor's own, or one held by a session or shared copy.
enum Current<'a> {
    Actor(&'a Caller),
    Session(Arc<Session>),
    Copy(Arc<SharedCopy>),
}

impl Current<'_> {
    fn get(&self) -> &Caller {
        match self {
            Current::Actor(c) => c,
            Current::Session(s) => &s.caller,
            Current::Copy(c) => &c.caller,
        }
    }
}

/// What the walk has gathered so far.
#[derive(Default)]
struct Walk {
    /// Acting session first.
    hops: Vec<Hop>,
    source_identity: Option<String>,
    /// Set when resolved through the other copy of a cross-account event.
    via_copy: Option<String>,
}

impl Walk {
    fn finish(&self, mut origin: Origin) -> Origin {
        origin.chain = self.hops.iter().rev().cloned().collect();
        if origin.source_identity.is_none() {
            origin.source_identity.clone_from(&self.source_identity);
        }
        if let Some(via) = &self.via_copy {
            origin.confidence = match origin.confidence {
                Confidence::Exact => Confidence::Derived,
                other => other,
            };
            origin.reason = Some(match origin.reason.take() {
                Some(reason) => format!("{via}; {reason}"),
                None => via.clone(),
            });
        }
        origin
    }

    fn stop(&self, principal: Option<String>, reason: String) -> Resolution {
        let mut o = origin::origin(OriginKind::Unresolved, principal, None, None);
        o.confidence = Confidence::Unresolved;
        o.reason = Some(reason);
        Resolution::Resolved(self.finish(o))
    }
}

fn hop(session: &Session) -> Hop {
    Hop {
        event_id: session.event_id.clone(),
        account_id: session.account_id.clone(),
        role_arn: session.role_arn.clone(),
        session_name: session.session_name.clone(),
        access_key_id: session.access_key_id.clone(),
        kind: session.kind,
        time: session.issued_at,
    }
}

impl Resolver {
    pub fn new(store: Arc<dyn SessionStore>, archive: Option<Arc<dyn SessionArchive>>, config: ResolverConfig) -> Self {
        // A batch makes many store calls: each is retried, so one transient error does not fail the batch.
        let store = Port::wrap("sessions", store, Retrier::new(config.store_retry));
        let shared = moka::future::Cache::builder()
            .max_capacity(config.shared_capacity_bytes)
            .weigher(|id: &String, copy: &Arc<SharedCopy>| {
                u32::try_from(160 + id.len() + std::mem::size_of::<SharedCopy>() + copy.caller.approx_bytes()).unwrap_or(u32::MAX)
            })
            .time_to_live(config.shared_ttl)
            .build();
        Resolver {
            store,
            archive,
            cache: SessionCache::new(&config.cache),
            shared,
            config,
            watermark: AtomicI64::new(EpochMillis::MIN),
            counters: Counters::default(),
            deferred: Mutex::new(Deferred::default()),
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    pub fn cache(&self) -> &SessionCache {
        &self.cache
    }

    /// Advances trail time: the newest event time seen.
    pub fn observe(&self, event_time: EpochMillis) {
        self.watermark.fetch_max(event_time, Ordering::Relaxed);
    }

    /// The newest event time seen, if any. Retention in the store and the
    /// pending bound are judged against it, so old data behaves like live data.
    pub fn watermark(&self) -> Option<EpochMillis> {
        Some(self.watermark.load(Ordering::Relaxed)).filter(|w| *w != EpochMillis::MIN)
    }

    pub fn stats(&self) -> ResolverStats {
        let c = &self.counters;
        ResolverStats {
            actors: c.actors.load(Ordering::Relaxed),
            batch_reuses: c.batch_reuses.load(Ordering::Relaxed),
            store_lookups: c.store_lookups.load(Ordering::Relaxed),
            archive_lookups: c.archive_lookups.load(Ordering::Relaxed),
            archive_queries: c.archive_queries.load(Ordering::Relaxed),
            archive_found: c.archive_found.load(Ordering::Relaxed),
            archive_failures: c.archive_failures.load(Ordering::Relaxed),
            archive_deferred: self.lock_deferred().keys.len() as u64,
            copies_from_store: c.copies_from_store.load(Ordering::Relaxed),
            cache: self.cache.stats(),
        }
    }

    /// Stores new sessions and returns the access keys that arrived (each
    /// once), so events waiting on them can be resolved again. A key is
    /// returned again when the caller's copy of a cross-account call
    /// completes a session first seen from the role owner's copy.
    pub async fn record_sessions(&self, sessions: Vec<Session>) -> Result<Vec<String>, PortError> {
        if sessions.is_empty() {
            return Ok(Vec::new());
        }
        let sessions: Arc<[Session]> = sessions.into();
        self.store.put(sessions.clone()).await?;
        let mut keys = Vec::new();
        let mut seen = HashSet::new();
        for s in sessions.iter() {
            // A complete session is what the store now holds for its key (a
            // merge only fills fields the caller's copy already has): cached
            // at once, the key's first use costs no store read. A role
            // owner's copy may have been merged into more: forgotten instead.
            if s.caller_is_account_only() {
                self.cache.invalidate(&s.access_key_id).await;
            } else {
                self.cache.insert_found(Arc::new(s.clone())).await;
            }
            if let Some(shared) = s.shared_event_id.as_ref().filter(|_| !s.caller_is_account_only()) {
                self.shared.insert(shared.clone(), Arc::new(SharedCopy { caller: s.caller.clone(), at: s.issued_at })).await;
            }
            if seen.insert(s.access_key_id.as_str()) {
                keys.push(s.access_key_id.clone());
            }
        }
        Ok(keys)
    }

    pub async fn resolve(&self, actor: Actor<'_>) -> Result<Resolution, PortError> {
        let mut batch = Batch::default();
        self.remember_copies(std::slice::from_ref(&actor)).await;
        self.observe(actor.at);
        self.counters.actors.fetch_add(1, Ordering::Relaxed);
        self.walk(actor, &mut batch).await
    }

    /// Resolves a batch (typically one log file's events). Each access key
    /// and time is looked up at most once per batch, and a session found for
    /// a key answers every later use of that key inside its window.
    pub async fn resolve_batch(&self, actors: &[Actor<'_>]) -> Result<Vec<Resolution>, PortError> {
        Ok(self.resolve_batch_deferred(actors).await?.0)
    }

    /// [`Resolver::resolve_batch`], with the keys the archive could not
    /// answer for (failed, timed out, or not asked while it recovers): the
    /// actors waiting on one of them are waiting on the archive, not on a
    /// session known to be missing.
    pub async fn resolve_batch_deferred(&self, actors: &[Actor<'_>]) -> Result<(Vec<Resolution>, HashSet<String>), PortError> {
        self.remember_copies(actors).await;
        if let Some(newest) = actors.iter().map(|a| a.at).max() {
            self.observe(newest);
        }
        self.counters.actors.fetch_add(actors.len() as u64, Ordering::Relaxed);
        let mut batch = Batch::default();
        self.prefetch(actors, &mut batch).await?;
        let mut out = Vec::with_capacity(actors.len());
        for actor in actors {
            out.push(self.walk(*actor, &mut batch).await?);
        }
        Ok((out, batch.deferred))
    }

    fn lock_deferred(&self) -> std::sync::MutexGuard<'_, Deferred> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the keys an archive failure left unanswered, once the archive
    /// may be asked again (none before then): the events waiting on them are
    /// worth resolving again. A key the archive fails on again comes back.
    pub fn take_deferred(&self) -> Vec<String> {
        let mut deferred = self.lock_deferred();
        if deferred.closed_until.is_some_and(|until| Instant::now() < until) {
            return Vec::new();
        }
        deferred.keys.drain().collect()
    }

    /// Remembers keys to ask the archive again (after a failed retry).
    pub fn defer(&self, keys: Vec<String>) {
        let mut deferred = self.lock_deferred();
        let room = MAX_DEFERRED.saturating_sub(deferred.keys.len());
        deferred.keys.extend(keys.into_iter().take(room));
    }

    /// Whether the archive is being left alone after a failure.
    fn archive_resting(&self) -> bool {
        self.lock_deferred().closed_until.is_some_and(|until| Instant::now() < until)
    }

    /// Remembers, by `sharedEventID`, the callers of cross-account events,
    /// so the other account's `AWSAccount` copy resolves through them.
    async fn remember_copies(&self, actors: &[Actor<'_>]) {
        for actor in actors {
            if let Some(shared) = actor.shared_event_id.filter(|_| actor.caller.identity_type != "AWSAccount") {
                self.shared.insert(shared.to_owned(), Arc::new(SharedCopy { caller: actor.caller.clone(), at: actor.at })).await;
            }
        }
    }

    /// Before a batch is walked, asks the archive once per hop level for the
    /// keys the walk will follow that the memo, cache and store do not know:
    /// the actors' own keys (or those of the caller's copy an `AWSAccount`
    /// actor resolves through), then the keys of the callers of the sessions
    /// found at that level, and so on. Only with an archive: without one, the
    /// walk's own lookups cost no more than this would.
    async fn prefetch(&self, actors: &[Actor<'_>], batch: &mut Batch) -> Result<(), PortError> {
        if self.archive.is_none() {
            return Ok(());
        }
        let mut asked: HashSet<String> = HashSet::new();
        let mut level = Level::default();
        for actor in actors {
            let copy = match actor.shared_event_id {
                Some(shared) if actor.caller.identity_type == "AWSAccount" => self.shared.get(shared).await,
                _ => None,
            };
            let (caller, at) = copy.as_deref().map_or((actor.caller, actor.at), |c| (&c.caller, c.at));
            if let Step::Follow(key) = origin::step(caller, None) {
                level.add(key, at, &asked);
            }
        }
        for _ in 0..self.config.max_hops {
            if level.wanted.is_empty() {
                break;
            }
            let mut sessions = Vec::new();
            let mut unknown = Vec::new();
            for (key, at) in std::mem::take(&mut level).wanted {
                asked.insert(key.clone());
                match self.known(&key, at, batch).await? {
                    Known::Found(session) => sessions.push(session),
                    Known::Missing => {}
                    Known::Unknown => unknown.push((key, at)),
                }
            }
            sessions.extend(self.search_archive(&unknown, batch).await?);
            for session in sessions.iter().filter(|s| s.kind != IssueKind::GetFederationToken) {
                if let Step::Follow(key) = origin::step(&session.caller, Some(session)) {
                    level.add(key, session.issued_at, &asked);
                }
            }
        }
        Ok(())
    }

    /// The caller's copy of a cross-account event, for the other account's
    /// `AWSAccount` copy: from the shared-copy cache, else (for a role
    /// owner's copy of a call that issued a key) from the session the
    /// caller's copy recorded for that key, which outlives the cache.
    async fn caller_copy(&self, shared: &str, actor: Actor<'_>, batch: &mut Batch) -> Result<Option<Arc<SharedCopy>>, PortError> {
        if let Some(copy) = self.shared.get(shared).await {
            return Ok(Some(copy));
        }
        let Some(key) = actor.issued_key else { return Ok(None) };
        let Known::Found(session) = self.known(key, actor.at, batch).await? else { return Ok(None) };
        if session.caller_is_account_only() || session.shared_event_id.as_deref() != Some(shared) {
            return Ok(None);
        }
        self.counters.copies_from_store.fetch_add(1, Ordering::Relaxed);
        let copy = Arc::new(SharedCopy { caller: session.caller.clone(), at: session.issued_at });
        self.shared.insert(shared.to_owned(), copy.clone()).await;
        Ok(Some(copy))
    }

    async fn walk(&self, actor: Actor<'_>, batch: &mut Batch) -> Result<Resolution, PortError> {
        let mut walk = Walk { source_identity: actor.caller.source_identity.clone(), ..Walk::default() };
        let mut current = Current::Actor(actor.caller);
        let mut at = actor.at;
        let mut seen: HashSet<(String, EpochMillis)> = HashSet::new();
        loop {
            let issued = match &current {
                Current::Session(s) => Some(s.clone()),
                _ => None,
            };
            if let Some(s) = issued.as_deref().filter(|s| s.kind == IssueKind::GetFederationToken) {
                return Ok(Resolution::Resolved(walk.finish(origin::federated(s))));
            }
            let caller = current.get();
            match origin::step(caller, issued.as_deref()) {
                Step::Origin(o) => return Ok(Resolution::Resolved(walk.finish(o))),
                Step::Opaque { principal, reason } => return Ok(walk.stop(principal, reason)),
                Step::NoKey => {
                    return Ok(match origin::fallback(caller) {
                        Some(f) => Resolution::Resolved(walk.finish(f)),
                        None => walk.stop(caller.arn.clone(), "the record carries no access key to follow (a console session)".into()),
                    })
                }
                Step::AccountOnly => {
                    let Some(session) = issued else {
                        // The event's own actor: another account's copy of a cross-account event.
                        let copy = match (actor.shared_event_id, &walk.via_copy) {
                            (Some(shared), None) => self.caller_copy(shared, actor, batch).await?.map(|c| (shared, c)),
                            _ => None,
                        };
                        if let Some((shared, copy)) = copy {
                            walk.via_copy = Some(format!("resolved through the caller's copy of this cross-account event (sharedEventID {shared})"));
                            at = copy.at;
                            current = Current::Copy(copy);
                            continue;
                        }
                        let mut o = origin::account_only(caller);
                        o.reason = Some(match actor.shared_event_id {
                            Some(shared) => format!(
                                "a principal of account {} ({}); the caller's copy (sharedEventID {shared}) is not known",
                                opt(&caller.account_id),
                                opt(&caller.principal_id)
                            ),
                            None => {
                                format!("a principal of account {} ({}); the record names no other copy", opt(&caller.account_id), opt(&caller.principal_id))
                            }
                        });
                        // Shown at once; a role owner's copy still waits on the key it issued, for the caller's copy.
                        return Ok(match actor.issued_key.filter(|_| walk.via_copy.is_none()) {
                            Some(key) => {
                                let missing = Missing { access_key_id: key.to_owned(), at: actor.at, caller_copy: true };
                                self.waiting(&walk, missing, Some(o), true)
                            }
                            None => Resolution::Resolved(walk.finish(o)),
                        });
                    };
                    let missing = Missing { access_key_id: session.access_key_id.clone(), at: session.issued_at, caller_copy: true };
                    let mut fallback = origin::account_only(caller);
                    fallback.reason = Some(format!("known only as a principal of account {} ({})", opt(&caller.account_id), opt(&caller.principal_id)));
                    return Ok(self.waiting(&walk, missing, Some(fallback), false));
                }
                Step::Follow(key) => {
                    if walk.hops.len() >= self.config.max_hops {
                        return Ok(
                            walk.stop(None, format!("the chain is longer than {} hops; stopped at {key} used at {}", self.config.max_hops, format_utc(at)))
                        );
                    }
                    match self.lookup(&key, at, batch).await? {
                        Some(session) => {
                            if !seen.insert((key.clone(), session.issued_at)) {
                                return Ok(walk.stop(
                                    None,
                                    format!("the chain loops: the session of {key} issued at {} is reached twice", format_utc(session.issued_at)),
                                ));
                            }
                            walk.hops.push(hop(&session));
                            if walk.source_identity.is_none() {
                                walk.source_identity.clone_from(&session.source_identity);
                            }
                            at = session.issued_at;
                            current = Current::Session(session);
                        }
                        None => {
                            let missing = Missing { access_key_id: key, at, caller_copy: false };
                            let fallback = origin::fallback(caller);
                            // The IAM user of its own temporary key is certain without the
                            // session (only the hop is missing): shown at once whatever the policy.
                            let certain = fallback.as_ref().is_some_and(|f| f.kind == OriginKind::IamUser);
                            return Ok(self.waiting(&walk, missing, fallback, certain));
                        }
                    }
                }
            }
        }
    }

    /// A waiting resolution. The fallback is shown meanwhile under
    /// [`FallbackPolicy::Immediate`], or when `certain` (what is missing can
    /// add hops or upgrade the confidence, not change who).
    fn waiting(&self, walk: &Walk, missing: Missing, fallback: Option<Origin>, certain: bool) -> Resolution {
        let fallback = fallback.map(|f| walk.finish(f));
        let origin = match (&fallback, self.config.fallback) {
            (Some(f), policy) if certain || policy == FallbackPolicy::Immediate => {
                let mut shown = f.clone();
                shown.reason = Some(format!("{} is not known yet; {}", missing.describe(), f.reason.as_deref().unwrap_or("derived")));
                shown
            }
            _ => {
                let mut o = origin::origin(OriginKind::Unresolved, None, None, None);
                o.confidence = Confidence::Pending;
                o.reason = Some(format!("waiting for {}", missing.describe()));
                walk.finish(o)
            }
        };
        Resolution::Waiting { origin, missing, fallback }
    }

    /// The session of `key` valid at `at`: batch memo, cache, store, archive.
    async fn lookup(&self, key: &str, at: EpochMillis, batch: &mut Batch) -> Result<Option<Arc<Session>>, PortError> {
        Ok(match self.known(key, at, batch).await? {
            Known::Found(session) => Some(session),
            Known::Missing => None,
            Known::Unknown => self.search_archive(&[(key.to_owned(), at)], batch).await?.pop(),
        })
    }

    /// What the batch memo, the cache and the store know of `key` at `at`.
    /// A session found is remembered in the memo (and, from the store, in
    /// the cache); an unknown key is left for [`Resolver::search_archive`].
    /// One archive search, bounded in time. None when the archive is resting
    /// or fails: the keys are deferred, in the batch (so the walk treats
    /// them as missing for now) and in the resolver (to be asked again).
    async fn ask_archive(&self, archive: &dyn SessionArchive, wanted: &[(String, EpochMillis)], batch: &mut Batch) -> Option<Vec<Session>> {
        if batch.deferred.is_empty() && !self.archive_resting() {
            self.counters.archive_queries.fetch_add(1, Ordering::Relaxed);
            self.counters.archive_lookups.fetch_add(wanted.len() as u64, Ordering::Relaxed);
            let limit = self.config.archive_timeout;
            let answer = match tokio::time::timeout(limit, archive.find_many(wanted)).await {
                Ok(answer) => answer,
                Err(_) => Err(PortError::backend("session archive", format!("no answer within {} s", limit.as_secs_f64()), true)),
            };
            match answer {
                Ok(found) => {
                    self.counters.archive_found.fetch_add(found.len() as u64, Ordering::Relaxed);
                    let mut deferred = self.lock_deferred();
                    deferred.closed_until = None;
                    for (key, _) in wanted {
                        deferred.keys.remove(key);
                    }
                    return Some(found);
                }
                Err(e) => {
                    self.counters.archive_failures.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %e, keys = wanted.len(), first = %wanted[0].0, retry_in_s = self.config.archive_retry.as_secs_f64(), "the session archive did not answer; the events that need it wait");
                    self.lock_deferred().closed_until = Some(Instant::now() + self.config.archive_retry);
                }
            }
        }
        let mut deferred = self.lock_deferred();
        for (key, at) in wanted {
            batch.missing.insert((key.clone(), *at));
            batch.deferred.insert(key.clone());
            if deferred.keys.len() < MAX_DEFERRED {
                deferred.keys.insert(key.clone());
            }
        }
        None
    }

    async fn known(&self, key: &str, at: EpochMillis, batch: &mut Batch) -> Result<Known, PortError> {
        if let Some(found) = batch.found(key, at) {
            self.counters.batch_reuses.fetch_add(1, Ordering::Relaxed);
            return Ok(Known::Found(found.clone()));
        }
        let memo_key = (key.to_owned(), at);
        if batch.missing.contains(&memo_key) {
            self.counters.batch_reuses.fetch_add(1, Ordering::Relaxed);
            return Ok(Known::Missing);
        }
        let known = match self.cache.get(key, at).await {
            CacheLookup::Hit(session) => Known::Found(session),
            CacheLookup::NegativeHit => Known::Missing,
            CacheLookup::Miss => {
                self.counters.store_lookups.fetch_add(1, Ordering::Relaxed);
                let now = self.watermark.load(Ordering::Relaxed).max(at);
                match self.store.get(key, at, now).await? {
                    Some(session) => {
                        let session = Arc::new(session);
                        self.cache.insert_found(session.clone()).await;
                        Known::Found(session)
                    }
                    None => Known::Unknown,
                }
            }
        };
        match &known {
            Known::Found(session) => batch.found.entry(key.to_owned()).or_default().push(session.clone()),
            Known::Missing => {
                batch.missing.insert(memo_key);
            }
            Known::Unknown => {}
        }
        Ok(known)
    }

    /// Asks the archive, in one call, for keys the store does not know. What
    /// it finds is stored, cached and remembered in the memo; every pair it
    /// has no session for is cached and remembered as missing (all of them
    /// without an archive). Returns the session found for each pair that has
    /// one, in the order asked.
    async fn search_archive(&self, wanted: &[(String, EpochMillis)], batch: &mut Batch) -> Result<Vec<Arc<Session>>, PortError> {
        let found: Vec<Arc<Session>> = match &self.archive {
            Some(archive) if !wanted.is_empty() => {
                let Some(found) = self.ask_archive(archive.as_ref(), wanted, batch).await else {
                    return Ok(Vec::new());
                };
                if !found.is_empty() {
                    self.store.put(found.clone().into()).await?;
                }
                found.into_iter().map(Arc::new).collect()
            }
            _ => Vec::new(),
        };
        let mut answers = Vec::new();
        for (key, at) in wanted {
            match found.iter().filter(|s| s.access_key_id == *key && s.valid_at(*at)).max_by_key(|s| s.issued_at) {
                Some(session) => {
                    self.cache.insert_found(session.clone()).await;
                    let memo = batch.found.entry(key.clone()).or_default();
                    if !memo.iter().any(|m| m.same_issue(session)) {
                        memo.push(session.clone());
                    }
                    answers.push(session.clone());
                }
                None => {
                    self.cache.insert_missing(key, *at).await;
                    batch.missing.insert((key.clone(), *at));
                }
            }
        }
        Ok(answers)
    }
}

fn opt(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or("unknown")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::memory::MemorySessionStore;
    use async_trait::async_trait;

    const T0: EpochMillis = 1_710_000_000_000;

    pub(crate) fn user() -> Caller {
        Caller {
            identity_type: "IAMUser".into(),
            arn: Some("arn:aws:iam::508917263341:user/maria".into()),
            account_id: Some("508917263341".into()),
            access_key_id: Some("AKIAMARIA".into()),
            ..Caller::default()
        }
    }

    fn role_user(key: &str) -> Caller {
        Caller { identity_type: "AssumedRole".into(), account_id: Some("508917263341".into()), access_key_id: Some(key.into()), ..Caller::default() }
    }

    pub(crate) fn session(key: &str, issued_at: EpochMillis) -> Session {
        Session {
            access_key_id: key.into(),
            issued_at,
            expires_at: issued_at + 3_600_000,
            kind: IssueKind::AssumeRole,
            account_id: "508917263341".into(),
            role_arn: Some("arn:aws:iam::508917263341:role/Billing".into()),
            session_name: Some("maria".into()),
            assumed_arn: None,
            source_identity: None,
            event_id: format!("issue-{key}"),
            event_account: "508917263341".into(),
            shared_event_id: None,
            caller: user(),
        }
    }

    struct Archive(Session);

    #[async_trait]
    impl SessionArchive for Archive {
        async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
            Ok((self.0.access_key_id == access_key_id && self.0.valid_at(at)).then(|| self.0.clone()))
        }
    }

    #[tokio::test]
    async fn a_batch_looks_each_key_up_once() {
        // In the store (as another process recorded it), not in this resolver's cache.
        let store = Arc::new(MemorySessionStore::new());
        store.put(vec![session("ASIAONE", T0)].into()).await.unwrap();
        let resolver = Resolver::new(store, None, ResolverConfig::default());
        let actor = role_user("ASIAONE");
        let actors: Vec<Actor<'_>> = (0..100).map(|i| Actor::new(&actor, T0 + i * 1000)).collect();
        let out = resolver.resolve_batch(&actors).await.unwrap();
        assert!(out.iter().all(|r| r.origin().confidence == Confidence::Exact));
        let stats = resolver.stats();
        assert_eq!((stats.actors, stats.store_lookups, stats.batch_reuses), (100, 1, 99));
        assert_eq!(stats.store_lookups_per_thousand(), 10.0);
        // The next batch is answered by the cache.
        resolver.resolve_batch(&actors[..10]).await.unwrap();
        assert_eq!((resolver.stats().store_lookups, resolver.stats().cache.hits), (1, 1));
    }

    #[tokio::test]
    async fn a_session_this_resolver_recorded_is_used_without_a_store_read() {
        let resolver = Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default());
        let owner = Session {
            caller: Caller { identity_type: "AWSAccount".into(), account_id: Some("508917263341".into()), ..Caller::default() },
            ..session("ASIAOWNED", T0)
        };
        resolver.record_sessions(vec![session("ASIAFRESH", T0), owner]).await.unwrap();
        let fresh = role_user("ASIAFRESH");
        assert_eq!(resolver.resolve(Actor::new(&fresh, T0 + 1000)).await.unwrap().origin().confidence, Confidence::Exact);
        assert_eq!((resolver.stats().store_lookups, resolver.stats().cache.hits), (0, 1));
        // A role owner's copy may be merged with more in the store: read from there.
        resolver.resolve(Actor::new(&role_user("ASIAOWNED"), T0 + 1000)).await.unwrap();
        assert_eq!(resolver.stats().store_lookups, 1);
    }

    #[tokio::test]
    async fn a_late_session_is_seen_at_once_despite_the_cached_miss() {
        let resolver = Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default());
        let actor = role_user("ASIALATE");
        let first = resolver.resolve(Actor::new(&actor, T0 + 60_000)).await.unwrap();
        assert_eq!(first.missing().map(|m| m.access_key_id.as_str()), Some("ASIALATE"));
        assert!(matches!(resolver.resolve(Actor::new(&actor, T0 + 61_000)).await.unwrap(), Resolution::Waiting { .. }));
        assert_eq!(resolver.stats().cache.negative_hits, 1, "the miss is cached");
        assert_eq!(resolver.record_sessions(vec![session("ASIALATE", T0)]).await.unwrap(), ["ASIALATE"]);
        let again = resolver.resolve(Actor::new(&actor, T0 + 60_000)).await.unwrap();
        assert_eq!(again.origin().confidence, Confidence::Exact, "recording the session dropped the cached miss");
    }

    #[tokio::test]
    async fn the_archive_answers_what_the_store_lacks_and_the_store_keeps_it() {
        let store = Arc::new(MemorySessionStore::new());
        let resolver = Resolver::new(store.clone(), Some(Arc::new(Archive(session("ASIAOLD", T0)))), ResolverConfig::default());
        let actor = role_user("ASIAOLD");
        let found = resolver.resolve(Actor::new(&actor, T0 + 60_000)).await.unwrap();
        assert_eq!(found.origin().confidence, Confidence::Exact);
        assert_eq!((resolver.stats().archive_lookups, resolver.stats().archive_found), (1, 1));
        assert!(store.get("ASIAOLD", T0 + 60_000, T0).await.unwrap().is_some(), "what the archive found is stored");
    }

    /// An archive that holds some sessions and records every call.
    #[derive(Default)]
    struct Recording {
        sessions: Vec<Session>,
        find_many_calls: std::sync::Mutex<Vec<Vec<(String, EpochMillis)>>>,
        find_calls: std::sync::atomic::AtomicU64,
    }

    impl Recording {
        fn holding(sessions: Vec<Session>) -> Arc<Self> {
            Arc::new(Recording { sessions, ..Recording::default() })
        }

        fn calls(&self) -> Vec<Vec<(String, EpochMillis)>> {
            self.find_many_calls.lock().unwrap().clone()
        }

        fn lookup(&self, access_key_id: &str, at: EpochMillis) -> Option<Session> {
            self.sessions.iter().find(|s| s.access_key_id == access_key_id && s.valid_at(at)).cloned()
        }
    }

    #[async_trait]
    impl SessionArchive for Recording {
        async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
            self.find_calls.fetch_add(1, Ordering::Relaxed);
            Ok(self.lookup(access_key_id, at))
        }

        async fn find_many(&self, wanted: &[(String, EpochMillis)]) -> Result<Vec<Session>, PortError> {
            self.find_many_calls.lock().unwrap().push(wanted.to_vec());
            Ok(wanted.iter().filter_map(|(key, at)| self.lookup(key, *at)).collect())
        }
    }

    #[tokio::test]
    async fn a_batch_asks_the_archive_once_for_all_its_unknown_keys() {
        let keys: Vec<String> = (0..10).map(|i| format!("ASIAKEY{i}")).collect();
        // The archive knows eight of the ten keys; ASIAKEY8 and ASIAKEY9 were never issued.
        let archive = Recording::holding(keys[..8].iter().map(|k| session(k, T0)).collect());
        let resolver = Resolver::new(Arc::new(MemorySessionStore::new()), Some(archive.clone()), ResolverConfig::default());
        let callers: Vec<Caller> = keys.iter().map(|k| role_user(k)).collect();
        let actors: Vec<Actor<'_>> = (0..50).map(|i| Actor::new(&callers[i % 10], T0 + 60_000 + i as EpochMillis * 1000)).collect();

        let out = resolver.resolve_batch(&actors).await.unwrap();

        let calls = archive.calls();
        assert_eq!(calls.len(), 1, "one find_many for the whole batch: {calls:?}");
        let mut asked: Vec<&str> = calls[0].iter().map(|(k, _)| k.as_str()).collect();
        asked.sort_unstable();
        assert_eq!(asked, keys.iter().map(String::as_str).collect::<Vec<_>>(), "each distinct key once");
        assert_eq!(archive.find_calls.load(Ordering::Relaxed), 0, "no key was looked up on its own");
        for (actor, resolution) in actors.iter().zip(&out) {
            let key = actor.caller.access_key_id.as_deref().unwrap();
            match key {
                "ASIAKEY8" | "ASIAKEY9" => assert_eq!(resolution.missing().map(|m| m.access_key_id.as_str()), Some(key)),
                _ => {
                    assert_eq!(resolution.origin().confidence, Confidence::Exact, "{key}");
                    assert_eq!(resolution.origin().principal.as_deref(), Some("arn:aws:iam::508917263341:user/maria"));
                }
            }
        }
        let stats = resolver.stats();
        assert_eq!((stats.archive_queries, stats.archive_lookups, stats.archive_found), (1, 10, 8));

        // The next batch asks nothing: the found sessions are stored and cached,
        // the two misses are cached as missing.
        resolver.resolve_batch(&actors).await.unwrap();
        assert_eq!(archive.calls().len(), 1);
        assert_eq!(archive.find_calls.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn chains_cost_one_archive_call_per_hop_level() {
        // Three chains of two hops: ASIADEEPn was issued to a session of
        // ASIAMIDn, which maria's IAM user asked for.
        let mut sessions = Vec::new();
        for n in 0..3 {
            sessions.push(session(&format!("ASIAMID{n}"), T0));
            sessions.push(Session { caller: role_user(&format!("ASIAMID{n}")), ..session(&format!("ASIADEEP{n}"), T0 + 600_000) });
        }
        let archive = Recording::holding(sessions);
        let resolver = Resolver::new(Arc::new(MemorySessionStore::new()), Some(archive.clone()), ResolverConfig::default());
        let callers: Vec<Caller> = (0..3).map(|n| role_user(&format!("ASIADEEP{n}"))).collect();
        let actors: Vec<Actor<'_>> = (0..9).map(|i| Actor::new(&callers[i % 3], T0 + 900_000 + i as EpochMillis * 1000)).collect();

        let out = resolver.resolve_batch(&actors).await.unwrap();

        let calls = archive.calls();
        let mut keys: Vec<Vec<String>> = calls.iter().map(|call| call.iter().map(|(k, _)| k.clone()).collect()).collect();
        keys.iter_mut().for_each(|level| level.sort_unstable());
        assert_eq!(keys, [["ASIADEEP0", "ASIADEEP1", "ASIADEEP2"], ["ASIAMID0", "ASIAMID1", "ASIAMID2"]], "one call per hop level");
        assert!(calls[1].iter().all(|(_, at)| *at == T0 + 600_000), "a caller's key is asked at the time it asked for the session");
        assert_eq!(archive.find_calls.load(Ordering::Relaxed), 0);
        for resolution in &out {
            let origin = resolution.origin();
            assert_eq!((origin.confidence, origin.chain.len()), (Confidence::Exact, 2));
            assert_eq!(origin.principal.as_deref(), Some("arn:aws:iam::508917263341:user/maria"));
        }
    }

    #[tokio::test]
    async fn the_role_owners_copy_alone_waits_for_the_callers_copy() {
        let resolver = Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default());
        let full = Session { shared_event_id: Some("shared-1".into()), ..session("ASIACROSS", T0) };
        let owner = Session {
            caller: Caller { identity_type: "AWSAccount".into(), account_id: Some("508917263341".into()), ..Caller::default() },
            event_id: "owner".into(),
            ..full.clone()
        };
        resolver.record_sessions(vec![owner]).await.unwrap();
        let actor = role_user("ASIACROSS");
        let waiting = resolver.resolve(Actor::new(&actor, T0 + 60_000)).await.unwrap();
        let Resolution::Waiting { missing, fallback: Some(fallback), .. } = &waiting else { panic!("{waiting:?}") };
        assert!(missing.caller_copy && missing.at == T0);
        assert_eq!((fallback.kind, fallback.principal.as_deref()), (OriginKind::AwsAccount, Some("508917263341")));
        assert_eq!(resolver.record_sessions(vec![full]).await.unwrap(), ["ASIACROSS"], "the caller's copy arriving is news for the same key");
        assert_eq!(resolver.resolve(Actor::new(&actor, T0 + 60_000)).await.unwrap().origin().confidence, Confidence::Exact);
    }

    #[tokio::test]
    async fn a_role_owners_copy_resolves_through_the_recorded_session_once_the_shared_cache_let_the_callers_copy_go() {
        let store = Arc::new(MemorySessionStore::new());
        let full = Session { shared_event_id: Some("shared-2".into()), ..session("ASIACROSS2", T0) };
        let owner = Caller { identity_type: "AWSAccount".into(), account_id: Some("508917263341".into()), ..Caller::default() };
        let first = Resolver::new(store.clone(), None, ResolverConfig::default());
        first.resolve(Actor { shared_event_id: Some("shared-2"), ..Actor::new(&full.caller, T0) }).await.unwrap();
        first.record_sessions(vec![full.clone()]).await.unwrap();
        // Another resolver over the same store: its shared-copy cache holds
        // nothing, as after an eviction or a restart.
        let resolver = Resolver::new(store, None, ResolverConfig::default());

        let owners_copy = Actor { shared_event_id: Some("shared-2"), issued_key: Some("ASIACROSS2"), ..Actor::new(&owner, T0) };
        let resolution = resolver.resolve(owners_copy).await.unwrap();
        let Resolution::Resolved(origin) = &resolution else { panic!("the owner's copy still waits: {resolution:?}") };
        assert_eq!(origin.principal.as_deref(), Some("arn:aws:iam::508917263341:user/maria"));
        assert_eq!(resolver.stats().copies_from_store, 1);

        // A copy whose recorded session carries another sharedEventID is not this call's caller.
        let other = Actor { shared_event_id: Some("shared-3"), issued_key: Some("ASIACROSS2"), ..Actor::new(&owner, T0) };
        assert!(matches!(resolver.resolve(other).await.unwrap(), Resolution::Waiting { .. }));
    }
}
