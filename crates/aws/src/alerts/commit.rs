//! Writing a commit: staging the changes against what is stored, packing
//! them into transactions, and reading a cancelled transaction back as a
//! conflict.
//!
//! Staging replays the changes in order against the stored revisions and
//! unresolved alerts (read just before), as the memory store checks them, so
//! a conflict that is visible already is reported without writing. The
//! transactions then hold the same checks as conditions, which is what
//! decides: another enricher's write in between cancels the transaction.
//!
//! A DynamoDB transaction holds at most [`MAX_ITEMS`] items and touches an
//! item once, so the changes of one alert in one transaction become one
//! write of the alert (conditioned on the revision before the first of them,
//! carrying the last), and the changes of one dedup key one write of its
//! pointer (conditioned on its holder before, setting or deleting its holder
//! after). Changes connected by an alert or a dedup key form a group; groups
//! are packed whole into transactions, and a group too large for one is
//! split between two changes of it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem};
use trailwatch_core::alerts::{AlertChange, AlertStatus};
use trailwatch_core::ports::PortError;

use super::schema::{
    alert_item, delivery_pk, item_key, n, order_key, pointer_pk, s, to_json, transition_item, Item, ALERT, ATTEMPTS, DEDUP_KEY, DELIVERY_ID, DELIVERY_SK, DUE,
    DUE_SINK, HOLDER, NEXT_ATTEMPT, OPEN_SK, PK, REVISION, TRANSITION,
};
use crate::error::{classify, AwsResult};

/// Items per transaction (DynamoDB's limit).
pub(crate) const MAX_ITEMS: usize = 100;

/// Bytes per transaction, below DynamoDB's 4 MB with room for attribute names.
const MAX_BYTES: usize = 3_500_000;

/// What is stored of an alert a commit changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub revision: u64,
    pub dedup_key: String,
    pub unresolved: bool,
}

/// A change and the state it was staged against.
#[derive(Debug)]
pub(crate) struct Step<'a> {
    pub change: &'a AlertChange,
    /// The alert's revision before the change; None: not stored.
    pub before: Option<u64>,
    /// The unresolved alert of the change's dedup key before and after it.
    pub holder_before: Option<String>,
    pub holder_after: Option<String>,
}

/// The error of a change made from a state that is no longer stored (the
/// kind and wording of the memory store's).
pub(crate) fn conflict(table: &str, id: &str, message: String) -> PortError {
    PortError::backend(format!("alert {id} in DynamoDB table {table}"), format!("{message}; read it again and redo the change"), true)
}

fn revision_conflict(stored: Option<u64>, base: Option<u64>) -> String {
    match (stored, base) {
        (Some(revision), None) => format!("already stored (revision {revision}), the change opens it"),
        (None, Some(base)) => format!("not stored, the change was made from revision {base}"),
        (stored, base) => format!("stored at revision {stored:?}, the change was made from revision {base:?}"),
    }
}

/// Replays the changes against `stored` (the alerts they change, as read):
/// malformed changes are invalid, stale revisions and a second unresolved
/// alert for a dedup key conflicts.
pub(crate) fn stage<'a>(table: &str, changes: &'a [AlertChange], stored: &HashMap<String, Stored>) -> AwsResult<Vec<Step<'a>>> {
    for change in changes {
        change.check()?;
    }
    let mut alerts: HashMap<&str, (u64, &str)> = stored.iter().map(|(id, s)| (id.as_str(), (s.revision, s.dedup_key.as_str()))).collect();
    let mut holders: HashMap<&str, Option<String>> = HashMap::new();
    for (id, s) in stored.iter().filter(|(_, s)| s.unresolved) {
        holders.insert(s.dedup_key.as_str(), Some(id.clone()));
    }
    let mut steps = Vec::with_capacity(changes.len());
    for change in changes {
        let alert = &change.alert;
        let id = alert.id.as_str();
        let state = alerts.get(id).copied();
        let before = state.map(|(revision, _)| revision);
        if before != change.base_revision {
            return Err(conflict(table, id, revision_conflict(before, change.base_revision)));
        }
        if let Some((_, key)) = state.filter(|(_, key)| *key != alert.dedup_key) {
            return Err(PortError::Invalid { what: format!("alert {id}"), message: format!("dedup key {key} changed to {}", alert.dedup_key) });
        }
        let key = alert.dedup_key.as_str();
        let holder_before = holders.get(key).cloned().flatten();
        let holder_after = if alert.status == AlertStatus::Resolved {
            holder_before.clone().filter(|holder| holder != id)
        } else {
            if let Some(other) = holder_before.as_ref().filter(|other| *other != id) {
                return Err(conflict(table, id, format!("alert {other} is already unresolved for dedup key {key}")));
            }
            Some(id.to_owned())
        };
        holders.insert(key, holder_after.clone());
        alerts.insert(id, (alert.revision, key));
        steps.push(Step { change, before, holder_before, holder_after });
    }
    Ok(steps)
}

