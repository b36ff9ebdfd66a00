//! [`SnsSink`]: each alert transition published to an SNS topic, with
//! message attributes subscribers route by (subscription filter policies).
//!
//! The message body is JSON ([`SCHEMA_VERSION`] 1):
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "idempotency_key": "<alert id>:<revision>",
//!   "summary": "Console sign-in without MFA for alice in \"prod\" (111111111111)",
//!   "alert": {
//!     "id": "…", "dedup_key": "…", "rule_id": "…", "title": "…",
//!     "severity": "high", "status": "open", "revision": 3,
//!     "account_id": "111111111111", "account_name": "prod",
//!     "region": "eu-west-1",
//!     "origin_principal": "arn:aws:iam::111111111111:user/alice",
//!     "origin": { "kind": "iam_user", "principal": "…", "account_id": "…", "provider": null,
//!                 "source_identity": null, "confidence": "exact", "reason": null, "hops": 2 },
//!     "group": { "recipientAccountId": "111111111111", "userIdentity.arn": "…" },
//!     "count": 5, "first_seen": "2024-10-27T03:33:20Z", "last_seen": "…", "updated_at": "…",
//!     "samples": [ { "account_id": "…", "event_id": "…", "event_time": "…" } ]
//!   },
//!   "transition": { "action": "trigger", "kind": "opened", "revision": 3, "at": "…",
//!                   "recorded_at": "…", "cause": "…", "by": null },
//!   "truncated": false
//! }
//! ```
//!
//! Times are RFC 3339 UTC. `account_name` is the account's alias (null when
//! it has none); `region` is the value of the `awsRegion` group-by field
//! when the rule groups by it, else null (an alert may span regions);
//! `origin` is null when the origin is not known. `transition.action` is
//! what a ticketing receiver does: `trigger` (opened), `update` (updated,
//! acknowledged, origin settled later) or `resolve`. Receivers drop repeats
//! by `idempotency_key`: a transition may be published twice when the
//! process stops between publishing and recording that it did.
//!
//! **Oversized alerts** (the message, subject and attributes over SNS's
//! 256 KiB) are trimmed, never dropped: first sample events are dropped
//! from the end (the first ones kept), then every string longer than a
//! bound (4096, then 1024, 256, 64 characters) is cut to it, ending in `…`,
//! except `idempotency_key` and `alert.id`. A trimmed body has
//! `"truncated": true` and says what was removed:
//! `"removed": { "samples": <samples dropped>, "shortened": ["summary", "alert.title", …], "original_bytes": <n> }`.
//! If even that is too large, the body keeps only `schema_version`,
//! `idempotency_key`, `truncated`, `removed` (with `"everything_else": true`)
//! and short `alert` (`id`, `rule_id`, `severity`, `status`, `account_id`,
//! `revision`) and `transition` (`action`, `kind`, `revision`) objects.
//!
//! The `Subject` (shown by e-mail subscriptions) is
//! `[SEVERITY] kind: title - account`, in printable ASCII (other characters
//! become `?`, line breaks and control characters spaces), at most
//! [`MAX_SUBJECT_CHARS`] characters, cut with `...`.
//!
//! Message attributes, all `String`: `severity`, `rule_id`, `account_id`,
//! `action`, `dedup_key`, `alert_id`, `revision` (values over 1024
//! characters are cut; empty ones are left out, as SNS refuses them). A
//! FIFO topic (`.fifo`) gets the alert id as the message group, so each
//! alert's transitions stay in order, and the idempotency key as the
//! deduplication id.
//!
//! Errors: throttling and server errors are retryable, anything else (a
//! topic that does not exist, an invalid parameter, access denied) permanent.

use std::collections::BTreeSet;

use async_trait::async_trait;
use aws_sdk_sns::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sns::types::MessageAttributeValue;
use serde_json::{json, Map, Value};
use trailwatch_core::alerts::{AlertSink, Delivery, EventRef, TransitionKind};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::format_utc;

use crate::error::classify;

