//! S3 notifications from SQS: the message shapes, and the queue operations
//! the services use.
//!
//! A message announcing a new log file comes in one of these shapes, all
//! read by [`parse_notification`]: an S3 event sent straight to the queue
//! (`{"Records":[…]}`), the same event inside an SNS envelope (`{"Type":
//! "Notification","Message":"<the event as a string>"}`), or bare again when
//! the SNS subscription delivers raw; an EventBridge `Object Created` event;
//! and S3's `s3:TestEvent`, sent once when the notification is configured.
//! Object keys in S3 events are URL-encoded (`+` for a space, `%2F` for `/`).
//!
//! A message that cannot be read is a poison message: [`NotificationError`]
//! says why, and the queue's redrive policy moves it to the dead-letter queue
//! after it has been received `maxReceiveCount` times.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use trailwatch_core::ports::PortError;

use crate::error::{classify, AwsResult};

/// What a notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// New objects (only `ObjectCreated:*` records; others are left out).
    Objects(Vec<ObjectRef>),
    /// S3's `s3:TestEvent`, sent when a notification is configured: nothing to do.
    Test,
}

/// An object a notification announces, its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    /// `ObjectCreated:Put`, `ObjectCreated:CompleteMultipartUpload`, …
    pub event_name: String,
    /// Orders the events of one key (hexadecimal; absent from some emulators).
    pub sequencer: Option<String>,
}

/// Why a message is not a notification that can be acted on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    #[error("the message is not JSON: {0}")]
    NotJson(String),
    #[error("the SNS notification's Message is not JSON: {0}")]
    SnsMessageNotJson(String),
    #[error("an SNS message of Type {0:?}, not a Notification")]
    NotSnsNotification(String),
    #[error("not an S3 event notification, an SNS notification, an EventBridge S3 event or an s3:TestEvent (fields: {0})")]
    Unrecognized(String),
    /// One record (`record 2 (ObjectCreated:Put)`, or the EventBridge event) is malformed.
    #[error("{record}: {problem}")]
    BadRecord { record: String, problem: String },
}

/// Reads a message body: an S3 event, directly, in an SNS envelope or as
/// EventBridge sends it, or the S3 test event.
pub fn parse_notification(body: &str) -> Result<Notification, NotificationError> {
    let value: Value = serde_json::from_str(body).map_err(|e| NotificationError::NotJson(e.to_string()))?;
    if is_sns_envelope(&value) {
        let kind = value.get("Type").and_then(Value::as_str).unwrap_or_default();
        if kind != "Notification" {
            return Err(NotificationError::NotSnsNotification(kind.to_owned()));
        }
        let Some(message) = value.get("Message").and_then(Value::as_str) else {
            return Err(NotificationError::SnsMessageNotJson("there is no Message string".into()));
        };
        let inner: Value = serde_json::from_str(message).map_err(|e| NotificationError::SnsMessageNotJson(e.to_string()))?;
        return parse_event(&inner);
    }
    parse_event(&value)
}

/// An SNS envelope has a `Type` and a `TopicArn`; no S3 or EventBridge event has either.
fn is_sns_envelope(value: &Value) -> bool {
    value.get("Type").is_some_and(Value::is_string) && value.get("TopicArn").is_some()
}

fn parse_event(value: &Value) -> Result<Notification, NotificationError> {
    let Some(object) = value.as_object() else {
        return Err(NotificationError::Unrecognized(format!("none: the JSON is not an object but {}", json_kind(value))));
    };
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Notification::Test);
    }
    if let Some(records) = object.get("Records") {
        let Some(records) = records.as_array() else {
            return Err(NotificationError::Unrecognized(format!("Records is {}, not an array", json_kind(records))));
        };
        let mut objects = Vec::new();
        for (i, record) in records.iter().enumerate() {
            objects.extend(parse_record(i + 1, record)?);
        }
        return Ok(Notification::Objects(objects));
    }
    if object.get("source").and_then(Value::as_str) == Some("aws.s3") && object.contains_key("detail") {
        return parse_eventbridge(value);
    }
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    fields.truncate(12);
    Err(NotificationError::Unrecognized(if fields.is_empty() { "none".into() } else { fields.join(", ") }))
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string at a path of object fields.
fn string_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, field| v.get(field))?.as_str()
}

