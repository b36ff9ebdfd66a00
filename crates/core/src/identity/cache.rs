//! The session cache in front of the session store.
//!
//! One entry per access key id: the session the store last returned for it,
//! or the fact that it had none near some time. A found session answers
//! every lookup inside its validity window; a "not found" answers lookups
//! within [`CacheConfig::negative_span_ms`] of the time it was asked for (a
//! key id may be issued again hours later) and lives a shorter time. The
//! resolver invalidates a key whenever a session for it is recorded, so a
//! late-arriving session is seen at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::Expiry;

use super::Session;
use crate::time::EpochMillis;

/// Size and lifetimes of the session cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Bytes the entries may take, about (each weighed by its key and
    /// session): a bound on memory however many sessions an organization
    /// issues. The default holds some 30,000 sessions.
    pub capacity_bytes: u64,
    /// How long a found session stays cached (wall time).
    pub ttl: Duration,
    /// How long a "not found" stays cached (wall time): short, so a session
    /// written by another process is soon seen.
    pub negative_ttl: Duration,
    /// How far in trail time from the lookup that found nothing a "not found"
    /// still answers.
    pub negative_span_ms: EpochMillis,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { capacity_bytes: 32 << 20, ttl: Duration::from_secs(15 * 60), negative_ttl: Duration::from_secs(30), negative_span_ms: 3_600_000 }
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<Session>),
    Missing { at: EpochMillis },
}

struct Lifetimes {
    ttl: Duration,
    negative_ttl: Duration,
}

impl Lifetimes {
    fn of(&self, entry: &Entry) -> Duration {
        match entry {
            Entry::Found(_) => self.ttl,
            Entry::Missing { .. } => self.negative_ttl,
        }
    }
}

impl Expiry<String, Entry> for Lifetimes {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(self.of(entry))
    }

    fn expire_after_update(&self, _key: &String, entry: &Entry, _at: Instant, _left: Option<Duration>) -> Option<Duration> {
        Some(self.of(entry))
    }
}

/// About what an entry takes: the key, moka's own bookkeeping, and the session.
fn weight(key: &str, entry: &Entry) -> usize {
    const PER_ENTRY: usize = 160;
    PER_ENTRY
        + key.len()
        + match entry {
            Entry::Found(session) => session.approx_bytes(),
            Entry::Missing { .. } => 0,
        }
}

/// What the cache knows of a key at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    /// The session valid at that time.
    Hit(Arc<Session>),
    /// The store recently had no session for the key near that time.
    NegativeHit,
    /// Ask the store.
    Miss,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

/// Counts since the cache was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub negative_hits: u64,
    pub misses: u64,
    /// Entries dropped to stay within the byte budget.
    pub evictions: u64,
    /// Entries dropped when their lifetime ended.
    pub expirations: u64,
    pub entries: u64,
}

/// Sessions by access key id, in memory, bounded.
#[derive(Clone)]
pub struct SessionCache {
    inner: Cache<String, Entry>,
    counters: Arc<Counters>,
    negative_span_ms: EpochMillis,
}

