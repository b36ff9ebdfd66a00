//! How full a service's queue is, and its dead-letter queue: read every
//! `--queue-metrics-seconds` (SQS GetQueueAttributes) for `/metrics`.
//!
//! The dead-letter queue is the `deadLetterTargetArn` of the queue's
//! `RedrivePolicy`; its URL comes from GetQueueUrl (name and owner account
//! from the ARN). A read that fails is logged and counted, the last values
//! stay (their time is exported, so a stale reading shows), and the next
//! read tries again, finding the dead-letter queue again if that was what
//! failed. Nothing here stops the service.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use trailwatch_aws::clients::Clients;
use trailwatch_aws::error::classify;
use trailwatch_aws::sqs::Queue;
use trailwatch_core::ports::PortError;

use super::Text;
use crate::commands::now_ms;

/// The last reading of one queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Reading {
    visible: u64,
    in_flight: u64,
    /// The dead-letter queue's name and its ApproximateNumberOfMessages.
    dead_letter: Option<(String, u64)>,
    /// Wall-clock time of the last successful read, epoch milliseconds.
    read_at: i64,
}

/// Queue depths as last read, by queue name, and the failed reads.
#[derive(Debug, Default)]
pub struct QueueGauges {
    readings: Mutex<BTreeMap<String, Reading>>,
    failures: AtomicU64,
}

impl QueueGauges {
    fn update(&self, queue: &str, change: impl FnOnce(&mut Reading)) {
        let mut readings = self.readings.lock().unwrap_or_else(|p| p.into_inner());
        change(readings.entry(queue.to_owned()).or_default());
    }

    pub(super) fn render(&self, t: &mut Text) {
        let readings: Vec<(String, Reading)> = self.readings.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        t.family(
            "trailwatch_queue_messages",
            "gauge",
            "Messages in the queue the service reads, by state: visible (waiting) or in_flight (received, not deleted).",
        );
        for (queue, r) in &readings {
            t.sample("trailwatch_queue_messages", &[("queue", queue), ("state", "visible")], r.visible);
            t.sample("trailwatch_queue_messages", &[("queue", queue), ("state", "in_flight")], r.in_flight);
        }
        t.family(
            "trailwatch_dead_letter_queue_messages",
            "gauge",
            "Messages in the dead-letter queue of the queue the service reads (ApproximateNumberOfMessages).",
        );
        for (queue, r) in &readings {
            if let Some((dead_letter, n)) = &r.dead_letter {
                t.sample("trailwatch_dead_letter_queue_messages", &[("queue", dead_letter), ("source_queue", queue)], n);
            }
        }
        t.family("trailwatch_queue_read_timestamp_seconds", "gauge", "When the queue's depth was last read (Unix seconds).");
        for (queue, r) in &readings {
            t.sample("trailwatch_queue_read_timestamp_seconds", &[("queue", queue)], r.read_at as f64 / 1000.0);
        }
        t.single(
            "trailwatch_queue_reads_failed_total",
            "counter",
            "Reads of the queue's or its dead-letter queue's attributes that failed (logged; tried again next time).",
            self.failures.load(Ordering::Relaxed),
        );
    }
}

/// The last part of a queue URL: its name.
fn queue_name(url: &str) -> &str {
    url.trim_end_matches('/').rsplit('/').next().unwrap_or(url)
}

/// The owner account and name of the dead-letter queue a `RedrivePolicy` names.
fn dead_letter_target(policy: &str) -> Result<(String, String), String> {
    let policy: serde_json::Value = serde_json::from_str(policy).map_err(|e| format!("RedrivePolicy is not JSON: {e}"))?;
    let arn = policy.get("deadLetterTargetArn").and_then(|v| v.as_str()).ok_or("RedrivePolicy has no deadLetterTargetArn")?;
    // arn:<partition>:sqs:<region>:<account>:<name>
    match arn.split(':').collect::<Vec<_>>()[..] {
        ["arn", _, "sqs", _, account, name] if !account.is_empty() && !name.is_empty() => Ok((account.to_owned(), name.to_owned())),
        _ => Err(format!("deadLetterTargetArn {arn:?} is not an SQS queue ARN")),
    }
}

