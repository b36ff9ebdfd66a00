//! Property tests of identity resolution over generated sessions: role
//! chains over a few access keys, with keys reused across windows, chains
//! that loop back and sessions asked for with their own key.
//!
//! - No origin comes through a session that was not valid when its key was
//!   used: the last hop's session holds the event's time, each earlier
//!   hop's session holds the issue time of the hop after it, and each hop's
//!   session was asked for with the key of the hop before it.
//! - Chains never loop and stop at `max_hops`; resolution always ends.
//! - A batch resolves each actor as it resolves alone, whatever the order
//!   of the actors in the batch. Ignored for now: it fails. The batch memo
//!   keeps a key that was not found at one time as missing for the whole
//!   batch, so an earlier use of the key, inside a session that is stored,
//!   waits instead of resolving (minimal case in the test's comment).

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use trailwatch_core::identity::{Actor, Caller, Confidence, IssueKind, Origin, OriginKind, Resolution, Resolver, ResolverConfig, Session, SessionStore};
use trailwatch_core::memory::MemorySessionStore;
use trailwatch_core::time::EpochMillis;

const ACCOUNT: &str = "741258963012";
const KEYS: usize = 5;
const T0: EpochMillis = 1_710_237_600_000; // 2024-03-12T10:00:00Z
const MINUTE: EpochMillis = 60_000;

fn temp_key(k: usize) -> String {
    format!("ASIAPROPKEY0000000{k:02}")
}

/// Who asked for a generated session.
#[derive(Debug, Clone, Copy)]
enum Asker {
    /// IAM user `n` with its long-term key: an origin.
    User(usize),
    /// Whoever held temporary key `k` (possibly the session's own key).
    Role(usize),
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    key: usize,
    issued_min: i64,
    minutes: i64,
    asker: Asker,
}

fn spec() -> impl Strategy<Value = Spec> {
    let asker = prop_oneof![(0..3usize).prop_map(Asker::User), (0..KEYS).prop_map(Asker::Role)];
    (0..KEYS, 0i64..240, 15i64..120, asker).prop_map(|(key, issued_min, minutes, asker)| Spec { key, issued_min, minutes, asker })
}

fn role_caller(k: usize) -> Caller {
    Caller {
        identity_type: "AssumedRole".into(),
        arn: Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/Hop{k}/s{k}")),
        account_id: Some(ACCOUNT.into()),
        access_key_id: Some(temp_key(k)),
        ..Caller::default()
    }
}

fn session(s: &Spec) -> Session {
    let issued_at = T0 + s.issued_min * MINUTE;
    let caller = match s.asker {
        Asker::User(n) => Caller {
            identity_type: "IAMUser".into(),
            arn: Some(format!("arn:aws:iam::{ACCOUNT}:user/u{n}")),
            account_id: Some(ACCOUNT.into()),
            access_key_id: Some(format!("AKIAPROPUSER00000{n:03}")),
            user_name: Some(format!("u{n}")),
            ..Caller::default()
        },
        Asker::Role(k) => role_caller(k),
    };
    Session {
        access_key_id: temp_key(s.key),
        issued_at,
        expires_at: issued_at + s.minutes * MINUTE,
        kind: IssueKind::AssumeRole,
        account_id: ACCOUNT.into(),
        role_arn: Some(format!("arn:aws:iam::{ACCOUNT}:role/Hop{}", s.key)),
        session_name: Some(format!("s{}", s.key)),
        assumed_arn: Some(format!("arn:aws:sts::{ACCOUNT}:assumed-role/Hop{}/s{}", s.key, s.key)),
        source_identity: None,
        event_id: format!("issue-{}-{}", s.key, s.issued_min),
        event_account: ACCOUNT.into(),
        shared_event_id: None,
        caller,
    }
}

