//! Digest verification state in DynamoDB: the [`IntegrityStore`] of AWS mode.
//!
//! One table, partition key `pk` (S), sort key `sk` (S). Every call reads
//! what one digest, one account and region's open problems, or the summaries
//! hold, so its cost does not grow with the age of the trail. Items:
//!
//! | `pk` | `sk` | what |
//! | --- | --- | --- |
//! | `D#<account>#<region>` | `<start>#<digest key>` | a checked digest ([`DigestRecord`]); `<start>` is [`time_key`], so the digests sort by start time and `digest_neighbours` is two Queries of Limit 1 |
//! | `V#<account>#<region>` | as its `D#` item | the same, only while the digest is verified (signature `valid` or `not-checked`, chain held): the newest is the last verified |
//! | `G#<digest key>` | `digest` | where the digest's `D#` item is (`account_id`, `region`, `dsk`): a digest checked again may start elsewhere |
//! | `L#<digest key>` | `<log file key>` | a log file the digest lists ([`ListedFile`]), with `seen` (N, 1 when the ledger had recorded it at the last check) |
//! | `P#<account>#<region>` | `<log file key>` | a copy of a listed file while it is missing or mismatched: `problem_files` reads only these |
//! | `U#<account>#<region>` | `<log file key>` | a copy of a listed file while the ledger has not recorded it |
//! | `S` | `<account>#<region>` | the summary: `digests`, `files_listed`, `files_seen`, `files_verified`, `files_missing`, `files_mismatched`, the last verified digest (`lv_sk`, `last_verified_digest`, `last_verified_end`), `unseen_cursor` and `version` |
//! | `X#<account>#<region>` | `<kind>#<subject>` | an open finding, with `open` = `open` and `open_sort` = `<account>#<region>#<kind>#<subject>` for the sparse index [`OPEN_FINDINGS`] (ALL) that lists every open finding |
//! | `C#<account>#<region>` | `<kind>#<subject>` | the finding as it was when it last cleared, with `cleared_at` |
//!
//! # Counters
//! Every write of an account and region's `D#`, `V#`, `G#`, `L#`, `P#` and `U#`
//! items is a TransactWriteItems that also ADDs what it changes to the
//! summary item, conditional on the summary's `version` read before (and
//! adding 1 to it): the counters always match the items, and writers of one
//! account and region take turns (one that lost recomputes from a fresh read).
//! A digest listing more files than one transaction carries
//! ([`FILES_PER_TRANSACTION`]) is written in several, the digest's own items
//! in the last: each keeps the counters right, and a check interrupted
//! between them is completed by the next `record_digest` of the digest.
//!
//! `files_seen` is settled when a digest is recorded and when files are
//! checked again (a BatchGetItem of their keys in the ledger, key and status
//! only). A file the collector had not recorded then keeps a `U#` item; each
//! `record_digest` of its account and region looks again for up to
//! [`UNSEEN_RECHECKED`] of them, going round them from `unseen_cursor`, so a
//! file recorded late counts as seen after a few more digests.
//!
//! Findings are settled one item at a time: an UpdateItem that returns the
//! item as it was tells whether a finding was open before, so of two checks
//! finding it at once only one reports it opened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use trailwatch_core::integrity::{Completeness, DigestRecord, FileState, Finding, FindingKind, IntegrityStore, ListedFile, Neighbours};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::{batch_get, batch_get_projected, build_error, n, op, query_all, s, Backoff, Item, ItemReader};
use crate::error::{classify, AwsResult};

mod findings;
mod items;

pub use items::time_key;
use items::{digest_sk, finding_sk, key, place_key, verified, Delta};

/// The sparse index of open findings.
pub const OPEN_FINDINGS: &str = "open_findings";
/// The most listed files one transaction writes (each is up to three actions).
pub const FILES_PER_TRANSACTION: usize = 12;
/// How many unseen files of an account and region a `record_digest` looks for in the ledger again.
pub const UNSEEN_RECHECKED: usize = 100;
/// How many times a write is computed again after another writer changed the summary.
const WRITE_TRIES: u32 = 10;

const PK: &str = "pk";
const SK: &str = "sk";
const SUMMARIES: &str = "S";
const DIGEST_POINTER: &str = "digest";
const OPEN: &str = "open";
const OPEN_SORT: &str = "open_sort";