/// Reads the queue at `url` and its dead-letter queue every `every` until `shutdown`.
pub fn watch_queue(clients: Clients, url: String, every: Duration, gauges: Arc<QueueGauges>, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let queue = Queue::new(clients.sqs.clone(), url.clone());
        let name = queue_name(&url).to_owned();
        // None: not looked for yet (or looking failed); Some(None): the queue has no redrive policy.
        let mut dead_letter: Option<Option<(String, Queue)>> = None;
        loop {
            if let Err(e) = read(&clients, &queue, &name, &mut dead_letter, &gauges).await {
                gauges.failures.fetch_add(1, Ordering::Relaxed);
                warn!(queue = %url, error = %e, retry_in_s = every.as_secs(), "reading the queue's depth for /metrics failed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    })
}

async fn read(clients: &Clients, queue: &Queue, name: &str, dead_letter: &mut Option<Option<(String, Queue)>>, gauges: &QueueGauges) -> Result<(), PortError> {
    let depth = queue.approximate_depth().await?;
    gauges.update(name, |r| {
        r.visible = depth.visible;
        r.in_flight = depth.in_flight;
        r.read_at = now_ms();
    });
    if dead_letter.is_none() {
        let found = find_dead_letter(clients, queue.url()).await?;
        match &found {
            Some((dlq, _)) => info!(queue = %queue.url(), dead_letter_queue = %dlq, "watching the dead-letter queue"),
            None => warn!(queue = %queue.url(), "the queue has no RedrivePolicy: no dead-letter queue to watch"),
        }
        *dead_letter = Some(found);
    }
    if let Some(Some((dlq, dlq_queue))) = dead_letter.as_ref() {
        match dlq_queue.approximate_depth().await {
            Ok(depth) => gauges.update(name, |r| r.dead_letter = Some((dlq.clone(), depth.visible))),
            Err(e) => {
                // Perhaps the policy changed: look it up again next time.
                *dead_letter = None;
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The dead-letter queue's name and handle, from the queue's RedrivePolicy; None without one.
async fn find_dead_letter(clients: &Clients, url: &str) -> Result<Option<(String, Queue)>, PortError> {
    let what = format!("sqs:GetQueueAttributes {url}");
    let out = clients.sqs.get_queue_attributes().queue_url(url).attribute_names("RedrivePolicy".into()).send().await.map_err(|e| classify(&what, e))?;
    let Some(policy) = out.attributes().and_then(|a| a.iter().find(|(k, _)| k.as_str() == "RedrivePolicy").map(|(_, v)| v.clone())) else {
        return Ok(None);
    };
    let (account, dlq) = dead_letter_target(&policy).map_err(|e| PortError::backend(&what, e, false))?;
    let what = format!("sqs:GetQueueUrl {dlq}");
    let out = clients.sqs.get_queue_url().queue_name(&dlq).queue_owner_aws_account_id(account).send().await.map_err(|e| classify(&what, e))?;
    let dlq_url = out.queue_url().ok_or_else(|| PortError::backend(&what, "no QueueUrl in the answer", false))?;
    Ok(Some((dlq, Queue::new(clients.sqs.clone(), dlq_url))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dead_letter_queue_is_read_from_the_redrive_policy() {
        let policy = r#"{"deadLetterTargetArn":"arn:aws:sqs:eu-west-1:111122223333:tw-enricher-dlq","maxReceiveCount":"5"}"#;
        assert_eq!(dead_letter_target(policy), Ok(("111122223333".to_owned(), "tw-enricher-dlq".to_owned())));
        assert!(dead_letter_target(r#"{"maxReceiveCount":5}"#).unwrap_err().contains("no deadLetterTargetArn"));
        assert!(dead_letter_target(r#"{"deadLetterTargetArn":"arn:aws:sns:eu-west-1:111122223333:topic"}"#).unwrap_err().contains("not an SQS queue ARN"));
        assert!(dead_letter_target("redrive").is_err());
        assert_eq!(queue_name("https://sqs.eu-west-1.amazonaws.com/111122223333/tw-notifications"), "tw-notifications");
    }

    #[test]
    fn readings_are_rendered_per_queue() {
        let gauges = QueueGauges::default();
        gauges.update("tw-enricher", |r| {
            r.visible = 3;
            r.in_flight = 1;
            r.dead_letter = Some(("tw-enricher-dlq".into(), 2));
            r.read_at = 1_700_000_000_500;
        });
        gauges.failures.fetch_add(1, Ordering::Relaxed);
        let mut t = Text { out: String::new(), service: "enricher" };
        gauges.render(&mut t);
        for line in [
            "trailwatch_queue_messages{service=\"enricher\",queue=\"tw-enricher\",state=\"visible\"} 3\n",
            "trailwatch_queue_messages{service=\"enricher\",queue=\"tw-enricher\",state=\"in_flight\"} 1\n",
            "trailwatch_dead_letter_queue_messages{service=\"enricher\",queue=\"tw-enricher-dlq\",source_queue=\"tw-enricher\"} 2\n",
            "trailwatch_queue_read_timestamp_seconds{service=\"enricher\",queue=\"tw-enricher\"} 1700000000.5\n",
            "trailwatch_queue_reads_failed_total{service=\"enricher\"} 1\n",
        ] {
            assert!(t.out.contains(line), "{line} missing from:\n{}", t.out);
        }
    }
}
