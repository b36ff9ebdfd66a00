//! The enricher with identity resolution, fed from fixture files the way the
//! collector feeds it.
// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod delivery;
mod origin_rules;

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trailwatch_collector::{read_object, Chunk};
use trailwatch_core::event::{FileBatch, FileOutcome};
use trailwatch_core::identity::{Confidence, OriginKind, PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::layout::classify;
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemoryPendingStore, MemorySessionStore};
use trailwatch_core::ports::{HistoryQuery, HistoryStore, ObjectMeta};
use trailwatch_core::stats::PipelineStats;
use trailwatch_enricher::{run, EnricherConfig, EnricherPorts};

/// Reads a fixture trail file into the batches the collector would send.
fn batches(root: &Path, key: &str) -> Vec<FileBatch> {
    batches_of(key, &std::fs::read(root.join(key)).unwrap())
}

/// The batches the collector would send for a log file (gzipped or not) at `key`.
fn batches_of(key: &str, bytes: &[u8]) -> Vec<FileBatch> {
    let shared: Arc<str> = key.into();
    let meta = ObjectMeta { key: key.into(), size: bytes.len() as u64, modified: 0 };
    let mut out = Vec::new();
    let (outcome, _): (FileOutcome, u64) = read_object(
        &shared,
        &classify(key).unwrap(),
        &meta,
        bytes,
        &mut |chunk: Chunk| {
            out.push(FileBatch::Events { key: shared.clone(), events: chunk.events, sessions: chunk.sessions });
            true
        },
        &Default::default(),
    )
    .unwrap();
    out.push(FileBatch::Finished(outcome));
    out
}

fn keys(root: &Path) -> Vec<String> {
    let mut keys = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                keys.push(path.strip_prefix(root).unwrap().to_str().unwrap().replace('\\', "/"));
            }
        }
    }
    keys.sort();
    keys
}

/// A usage file read before the file that issued its session: its events are
/// stored pending, then updated to the exact origin when the session arrives.
#[tokio::test]
async fn events_read_before_their_session_are_updated_when_it_arrives() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/usage-before-issue");
    let mut files = keys(&root);
    assert_eq!(files.len(), 2);
    // Key order puts the eu-west-1 usage file after us-east-1's issuing file: read usage first.
    files.sort_by_key(|k| !k.contains("eu-west-1"));
    let history = Arc::new(MemoryHistory::new());
    let pending_store = Arc::new(MemoryPendingStore::new());
    let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default()));
    let identity = Arc::new(PendingSet::new(resolver, pending_store.clone(), PendingConfig::default()));
    let stats = Arc::new(PipelineStats::default());
    let (tx, rx) = mpsc::channel(4);
    let ports = EnricherPorts { history: history.clone(), checkpoints: Arc::new(MemoryCheckpoints::new()), identity: Some(identity.clone()), alerts: None };
    let task = tokio::spawn(run(EnricherConfig::default(), ports, rx, stats.clone(), CancellationToken::new()));

    for batch in batches(&root, &files[0]) {
        tx.send(batch).await.unwrap();
    }
    // Let the first file be stored on its own before the second arrives.
    while PipelineStats::get(&stats.events_stored) == 0 {
        tokio::task::yield_now().await;
    }
    let waiting = PipelineStats::get(&stats.resolved_waiting);
    assert!(waiting > 0, "usage events wait for their session");
    for batch in batches(&root, &files[1]) {
        tx.send(batch).await.unwrap();
    }
    drop(tx);
    task.await.unwrap();

    assert_eq!(PipelineStats::get(&stats.origins_updated), waiting, "every waiting event was updated once its session arrived");
    assert_eq!(identity.count().await.unwrap(), 0, "nothing is left waiting");
    let page = history.page(&HistoryQuery { limit: 1000, ..Default::default() }).await.unwrap();
    let usage: Vec<_> = page.events.iter().filter(|e| e.region == "eu-west-1").collect();
    assert!(!usage.is_empty());
    for event in usage {
        let origin = event.origin.as_ref().expect("resolved");
        assert_eq!(origin.confidence, Confidence::Exact, "{}: {origin:?}", event.event_id);
        assert_eq!(origin.kind, OriginKind::IamUser);
        assert!(!origin.chain.is_empty());
    }
}
