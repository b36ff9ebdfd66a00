//! Alerts: what a rule match becomes, how it lives (open → updated →
//! acknowledged → resolved), and the ports that store it and deliver it.
//!
//! - A [`Detection`] is one rule match on one event, with everything the
//!   alert needs rendered already (summary, severity, group, origin).
//! - The lifecycle ([`lifecycle`]) turns detections into [`Alert`]s keyed by
//!   their dedup key (rule id + group-by values): the first match opens an
//!   alert, later ones update it, a quiet period resolves it, a person can
//!   acknowledge or resolve it, and a match after resolution opens a new one.
//! - Every change is a [`Transition`], stored with the alert in one write, and
//!   each notifying transition is queued for every sink in the same write
//!   (the outbox), so a sink that is down delays an alert and never loses it.
//!
//! Times: detections and quiet resolutions happen in trail time (event time
//! and the newest event time seen), so a replay or a backfill raises and
//! resolves the same alerts as live ingest; what a person does happens in
//! wall-clock time. Every transition records both.

pub mod conformance;
pub mod lifecycle;
pub mod memory;

pub use lifecycle::{Lifecycle, LifecycleConfig, LifecycleReport};
pub use memory::MemoryAlertStore;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::identity::Origin;
use crate::ports::PortError;
use crate::time::EpochMillis;

/// How bad it is, in Sigma's `level` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Informational => "informational",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// The severity named by [`Severity::as_str`] (Sigma's `level`).
    pub fn parse(s: &str) -> Option<Self> {
        [Severity::Informational, Severity::Low, Severity::Medium, Severity::High, Severity::Critical].into_iter().find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Open,
    /// A person has seen it; it still takes updates and still resolves when quiet.
    Acknowledged,
    /// Final: a later match opens a new alert.
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [AlertStatus::Open, AlertStatus::Acknowledged, AlertStatus::Resolved].into_iter().find(|v| v.as_str() == s)
    }
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransitionKind {
    Opened,
    /// More matches, or the origin of its events resolved later.
    Updated,
    Acknowledged,
    Resolved,
}

impl TransitionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitionKind::Opened => "opened",
            TransitionKind::Updated => "updated",
            TransitionKind::Acknowledged => "acknowledged",
            TransitionKind::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [TransitionKind::Opened, TransitionKind::Updated, TransitionKind::Acknowledged, TransitionKind::Resolved].into_iter().find(|v| v.as_str() == s)
    }
}

/// An event by its identity in history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventRef {
    pub account_id: String,
    pub event_id: String,
    pub event_time: EpochMillis,
}

/// One rule matched one event (for a threshold rule: an event of a burst,
/// more than `above` matches of its group within one window).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub rule_id: Arc<str>,
    pub title: Arc<str>,
    pub severity: Severity,
    /// The rule id and the group-by values: matches with the same key are one alert.
    pub dedup_key: String,
    /// The group-by fields and their values, in the rule's order.
    pub group: Vec<(String, String)>,
    pub event: EventRef,
    pub account_alias: Option<String>,
    /// Plain text rendered from the event by the rule's summary template.
    pub summary: String,
    /// Who is behind the event, as far as it is known when the rule matched.
    pub origin: Option<Origin>,
    /// Resolve the alert after this long without a match (trail time); None:
    /// only a person resolves it.
    pub resolve_after_ms: Option<i64>,
    /// Deliver updates from new matches at most once per this period (the
    /// rule's dedup window); 0 delivers every update.
    pub notify_every_ms: i64,
}

/// An alert as stored and delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Stable for the alert's life; receivers key tickets by it.
    pub id: String,
    pub dedup_key: String,
    pub rule_id: String,
    pub title: String,
    pub severity: Severity,
    pub status: AlertStatus,
    /// The summary of the event that opened it (or of the latest, when the
    /// origin became known later).
    pub summary: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_alias: Option<String>,
    /// Who is behind it, with the chain and its confidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// The event the origin belongs to: when it resolves later, so does the alert's origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_event: Option<EventRef>,
    #[serde(default)]
    pub group: Vec<(String, String)>,
    pub first_seen: EpochMillis,
    pub last_seen: EpochMillis,
    pub count: u64,
    /// The first matching events, then the latest, up to a cap.
    #[serde(default)]
    pub samples: Vec<EventRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after_ms: Option<i64>,
    #[serde(default)]
    pub notify_every_ms: i64,
    /// Trail time of the last delivered update from matches.
    #[serde(default)]
    pub last_notified: EpochMillis,
    /// 1 when opened; each transition adds one. Stores reject a write made
    /// from a stale revision (another enricher changed it meanwhile).
    pub revision: u64,
    /// Wall-clock time of the last change.
    pub updated_at: EpochMillis,
}

