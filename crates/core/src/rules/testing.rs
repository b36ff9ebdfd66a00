//! The tests every rule carries: events (inline, as a list for thresholds,
//! or in a file beside the rule), optionally with an origin and an account
//! alias, and whether the rule must match them. Test events are validated
//! at load; [`run_tests`] runs them through a fresh [`Detector`] each.

use std::sync::Arc;

use serde_json::Value;

use crate::event::Event;
use crate::identity::Origin;
use crate::reader::RecordReader;

use super::field::Ctx;
use super::json::Json;
use super::parse::map_entries;
use super::yaml::Node;
use super::{Detector, Diag, Files, Rule, RuleIndex, RuleSet};

/// The account test events fall back to when they name none.
const TEST_ACCOUNT: &str = "000000000000";

const TEST_KEYS: &[&str] = &["name", "match", "event", "events", "event_file", "origin", "account_alias"];

#[derive(Debug, Clone)]
pub(crate) struct TestCase {
    pub name: String,
    pub expect: bool,
    pub events: Vec<Event>,
    pub alias: Option<String>,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOutcome {
    pub rule_id: String,
    /// The rule's file.
    pub path: String,
    /// The test's name.
    pub name: String,
    pub passed: bool,
    /// Why it failed.
    pub reason: Option<String>,
}

fn event_from_json(value: &Value, index: usize) -> Result<Event, String> {
    if !value.is_object() {
        return Err("a test event must be a CloudTrail record (a map)".into());
    }
    Event::from_record(index, value.to_string().as_bytes(), TEST_ACCOUNT).map_err(|e| format!("not a valid CloudTrail record: {}", e.reason))
}

/// An inline event: a map, or text holding the record's JSON.
fn inline_event(node: &Node, index: usize) -> Result<Event, String> {
    match node {
        Node::Scalar { text, quoted: true, .. } => {
            let value: Value = serde_json::from_str(text).map_err(|e| format!("the event text is not JSON: {e}"))?;
            event_from_json(&value, index)
        }
        other => event_from_json(&other.to_json(), index),
    }
}

/// The records of a file: one record, newline-delimited records, or a log file.
fn file_events(text: &str) -> Result<Vec<Event>, String> {
    let mut reader = RecordReader::new(text.as_bytes());
    let mut events = Vec::new();
    while let Some(record) = reader.next_record().map_err(|e| e.to_string())? {
        events.push(Event::from_record(record.index, record.bytes, TEST_ACCOUNT).map_err(|e| format!("not a valid CloudTrail record: {e}"))?);
    }
    if events.is_empty() {
        return Err("the file holds no record".into());
    }
    Ok(events)
}

/// Parses a rule's `tests:` list.
pub(crate) fn parse_tests(node: &Node, rule_path: &str, files: &Files<'_>, diag: &mut Diag<'_>) -> Vec<TestCase> {
    let Node::Seq { items, .. } = node else {
        diag.at(node.pos(), format!("tests must be a list, not {}", node.kind()));
        return Vec::new();
    };
    let mut cases = Vec::with_capacity(items.len());
    for item in items {
        let Some(entries) = map_entries(item, "a test", TEST_KEYS, diag) else { continue };
        let get = |k: &str| entries.iter().find(|(name, _)| *name == k).map(|(_, v)| *v);
        let name = match get("name").and_then(Node::as_str) {
            Some(n) if !n.is_empty() => n.to_owned(),
            _ => {
                diag.at(item.pos(), "a test needs a name");
                continue;
            }
        };
        let expect = match get("match").map(|m| (m, m.as_bool())) {
            Some((_, Some(b))) => b,
            Some((m, None)) => {
                diag.at(m.pos(), format!("test {name:?}: match must be true or false"));
                continue;
            }
            None => {
                diag.at(item.pos(), format!("test {name:?} needs match: true or false"));
                continue;
            }
        };
        let given: Vec<(&str, &Node)> = ["event", "events", "event_file"].iter().filter_map(|k| get(k).map(|n| (*k, n))).collect();
        let (kind, source) = match given.as_slice() {
            [one] => *one,
            [] => {
                diag.at(item.pos(), format!("test {name:?} needs event, events or event_file"));
                continue;
            }
            [_, (second, n), ..] => {
                diag.at(n.pos(), format!("test {name:?}: {second} cannot be used with another event source (one of event, events, event_file)"));
                continue;
            }
        };
        let events = match kind {
            "event" => inline_event(source, 0).map(|e| vec![e]),
            "events" => match source {
                Node::Seq { items, .. } if !items.is_empty() => {
                    items.iter().enumerate().map(|(i, n)| inline_event(n, i).map_err(|e| format!("event {i}: {e}"))).collect()
                }
                _ => Err("events must be a non-empty list of records".into()),
            },
            _ => match source.as_str() {
                Some(file) => files.read(rule_path, file).and_then(|text| file_events(&text)).map_err(|e| format!("event_file {file}: {e}")),
                None => Err("event_file must be a path".into()),
            },
        };
        let mut events = match events {
            Ok(events) => events,
            Err(e) => {
                diag.at(source.pos(), format!("test {name:?}: {e}"));
                continue;
            }
        };
        if let Some(node) = get("origin") {
            match serde_json::from_value::<Origin>(node.to_json()) {
                Ok(origin) => events.iter_mut().for_each(|e| e.origin = Some(origin.clone())),
                Err(e) => {
                    diag.at(node.pos(), format!("test {name:?}: origin: {e}"));
                    continue;
                }
            }
        }
        let alias = match get("account_alias") {
            None => None,
            Some(n) => match n.as_str() {
                Some(a) if !n.is_null() => Some(a.to_owned()),
                _ => {
                    diag.at(n.pos(), format!("test {name:?}: account_alias must be text"));
                    continue;
                }
            },
        };
        cases.push(TestCase { name, expect, events, alias });
    }
    cases
}

/// Runs every rule's tests, each through a fresh detector (thresholds start
/// from zero), the index included.
pub fn run_tests(set: &RuleSet) -> Vec<TestOutcome> {
    let shared = Arc::new(set.clone());
    let mut outcomes = Vec::new();
    for (i, rule) in set.rules().iter().enumerate() {
        for case in &rule.compiled.cases {
            let mut detector = Detector::new(Arc::clone(&shared));
            let mut detections = Vec::new();
            for event in &case.events {
                detector.check_rule(i, event, case.alias.as_deref(), &mut detections);
            }
            let matched = !detections.is_empty();
            let reason = (matched != case.expect).then(|| {
                if case.expect {
                    format!("expected a match, got none: {}", explain(rule, case, &detector))
                } else {
                    format!("expected no match, got {} (\"{}\"): {}", detections.len(), detections[0].summary, explain(rule, case, &detector))
                }
            });
            outcomes.push(TestOutcome { rule_id: rule.id.clone(), path: rule.path.clone(), name: case.name.clone(), passed: reason.is_none(), reason });
        }
    }
    outcomes
}

/// Which selections matched the test's (last) event, and for a threshold
/// how many of its events matched.
fn explain(rule: &Rule, case: &TestCase, detector: &Detector) -> String {
    let Some(event) = case.events.last() else { return String::new() };
    if detector.evaluations_of(&rule.id) == 0 {
        let (field, values, actual) = match &rule.index {
            RuleIndex::EventName(v) => ("eventName", v, &event.event_name),
            RuleIndex::EventSource(v) => ("eventSource", v, &event.event_source),
            RuleIndex::Every => ("", &Vec::new(), &event.event_name),
        };
        return format!("the rule is only evaluated for {field} {}, not {actual}", values.join(", "));
    }
    let record = Json::parse(&event.raw).unwrap_or(Json::Null);
    let ctx = Ctx { record: &record, event, alias: case.alias.as_deref() };
    let selections: Vec<String> = rule
        .compiled
        .selections
        .iter()
        .map(|s| match (s.matches(&ctx), s.first_failure(&ctx)) {
            (true, _) => format!("{} matched", s.name),
            (false, Some(field)) => format!("{} did not ({field})", s.name),
            (false, None) => format!("{} did not", s.name),
        })
        .collect();
    let mut text = format!("{} [condition: {}]", selections.join(", "), rule.condition());
    if let Some(t) = &rule.threshold {
        let matched = detector.stats().matches;
        text.push_str(&format!("; {matched} of {} events matched, the threshold needs more than {} within {} ms", case.events.len(), t.above, t.window_ms));
    }
    text
}