/// The version of the body's layout.
pub const SCHEMA_VERSION: u32 = 1;

/// SNS's limit on a published message: body, subject and attributes.
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// SNS wants subjects under 100 characters.
pub const MAX_SUBJECT_CHARS: usize = 99;

/// Characters kept of a message attribute's value.
const MAX_ATTRIBUTE_CHARS: usize = 1024;

/// Room left under the limit for what the size estimate does not see.
const MARGIN_BYTES: usize = 1024;

/// String lengths tried, longest first, when trimming.
const STRING_BOUNDS: [usize; 4] = [4096, 1024, 256, 64];

/// What a subscriber's filter policy sees as `action`.
pub fn action(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Opened => "trigger",
        TransitionKind::Updated | TransitionKind::Acknowledged => "update",
        TransitionKind::Resolved => "resolve",
    }
}

/// One message to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct SnsMessage {
    pub subject: String,
    /// JSON (see the module's doc).
    pub body: String,
    /// Name and value of each `String` attribute.
    pub attributes: Vec<(String, String)>,
}

/// Text on one line: control characters (line breaks among them) become spaces.
fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// `text` cut to at most `max` characters, the last of them `cut_mark` when cut.
fn cut(text: &str, max: usize, cut_mark: &str) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let keep = max.saturating_sub(cut_mark.chars().count());
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(cut_mark);
    out
}

/// The subject: printable ASCII, one line, at most [`MAX_SUBJECT_CHARS`].
pub fn subject(delivery: &Delivery) -> String {
    let alert = &delivery.alert;
    let account = match &alert.account_alias {
        Some(alias) => format!("{alias} ({})", alert.account_id),
        None => alert.account_id.clone(),
    };
    let raw = format!("[{}] {}: {} - {account}", alert.severity.as_str().to_uppercase(), delivery.transition.kind.as_str(), alert.title);
    let ascii: String = raw
        .chars()
        .map(|c| match c {
            ' '..='~' => c,
            c if c.is_whitespace() || c.is_control() => ' ',
            _ => '?',
        })
        .collect();
    let words: Vec<&str> = ascii.split(' ').filter(|w| !w.is_empty()).collect();
    cut(&words.join(" "), MAX_SUBJECT_CHARS, "...")
}

fn sample(e: &EventRef) -> Value {
    json!({ "account_id": e.account_id, "event_id": e.event_id, "event_time": format_utc(e.event_time) })
}

/// The body with every sample event.
fn body(delivery: &Delivery) -> Value {
    let alert = &delivery.alert;
    let t = &delivery.transition;
    let summary = if alert.summary.trim().is_empty() { &alert.title } else { &alert.summary };
    let origin = alert.origin.as_ref().map_or(Value::Null, |o| {
        json!({
            "kind": o.kind.as_str(),
            "principal": o.principal,
            "account_id": o.account_id,
            "provider": o.provider,
            "source_identity": o.source_identity,
            "confidence": o.confidence.as_str(),
            "reason": o.reason,
            "hops": o.chain.len(),
        })
    });
    let group: Map<String, Value> = alert.group.iter().map(|(k, v)| (k.clone(), Value::from(v.as_str()))).collect();
    let region = alert.group.iter().find(|(field, _)| field == "awsRegion").map(|(_, v)| v.as_str());
    json!({
        "schema_version": SCHEMA_VERSION,
        "idempotency_key": delivery.dedup_key(),
        "summary": one_line(summary),
        "alert": {
            "id": alert.id,
            "dedup_key": alert.dedup_key,
            "rule_id": alert.rule_id,
            "title": alert.title,
            "severity": alert.severity.as_str(),
            "status": alert.status.as_str(),
            "revision": alert.revision,
            "account_id": alert.account_id,
            "account_name": alert.account_alias,
            "region": region,
            "origin_principal": alert.origin.as_ref().and_then(|o| o.principal.as_deref()),
            "origin": origin,
            "group": group,
            "count": alert.count,
            "first_seen": format_utc(alert.first_seen),
            "last_seen": format_utc(alert.last_seen),
            "updated_at": format_utc(alert.updated_at),
            "samples": alert.samples.iter().map(sample).collect::<Vec<_>>(),
        },
        "transition": {
            "action": action(t.kind),
            "kind": t.kind.as_str(),
            "revision": t.revision,
            "at": format_utc(t.at),
            "recorded_at": format_utc(t.recorded_at),
            "cause": t.cause,
            "by": t.by,
        },
        "truncated": false,
    })
}

