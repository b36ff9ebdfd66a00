//! The embedded pipeline: a trail directory, the SQLite store, and the
//! collector and enricher connected by a bounded channel.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use trailwatch_collector::{CollectorConfig, CollectorPorts, Mode};
use trailwatch_core::identity::{PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::stats::PipelineStats;
use trailwatch_embedded::{DirSource, SqliteStore};
use trailwatch_enricher::{EnricherConfig, EnricherPorts};

/// Messages the collector may queue for the enricher.
const CHANNEL_MESSAGES: usize = 64;

/// Everything one pipeline run needs.
pub struct PipelineSetup {
    pub trail: PathBuf,
    pub prefix: String,
    pub workers: usize,
    pub mode: Mode,
    /// Resolve who is behind each event (off only to measure what it costs).
    pub resolve: bool,
}

/// Identity resolution over the store: sessions, the history fallback, and the pending set.
pub fn identity(store: &Arc<SqliteStore>) -> Arc<PendingSet> {
    let resolver = Arc::new(Resolver::new(store.clone(), Some(store.clone()), ResolverConfig::default()));
    Arc::new(PendingSet::new(resolver, store.clone(), PendingConfig::default()))
}

/// The database file under a data directory.
pub fn database_path(data: &Path) -> PathBuf {
    data.join("trailwatch.db")
}

/// Opens (creating if needed) the store under a data directory.
pub fn open_store(data: &Path) -> anyhow::Result<Arc<SqliteStore>> {
    let path = database_path(data);
    let store = SqliteStore::open(&path).with_context(|| format!("opening the database {}", path.display()))?;
    Ok(Arc::new(store))
}

pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Runs the collector and the enricher until the collector is done (one
/// scan) or `shutdown` fires (watching), and every received file is stored.
pub async fn run(
    setup: PipelineSetup,
    store: Arc<SqliteStore>,
    identity: Option<Arc<PendingSet>>,
    stats: Arc<PipelineStats>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if !setup.trail.is_dir() {
        anyhow::bail!("the trail directory {} does not exist or is not a directory", setup.trail.display());
    }
    let source = Arc::new(DirSource::new(&setup.trail));
    // Messages in flight: a chunk holds at most 1000 events (about 1.3 MB), so
    // memory stays bounded, while enough small files queue up behind a store
    // write for the enricher to write them together in one transaction.
    let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
    let enricher = tokio::spawn(trailwatch_enricher::run(
        EnricherConfig::default(),
        EnricherPorts { history: store.clone(), checkpoints: store.clone(), identity: if setup.resolve { identity } else { None } },
        rx,
        stats.clone(),
        shutdown.clone(),
    ));
    let collected = trailwatch_collector::run(
        CollectorConfig { workers: setup.workers, mode: setup.mode, prefix: setup.prefix },
        CollectorPorts { source, checkpoints: store.clone() },
        tx,
        stats,
        shutdown,
    )
    .await;
    enricher.await.context("the enricher stopped unexpectedly")?;
    collected.with_context(|| format!("ingesting {}", setup.trail.display()))
}

/// A progress bar on stderr while a pipeline runs, when stderr is a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    pub fn start(stats: Arc<PipelineStats>, cancel: CancellationToken) -> Self {
        let started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, started };
        }
        let bar = ProgressBar::new(0);
        bar.set_style(ProgressStyle::with_template("{spinner} {pos}/{len} files · {msg} · {elapsed}").unwrap_or_else(|_| ProgressStyle::default_bar()));
        let ticking = bar.clone();
        tokio::spawn(async move {
            loop {
                let queued = PipelineStats::get(&stats.files_queued);
                ticking.set_length(queued);
                ticking.set_position(PipelineStats::get(&stats.files_read) + PipelineStats::get(&stats.digests));
                let events = PipelineStats::get(&stats.events_stored);
                let secs = started.elapsed().as_secs_f64().max(0.001);
                ticking.set_message(format!("{} events stored ({:.0}/s)", crate::summary::thousands(events), events as f64 / secs));
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        Progress { bar: Some(bar), started }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