/// The last verified digest a summary names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LastVerified {
    sk: String,
    location: String,
    end: EpochMillis,
}

/// An account and region's summary as read: its version and last verified digest.
#[derive(Debug, Default)]
struct Summary {
    version: Option<i64>,
    last_verified: Option<LastVerified>,
    /// Where the next look at unseen files starts (after this sort key).
    unseen_cursor: Option<String>,
}

/// One listed file's writes and what they change.
struct FileWrite {
    actions: Vec<TransactWriteItem>,
    delta: Delta,
}

/// The writes of one account and region, made in transactions with its summary.
struct Batch {
    account_id: String,
    region: String,
    files: Vec<FileWrite>,
    /// Written with the last files (the digest's own items).
    tail: Vec<TransactWriteItem>,
    tail_delta: Delta,
    /// Some: the summary's last verified digest becomes this (None: none).
    last_verified: Option<Option<LastVerified>>,
    /// Some: where the next look at unseen files starts (empty: from the first).
    unseen_cursor: Option<String>,
}

/// How a transaction ended.
enum Committed {
    Done,
    /// Another writer changed the summary: read again and recompute.
    Contended(Vec<String>),
}

/// Digest verification state in a DynamoDB table (see the module doc). It
/// reads the ledger table to tell which listed files the pipeline has recorded.
#[derive(Debug, Clone)]
pub struct DynamoIntegrityStore {
    client: Client,
    table: String,
    ledger_table: String,
}

impl DynamoIntegrityStore {
    pub fn new(client: Client, table: impl Into<String>, ledger_table: impl Into<String>) -> Self {
        DynamoIntegrityStore { client, table: table.into(), ledger_table: ledger_table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn place(&self, pk: &str, sk: &str) -> String {
        format!("dynamodb table {}, item {pk} / {sk}", self.table)
    }

    fn reader<'a>(&self, item: &'a Item) -> AwsResult<ItemReader<'a>> {
        let at = ItemReader::new(item, format!("dynamodb table {}", self.table));
        Ok(ItemReader::new(item, self.place(at.s(PK)?, at.s(SK)?)))
    }

    async fn get(&self, key: Item) -> AwsResult<Option<Item>> {
        let what = op("GetItem", &self.table);
        let out = self.client.get_item().table_name(&self.table).set_key(Some(key)).consistent_read(true).send().await.map_err(|e| classify(&what, e))?;
        Ok(out.item)
    }

    /// Every item of a partition (consistent).
    async fn partition(&self, pk: &str) -> AwsResult<Vec<Item>> {
        let query =
            self.client.query().table_name(&self.table).key_condition_expression("pk = :pk").expression_attribute_values(":pk", s(pk)).consistent_read(true);
        query_all(query, &format!("{}, partition {pk}", op("Query", &self.table))).await
    }

