//! The outbox: delivery ids, deliveries due per sink, and marking them done
//! or to retry. An entry carries the alert and the transition it delivers,
//! so `due` is one query; a delivered entry is deleted.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnValue, Select, WriteRequest};
use trailwatch_core::alerts::Delivery;
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::commit::due_key;
use super::schema::{
    delivery_pk, item_key, n, order_key, s, Item, Reader, ALERT, ATTEMPTS, COUNTER_NEXT, COUNTER_PK, COUNTER_SINKS, COUNTER_SK, DELIVERY_ID, DELIVERY_SK, DUE,
    DUE_SINK, INDEX_DUE, LAST_ERROR, NEXT_ATTEMPT, PK, TRANSITION,
};
use super::DynamoAlertStore;
use crate::error::{classify, AwsResult};

/// Requests per BatchWriteItem (DynamoDB's limit).
const BATCH_WRITE: usize = 25;

/// Tries of a batch write whose items DynamoDB leaves unprocessed (throttling).
const UNPROCESSED_TRIES: u32 = 8;

impl DynamoAlertStore {
    /// Hands out `count` delivery ids, and records the sinks they are for
    /// (what [`outstanding`] counts). One `ADD` on the counter item.
    pub(super) async fn allocate(&self, count: usize, sinks: &[String]) -> AwsResult<Vec<i64>> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(item_key(COUNTER_PK.to_owned(), COUNTER_SK)))
            .update_expression("ADD #next :count, #sinks :sinks")
            .expression_attribute_names("#next", COUNTER_NEXT)
            .expression_attribute_names("#sinks", COUNTER_SINKS)
            .expression_attribute_values(":count", n(count))
            .return_values(ReturnValue::UpdatedNew);
        let mut names = sinks.to_vec();
        names.sort_unstable();
        names.dedup();
        update = update.expression_attribute_values(":sinks", AttributeValue::Ss(names));
        let out = update.send().await.map_err(|e| classify(&format!("dynamodb:UpdateItem {} (delivery id counter)", self.table), e))?;
        let what = self.what("the delivery id counter");
        let attributes = out.attributes.unwrap_or_default();
        let last: i64 = Reader { item: &attributes, what: &what }.int(COUNTER_NEXT)?;
        let count = i64::try_from(count).map_err(|_| PortError::Invalid { what: what.clone(), message: format!("{count} ids at once") })?;
        Ok((last - count + 1..=last).collect())
    }

    fn decode_delivery(&self, item: &Item) -> AwsResult<Delivery> {
        let what = match item.get(PK) {
            Some(AttributeValue::S(pk)) => self.what(&format!("outbox entry {pk}")),
            _ => self.what("an outbox entry"),
        };
        let r = Reader { item, what: &what };
        Ok(Delivery {
            id: r.int(DELIVERY_ID)?,
            sink: r.str(DUE_SINK)?.to_owned(),
            alert: r.json(ALERT)?,
            transition: r.json(TRANSITION)?,
            attempts: r.int(ATTEMPTS)?,
            next_attempt_at: r.int(NEXT_ATTEMPT)?,
            last_error: r.opt_str(LAST_ERROR)?.map(str::to_owned),
        })
    }
}

/// Deliveries to `sink` due at `now`, by due time then id: one query on
/// the `due` index, and one batch read of what it found.
pub(super) async fn due(store: &DynamoAlertStore, sink: &str, now: EpochMillis, limit: usize) -> AwsResult<Vec<Delivery>> {
    let mut found = Vec::new();
    if limit == 0 || sink.is_empty() {
        return Ok(found);
    }
    // Every key of a time at or before `now` sorts before `<now>$` ('#' < '$').
    let bound = format!("{}$", order_key(now));
    let mut start: Option<Item> = None;
    loop {
        let want = i32::try_from(limit - found.len()).unwrap_or(i32::MAX);
        let out = store
            .client
            .query()
            .table_name(&store.table)
            .index_name(INDEX_DUE)
            .key_condition_expression("#sink = :sink AND #due < :bound")
            .expression_attribute_names("#sink", DUE_SINK)
            .expression_attribute_names("#due", DUE)
            .expression_attribute_values(":sink", s(sink))
            .expression_attribute_values(":bound", s(bound.clone()))
            .limit(want)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify(&format!("dynamodb:Query {} index {INDEX_DUE} (sink {sink})", store.table), e))?;
        for item in out.items.unwrap_or_default() {
            found.push(store.decode_delivery(&item)?);
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() && found.len() < limit => start = Some(key),
            _ => break,
        }
    }
    found.truncate(limit);
    if found.is_empty() {
        return Ok(found);
    }
    // The index lags the table: read the entries again, as they are now.
    let keys = found.iter().map(|d| item_key(delivery_pk(d.id), DELIVERY_SK)).collect();
    let mut fresh = Vec::with_capacity(found.len());
    for item in store.batch_get(keys, None).await? {
        let delivery = store.decode_delivery(&item)?;
        if delivery.next_attempt_at <= now && delivery.sink == sink {
            fresh.push(delivery);
        }
    }
    fresh.sort_by_key(|d| (d.next_attempt_at, d.id));
    Ok(fresh)
}

