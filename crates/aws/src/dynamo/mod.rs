//! DynamoDB adapters: sessions ([`sessions`]), pending events ([`pending`]),
//! the ledger of processed objects ([`ledger`]) and account alias overrides
//! ([`aliases`]); the alerts table is [`crate::alerts`]'s.
//!
//! Every table is PAY_PER_REQUEST. Their key schemas (the CloudFormation
//! templates mirror them):
//!
//! | table | partition key | sort key | indexes | TTL |
//! | --- | --- | --- | --- | --- |
//! | sessions | `access_key_id` S | `issued_at` N | | `expires_ttl` |
//! | pending | `account_id` S | `event_id` S | `by_missing_key` (`missing_key` S, `event_time` N), `by_event_time` (`shard` N, `event_time` N), both KEYS_ONLY | |
//! | ledger | `object_key` S | | `problems` (`problem` S, `processed_at` N), `counters` (`counter` S, `counter_sort` S), both ALL | |
//! | aliases | `account_id` S | | | |
//! | integrity | `pk` S | `sk` S | `open_findings` (`open` S, `open_sort` S), ALL | |
//!
//! The `create_*_table` functions make a table when it is missing and check
//! an existing one has the expected keys and indexes; each module says what
//! its items hold. This module also has what they share: reading attributes
//! with messages that name the table and item, BatchWriteItem in chunks of 25
//! and BatchGetItem in chunks of 100 (each retrying what DynamoDB left
//! unprocessed, with backoff), and query pagination.

pub mod aliases;
pub mod integrity;
pub mod ledger;
pub mod pending;
pub mod sessions;

pub use aliases::DynamoAliases;
pub use integrity::DynamoIntegrityStore;
pub use ledger::{Claim, DynamoLedger};
pub use pending::DynamoPendingStore;
pub use sessions::DynamoSessionStore;

use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType, KeysAndAttributes, Projection,
    ProjectionType, ScalarAttributeType, TableStatus, TimeToLiveSpecification, TimeToLiveStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use trailwatch_core::ports::PortError;

use crate::error::{classify, AwsResult};

/// A DynamoDB item (or key) as the SDK gives it.
pub type Item = HashMap<String, AttributeValue>;

/// The most items one BatchWriteItem may carry.
pub const BATCH_WRITE_MAX: usize = 25;
/// The most keys one BatchGetItem may ask for.
pub const BATCH_GET_MAX: usize = 100;
/// How many times unprocessed items or keys are sent again before giving up.
const UNPROCESSED_RETRIES: u32 = 8;

/// The names of trailwatch's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub sessions: String,
    pub ledger: String,
    pub pending: String,
    pub alerts: String,
    pub aliases: String,
    pub integrity: String,
}

impl TableNames {
    /// `<prefix>-sessions`, `<prefix>-ledger`, `<prefix>-pending`, `<prefix>-alerts`, `<prefix>-aliases`.
    /// And `<prefix>-integrity`.
    pub fn with_prefix(prefix: &str) -> TableNames {
        let name = |table: &str| format!("{prefix}-{table}");
        TableNames {
            sessions: name("sessions"),
            ledger: name("ledger"),
            pending: name("pending"),
            alerts: name("alerts"),
            aliases: name("aliases"),
            integrity: name("integrity"),
        }
    }
}

/// `dynamodb:<Operation> <table>`: what failed, for [`classify`] and messages.
pub fn op(operation: &str, table: &str) -> String {
    format!("dynamodb:{operation} {table}")
}

