//! The alerts table: its key schema and indexes, how each kind of item is
//! laid out, and reading attributes back.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus,
};
use trailwatch_core::alerts::{Alert, AlertStatus, Transition};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use crate::error::{classify, AwsResult};

/// An item as the SDK gives it.
pub(crate) type Item = HashMap<String, AttributeValue>;

pub(crate) const PK: &str = "pk";
pub(crate) const SK: &str = "sk";

// Alert items.
pub(crate) const ALERT_SK: &str = "ALERT";
pub(crate) const REVISION: &str = "revision";
pub(crate) const DEDUP_KEY: &str = "dedup_key";
pub(crate) const STATUS: &str = "alert_status";
pub(crate) const SEVERITY: &str = "severity";
pub(crate) const RULE_ID: &str = "rule_id";
pub(crate) const ACCOUNT_ID: &str = "account_id";
pub(crate) const ORIGIN_PRINCIPAL: &str = "origin_principal";
pub(crate) const UPDATED: &str = "updated_sk";
pub(crate) const QUIET_PART: &str = "quiet_part";
pub(crate) const QUIET: &str = "quiet_sk";
pub(crate) const ORIGIN_EVENT: &str = "origin_event";
/// The alert as JSON (trailwatch-core's serde form).
pub(crate) const ALERT: &str = "alert";

// Transition items (in the alert's item collection).
pub(crate) const TRANSITION_PREFIX: &str = "T#";
/// The transition as JSON.
pub(crate) const TRANSITION: &str = "transition";

// Open-alert pointers.
pub(crate) const OPEN_SK: &str = "OPEN";
pub(crate) const HOLDER: &str = "alert_id";

// Outbox items.
pub(crate) const DELIVERY_SK: &str = "DELIVERY";
pub(crate) const DELIVERY_ID: &str = "delivery_id";
pub(crate) const DUE_SINK: &str = "due_sink";
pub(crate) const DUE: &str = "due_sk";
pub(crate) const NEXT_ATTEMPT: &str = "next_attempt_at";
pub(crate) const ATTEMPTS: &str = "attempts";
pub(crate) const LAST_ERROR: &str = "last_error";

// The delivery id counter.
pub(crate) const COUNTER_PK: &str = "COUNTER";
pub(crate) const COUNTER_SK: &str = "DELIVERY_ID";
pub(crate) const COUNTER_NEXT: &str = "next_id";
pub(crate) const COUNTER_SINKS: &str = "sinks";

// Indexes.
pub(crate) const INDEX_DUE: &str = "due";
pub(crate) const INDEX_QUIET: &str = "quiet";
pub(crate) const INDEX_ORIGIN_EVENT: &str = "origin_event";
pub(crate) const INDEX_STATUS: &str = "by_status";
pub(crate) const INDEX_SEVERITY: &str = "by_severity";
pub(crate) const INDEX_RULE: &str = "by_rule";
pub(crate) const INDEX_ACCOUNT: &str = "by_account";
pub(crate) const INDEX_PRINCIPAL: &str = "by_principal";

/// The one partition of the `quiet` index.
pub(crate) const QUIET_PARTITION: &str = "quiet";

/// Every index: name, partition key, sort key (all strings, all projecting every attribute).
const INDEXES: &[(&str, &str, Option<&str>)] = &[
    (INDEX_DUE, DUE_SINK, Some(DUE)),
    (INDEX_QUIET, QUIET_PART, Some(QUIET)),
    (INDEX_ORIGIN_EVENT, ORIGIN_EVENT, None),
    (INDEX_STATUS, STATUS, Some(UPDATED)),
    (INDEX_SEVERITY, SEVERITY, Some(UPDATED)),
    (INDEX_RULE, RULE_ID, Some(UPDATED)),
    (INDEX_ACCOUNT, ACCOUNT_ID, Some(UPDATED)),
    (INDEX_PRINCIPAL, ORIGIN_PRINCIPAL, Some(UPDATED)),
];

/// How long [`create_table`] waits for a new table and its indexes.
const ACTIVE_WITHIN: Duration = Duration::from_secs(600);