/// How many outbox entries a change queues.
pub(crate) fn queued(change: &AlertChange, sinks: usize) -> usize {
    change.transitions.iter().filter(|t| t.notify).count() * sinks
}

/// Items and bytes a step adds to a transaction, besides its alert and pointer.
fn weight(step: &Step<'_>, alert_bytes: usize, sinks: usize) -> (usize, usize) {
    let transitions = step.change.transitions.len();
    let entries = queued(step.change, sinks);
    let bytes = transitions * 1_024 + entries * (alert_bytes + 1_024) + alert_bytes;
    (transitions + entries, bytes)
}

/// Step indexes connected by an alert id or a dedup key, each group in
/// commit order, groups in order of their first change.
fn groups(steps: &[Step<'_>]) -> Vec<Vec<usize>> {
    // Each step's group label; labels of merged groups are rewritten to the smaller one.
    let mut group_of: Vec<usize> = (0..steps.len()).collect();
    // An alert id (true) or dedup key (false) → the first step that has it.
    let mut by_name: HashMap<(&str, bool), usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for name in [(step.change.alert.id.as_str(), true), (step.change.alert.dedup_key.as_str(), false)] {
            match by_name.get(&name).copied() {
                None => {
                    by_name.insert(name, i);
                }
                Some(earlier) => {
                    let (keep, merge) = (group_of[earlier].min(group_of[i]), group_of[earlier].max(group_of[i]));
                    for g in group_of.iter_mut().filter(|g| **g == merge) {
                        *g = keep;
                    }
                }
            }
        }
    }
    let mut order: Vec<usize> = Vec::new();
    let mut members: HashMap<usize, Vec<usize>> = HashMap::new();
    for (i, g) in group_of.iter().enumerate() {
        members.entry(*g).or_insert_with(|| {
            order.push(*g);
            Vec::new()
        });
        members.entry(*g).or_default().push(i);
    }
    order.into_iter().filter_map(|g| members.remove(&g)).collect()
}

/// A transaction being filled.
#[derive(Default)]
struct Batch<'a> {
    steps: Vec<usize>,
    alerts: Vec<&'a str>,
    keys: Vec<&'a str>,
    items: usize,
    bytes: usize,
}

impl<'a> Batch<'a> {
    /// Adds a step if it fits; false (and unchanged) if it does not.
    fn add(&mut self, i: usize, step: &'a Step<'a>, (items, bytes): (usize, usize)) -> bool {
        let id = step.change.alert.id.as_str();
        let key = step.change.alert.dedup_key.as_str();
        let items = items + usize::from(!self.alerts.contains(&id)) + usize::from(!self.keys.contains(&key));
        if !self.steps.is_empty() && (self.items + items > MAX_ITEMS || self.bytes + bytes > MAX_BYTES) {
            return false;
        }
        self.steps.push(i);
        if !self.alerts.contains(&id) {
            self.alerts.push(id);
        }
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
        self.items += items;
        self.bytes += bytes;
        true
    }
}

