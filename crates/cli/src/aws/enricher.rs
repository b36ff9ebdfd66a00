//! `trailwatch enricher`: reads the files the collector (or `backfill`)
//! hands on, and runs them through the same enricher as the embedded mode:
//! sessions recorded, origins resolved (moka → session table → one Athena
//! query per batch for what is still unknown), rules checked, alerts stored in
//! DynamoDB with their outbox and published to SNS, enriched events written
//! to S3 for Athena.
//!
//! A queue message is deleted only once the ledger has recorded its file as
//! final — after its events are stored and its alerts committed. A file that
//! failed (a store error, an unreadable object) keeps its message, which is
//! received again after its visibility timeout and, after the queue's
//! maxReceiveCount, lands in the dead-letter queue.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use trailwatch_aws::alerts::DynamoAlertStore;
use trailwatch_aws::athena::{Athena, AthenaArchive};
use trailwatch_aws::clients::Clients;
use trailwatch_aws::cloudtrail::CloudTrailKeys;
use trailwatch_aws::dynamo::{DynamoAliases, DynamoIntegrityStore, DynamoLedger, DynamoPendingStore, DynamoSessionStore};
use trailwatch_aws::history::S3History;
use trailwatch_aws::organizations::load_directory;
use trailwatch_aws::s3::{S3Signatures, S3Source};
use trailwatch_aws::sns::SnsSink;
use trailwatch_aws::sqs::{Queue, Received, VisibilityKeeper};
use trailwatch_collector::{collect_file, CollectorPorts};
use trailwatch_core::accounts::{AccountDirectory, SharedDirectory};
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::{AlertSink, AlertStore};
use trailwatch_core::event::{FileBatch, FileOutcome, RejectedRecord};
use trailwatch_core::identity::{PendingConfig, PendingSet, Resolver, ResolverConfig, SessionArchive};
use trailwatch_core::integrity::{IntegrityAlerts, IntegrityChecker, IntegrityPorts};
use trailwatch_core::layout::classify;
use trailwatch_core::ports::{Checkpoints, FileActivity, LedgerEntry, LedgerSummary, ObjectMeta, PortError};
use trailwatch_core::rules::DetectorConfig;
use trailwatch_core::stats::{CountingAlertStore, PipelineStats};
use trailwatch_core::time::EpochMillis;
use trailwatch_enricher::alerting::{AlertPorts, WindowBeforeBatch};
use trailwatch_enricher::delivery::{self, DeliveryConfig, DeliveryHandle, DeliveryStats};
use trailwatch_enricher::{EnricherConfig, EnricherPorts};

use super::args::{AwsOptions, EnricherArgs};
use super::metrics::{self, Counters, QueueGauges};
use super::{queue_url, FileMessage, Settings, SESSION_MARGIN_MS};
use crate::commands::shutdown_on_signal;
use crate::pipeline::load_rules;

/// How long the Athena fallback remembers that a key was not found.
const ARCHIVE_NEGATIVE_TTL: Duration = Duration::from_secs(15 * 60);
/// How far before its use a session can have been issued (GetSessionToken and
/// GetFederationToken last up to 36 h): the Athena fallback scans that many days back.
const ARCHIVE_LOOKBACK: Duration = Duration::from_secs(36 * 3600);

/// A received message whose file is in the pipeline.
struct InFlight {
    receipt: String,
    message_id: String,
    keeper: VisibilityKeeper,
}

/// The ledger, acknowledging queue messages once their file is recorded.
struct AckingLedger {
    inner: Arc<DynamoLedger>,
    queue: Queue,
    in_flight: Mutex<HashMap<String, Vec<InFlight>>>,
    counters: Arc<Counters>,
}

impl AckingLedger {
    fn track(&self, key: &str, message: &Received, keeper: VisibilityKeeper) {
        if let Ok(mut all) = self.in_flight.lock() {
            all.entry(key.to_owned()).or_default().push(InFlight { receipt: message.receipt_handle.clone(), message_id: message.message_id.clone(), keeper });
        }
    }