/// A string attribute.
pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A number attribute.
pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// FNV-1a of the parts joined by `/`: a hash that stays the same across
/// releases and platforms, to pick shards.
pub fn fnv1a(parts: &[&str]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for (i, part) in parts.iter().enumerate() {
        let separator: &[u8] = if i == 0 { b"" } else { b"/" };
        for byte in separator.iter().chain(part.as_bytes()) {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash
}

/// A request the SDK refused to build (a required field missing): a bug, not retryable.
pub fn build_error(what: &str, error: BuildError) -> PortError {
    PortError::Invalid { what: what.to_owned(), message: error.to_string() }
}

/// Reads the attributes of one item; errors name the table, the item and the attribute.
pub struct ItemReader<'a> {
    item: &'a Item,
    place: String,
}

impl<'a> ItemReader<'a> {
    /// `place` says where the item is, e.g. `dynamodb table X, item K`.
    pub fn new(item: &'a Item, place: String) -> Self {
        ItemReader { item, place }
    }

    /// A stored value that is not what the code wrote: retrying will not help.
    pub fn bad(&self, name: &str, message: impl std::fmt::Display) -> PortError {
        PortError::backend(self.place.clone(), format!("attribute `{name}`: {message}"), false)
    }

    pub fn opt_s(&self, name: &str) -> AwsResult<Option<&'a str>> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(v)) => Ok(Some(v.as_str())),
            Some(other) => Err(self.bad(name, format!("expected a string, found {other:?}"))),
        }
    }

    pub fn s(&self, name: &str) -> AwsResult<&'a str> {
        self.opt_s(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    pub fn opt_n<T: FromStr>(&self, name: &str) -> AwsResult<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(v)) => v.parse().map(Some).map_err(|e| self.bad(name, format!("{v:?}: {e}"))),
            Some(other) => Err(self.bad(name, format!("expected a number, found {other:?}"))),
        }
    }

    pub fn n<T: FromStr>(&self, name: &str) -> AwsResult<T>
    where
        T::Err: std::fmt::Display,
    {
        self.opt_n(name)?.ok_or_else(|| self.bad(name, "missing"))
    }

    /// A string attribute holding JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self, name: &str) -> AwsResult<T> {
        let text = self.s(name)?;
        serde_json::from_str(text).map_err(|e| self.bad(name, format!("invalid JSON: {e}")))
    }

    pub fn opt_list(&self, name: &str) -> AwsResult<&'a [AttributeValue]> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(&[]),
            Some(AttributeValue::L(v)) => Ok(v.as_slice()),
            Some(other) => Err(self.bad(name, format!("expected a list, found {other:?}"))),
        }
    }
}

/// Waits between retries: 50 ms doubling to 3.2 s, with jitter.
pub(crate) struct Backoff {
    tries: u32,
    max_tries: u32,
}

impl Backoff {
    pub(crate) fn new(max_tries: u32) -> Self {
        Backoff { tries: 0, max_tries }
    }

    pub(crate) fn tries(&self) -> u32 {
        self.tries
    }

    /// Sleeps before the next try; false when the tries are used up.
    pub(crate) async fn wait(&mut self) -> bool {
        if self.tries >= self.max_tries {
            return false;
        }
        let base = 50u64 << self.tries.min(6);
        self.tries += 1;
        // Jitter from the clock: writers that collided should not collide again in step.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::from(d.subsec_nanos()));
        tokio::time::sleep(Duration::from_millis(base / 2 + nanos % (base / 2 + 1))).await;
        true
    }
}

/// Writes (puts and deletes) in chunks of [`BATCH_WRITE_MAX`], sending again
/// what DynamoDB leaves unprocessed, with backoff. Not atomic: on error some
/// chunks may be written. A chunk must not name the same key twice.
pub async fn batch_write(client: &Client, table: &str, requests: Vec<WriteRequest>) -> AwsResult<()> {
    for chunk in requests.chunks(BATCH_WRITE_MAX) {
        let mut todo = chunk.to_vec();
        let mut backoff = Backoff::new(UNPROCESSED_RETRIES);
        loop {
            let count = todo.len();
            let out = client.batch_write_item().request_items(table, todo).send().await.map_err(|e| classify(&op("BatchWriteItem", table), e))?;
            todo = out.unprocessed_items.and_then(|mut left| left.remove(table)).unwrap_or_default();
            if todo.is_empty() {
                break;
            }
            tracing::debug!(table, unprocessed = todo.len(), of = count, "dynamodb.batch_write.unprocessed");
            if !backoff.wait().await {
                return Err(PortError::backend(
                    op("BatchWriteItem", table),
                    format!("{} items still unprocessed after {} tries", todo.len(), backoff.tries()),
                    true,
                ));
            }
        }
    }
    Ok(())
}