/// Creates the alerts table `name` if it does not exist, on demand
/// (PAY_PER_REQUEST), and waits until it and its indexes are active. An
/// existing table is checked for the key schema and the indexes below.
///
/// Key schema: `pk` (S, partition) and `sk` (S, sort). Items:
///
/// | item | `pk` | `sk` | other attributes |
/// |---|---|---|---|
/// | alert | `ALERT#<alert id>` | `ALERT` | `revision` N, `dedup_key`, `alert_status`, `severity`, `rule_id`, `account_id`, `origin_principal`?, `updated_sk`, `quiet_part`?, `quiet_sk`?, `origin_event`?, `alert` (JSON) |
/// | transition | `ALERT#<alert id>` | `T#<revision, 20 digits>` | `transition` (JSON) |
/// | open-alert pointer | `OPEN#<dedup key>` | `OPEN` | `alert_id` |
/// | outbox entry | `DELIVERY#<id, 20 digits>` | `DELIVERY` | `delivery_id` N, `due_sink`, `due_sk`, `next_attempt_at` N, `attempts` N, `last_error`?, `alert` (JSON), `transition` (JSON) |
/// | delivery id counter | `COUNTER` | `DELIVERY_ID` | `next_id` N, `sinks` SS |
///
/// Global secondary indexes, all projecting ALL, all sparse (an item without
/// the index's keys is not in it):
///
/// | index | partition key | sort key | holds |
/// |---|---|---|---|
/// | `due` | `due_sink` | `due_sk` = `<next_attempt_at>#<delivery id>` | outbox entries not delivered |
/// | `quiet` | `quiet_part` (always `quiet`) | `quiet_sk` = `<last_seen + resolve_after>#<alert id>` | unresolved alerts with a quiet period |
/// | `origin_event` | `origin_event` = `<account id>#<event id>` | — | unresolved alerts with an origin event |
/// | `by_status` | `alert_status` | `updated_sk` = `<updated_at>#<alert id>` | every alert |
/// | `by_severity` | `severity` | `updated_sk` | every alert |
/// | `by_rule` | `rule_id` | `updated_sk` | every alert |
/// | `by_account` | `account_id` | `updated_sk` | every alert |
/// | `by_principal` | `origin_principal` | `updated_sk` | alerts whose origin has a principal |
///
/// Times and delivery ids in sort keys are 20 digits that sort as the signed
/// numbers do.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> AwsResult<()> {
    let invalid = |message: String| PortError::Invalid { what: format!("DynamoDB table {name}"), message };
    let mut attributes = vec![PK, SK];
    for (_, partition, sort) in INDEXES {
        attributes.push(partition);
        attributes.extend(sort);
    }
    attributes.sort_unstable();
    attributes.dedup();
    let mut create = client.create_table().table_name(name).billing_mode(BillingMode::PayPerRequest).key_schema(key(PK, KeyType::Hash, name)?).key_schema(key(
        SK,
        KeyType::Range,
        name,
    )?);
    for attribute in attributes {
        let definition =
            AttributeDefinition::builder().attribute_name(attribute).attribute_type(ScalarAttributeType::S).build().map_err(|e| invalid(e.to_string()))?;
        create = create.attribute_definitions(definition);
    }
    for (index, partition, sort) in INDEXES {
        let mut gsi = GlobalSecondaryIndex::builder()
            .index_name(*index)
            .key_schema(key(partition, KeyType::Hash, name)?)
            .projection(Projection::builder().projection_type(ProjectionType::All).build());
        if let Some(sort) = sort {
            gsi = gsi.key_schema(key(sort, KeyType::Range, name)?);
        }
        create = create.global_secondary_indexes(gsi.build().map_err(|e| invalid(e.to_string()))?);
    }
    match create.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(classify(&format!("dynamodb:CreateTable {name}"), e)),
    }
    wait_active(client, name).await
}

fn key(attribute: &str, kind: KeyType, table: &str) -> AwsResult<KeySchemaElement> {
    KeySchemaElement::builder()
        .attribute_name(attribute)
        .key_type(kind)
        .build()
        .map_err(|e| PortError::Invalid { what: format!("DynamoDB table {table}"), message: e.to_string() })
}