/// One record of an S3 event: an object when it is an `ObjectCreated:*` record of S3.
fn parse_record(index: usize, record: &Value) -> Result<Option<ObjectRef>, NotificationError> {
    let bad = |record: String, problem: &str| NotificationError::BadRecord { record, problem: problem.to_owned() };
    let Some(event_name) = string_at(record, &["eventName"]) else {
        return Err(bad(format!("record {index}"), "has no eventName"));
    };
    let source = string_at(record, &["eventSource"]);
    if source.is_some_and(|s| s != "aws:s3") || !event_name.starts_with("ObjectCreated:") {
        return Ok(None);
    }
    let name = format!("record {index} ({event_name})");
    let bucket = string_at(record, &["s3", "bucket", "name"]).filter(|b| !b.is_empty()).ok_or_else(|| bad(name.clone(), "has no s3.bucket.name"))?;
    let raw_key = string_at(record, &["s3", "object", "key"]).filter(|k| !k.is_empty()).ok_or_else(|| bad(name.clone(), "has no s3.object.key"))?;
    let key = decode_key(raw_key).map_err(|problem| bad(name.clone(), &format!("key {raw_key:?}: {problem}")))?;
    let object = &record["s3"]["object"];
    Ok(Some(ObjectRef {
        bucket: bucket.to_owned(),
        key,
        size: object.get("size").and_then(Value::as_u64),
        event_name: event_name.to_owned(),
        sequencer: object.get("sequencer").and_then(Value::as_str).map(str::to_owned),
    }))
}

/// An EventBridge event of S3. Its keys are given as they are, not URL-encoded.
fn parse_eventbridge(event: &Value) -> Result<Notification, NotificationError> {
    let kind = string_at(event, &["detail-type"]).unwrap_or_default();
    if kind != "Object Created" {
        return Ok(Notification::Objects(Vec::new()));
    }
    let bad = |problem: &str| NotificationError::BadRecord { record: "EventBridge Object Created event".into(), problem: problem.to_owned() };
    let detail = &event["detail"];
    let bucket = string_at(detail, &["bucket", "name"]).filter(|b| !b.is_empty()).ok_or_else(|| bad("has no detail.bucket.name"))?;
    let key = string_at(detail, &["object", "key"]).filter(|k| !k.is_empty()).ok_or_else(|| bad("has no detail.object.key"))?;
    // `reason` is the API call (PutObject, CopyObject, CompleteMultipartUpload).
    let reason = string_at(detail, &["reason"]).unwrap_or("Put");
    let reason = reason.strip_suffix("Object").unwrap_or(reason);
    Ok(Notification::Objects(vec![ObjectRef {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size: detail["object"].get("size").and_then(Value::as_u64),
        event_name: format!("ObjectCreated:{reason}"),
        sequencer: string_at(detail, &["object", "sequencer"]).map(str::to_owned),
    }]))
}

/// Decodes a key as S3 events encode it: `+` is a space, `%XX` a byte.
pub fn decode_key(raw: &str) -> Result<String, String> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes.get(i + 1).copied().and_then(hex).zip(bytes.get(i + 2).copied().and_then(hex));
                let Some((high, low)) = pair else {
                    return Err(format!("a `%` at byte {i} is not followed by two hexadecimal digits"));
                };
                out.push((high << 4) | low);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "decodes to bytes that are not UTF-8".to_owned())
}

/// The most messages one batch call takes.
const BATCH_ENTRIES: usize = 10;
/// The most bytes of message bodies one SendMessageBatch takes.
const BATCH_BYTES: usize = 256 * 1024;
/// The longest delay SQS accepts (15 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// The longest visibility timeout SQS accepts (12 hours).
pub const MAX_VISIBILITY: Duration = Duration::from_secs(43_200);
/// The longest long poll SQS accepts.
pub const MAX_WAIT: Duration = Duration::from_secs(20);

/// A message received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub body: String,
    pub receipt_handle: String,
    pub message_id: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// The system attributes (`SentTimestamp`, `ApproximateFirstReceiveTimestamp`, …).
    pub attributes: HashMap<String, String>,
}

