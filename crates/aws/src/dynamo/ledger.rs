//! The ledger of processed objects in DynamoDB, with counters, and the
//! collector's claims.
//!
//! Items of the table (partition key `object_key`):
//! - **a file**, keyed by its S3 key: `kind`, `account_id`, `region`,
//!   `status`, `size`, `modified`, `events`, `rejected` (how many records were
//!   rejected), `bytes`, `attempts`, `error`, `processed_at`, `file_time` (from
//!   the key, when it has one), `rejects` (the first [`REJECTS_KEPT`] rejected
//!   records, at most [`REJECTS_KEPT_BYTES`] of them: an item holds 400 KB;
//!   the others are still in the file), `problem` (set only when the status is
//!   failed, partial or empty: the sparse `problems` index, newest first) and,
//!   while a collector holds a claim, `lease_owner` and `lease_until`. A claim
//!   of a file never recorded makes an item with only the lease.
//! - **summary counters**, `#trailwatch/summary/<0..8>`: `files_<status>`,
//!   `events`, `rejected_records`. [`SUMMARY_SHARDS`] items, each record
//!   adding to one, so concurrent writers seldom meet on the same item;
//!   `summary` reads them all by key.
//! - **activity counters**, `#trailwatch/activity/<account>/<region>`:
//!   `files`, `failed`, `events`, `last_file_time`, `last_processed_at`,
//!   `version`, and `counter` = `activity` with `counter_sort` =
//!   `<account>/<region>` for the sparse `counters` index that `activity`
//!   queries. CloudTrail keys start with a prefix or `AWSLogs/`, never `#trailwatch/`.
//!
//! `summary`, `problems` and `activity` are thus a few reads, not scans.
//!
//! # Atomicity of `record`
//! Each chunk of up to [`CHUNK_FILES`] files (and about 3 MB) is one
//! TransactWriteItems: the files' items and the counters they change, all or
//! none, so the counters always match the files. Each file's Put is
//! conditional on the item read just before (its `attempts`), and each
//! activity counter on its `version`: when another writer changed one in
//! between, the chunk is read and computed again. A call of more files than
//! one chunk is not atomic as a whole: when a later chunk fails, the earlier
//! ones stay recorded (retrying the call counts their attempts again).
//! Counters only grow the newest times (`last_file_time`, `last_processed_at`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use trailwatch_core::event::{FileOutcome, FileStatus, RecordError, RejectedRecord};
use trailwatch_core::layout::{self, ObjectKind};
use trailwatch_core::ports::{Checkpoints, FileActivity, LedgerEntry, LedgerSummary, PortError};
use trailwatch_core::time::EpochMillis;

use super::{batch_get, build_error, fnv1a, n, op, query_all, query_until, s, Backoff, Item, ItemReader};
use crate::error::{classify, AwsResult};

/// The sparse index of failed, partial and empty files, by `processed_at`.
pub const PROBLEMS: &str = "problems";
/// The sparse index of activity counters.
pub const COUNTERS: &str = "counters";
/// How many rejected records of a file are kept.
pub const REJECTS_KEPT: usize = 100;
/// How many bytes of rejected records (raw and reason) a file keeps.
pub const REJECTS_KEPT_BYTES: usize = 256 * 1024;
/// How much of a file's error message is kept.
const ERROR_KEPT_BYTES: usize = 16 * 1024;
/// How many items the summary counters are spread over.
pub const SUMMARY_SHARDS: u32 = 8;
/// The most files one transaction records: with the summary and at most two
/// activity counters a file, under DynamoDB's 100 actions. Kept well below:
/// transactions of 32 files were refused by the emulator (moto) under load.
pub const CHUNK_FILES: usize = 10;
/// About how many bytes one transaction carries (DynamoDB allows 4 MB).
const CHUNK_BYTES: usize = 3 * 1024 * 1024;
/// How many times a chunk is computed again after another writer changed its items.
const RECORD_TRIES: u32 = 10;
/// How many times a claim is tried again when the item changed under it.
const CLAIM_TRIES: u32 = 5;