    fn take(&self, key: &str) -> Vec<InFlight> {
        self.in_flight.lock().map(|mut all| all.remove(key).unwrap_or_default()).unwrap_or_default()
    }
}

#[async_trait]
impl Checkpoints for AckingLedger {
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError> {
        self.inner.lookup(keys).await
    }

    async fn record(&self, outcomes: Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError> {
        if let Err(e) = self.inner.record(outcomes.clone(), at).await {
            // Not recorded: the files' messages must go back to the queue to
            // be read again, so their visibility is no longer extended (kept
            // extended, they would stay hidden for as long as this process runs).
            for outcome in outcomes.iter() {
                for message in self.take(&outcome.key) {
                    message.keeper.stop().await;
                }
            }
            return Err(e);
        }
        for outcome in outcomes.iter() {
            for message in self.take(&outcome.key) {
                message.keeper.stop().await;
                if !outcome.status.is_final() {
                    // Received again after its visibility timeout; the dead-letter queue after maxReceiveCount.
                    warn!(key = %outcome.key, status = %outcome.status, error = outcome.error.as_deref().unwrap_or("-"), "file not finished; its message will be received again");
                    continue;
                }
                match self.queue.delete(&message.receipt).await {
                    Ok(()) => Counters::add(&self.counters.messages_acknowledged, 1),
                    Err(e) => {
                        warn!(message_id = %message.message_id, error = %e, "deleting a finished file's message failed; it will be received again and found done")
                    }
                }
            }
        }
        Ok(())
    }

    async fn summary(&self) -> Result<LedgerSummary, PortError> {
        self.inner.summary().await
    }

    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError> {
        self.inner.problems(limit).await
    }

    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError> {
        self.inner.rejected(key).await
    }

    async fn activity(&self) -> Result<Vec<FileActivity>, PortError> {
        self.inner.activity().await
    }
}

/// The account directory from Organizations with the overrides table applied.
pub async fn load_accounts(clients: &Clients, settings: &Settings, organizations: bool) -> anyhow::Result<AccountDirectory> {
    let mut directory = if organizations {
        load_directory(&clients.organizations).await.context("listing the organization's accounts (Organizations ListAccounts)")?
    } else {
        AccountDirectory::new()
    };
    let overrides = DynamoAliases::new(clients.dynamodb.clone(), settings.tables.aliases.clone());
    let overrides = overrides.all().await.context("reading the account alias overrides")?;
    for (id, alias) in &overrides {
        directory.set_alias(id, alias);
    }
    Ok(directory)
}

/// Refreshes `shared` every `every`, keeping the last good copy when a refresh fails.
pub fn spawn_refresh(
    clients: Clients,
    settings: Arc<Settings>,
    organizations: bool,
    shared: Arc<SharedDirectory>,
    every: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match load_accounts(&clients, &settings, organizations).await {
                Ok(directory) => {
                    info!(accounts = directory.len(), "account list refreshed");
                    shared.replace(directory);
                }
                Err(e) => warn!(error = format!("{e:#}"), "refreshing the account list failed; keeping the last one"),
            }
        }
    });
}

