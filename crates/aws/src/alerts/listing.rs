//! Reading alerts along the indexes: the listing, quiet alerts, and alerts
//! by origin event. Nothing here scans the table.
//!
//! The listing reads one index, chosen by the most selective filter given:
//! `origin_principal`, then `rule_id`, then `account_id` (one partition
//! each); then a status filter without `resolved` (one partition per
//! status: unresolved alerts are few next to resolved ones, which pile up);
//! then `severity_at_least` (one partition per severity at or above it);
//! then any status filter; without any of these, all three status
//! partitions. Each partition is read newest change first from the cursor
//! on, the other filters (`since`, `until`, and those not chosen) checked
//! on each alert read, until it yields `limit` matches; the partitions'
//! matches are merged. So a filter that is not the chosen one reads past
//! the alerts it drops: a narrow `since`/`until` window far back in a long
//! history reads everything newer than it in the chosen partitions.

use std::collections::{HashMap, HashSet};

use tokio::task::JoinSet;
use trailwatch_core::alerts::{Alert, AlertCursor, AlertPage, AlertQuery, AlertStatus, EventRef, Severity};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::schema::{
    order_key, origin_event_key, s, updated_key, Item, ACCOUNT_ID, INDEX_ACCOUNT, INDEX_ORIGIN_EVENT, INDEX_PRINCIPAL, INDEX_QUIET, INDEX_RULE, INDEX_SEVERITY,
    INDEX_STATUS, ORIGIN_EVENT, ORIGIN_PRINCIPAL, QUIET, QUIET_PART, QUIET_PARTITION, RULE_ID, SEVERITY, STATUS, UPDATED,
};
use super::DynamoAlertStore;
use crate::error::{classify, AwsResult};

/// Alerts per page read from an index.
const PAGE: i32 = 200;

/// Origin-event queries in flight at once.
const CONCURRENT_QUERIES: usize = 8;

const ALL_STATUSES: [AlertStatus; 3] = [AlertStatus::Open, AlertStatus::Acknowledged, AlertStatus::Resolved];
const ALL_SEVERITIES: [Severity; 5] = [Severity::Informational, Severity::Low, Severity::Medium, Severity::High, Severity::Critical];

/// The index a listing reads, its partition key, and the partitions.
fn plan(query: &AlertQuery) -> (&'static str, &'static str, Vec<String>) {
    // Index keys are never empty strings: an empty filter value is checked alert by alert.
    let given = |v: &Option<String>| v.as_ref().filter(|v| !v.is_empty()).cloned();
    if let Some(principal) = given(&query.origin_principal) {
        return (INDEX_PRINCIPAL, ORIGIN_PRINCIPAL, vec![principal]);
    }
    if let Some(rule) = given(&query.rule_id) {
        return (INDEX_RULE, RULE_ID, vec![rule]);
    }
    if let Some(account) = given(&query.account_id) {
        return (INDEX_ACCOUNT, ACCOUNT_ID, vec![account]);
    }
    let statuses = |list: &[AlertStatus]| {
        let mut names: Vec<String> = list.iter().map(|s| s.as_str().to_owned()).collect();
        names.sort_unstable();
        names.dedup();
        names
    };
    match (&query.status, query.severity_at_least) {
        (Some(list), _) if !list.contains(&AlertStatus::Resolved) => (INDEX_STATUS, STATUS, statuses(list)),
        (_, Some(min)) => (INDEX_SEVERITY, SEVERITY, ALL_SEVERITIES.iter().filter(|s| **s >= min).map(|s| s.as_str().to_owned()).collect()),
        (Some(list), None) => (INDEX_STATUS, STATUS, statuses(list)),
        (None, None) => (INDEX_STATUS, STATUS, statuses(&ALL_STATUSES)),
    }
}

/// Newest first: the order of the listing.
fn newest_first(a: &Alert, b: &Alert) -> std::cmp::Ordering {
    (b.updated_at, &b.id).cmp(&(a.updated_at, &a.id))
}

pub(super) async fn list(store: &DynamoAlertStore, query: &AlertQuery) -> AwsResult<AlertPage> {
    if query.limit == 0 {
        return Ok(AlertPage::default());
    }
    let (index, attribute, partitions) = plan(query);
    let before = query.after.as_ref().map(|after| updated_key(after.updated_at, &after.id));
    let mut found = Vec::new();
    for partition in partitions {
        found.extend(partition_page(store, index, attribute, &partition, before.as_deref(), query).await?);
    }
    found.sort_by(newest_first);
    found.truncate(query.limit);
    let next = if found.len() == query.limit { found.last().map(AlertCursor::of) } else { None };
    Ok(AlertPage { alerts: found, next })
}

/// Up to `query.limit` matching alerts of one partition, newest change
/// first, changed before the cursor `before`.
async fn partition_page(
    store: &DynamoAlertStore,
    index: &str,
    attribute: &str,
    partition: &str,
    before: Option<&str>,
    query: &AlertQuery,
) -> AwsResult<Vec<Alert>> {
    let mut found = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let mut request = store
            .client
            .query()
            .table_name(&store.table)
            .index_name(index)
            .expression_attribute_names("#p", attribute)
            .expression_attribute_values(":p", s(partition))
            .scan_index_forward(false)
            .limit(PAGE)
            .set_exclusive_start_key(start.take());
        request = match before {
            Some(before) => request
                .key_condition_expression("#p = :p AND #u < :before")
                .expression_attribute_names("#u", UPDATED)
                .expression_attribute_values(":before", s(before)),
            None => request.key_condition_expression("#p = :p"),
        };
        let out = request.send().await.map_err(|e| classify(&format!("dynamodb:Query {} index {index} ({partition})", store.table), e))?;
        for item in out.items.unwrap_or_default() {
            let alert = store.decode_alert(&item)?;
            if query.matches(&alert) {
                found.push(alert);
                if found.len() == query.limit {
                    return Ok(found);
                }
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(found),
        }
    }
}

