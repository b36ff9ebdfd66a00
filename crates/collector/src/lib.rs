//! The collector: finds log files the ledger has not seen, reads them
//! (stream, gunzip, parse, validate) in parallel, and hands their events to
//! the enricher over a bounded channel, so a slow store slows reading
//! instead of filling memory.
//!
//! One scan lists the source, classifies every key
//! ([`trailwatch_core::layout::classify`]), asks the ledger which files still
//! need work, and reads those, `workers` at a time, oldest file time first. In
//! [`Mode::Watch`] scans repeat until shutdown.

mod read;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use trailwatch_core::event::{FileBatch, FileOutcome, FileStatus};
use trailwatch_core::integrity::IntegrityChecker;
use trailwatch_core::layout::{classify, ObjectKind, TrailKey};
use trailwatch_core::ports::{Checkpoints, LedgerEntry, LogSource, ObjectMeta, PortError};
use trailwatch_core::retry::{retry, RetryPolicy};
use trailwatch_core::stats::PipelineStats;

pub use read::{read_object, Abandoned, Chunk, CHUNK_EVENTS};

/// How long the collector runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One scan, then stop.
    Once,
    /// Scan, wait `interval`, scan again, until shutdown.
    Watch { interval: Duration },
}

/// The collector's settings, validated by the caller.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Files read at the same time.
    pub workers: usize,
    pub mode: Mode,
    /// Only keys under this prefix are listed.
    pub prefix: String,
    /// In [`Mode::Watch`], told when a new file may have arrived (a
    /// filesystem watcher, say): the next scan starts then instead of at the
    /// end of the interval, which stays the fallback.
    pub wake: Option<Arc<Notify>>,
}

/// Scans start at least this far apart, however often the collector is woken.
const MIN_SCAN_GAP: Duration = Duration::from_millis(50);

/// What the collector reads from and records to.
#[derive(Clone)]
pub struct CollectorPorts {
    pub source: Arc<dyn LogSource>,
    pub checkpoints: Arc<dyn Checkpoints>,
    /// Checks each digest as it lands (signature, chain, listed files,
    /// gaps); None records digests without checking them.
    pub integrity: Option<Arc<IntegrityChecker>>,
}

/// A failure that stops the collector.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("listing the trail failed: {0}")]
    List(PortError),
    #[error("reading the ledger failed: {0}")]
    Ledger(PortError),
}

/// Keys the ledger lookups ask for at once.
const LOOKUP_BATCH: usize = 1000;

/// How the collector retries the source and the ledger: a retryable error,
/// or no answer within the time limit, is tried again with backoff and
/// jitter (counted in [`PipelineStats::port_calls`]); a file that still
/// cannot be opened is recorded as failed and read again by a later scan.
/// Every call here is a read, safe to abandon.
pub fn default_retry() -> RetryPolicy {
    RetryPolicy { attempts: 5, base: Duration::from_millis(100), max_delay: Duration::from_secs(10), timeout: Some(CALL_TIMEOUT) }
}

/// Listing a large trail takes many pages: its time limit is generous.
const LIST_TIMEOUT: Duration = Duration::from_secs(900);
/// One ledger lookup, or opening one object.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs the collector until its mode says stop or `shutdown` fires. On
/// shutdown it starts no new file, lets the files in flight finish, and
/// returns; dropping `tx` then tells the enricher that nothing more comes.
pub async fn run(
    config: CollectorConfig,
    ports: CollectorPorts,
    tx: mpsc::Sender<FileBatch>,
    stats: Arc<PipelineStats>,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    run_with_retry(config, ports, tx, stats, shutdown, default_retry()).await
}