const KEY: &str = "object_key";
const COUNTER_PREFIX: &str = "#trailwatch/";
const PROBLEM: &str = "problem";
const ACTIVITY: &str = "activity";

/// What a claim of a file found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The caller holds the lease: it reads the file, then records it (or releases).
    Claimed,
    /// The file is recorded final with the same size and modification time: nothing to do.
    Done(LedgerEntry),
    /// Another collector holds a lease until `until`.
    Busy { owner: String, until: EpochMillis },
}

/// The ledger in a DynamoDB table (see the module doc).
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    /// Where `completeness` comes from.
    integrity: super::integrity::IntegrityLink,
}

fn summary_key(shard: u32) -> String {
    format!("{COUNTER_PREFIX}summary/{shard}")
}

fn activity_key(account_id: &str, region: &str) -> String {
    format!("{COUNTER_PREFIX}{ACTIVITY}/{account_id}/{region}")
}

fn is_problem(status: FileStatus) -> bool {
    matches!(status, FileStatus::Failed | FileStatus::Partial | FileStatus::Empty)
}

/// The file's time: from its key, else its `modified`.
fn file_time(outcome: &FileOutcome) -> EpochMillis {
    layout::classify(&outcome.key).map_or(outcome.modified, |key| key.file_time)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How many of the first rejected records fit the bounds, and their size.
fn rejects_kept(rejected: &[RejectedRecord]) -> (usize, usize) {
    let mut bytes = 0;
    for (i, r) in rejected.iter().take(REJECTS_KEPT).enumerate() {
        let size = r.raw.len() + r.error.reason.len() + r.error.event_id.as_ref().map_or(0, String::len) + 16;
        if bytes + size > REJECTS_KEPT_BYTES {
            return (i, bytes);
        }
        bytes += size;
    }
    (rejected.len().min(REJECTS_KEPT), bytes)
}

/// The rejected records a file's item keeps, as a DynamoDB list.
fn rejects_list(rejected: &[RejectedRecord]) -> Vec<AttributeValue> {
    let (kept, _) = rejects_kept(rejected);
    rejected[..kept]
        .iter()
        .map(|r| {
            let mut record = HashMap::from([("index".to_owned(), n(r.error.index)), ("reason".to_owned(), s(&r.error.reason)), ("raw".to_owned(), s(&r.raw))]);
            if let Some(id) = &r.error.event_id {
                record.insert("event_id".to_owned(), s(id));
            }
            AttributeValue::M(record)
        })
        .collect()
}

/// One outcome to record, and how many times it came in the call.
struct Planned<'a> {
    outcome: &'a FileOutcome,
    times: u32,
}

/// The outcomes of a call, one per key (the last wins, each counts an attempt),
/// in chunks a transaction can carry.
fn plan(outcomes: &[FileOutcome]) -> Vec<Vec<Planned<'_>>> {
    let mut planned: Vec<Planned<'_>> = Vec::with_capacity(outcomes.len());
    let mut index: HashMap<&str, usize> = HashMap::new();
    for outcome in outcomes {
        match index.get(outcome.key.as_str()) {
            Some(&i) => {
                planned[i].outcome = outcome;
                planned[i].times += 1;
            }
            None => {
                index.insert(&outcome.key, planned.len());
                planned.push(Planned { outcome, times: 1 });
            }
        }
    }
    let mut chunks: Vec<Vec<Planned<'_>>> = Vec::new();
    let mut bytes = 0;
    for p in planned {
        let size = 2 * p.outcome.key.len() + p.outcome.error.as_ref().map_or(0, |e| e.len().min(ERROR_KEPT_BYTES)) + rejects_kept(&p.outcome.rejected).1 + 1024;
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK_FILES && bytes + size <= CHUNK_BYTES => {
                bytes += size;
                chunk.push(p);
            }
            _ => {
                bytes = size;
                chunks.push(vec![p]);
            }
        }
    }
    chunks
}

