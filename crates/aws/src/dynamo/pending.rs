//! Events waiting for a session, in DynamoDB.
//!
//! An item per event: `account_id` (S, partition key), `event_id` (S, sort
//! key), `missing_key` (S), `event_time` (N, epoch ms), `shard` (N) and `item`
//! (S, the [`PendingItem`] as JSON). Two KEYS_ONLY indexes find them:
//! - `by_missing_key` (`missing_key`, `event_time`): the events waiting on a key;
//! - `by_event_time` (`shard`, `event_time`): the events before a time, as one
//!   Query per shard. `shard` is a hash of the account and event id modulo
//!   [`SHARDS`], so the index's writes spread over that many partitions (a
//!   constant partition key would take them all on one) while `take_expired`
//!   stays [`SHARDS`] Queries, never a Scan.
//!
//! Taking is a Query of an index, then a conditional DeleteItem per event
//! found (`missing_key = :key`, or `event_time < :before`) that returns the
//! item as it was deleted. Only one of two enrichers taking at once deletes a
//! given item, so only one returns it; an event replaced meanwhile (waiting on
//! another key now) is not taken. A delete that fails leaves its event stored,
//! to be taken later: when others were taken, they are returned and the
//! failure logged; when none was, the error is returned.
//!
//! `count` is a Scan with `Select=COUNT`: it reads the whole table, which
//! holds only the events waiting (minutes to hours of unresolved ones).

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, ReturnValue, Select, WriteRequest};
use aws_sdk_dynamodb::Client;
use trailwatch_core::identity::{PendingItem, PendingStore};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::{batch_write, build_error, fnv1a, n, op, query_all, run_bounded, s, Item, ItemReader};
use crate::error::{classify, AwsResult};

/// The index of events by the key they wait on.
pub const BY_MISSING_KEY: &str = "by_missing_key";
/// The index of events by time, sharded.
pub const BY_EVENT_TIME: &str = "by_event_time";
/// How many partitions `by_event_time` spreads events over.
pub const SHARDS: u32 = 16;
/// How many queries or deletes run at once.
const PARALLEL: usize = 16;

/// The shard of an event in `by_event_time`.
pub fn shard_of(account_id: &str, event_id: &str) -> u32 {
    fnv1a(&[account_id, event_id]) % SHARDS
}

/// Events waiting for a session, in a DynamoDB table (see the module doc).
#[derive(Debug, Clone)]
pub struct DynamoPendingStore {
    client: Client,
    table: String,
}

/// An event found to take: its key, and the value the delete's condition
/// compares with (`:value`).
struct Found {
    account_id: String,
    event_id: String,
    value: AttributeValue,
}

impl DynamoPendingStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoPendingStore { client, table: table.into() }
    }

    fn item(&self, pending: &PendingItem) -> AwsResult<Item> {
        let json = serde_json::to_string(pending).map_err(|e| PortError::Invalid {
            what: format!("dynamodb table {}, pending event {} of {}", self.table, pending.event_id, pending.account_id),
            message: format!("as JSON: {e}"),
        })?;
        Ok(Item::from([
            ("account_id".to_owned(), s(&pending.account_id)),
            ("event_id".to_owned(), s(&pending.event_id)),
            ("missing_key".to_owned(), s(&pending.missing_key)),
            ("event_time".to_owned(), n(pending.event_time)),
            ("shard".to_owned(), n(shard_of(&pending.account_id, &pending.event_id))),
            ("item".to_owned(), s(json)),
        ]))
    }

    /// The (account id, event id) of every event an index query finds.
    async fn find(&self, index: &'static str, key_condition: &'static str, values: Vec<(&'static str, AttributeValue)>) -> AwsResult<Vec<(String, String)>> {
        let what = format!("{} index {index}", op("Query", &self.table));
        let mut query = self.client.query().table_name(&self.table).index_name(index).key_condition_expression(key_condition);
        if key_condition.contains("#shard") {
            // `shard` is a reserved word in expressions.
            query = query.expression_attribute_names("#shard", "shard");
        }
        for (name, value) in values {
            query = query.expression_attribute_values(name, value);
        }
        let place = format!("dynamodb table {} index {index}", self.table);
        query_all(query, &what)
            .await?
            .iter()
            .map(|item| {
                let read = ItemReader::new(item, place.clone());
                Ok((read.s("account_id")?.to_owned(), read.s("event_id")?.to_owned()))
            })
            .collect()
    }

    /// Deletes the events found if they still match `condition`, and returns
    /// those this call deleted, oldest first (see the module doc on failures).
    async fn take(&self, mut found: Vec<Found>, condition: &'static str) -> AwsResult<Vec<PendingItem>> {
        found.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
        found.dedup_by(|a, b| a.account_id == b.account_id && a.event_id == b.event_id);
        let results = run_bounded(found, PARALLEL, |found| {
            let (client, table) = (self.client.clone(), self.table.clone());
            async move { take_one(&client, &table, found, condition).await }
        })
        .await;
        let mut taken = Vec::new();
        let mut failed = Vec::new();
        for result in results {
            match result {
                Ok(item) => taken.extend(item),
                Err(e) => failed.push(e),
            }
        }
        if let Some(first) = failed.into_iter().next() {
            if taken.is_empty() {
                return Err(first);
            }
            tracing::warn!(table = %self.table, error = %first, taken = taken.len(), "dynamodb.pending.take_partly_failed");
        }
        taken.sort_by(|a, b| (a.event_time, &a.account_id, &a.event_id).cmp(&(b.event_time, &b.account_id, &b.event_id)));
        Ok(taken)
    }
}