/// [`run`], retrying the source and the ledger with `retry` (its time limit
/// applies to a ledger lookup and to opening an object; listing gets
/// [`LIST_TIMEOUT`] at least) instead of [`default_retry`].
pub async fn run_with_retry(
    config: CollectorConfig,
    ports: CollectorPorts,
    tx: mpsc::Sender<FileBatch>,
    stats: Arc<PipelineStats>,
    shutdown: CancellationToken,
    retry: RetryPolicy,
) -> Result<(), CollectorError> {
    let mut known_final: HashSet<String> = HashSet::new();
    loop {
        let started = tokio::time::Instant::now();
        let scan =
            scan(&config, &ports, &retry, &tx, &stats, &shutdown, &mut known_final).instrument(info_span!("collector.scan", prefix = %config.prefix)).await;
        match (config.mode, scan) {
            (Mode::Once, result) => return result,
            (Mode::Watch { .. }, Err(e)) => warn!(error = %e, "scan failed; trying again at the next interval"),
            (Mode::Watch { .. }, Ok(())) => {}
        }
        let Mode::Watch { interval } = config.mode else { return Ok(()) };
        let woken = async {
            match &config.wake {
                Some(wake) => wake.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(interval) => {}
            _ = woken => tokio::time::sleep_until(started + MIN_SCAN_GAP).await,
        }
    }
}

async fn scan(
    config: &CollectorConfig,
    ports: &CollectorPorts,
    policy: &RetryPolicy,
    tx: &mpsc::Sender<FileBatch>,
    stats: &Arc<PipelineStats>,
    shutdown: &CancellationToken,
    known_final: &mut HashSet<String>,
) -> Result<(), CollectorError> {
    let list_policy = RetryPolicy { timeout: policy.timeout.map(|t| t.max(LIST_TIMEOUT)), ..*policy };
    let listed = retry(&list_policy, &stats.port_calls, "listing the trail", || ports.source.list(&config.prefix)).await.map_err(CollectorError::List)?;
    PipelineStats::add(&stats.objects_listed, listed.len() as u64);
    stats.reset_skipped();
    let mut candidates: Vec<(ObjectMeta, TrailKey)> = Vec::new();
    for meta in listed {
        if known_final.contains(&meta.key) {
            continue;
        }
        match classify(&meta.key) {
            Ok(key) => candidates.push((meta, key)),
            Err(reason) => {
                debug!(key = %meta.key, %reason, "skipped");
                stats.skip(reason.label(), &meta.key);
            }
        }
    }
    let mut todo = Vec::new();
    for batch in candidates.chunks(LOOKUP_BATCH) {
        let keys: Vec<String> = batch.iter().map(|(m, _)| m.key.clone()).collect();
        let entries = retry(policy, &stats.port_calls, "ledger lookup", || ports.checkpoints.lookup(&keys)).await.map_err(CollectorError::Ledger)?;
        for (meta, key) in batch {
            let entry = entries.get(&meta.key);
            if LedgerEntry::needs_work(entry, meta) {
                todo.push((meta.clone(), key.clone()));
            } else {
                PipelineStats::add(&stats.files_unchanged, 1);
                known_final.insert(meta.key.clone());
            }
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    // Oldest file first across every account and region, not key order (which
    // is account by account): identity resolution meets sessions in about the
    // order they were issued, and its trail-time clock only moves forward.
    todo.sort_by(|(a_meta, a), (b_meta, b)| a.file_time.cmp(&b.file_time).then_with(|| a_meta.key.cmp(&b_meta.key)));
    if let Some(checker) = &ports.integrity {
        // Digests still to check are not gaps, whatever order the checks finish in.
        for (_, key) in todo.iter().filter(|(_, key)| key.kind == ObjectKind::Digest) {
            checker.expect(&key.account_id, &key.region, key.file_time);
        }
    }
    info!(files = todo.len(), "new files to read");
    PipelineStats::add(&stats.files_queued, todo.len() as u64);
    let permits = Arc::new(Semaphore::new(config.workers.max(1)));
    let mut tasks = JoinSet::new();
    for (meta, key) in todo {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit { Ok(p) => p, Err(_) => break },
        };
        let ports = ports.clone();
        let tx = tx.clone();
        let stats = stats.clone();
        let policy = *policy;
        let span = info_span!("collector.file", key = %meta.key, account_id = %key.account_id, region = %key.region);
        tasks.spawn(
            async move {
                let finished = collect_file_with_retry(&ports, meta, key, tx, &stats, &policy).await;
                drop(permit);
                finished
            }
            .instrument(span),
        );
        while let Some(done) = tasks.try_join_next() {
            note_finished(done);
        }
    }
    while let Some(done) = tasks.join_next().await {
        note_finished(done);
    }
    Ok(())
}

/// Notes a file task's end. A file read to the end is not taken for final
/// here: the enricher may still fail to store it (and record it failed), so
/// only the ledger says a file is final (the next scan asks it once).
fn note_finished(done: Result<Option<(String, FileStatus)>, tokio::task::JoinError>) {
    if let Err(e) = done {
        warn!(error = %e, "a file task panicked or was cancelled");
    }
}

/// Reads one object and sends its batches, then its outcome (digests are
/// recorded without reading); returns its key and status when the outcome
/// was handed on, None when the receiver went away or reading panicked.
/// AWS mode's enricher calls this for each file its queue names.
pub async fn collect_file(
    ports: &CollectorPorts,
    meta: ObjectMeta,
    key: TrailKey,
    tx: mpsc::Sender<FileBatch>,
    stats: &Arc<PipelineStats>,
) -> Option<(String, FileStatus)> {
    collect_file_with_retry(ports, meta, key, tx, stats, &default_retry()).await
}

/// [`collect_file`], opening the object with `policy`.
pub async fn collect_file_with_retry(
    ports: &CollectorPorts,
    meta: ObjectMeta,
    key: TrailKey,
    tx: mpsc::Sender<FileBatch>,
    stats: &Arc<PipelineStats>,
    policy: &RetryPolicy,
) -> Option<(String, FileStatus)> {
    let location = ports.source.locate(&meta.key);
    let outcome = if key.kind == ObjectKind::Digest {
        if let Some(checker) = &ports.integrity {
            if let Err(e) = check_digest(checker, &meta, &key, &location).await {
                // Recorded as failed, so the next scan checks it again.
                warn!(object = %location, error = %e, "could not check the digest");
                let outcome = failed_outcome(&meta, &key, format!("could not check the digest: {e}"));
                return send_outcome(&tx, outcome).await;
            }
        }
        PipelineStats::add(&stats.digests, 1);
        FileOutcome {
            key: meta.key.clone(),
            kind: key.kind,
            account_id: key.account_id.clone(),
            region: key.region.clone(),
            size: meta.size,
            modified: meta.modified,
            status: FileStatus::Digest,
            events: 0,
            bytes: 0,
            rejected: vec![],
            error: None,
        }
    } else {
        let body = match retry(policy, &stats.port_calls, &location, || ports.source.open(&meta.key)).await {
            Ok(body) => body,
            Err(e) => {
                warn!(object = %location, error = %e, "could not open the file");
                let outcome = failed_outcome(&meta, &key, format!("could not open: {e}"));
                count_outcome(stats, &outcome, 0);
                return send_outcome(&tx, outcome).await;
            }
        };
        let tx_events = tx.clone();
        let shared_key: Arc<str> = meta.key.as_str().into();
        let stats_in = stats.clone();
        let read = tokio::task::spawn_blocking(move || {
            read_object(
                &shared_key,
                &key,
                &meta,
                body,
                &mut |chunk| {
                    let events = chunk.events.len() as u64;
                    PipelineStats::add(&stats_in.events_parsed, events);
                    PipelineStats::add(&stats_in.sessions_captured, chunk.sessions.len() as u64);
                    // In flight from here until the enricher has written them.
                    stats_in.take_in(events);
                    let sent = tx_events.blocking_send(FileBatch::Events { key: shared_key.clone(), events: chunk.events, sessions: chunk.sessions }).is_ok();
                    if !sent {
                        stats_in.let_go(events);
                    }
                    sent
                },
                &stats_in.stages,
            )
        })
        .await;
        match read {
            Ok(Ok((outcome, compressed))) => {
                count_outcome(stats, &outcome, compressed);
                if let Some(error) = &outcome.error {
                    match outcome.status {
                        FileStatus::Failed => warn!(object = %location, %error, events_kept = outcome.events, "file failed"),
                        _ => warn!(object = %location, status = %outcome.status, %error, "file read with problems"),
                    }
                }
                outcome
            }
            Ok(Err(Abandoned)) => {
                debug!(object = %location, "abandoned at shutdown; it will be read again");
                return None;
            }
            Err(e) => {
                warn!(object = %location, error = %e, "reading the file panicked");
                return None;
            }
        }
    };
    send_outcome(&tx, outcome).await
}

/// Checks one digest, logging each finding it opens once.
async fn check_digest(checker: &IntegrityChecker, meta: &ObjectMeta, key: &TrailKey, location: &str) -> Result<(), PortError> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let report = checker.check_digest(&meta.key, &key.account_id, &key.region, key.file_time, now).await?;
    for finding in &report.opened {
        warn!(object = %location, account_id = %finding.account_id, region = %finding.region, kind = finding.kind.as_str(), detail = %finding.detail, "trail integrity finding");
    }
    debug!(object = %location, files = report.files_checked, findings = report.findings.len(), resolved = report.alerts_resolved, "digest checked");
    Ok(())
}

fn failed_outcome(meta: &ObjectMeta, key: &TrailKey, error: String) -> FileOutcome {
    FileOutcome {
        key: meta.key.clone(),
        kind: key.kind,
        account_id: key.account_id.clone(),
        region: key.region.clone(),
        size: meta.size,
        modified: meta.modified,
        status: FileStatus::Failed,
        events: 0,
        bytes: 0,
        rejected: vec![],
        error: Some(error),
    }
}

fn count_outcome(stats: &PipelineStats, outcome: &FileOutcome, compressed: u64) {
    PipelineStats::add(&stats.files_read, 1);
    PipelineStats::add(&stats.bytes_compressed, compressed);
    PipelineStats::add(&stats.bytes_uncompressed, outcome.bytes);
    PipelineStats::add(&stats.events_rejected, outcome.rejected.len() as u64);
    let counter = match outcome.status {
        FileStatus::Done => &stats.files_done,
        FileStatus::Partial => &stats.files_partial,
        FileStatus::Empty => &stats.files_empty,
        FileStatus::Failed => &stats.files_failed,
        FileStatus::Digest => return,
    };
    PipelineStats::add(counter, 1);
}

async fn send_outcome(tx: &mpsc::Sender<FileBatch>, outcome: FileOutcome) -> Option<(String, FileStatus)> {
    let done = (outcome.key.clone(), outcome.status);
    tx.send(FileBatch::Finished(outcome)).await.ok().map(|()| done)
}
