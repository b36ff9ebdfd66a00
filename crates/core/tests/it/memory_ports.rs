use trailwatch_core::conformance;
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemorySource};

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