/// Reads items by key in chunks of [`BATCH_GET_MAX`], asking again for the
/// keys DynamoDB leaves unprocessed, with backoff. Missing items are left
/// out; order is not kept. Keys must be distinct.
pub async fn batch_get(client: &Client, table: &str, keys: Vec<Item>, consistent: bool) -> AwsResult<Vec<Item>> {
    batch_get_projected(client, table, keys, consistent, None).await
}

/// [`batch_get`] reading only the attributes a projection expression names
/// (with its `#name` placeholders).
pub async fn batch_get_projected(
    client: &Client,
    table: &str,
    keys: Vec<Item>,
    consistent: bool,
    projection: Option<(&str, HashMap<String, String>)>,
) -> AwsResult<Vec<Item>> {
    let what = op("BatchGetItem", table);
    let mut found = Vec::with_capacity(keys.len());
    let (projection, names) = projection.map_or((None, None), |(p, names)| (Some(p.to_owned()), Some(names).filter(|n| !n.is_empty())));
    for chunk in keys.chunks(BATCH_GET_MAX) {
        let mut request = KeysAndAttributes::builder()
            .set_keys(Some(chunk.to_vec()))
            .consistent_read(consistent)
            .set_projection_expression(projection.clone())
            .set_expression_attribute_names(names.clone())
            .build()
            .map_err(|e| build_error(&what, e))?;
        let mut backoff = Backoff::new(UNPROCESSED_RETRIES);
        loop {
            let out = client.batch_get_item().request_items(table, request).send().await.map_err(|e| classify(&what, e))?;
            found.extend(out.responses.and_then(|mut r| r.remove(table)).unwrap_or_default());
            match out.unprocessed_keys.and_then(|mut left| left.remove(table)).filter(|k| !k.keys().is_empty()) {
                None => break,
                Some(left) => {
                    if !backoff.wait().await {
                        return Err(PortError::backend(what, format!("{} keys still unprocessed after {} tries", left.keys().len(), backoff.tries()), true));
                    }
                    request = left;
                }
            }
        }
    }
    Ok(found)
}

/// Runs a query page after page until `enough` says the items gathered so
/// far suffice, or there are no more pages.
pub async fn query_until(query: QueryFluentBuilder, what: &str, mut enough: impl FnMut(&[Item]) -> bool) -> AwsResult<Vec<Item>> {
    let mut items = Vec::new();
    let mut start: Option<Item> = None;
    loop {
        let out = query.clone().set_exclusive_start_key(start.take()).send().await.map_err(|e| classify(what, e))?;
        items.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(next) if !enough(&items) => start = Some(next),
            _ => return Ok(items),
        }
    }
}

/// Every item a query finds, page after page.
pub async fn query_all(query: QueryFluentBuilder, what: &str) -> AwsResult<Vec<Item>> {
    query_until(query, what, |_| false).await
}

/// Runs `task` on every input, at most `limit` at a time, and waits for
/// all of them (none is cancelled when another fails): each result, in the
/// order they finish.
pub(crate) async fn run_bounded<T, R, F, Fut>(inputs: impl IntoIterator<Item = T>, limit: usize, task: F) -> Vec<AwsResult<R>>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = AwsResult<R>> + Send + 'static,
    R: Send + 'static,
{
    fn joined<R>(result: Result<AwsResult<R>, tokio::task::JoinError>) -> AwsResult<R> {
        result.unwrap_or_else(|e| Err(PortError::backend("dynamodb task", e, false)))
    }
    let mut running = tokio::task::JoinSet::new();
    let mut results = Vec::new();
    for input in inputs {
        if running.len() >= limit.max(1) {
            if let Some(done) = running.join_next().await {
                results.push(joined(done));
            }
        }
        running.spawn(task(input));
    }
    while let Some(done) = running.join_next().await {
        results.push(joined(done));
    }
    results
}

/// A key attribute of a table or index.
#[derive(Debug, Clone, Copy)]
struct Key {
    name: &'static str,
    kind: KeyKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    S,
    N,
}

impl Key {
    const fn s(name: &'static str) -> Key {
        Key { name, kind: KeyKind::S }
    }

    const fn n(name: &'static str) -> Key {
        Key { name, kind: KeyKind::N }
    }

