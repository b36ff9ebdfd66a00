//! Alerts, their transitions and the outbox in one DynamoDB table:
//! [`DynamoAlertStore`], the AWS mode's [`AlertStore`].
//!
//! The table's items and indexes are described at [`create_table`]. The ideas:
//!
//! - **A commit is conditional writes in a transaction.** Each alert is
//!   written on the condition that its stored revision is the one the change
//!   was made from (or that it does not exist, for a new one); each dedup key
//!   has a pointer item naming its unresolved alert, written on the
//!   condition that it names the alert the staging saw (or none), so two
//!   enrichers opening an alert for the same key cannot both succeed. The
//!   transitions and the outbox entries of their notifying transitions are in
//!   the same transaction. A failed condition is the memory store's conflict
//!   (a retryable [`PortError::Backend`]). The commit first reads the stored
//!   revisions of the alerts it changes, only to choose the writes and to
//!   report conflicts early; the conditions decide.
//! - **A commit larger than one transaction is not atomic as a whole.** A
//!   transaction holds at most 100 items (an alert, its pointer, each
//!   transition, each outbox entry). A larger commit is sent as several
//!   transactions, in order, each holding whole groups of changes connected
//!   by alert or dedup key where they fit, and never part of a change. A
//!   conflict stops it at the transaction that meets it: the ones before are
//!   written (the error says how many), each consistent on its own.
//! - **Delivery ids come from a counter item** (`ADD`, one request per
//!   commit that queues deliveries), so they are unique across every
//!   enricher and increase in the order they were handed out; a commit that
//!   fails leaves a gap.
//! - **Reads go along indexes, never scan the table.** `due` queries the
//!   `due` index (sink, next attempt, id); `quiet` the `quiet` index (one
//!   partition holding the unresolved alerts that have a quiet period, in
//!   the order they go quiet: every write of such an alert goes through it,
//!   which alert rates are far below the ~1,000 writes/s of a partition);
//!   `with_origin_events` the `origin_event` index; `outstanding` counts each
//!   sink's partition of the `due` index (the sinks are recorded on the
//!   counter item); `list` picks one index by its filters (see the
//!   `listing` module). Index reads are eventually consistent: an alert
//!   changed a moment ago may be listed as it was (a commit made from it
//!   then conflicts, and the lifecycle reads again). `due` reads the entries
//!   it found in the index again from the table (strongly consistent), so a
//!   delivery marked done or put off a moment ago is not handed out again;
//!   one queued a moment ago may show up a poll later.

mod commit;
mod listing;
mod outbox;
mod schema;

pub use schema::create_table;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use trailwatch_core::alerts::{Alert, AlertChange, AlertPage, AlertQuery, AlertStatus, AlertStore, Delivery, EventRef, Transition};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use crate::error::{classify, AwsResult};
use commit::Stored;
use schema::{alert_pk, item_key, pointer_pk, s, Item, Reader, ALERT, ALERT_SK, DEDUP_KEY, HOLDER, OPEN_SK, PK, REVISION, SK, STATUS};

/// Keys per BatchGetItem (DynamoDB's limit).
const BATCH_GET: usize = 100;

/// Tries of a batch read whose keys DynamoDB leaves unprocessed (throttling).
const UNPROCESSED_TRIES: u32 = 8;

