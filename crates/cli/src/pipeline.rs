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

use secrecy::SecretString;
use trailwatch_collector::{CollectorConfig, CollectorPorts, Mode};
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::{AlertSink, AlertStore};
use trailwatch_core::identity::{PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::integrity::{IntegrityAlerts, IntegrityChecker, IntegrityPorts, PublicKeys, SidecarSignatures};
use trailwatch_core::memory::DiscardHistory;
use trailwatch_core::rules::{LoadError, RuleSet, RuleSource};
use trailwatch_core::stats::PipelineStats;
use trailwatch_embedded::sinks::{JsonlSink, StdoutFormat, StdoutSink, WebhookConfig, WebhookFormat, WebhookSink};
use trailwatch_embedded::{DirSource, SqliteStore};
use trailwatch_enricher::alerting::{AlertPorts, StoredEvents};
use trailwatch_enricher::delivery::{self, DeliveryConfig, DeliveryHandle, DeliveryStats};
use trailwatch_enricher::{EnricherConfig, EnricherPorts};

use crate::cli::AlertArgs;

/// Messages the collector may queue for the enricher: at most 16,000 events
/// (about 50 MB) wait, whatever the file sizes.
const CHANNEL_MESSAGES: usize = 16;

/// Everything one pipeline run needs.
pub struct PipelineSetup {
    pub trail: PathBuf,
    pub prefix: String,
    pub workers: usize,
    pub mode: Mode,
    /// Resolve who is behind each event (off only to measure what it costs).
    pub resolve: bool,
    /// Keep event history (off: events are dropped after the rules).
    pub history: bool,
    /// Told when a file lands in the trail (watch mode): scan at once.
    pub wake: Option<Arc<tokio::sync::Notify>>,
    /// Rules and alerts; None evaluates no rules.
    pub alerts: Option<AlertPorts>,
    /// The digests' public keys (`--public-keys`); None checks no signatures.
    pub public_keys: Option<PathBuf>,
}

/// The digest checker over the trail and the store: findings raise alerts
/// when `alerts` is set.
pub fn integrity(
    source: Arc<DirSource>,
    store: &Arc<SqliteStore>,
    public_keys: Option<&Path>,
    alerts: Option<&AlertPorts>,
) -> anyhow::Result<Arc<IntegrityChecker>> {
    let keys = load_public_keys(public_keys)?;
    let alert_store: Arc<dyn AlertStore> = store.clone();
    Ok(Arc::new(IntegrityChecker::new(IntegrityPorts {
        source: source.clone(),
        signatures: Arc::new(SidecarSignatures::new(source)),
        keys: Arc::new(keys),
        store: store.clone(),
        alerts: alerts.map(|a| IntegrityAlerts { lifecycle: a.lifecycle.clone(), store: alert_store }),
    })))
}

/// The public keys of digest signatures in `path` (the JSON `aws
/// cloudtrail list-public-keys` prints); none without a path.
pub fn load_public_keys(path: Option<&Path>) -> anyhow::Result<PublicKeys> {
    Ok(match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading the public keys file {}", path.display()))?;
            PublicKeys::from_list_json(&text, &path.display().to_string())?
        }
        None => PublicKeys::none(),
    })
}

/// Identity resolution over the store: sessions, the history fallback, and the pending set.
pub fn identity(store: &Arc<SqliteStore>) -> Arc<PendingSet> {
    let resolver = Arc::new(Resolver::new(store.clone(), Some(store.clone()), ResolverConfig::default()));
    Arc::new(PendingSet::new(resolver, store.clone(), PendingConfig::default()))
}

/// The accounts file kept under a data directory (a copy of the last one
/// given), so commands that read the store know the account names too.
pub fn accounts_copy(data: &Path) -> PathBuf {
    data.join("accounts.json")
}