/// The steps of each transaction, in the order to send them. A single
/// change larger than a transaction is refused.
pub(crate) fn pack(steps: &[Step<'_>], alert_bytes: &[usize], sinks: usize) -> AwsResult<Vec<Vec<usize>>> {
    let weights: Vec<(usize, usize)> = steps.iter().zip(alert_bytes).map(|(step, bytes)| weight(step, *bytes, sinks)).collect();
    for (step, (items, bytes)) in steps.iter().zip(&weights) {
        if items + 2 > MAX_ITEMS || *bytes > MAX_BYTES {
            return Err(PortError::Invalid {
                what: format!("alert {}", step.change.alert.id),
                message: format!("one change writes {} items ({bytes} bytes), more than a DynamoDB transaction holds ({MAX_ITEMS})", items + 2),
            });
        }
    }
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current = Batch::default();
    for group in groups(steps) {
        // The whole group in the current transaction, or in a new one, or split.
        let mut trial = Batch { steps: current.steps.clone(), alerts: current.alerts.clone(), keys: current.keys.clone(), ..current };
        if group.iter().all(|i| trial.add(*i, &steps[*i], weights[*i])) {
            current = trial;
            continue;
        }
        let mut alone = Batch::default();
        if group.iter().all(|i| alone.add(*i, &steps[*i], weights[*i])) {
            batches.push(std::mem::take(&mut current).steps);
            current = alone;
            continue;
        }
        for i in group {
            if !current.add(i, &steps[i], weights[i]) {
                batches.push(std::mem::take(&mut current).steps);
                current.add(i, &steps[i], weights[i]);
            }
        }
    }
    if !current.steps.is_empty() {
        batches.push(current.steps);
    }
    batches.retain(|b| !b.is_empty());
    Ok(batches)
}

/// What an item of a transaction is, to explain why it was refused.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Alert { id: String, base: Option<u64> },
    Pointer { key: String, claimer: String },
    Other { id: String, what: String },
}

/// One transaction: its items and what each is.
pub(crate) struct Transaction {
    pub items: Vec<TransactWriteItem>,
    pub targets: Vec<Target>,
}

fn built<T>(what: &str, r: Result<T, aws_sdk_dynamodb::error::BuildError>) -> AwsResult<T> {
    r.map_err(|e| PortError::Invalid { what: what.to_owned(), message: e.to_string() })
}

/// The write of one dedup key's pointer in a transaction.
struct PointerWrite<'a> {
    key: &'a str,
    /// The holder before the transaction's first change of the key, and after its last.
    before: Option<&'a str>,
    after: Option<&'a str>,
    /// The alert of the last change (for messages).
    claimer: &'a str,
}

/// The write of one alert in a transaction.
struct AlertWrite<'a> {
    id: &'a str,
    /// The revision before the transaction's first change of the alert.
    before: Option<u64>,
    /// The step of its last change: what is written.
    last: usize,
}

impl PointerWrite<'_> {
    /// A put of the holder after, or a delete when there is none, on the
    /// condition that the pointer names the holder before (or is missing).
    fn item(&self, table: &str) -> AwsResult<TransactWriteItem> {
        let what = format!("the open-alert pointer of dedup key {} in {table}", self.key);
        let mut names = HashMap::from([("#pk".to_owned(), PK.to_owned())]);
        let mut values = None;
        let condition = match self.before {
            None => "attribute_not_exists(#pk)",
            Some(holder) => {
                names.insert("#holder".to_owned(), HOLDER.to_owned());
                values = Some(HashMap::from([(":holder".to_owned(), s(holder))]));
                "attribute_not_exists(#pk) OR #holder = :holder"
            }
        };
        let item = match self.after {
            Some(holder) => {
                let mut pointer = item_key(pointer_pk(self.key), OPEN_SK);
                pointer.insert(HOLDER.into(), s(holder));
                pointer.insert(DEDUP_KEY.into(), s(self.key));
                let put = Put::builder()
                    .table_name(table)
                    .set_item(Some(pointer))
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                TransactWriteItem::builder().put(built(&what, put.build())?).build()
            }
            None => {
                let delete = Delete::builder()
                    .table_name(table)
                    .set_key(Some(item_key(pointer_pk(self.key), OPEN_SK)))
                    .condition_expression(condition)
                    .set_expression_attribute_names(Some(names))
                    .set_expression_attribute_values(values)
                    .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
                TransactWriteItem::builder().delete(built(&what, delete.build())?).build()
            }
        };
        Ok(item)
    }
}