/// How one chunk changes the counters.
#[derive(Default)]
struct SummaryDelta {
    files: BTreeMap<&'static str, i64>,
    events: i64,
    rejected: i64,
}

#[derive(Default)]
struct ActivityDelta {
    account_id: String,
    region: String,
    files: i64,
    failed: i64,
    events: i64,
    last_file_time: Option<EpochMillis>,
    last_processed_at: Option<EpochMillis>,
}

fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl SummaryDelta {
    fn count(&mut self, status: FileStatus, events: u64, rejected: u64, sign: i64) {
        *self.files.entry(status.as_str()).or_default() += sign;
        self.events += sign * signed(events);
        self.rejected += sign * signed(rejected);
    }

    /// `ADD` clauses and values for the changes that are not zero.
    fn adds(&self) -> Vec<(String, AttributeValue)> {
        let mut adds: Vec<(String, AttributeValue)> =
            self.files.iter().filter(|(_, d)| **d != 0).map(|(status, d)| (format!("files_{status}"), n(*d))).collect();
        for (name, d) in [("events", self.events), ("rejected_records", self.rejected)] {
            if d != 0 {
                adds.push((name.to_owned(), n(d)));
            }
        }
        adds
    }
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger { client, table: table.into(), integrity: Default::default() }
    }

    /// Answers `completeness` from `store` (the integrity table).
    pub fn with_integrity(self, store: Arc<dyn trailwatch_core::integrity::IntegrityStore>) -> Self {
        DynamoLedger { integrity: super::integrity::IntegrityLink(Some(store)), ..self }
    }

    fn place(&self, key: &str) -> String {
        format!("dynamodb table {}, object {key}", self.table)
    }

    /// The entry an item holds; None for a claim's lease-only item or a counter.
    fn entry(&self, item: &Item) -> AwsResult<Option<LedgerEntry>> {
        let key = ItemReader::new(item, format!("dynamodb table {}", self.table)).s(KEY)?;
        let read = ItemReader::new(item, self.place(key));
        let Some(status) = read.opt_s("status")? else { return Ok(None) };
        let kind = read.s("kind")?;
        Ok(Some(LedgerEntry {
            key: key.to_owned(),
            kind: ObjectKind::parse(kind).ok_or_else(|| read.bad("kind", format!("unknown object kind {kind:?}")))?,
            account_id: read.s("account_id")?.to_owned(),
            region: read.s("region")?.to_owned(),
            status: FileStatus::parse(status).ok_or_else(|| read.bad("status", format!("unknown file status {status:?}")))?,
            size: read.n("size")?,
            modified: read.n("modified")?,
            events: read.n("events")?,
            rejected: read.n("rejected")?,
            attempts: read.n("attempts")?,
            error: read.opt_s("error")?.map(str::to_owned),
            processed_at: read.n("processed_at")?,
        }))
    }

    fn file_item(&self, outcome: &FileOutcome, attempts: u32, at: EpochMillis) -> Item {
        let mut item = Item::from([
            (KEY.to_owned(), s(&outcome.key)),
            ("kind".to_owned(), s(outcome.kind.as_str())),
            ("account_id".to_owned(), s(&outcome.account_id)),
            ("region".to_owned(), s(&outcome.region)),
            ("status".to_owned(), s(outcome.status.as_str())),
            ("size".to_owned(), n(outcome.size)),
            ("modified".to_owned(), n(outcome.modified)),
            ("events".to_owned(), n(outcome.events)),
            ("rejected".to_owned(), n(outcome.rejected.len())),
            ("bytes".to_owned(), n(outcome.bytes)),
            ("attempts".to_owned(), n(attempts)),
            ("processed_at".to_owned(), n(at)),
            ("file_time".to_owned(), n(file_time(outcome))),
        ]);
        if let Some(error) = &outcome.error {
            item.insert("error".to_owned(), s(cut(error, ERROR_KEPT_BYTES)));
        }
        let rejects = rejects_list(&outcome.rejected);
        if !rejects.is_empty() {
            item.insert("rejects".to_owned(), AttributeValue::L(rejects));
        }
        if is_problem(outcome.status) {
            item.insert(PROBLEM.to_owned(), s(PROBLEM));
        }
        item
    }

    /// Records one chunk in one transaction, computing it again when another
    /// writer changed its items in between.
    async fn record_chunk(&self, chunk: &[Planned<'_>], at: EpochMillis) -> AwsResult<()> {
        let what = format!("{}, {} files from {}", op("TransactWriteItems", &self.table), chunk.len(), chunk[0].outcome.key);
        let mut backoff = Backoff::new(RECORD_TRIES);
        loop {
            let actions = self.chunk_actions(chunk, at).await?;
            let error = match self.client.transact_write_items().set_transact_items(Some(actions)).send().await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let reasons: Vec<String> = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().iter().filter_map(|r| r.code()).filter(|c| *c != "None").map(str::to_owned).collect()
                }
                _ => return Err(classify(&what, error)),
            };
            let contended =
                !reasons.is_empty() && reasons.iter().all(|r| matches!(r.as_str(), "ConditionalCheckFailed" | "TransactionConflict" | "ThrottlingError"));
            if !contended {
                return Err(classify(&what, error));
            }
            tracing::debug!(table = %self.table, ?reasons, "dynamodb.ledger.record_contended");
            if !backoff.wait().await {
                return Err(PortError::backend(
                    what,
                    format!("other writers kept changing the items ({}): gave up after {} tries", reasons.join(", "), backoff.tries()),
                    true,
                ));
            }
        }
    }

    /// Reads what the chunk replaces and builds its transaction.
    async fn chunk_actions(&self, chunk: &[Planned<'_>], at: EpochMillis) -> AwsResult<Vec<TransactWriteItem>> {
        let what = op("TransactWriteItems", &self.table);
        // The files' items and their new activity counters, in one read.
        let mut keys: Vec<String> = chunk.iter().map(|p| p.outcome.key.clone()).collect();
        keys.extend(chunk.iter().filter(|p| p.outcome.kind.has_events()).map(|p| activity_key(&p.outcome.account_id, &p.outcome.region)));
        keys.sort_unstable();
        keys.dedup();
        let mut stored = self.read_items(keys).await?;

        let mut summary = SummaryDelta::default();
        let mut activity: BTreeMap<String, ActivityDelta> = BTreeMap::new();
        let mut actions = Vec::with_capacity(chunk.len() + 2);
        for p in chunk {
            let outcome = p.outcome;
            let old_item = stored.get(&outcome.key);
            let old = old_item.map(|item| self.entry(item)).transpose()?.flatten();
            if let Some(old) = &old {
                summary.count(old.status, old.events, old.rejected, -1);
                if old.kind.has_events() {
                    let a = activity_delta(&mut activity, &old.account_id, &old.region);
                    a.files -= 1;
                    a.failed -= i64::from(old.status == FileStatus::Failed);
                    a.events -= signed(old.events);
                }
            }
            summary.count(outcome.status, outcome.events, outcome.rejected.len() as u64, 1);
            if outcome.kind.has_events() {
                let a = activity_delta(&mut activity, &outcome.account_id, &outcome.region);
                a.files += 1;
                a.failed += i64::from(outcome.status == FileStatus::Failed);
                a.events += signed(outcome.events);
                a.last_file_time = a.last_file_time.max(Some(file_time(outcome)));
                a.last_processed_at = a.last_processed_at.max(Some(at));
            }
            // Conditional on what was read: the same attempts, or still no outcome.
            let attempts = old.as_ref().map_or(0, |o| o.attempts);
            let mut put = Put::builder().table_name(&self.table).set_item(Some(self.file_item(outcome, attempts.saturating_add(p.times), at)));
            put = match &old {
                Some(old) => put.condition_expression("attempts = :attempts").expression_attribute_values(":attempts", n(old.attempts)),
                None => put.condition_expression("attribute_not_exists(attempts)"),
            };
            actions.push(TransactWriteItem::builder().put(put.build().map_err(|e| build_error(&what, e))?).build());
        }

        let adds = summary.adds();
        if !adds.is_empty() {
            let shard = fnv1a(&[&chunk[0].outcome.key]) % SUMMARY_SHARDS;
            let mut update = Update::builder().table_name(&self.table).key(KEY, s(summary_key(shard)));
            let mut clauses = Vec::with_capacity(adds.len());
            for (i, (name, value)) in adds.into_iter().enumerate() {
                clauses.push(format!("{name} :d{i}"));
                update = update.expression_attribute_values(format!(":d{i}"), value);
            }
            update = update.update_expression(format!("ADD {}", clauses.join(", ")));
            actions.push(TransactWriteItem::builder().update(update.build().map_err(|e| build_error(&what, e))?).build());
        }

        // An old entry in another account or region (never, in practice) needs its counter read too.
        let missing: Vec<String> = activity.keys().filter(|k| !stored.contains_key(*k)).cloned().collect();
        if !missing.is_empty() {
            stored.extend(self.read_items(missing).await?);
        }
        for (key, delta) in activity {
            actions.push(TransactWriteItem::builder().update(self.activity_update(&key, delta, stored.get(&key))?).build());
        }
        Ok(actions)
    }

    /// Items by key (consistent reads), by key; absent ones left out.
    async fn read_items(&self, keys: Vec<String>) -> AwsResult<HashMap<String, Item>> {
        let requests = keys.into_iter().map(|k| Item::from([(KEY.to_owned(), s(k))])).collect();
        let mut found = HashMap::new();
        for item in batch_get(&self.client, &self.table, requests, true).await? {
            let key = ItemReader::new(&item, format!("dynamodb table {}", self.table)).s(KEY)?.to_owned();
            found.insert(key, item);
        }
        Ok(found)
    }

    /// The update of one activity counter, conditional on the version read.
    fn activity_update(&self, key: &str, delta: ActivityDelta, stored: Option<&Item>) -> AwsResult<Update> {
        let what = op("TransactWriteItems", &self.table);
        let read = stored.map(|item| ItemReader::new(item, self.place(key)));
        let (version, last_file_time, last_processed_at) = match &read {
            Some(r) => (r.opt_n::<i64>("version")?, r.opt_n::<i64>("last_file_time")?, r.opt_n::<i64>("last_processed_at")?),
            None => (None, None, None),
        };
        let mut sets = vec!["#counter = :counter", "counter_sort = :sort", "account_id = :account", "#region = :region"];
        let mut update = Update::builder()
            .table_name(&self.table)
            .key(KEY, s(key))
            .expression_attribute_names("#counter", "counter")
            .expression_attribute_names("#region", "region")
            .expression_attribute_values(":counter", s(ACTIVITY))
            .expression_attribute_values(":sort", s(format!("{}/{}", delta.account_id, delta.region)))
            .expression_attribute_values(":account", s(&delta.account_id))
            .expression_attribute_values(":region", s(&delta.region))
            .expression_attribute_values(":files", n(delta.files))
            .expression_attribute_values(":failed", n(delta.failed))
            .expression_attribute_values(":events", n(delta.events))
            .expression_attribute_values(":one", n(1));
        if let Some(t) = last_file_time.max(delta.last_file_time) {
            sets.push("last_file_time = :file_time");
            update = update.expression_attribute_values(":file_time", n(t));
        }
        if let Some(t) = last_processed_at.max(delta.last_processed_at) {
            sets.push("last_processed_at = :processed_at");
            update = update.expression_attribute_values(":processed_at", n(t));
        }
        update = update.update_expression(format!("SET {} ADD files :files, failed :failed, events :events, version :one", sets.join(", ")));
        update = match version {
            Some(v) => update.condition_expression("version = :version").expression_attribute_values(":version", n(v)),
            None => update.condition_expression("attribute_not_exists(version)"),
        };
        update.build().map_err(|e| build_error(&what, e))
    }

    /// Takes the lease on a file for `lease_ms` from `now`, unless it is
    /// recorded final with this size and modification time ([`Claim::Done`])
    /// or another owner's lease is still running ([`Claim::Busy`]). Claiming
    /// again a file one already holds extends the lease. Only the lease
    /// attributes are written: a recorded entry is left as it is.
    pub async fn claim(&self, key: &str, size: u64, modified: EpochMillis, owner: &str, lease_ms: i64, now: EpochMillis) -> AwsResult<Claim> {
        let what = format!("{}, object {key}", op("UpdateItem", &self.table));
        let until = now.saturating_add(lease_ms.max(0));
        let mut backoff = Backoff::new(CLAIM_TRIES);
        loop {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(KEY, s(key))
                .update_expression("SET lease_owner = :owner, lease_until = :until")
                .condition_expression(
                    "(attribute_not_exists(lease_until) OR lease_until <= :now OR lease_owner = :owner) \
                     AND (attribute_not_exists(#status) OR #status = :failed OR #size <> :size OR modified <> :modified)",
                )
                .expression_attribute_names("#status", "status")
                .expression_attribute_names("#size", "size")
                .expression_attribute_values(":owner", s(owner))
                .expression_attribute_values(":until", n(until))
                .expression_attribute_values(":now", n(now))
                .expression_attribute_values(":failed", s(FileStatus::Failed.as_str()))
                .expression_attribute_values(":size", n(size))
                .expression_attribute_values(":modified", n(modified))
                .send()
                .await;
            match result {
                Ok(_) => return Ok(Claim::Claimed),
                Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => {
                    if let Some(claim) = self.why_not_claimed(key, size, modified, owner, now).await? {
                        return Ok(claim);
                    }
                    // The item changed between the write and the read: try again.
                }
                Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::TransactionConflictException(_))) => {}
                Err(e) => return Err(classify(&what, e)),
            }
            if !backoff.wait().await {
                return Err(PortError::backend(what, format!("the item kept changing: gave up after {} tries", backoff.tries()), true));
            }
        }
    }

    /// Why a claim's condition failed, read back: Done or Busy; None when
    /// neither holds any more.
    async fn why_not_claimed(&self, key: &str, size: u64, modified: EpochMillis, owner: &str, now: EpochMillis) -> AwsResult<Option<Claim>> {
        let what = format!("{}, object {key}", op("GetItem", &self.table));
        let out = self.client.get_item().table_name(&self.table).key(KEY, s(key)).consistent_read(true).send().await.map_err(|e| classify(&what, e))?;
        let Some(item) = out.item else { return Ok(None) };
        if let Some(entry) = self.entry(&item)? {
            if entry.status.is_final() && entry.size == size && entry.modified == modified {
                return Ok(Some(Claim::Done(entry)));
            }
        }
        let read = ItemReader::new(&item, self.place(key));
        match (read.opt_s("lease_owner")?, read.opt_n::<EpochMillis>("lease_until")?) {
            (Some(holder), Some(until)) if until > now && holder != owner => Ok(Some(Claim::Busy { owner: holder.to_owned(), until })),
            _ => Ok(None),
        }
    }

    /// Drops the lease on a file if `owner` still holds it (a claim's item
    /// with nothing recorded goes away with it).
    pub async fn release(&self, key: &str, owner: &str) -> AwsResult<()> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .condition_expression("attribute_not_exists(#status) AND lease_owner = :owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match deleted {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.as_service_error(), Some(DeleteItemError::ConditionalCheckFailedException(_))) => {}
            Err(e) => return Err(classify(&format!("{}, object {key}", op("DeleteItem", &self.table)), e)),
        }
        let updated = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(key))
            .update_expression("REMOVE lease_owner, lease_until")
            .condition_expression("lease_owner = :owner")
            .expression_attribute_values(":owner", s(owner))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.as_service_error(), Some(UpdateItemError::ConditionalCheckFailedException(_))) => Ok(()),
            Err(e) => Err(classify(&format!("{}, object {key}", op("UpdateItem", &self.table)), e)),
        }
    }
}

