//! Alert sinks: where the transitions of alerts go.
//!
//! - [`StdoutSink`]: one human-readable line per transition (or the JSON
//!   record), to standard output or any [`Write`](std::io::Write).
//! - [`JsonlSink`]: appends the JSON record of each transition to a file,
//!   flushed and fsynced per delivery.
//! - [`WebhookSink`]: an HTTP POST per transition, as the JSON record or as a
//!   PagerDuty Events API v2 event, with an `Idempotency-Key` header.
//!
//! Each sink delivers one transition per call and says through the error
//! whether trying again may help; the delivery worker in the enricher retries
//! and keeps the order of each alert's transitions. Receivers drop repeats by
//! the dedup key `<alert id>:<revision>`: a transition may arrive twice when
//! the process stops between delivering it and recording that it did.

mod jsonl;
pub mod pagerduty;
mod stdout;
mod webhook;

pub use jsonl::JsonlSink;
pub use stdout::{text_line, StdoutFormat, StdoutSink};
pub use webhook::{WebhookConfig, WebhookFormat, WebhookSink, PAGERDUTY_EVENTS_URL};

use serde::{Deserialize, Serialize};
use trailwatch_core::alerts::{Alert, Delivery, Transition};
use trailwatch_core::ports::PortError;

/// What the JSONL file, the JSON stdout variant and the generic webhook
/// carry for one transition: `{ "dedupKey", "transition", "alert" }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransitionRecord {
    /// `<alert id>:<revision>`: receivers drop repeats by it.
    pub dedup_key: String,
    pub transition: Transition,
    /// The alert as it was right after the transition.
    pub alert: Alert,
}

impl From<&Delivery> for TransitionRecord {
    fn from(delivery: &Delivery) -> Self {
        TransitionRecord { dedup_key: delivery.dedup_key(), transition: delivery.transition.clone(), alert: delivery.alert.clone() }
    }
}

/// The record as one line of JSON, without the newline.
pub(crate) fn record_json(delivery: &Delivery, what: &str) -> Result<Vec<u8>, PortError> {
    to_json(&TransitionRecord::from(delivery), delivery, what)
}

/// A body as JSON; an error names the alert.
pub(crate) fn to_json(body: &impl Serialize, delivery: &Delivery, what: &str) -> Result<Vec<u8>, PortError> {
    serde_json::to_vec(body)
        .map_err(|e| PortError::Invalid { what: what.to_owned(), message: format!("alert {} cannot be written as JSON: {e}", delivery.dedup_key()) })
}

/// Text from an alert (a summary rendered from an event) on one line:
/// control characters, line breaks among them, become spaces.
pub(crate) fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.chars().any(char::is_control) {
        text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect::<String>().into()
    } else {
        text.into()
    }
}
