//! Counters the pipeline keeps while it runs, read by the CLI's summary and
//! progress display (and, later, exported as metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Shared, lock-free counters of one pipeline run.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Objects listed in the source (every scan).
    pub objects_listed: AtomicU64,
    /// Log and insight files the collector read to the end or gave up on.
    pub files_read: AtomicU64,
    /// Files whose every record was accepted.
    pub files_done: AtomicU64,
    /// Files read with some records rejected.
    pub files_partial: AtomicU64,
    /// Files with no records.
    pub files_empty: AtomicU64,
    /// Files that could not be read to the end.
    pub files_failed: AtomicU64,
    /// Digest files recorded.
    pub digests: AtomicU64,
    /// Files already in the ledger, not read again.
    pub files_unchanged: AtomicU64,
    /// Files waiting to be read in the current scan.
    pub files_queued: AtomicU64,
    pub events_parsed: AtomicU64,
    /// Sessions issued by the credential-issuing records read.
    pub sessions_captured: AtomicU64,
    /// Events resolved on arrival, by confidence, and events still waiting.
    pub resolved_exact: AtomicU64,
    pub resolved_derived: AtomicU64,
    pub resolved_unresolved: AtomicU64,
    pub resolved_waiting: AtomicU64,
    /// Stored events whose origin changed later (a late session, or the bound passing).
    pub origins_updated: AtomicU64,
    pub events_rejected: AtomicU64,
    pub events_stored: AtomicU64,
    pub events_duplicate: AtomicU64,
    /// History writes (one transaction each) the events were stored in.
    pub history_writes: AtomicU64,
    /// Rule matches (a threshold rule counts when its group is over the threshold).
    pub detections: AtomicU64,
    /// Alert transitions from ingest (a person's are not counted here).
    pub alerts_opened: AtomicU64,
    pub alerts_updated: AtomicU64,
    pub alerts_resolved: AtomicU64,
    pub bytes_compressed: AtomicU64,
    pub bytes_uncompressed: AtomicU64,
    skipped: Mutex<BTreeMap<&'static str, (u64, String)>>,
}

impl PipelineStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Counts an object that is not a trail file, keeping one example key per reason.
    pub fn skip(&self, reason: &'static str, key: &str) {
        let mut skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        let entry = skipped.entry(reason).or_insert_with(|| (0, key.to_owned()));
        entry.0 += 1;
    }

    /// Skips by reason: (reason, count, an example key).
    pub fn skipped(&self) -> Vec<(&'static str, u64, String)> {
        let skipped = self.skipped.lock().unwrap_or_else(|p| p.into_inner());
        skipped.iter().map(|(r, (n, k))| (*r, *n, k.clone())).collect()
    }

    /// Clears the skip counts (a watching scan counts each object once per scan).
    pub fn reset_skipped(&self) {
        self.skipped.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