/// The organization's accounts: from `explicit` (`--accounts`), else the
/// trail's own `accounts.json`, else the copy kept in the data directory.
/// A file given or found is copied into the data directory.
pub fn load_accounts(explicit: Option<&Path>, trail: Option<&Path>, data: &Path) -> anyhow::Result<Arc<AccountDirectory>> {
    let beside_trail = trail.map(|t| t.join("accounts.json")).filter(|p| p.is_file());
    let (path, keep) = match (explicit, beside_trail) {
        (Some(path), _) => (path.to_owned(), true),
        (None, Some(path)) => (path, true),
        (None, None) if accounts_copy(data).is_file() => (accounts_copy(data), false),
        (None, None) => return Ok(Arc::new(AccountDirectory::new())),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the accounts file {}", path.display()))?;
    let directory = AccountDirectory::from_list_accounts(&text, &path.display().to_string())?;
    if keep {
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        std::fs::write(accounts_copy(data), &text).with_context(|| format!("keeping a copy of the accounts file in {}", data.display()))?;
    }
    Ok(Arc::new(directory))
}

/// The sinks the pipeline last ran with, one name a line, kept in the data
/// directory so a person's acknowledgement from another process is queued
/// for them too.
fn sinks_file(data: &Path) -> PathBuf {
    data.join("sinks")
}

pub fn record_sinks(data: &Path, names: &[String]) -> anyhow::Result<()> {
    let mut text = names.join("\n");
    text.push('\n');
    std::fs::write(sinks_file(data), text).with_context(|| format!("writing {}", sinks_file(data).display()))
}

pub fn recorded_sinks(data: &Path) -> Vec<String> {
    std::fs::read_to_string(sinks_file(data)).map(|t| t.lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()).unwrap_or_default()
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
    let integrity = integrity(source.clone(), &store, setup.public_keys.as_deref(), setup.alerts.as_ref())?;
    // Messages in flight: a chunk holds at most 1000 events (about 3 MB with
    // its record), so memory stays bounded; the enricher fills its batches
    // while the previous one is written, so a short queue is enough.
    let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
    let enricher = tokio::spawn(trailwatch_enricher::run(
        EnricherConfig::default(),
        EnricherPorts {
            history: if setup.history { store.clone() } else { Arc::new(DiscardHistory::new()) },
            checkpoints: store.clone(),
            identity: if setup.resolve { identity } else { None },
            // A restart counts a threshold burst whole: the windows are refilled from the stored events.
            alerts: setup.alerts.map(|mut alerts| {
                if setup.history {
                    alerts.refill = Some(Arc::new(StoredEvents(store.clone())));
                }
                alerts
            }),
        },
        rx,
        stats.clone(),
        shutdown.clone(),
    ));
    let collected = trailwatch_collector::run(
        CollectorConfig { workers: setup.workers, mode: setup.mode, prefix: setup.prefix, wake: setup.wake },
        CollectorPorts { source, checkpoints: store.clone(), integrity: Some(integrity) },
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

/// The rules to run: the built-in pack (unless `builtin` is false) with the
/// rules of `dir` added (a rule with a built-in id replaces it). Load errors
/// of any file come back together, each naming its file, line and reason.
pub fn load_rules(dir: Option<&Path>, builtin: bool) -> anyhow::Result<Result<Arc<RuleSet>, Vec<LoadError>>> {
    let builtin_sources = if builtin { crate::builtin_rules::sources() } else { Vec::new() };
    let user = match dir {
        Some(dir) => {
            if !dir.is_dir() {
                anyhow::bail!("--rules {}: not a directory", dir.display());
            }
            match RuleSource::read_dir(dir) {
                Ok(sources) => sources,
                Err(e) => return Ok(Err(vec![e])),
            }
        }
        None => Vec::new(),
    };
    Ok(RuleSet::load_layers(&builtin_sources, &user).map(Arc::new))
}

/// A duration as the rule files write it: `90s`, `5m`, `1h`, `7d`.
pub fn duration_text(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Rules, the alert lifecycle and the sinks of one `run` or `ingest`.
pub struct Alerting {
    pub ports: AlertPorts,
    pub sinks: Vec<Arc<dyn AlertSink>>,
    pub stats: Arc<DeliveryStats>,
    store: Arc<SqliteStore>,
}

impl Alerting {
    /// Loads the rules (all load errors together), the account names and
    /// the sinks the options ask for; None with `--no-rules`.
    pub fn setup(
        args: &AlertArgs,
        print: bool,
        extra: Vec<Arc<dyn AlertSink>>,
        store: &Arc<SqliteStore>,
        trail: Option<&Path>,
        data: &Path,
    ) -> anyhow::Result<Option<Alerting>> {
        let mut accounts = (*load_accounts(args.accounts.as_deref(), trail, data)?).clone();
        crate::api::FileAliases::apply(data, &mut accounts)?;
        let accounts = Arc::new(accounts);
        if args.no_rules {
            return Ok(None);
        }
        let rules = match load_rules(args.rules.as_deref(), true)? {
            Ok(rules) => rules,
            Err(errors) => {
                let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                anyhow::bail!("{} rule file error(s):\n{}", errors.len(), list.join("\n"));
            }
        };
        let mut sinks: Vec<Arc<dyn AlertSink>> = extra;
        if print {
            sinks.push(Arc::new(StdoutSink::new(StdoutFormat::Text)));
        }
        if let Some(path) = &args.alerts_file {
            sinks.push(Arc::new(JsonlSink::new(path.clone())));
        }
        if let Some(url) = &args.webhook {
            let mut config = WebhookConfig::new("webhook", url.clone());
            if args.webhook_format == "pagerduty" {
                let key = args
                    .pagerduty_routing_key
                    .as_ref()
                    .context("--webhook-format pagerduty needs --pagerduty-routing-key (or TRAILWATCH_PAGERDUTY_ROUTING_KEY)")?;
                config.format = WebhookFormat::PagerDuty { routing_key: SecretString::from(key.expose().to_owned()) };
            }
            for header in &args.webhook_headers {
                let (name, value) =
                    header.expose().split_once(':').with_context(|| "--webhook-header must be `Name: value`, e.g. `Authorization: Bearer …`".to_owned())?;
                config.headers.push((name.trim().to_owned(), SecretString::from(value.trim().to_owned())));
            }
            sinks.push(Arc::new(WebhookSink::new(config).context("--webhook")?));
        }
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_owned()).collect();
        record_sinks(data, &names)?;
        let lifecycle = Arc::new(Lifecycle::new(store.clone(), names, LifecycleConfig::default()));
        let ports = AlertPorts {
            rules,
            lifecycle,
            accounts: Arc::new((*accounts).clone().into()),
            delivery: Some(DeliveryHandle::new()),
            detector: Default::default(),
            refill: None,
        };
        Ok(Some(Alerting { ports, sinks, stats: Arc::new(DeliveryStats::default()), store: store.clone() }))
    }

    pub fn rule_count(&self) -> usize {
        self.ports.rules.rules().len()
    }

    /// Starts delivering the outbox; the task ends after `shutdown`.
    pub fn start_delivery(&self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        let handle = self.ports.delivery.clone().unwrap_or_default();
        tokio::spawn(delivery::run(self.store.clone(), self.sinks.clone(), DeliveryConfig::default(), self.stats.clone(), handle, shutdown))
    }

    /// Waits until the sinks have taken every queued transition, or `limit`
    /// passes; returns how many are still queued (they go out next time).
    pub async fn drain(&self, limit: Duration) -> anyhow::Result<u64> {
        let names: Vec<&str> = self.sinks.iter().map(|s| s.name()).collect();
        let deadline = Instant::now() + limit;
        loop {
            let outstanding = self.store.outstanding().await.context("reading the alert outbox")?;
            let left: u64 = outstanding.iter().filter(|(sink, _)| names.contains(&sink.as_str())).map(|(_, n)| *n).sum();
            if left == 0 || Instant::now() >= deadline {
                return Ok(left);
            }
            if let Some(handle) = &self.ports.delivery {
                handle.notify();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