    /// The first `limit` items of a partition (one page, consistent), from
    /// the last when `backwards`; `bound`: only those whose sort key is on
    /// one side of it (`sk <op> :bound`).
    async fn first(&self, pk: &str, bound: Option<(&str, &str)>, backwards: bool, limit: usize) -> AwsResult<Vec<Item>> {
        let what = format!("{}, partition {pk}", op("Query", &self.table));
        let mut query = self
            .client
            .query()
            .table_name(&self.table)
            .expression_attribute_values(":pk", s(pk))
            .scan_index_forward(!backwards)
            .consistent_read(true)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX));
        query = match bound {
            Some((operator, value)) => {
                query.key_condition_expression(format!("pk = :pk AND sk {operator} :bound")).expression_attribute_values(":bound", s(value))
            }
            None => query.key_condition_expression("pk = :pk"),
        };
        let out = query.send().await.map_err(|e| classify(&what, e))?;
        Ok(out.items.unwrap_or_default())
    }

    async fn summary(&self, account_id: &str, region: &str) -> AwsResult<Summary> {
        let Some(item) = self.get(key(SUMMARIES.to_owned(), format!("{account_id}#{region}"))).await? else {
            return Ok(Summary::default());
        };
        let read = self.reader(&item)?;
        let last_verified = match read.opt_s("lv_sk")? {
            Some(sk) => Some(LastVerified { sk: sk.to_owned(), location: read.s("last_verified_digest")?.to_owned(), end: read.n("last_verified_end")? }),
            None => None,
        };
        Ok(Summary { version: read.opt_n("version")?, last_verified, unseen_cursor: read.opt_s("unseen_cursor")?.map(str::to_owned) })
    }

    /// Which of these log files the ledger has recorded (key and status read only).
    async fn seen(&self, keys: impl IntoIterator<Item = String>) -> AwsResult<HashSet<String>> {
        let keys: HashSet<String> = keys.into_iter().collect();
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let requests = keys.into_iter().map(|k| Item::from([("object_key".to_owned(), s(k))])).collect();
        let names = HashMap::from([("#status".to_owned(), "status".to_owned())]);
        let items = batch_get_projected(&self.client, &self.ledger_table, requests, false, Some(("object_key, #status", names))).await?;
        let mut seen = HashSet::new();
        for item in &items {
            let read = ItemReader::new(item, format!("dynamodb table {}", self.ledger_table));
            // A collector's claim of a file not recorded yet holds only the lease.
            if read.opt_s("status")?.is_some() {
                seen.insert(read.s("object_key")?.to_owned());
            }
        }
        Ok(seen)
    }

    /// The digest recorded under `key`, as kept; None when it was never recorded.
    pub async fn digest(&self, digest_key: &str) -> Result<Option<DigestRecord>, PortError> {
        let Some(pointer) = self.get(key(format!("G#{digest_key}"), DIGEST_POINTER)).await? else { return Ok(None) };
        let read = self.reader(&pointer)?;
        let pk = place_key("D", read.s("account_id")?, read.s("region")?);
        match self.get(key(pk, read.s("dsk")?)).await? {
            Some(item) => Ok(Some(self.digest_record(&item)?)),
            None => Ok(None),
        }
    }

    /// The log files a digest lists, by key.
    pub async fn files(&self, digest_key: &str) -> Result<Vec<ListedFile>, PortError> {
        self.partition(&format!("L#{digest_key}")).await?.iter().map(|item| Ok(self.listed_file(item)?.0)).collect()
    }

    fn put(&self, item: Item) -> AwsResult<TransactWriteItem> {
        let put = Put::builder().table_name(&self.table).set_item(Some(item)).build().map_err(|e| build_error(&op("TransactWriteItems", &self.table), e))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(&self, key: Item) -> AwsResult<TransactWriteItem> {
        let delete =
            Delete::builder().table_name(&self.table).set_key(Some(key)).build().map_err(|e| build_error(&op("TransactWriteItems", &self.table), e))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    /// The writes of one listed file replacing `old` (its item as read, if any).
    fn file_write(&self, f: &ListedFile, seen: bool, old: Option<&(ListedFile, bool)>) -> AwsResult<FileWrite> {
        let mut delta = Delta::default();
        delta.file(f.state, seen, 1);
        if let Some((old, old_seen)) = old {
            delta.file(old.state, *old_seen, -1);
        }
        let mut actions = vec![self.put(self.file_item(format!("L#{}", f.digest_key), f, seen))?];
        let problems = place_key("P", &f.account_id, &f.region);
        if f.state != FileState::Verified {
            actions.push(self.put(self.file_item(problems, f, seen))?);
        } else if old.is_some_and(|(o, _)| o.state != FileState::Verified) {
            actions.push(self.delete(key(problems, &f.key))?);
        }
        let unseen = place_key("U", &f.account_id, &f.region);
        if !seen {
            actions.push(self.put(self.file_item(unseen, f, false))?);
        } else if old.is_some_and(|(_, old_seen)| !old_seen) {
            actions.push(self.delete(key(unseen, &f.key))?);
        }
        Ok(FileWrite { actions, delta })
    }

    /// The writes removing a listed file a digest no longer lists.
    fn file_removal(&self, old: &ListedFile, old_seen: bool) -> AwsResult<FileWrite> {
        let mut delta = Delta::default();
        delta.file(old.state, old_seen, -1);
        let mut actions = vec![self.delete(key(format!("L#{}", old.digest_key), &old.key))?];
        if old.state != FileState::Verified {
            actions.push(self.delete(key(place_key("P", &old.account_id, &old.region), &old.key))?);
        }
        if !old_seen {
            actions.push(self.delete(key(place_key("U", &old.account_id, &old.region), &old.key))?);
        }
        Ok(FileWrite { actions, delta })
    }

    /// Looks again, in the ledger, for up to [`UNSEEN_RECHECKED`] files of an
    /// account and region it had not recorded when they were checked, from
    /// `cursor` on (round after round, across calls), leaving out `skip`:
    /// the writes of those it has recorded by now, and where the next look starts.
    async fn recheck_unseen(&self, account_id: &str, region: &str, cursor: Option<&str>, skip: &HashSet<&str>) -> AwsResult<(Vec<FileWrite>, String)> {
        let pk = place_key("U", account_id, region);
        let items = self.first(&pk, cursor.filter(|c| !c.is_empty()).map(|after| (">", after)), false, UNSEEN_RECHECKED).await?;
        let mut next = String::new();
        let mut unseen = Vec::with_capacity(items.len());
        for item in &items {
            let (file, _) = self.listed_file(item)?;
            next.clone_from(&file.key);
            if !skip.contains(file.key.as_str()) {
                unseen.push(file);
            }
        }
        if items.len() < UNSEEN_RECHECKED {
            next.clear();
        }
        let seen = self.seen(unseen.iter().map(|f| f.key.clone())).await?;
        let mut writes = Vec::new();
        for file in unseen.into_iter().filter(|f| seen.contains(&f.key)) {
            let actions = vec![self.put(self.file_item(format!("L#{}", file.digest_key), &file, true))?, self.delete(key(pk.clone(), &file.key))?];
            writes.push(FileWrite { actions, delta: Delta { seen: 1, ..Delta::default() } });
        }
        Ok((writes, next))
    }

    /// The summary's update: ADD the deltas and 1 to `version`, conditional on the version read.
    /// The last transaction of a batch also sets the last verified digest and the unseen cursor.
    fn summary_update(&self, batch: &Batch, version: Option<i64>, delta: Delta, last: bool) -> AwsResult<TransactWriteItem> {
        let what = op("TransactWriteItems", &self.table);
        let mut update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(SUMMARIES.to_owned(), format!("{}#{}", batch.account_id, batch.region))))
            .expression_attribute_names("#region", "region")
            .expression_attribute_values(":account", s(&batch.account_id))
            .expression_attribute_values(":region", s(&batch.region))
            .expression_attribute_values(":one", n(1));
        let mut sets = vec!["account_id = :account".to_owned(), "#region = :region".to_owned()];
        let mut adds = vec!["version :one".to_owned()];
        let mut removes = Vec::new();
        for (name, value) in delta.attributes() {
            adds.push(format!("{name} :{name}"));
            update = update.expression_attribute_values(format!(":{name}"), n(value));
        }
        match batch.last_verified.as_ref().filter(|_| last) {
            Some(Some(lv)) => {
                sets.extend(["lv_sk = :lv_sk", "last_verified_digest = :lv_digest", "last_verified_end = :lv_end"].map(str::to_owned));
                update = update
                    .expression_attribute_values(":lv_sk", s(&lv.sk))
                    .expression_attribute_values(":lv_digest", s(&lv.location))
                    .expression_attribute_values(":lv_end", n(lv.end));
            }
            Some(None) => removes.extend(["lv_sk", "last_verified_digest", "last_verified_end"]),
            None => {}
        }
        if let Some(cursor) = batch.unseen_cursor.as_ref().filter(|_| last) {
            if cursor.is_empty() {
                removes.push("unseen_cursor");
            } else {
                sets.push("unseen_cursor = :cursor".to_owned());
                update = update.expression_attribute_values(":cursor", s(cursor));
            }
        }
        let mut expression = format!("SET {} ADD {}", sets.join(", "), adds.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        update = update.update_expression(expression);
        update = match version {
            Some(v) => update.condition_expression("version = :version").expression_attribute_values(":version", n(v)),
            None => update.condition_expression("attribute_not_exists(version)"),
        };
        Ok(TransactWriteItem::builder().update(update.build().map_err(|e| build_error(&what, e))?).build())
    }

    /// Writes a batch in transactions of [`FILES_PER_TRANSACTION`] files,
    /// each with the summary's update; stops at the first that another
    /// writer's change of the summary cancelled.
    async fn commit(&self, batch: Batch, mut version: Option<i64>) -> AwsResult<Committed> {
        let what = format!("{}, summary {}#{}", op("TransactWriteItems", &self.table), batch.account_id, batch.region);
        let mut chunks: Vec<&[FileWrite]> = batch.files.chunks(FILES_PER_TRANSACTION).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut delta = Delta::default();
            let mut actions = Vec::new();
            for write in chunk {
                delta.add(write.delta);
                actions.extend(write.actions.iter().cloned());
            }
            if i == last {
                delta.add(batch.tail_delta);
                actions.extend(batch.tail.iter().cloned());
            }
            actions.push(self.summary_update(&batch, version, delta, i == last)?);
            let error = match self.client.transact_write_items().set_transact_items(Some(actions)).send().await {
                Ok(_) => {
                    version = Some(version.unwrap_or(0) + 1);
                    continue;
                }
                Err(e) => e,
            };
            let reasons: Vec<String> = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(c)) => {
                    c.cancellation_reasons().iter().filter_map(|r| r.code()).filter(|c| *c != "None").map(str::to_owned).collect()
                }
                _ => return Err(classify(&what, error)),
            };
            if !reasons.is_empty() && reasons.iter().all(|r| matches!(r.as_str(), "ConditionalCheckFailed" | "TransactionConflict" | "ThrottlingError")) {
                return Ok(Committed::Contended(reasons));
            }
            return Err(classify(&what, error));
        }
        Ok(Committed::Done)
    }

    /// Runs `attempt` (read, compute, commit) until it is not contended.
    async fn write_retrying<F, Fut>(&self, what: String, mut attempt: F) -> AwsResult<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = AwsResult<Committed>>,
    {
        let mut backoff = Backoff::new(WRITE_TRIES);
        loop {
            match attempt().await? {
                Committed::Done => return Ok(()),
                Committed::Contended(reasons) => {
                    tracing::debug!(table = %self.table, ?reasons, "dynamodb.integrity.write_contended");
                    if !backoff.wait().await {
                        return Err(PortError::backend(
                            what,
                            format!("other writers kept changing the summary ({}): gave up after {} tries", reasons.join(", "), backoff.tries()),
                            true,
                        ));
                    }
                }
            }
        }
    }

    async fn try_record(&self, d: &DigestRecord, files: &[ListedFile]) -> AwsResult<Committed> {
        let summary = self.summary(&d.account_id, &d.region).await?;
        let pointer_key = key(format!("G#{}", d.key), DIGEST_POINTER);
        let old_dsk = match self.get(pointer_key.clone()).await? {
            Some(item) => Some(self.reader(&item)?.s("dsk")?.to_owned()),
            None => None,
        };
        let mut old: HashMap<String, (ListedFile, bool)> = HashMap::new();
        for item in self.partition(&format!("L#{}", d.key)).await? {
            let (file, seen) = self.listed_file(&item)?;
            old.insert(file.key.clone(), (file, seen));
        }
        // One per key, the last listed wins.
        let mut listed: BTreeMap<&str, &ListedFile> = BTreeMap::new();
        for f in files {
            listed.insert(&f.key, f);
        }
        let seen = self.seen(listed.keys().map(|k| (*k).to_owned())).await?;
        let skip: HashSet<&str> = listed.keys().copied().chain(old.keys().map(String::as_str)).collect();
        let (mut writes, cursor) = self.recheck_unseen(&d.account_id, &d.region, summary.unseen_cursor.as_deref(), &skip).await?;
        for (k, f) in &listed {
            let f = ListedFile { digest_key: d.key.clone(), ..(*f).clone() };
            writes.push(self.file_write(&f, seen.contains(*k), old.get(*k))?);
        }
        for (k, (file, was_seen)) in &old {
            if !listed.contains_key(k.as_str()) {
                writes.push(self.file_removal(file, *was_seen)?);
            }
        }

        let (digests, verifieds) = (place_key("D", &d.account_id, &d.region), place_key("V", &d.account_id, &d.region));
        let new_dsk = digest_sk(d);
        let mut tail = vec![self.put(self.digest_item(d, digests.clone()))?];
        if verified(d) {
            tail.push(self.put(self.digest_item(d, verifieds.clone()))?);
        } else {
            tail.push(self.delete(key(verifieds.clone(), &new_dsk))?);
        }
        if let Some(old_dsk) = old_dsk.as_ref().filter(|o| **o != new_dsk) {
            tail.push(self.delete(key(digests, old_dsk))?);
            tail.push(self.delete(key(verifieds.clone(), old_dsk))?);
        }
        let mut pointer = pointer_key;
        pointer.extend([("account_id".to_owned(), s(&d.account_id)), ("region".to_owned(), s(&d.region)), ("dsk".to_owned(), s(&new_dsk))]);
        tail.push(self.put(pointer)?);

        // The newest verified digest, this one as it is now included.
        let mine = verified(d).then(|| LastVerified { sk: new_dsk.clone(), location: d.location.clone(), end: d.end });
        let was_mine = |lv: &LastVerified| Some(&lv.sk) == old_dsk.as_ref() || lv.sk == new_dsk;
        let others = match &summary.last_verified {
            Some(lv) if was_mine(lv) => {
                // The last verified was this digest as it was: the newest of the others.
                let mut best = None;
                for item in self.first(&verifieds, None, true, 2).await? {
                    let span = self.span(&item)?;
                    let sk = self.reader(&item)?.s(SK)?.to_owned();
                    if Some(&sk) != old_dsk.as_ref() && sk != new_dsk {
                        best = Some(LastVerified { sk, location: span.location, end: span.end });
                        break;
                    }
                }
                best
            }
            other => other.clone(),
        };
        let newest = match (others, mine) {
            (Some(a), Some(b)) => Some(if b.sk > a.sk { b } else { a }),
            (a, b) => a.or(b),
        };
        let last_verified = (newest != summary.last_verified).then_some(newest);
        let tail_delta = Delta { digests: i64::from(old_dsk.is_none()), ..Delta::default() };
        let batch =
            Batch { account_id: d.account_id.clone(), region: d.region.clone(), files: writes, tail, tail_delta, last_verified, unseen_cursor: Some(cursor) };
        self.commit(batch, summary.version).await
    }

    async fn try_update(&self, account_id: &str, region: &str, files: &[&ListedFile]) -> AwsResult<Committed> {
        let summary = self.summary(account_id, region).await?;
        let keys = files.iter().map(|f| key(format!("L#{}", f.digest_key), &f.key)).collect();
        let mut old: HashMap<(String, String), (ListedFile, bool)> = HashMap::new();
        for item in batch_get(&self.client, &self.table, keys, true).await? {
            let (file, seen) = self.listed_file(&item)?;
            old.insert((file.digest_key.clone(), file.key.clone()), (file, seen));
        }
        let seen = self.seen(files.iter().map(|f| f.key.clone())).await?;
        let mut writes = Vec::with_capacity(files.len());
        for f in files {
            writes.push(self.file_write(f, seen.contains(&f.key), old.get(&(f.digest_key.clone(), f.key.clone())))?);
        }
        let batch = Batch {
            account_id: account_id.to_owned(),
            region: region.to_owned(),
            files: writes,
            tail: vec![],
            tail_delta: Delta::default(),
            last_verified: None,
            unseen_cursor: None,
        };
        self.commit(batch, summary.version).await
    }
}

