//! Records whose identity fields lie: bob takes a role session named
//! `alice`, then uses its key under identities that claim alice, another
//! role, or alice as source identity. Resolution follows the access key to
//! the session valid then, so every such event is bob's.

use std::sync::Arc;

use trailwatch_core::event::FileStatus;
use trailwatch_core::identity::{Confidence, OriginKind, PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::memory::{MemoryPendingStore, MemorySessionStore};

use super::{collect, hostile};

const BOB: &str = "arn:aws:iam::111122223333:user/bob";
const ALICE: &str = "arn:aws:iam::111122223333:user/alice";

#[tokio::test]
async fn a_spoofed_session_name_or_arn_resolves_to_the_real_session() {
    let mut batch = collect(vec![hostile("spoofed-identity.json")]).await;
    assert_eq!(batch.outcome(0).status, FileStatus::Done);
    assert_eq!(batch.sessions.len(), 1, "bob's AssumeRole issued one session");
    assert_eq!(batch.sessions[0].session_name.as_deref(), Some("alice"));

    let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default()));
    let identity = PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default());
    identity.record_sessions(std::mem::take(&mut batch.sessions)).await.unwrap();
    identity.resolve_events(&mut batch.events).await.unwrap();

    let origin = |id: &str| batch.events.iter().find(|e| e.event_id == id).and_then(|e| e.origin.clone()).unwrap_or_else(|| panic!("{id} has no origin"));
    let own = origin("alice-own");
    assert_eq!((own.kind, own.principal.as_deref()), (OriginKind::IamUser, Some(ALICE)), "alice's own call is hers");
    for id in ["spoof-name", "spoof-arn", "spoof-source"] {
        let o = origin(id);
        assert_eq!((o.kind, o.principal.as_deref(), o.confidence), (OriginKind::IamUser, Some(BOB), Confidence::Exact), "{id}: {o:?}");
        assert_eq!(o.chain.len(), 1, "{id}");
        assert_eq!(o.chain[0].role_arn.as_deref(), Some("arn:aws:iam::111122223333:role/Admin"), "{id}: the key's role, not the one the record claims");
        assert_eq!(o.chain[0].event_id, "spoof-issue", "{id}");
    }
}