/// The message attributes.
fn attributes(delivery: &Delivery) -> Vec<(String, String)> {
    let alert = &delivery.alert;
    [
        ("severity", alert.severity.as_str().to_owned()),
        ("rule_id", alert.rule_id.clone()),
        ("account_id", alert.account_id.clone()),
        ("action", action(delivery.transition.kind).to_owned()),
        ("dedup_key", alert.dedup_key.clone()),
        ("alert_id", alert.id.clone()),
        ("revision", delivery.transition.revision.to_string()),
    ]
    .into_iter()
    .filter(|(_, value)| !value.is_empty())
    .map(|(name, value)| (name.to_owned(), cut(&value, MAX_ATTRIBUTE_CHARS, "…")))
    .collect()
}

fn size(body: &Value) -> usize {
    serde_json::to_string(body).map_or(usize::MAX, |s| s.len())
}

/// Cuts every string longer than `max` characters, but the protected ones;
/// records the paths of those cut.
fn shorten(value: &mut Value, path: &str, max: usize, shortened: &mut BTreeSet<String>) {
    match value {
        Value::String(text) if !matches!(path, "idempotency_key" | "alert.id") && text.chars().count() > max => {
            *text = cut(text, max, "…");
            shortened.insert(path.to_owned());
        }
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                shorten(v, &path, max, shortened);
            }
        }
        Value::Array(items) => {
            for v in items.iter_mut() {
                shorten(v, &format!("{path}[]"), max, shortened);
            }
        }
        _ => {}
    }
}

/// Marks a body trimmed.
fn mark(body: &mut Value, samples: usize, shortened: &BTreeSet<String>, original: usize) {
    body["truncated"] = Value::Bool(true);
    body["removed"] = json!({ "samples": samples, "shortened": shortened, "original_bytes": original });
}

/// The body within `budget` bytes (see the module's doc for the shape).
fn fit(delivery: &Delivery, budget: usize) -> Value {
    let full = body(delivery);
    let original = size(&full);
    if original <= budget {
        return full;
    }
    let all = delivery.alert.samples.len();
    let with_samples = |kept: usize| {
        let mut body = full.clone();
        body["alert"]["samples"] = Value::Array(delivery.alert.samples[..kept].iter().map(sample).collect());
        mark(&mut body, all - kept, &BTreeSet::new(), original);
        body
    };
    // The most samples that fit, found by halving.
    let (mut low, mut high) = (0, all);
    while low < high {
        let mid = (low + high).div_ceil(2);
        if size(&with_samples(mid)) <= budget {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let body = with_samples(low);
    if size(&body) <= budget {
        return body;
    }
    let mut shortened = BTreeSet::new();
    for max in STRING_BOUNDS {
        let mut body = with_samples(0);
        shorten(&mut body, "", max, &mut shortened);
        mark(&mut body, all, &shortened, original);
        if size(&body) <= budget {
            return body;
        }
    }
    let alert = &delivery.alert;
    let short = |text: &str| cut(text, 64, "…");
    json!({
        "schema_version": SCHEMA_VERSION,
        "idempotency_key": delivery.dedup_key(),
        "alert": {
            "id": alert.id,
            "rule_id": short(&alert.rule_id),
            "severity": alert.severity.as_str(),
            "status": alert.status.as_str(),
            "account_id": short(&alert.account_id),
            "revision": alert.revision,
        },
        "transition": { "action": action(delivery.transition.kind), "kind": delivery.transition.kind.as_str(), "revision": delivery.transition.revision },
        "truncated": true,
        "removed": { "everything_else": true, "samples": all, "original_bytes": original },
    })
}

/// The message for a delivery, within SNS's limits.
pub fn message(delivery: &Delivery) -> SnsMessage {
    let subject = subject(delivery);
    let attributes = attributes(delivery);
    let attribute_bytes: usize = attributes.iter().map(|(name, value)| name.len() + "String".len() + value.len()).sum();
    let budget = MAX_MESSAGE_BYTES.saturating_sub(subject.len() + attribute_bytes + MARGIN_BYTES);
    let body = serde_json::to_string(&fit(delivery, budget)).unwrap_or_default();
    SnsMessage { subject, body, attributes }
}

/// Keeps the characters SNS takes in a FIFO deduplication id or group id.
fn fifo_id(text: &str) -> String {
    text.chars().filter(|c| c.is_ascii_graphic()).take(128).collect()
}

/// Publishes each transition to one topic (see the module's doc).
#[derive(Debug, Clone)]
pub struct SnsSink {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsSink {
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsSink { client, topic_arn: topic_arn.into() }
    }

    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }
}

/// A publish error: SNS's own throttling codes and HTTP 429 are retryable
/// (besides what [`classify`] finds retryable), the rest as classified.
fn publish_error<E>(operation: &str, error: SdkError<E, aws_sdk_sns::config::http::HttpResponse>) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let throttled = matches!(error.code(), Some("Throttled" | "KMSThrottling")) || error.raw_response().is_some_and(|r| r.status().as_u16() == 429);
    match classify(operation, error) {
        PortError::Backend { what, message, .. } if throttled => PortError::Backend { what, message, retryable: true },
        other => other,
    }
}