#[async_trait]
impl IntegrityStore for DynamoIntegrityStore {
    async fn record_digest(&self, digest: DigestRecord, files: Vec<ListedFile>) -> Result<(), PortError> {
        let what = format!("{}, digest {}", op("TransactWriteItems", &self.table), digest.key);
        self.write_retrying(what, || self.try_record(&digest, &files)).await
    }

    async fn update_files(&self, files: Vec<ListedFile>) -> Result<(), PortError> {
        // One per key (a log file is listed by one digest), the last wins; by account and region.
        let mut places: BTreeMap<(&str, &str), BTreeMap<&str, &ListedFile>> = BTreeMap::new();
        for f in &files {
            places.entry((&f.account_id, &f.region)).or_default().insert(&f.key, f);
        }
        for ((account_id, region), files) in places {
            let files: Vec<&ListedFile> = files.into_values().collect();
            let what = format!("{}, files of {account_id} {region}", op("TransactWriteItems", &self.table));
            self.write_retrying(what, || self.try_update(account_id, region, &files)).await?;
        }
        Ok(())
    }

    async fn problem_files(&self, account_id: &str, region: &str) -> Result<Vec<ListedFile>, PortError> {
        let mut files: Vec<ListedFile> = Vec::new();
        for item in self.partition(&place_key("P", account_id, region)).await? {
            files.push(self.listed_file(&item)?.0);
        }
        Ok(files)
    }

