//! `trailwatch collector`: consumes the trail bucket's object notifications
//! from SQS. For each new log file it claims the file in the ledger (so a
//! redelivered notification, or two collectors at once, read it once),
//! streams it from S3, records the sessions it issued in the session table,
//! and hands it to the enricher through a queue with a delay, so sessions
//! from files delivered at the same time land before the enricher resolves.
//! The notification is deleted only after all of that; a message that cannot
//! be understood is left alone and reaches the dead-letter queue after the
//! queue's maxReceiveCount.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use trailwatch_aws::dynamo::{Claim, DynamoLedger, DynamoSessionStore};
use trailwatch_aws::s3::S3Source;
use trailwatch_aws::sqs::{parse_notification, Notification, ObjectRef, Queue, Received, VisibilityKeeper};
use trailwatch_collector::read_object;
use trailwatch_core::identity::{Session, SessionStore};
use trailwatch_core::layout::{classify, ObjectKind};
use trailwatch_core::ports::{LogSource, PortError};

use super::args::CollectorArgs;
use super::metrics::{self, Counters, QueueGauges};
use super::{queue_url, FileMessage, Settings, SESSION_MARGIN_MS};
use crate::commands::{now_ms, shutdown_on_signal};

/// Sessions written to the table at once while a file is read.
const SESSION_BATCH: usize = 500;

struct Collector {
    bucket: String,
    source: Arc<S3Source>,
    ledger: Arc<DynamoLedger>,
    sessions: Arc<DynamoSessionStore>,
    notifications: Queue,
    enricher: Queue,
    delay: Duration,
    visibility: Duration,
    claim_ms: i64,
    owner: String,
    counters: Arc<Counters>,
}

/// What became of one notified object.
enum Handled {
    /// Read and handed on, or nothing to do (not a trail file, already done).
    Finished,
    /// Another collector holds it until this time: look again then.
    Busy { until: i64 },
}

pub async fn run(args: CollectorArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_options(&args.aws)?;
    let clients = settings.connect("collector").await?;
    let notifications = queue_url(&clients, args.notification_queue.as_deref(), "--notification-queue", "TRAILWATCH_NOTIFICATION_QUEUE").await?;
    let enricher = queue_url(&clients, args.enricher_queue.as_deref(), "--enricher-queue", "TRAILWATCH_ENRICHER_QUEUE").await?;
    let bucket = settings.trail_bucket()?.to_owned();
    let counters = Arc::new(Counters::default());
    let collector = Arc::new(Collector {
        source: Arc::new(S3Source::new(clients.s3.clone(), bucket.clone())),
        bucket,
        ledger: Arc::new(DynamoLedger::new(clients.dynamodb.clone(), settings.tables.ledger.clone())),
        sessions: Arc::new(DynamoSessionStore::new(clients.dynamodb.clone(), settings.tables.sessions.clone(), SESSION_MARGIN_MS)),
        notifications: Queue::new(clients.sqs.clone(), notifications.clone()),
        enricher: Queue::new(clients.sqs.clone(), enricher),
        delay: Duration::from_secs(args.enricher_delay),
        visibility: Duration::from_secs(args.queue.visibility_seconds),
        claim_ms: args.claim_seconds as i64 * 1000,
        owner: owner_id("collector"),
        counters: counters.clone(),
    });
    let shutdown = shutdown_on_signal();
    let gauges = Arc::new(QueueGauges::default());
    let exported = metrics::Exported::new("collector", clients.calls.clone()).counters(counters.clone()).queues(gauges.clone());
    let _metrics = metrics::serve(settings.options.metrics_listen, exported, shutdown.clone()).await?;
    if settings.options.metrics_listen.is_some() {
        let every = Duration::from_secs(args.queue.queue_metrics_seconds);
        metrics::watch_queue(clients.clone(), notifications.clone(), every, gauges, shutdown.clone());
    }
    info!(queue = %notifications, owner = %collector.owner, "collector started");
    let wait = Duration::from_secs(args.queue.wait_seconds);
    let permits = Arc::new(Semaphore::new(usize::from(args.queue.workers)));
    let mut tasks = JoinSet::new();
    let mut failures = 0u32;
    while !shutdown.is_cancelled() {
        // Receive only as many as there are free workers: a message waiting in
        // this process is invisible to other collectors.
        let free = permits.available_permits().clamp(1, 10) as i32;
        let Some(messages) = super::receive(&collector.notifications, free, wait, collector.visibility, &mut failures, &shutdown).await else { break };
        for message in messages {
            let Ok(permit) = permits.clone().acquire_owned().await else { break };
            let collector = collector.clone();
            tasks.spawn(async move {
                collector.handle(message).await;
                drop(permit);
            });
        }
        while tasks.try_join_next().is_some() {}
    }
    info!(in_flight = tasks.len(), "stopping: finishing the messages in flight");
    while tasks.join_next().await.is_some() {}
    Ok(ExitCode::SUCCESS)
}

/// An id naming this process in claims: host and process id.
pub fn owner_id(service: &str) -> String {
    let host = std::env::var("HOSTNAME").ok().or_else(|| std::fs::read_to_string("/etc/hostname").ok()).unwrap_or_default();
    format!("{service}@{}:{}", host.trim(), std::process::id())
}