/// Deletes one event if it still matches `condition`; the item as deleted,
/// or None when another taker got it first or it no longer matches.
async fn take_one(client: &Client, table: &str, found: Found, condition: &str) -> AwsResult<Option<PendingItem>> {
    let place = format!("dynamodb table {table}, pending event {} of {}", found.event_id, found.account_id);
    let result = client
        .delete_item()
        .table_name(table)
        .key("account_id", s(found.account_id))
        .key("event_id", s(found.event_id))
        .condition_expression(condition)
        .expression_attribute_values(":value", found.value)
        .return_values(ReturnValue::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => match out.attributes {
            Some(item) => Ok(Some(ItemReader::new(&item, place).json("item")?)),
            None => Ok(None),
        },
        Err(e) if matches!(e.as_service_error(), Some(DeleteItemError::ConditionalCheckFailedException(_))) => Ok(None),
        Err(e) => Err(classify(&format!("dynamodb:DeleteItem {place}"), e)),
    }
}

#[async_trait]
impl PendingStore for DynamoPendingStore {
    async fn add(&self, items: Arc<[PendingItem]>) -> Result<(), PortError> {
        // The last copy of an event wins (a batch may not name one key twice).
        let mut latest: Vec<&PendingItem> = Vec::with_capacity(items.len());
        for item in items.iter() {
            match latest.iter_mut().find(|l| l.account_id == item.account_id && l.event_id == item.event_id) {
                Some(slot) => *slot = item,
                None => latest.push(item),
            }
        }
        let what = op("BatchWriteItem", &self.table);
        let mut writes = Vec::with_capacity(latest.len());
        for item in latest {
            let put = PutRequest::builder().set_item(Some(self.item(item)?)).build().map_err(|e| build_error(&what, e))?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        batch_write(&self.client, &self.table, writes).await
    }

    async fn take_waiting_on(&self, keys: &[String]) -> Result<Vec<PendingItem>, PortError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let queries = run_bounded(keys, PARALLEL, |key| {
            let store = self.clone();
            async move {
                let found = store.find(BY_MISSING_KEY, "missing_key = :key", vec![(":key", s(&key))]).await?;
                Ok(found.into_iter().map(|(account_id, event_id)| Found { account_id, event_id, value: s(&key) }).collect::<Vec<_>>())
            }
        })
        .await;
        let mut found = Vec::new();
        for result in queries {
            found.extend(result?);
        }
        self.take(found, "missing_key = :value").await
    }

    async fn take_expired(&self, before: EpochMillis) -> Result<Vec<PendingItem>, PortError> {
        let queries = run_bounded(0..SHARDS, PARALLEL, |shard| {
            let store = self.clone();
            async move { store.find(BY_EVENT_TIME, "#shard = :shard AND event_time < :before", vec![(":shard", n(shard)), (":before", n(before))]).await }
        })
        .await;
        let mut found = Vec::new();
        for result in queries {
            found.extend(result?.into_iter().map(|(account_id, event_id)| Found { account_id, event_id, value: n(before) }));
        }
        self.take(found, "event_time < :value").await
    }

    async fn count(&self) -> Result<u64, PortError> {
        let what = op("Scan", &self.table);
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .select(Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&what, e))?;
            count += u64::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key.filter(|k| !k.is_empty()) {
                Some(next) => start = Some(next),
                None => return Ok(count),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        assert_eq!(shard_of("111122223333", "e1"), shard_of("111122223333", "e1"));
        let used: std::collections::HashSet<u32> = (0..200).map(|i| shard_of("111122223333", &format!("event-{i}"))).collect();
        assert_eq!(used.len(), SHARDS as usize, "200 events use every shard");
        assert!(used.iter().all(|s| *s < SHARDS));
    }
}
