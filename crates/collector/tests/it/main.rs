//! trailwatch-collector integration tests: hostile log files through
//! `collect_file` (outcomes, pipeline counters, what is kept), spoofed
//! identities through capture and resolution, and the fuzz corpus replayed.

#![allow(clippy::unwrap_used)]

mod corpus;
mod hostile;
mod spoofing;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;
use trailwatch_collector::{collect_file, CollectorPorts};
use trailwatch_core::event::{Event, FileBatch, FileOutcome};
use trailwatch_core::identity::Session;
use trailwatch_core::layout::classify;
use trailwatch_core::memory::{MemoryCheckpoints, MemorySource};
use trailwatch_core::stats::PipelineStats;

pub fn hostile(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hostile").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

/// The key the `i`th object of a batch is stored under.
pub fn key_of(i: usize) -> String {
    format!("AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/15/111122223333_CloudTrail_us-east-1_20240115T1205Z_Hostile{i:09}.json.gz")
}

/// What a batch of objects came to.
pub struct Batch {
    pub outcomes: Vec<FileOutcome>,
    pub events: Vec<Event>,
    pub sessions: Vec<Session>,
    pub stats: Arc<PipelineStats>,
    pub source: MemorySource,
}

impl Batch {
    pub fn outcome(&self, i: usize) -> &FileOutcome {
        let key = key_of(i);
        self.outcomes.iter().find(|o| o.key == key).unwrap_or_else(|| panic!("no outcome for {key}"))
    }

    pub fn event_ids(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event_id.as_str()).collect()
    }
}

/// Collects each object in turn, as the collector does one listed file,
/// from an in-memory bucket.
pub async fn collect(objects: Vec<Vec<u8>>) -> Batch {
    let source = MemorySource::new();
    for (i, bytes) in objects.into_iter().enumerate() {
        source.put(&key_of(i), bytes, 1_705_320_000_000);
    }
    let ports = CollectorPorts { source: Arc::new(source.clone()), checkpoints: Arc::new(MemoryCheckpoints::new()), integrity: None };
    let stats = Arc::new(PipelineStats::default());
    let (tx, mut rx) = mpsc::channel(16);
    let drain = tokio::spawn(async move {
        let (mut outcomes, mut events, mut sessions) = (Vec::new(), Vec::new(), Vec::new());
        while let Some(batch) = rx.recv().await {
            match batch {
                FileBatch::Events { events: e, sessions: s, .. } => {
                    events.extend(e);
                    sessions.extend(s);
                }
                FileBatch::Finished(outcome) => outcomes.push(outcome),
            }
        }
        (outcomes, events, sessions)
    });
    for meta in ports.source.list("AWSLogs/").await.unwrap() {
        let key = classify(&meta.key).unwrap();
        collect_file(&ports, meta, key, tx.clone(), &stats).await.expect("the outcome is handed on");
    }
    drop(tx);
    let (outcomes, events, sessions) = drain.await.unwrap();
    Batch { outcomes, events, sessions, stats, source }
}