/// Unresolved alerts quiet at `now`, longest quiet first: the `quiet` index
/// from its start up to `now`.
pub(super) async fn quiet(store: &DynamoAlertStore, now: EpochMillis, limit: usize) -> AwsResult<Vec<Alert>> {
    let mut found = Vec::new();
    if limit == 0 {
        return Ok(found);
    }
    // `<quiet at>#<id>` sorts below `<now>` exactly when quiet at < now.
    let bound = order_key(now);
    let mut start: Option<Item> = None;
    loop {
        let out = store
            .client
            .query()
            .table_name(&store.table)
            .index_name(INDEX_QUIET)
            .key_condition_expression("#part = :part AND #quiet < :now")
            .expression_attribute_names("#part", QUIET_PART)
            .expression_attribute_names("#quiet", QUIET)
            .expression_attribute_values(":part", s(QUIET_PARTITION))
            .expression_attribute_values(":now", s(bound.clone()))
            .limit(i32::try_from(limit - found.len()).unwrap_or(i32::MAX).min(PAGE * 5))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify(&format!("dynamodb:Query {} index {INDEX_QUIET}", store.table), e))?;
        for item in out.items.unwrap_or_default() {
            let alert = store.decode_alert(&item)?;
            // The index lags a resolution by a moment.
            if alert.status != AlertStatus::Resolved {
                found.push(alert);
            }
        }
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() && found.len() < limit => start = Some(key),
            _ => {
                found.truncate(limit);
                return Ok(found);
            }
        }
    }
}

/// Every item of one partition of an index.
async fn partition_items(client: aws_sdk_dynamodb::Client, table: String, index: &'static str, attribute: &'static str, value: String) -> AwsResult<Vec<Item>> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = client
            .query()
            .table_name(&table)
            .index_name(index)
            .key_condition_expression("#p = :p")
            .expression_attribute_names("#p", attribute)
            .expression_attribute_values(":p", s(&value))
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .map_err(|e| classify(&format!("dynamodb:Query {table} index {index} ({value})"), e))?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return Ok(items),
        }
    }
}

/// Unresolved alerts whose origin event is one of `events`: one query of
/// the `origin_event` index per distinct event, a few at a time.
pub(super) async fn with_origin_events(store: &DynamoAlertStore, events: &[EventRef]) -> AwsResult<Vec<Alert>> {
    let wanted: HashSet<(&str, &str)> = events.iter().map(|e| (e.account_id.as_str(), e.event_id.as_str())).collect();
    let mut keys: Vec<String> = wanted.iter().map(|(account, event)| origin_event_key(account, event)).collect();
    keys.sort_unstable();
    let mut found: HashMap<String, Alert> = HashMap::new();
    for chunk in keys.chunks(CONCURRENT_QUERIES) {
        let mut queries = JoinSet::new();
        for key in chunk {
            queries.spawn(partition_items(store.client.clone(), store.table.clone(), INDEX_ORIGIN_EVENT, ORIGIN_EVENT, key.clone()));
        }
        while let Some(done) = queries.join_next().await {
            let items = done.map_err(|e| PortError::backend(store.what("an origin-event query"), e, true))??;
            for item in &items {
                let alert = store.decode_alert(item)?;
                let origin = alert.origin_event.as_ref().map(|e| (e.account_id.as_str(), e.event_id.as_str()));
                if alert.status != AlertStatus::Resolved && origin.is_some_and(|o| wanted.contains(&o)) {
                    found.insert(alert.id.clone(), alert);
                }
            }
        }
    }
    let mut found: Vec<Alert> = found.into_values().collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_selective_filter_chooses_the_index() {
        let q = |f: fn(&mut AlertQuery)| {
            let mut query = AlertQuery { limit: 10, ..Default::default() };
            f(&mut query);
            let (index, _, partitions) = plan(&query);
            (index, partitions)
        };
        assert_eq!(q(|_| {}), (INDEX_STATUS, vec!["acknowledged".into(), "open".into(), "resolved".into()]));
        assert_eq!(
            q(|q| {
                q.rule_id = Some("root-login".into());
                q.account_id = Some("1".into());
            }),
            (INDEX_RULE, vec!["root-login".into()])
        );
        assert_eq!(
            q(|q| {
                q.status = Some(vec![AlertStatus::Open]);
                q.severity_at_least = Some(Severity::High);
            }),
            (INDEX_STATUS, vec!["open".into()])
        );
        assert_eq!(q(|q| q.severity_at_least = Some(Severity::High)), (INDEX_SEVERITY, vec!["high".into(), "critical".into()]));
        assert_eq!(q(|q| q.rule_id = Some(String::new())), (INDEX_STATUS, vec!["acknowledged".into(), "open".into(), "resolved".into()]));
        assert_eq!(q(|q| q.status = Some(vec![])).1, Vec::<String>::new());
    }
}