/// One entry of a batch call that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFailure {
    /// Its position in the slice given.
    pub index: usize,
    pub code: String,
    pub message: String,
    /// True when the request was wrong (retrying will not help).
    pub sender_fault: bool,
}

/// How many messages a queue holds, approximately.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDepth {
    /// Waiting to be received.
    pub visible: u64,
    /// Received and not yet deleted.
    pub in_flight: u64,
}

impl QueueDepth {
    pub fn total(&self) -> u64 {
        self.visible + self.in_flight
    }
}

/// Whole seconds, rounded up, at most `max`: what SQS takes.
fn seconds(d: Duration, max: Duration) -> i32 {
    let d = d.min(max);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// One SQS queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl Queue {
    pub fn new(client: aws_sdk_sqs::Client, url: impl Into<String>) -> Self {
        Queue { client, url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn what(&self, operation: &str) -> String {
        format!("sqs:{operation} {}", self.url)
    }

    /// Receives up to `max` (1 to 10) messages, waiting up to `wait` (long
    /// polling, at most 20 s) for the first, hidden from other receivers for
    /// `visibility`.
    /// The clients' attempt timeout is for an answer that comes at once; a
    /// long poll's attempt gets the wait on top of it.
    pub async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> AwsResult<Vec<Received>> {
        let wait = wait.min(MAX_WAIT);
        let timeouts = self.client.config().timeout_config().cloned().unwrap_or_else(|| aws_sdk_sqs::config::timeout::TimeoutConfig::builder().build());
        let mut longer = aws_sdk_sqs::config::timeout::TimeoutConfig::builder();
        if let Some(attempt) = timeouts.operation_attempt_timeout() {
            longer = longer.operation_attempt_timeout(attempt + wait);
        }
        if let Some(operation) = timeouts.operation_timeout() {
            longer = longer.operation_timeout(operation + wait);
        }
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(seconds(wait, MAX_WAIT))
            .visibility_timeout(seconds(visibility, MAX_VISIBILITY))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(longer.build()))
            .send()
            .await
            .map_err(|e| classify(&self.what("ReceiveMessage"), e))?;
        let mut received = Vec::new();
        for message in out.messages() {
            let Some(receipt_handle) = message.receipt_handle() else {
                tracing::warn!(queue = %self.url, message_id = message.message_id(), "skipping a message without a receipt handle");
                continue;
            };
            let attributes: HashMap<String, String> = message.attributes().into_iter().flatten().map(|(k, v)| (k.as_str().to_owned(), v.clone())).collect();
            received.push(Received {
                body: message.body().unwrap_or_default().to_owned(),
                receipt_handle: receipt_handle.to_owned(),
                message_id: message.message_id().unwrap_or_default().to_owned(),
                receive_count: attributes.get("ApproximateReceiveCount").and_then(|n| n.parse().ok()).unwrap_or(1),
                attributes,
            });
        }
        Ok(received)
    }

    /// Deletes a message received: it is done with.
    pub async fn delete(&self, receipt_handle: &str) -> AwsResult<()> {
        self.client.delete_message().queue_url(&self.url).receipt_handle(receipt_handle).send().await.map_err(|e| classify(&self.what("DeleteMessage"), e))?;
        Ok(())
    }

    /// Deletes messages, ten a call; the entries that failed come back.
    pub async fn delete_batch(&self, receipt_handles: &[String]) -> AwsResult<Vec<BatchFailure>> {
        let what = self.what("DeleteMessageBatch");
        let mut failures = Vec::new();
        for (chunk_index, chunk) in receipt_handles.chunks(BATCH_ENTRIES).enumerate() {
            let first = chunk_index * BATCH_ENTRIES;
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, handle)| DeleteMessageBatchRequestEntry::builder().id((first + i).to_string()).receipt_handle(handle).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PortError::Invalid { what: what.clone(), message: e.to_string() })?;
            let out = self.client.delete_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.map_err(|e| classify(&what, e))?;
            failures.extend(out.failed().iter().map(batch_failure));
        }
        Ok(failures)
    }

    /// Keeps a message hidden for `visibility` from now (ChangeMessageVisibility).
    pub async fn extend(&self, receipt_handle: &str, visibility: Duration) -> AwsResult<()> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(seconds(visibility, MAX_VISIBILITY))
            .send()
            .await
            .map_err(|e| classify(&self.what("ChangeMessageVisibility"), e))?;
        Ok(())
    }

    /// Sends a message, visible after `delay` (at most 15 minutes: longer is
    /// cut to that, with a warning). Returns its message id.
    pub async fn send(&self, body: &str, delay: Duration) -> AwsResult<String> {
        let out = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(self.delay_seconds(delay))
            .send()
            .await
            .map_err(|e| classify(&self.what("SendMessage"), e))?;
        Ok(out.message_id().unwrap_or_default().to_owned())
    }

    /// Sends messages, up to ten (and 256 KiB) a call, each visible after
    /// `delay`; the entries that failed come back.
    pub async fn send_batch(&self, bodies: &[String], delay: Duration) -> AwsResult<Vec<BatchFailure>> {
        let what = self.what("SendMessageBatch");
        let delay = self.delay_seconds(delay);
        let mut failures = Vec::new();
        let mut start = 0;
        while start < bodies.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < bodies.len() && end - start < BATCH_ENTRIES && (end == start || bytes + bodies[end].len() <= BATCH_BYTES) {
                bytes += bodies[end].len();
                end += 1;
            }
            let entries = (start..end)
                .map(|i| SendMessageBatchRequestEntry::builder().id(i.to_string()).message_body(&bodies[i]).delay_seconds(delay).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| PortError::Invalid { what: what.clone(), message: e.to_string() })?;
            let out = self.client.send_message_batch().queue_url(&self.url).set_entries(Some(entries)).send().await.map_err(|e| classify(&what, e))?;
            failures.extend(out.failed().iter().map(batch_failure));
            start = end;
        }
        Ok(failures)
    }

    fn delay_seconds(&self, delay: Duration) -> i32 {
        if delay > MAX_DELAY {
            tracing::warn!(queue = %self.url, asked_s = delay.as_secs(), "an SQS delay is at most 900 s: sending with 900 s");
        }
        seconds(delay, MAX_DELAY)
    }

    /// The queue's ARN (for notification configurations and redrive policies).
    pub async fn arn(&self) -> AwsResult<String> {
        queue_arn(&self.client, &self.url).await
    }

    /// Messages waiting plus messages in flight.
    pub async fn approximate_depth(&self) -> AwsResult<QueueDepth> {
        let what = self.what("GetQueueAttributes");
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| classify(&what, e))?;
        let count = |name: QueueAttributeName| -> AwsResult<u64> {
            let text =
                out.attributes().and_then(|a| a.get(&name)).ok_or_else(|| PortError::backend(&what, format!("no {} in the answer", name.as_str()), false))?;
            text.parse().map_err(|_| PortError::backend(&what, format!("{} is {text:?}, not a count", name.as_str()), false))
        };
        Ok(QueueDepth {
            visible: count(QueueAttributeName::ApproximateNumberOfMessages)?,
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        })
    }
}