/// Builds the transaction of `batch` (indexes into `steps`): pointers
/// first, then alerts, transitions and outbox entries. `jsons[i]` is the
/// alert of step `i` as JSON, `ids[i]` its outbox entries' ids.
pub(crate) fn build(table: &str, steps: &[Step<'_>], batch: &[usize], jsons: &[String], ids: &[Vec<i64>], sinks: &[String]) -> AwsResult<Transaction> {
    let mut items = Vec::new();
    let mut targets = Vec::new();
    let mut pointers: Vec<PointerWrite<'_>> = Vec::new();
    let mut alerts: Vec<AlertWrite<'_>> = Vec::new();
    for &i in batch {
        let step = &steps[i];
        let alert = &step.change.alert;
        match pointers.iter_mut().find(|p| p.key == alert.dedup_key) {
            Some(pointer) => {
                pointer.after = step.holder_after.as_deref();
                pointer.claimer = &alert.id;
            }
            None => pointers.push(PointerWrite {
                key: &alert.dedup_key,
                before: step.holder_before.as_deref(),
                after: step.holder_after.as_deref(),
                claimer: &alert.id,
            }),
        }
        match alerts.iter_mut().find(|a| a.id == alert.id) {
            Some(write) => write.last = i,
            None => alerts.push(AlertWrite { id: &alert.id, before: step.before, last: i }),
        }
    }
    for pointer in pointers.iter().filter(|p| p.before != p.after) {
        items.push(pointer.item(table)?);
        targets.push(Target::Pointer { key: pointer.key.to_owned(), claimer: pointer.after.unwrap_or(pointer.claimer).to_owned() });
    }
    for AlertWrite { id, before, last } in alerts {
        let what = format!("alert {id} in {table}");
        let put = Put::builder().table_name(table).set_item(Some(alert_item(&steps[last].change.alert, jsons[last].clone())));
        let put = match before {
            None => put.condition_expression("attribute_not_exists(#pk)").expression_attribute_names("#pk", PK),
            Some(base) => put.condition_expression("#rev = :base").expression_attribute_names("#rev", REVISION).expression_attribute_values(":base", n(base)),
        };
        let put = put.return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        items.push(TransactWriteItem::builder().put(built(&what, put.build())?).build());
        targets.push(Target::Alert { id: id.to_owned(), base: before });
    }
    for &i in batch {
        let change = steps[i].change;
        let id = &change.alert.id;
        let mut entry_ids = ids[i].iter();
        for t in &change.transitions {
            let what = format!("transition {id}:{} in {table}", t.revision);
            let json = to_json(t, &what)?;
            let put = Put::builder().table_name(table).set_item(Some(transition_item(t, json.clone())));
            items.push(TransactWriteItem::builder().put(built(&what, put.build())?).build());
            targets.push(Target::Other { id: id.clone(), what: what.clone() });
            if !t.notify {
                continue;
            }
            for sink in sinks {
                let delivery = *entry_ids.next().ok_or_else(|| PortError::Invalid { what: what.clone(), message: "no delivery id left".into() })?;
                let what = format!("delivery {delivery} of {id}:{} to {sink} in {table}", t.revision);
                let mut entry = item_key(delivery_pk(delivery), DELIVERY_SK);
                entry.insert(DELIVERY_ID.into(), n(delivery));
                entry.insert(DUE_SINK.into(), s(sink));
                entry.insert(DUE.into(), s(due_key(t.recorded_at, delivery)));
                entry.insert(NEXT_ATTEMPT.into(), n(t.recorded_at));
                entry.insert(ATTEMPTS.into(), n(0));
                entry.insert(ALERT.into(), s(jsons[i].clone()));
                entry.insert(TRANSITION.into(), s(json.clone()));
                let put = Put::builder().table_name(table).set_item(Some(entry));
                items.push(TransactWriteItem::builder().put(built(&what, put.build())?).build());
                targets.push(Target::Other { id: id.clone(), what });
            }
        }
    }
    Ok(Transaction { items, targets })
}

/// The `due` index's sort key: when, then the delivery id.
pub(crate) fn due_key(next_attempt_at: i64, id: i64) -> String {
    format!("{}#{}", order_key(next_attempt_at), order_key(id))
}

/// A token that makes the SDK's own retries of a transaction idempotent.
fn request_token() -> String {
    let a = RandomState::new().build_hasher().finish();
    let mut h = RandomState::new().build_hasher();
    h.write_u64(a);
    format!("{a:016x}{:016x}", h.finish())
}

/// Sends one transaction.
pub(crate) async fn send(client: &aws_sdk_dynamodb::Client, table: &str, tx: Transaction) -> AwsResult<()> {
    let sent = client.transact_write_items().set_transact_items(Some(tx.items)).client_request_token(request_token()).send().await;
    match sent {
        Ok(_) => Ok(()),
        Err(SdkError::ServiceError(e)) if matches!(e.err(), TransactWriteItemsError::TransactionCanceledException(_)) => {
            let TransactWriteItemsError::TransactionCanceledException(cancelled) = e.err() else {
                return Err(PortError::backend(format!("DynamoDB table {table}"), "transaction cancelled", true));
            };
            Err(cancellation(table, cancelled.cancellation_reasons(), &tx.targets, cancelled.message().unwrap_or("transaction cancelled")))
        }
        Err(e) => Err(classify(&format!("dynamodb:TransactWriteItems {table}"), e)),
    }
}

fn number(item: Option<&Item>, name: &str) -> Option<u64> {
    match item?.get(name)? {
        AttributeValue::N(v) => v.parse().ok(),
        _ => None,
    }
}

/// Why a transaction was cancelled, as a port error: a failed condition or
/// a concurrent transaction is a conflict (retryable), throttling is
/// retryable, anything else permanent.
fn cancellation(table: &str, reasons: &[aws_sdk_dynamodb::types::CancellationReason], targets: &[Target], message: &str) -> PortError {
    let mut throttled = None;
    let mut other = None;
    for (reason, target) in reasons.iter().zip(targets) {
        let code = reason.code().unwrap_or("None");
        match (code, target) {
            ("None", _) => {}
            ("ConditionalCheckFailed", Target::Alert { id, base }) => {
                return conflict(table, id, revision_conflict(number(reason.item(), REVISION), *base));
            }
            ("ConditionalCheckFailed", Target::Pointer { key, claimer }) => {
                let holder = reason.item().and_then(|i| i.get(HOLDER)).and_then(|v| v.as_s().ok()).map_or("another alert", |h| h.as_str());
                return conflict(table, claimer, format!("alert {holder} is already unresolved for dedup key {key}"));
            }
            ("ConditionalCheckFailed", Target::Other { id, what }) => return conflict(table, id, format!("{what} was written meanwhile")),
            ("TransactionConflict", target) => {
                let id = match target {
                    Target::Alert { id, .. } | Target::Other { id, .. } => id,
                    Target::Pointer { claimer, .. } => claimer,
                };
                return conflict(table, id, "another write changed it at the same time".to_owned());
            }
            ("ThrottlingError" | "ProvisionedThroughputExceeded" | "RequestLimitExceeded", _) => {
                throttled = Some(format!("{code}: {}", reason.message().unwrap_or("")));
            }
            (_, target) => {
                let what = match target {
                    Target::Alert { id, .. } => format!("alert {id}"),
                    Target::Pointer { key, .. } => format!("the pointer of dedup key {key}"),
                    Target::Other { what, .. } => what.clone(),
                };
                other = Some(format!("{what}: {code}: {}", reason.message().unwrap_or("")));
            }
        }
    }
    let what = format!("dynamodb:TransactWriteItems {table}");
    match (other, throttled) {
        (Some(other), _) => PortError::backend(what, other, false),
        (None, Some(throttled)) => PortError::backend(what, throttled, true),
        // Cancelled without a reason given: treat it as a conflict.
        (None, None) => PortError::backend(what, format!("{message}; read again and redo the change"), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::alerts::conformance::sample_alert;
    use trailwatch_core::alerts::{Transition, TransitionKind};

    fn opened(id: &str, key: &str) -> AlertChange {
        let alert = sample_alert(id, key, 1_000);
        let t = Transition {
            alert_id: id.into(),
            revision: 1,
            kind: TransitionKind::Opened,
            at: 1_000,
            recorded_at: 2_000,
            cause: "test".into(),
            by: None,
            notify: true,
        };
        AlertChange { alert, base_revision: None, transitions: vec![t] }
    }

    fn updated(from: &AlertChange, status: AlertStatus) -> AlertChange {
        let mut alert = from.alert.clone();
        alert.revision += 1;
        alert.status = status;
        let mut t = from.transitions[0].clone();
        t.revision = alert.revision;
        t.kind = if status == AlertStatus::Resolved { TransitionKind::Resolved } else { TransitionKind::Updated };
        AlertChange { alert, base_revision: Some(from.alert.revision), transitions: vec![t] }
    }

    #[test]
    fn staging_tracks_holders_and_refuses_a_second_unresolved_alert() {
        let a = opened("a", "k");
        let resolve_a = updated(&a, AlertStatus::Resolved);
        let b = opened("b", "k");
        let changes = vec![a.clone(), resolve_a, b.clone()];
        let steps = stage("t", &changes, &HashMap::new()).expect("staged");
        let holders: Vec<(Option<&str>, Option<&str>)> = steps.iter().map(|s| (s.holder_before.as_deref(), s.holder_after.as_deref())).collect();
        assert_eq!(holders, vec![(None, Some("a")), (Some("a"), None), (None, Some("b"))]);

        let err = stage("t", &[a.clone(), b], &HashMap::new()).expect_err("two unresolved alerts for one key");
        assert!(err.is_retryable() && err.to_string().contains("alert a is already unresolved"), "{err}");
        let stored = HashMap::from([("a".to_owned(), Stored { revision: 2, dedup_key: "k".into(), unresolved: true })]);
        let err = stage("t", &[updated(&a, AlertStatus::Open)], &stored).expect_err("stale");
        assert!(err.is_retryable() && err.to_string().contains("stored at revision Some(2)"), "{err}");
    }

    #[test]
    fn one_alert_and_its_key_are_one_write_each_in_a_transaction() {
        let a = opened("a", "k");
        let a2 = updated(&a, AlertStatus::Open);
        let a3 = updated(&a2, AlertStatus::Resolved);
        let changes = vec![a, a2, a3];
        let steps = stage("t", &changes, &HashMap::new()).expect("staged");
        let jsons: Vec<String> = changes.iter().map(|c| serde_json::to_string(&c.alert).expect("json")).collect();
        let ids = vec![vec![1], vec![2], vec![3]];
        let tx = build("t", &steps, &[0, 1, 2], &jsons, &ids, &["s".to_owned()]).expect("built");
        // Opened and resolved in one write: the pointer is never written; one alert put; 3 transitions; 3 entries.
        assert_eq!(tx.items.len(), 7);
        let alert_puts: Vec<&Target> = tx.targets.iter().filter(|t| matches!(t, Target::Alert { .. })).collect();
        assert_eq!(alert_puts.len(), 1);
        assert!(matches!(alert_puts[0], Target::Alert { base: None, .. }));
        assert!(!tx.targets.iter().any(|t| matches!(t, Target::Pointer { .. })));
    }

    #[test]
    fn packing_keeps_groups_whole_and_splits_what_does_not_fit() {
        // 40 independent alerts with 2 sinks: 5 items each.
        let changes: Vec<AlertChange> = (0..40).map(|i| opened(&format!("a{i}"), &format!("k{i}"))).collect();
        let steps = stage("t", &changes, &HashMap::new()).expect("staged");
        let bytes = vec![2_000; steps.len()];
        let batches = pack(&steps, &bytes, 2).expect("packed");
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![20, 20]);
        // One alert with 60 chained changes: split along the chain, in order.
        let mut chain = vec![opened("c", "kc")];
        for _ in 1..60 {
            let next = updated(chain.last().expect("one"), AlertStatus::Open);
            chain.push(next);
        }
        let steps = stage("t", &chain, &HashMap::new()).expect("staged");
        let bytes = vec![2_000; steps.len()];
        let batches = pack(&steps, &bytes, 2).expect("packed");
        assert!(batches.len() > 1);
        assert_eq!(batches.concat(), (0..60).collect::<Vec<_>>(), "the chain stays in order");
        assert!(batches.iter().all(|b| b.len() * 3 + 2 <= MAX_ITEMS));
    }
}