/// Alerts in a DynamoDB table (see the module's doc).
#[derive(Debug, Clone)]
pub struct DynamoAlertStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoAlertStore {
    /// A store over an existing table (made by [`create_table`] or the stack).
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoAlertStore { client, table: table.into() }
    }

    /// [`create_table`]: the table this store needs, made if missing.
    pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> AwsResult<()> {
        schema::create_table(client, name).await
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `what` for messages about an item of this table.
    fn what(&self, item: &str) -> String {
        format!("{item} in DynamoDB table {}", self.table)
    }

    /// The items of `keys` that exist (strongly consistent), in no order.
    /// `projection` names attributes through `#`-placeholders.
    async fn batch_get(&self, keys: Vec<Item>, projection: Option<(&str, &[(&str, &str)])>) -> AwsResult<Vec<Item>> {
        let mut found = Vec::new();
        for chunk in keys.chunks(BATCH_GET) {
            let mut request = KeysAndAttributes::builder().set_keys(Some(chunk.to_vec())).consistent_read(true);
            if let Some((expression, names)) = projection {
                request = request.projection_expression(expression);
                for (placeholder, name) in names {
                    request = request.expression_attribute_names(*placeholder, *name);
                }
            }
            let mut pending = Some(request.build().map_err(|e| PortError::Invalid { what: self.what("a batch read"), message: e.to_string() })?);
            let mut tries = 0;
            while let Some(request) = pending.take() {
                tries += 1;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| classify(&format!("dynamodb:BatchGetItem {}", self.table), e))?;
                if let Some(mut responses) = out.responses {
                    found.extend(responses.remove(&self.table).unwrap_or_default());
                }
                pending = out.unprocessed_keys.and_then(|mut u| u.remove(&self.table)).filter(|k| !k.keys.is_empty());
                if pending.is_some() {
                    if tries >= UNPROCESSED_TRIES {
                        return Err(PortError::backend(
                            format!("dynamodb:BatchGetItem {}", self.table),
                            format!("keys still unprocessed after {tries} tries"),
                            true,
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(25 << tries.min(6))).await;
                }
            }
        }
        Ok(found)
    }

    /// The stored revision, dedup key and status of these alerts.
    async fn stored(&self, ids: Vec<&str>) -> AwsResult<HashMap<String, Stored>> {
        let keys = ids.into_iter().map(|id| item_key(alert_pk(id), ALERT_SK)).collect();
        let names = [("#pk", PK), ("#rev", REVISION), ("#key", DEDUP_KEY), ("#status", STATUS)];
        let items = self.batch_get(keys, Some(("#pk, #rev, #key, #status", &names))).await?;
        let what = self.what("an alert");
        let mut stored = HashMap::new();
        for item in &items {
            let r = Reader { item, what: &what };
            let id = r.str(PK)?.trim_start_matches("ALERT#").to_owned();
            let status = r.str(STATUS)?;
            stored.insert(
                id,
                Stored { revision: r.int(REVISION)?, dedup_key: r.str(DEDUP_KEY)?.to_owned(), unresolved: status != AlertStatus::Resolved.as_str() },
            );
        }
        Ok(stored)
    }

    fn decode_alert(&self, item: &Item) -> AwsResult<Alert> {
        let what = match item.get(PK) {
            Some(AttributeValue::S(pk)) => self.what(&format!("item {pk}")),
            _ => self.what("an alert"),
        };
        Reader { item, what: &what }.json(ALERT)
    }

    async fn get_item(&self, key: Item, what: &str) -> AwsResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify(&format!("dynamodb:GetItem {} ({what})", self.table), e))?;
        Ok(out.item)
    }

    /// Writes a commit: reads the stored revisions, stages, hands out
    /// delivery ids, and sends the transactions (see the module's doc).
    async fn write(&self, changes: &[AlertChange], sinks: &[String]) -> AwsResult<()> {
        if let Some(empty) = sinks.iter().find(|s| s.is_empty()) {
            return Err(PortError::Invalid { what: self.what("the outbox"), message: format!("a sink without a name ({empty:?})") });
        }
        let mut ids: Vec<&str> = changes.iter().filter(|c| c.base_revision.is_some()).map(|c| c.alert.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let stored = if ids.is_empty() { HashMap::new() } else { self.stored(ids).await? };
        let steps = commit::stage(&self.table, changes, &stored)?;
        let jsons: Vec<String> = changes.iter().map(|c| schema::to_json(&c.alert, &format!("alert {}", c.alert.id))).collect::<Result<_, _>>()?;
        let queued: usize = changes.iter().map(|c| commit::queued(c, sinks.len())).sum();
        let mut next = if queued > 0 { self.allocate(queued, sinks).await?.into_iter() } else { Vec::new().into_iter() };
        let delivery_ids: Vec<Vec<i64>> = changes.iter().map(|c| next.by_ref().take(commit::queued(c, sinks.len())).collect()).collect();
        let sizes: Vec<usize> = jsons.iter().map(String::len).collect();
        let batches = commit::pack(&steps, &sizes, sinks.len())?;
        let total = batches.len();
        for (done, batch) in batches.iter().enumerate() {
            let tx = commit::build(&self.table, &steps, batch, &jsons, &delivery_ids, sinks)?;
            if let Err(e) = commit::send(&self.client, &self.table, tx).await {
                if done == 0 {
                    return Err(e);
                }
                let retryable = e.is_retryable();
                return Err(PortError::backend(self.what("a commit"), format!("{e} (the first {done} of its {total} transactions were written)"), retryable));
            }
        }
        Ok(())
    }
}