    fn scalar(self) -> ScalarAttributeType {
        match self.kind {
            KeyKind::S => ScalarAttributeType::S,
            KeyKind::N => ScalarAttributeType::N,
        }
    }
}

/// A global secondary index.
struct Index {
    name: &'static str,
    hash: Key,
    range: Key,
    projection: ProjectionType,
}

/// What a table is made of.
struct TableSpec<'a> {
    name: &'a str,
    hash: Key,
    range: Option<Key>,
    indexes: Vec<Index>,
    ttl: Option<&'static str>,
}

fn key_schema(what: &str, hash: Key, range: Option<Key>) -> AwsResult<Vec<KeySchemaElement>> {
    let mut schema = vec![KeySchemaElement::builder().attribute_name(hash.name).key_type(KeyType::Hash).build().map_err(|e| build_error(what, e))?];
    if let Some(range) = range {
        schema.push(KeySchemaElement::builder().attribute_name(range.name).key_type(KeyType::Range).build().map_err(|e| build_error(what, e))?);
    }
    Ok(schema)
}

async fn create_table(client: &Client, spec: TableSpec<'_>) -> AwsResult<()> {
    let what = op("CreateTable", spec.name);
    let mut attributes: Vec<Key> = Vec::new();
    for key in [Some(spec.hash), spec.range].into_iter().flatten().chain(spec.indexes.iter().flat_map(|i| [i.hash, i.range])) {
        if !attributes.iter().any(|a| a.name == key.name) {
            attributes.push(key);
        }
    }
    let mut request = client.create_table().table_name(spec.name).billing_mode(BillingMode::PayPerRequest);
    for key in &attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder().attribute_name(key.name).attribute_type(key.scalar()).build().map_err(|e| build_error(&what, e))?,
        );
    }
    request = request.set_key_schema(Some(key_schema(&what, spec.hash, spec.range)?));
    for index in &spec.indexes {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(key_schema(&what, index.hash, Some(index.range))?))
                .projection(Projection::builder().projection_type(index.projection.clone()).build())
                .build()
                .map_err(|e| build_error(&what, e))?,
        );
    }
    match request.send().await {
        Ok(_) => tracing::info!(table = spec.name, "dynamodb.table.created"),
        Err(e) if matches!(e.as_service_error(), Some(CreateTableError::ResourceInUseException(_))) => {}
        Err(e) => return Err(classify(&what, e)),
    }
    wait_active(client, &spec).await?;
    if let Some(attribute) = spec.ttl {
        enable_ttl(client, spec.name, attribute).await?;
    }
    Ok(())
}