impl Collector {
    async fn handle(&self, message: Received) {
        let notification = match parse_notification(&message.body) {
            Ok(n) => n,
            Err(e) => {
                // Left undeleted: the queue's redrive policy moves it to the dead-letter queue.
                Counters::add(&self.counters.poison_messages, 1);
                warn!(message_id = %message.message_id, receives = message.receive_count, error = %e, "not an S3 notification; it goes to the dead-letter queue after the queue's maxReceiveCount");
                return;
            }
        };
        let objects = match notification {
            Notification::Test => {
                debug!(message_id = %message.message_id, "S3 test event ignored");
                self.delete(&message).await;
                return;
            }
            Notification::Objects(objects) => objects,
        };
        let keeper = VisibilityKeeper::start(self.notifications.clone(), message.receipt_handle.clone(), self.visibility);
        let mut busy_until: Option<i64> = None;
        let mut failed = false;
        for object in &objects {
            match self.handle_object(object).await {
                Ok(Handled::Finished) => {}
                Ok(Handled::Busy { until }) => busy_until = Some(busy_until.map_or(until, |u| u.max(until))),
                Err(e) => {
                    failed = true;
                    Counters::add(&self.counters.files_failed, 1);
                    warn!(object = %format!("s3://{}/{}", object.bucket, object.key), error = %e, retryable = e.is_retryable(), "collecting the file failed; its notification will be received again");
                }
            }
        }
        keeper.stop().await;
        if failed {
            return;
        }
        match busy_until {
            None => self.delete(&message).await,
            Some(until) => {
                // Look again when the other collector's claim runs out.
                let wait = Duration::from_millis((until - now_ms()).clamp(1000, 12 * 3600 * 1000) as u64);
                if let Err(e) = self.notifications.extend(&message.receipt_handle, wait).await {
                    warn!(message_id = %message.message_id, error = %e, "could not postpone a notification of a file another collector holds");
                }
            }
        }
    }

    async fn delete(&self, message: &Received) {
        if let Err(e) = self.notifications.delete(&message.receipt_handle).await {
            warn!(message_id = %message.message_id, error = %e, "deleting a handled notification failed; it will be received again and found done");
        }
    }

    async fn handle_object(&self, object: &ObjectRef) -> Result<Handled, PortError> {
        let location = format!("s3://{}/{}", object.bucket, object.key);
        if object.bucket != self.bucket {
            Counters::add(&self.counters.objects_skipped, 1);
            warn!(object = %location, expected = %self.bucket, "a notification for another bucket; ignored");
            return Ok(Handled::Finished);
        }
        let trail_key = match classify(&object.key) {
            Ok(k) => k,
            Err(reason) => {
                Counters::add(&self.counters.objects_skipped, 1);
                debug!(object = %location, %reason, "not a trail file; ignored");
                return Ok(Handled::Finished);
            }
        };
        let meta = self.source.head(&object.key).await?;
        let now = now_ms();
        match self.ledger.claim(&meta.key, meta.size, meta.modified, &self.owner, self.claim_ms, now).await? {
            Claim::Done(_) => {
                Counters::add(&self.counters.files_already_done, 1);
                debug!(object = %location, "already done");
                return Ok(Handled::Finished);
            }
            Claim::Busy { owner, until } => {
                debug!(object = %location, %owner, "another collector holds it");
                return Ok(Handled::Busy { until });
            }
            Claim::Claimed => {}
        }
        if trail_key.kind != ObjectKind::Digest {
            if let Err(e) = self.record_sessions(&meta, &trail_key).await {
                let _ = self.ledger.release(&meta.key, &self.owner).await;
                return Err(e);
            }
        }
        let message = FileMessage { bucket: self.bucket.clone(), key: meta.key.clone(), size: meta.size, modified: meta.modified };
        let body = serde_json::to_string(&message).map_err(|e| PortError::backend("enricher message", e, false))?;
        if let Err(e) = self.enricher.send(&body, self.delay).await {
            let _ = self.ledger.release(&meta.key, &self.owner).await;
            return Err(e);
        }
        Counters::add(&self.counters.files_handed_on, 1);
        Ok(Handled::Finished)
    }

    /// Streams the file and writes the sessions its records issued.
    async fn record_sessions(&self, meta: &trailwatch_core::ports::ObjectMeta, trail_key: &trailwatch_core::layout::TrailKey) -> Result<(), PortError> {
        let body = self.source.open(&meta.key).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Session>>(4);
        let key: Arc<str> = meta.key.as_str().into();
        let (meta_in, trail_in, counters) = (meta.clone(), trail_key.clone(), self.counters.clone());
        let reader = tokio::task::spawn_blocking(move || {
            let mut pending: Vec<Session> = Vec::new();
            let read = read_object(
                &key,
                &trail_in,
                &meta_in,
                body,
                &mut |chunk| {
                    Counters::add(&counters.events_read, chunk.events.len() as u64);
                    pending.extend(chunk.sessions);
                    if pending.len() >= SESSION_BATCH {
                        return tx.blocking_send(std::mem::take(&mut pending)).is_ok();
                    }
                    true
                },
                &counters.stages,
            );
            if !pending.is_empty() {
                let _ = tx.blocking_send(pending);
            }
            read
        });
        let mut written = 0u64;
        while let Some(batch) = rx.recv().await {
            written += batch.len() as u64;
            self.sessions.put(batch.into()).await?;
        }
        let (outcome, _) = reader
            .await
            .map_err(|e| PortError::backend(self.source.locate(&meta.key), format!("reading panicked: {e}"), false))?
            .map_err(|_| PortError::backend(self.source.locate(&meta.key), "reading stopped", true))?;
        Counters::add(&self.counters.sessions_recorded, written);
        Counters::add(&self.counters.files_read, 1);
        if let Some(error) = &outcome.error {
            // The enricher reads the file again and records the problem in the ledger.
            warn!(object = %self.source.locate(&meta.key), status = %outcome.status, %error, "file read with problems");
        }
        Ok(())
    }
}