/// Identity resolution over the session table, the pending table and (when
/// `athena`) Athena; and that Athena fallback, whose counters `/metrics` shows.
pub fn identity_parts(clients: &Clients, settings: &Settings, athena: bool) -> anyhow::Result<(Arc<PendingSet>, Option<Arc<AthenaArchive>>)> {
    let sessions = Arc::new(DynamoSessionStore::new(clients.dynamodb.clone(), settings.tables.sessions.clone(), SESSION_MARGIN_MS));
    let archive = if athena {
        let archive = AthenaArchive::new(settings.athena(clients), settings.options.athena_trail_table.clone(), ARCHIVE_LOOKBACK, ARCHIVE_NEGATIVE_TTL)
            .context("the Athena fallback's settings")?;
        Some(Arc::new(archive))
    } else {
        None
    };
    let fallback: Option<Arc<dyn SessionArchive>> = archive.clone().map(|a| a as Arc<dyn SessionArchive>);
    // The runner stops a query at --athena-timeout itself (StopQueryExecution):
    // the resolver's own bound is later, so it never abandons a query still running.
    let config = ResolverConfig {
        archive_timeout: Duration::from_secs(settings.options.athena_timeout.max(1) + 60),
        archive_retry: Duration::from_secs(settings.options.athena_retry.max(1)),
        ..ResolverConfig::default()
    };
    let resolver = Arc::new(Resolver::new(sessions, fallback, config));
    let pending = Arc::new(DynamoPendingStore::new(clients.dynamodb.clone(), settings.tables.pending.clone()));
    Ok((Arc::new(PendingSet::new(resolver, pending, pending_config(&settings.options))), archive))
}

/// How long an event waits for a missing session: `--pending-bound-minutes` of trail time.
pub fn pending_config(options: &AwsOptions) -> PendingConfig {
    // The flag is at most 100,000 minutes, so the product fits.
    let minutes = i64::try_from(options.pending_bound_minutes).unwrap_or(100_000);
    PendingConfig { bound_ms: minutes * 60_000, ..PendingConfig::default() }
}

/// The digest checker of AWS mode: digests and log files read from the
/// trail bucket, signatures from the digests' metadata, public keys from
/// `--public-keys` and else from CloudTrail's `ListPublicKeys` in each
/// digest's region, state in the integrity table; findings raise
/// `trail-integrity` alerts through `alerts`.
pub fn integrity_checker(
    clients: &Clients,
    settings: &Settings,
    source: &Arc<S3Source>,
    public_keys: Option<&std::path::Path>,
    alerts: IntegrityAlerts,
) -> anyhow::Result<Arc<IntegrityChecker>> {
    let keys = crate::pipeline::load_public_keys(public_keys)?;
    let store = Arc::new(DynamoIntegrityStore::new(clients.dynamodb.clone(), settings.tables.integrity.clone(), settings.tables.ledger.clone()));
    let ports = IntegrityPorts { source: source.clone(), signatures: Arc::new(S3Signatures::of(source)), keys: Arc::new(keys), store, alerts: Some(alerts) };
    Ok(Arc::new(IntegrityChecker::new(ports).with_key_fetcher(Arc::new(CloudTrailKeys::new(clients.cloudtrail.clone())))))
}

/// The enriched history in S3, read through this Athena runner (whose counters `/metrics` shows).
pub fn history_with(clients: &Clients, settings: &Settings, athena: Arc<Athena>) -> anyhow::Result<Arc<S3History>> {
    Ok(Arc::new(S3History::new(
        clients.s3.clone(),
        settings.history_bucket()?.to_owned(),
        settings.options.history_prefix.clone(),
        Some(athena),
        settings.options.athena_events_table.clone(),
    )))
}