fn activity_delta<'a>(activity: &'a mut BTreeMap<String, ActivityDelta>, account: &str, region: &str) -> &'a mut ActivityDelta {
    activity.entry(activity_key(account, region)).or_insert_with(|| ActivityDelta { account_id: account.into(), region: region.into(), ..Default::default() })
}

#[async_trait]
impl Checkpoints for DynamoLedger {
    async fn lookup(&self, keys: &[String]) -> Result<HashMap<String, LedgerEntry>, PortError> {
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let mut found = HashMap::new();
        for item in self.read_items(keys).await?.values() {
            if let Some(entry) = self.entry(item)? {
                found.insert(entry.key.clone(), entry);
            }
        }
        Ok(found)
    }

    async fn record(&self, outcomes: Arc<[FileOutcome]>, at: EpochMillis) -> Result<(), PortError> {
        for chunk in plan(&outcomes) {
            self.record_chunk(&chunk, at).await?;
        }
        Ok(())
    }

    async fn summary(&self) -> Result<LedgerSummary, PortError> {
        let mut summary = LedgerSummary::default();
        for (key, item) in self.read_items((0..SUMMARY_SHARDS).map(summary_key).collect()).await? {
            let read = ItemReader::new(&item, self.place(&key));
            for status in [FileStatus::Done, FileStatus::Partial, FileStatus::Empty, FileStatus::Failed, FileStatus::Digest] {
                let files: i64 = read.opt_n(&format!("files_{}", status.as_str()))?.unwrap_or(0);
                *summary.by_status.entry(status).or_default() += u64::try_from(files).unwrap_or(0);
            }
            summary.events += u64::try_from(read.opt_n::<i64>("events")?.unwrap_or(0)).unwrap_or(0);
            summary.rejected_records += u64::try_from(read.opt_n::<i64>("rejected_records")?.unwrap_or(0)).unwrap_or(0);
        }
        summary.by_status.retain(|_, count| *count > 0);
        Ok(summary)
    }

