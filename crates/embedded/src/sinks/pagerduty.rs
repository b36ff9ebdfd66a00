//! Transitions as PagerDuty Events API v2 alert events.
//!
//! One PagerDuty alert follows one trailwatch alert across its life: the
//! `dedup_key` is the alert id, opening and updating it send `trigger` (with
//! the payload), acknowledging sends `acknowledge`, resolving `resolve` (those
//! two carry no payload, as the API wants). A match after resolution opens a
//! new trailwatch alert with a new id, so a new PagerDuty alert too.

use serde_json::{json, Map, Value};
use trailwatch_core::alerts::{Delivery, EventRef, Severity, TransitionKind};
use trailwatch_core::identity::Origin;
use trailwatch_core::time::format_utc;

/// PagerDuty's limit on `payload.summary`, in characters.
pub const SUMMARY_MAX_CHARS: usize = 1024;

/// `trigger`, `acknowledge` or `resolve`.
pub fn event_action(kind: TransitionKind) -> &'static str {
    match kind {
        TransitionKind::Opened | TransitionKind::Updated => "trigger",
        TransitionKind::Acknowledged => "acknowledge",
        TransitionKind::Resolved => "resolve",
    }
}

/// PagerDuty's four severities from Sigma's five levels.
pub fn severity(level: Severity) -> &'static str {
    match level {
        Severity::Critical => "critical",
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Informational => "info",
    }
}

/// `text` cut to at most `max` characters, the last of them `…` when cut.
pub fn truncate_chars(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some(_) if max == 0 => "".into(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            format!("{}…", &text[..end]).into()
        }
    }
}

/// The event to send for a delivery.
pub fn event(delivery: &Delivery, routing_key: &str) -> Value {
    let alert = &delivery.alert;
    let transition = &delivery.transition;
    let action = event_action(transition.kind);
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": alert.id,
    });
    if action != "trigger" {
        return event;
    }
    let summary = if alert.summary.trim().is_empty() { alert.title.as_str() } else { alert.summary.as_str() };
    let mut payload = Map::new();
    payload.insert("summary".into(), truncate_chars(&super::one_line(summary), SUMMARY_MAX_CHARS).into());
    payload.insert("source".into(), alert.account_alias.as_deref().unwrap_or(&alert.account_id).into());
    payload.insert("severity".into(), severity(alert.severity).into());
    payload.insert("timestamp".into(), format_utc(transition.at).into());
    if let Some(source) = event_source(delivery) {
        payload.insert("component".into(), source.into());
    }
    payload.insert("group".into(), alert.account_id.clone().into());
    payload.insert("class".into(), alert.rule_id.clone().into());
    payload.insert("custom_details".into(), custom_details(delivery));
    event["payload"] = Value::Object(payload);
    event["client"] = "trailwatch".into();
    event
}

/// The event source (`signin.amazonaws.com`) when the rule groups by it; an
/// alert does not carry it otherwise.
fn event_source(delivery: &Delivery) -> Option<&str> {
    delivery.alert.group.iter().find(|(field, _)| field == "eventSource").map(|(_, value)| value.as_str())
}

fn custom_details(delivery: &Delivery) -> Value {
    let alert = &delivery.alert;
    let transition = &delivery.transition;
    let mut details = Map::new();
    details.insert("alert_id".into(), alert.id.clone().into());
    details.insert("title".into(), alert.title.clone().into());
    details.insert("account".into(), account(alert.account_alias.as_deref(), &alert.account_id).into());
    if !alert.group.is_empty() {
        let group: Map<String, Value> = alert.group.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
        details.insert("group_by".into(), group.into());
    }
    details.insert("origin".into(), alert.origin.as_ref().map_or(Value::Null, origin));
    let chain = alert.origin.as_ref().map_or_else(Vec::new, |o| {
        o.chain
            .iter()
            .map(|hop| {
                json!({
                    "account_id": hop.account_id,
                    "role_arn": hop.role_arn,
                    "session_name": hop.session_name,
                    "access_key_id": hop.access_key_id,
                    "issued_by": hop.kind,
                    "issued_at": format_utc(hop.time),
                    "event_id": hop.event_id,
                })
            })
            .collect()
    });
    details.insert("chain".into(), chain.into());
    details.insert("count".into(), alert.count.into());
    details.insert("first_seen".into(), format_utc(alert.first_seen).into());
    details.insert("last_seen".into(), format_utc(alert.last_seen).into());
    details.insert("samples".into(), alert.samples.iter().map(sample).collect::<Vec<_>>().into());
    details.insert(
        "transition".into(),
        json!({
            "kind": transition.kind,
            "revision": transition.revision,
            "at": format_utc(transition.at),
            "cause": transition.cause,
            "by": transition.by,
            "dedup_key": delivery.dedup_key(),
        }),
    );
    details.into()
}

fn account(alias: Option<&str>, id: &str) -> String {
    match alias {
        Some(alias) => format!("{alias} ({id})"),
        None => id.to_owned(),
    }
}

fn origin(o: &Origin) -> Value {
    json!({
        "kind": o.kind.as_str(),
        "principal": o.principal,
        "account_id": o.account_id,
        "provider": o.provider,
        "source_identity": o.source_identity,
        "confidence": o.confidence.as_str(),
        "reason": o.reason,
    })
}

fn sample(e: &EventRef) -> Value {
    json!({ "account_id": e.account_id, "event_id": e.event_id, "event_time": format_utc(e.event_time) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate_chars("short", 10), "short");
        assert_eq!(truncate_chars("exactly10!", 10), "exactly10!");
        let cut = truncate_chars("ééééééééééé", 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(truncate_chars("abc", 0), "");
    }
}