impl SessionCache {
    pub fn new(config: &CacheConfig) -> Self {
        let counters = Arc::new(Counters::default());
        let listener = counters.clone();
        let inner = Cache::builder()
            .max_capacity(config.capacity_bytes)
            .weigher(|key: &String, entry: &Entry| u32::try_from(weight(key, entry)).unwrap_or(u32::MAX))
            .expire_after(Lifetimes { ttl: config.ttl, negative_ttl: config.negative_ttl })
            .eviction_listener(move |_key, _value, cause| match cause {
                RemovalCause::Size => {
                    listener.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    listener.expirations.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build();
        SessionCache { inner, counters, negative_span_ms: config.negative_span_ms }
    }

    /// The cached answer for `access_key_id` used at `at`.
    pub async fn get(&self, access_key_id: &str, at: EpochMillis) -> CacheLookup {
        let answer = match self.inner.get(access_key_id).await {
            Some(Entry::Found(session)) if session.valid_at(at) => CacheLookup::Hit(session),
            Some(Entry::Missing { at: asked }) if (asked - at).abs() <= self.negative_span_ms => CacheLookup::NegativeHit,
            _ => CacheLookup::Miss,
        };
        let counter = match answer {
            CacheLookup::Hit(_) => &self.counters.hits,
            CacheLookup::NegativeHit => &self.counters.negative_hits,
            CacheLookup::Miss => &self.counters.misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// Remembers the session the store returned.
    pub async fn insert_found(&self, session: Arc<Session>) {
        self.inner.insert(session.access_key_id.clone(), Entry::Found(session)).await;
    }

    /// Remembers that the store had no session for the key at `at`.
    pub async fn insert_missing(&self, access_key_id: &str, at: EpochMillis) {
        self.inner.insert(access_key_id.to_owned(), Entry::Missing { at }).await;
    }

    /// Forgets a key: a session for it was just recorded.
    pub async fn invalidate(&self, access_key_id: &str) {
        self.inner.invalidate(access_key_id).await;
    }

    /// Runs the cache's pending housekeeping (evictions are counted then).
    pub async fn run_pending_tasks(&self) {
        self.inner.run_pending_tasks().await;
    }

    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            negative_hits: c.negative_hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            entries: self.inner.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Caller, IssueKind};

    fn session(key: &str, issued_at: EpochMillis) -> Arc<Session> {
        Arc::new(Session {
            access_key_id: key.into(),
            issued_at,
            expires_at: issued_at + 3_600_000,
            kind: IssueKind::AssumeRole,
            account_id: "111122223333".into(),
            role_arn: None,
            session_name: None,
            assumed_arn: None,
            source_identity: None,
            event_id: "e".into(),
            event_account: "111122223333".into(),
            shared_event_id: None,
            caller: Caller::default(),
        })
    }

    #[tokio::test]
    async fn answers_inside_the_window_and_counts() {
        let cache = SessionCache::new(&CacheConfig::default());
        assert_eq!(cache.get("ASIA1", 1_000).await, CacheLookup::Miss);
        cache.insert_found(session("ASIA1", 0)).await;
        assert!(matches!(cache.get("ASIA1", 1_000).await, CacheLookup::Hit(_)));
        assert_eq!(cache.get("ASIA1", 5 * 3_600_000).await, CacheLookup::Miss, "outside the window the key may be another session");
        cache.insert_missing("ASIA2", 10_000_000).await;
        assert_eq!(cache.get("ASIA2", 10_000_000 + 60_000).await, CacheLookup::NegativeHit);
        assert_eq!(cache.get("ASIA2", 10_000_000 + 2 * 3_600_000).await, CacheLookup::Miss, "a miss hours away says nothing");
        cache.invalidate("ASIA2").await;
        assert_eq!(cache.get("ASIA2", 10_000_000).await, CacheLookup::Miss, "invalidated when a session arrives");
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.negative_hits, stats.misses), (1, 1, 4));
    }

    #[tokio::test]
    async fn negative_answers_expire_sooner_and_capacity_evicts() {
        // A budget of ten sessions' worth of bytes.
        let one = weight("ASIAX0", &Entry::Found(session("ASIAX0", 0))) as u64;
        let config = CacheConfig { capacity_bytes: 10 * one, ttl: Duration::from_secs(60), negative_ttl: Duration::from_millis(50), ..CacheConfig::default() };
        let cache = SessionCache::new(&config);
        cache.insert_missing("ASIA2", 0).await;
        cache.insert_found(session("ASIA1", 0)).await;
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(cache.get("ASIA2", 0).await, CacheLookup::Miss, "the negative entry lived its shorter life");
        assert!(matches!(cache.get("ASIA1", 0).await, CacheLookup::Hit(_)));
        for i in 0..100 {
            cache.insert_found(session(&format!("ASIAX{i}"), 0)).await;
        }
        cache.run_pending_tasks().await;
        let stats = cache.stats();
        assert!(stats.entries <= 10 && stats.evictions > 0, "the byte budget holds ten sessions: {stats:?}");
    }
}