#[async_trait]
impl AlertSink for SnsSink {
    fn name(&self) -> &str {
        "sns"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError> {
        let key = delivery.dedup_key();
        let operation = format!("sns:Publish {} (alert {key})", self.topic_arn);
        let message = message(delivery);
        let mut publish = self.client.publish().topic_arn(&self.topic_arn).subject(message.subject).message(message.body);
        for (name, value) in message.attributes {
            let value = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(value)
                .build()
                .map_err(|e| PortError::Invalid { what: operation.clone(), message: format!("attribute {name}: {e}") })?;
            publish = publish.message_attributes(name, value);
        }
        if self.topic_arn.ends_with(".fifo") {
            publish = publish.message_group_id(fifo_id(&delivery.alert.id)).message_deduplication_id(fifo_id(&key));
        }
        publish.send().await.map(|_| ()).map_err(|e| publish_error(&operation, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::alerts::conformance::{sample_alert, sample_event_ref};
    use trailwatch_core::alerts::{Severity, Transition};

    fn delivery(kind: TransitionKind) -> Delivery {
        let alert = sample_alert("a-1", "root-login|111111111111", 1_730_000_000_000);
        let transition = Transition {
            alert_id: alert.id.clone(),
            revision: alert.revision,
            kind,
            at: alert.last_seen,
            recorded_at: alert.updated_at,
            cause: "a match".into(),
            by: None,
            notify: true,
        };
        Delivery { id: 1, sink: "sns".into(), alert, transition, attempts: 0, next_attempt_at: 0, last_error: None }
    }

    #[test]
    fn transition_kinds_map_to_actions() {
        assert_eq!(action(TransitionKind::Opened), "trigger");
        assert_eq!(action(TransitionKind::Updated), "update");
        assert_eq!(action(TransitionKind::Acknowledged), "update");
        assert_eq!(action(TransitionKind::Resolved), "resolve");
    }

    #[test]
    fn subjects_are_short_printable_ascii_on_one_line() {
        let mut d = delivery(TransitionKind::Opened);
        d.alert.severity = Severity::Critical;
        assert_eq!(subject(&d), "[CRITICAL] opened: Console sign-in without MFA - prod (111111111111)");
        d.alert.title = format!("Zugriff\nverweigert — «{}»", "x".repeat(200));
        let s = subject(&d);
        assert!(s.len() <= MAX_SUBJECT_CHARS && s.ends_with("..."), "{s}");
        assert!(s.chars().all(|c| (' '..='~').contains(&c)), "{s}");
        assert!(s.starts_with("[CRITICAL] opened: Zugriff verweigert ? ?xxx"), "{s}");
    }

    #[test]
    fn a_body_that_fits_is_whole() {
        let mut d = delivery(TransitionKind::Acknowledged);
        d.alert.group.push(("awsRegion".into(), "eu-west-1".into()));
        d.transition.by = Some("alice@example.com".into());
        let m = message(&d);
        let body: Value = serde_json::from_str(&m.body).expect("json");
        assert_eq!(body["idempotency_key"], "a-1:1");
        assert_eq!(body["alert"]["region"], "eu-west-1");
        assert_eq!(body["alert"]["account_name"], "prod");
        assert_eq!(body["alert"]["samples"].as_array().map(Vec::len), Some(1));
        assert_eq!(body["transition"]["action"], "update");
        assert_eq!(body["transition"]["by"], "alice@example.com");
        assert_eq!(body["truncated"], false);
        assert!(body.get("removed").is_none());
        let names: Vec<&str> = m.attributes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["severity", "rule_id", "account_id", "action", "dedup_key", "alert_id", "revision"]);
    }

    #[test]
    fn oversized_bodies_lose_samples_first_then_long_strings() {
        // Samples alone over the limit: some are dropped, nothing is shortened.
        let mut d = delivery(TransitionKind::Updated);
        d.alert.samples = (0..4000).map(|i| sample_event_ref(&format!("{i:08}-{}", "e".repeat(60)), 1_730_000_000_000 + i)).collect();
        let m = message(&d);
        assert!(m.body.len() + m.subject.len() < MAX_MESSAGE_BYTES);
        let body: Value = serde_json::from_str(&m.body).expect("json");
        let kept = body["alert"]["samples"].as_array().map_or(0, Vec::len);
        assert!(kept > 1000 && kept < 4000, "as many samples as fit are kept: {kept}");
        assert_eq!(body["removed"]["samples"], 4000 - kept);
        assert_eq!(body["removed"]["shortened"], json!([]));
        assert_eq!(body["alert"]["samples"][0]["event_id"], d.alert.samples[0].event_id.as_str(), "the first samples are kept");

        // A huge summary too: every sample goes, then the summary is cut.
        d.alert.summary = "s".repeat(400_000);
        let body: Value = serde_json::from_str(&message(&d).body).expect("json");
        assert_eq!(body["truncated"], true);
        assert_eq!(body["removed"]["samples"], 4000);
        assert_eq!(body["removed"]["shortened"], json!(["summary"]));
        assert_eq!(body["summary"].as_str().map(|s| s.chars().count()), Some(4096));
        assert_eq!(body["alert"]["title"], "Console sign-in without MFA", "short strings stay");

        // Thousands of long group values: strings are cut shorter and shorter.
        d.alert.group = (0..2000).map(|i| (format!("field{i}"), "v".repeat(300))).collect();
        let m = message(&d);
        assert!(m.body.len() < MAX_MESSAGE_BYTES);
        let body: Value = serde_json::from_str(&m.body).expect("json");
        assert_eq!(body["alert"]["group"]["field7"].as_str().map(|s| s.chars().count()), Some(64));
        assert_eq!(body["idempotency_key"], "a-1:1");

        // Too much even then: the short form.
        d.alert.group = (0..20_000).map(|i| (format!("field{i}"), "v".repeat(300))).collect();
        let m = message(&d);
        assert!(m.body.len() < 1024, "{}", m.body);
        let body: Value = serde_json::from_str(&m.body).expect("json");
        assert_eq!((body["truncated"].clone(), body["removed"]["everything_else"].clone()), (json!(true), json!(true)));
        assert_eq!((body["alert"]["id"].clone(), body["transition"]["action"].clone()), (json!("a-1"), json!("update")));
    }
}