/// Deletes the entries (delivered twice is harmless). `at` is not kept.
pub(super) async fn delivered(store: &DynamoAlertStore, ids: &[i64], _at: EpochMillis) -> AwsResult<()> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    for chunk in ids.chunks(BATCH_WRITE) {
        let mut requests = Vec::with_capacity(chunk.len());
        for id in chunk {
            let delete = DeleteRequest::builder()
                .set_key(Some(item_key(delivery_pk(*id), DELIVERY_SK)))
                .build()
                .map_err(|e| PortError::Invalid { what: store.what(&format!("delivery {id}")), message: e.to_string() })?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        let mut tries = 0;
        while !requests.is_empty() {
            tries += 1;
            let out = store
                .client
                .batch_write_item()
                .request_items(&store.table, std::mem::take(&mut requests))
                .send()
                .await
                .map_err(|e| classify(&format!("dynamodb:BatchWriteItem {} (delivered {} deliveries)", store.table, chunk.len()), e))?;
            requests = out.unprocessed_items.and_then(|mut u| u.remove(&store.table)).unwrap_or_default();
            if !requests.is_empty() {
                if tries >= UNPROCESSED_TRIES {
                    return Err(PortError::backend(
                        format!("dynamodb:BatchWriteItem {}", store.table),
                        format!("{} deliveries still unprocessed after {tries} tries", requests.len()),
                        true,
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25 << tries.min(6))).await;
            }
        }
    }
    Ok(())
}

/// Counts the attempt and moves the entry in the `due` index; NotFound when
/// it is not outstanding (delivered, or never queued).
pub(super) async fn retry_later(store: &DynamoAlertStore, id: i64, next_attempt_at: EpochMillis, error: &str) -> AwsResult<()> {
    let sent = store
        .client
        .update_item()
        .table_name(&store.table)
        .set_key(Some(item_key(delivery_pk(id), DELIVERY_SK)))
        .condition_expression("attribute_exists(#pk)")
        .update_expression("SET #attempts = #attempts + :one, #next = :next, #due = :due, #error = :error")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#attempts", ATTEMPTS)
        .expression_attribute_names("#next", NEXT_ATTEMPT)
        .expression_attribute_names("#due", DUE)
        .expression_attribute_names("#error", LAST_ERROR)
        .expression_attribute_values(":one", n(1))
        .expression_attribute_values(":next", n(next_attempt_at))
        .expression_attribute_values(":due", s(due_key(next_attempt_at, id)))
        .expression_attribute_values(":error", s(error))
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()) => {
            Err(PortError::NotFound { what: store.what(&format!("outstanding delivery {id}")) })
        }
        Err(e) => Err(classify(&format!("dynamodb:UpdateItem {} (delivery {id})", store.table), e)),
    }
}

/// Outstanding entries per sink: a count of each recorded sink's partition
/// of the `due` index. Sinks with none are left out.
pub(super) async fn outstanding(store: &DynamoAlertStore) -> AwsResult<HashMap<String, u64>> {
    let counter = store.get_item(item_key(COUNTER_PK.to_owned(), COUNTER_SK), "delivery id counter").await?;
    let sinks = match counter.as_ref().and_then(|c| c.get(COUNTER_SINKS)) {
        Some(AttributeValue::Ss(sinks)) => sinks.clone(),
        _ => Vec::new(),
    };
    let mut counts = HashMap::new();
    for sink in sinks {
        let mut count = 0u64;
        let mut start: Option<Item> = None;
        loop {
            let out = store
                .client
                .query()
                .table_name(&store.table)
                .index_name(INDEX_DUE)
                .key_condition_expression("#sink = :sink")
                .expression_attribute_names("#sink", DUE_SINK)
                .expression_attribute_values(":sink", s(&sink))
                .select(Select::Count)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify(&format!("dynamodb:Query {} index {INDEX_DUE} (count of sink {sink})", store.table), e))?;
            count += u64::try_from(out.count).unwrap_or(0);
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        if count > 0 {
            counts.insert(sink, count);
        }
    }
    Ok(counts)
}