    async fn digest_neighbours(&self, account_id: &str, region: &str, start: EpochMillis) -> Result<Neighbours, PortError> {
        let pk = place_key("D", account_id, region);
        // `<start>#…` sorts after `<start>`, and before `<start + 1>`.
        let before = self.first(&pk, Some(("<", &time_key(start))), true, 1).await?;
        let after = self.first(&pk, Some((">=", &time_key(start.saturating_add(1)))), false, 1).await?;
        let span = |items: Vec<Item>| items.first().map(|i| self.span(i)).transpose();
        Ok(Neighbours { before: span(before)?, after: span(after)? })
    }

    async fn reconcile(
        &self,
        account_id: &str,
        region: &str,
        checked: Vec<(FindingKind, String)>,
        found: Vec<Finding>,
        now: EpochMillis,
    ) -> Result<Vec<Finding>, PortError> {
        let still: HashSet<(FindingKind, &str)> = found.iter().map(|f| (f.kind, f.subject.as_str())).collect();
        let pk = place_key("X", account_id, region);
        let mut clearing: Vec<String> =
            checked.iter().filter(|(k, subject)| !still.contains(&(*k, subject.as_str()))).map(|(k, sj)| finding_sk(*k, sj)).collect();
        clearing.sort_unstable();
        clearing.dedup();
        // Only the open ones among those checked are written.
        let keys = clearing.iter().map(|sk| key(pk.clone(), sk)).collect();
        for item in batch_get(&self.client, &self.table, keys, true).await? {
            let sk = self.reader(&item)?.s(SK)?.to_owned();
            self.clear(pk.clone(), sk, now).await?;
        }
        let mut opened = Vec::new();
        for f in &found {
            if self.open(f, now).await? {
                opened.push(f.clone());
            }
        }
        Ok(opened)
    }