/// One change of an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    pub alert_id: String,
    /// The alert's revision after this change: `alert_id` and `revision`
    /// together name a transition, and receivers can drop repeats by them.
    pub revision: u64,
    pub kind: TransitionKind,
    /// When it happened: trail time for matches and quiet resolution, wall
    /// clock for what a person did.
    pub at: EpochMillis,
    /// Wall-clock time it was recorded.
    pub recorded_at: EpochMillis,
    /// Why, in words: the matching event, the quiet period, the person's note.
    pub cause: String,
    /// Who acknowledged or resolved it, when a person did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Whether sinks are told (updates between notifications are stored only).
    pub notify: bool,
}

/// An alert written with the transitions that brought it there.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertChange {
    /// The alert after the change.
    pub alert: Alert,
    /// The alert's revision when it was read; None for a new alert.
    pub base_revision: Option<u64>,
    /// In order; the last one's revision is `alert.revision`.
    pub transitions: Vec<Transition>,
}

/// A transition waiting for (or done with) one sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The outbox entry; increasing in the order transitions were stored.
    pub id: i64,
    pub sink: String,
    /// The alert as it was right after the transition.
    pub alert: Alert,
    pub transition: Transition,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Not before this wall-clock time.
    pub next_attempt_at: EpochMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl Delivery {
    /// What receivers use to drop repeats: `<alert id>:<revision>`.
    pub fn dedup_key(&self) -> String {
        format!("{}:{}", self.transition.alert_id, self.transition.revision)
    }
}

/// Which alerts to list, newest change first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    pub status: Option<Vec<AlertStatus>>,
    pub severity_at_least: Option<Severity>,
    pub rule_id: Option<String>,
    pub account_id: Option<String>,
    pub origin_principal: Option<String>,
    /// Alerts last seen at or after this trail time.
    pub since: Option<EpochMillis>,
    /// Alerts first seen before this trail time.
    pub until: Option<EpochMillis>,
    /// Continue after this alert (from [`AlertPage::next`]).
    pub after: Option<AlertCursor>,
    pub limit: usize,
}

impl AlertQuery {
    /// Whether `alert` passes the filters (not the cursor or the limit):
    /// what every store's listing means by them.
    pub fn matches(&self, alert: &Alert) -> bool {
        self.status.as_ref().is_none_or(|s| s.contains(&alert.status))
            && self.severity_at_least.is_none_or(|s| alert.severity >= s)
            && self.rule_id.as_ref().is_none_or(|r| *r == alert.rule_id)
            && self.account_id.as_ref().is_none_or(|a| *a == alert.account_id)
            && self.origin_principal.as_ref().is_none_or(|p| alert.origin.as_ref().and_then(|o| o.principal.as_ref()) == Some(p))
            && self.since.is_none_or(|since| alert.last_seen >= since)
            && self.until.is_none_or(|until| alert.first_seen < until)
    }
}

/// A position in an alert listing: last change, then id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AlertCursor {
    pub updated_at: EpochMillis,
    pub id: String,
}

impl AlertCursor {
    /// Where `alert` stands in a listing.
    pub fn of(alert: &Alert) -> AlertCursor {
        AlertCursor { updated_at: alert.updated_at, id: alert.id.clone() }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertPage {
    pub alerts: Vec<Alert>,
    pub next: Option<AlertCursor>,
}

/// Where alerts, their transitions and the outbox are kept.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// The alert that is not resolved, for each of these dedup keys that has one.
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError>;

    /// Writes the alerts and their transitions, and queues each transition
    /// with `notify` for every one of `sinks`, all or none. A change whose
    /// `base_revision` is not the stored revision (or that opens a second
    /// unresolved alert for a dedup key) fails the whole write with
    /// [`PortError::Backend`] retryable: read again and redo.
    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError>;

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError>;

    /// An alert's transitions, oldest first.
    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError>;

    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError>;

    /// Unresolved alerts with a quiet period whose last match is older than
    /// `now - resolve_after` (trail time), oldest first.
    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError>;

    /// Unresolved alerts whose `origin_event` is one of these events.
    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError>;

    /// Deliveries to `sink` due at `now` (wall clock), oldest first.
    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError>;

    /// Marks deliveries done; they are not returned by `due` again.
    async fn delivered(&self, ids: &[i64], at: EpochMillis) -> Result<(), PortError>;

    /// Records a failed attempt and when to try again.
    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError>;

    /// Deliveries not yet done, per sink.
    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError>;
}

/// Where alerts go: stdout, a JSONL file, a webhook, SNS.
#[async_trait]
pub trait AlertSink: Send + Sync {
    /// The name deliveries are queued under (`stdout`, `file`, `webhook`, …).
    fn name(&self) -> &str;

    /// Delivers one transition. A retryable error means try again later;
    /// a permanent one too (the sink may recover), but it is logged as such.
    async fn deliver(&self, delivery: &Delivery) -> Result<(), PortError>;
}