    async fn problems(&self, limit: usize) -> Result<Vec<LedgerEntry>, PortError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let what = format!("{} index {PROBLEMS}", op("Query", &self.table));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(PROBLEMS)
            .key_condition_expression("#problem = :problem")
            .expression_attribute_names("#problem", PROBLEM)
            .expression_attribute_values(":problem", s(PROBLEM))
            .scan_index_forward(false);
        // Newest first; past `limit`, read on while the time ties with the last kept.
        let processed_at = |item: &Item| item.get("processed_at").and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok());
        let items = query_until(query, &what, |found| found.len() > limit && processed_at(&found[limit]) < processed_at(&found[limit - 1])).await?;
        let mut entries = Vec::with_capacity(items.len());
        for item in &items {
            entries.extend(self.entry(item)?);
        }
        entries.retain(|e| is_problem(e.status));
        entries.sort_by(|a, b| b.processed_at.cmp(&a.processed_at).then_with(|| a.key.cmp(&b.key)));
        entries.truncate(limit);
        Ok(entries)
    }

    async fn rejected(&self, key: &str) -> Result<Vec<RejectedRecord>, PortError> {
        let what = format!("{}, object {key}", op("GetItem", &self.table));
        let out = self.client.get_item().table_name(&self.table).key(KEY, s(key)).consistent_read(true).send().await.map_err(|e| classify(&what, e))?;
        let Some(item) = out.item else { return Ok(Vec::new()) };
        let place = self.place(key);
        let read = ItemReader::new(&item, place.clone());
        let mut records = Vec::new();
        for (i, value) in read.opt_list("rejects")?.iter().enumerate() {
            let record = value.as_m().map_err(|_| read.bad("rejects", format!("record {i} is not a map")))?;
            let r = ItemReader::new(record, format!("{place}, rejected record {i}"));
            records.push(RejectedRecord {
                error: RecordError { index: r.n("index")?, event_id: r.opt_s("event_id")?.map(str::to_owned), reason: r.s("reason")?.to_owned() },
                raw: r.s("raw")?.to_owned(),
            });
        }
        Ok(records)
    }

    async fn activity(&self) -> Result<Vec<FileActivity>, PortError> {
        let what = format!("{} index {COUNTERS}", op("Query", &self.table));
        let query = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(COUNTERS)
            .key_condition_expression("#counter = :activity")
            .expression_attribute_names("#counter", "counter")
            .expression_attribute_values(":activity", s(ACTIVITY));
        let mut activity = Vec::new();
        for item in query_all(query, &what).await? {
            let key = ItemReader::new(&item, format!("dynamodb table {}", self.table)).s(KEY)?.to_owned();
            let read = ItemReader::new(&item, self.place(&key));
            let count = |name: &str| -> AwsResult<u64> { Ok(u64::try_from(read.opt_n::<i64>(name)?.unwrap_or(0)).unwrap_or(0)) };
            let files = count("files")?;
            if files == 0 {
                continue;
            }
            activity.push(FileActivity {
                account_id: read.s("account_id")?.to_owned(),
                region: read.s("region")?.to_owned(),
                last_file_time: read.opt_n("last_file_time")?.unwrap_or(0),
                last_processed_at: read.opt_n("last_processed_at")?.unwrap_or(0),
                files,
                failed: count("failed")?,
                events: count("events")?,
            });
        }
        activity.sort_by(|a, b| (&a.account_id, &a.region).cmp(&(&b.account_id, &b.region)));
        Ok(activity)
    }

    async fn completeness(&self) -> Result<Vec<trailwatch_core::integrity::Completeness>, PortError> {
        match &self.integrity.0 {
            Some(store) => store.completeness().await,
            None => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::event::RecordError;

    fn outcome(key: &str, rejected: usize, raw: usize) -> FileOutcome {
        FileOutcome {
            key: key.into(),
            kind: ObjectKind::Log,
            account_id: "111122223333".into(),
            region: "us-east-1".into(),
            size: 1,
            modified: 2,
            status: FileStatus::Partial,
            events: 3,
            bytes: 4,
            rejected: (0..rejected)
                .map(|i| RejectedRecord { error: RecordError { index: i, event_id: None, reason: "bad".into() }, raw: "x".repeat(raw) })
                .collect(),
            error: None,
        }
    }

    #[test]
    fn a_call_is_one_outcome_per_key_in_bounded_chunks() {
        let mut outcomes: Vec<FileOutcome> = (0..70).map(|i| outcome(&format!("k{i}"), 0, 0)).collect();
        outcomes.push(FileOutcome { events: 99, ..outcome("k3", 0, 0) });
        let chunks = plan(&outcomes);
        // 70 keys (k3 twice): chunks of CHUNK_FILES, the rest in the last.
        let mut want = vec![CHUNK_FILES; 70 / CHUNK_FILES];
        if 70 % CHUNK_FILES != 0 {
            want.push(70 % CHUNK_FILES);
        }
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), want);
        let k3 = chunks.iter().flatten().find(|p| p.outcome.key == "k3").expect("k3 planned");
        assert_eq!((k3.outcome.events, k3.times), (99, 2), "the last outcome of a key wins and each counts an attempt");

        let big: Vec<FileOutcome> = (0..20).map(|i| outcome(&format!("big{i}"), 100, 2000)).collect();
        let chunks = plan(&big);
        assert!(
            chunks.len() > 1 && chunks.iter().all(|c| c.len() < 20),
            "large rejects split chunks by size: {:?}",
            chunks.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rejects_are_kept_up_to_the_bounds() {
        assert_eq!(rejects_list(&outcome("k", 150, 10).rejected).len(), REJECTS_KEPT);
        assert_eq!(rejects_list(&outcome("k", 3, 10).rejected).len(), 3);
        let (kept, bytes) = rejects_kept(&outcome("k", 10, 100_000).rejected);
        assert_eq!(kept, 2, "two records of 100 kB fit in 256 KiB, a third does not");
        assert!(bytes <= REJECTS_KEPT_BYTES);
    }

    #[test]
    fn errors_are_cut_on_a_character_boundary() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("short", 100), "short");
    }
}