/// Waits until the table and its indexes are active, and checks that it has them.
async fn wait_active(client: &aws_sdk_dynamodb::Client, name: &str) -> AwsResult<()> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let out = client.describe_table().table_name(name).send().await.map_err(|e| classify(&format!("dynamodb:DescribeTable {name}"), e))?;
        let table = out.table.ok_or_else(|| PortError::backend(format!("DynamoDB table {name}"), "DescribeTable returned no table", true))?;
        let keys: Vec<(&str, &KeyType)> = table.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
        if keys != [(PK, &KeyType::Hash), (SK, &KeyType::Range)] {
            return Err(PortError::Invalid {
                what: format!("DynamoDB table {name}"),
                message: format!("exists with another key schema ({keys:?}); alerts need {PK} (partition) and {SK} (sort)"),
            });
        }
        let present: HashMap<&str, Option<&IndexStatus>> =
            table.global_secondary_indexes().iter().filter_map(|g| g.index_name().map(|n| (n, g.index_status()))).collect();
        let missing: Vec<&str> = INDEXES.iter().map(|(index, _, _)| *index).filter(|index| !present.contains_key(index)).collect();
        if !missing.is_empty() {
            return Err(PortError::Invalid { what: format!("DynamoDB table {name}"), message: format!("lacks the indexes {}", missing.join(", ")) });
        }
        // An emulator may leave statuses out: absent means usable.
        let table_active = table.table_status().is_none_or(|s| *s == TableStatus::Active);
        let indexes_active = present.values().all(|s| s.is_none_or(|s| *s == IndexStatus::Active));
        if table_active && indexes_active {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(PortError::backend(format!("DynamoDB table {name}"), format!("not active after {} s", ACTIVE_WITHIN.as_secs()), true));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// A signed number as 20 digits that sort as the numbers do (the sign bit flipped).
pub(crate) fn order_key(value: i64) -> String {
    format!("{:020}", (value as u64) ^ (1 << 63))
}

pub(crate) fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub(crate) fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub(crate) fn alert_pk(id: &str) -> String {
    format!("ALERT#{id}")
}

pub(crate) fn pointer_pk(dedup_key: &str) -> String {
    format!("OPEN#{dedup_key}")
}

pub(crate) fn delivery_pk(id: i64) -> String {
    format!("DELIVERY#{}", order_key(id))
}

pub(crate) fn transition_sk(revision: u64) -> String {
    format!("{TRANSITION_PREFIX}{revision:020}")
}

/// The key of an item.
pub(crate) fn item_key(pk: String, sk: &str) -> Item {
    HashMap::from([(PK.to_owned(), s(pk)), (SK.to_owned(), s(sk))])
}

/// The listing sort key: newest change last in key order, ties by id.
pub(crate) fn updated_key(updated_at: EpochMillis, id: &str) -> String {
    format!("{}#{id}", order_key(updated_at))
}

pub(crate) fn origin_event_key(account_id: &str, event_id: &str) -> String {
    format!("{account_id}#{event_id}")
}

/// JSON of a value stored in the table; an error names the alert.
pub(crate) fn to_json(value: &impl serde::Serialize, what: &str) -> AwsResult<String> {
    serde_json::to_string(value).map_err(|e| PortError::Invalid { what: what.to_owned(), message: format!("cannot be written as JSON: {e}") })
}

/// The alert item for `alert` (its JSON given).
pub(crate) fn alert_item(alert: &Alert, json: String) -> Item {
    let mut item = item_key(alert_pk(&alert.id), ALERT_SK);
    item.insert(REVISION.into(), n(alert.revision));
    item.insert(DEDUP_KEY.into(), s(&alert.dedup_key));
    item.insert(STATUS.into(), s(alert.status.as_str()));
    item.insert(SEVERITY.into(), s(alert.severity.as_str()));
    // Index keys cannot be empty strings: an alert without one is left out of that index.
    let mut key_attribute = |name: &str, value: &str| {
        if !value.is_empty() {
            item.insert(name.to_owned(), s(value));
        }
    };
    key_attribute(RULE_ID, &alert.rule_id);
    key_attribute(ACCOUNT_ID, &alert.account_id);
    key_attribute(ORIGIN_PRINCIPAL, alert.origin.as_ref().and_then(|o| o.principal.as_deref()).unwrap_or(""));
    item.insert(UPDATED.into(), s(updated_key(alert.updated_at, &alert.id)));
    if alert.status != AlertStatus::Resolved {
        if let Some(after) = alert.resolve_after_ms {
            item.insert(QUIET_PART.into(), s(QUIET_PARTITION));
            item.insert(QUIET.into(), s(format!("{}#{}", order_key(alert.last_seen.saturating_add(after)), alert.id)));
        }
        if let Some(event) = &alert.origin_event {
            item.insert(ORIGIN_EVENT.into(), s(origin_event_key(&event.account_id, &event.event_id)));
        }
    }
    item.insert(ALERT.into(), s(json));
    item
}

/// The transition item of `transition`.
pub(crate) fn transition_item(transition: &Transition, json: String) -> Item {
    let mut item = item_key(alert_pk(&transition.alert_id), &transition_sk(transition.revision));
    item.insert(TRANSITION.into(), s(json));
    item
}

/// Reads attributes of one item, with errors naming the table and the item.
pub(crate) struct Reader<'a> {
    pub item: &'a Item,
    pub what: &'a str,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, message: String) -> PortError {
        PortError::backend(self.what.to_owned(), message, false)
    }

    pub fn opt_str(&self, name: &str) -> AwsResult<Option<&'a str>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v)),
            Some(other) => Err(self.corrupt(format!("attribute {name} is not a string: {other:?}"))),
        }
    }

    pub fn str(&self, name: &str) -> AwsResult<&'a str> {
        self.opt_str(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    pub fn opt_int<T: std::str::FromStr>(&self, name: &str) -> AwsResult<Option<T>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|_| self.corrupt(format!("attribute {name} is out of range: {v}"))),
            Some(other) => Err(self.corrupt(format!("attribute {name} is not a number: {other:?}"))),
        }
    }

    pub fn int<T: std::str::FromStr>(&self, name: &str) -> AwsResult<T> {
        self.opt_int(name)?.ok_or_else(|| self.corrupt(format!("attribute {name} is missing")))
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> AwsResult<T> {
        serde_json::from_str(self.str(name)?).map_err(|e| self.corrupt(format!("attribute {name} is not valid JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_sort_as_the_numbers() {
        let values = [i64::MIN, -1_000, -1, 0, 1, 999, 1_000, 1_730_000_000_000, i64::MAX];
        let keys: Vec<String> = values.iter().map(|v| order_key(*v)).collect();
        assert!(keys.iter().all(|k| k.len() == 20), "{keys:?}");
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
    }
}