pub async fn run(args: EnricherArgs) -> anyhow::Result<ExitCode> {
    let settings = Arc::new(Settings::from_options(&args.aws)?);
    let clients = settings.connect("enricher").await?;
    let queue_url = queue_url(&clients, args.enricher_queue.as_deref(), "--enricher-queue", "TRAILWATCH_ENRICHER_QUEUE").await?;
    let topic = args.alert_topic_arn.clone().context("--alert-topic-arn (TRAILWATCH_ALERT_TOPIC_ARN) is not set")?;
    let bucket = settings.trail_bucket()?.to_owned();
    let queue = Queue::new(clients.sqs.clone(), queue_url.clone());
    let shutdown = shutdown_on_signal();
    let counters = Arc::new(Counters::default());
    let stats = Arc::new(PipelineStats::default());

    let ledger = Arc::new(AckingLedger {
        inner: Arc::new(DynamoLedger::new(clients.dynamodb.clone(), settings.tables.ledger.clone())),
        queue: queue.clone(),
        in_flight: Mutex::new(HashMap::new()),
        counters: counters.clone(),
    });
    let rules = match load_rules(args.rules.as_deref(), true)? {
        Ok(rules) => rules,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
            anyhow::bail!("{} rule file error(s):\n{}", errors.len(), list.join("\n"));
        }
    };
    let directory = load_accounts(&clients, &settings, !args.no_organizations).await?;
    info!(accounts = directory.len(), rules = rules.rules().len(), "enricher ready");
    let accounts = Arc::new(SharedDirectory::new(directory));
    spawn_refresh(clients.clone(), settings.clone(), !args.no_organizations, accounts.clone(), Duration::from_secs(args.accounts_refresh), shutdown.clone());

    let alert_store: Arc<dyn AlertStore> = Arc::new(DynamoAlertStore::new(clients.dynamodb.clone(), settings.tables.alerts.clone()));
    // The lifecycle's commits are counted by severity on their way to the store.
    let counted: Arc<dyn AlertStore> = Arc::new(CountingAlertStore::new(alert_store.clone(), stats.clone()));
    let sns: Arc<dyn AlertSink> = Arc::new(SnsSink::new(clients.sns.clone(), topic));
    let lifecycle = Arc::new(Lifecycle::new(counted, vec![sns.name().to_owned()], LifecycleConfig::default()));
    let handle = DeliveryHandle::new();
    let delivery_stop = CancellationToken::new();
    let delivery_stats = Arc::new(DeliveryStats::default());
    let delivery =
        tokio::spawn(delivery::run(alert_store.clone(), vec![sns], DeliveryConfig::default(), delivery_stats.clone(), handle.clone(), delivery_stop.clone()));

    let source = Arc::new(S3Source::new(clients.s3.clone(), bucket.clone()));
    let integrity = if args.no_digest_check {
        None
    } else {
        Some(integrity_checker(
            &clients,
            &settings,
            &source,
            args.public_keys.as_deref(),
            IntegrityAlerts { lifecycle: lifecycle.clone(), store: alert_store.clone() },
        )?)
    };
    let history_athena = settings.athena(&clients);
    let history = history_with(&clients, &settings, history_athena.clone())?;
    let (identity, archive) = identity_parts(&clients, &settings, !args.no_athena)?;
    let gauges = Arc::new(QueueGauges::default());
    let mut exported = metrics::Exported::new("enricher", clients.calls.clone())
        .counters(counters.clone())
        .pipeline(stats.clone())
        .resolver(identity.resolver().clone())
        .archive(archive.clone())
        .athena("history", history_athena)
        .delivery(delivery_stats)
        .queues(gauges.clone());
    if let Some(archive) = &archive {
        exported = exported.athena("session_archive", archive.athena().clone());
    }
    if let Some(checker) = &integrity {
        exported = exported.integrity(checker.clone());
    }
    let _metrics = metrics::serve(settings.options.metrics_listen, exported, shutdown.clone()).await?;
    if settings.options.metrics_listen.is_some() {
        metrics::watch_queue(clients.clone(), queue_url.clone(), Duration::from_secs(args.queue.queue_metrics_seconds), gauges, shutdown.clone());
    }
    let (tx, rx) = mpsc::channel::<FileBatch>(64);
    let enricher = tokio::spawn(trailwatch_enricher::run(
        EnricherConfig::default(),
        EnricherPorts {
            history: history.clone(),
            checkpoints: ledger.clone(),
            identity: Some(identity),
            alerts: Some(AlertPorts {
                rules,
                lifecycle,
                accounts,
                delivery: Some(handle),
                detector: DetectorConfig { lateness_ms: args.rule_lateness_minutes as i64 * 60_000, ..DetectorConfig::default() },
                // After a restart, threshold windows are refilled from the
                // events stored before the first batch's (one Athena query).
                refill: Some(Arc::new(WindowBeforeBatch(history.clone()))),
            }),
        },
        rx,
        stats.clone(),
        shutdown.clone(),
    ));

    let ports = CollectorPorts { source, checkpoints: ledger.clone(), integrity };
    let visibility = Duration::from_secs(args.queue.visibility_seconds);
    let wait = Duration::from_secs(args.queue.wait_seconds);
    let permits = Arc::new(Semaphore::new(usize::from(args.queue.workers)));
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    info!(queue = %queue_url, "enricher started");
    while !shutdown.is_cancelled() {
        let free = permits.available_permits().clamp(1, 10) as i32;
        let Some(messages) = super::receive(&queue, free, wait, visibility, &mut failures, &shutdown).await else { break };
        for message in messages {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let (ports, ledger, queue, tx, stats, counters, bucket) =
                (ports.clone(), ledger.clone(), queue.clone(), tx.clone(), stats.clone(), counters.clone(), bucket.clone());
            tasks.spawn(async move {
                accept(message, &bucket, &ports, &ledger, &queue, tx, &stats, &counters, visibility).await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    info!(in_flight = tasks.len(), "stopping: finishing the files in flight");
    while tasks.join_next().await.is_some() {}
    drop(tx);
    enricher.await.context("the enricher stopped unexpectedly")?;
    delivery_stop.cancel();
    let _ = delivery.await;
    Ok(ExitCode::SUCCESS)
}

/// Checks one message and hands its file to the pipeline.
#[allow(clippy::too_many_arguments)]
async fn accept(
    message: Received,
    bucket: &str,
    ports: &CollectorPorts,
    ledger: &AckingLedger,
    queue: &Queue,
    tx: mpsc::Sender<FileBatch>,
    stats: &Arc<PipelineStats>,
    counters: &Counters,
    visibility: Duration,
) {
    let file: FileMessage = match serde_json::from_str(&message.body) {
        Ok(f) => f,
        Err(e) => {
            Counters::add(&counters.poison_messages, 1);
            warn!(message_id = %message.message_id, receives = message.receive_count, error = %e, "not a file message; it goes to the dead-letter queue after the queue's maxReceiveCount");
            return;
        }
    };
    let location = format!("s3://{}/{}", file.bucket, file.key);
    if file.bucket != bucket {
        Counters::add(&counters.poison_messages, 1);
        warn!(object = %location, expected = %bucket, "a file of another bucket; left for the dead-letter queue");
        return;
    }
    let trail_key = match classify(&file.key) {
        Ok(k) => k,
        Err(reason) => {
            Counters::add(&counters.poison_messages, 1);
            warn!(object = %location, %reason, "not a trail file; left for the dead-letter queue");
            return;
        }
    };
    let meta = ObjectMeta { key: file.key.clone(), size: file.size, modified: file.modified };
    match ledger.inner.lookup(std::slice::from_ref(&file.key)).await {
        Ok(entries) if !LedgerEntry::needs_work(entries.get(&file.key), &meta) => {
            Counters::add(&counters.files_already_done, 1);
            if let Err(e) = queue.delete(&message.receipt_handle).await {
                warn!(object = %location, error = %e, "deleting the message of a file already done failed");
            }
            return;
        }
        Ok(_) => {}
        Err(e) => {
            warn!(object = %location, error = %e, "reading the ledger failed; the message will be received again");
            return;
        }
    }
    let keeper = VisibilityKeeper::start(queue.clone(), message.receipt_handle.clone(), visibility);
    ledger.track(&file.key, &message, keeper);
    if collect_file(ports, meta, trail_key, tx, stats).await.is_none() {
        for left in ledger.take(&file.key) {
            left.keeper.stop().await;
        }
    }
}