fn batch_failure(entry: &aws_sdk_sqs::types::BatchResultErrorEntry) -> BatchFailure {
    BatchFailure {
        index: entry.id().parse().unwrap_or(usize::MAX),
        code: entry.code().to_owned(),
        message: entry.message().unwrap_or_default().to_owned(),
        sender_fault: entry.sender_fault(),
    }
}

/// The URL of the queue named `name`.
pub async fn url_of(client: &aws_sdk_sqs::Client, name: &str) -> AwsResult<String> {
    let what = format!("sqs:GetQueueUrl {name}");
    let out = client.get_queue_url().queue_name(name).send().await.map_err(|e| classify(&what, e))?;
    out.queue_url().map(str::to_owned).ok_or_else(|| PortError::backend(what, "no QueueUrl in the answer", false))
}

/// Creates queue `name` and its dead-letter queue `name-dlq`, where a
/// message goes after `max_receive_count` receives. Returns both URLs.
pub async fn create_queue_with_dlq(client: &aws_sdk_sqs::Client, name: &str, max_receive_count: u32, visibility: Duration) -> AwsResult<(String, String)> {
    let dlq_name = format!("{name}-dlq");
    let dlq_url = create_queue(client, &dlq_name, &[]).await?;
    let dlq_arn = queue_arn(client, &dlq_url).await?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count }).to_string();
    let visibility = seconds(visibility, MAX_VISIBILITY).to_string();
    let url = create_queue(client, name, &[(QueueAttributeName::RedrivePolicy, redrive), (QueueAttributeName::VisibilityTimeout, visibility)]).await?;
    Ok((url, dlq_url))
}