    async fn open_findings(&self, account_id: Option<&str>, region: Option<&str>) -> Result<Vec<Finding>, PortError> {
        let mut findings = match (account_id, region) {
            (Some(account), Some(region)) => {
                let mut found = Vec::new();
                for item in self.partition(&place_key("X", account, region)).await? {
                    found.push(self.finding(&item)?);
                }
                found
            }
            (account, region) => {
                let mut found = self.open_everywhere(account).await?;
                found.retain(|f| region.is_none_or(|r| f.region == r));
                found
            }
        };
        findings.sort_by(|a, b| (&a.account_id, &a.region, a.at, a.kind, &a.subject).cmp(&(&b.account_id, &b.region, b.at, b.kind, &b.subject)));
        Ok(findings)
    }

    async fn completeness(&self) -> Result<Vec<Completeness>, PortError> {
        let mut out: BTreeMap<(String, String), Completeness> = BTreeMap::new();
        for item in self.partition(SUMMARIES).await? {
            let read = self.reader(&item)?;
            let count = |name: &str| -> AwsResult<u64> { Ok(u64::try_from(read.opt_n::<i64>(name)?.unwrap_or(0)).unwrap_or(0)) };
            let c = Completeness {
                account_id: read.s("account_id")?.to_owned(),
                region: read.s("region")?.to_owned(),
                digests: count("digests")?,
                files_listed: count("files_listed")?,
                files_seen: count("files_seen")?,
                files_verified: count("files_verified")?,
                files_missing: count("files_missing")?,
                files_mismatched: count("files_mismatched")?,
                last_verified_digest: read.opt_s("last_verified_digest")?.map(str::to_owned),
                last_verified_end: read.opt_n("last_verified_end")?,
                chain_ok: true,
                open_findings: 0,
            };
            if c.digests > 0 {
                out.insert((c.account_id.clone(), c.region.clone()), c);
            }
        }
        if out.is_empty() {
            return Ok(Vec::new());
        }
        for f in self.open_everywhere(None).await? {
            if let Some(c) = out.get_mut(&(f.account_id, f.region)) {
                c.open_findings += 1;
                if matches!(f.kind, FindingKind::ChainBroken | FindingKind::DigestGap) {
                    c.chain_ok = false;
                }
            }
        }
        Ok(out.into_values().collect())
    }
}

/// The integrity store a ledger answers completeness from, if any.
#[derive(Clone, Default)]
pub struct IntegrityLink(pub Option<Arc<dyn IntegrityStore>>);

impl std::fmt::Debug for IntegrityLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "IntegrityLink(set)" } else { "IntegrityLink(none)" })
    }
}