#[async_trait]
impl AlertStore for DynamoAlertStore {
    async fn current(&self, dedup_keys: &[String]) -> Result<HashMap<String, Alert>, PortError> {
        if dedup_keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut keys: Vec<&String> = dedup_keys.iter().collect();
        keys.sort_unstable();
        keys.dedup();
        let pointers = self.batch_get(keys.iter().map(|k| item_key(pointer_pk(k), OPEN_SK)).collect(), None).await?;
        let what = self.what("an open-alert pointer");
        let mut holders: Vec<String> = Vec::new();
        for item in &pointers {
            holders.push(Reader { item, what: &what }.str(HOLDER)?.to_owned());
        }
        if holders.is_empty() {
            return Ok(HashMap::new());
        }
        let items = self.batch_get(holders.iter().map(|id| item_key(alert_pk(id), ALERT_SK)).collect(), None).await?;
        let mut found = HashMap::new();
        for item in &items {
            let alert = self.decode_alert(item)?;
            // A pointer read a moment before its alert was resolved names a resolved alert.
            if alert.status != AlertStatus::Resolved && keys.contains(&&alert.dedup_key) {
                found.insert(alert.dedup_key.clone(), alert);
            }
        }
        Ok(found)
    }

    async fn commit(&self, changes: Arc<[AlertChange]>, sinks: &[String]) -> Result<(), PortError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write(&changes, sinks).await
    }

    async fn get(&self, id: &str) -> Result<Option<Alert>, PortError> {
        let item = self.get_item(item_key(alert_pk(id), ALERT_SK), &format!("alert {id}")).await?;
        item.as_ref().map(|item| self.decode_alert(item)).transpose()
    }

    async fn transitions(&self, id: &str) -> Result<Vec<Transition>, PortError> {
        let mut transitions = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#sk", SK)
                .expression_attribute_values(":pk", s(alert_pk(id)))
                .expression_attribute_values(":prefix", s(schema::TRANSITION_PREFIX))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&format!("dynamodb:Query {} (transitions of alert {id})", self.table), e))?;
            let what = self.what(&format!("a transition of alert {id}"));
            for item in out.items.unwrap_or_default() {
                transitions.push(Reader { item: &item, what: &what }.json(schema::TRANSITION)?);
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(transitions),
            }
        }
    }

    async fn list(&self, query: &AlertQuery) -> Result<AlertPage, PortError> {
        listing::list(self, query).await
    }

    async fn quiet(&self, now: EpochMillis, limit: usize) -> Result<Vec<Alert>, PortError> {
        listing::quiet(self, now, limit).await
    }

    async fn with_origin_events(&self, events: &[EventRef]) -> Result<Vec<Alert>, PortError> {
        listing::with_origin_events(self, events).await
    }

    async fn due(&self, sink: &str, now: EpochMillis, limit: usize) -> Result<Vec<Delivery>, PortError> {
        outbox::due(self, sink, now, limit).await
    }

    async fn delivered(&self, ids: &[i64], at: EpochMillis) -> Result<(), PortError> {
        outbox::delivered(self, ids, at).await
    }

    async fn retry_later(&self, id: i64, next_attempt_at: EpochMillis, error: &str) -> Result<(), PortError> {
        outbox::retry_later(self, id, next_attempt_at, error).await
    }

    async fn outstanding(&self) -> Result<HashMap<String, u64>, PortError> {
        outbox::outstanding(self).await
    }
}