async fn queue_arn(client: &aws_sdk_sqs::Client, url: &str) -> AwsResult<String> {
    let what = format!("sqs:GetQueueAttributes {url}");
    let out = client.get_queue_attributes().queue_url(url).attribute_names(QueueAttributeName::QueueArn).send().await.map_err(|e| classify(&what, e))?;
    let arn = out.attributes().and_then(|a| a.get(&QueueAttributeName::QueueArn));
    arn.cloned().ok_or_else(|| PortError::backend(what, "no QueueArn in the answer", false))
}

async fn create_queue(client: &aws_sdk_sqs::Client, name: &str, attributes: &[(QueueAttributeName, String)]) -> AwsResult<String> {
    let what = format!("sqs:CreateQueue {name}");
    let mut request = client.create_queue().queue_name(name);
    for (attribute, value) in attributes {
        request = request.attributes(attribute.clone(), value);
    }
    let out = request.send().await.map_err(|e| classify(&what, e))?;
    out.queue_url().map(str::to_owned).ok_or_else(|| PortError::backend(what, "no QueueUrl in the answer", false))
}

/// Keeps a message hidden while it is worked on: extends its visibility
/// every half `visibility` until stopped or dropped. A permanent failure (the
/// message was deleted, its receipt handle expired, the 12-hour limit was
/// reached) stops it and marks the message lost: another receiver may have it.
#[derive(Debug)]
pub struct VisibilityKeeper {
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    status: Arc<KeeperStatus>,
}

#[derive(Debug, Default)]
struct KeeperStatus {
    extensions: AtomicU32,
    lost: AtomicBool,
}