/// Waits (up to 10 minutes) until the table and its indexes are ACTIVE, and
/// checks an existing table has the keys and indexes the code reads.
async fn wait_active(client: &Client, spec: &TableSpec<'_>) -> AwsResult<()> {
    let what = op("DescribeTable", spec.name);
    for _ in 0..300 {
        let out = client.describe_table().table_name(spec.name).send().await.map_err(|e| classify(&what, e))?;
        let Some(table) = out.table else {
            return Err(PortError::backend(what, "no table description in the answer", true));
        };
        let keys: Vec<(&str, &KeyType)> = table.key_schema().iter().map(|k| (k.attribute_name(), k.key_type())).collect();
        let mut expected = vec![(spec.hash.name, &KeyType::Hash)];
        if let Some(range) = &spec.range {
            expected.push((range.name, &KeyType::Range));
        }
        if keys != expected {
            return Err(PortError::Invalid { what, message: format!("the table exists with key schema {keys:?}, not {expected:?}") });
        }
        let indexes = table.global_secondary_indexes();
        for index in &spec.indexes {
            if !indexes.iter().any(|i| i.index_name() == Some(index.name)) {
                return Err(PortError::Invalid { what, message: format!("the table exists without the global secondary index {:?}", index.name) });
            }
        }
        let active = table.table_status() == Some(&TableStatus::Active) && indexes.iter().all(|i| i.index_status().is_none_or(|s| *s == IndexStatus::Active));
        if active {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Err(PortError::backend(what, "the table is not ACTIVE after 10 minutes", true))
}

/// Turns on TTL on `attribute` unless it is on already.
async fn enable_ttl(client: &Client, table: &str, attribute: &str) -> AwsResult<()> {
    let out = client.describe_time_to_live().table_name(table).send().await.map_err(|e| classify(&op("DescribeTimeToLive", table), e))?;
    if let Some(ttl) = out.time_to_live_description {
        let on = matches!(ttl.time_to_live_status(), Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling));
        match ttl.attribute_name() {
            Some(name) if on && name == attribute => return Ok(()),
            Some(name) if on => {
                return Err(PortError::Invalid {
                    what: op("UpdateTimeToLive", table),
                    message: format!("TTL is on attribute {name:?}; trailwatch expects {attribute:?}"),
                })
            }
            _ => {}
        }
    }
    let what = op("UpdateTimeToLive", table);
    let spec = TimeToLiveSpecification::builder().enabled(true).attribute_name(attribute).build().map_err(|e| build_error(&what, e))?;
    client.update_time_to_live().table_name(table).time_to_live_specification(spec).send().await.map_err(|e| classify(&what, e))?;
    Ok(())
}

/// Creates the sessions table if missing: partition key `access_key_id` (S),
/// sort key `issued_at` (N, epoch milliseconds), TTL on `expires_ttl` (epoch
/// seconds). See [`sessions`].
pub async fn create_sessions_table(client: &Client, name: &str) -> AwsResult<()> {
    create_table(client, TableSpec { name, hash: Key::s("access_key_id"), range: Some(Key::n("issued_at")), indexes: vec![], ttl: Some("expires_ttl") }).await
}

/// Creates the pending table if missing: partition key `account_id` (S), sort
/// key `event_id` (S); KEYS_ONLY indexes `by_missing_key` (partition
/// `missing_key` S, sort `event_time` N) and `by_event_time` (partition
/// `shard` N, one of [`pending::SHARDS`], sort `event_time` N). See [`pending`].
pub async fn create_pending_table(client: &Client, name: &str) -> AwsResult<()> {
    let index = |name, hash| Index { name, hash, range: Key::n("event_time"), projection: ProjectionType::KeysOnly };
    create_table(
        client,
        TableSpec {
            name,
            hash: Key::s("account_id"),
            range: Some(Key::s("event_id")),
            indexes: vec![index(pending::BY_MISSING_KEY, Key::s("missing_key")), index(pending::BY_EVENT_TIME, Key::n("shard"))],
            ttl: None,
        },
    )
    .await
}

/// Creates the ledger table if missing: partition key `object_key` (S); ALL
/// indexes `problems` (partition `problem` S, sort `processed_at` N: only
/// failed, partial and empty files carry `problem`) and `counters` (partition
/// `counter` S, sort `counter_sort` S: only counter items carry `counter`).
/// See [`ledger`].
pub async fn create_ledger_table(client: &Client, name: &str) -> AwsResult<()> {
    create_table(
        client,
        TableSpec {
            name,
            hash: Key::s("object_key"),
            range: None,
            indexes: vec![
                Index { name: ledger::PROBLEMS, hash: Key::s("problem"), range: Key::n("processed_at"), projection: ProjectionType::All },
                Index { name: ledger::COUNTERS, hash: Key::s("counter"), range: Key::s("counter_sort"), projection: ProjectionType::All },
            ],
            ttl: None,
        },
    )
    .await
}

/// Creates the aliases table if missing: partition key `account_id` (S). See [`aliases`].
pub async fn create_aliases_table(client: &Client, name: &str) -> AwsResult<()> {
    create_table(client, TableSpec { name, hash: Key::s("account_id"), range: None, indexes: vec![], ttl: None }).await
}

/// Creates the integrity table if missing: partition key `pk` (S), sort key
/// `sk` (S); ALL index `open_findings` (partition `open` S, sort `open_sort`
/// S: only open findings carry `open`). See [`integrity`].
pub async fn create_integrity_table(client: &Client, name: &str) -> AwsResult<()> {
    create_table(
        client,
        TableSpec {
            name,
            hash: Key::s("pk"),
            range: Some(Key::s("sk")),
            indexes: vec![Index { name: integrity::OPEN_FINDINGS, hash: Key::s("open"), range: Key::s("open_sort"), projection: ProjectionType::All }],
            ttl: None,
        },
    )
    .await
}