/// The sessions of `specs`, one per key and issue time.
fn sessions(specs: &[Spec]) -> Vec<Session> {
    let mut seen = HashSet::new();
    specs.iter().filter(|s| seen.insert((s.key, s.issued_min))).map(session).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn resolver(sessions: &[Session]) -> Resolver {
    let store = Arc::new(MemorySessionStore::new());
    store.put(sessions.to_vec().into()).await.unwrap();
    Resolver::new(store, None, ResolverConfig::default())
}

/// Checks one resolution of the actor holding `key` at `at` against every
/// session there is; the reason on failure.
fn check(all: &[Session], key: &str, at: EpochMillis, resolution: &Resolution) -> Result<(), String> {
    let origin: &Origin = resolution.origin();
    let chain = &origin.chain;
    if chain.len() > ResolverConfig::default().max_hops {
        return Err(format!("{} hops", chain.len()));
    }
    let mut issues = HashSet::new();
    for hop in chain {
        if !issues.insert((hop.access_key_id.as_str(), hop.time)) {
            return Err(format!("the chain loops through {} issued at {}", hop.access_key_id, hop.time));
        }
    }
    let session_of = |i: usize| {
        all.iter()
            .find(|s| s.access_key_id == chain[i].access_key_id && s.issued_at == chain[i].time)
            .ok_or_else(|| format!("hop {i} ({} at {}) is no session", chain[i].access_key_id, chain[i].time))
    };
    // The session each hop's key was used at, and when.
    let mut used = (key.to_owned(), at);
    for i in (0..chain.len()).rev() {
        let s = session_of(i)?;
        let (used_key, used_at) = &used;
        if &s.access_key_id != used_key {
            return Err(format!("hop {i} is {} but {used_key} was used", s.access_key_id));
        }
        if !s.valid_at(*used_at) {
            return Err(format!("hop {i}: {} issued at {} (until {}) was not valid at {used_at}", s.access_key_id, s.issued_at, s.expires_at));
        }
        used = (s.caller.access_key_id.clone().unwrap_or_default(), s.issued_at);
    }
    if origin.confidence == Confidence::Exact {
        let first = session_of(0)?;
        if origin.kind != OriginKind::IamUser || origin.principal != first.caller.arn {
            return Err(format!("exact origin {:?} {:?} is not the first hop's caller {:?}", origin.kind, origin.principal, first.caller.arn));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_hop_was_valid_when_used_and_chains_never_loop(
        specs in prop::collection::vec(spec(), 1..14),
        uses in prop::collection::vec((0..KEYS, 0i64..300), 1..10),
    ) {
        let all = sessions(&specs);
        let rt = runtime();
        let callers: Vec<(Caller, EpochMillis)> = uses.iter().map(|&(k, m)| (role_caller(k), T0 + m * MINUTE)).collect();
        let actors: Vec<Actor<'_>> = callers.iter().map(|(c, at)| Actor::new(c, *at)).collect();
        let resolutions = rt.block_on(async {
            let r = resolver(&all).await;
            tokio::time::timeout(std::time::Duration::from_secs(10), r.resolve_batch(&actors)).await
        });
        let resolutions = resolutions.map_err(|_| TestCaseError::fail("resolution did not end"))?.unwrap();
        for ((caller, at), resolution) in callers.iter().zip(&resolutions) {
            let key = caller.access_key_id.as_deref().unwrap_or_default();
            check(&all, key, *at, resolution).map_err(|e| TestCaseError::fail(format!("{key} at {at}: {e}\n{resolution:?}")))?;
        }
    }

    // Fails on: sessions K4 issued at +0 min for 25 min (by user u0), K0
    // at +72 for 55 (asked for with K4), K3 at +132 for 21 (with K4); the
    // batch [K0 used at +71, K4 used at +12]. K0's caller K4 is not found at
    // +72 (its session ended at +25), and the batch then answers K4 at +12
    // as missing too: that event waits, while alone (or first in the batch)
    // it resolves exactly to u0.
    #[test]
    #[ignore = "the batch memo answers a key missing at one time as missing at every time (resolve.rs); see the comment"]
    fn a_batch_resolves_each_actor_as_alone_whatever_the_order(
        specs in prop::collection::vec(spec(), 1..14),
        uses in prop::collection::vec((0..KEYS, 0i64..300), 1..10),
        rotate in 0usize..10,
    ) {
        let all = sessions(&specs);
        let rt = runtime();
        let callers: Vec<(Caller, EpochMillis)> = uses.iter().map(|&(k, m)| (role_caller(k), T0 + m * MINUTE)).collect();
        let mut order: Vec<usize> = (0..callers.len()).collect();
        order.reverse();
        order.rotate_left(rotate % callers.len());
        let (forward, other, alone) = rt.block_on(async {
            let actors: Vec<Actor<'_>> = callers.iter().map(|(c, at)| Actor::new(c, *at)).collect();
            let forward = resolver(&all).await.resolve_batch(&actors).await.unwrap();
            let reordered: Vec<Actor<'_>> = order.iter().map(|&i| actors[i]).collect();
            let other = resolver(&all).await.resolve_batch(&reordered).await.unwrap();
            let mut alone = Vec::new();
            for actor in &actors {
                alone.push(resolver(&all).await.resolve(*actor).await.unwrap());
            }
            (forward, other, alone)
        });
        for (n, &i) in order.iter().enumerate() {
            prop_assert_eq!(&other[n], &forward[i], "actor {} resolved differently when the batch was reordered", i);
        }
        prop_assert_eq!(&forward, &alone, "a batch resolves as each actor alone");
    }
}
