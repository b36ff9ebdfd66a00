use trailwatch_core::conformance;
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemoryPendingStore, MemorySessionStore, MemorySource};

#[tokio::test]
async fn memory_history_conforms() {
    conformance::history_store(&MemoryHistory::new()).await;
}

#[tokio::test]
async fn memory_checkpoints_conform() {
    conformance::checkpoints(&MemoryCheckpoints::new()).await;
}

#[tokio::test]
async fn memory_source_conforms() {
    let source = MemorySource::new();
    let put_into = source.clone();
    conformance::log_source(&source, &move |key, bytes| put_into.put(key, bytes.to_vec(), 0)).await;
}

#[tokio::test]
async fn memory_session_store_conforms() {
    conformance::session_store(&MemorySessionStore::new()).await;
    conformance::session_store(&MemorySessionStore::with_retention(10 * 60_000)).await;
}

#[tokio::test]
async fn memory_pending_store_conforms() {
    conformance::pending_store(&MemoryPendingStore::new()).await;
}

#[tokio::test]
async fn memory_session_store_purges_what_it_no_longer_retains() {
    use trailwatch_core::identity::SessionStore;
    let store = MemorySessionStore::with_retention(60 * 60_000);
    let t0 = 1_710_000_000_000;
    let kept = conformance::sample_session("ASIAPURGE1", t0 + 5 * 3_600_000, 3_600_000, "kept");
    store.put(vec![conformance::sample_session("ASIAPURGE1", t0, 3_600_000, "old"), kept.clone()].into()).await.unwrap();
    assert_eq!(store.purge(t0 + 3 * 3_600_000), 1, "only the session past expiry plus the margin is dropped");
    assert_eq!(store.len(), 1);
    assert_eq!(store.get("ASIAPURGE1", t0 + 5 * 3_600_000 + 60_000, t0).await.unwrap(), Some(kept));
}