impl VisibilityKeeper {
    /// Starts extending on the current runtime.
    pub fn start(queue: Queue, receipt_handle: impl Into<String>, visibility: Duration) -> Self {
        let receipt_handle = receipt_handle.into();
        let every = (visibility / 2).max(Duration::from_secs(1));
        let stop = CancellationToken::new();
        let status = Arc::new(KeeperStatus::default());
        let task = tokio::spawn({
            let (stop, status) = (stop.clone(), status.clone());
            async move {
                let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => return,
                        _ = ticks.tick() => {}
                    }
                    match queue.extend(&receipt_handle, visibility).await {
                        Ok(()) => {
                            status.extensions.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) if e.is_retryable() => tracing::warn!(error = %e, "could not extend a message's visibility; trying again"),
                        Err(e) => {
                            tracing::warn!(error = %e, "could not extend a message's visibility: another receiver may get it");
                            status.lost.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }
        });
        VisibilityKeeper { stop, task: Some(task), status }
    }

    /// How many extensions succeeded.
    pub fn extensions(&self) -> u32 {
        self.status.extensions.load(Ordering::Relaxed)
    }

    /// Whether an extension failed for good.
    pub fn is_lost(&self) -> bool {
        self.status.lost.load(Ordering::Relaxed)
    }

    /// Stops extending; once this returns no extension is in flight.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for VisibilityKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRAIL_KEY: &str = "AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/30/111122223333_CloudTrail_us-east-1_20261130T0000Z_x.json.gz";

    /// Parses a message of `tests/fixtures/notifications/`.
    macro_rules! fixture {
        ($name:literal) => {
            parse_notification(include_str!(concat!("../tests/fixtures/notifications/", $name)))
        };
    }

    fn objects(result: Result<Notification, NotificationError>) -> Vec<ObjectRef> {
        match result {
            Ok(Notification::Objects(objects)) => objects,
            other => panic!("expected objects, got {other:?}"),
        }
    }

    #[test]
    fn a_direct_s3_event_gives_the_decoded_key() {
        assert_eq!(
            objects(fixture!("direct.json")),
            vec![ObjectRef {
                bucket: "org-trail-logs".into(),
                key: TRAIL_KEY.into(),
                size: Some(1843),
                event_name: "ObjectCreated:Put".into(),
                sequencer: Some("0066F2A1B3C4D5E6F7".into()),
            }]
        );
    }

    #[test]
    fn sns_wrapped_and_raw_deliveries_give_the_same_objects() {
        let direct = objects(fixture!("direct.json"));
        assert_eq!(objects(fixture!("sns.json")), direct);
        assert_eq!(objects(fixture!("sns-raw.json")), direct);
    }

    #[test]
    fn the_test_event_is_recognized_bare_and_wrapped() {
        assert_eq!(fixture!("test-event.json"), Ok(Notification::Test));
        assert_eq!(fixture!("sns-test-event.json"), Ok(Notification::Test));
    }

    #[test]
    fn encoded_keys_are_decoded() {
        let keys: Vec<String> = objects(fixture!("encoded-key.json")).into_iter().map(|o| o.key).collect();
        assert_eq!(keys, vec!["AWSLogs/o-abc/111122223333/CloudTrail/us-east-1/2026/11/30/copy of a+b%.json.gz", "AWSLogs/o-abc/été/x.json.gz"]);
    }

    #[test]
    fn only_created_objects_are_returned() {
        let created = objects(fixture!("mixed-records.json"));
        assert_eq!(created.len(), 1, "{created:?}");
        assert_eq!(created[0].event_name, "ObjectCreated:CompleteMultipartUpload");
        assert_eq!(created[0].size, None);
        assert_eq!(objects(fixture!("removed.json")), vec![], "a delete announces nothing");
    }

    #[test]
    fn eventbridge_object_created_is_read() {
        let created = objects(fixture!("eventbridge.json"));
        assert_eq!(created.len(), 1);
        assert_eq!(created[0].bucket, "org-trail-logs");
        assert_eq!(created[0].key, TRAIL_KEY);
        assert_eq!(created[0].event_name, "ObjectCreated:Put");
        assert_eq!(created[0].size, Some(1843));
    }

    #[test]
    fn poison_messages_say_what_is_wrong() {
        assert!(matches!(fixture!("garbage.txt"), Err(NotificationError::NotJson(_))));
        let err = fixture!("no-records.json").unwrap_err();
        assert!(err.to_string().contains("fields: Bucket, Service"), "{err}");
        let err = fixture!("record-without-key.json").unwrap_err();
        assert_eq!(err.to_string(), "record 1 (ObjectCreated:Put): has no s3.object.key");
        let err = fixture!("sns-garbage.json").unwrap_err();
        assert!(matches!(err, NotificationError::SnsMessageNotJson(_)), "{err}");
        let err = fixture!("bad-escape.json").unwrap_err();
        assert!(err.to_string().contains("is not followed by two hexadecimal digits"), "{err}");
        assert!(matches!(parse_notification("[1,2]"), Err(NotificationError::Unrecognized(_))));
        assert!(matches!(parse_notification(r#"{"Records":{}}"#), Err(NotificationError::Unrecognized(_))));
        assert!(matches!(parse_notification(r#"{"Records":[{"s3":{}}]}"#), Err(NotificationError::BadRecord { .. })));
        let confirmation = r#"{"Type":"SubscriptionConfirmation","TopicArn":"arn:aws:sns:us-east-1:111122223333:t","Message":"confirm"}"#;
        assert_eq!(parse_notification(confirmation), Err(NotificationError::NotSnsNotification("SubscriptionConfirmation".into())));
    }

    #[test]
    fn keys_decode_like_form_encoding() {
        assert_eq!(decode_key("a+b%2Fc%2bd").unwrap(), "a b/c+d");
        assert_eq!(decode_key("%C3%A9t%C3%A9").unwrap(), "été");
        assert!(decode_key("100%").is_err());
        assert!(decode_key("%zz").is_err());
        assert!(decode_key("%FF").is_err(), "not UTF-8");
    }

    #[test]
    fn durations_round_up_to_seconds_within_limits() {
        assert_eq!(seconds(Duration::from_millis(1500), MAX_VISIBILITY), 2);
        assert_eq!(seconds(Duration::ZERO, MAX_VISIBILITY), 0);
        assert_eq!(seconds(Duration::from_secs(3600), MAX_DELAY), 900);
    }
}
