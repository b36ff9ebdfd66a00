//! The objects of history: the JSON Lines an append writes (one event, or
//! one late origin, a line, with the columns of the tables in
//! [`crate::athena::ddl`]), how a batch becomes objects, and the bucket
//! calls that write and list them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::io::{BufRead, Write};
use std::sync::Arc;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use trailwatch_core::event::Event;
use trailwatch_core::identity::Origin;
use trailwatch_core::ports::{OriginUpdate, PortError};
use trailwatch_core::time::EpochMillis;

use super::{invalid, is_account_id, region_partition, MAX_OBJECT_EVENTS, S3_CONCURRENCY};
use crate::athena::ddl;
use crate::error::{classify, AwsResult};

/// One event as a line of an event object: the enriched table's columns.
#[derive(Serialize, Deserialize)]
struct EventLine {
    account_id: String,
    event_id: String,
    /// Epoch milliseconds.
    event_time: EpochMillis,
    /// The record's `awsRegion` as written (the partition may say `unknown`).
    aws_region: String,
    event_source: String,
    event_name: String,
    identity_type: Option<String>,
    actor_arn: Option<String>,
    access_key_id: Option<String>,
    /// The whole [`trailwatch_core::identity::Caller`], JSON.
    actor: Option<String>,
    shared_event_id: Option<String>,
    source_ip: Option<String>,
    error_code: Option<String>,
    read_only: Option<bool>,
    origin_kind: Option<String>,
    origin_principal: Option<String>,
    origin_account: Option<String>,
    origin_confidence: Option<String>,
    /// The whole [`Origin`], JSON.
    origin: Option<String>,
    /// The record, byte for byte.
    raw: String,
    seq: i64,
    written_at: EpochMillis,
}

/// One late origin as a line of an origins object: the origin updates
/// table's columns.
#[derive(Serialize, Deserialize)]
struct OriginLine {
    account_id: String,
    event_id: String,
    event_time: EpochMillis,
    origin_kind: String,
    origin_principal: Option<String>,
    origin_account: Option<String>,
    origin_confidence: String,
    /// The whole [`Origin`], JSON.
    origin: String,
    written_at: EpochMillis,
}

/// What a stored line says: the event and its position.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    pub event: Event,
    pub seq: i64,
    pub written_at: EpochMillis,
}

/// What an origins object says of one event.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredOrigin {
    pub account_id: String,
    pub event_id: String,
    pub event_time: EpochMillis,
    pub origin: Origin,
    pub written_at: EpochMillis,
}

fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> AwsResult<String> {
    serde_json::to_string(value).map_err(|e| invalid(what, format!("cannot be written as JSON: {e}")))
}

fn gzip(lines: &[String], key: &str) -> AwsResult<Vec<u8>> {
    let fail = |e: std::io::Error| PortError::backend(key.to_owned(), format!("compressing: {e}"), false);
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::default());
    for line in lines {
        encoder.write_all(line.as_bytes()).map_err(fail)?;
        encoder.write_all(b"\n").map_err(fail)?;
    }
    encoder.finish().map_err(fail)
}

/// Each line of a gzipped JSON Lines body, parsed; `what` names the object.
fn read_lines<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> AwsResult<Vec<T>> {
    let mut found = Vec::new();
    for (n, line) in std::io::BufReader::new(GzDecoder::new(body)).lines().enumerate() {
        let line = line.map_err(|e| PortError::backend(what.to_owned(), format!("reading gzipped JSON Lines: {e}"), false))?;
        if !line.is_empty() {
            found.push(serde_json::from_str(&line).map_err(|e| PortError::backend(format!("{what}, line {}", n + 1), format!("invalid line: {e}"), false))?);
        }
    }
    Ok(found)
}

pub(super) fn parse_doc<T: serde::de::DeserializeOwned>(doc: Option<&str>, column: &str, what: &dyn Fn() -> String) -> AwsResult<Option<T>> {
    doc.map(|d| serde_json::from_str(d).map_err(|e| PortError::backend(what(), format!("column {column}: {e}"), false))).transpose()
}

/// Reads an event object's body back into its events.
pub fn read_event_object(body: &[u8], what: &str) -> AwsResult<Vec<StoredEvent>> {
    read_lines::<EventLine>(body, what)?
        .into_iter()
        .map(|l| {
            let name = || format!("{what} (eventID {})", l.event_id);
            let event = Event {
                actor: parse_doc(l.actor.as_deref(), "actor", &name)?,
                origin: parse_doc(l.origin.as_deref(), "origin", &name)?,
                account_id: l.account_id,
                event_id: l.event_id,
                event_time: l.event_time,
                event_source: l.event_source,
                event_name: l.event_name,
                region: l.aws_region,
                shared_event_id: l.shared_event_id,
                source_ip: l.source_ip,
                error_code: l.error_code,
                read_only: l.read_only,
                raw: l.raw,
            };
            Ok(StoredEvent { event, seq: l.seq, written_at: l.written_at })
        })
        .collect()
}

/// Reads an origins object's body back into its updates.
pub fn read_origins_object(body: &[u8], what: &str) -> AwsResult<Vec<StoredOrigin>> {
    read_lines::<OriginLine>(body, what)?
        .into_iter()
        .map(|l| {
            let name = || format!("{what} (eventID {})", l.event_id);
            let origin = parse_doc(Some(&l.origin), "origin", &name)?.ok_or_else(|| PortError::backend(name(), "no origin", false))?;
            Ok(StoredOrigin { account_id: l.account_id, event_id: l.event_id, event_time: l.event_time, origin, written_at: l.written_at })
        })
        .collect()
}

/// An object to write: its key, gzipped body and how many events it holds.
pub(super) struct Planned {
    pub(super) key: String,
    pub(super) body: Vec<u8>,
    pub(super) events: u64,
}

/// The SHA-256 of sorted (account, eventID) keys: an event object's name,
/// and its first byte mod 100 (the object's slot in `seq`).
fn digest_of_keys<'e>(keys: impl Iterator<Item = (&'e str, &'e str)>) -> (String, i64) {
    let mut keys: Vec<(&str, &str)> = keys.collect();
    keys.sort_unstable();
    let mut hasher = Sha256::new();
    for (account, id) in keys {
        hasher.update(account.as_bytes());
        hasher.update([0]);
        hasher.update(id.as_bytes());
        hasher.update([b'\n']);
    }
    let digest = hasher.finalize();
    (hex(&digest), i64::from(digest[0] % 100))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_an_account(what: String) -> PortError {
    invalid(what, "the account id is not 12 digits: history is partitioned by account")
}

/// An [`EventLine`] as written, borrowing the event.
#[derive(Serialize)]
struct EventLineOut<'a> {
    account_id: &'a str,
    event_id: &'a str,
    event_time: EpochMillis,
    aws_region: &'a str,
    event_source: &'a str,
    event_name: &'a str,
    identity_type: Option<&'a str>,
    actor_arn: Option<&'a str>,
    access_key_id: Option<&'a str>,
    actor: Option<String>,
    shared_event_id: Option<&'a str>,
    source_ip: Option<&'a str>,
    error_code: Option<&'a str>,
    read_only: Option<bool>,
    origin_kind: Option<&'a str>,
    origin_principal: Option<&'a str>,
    origin_account: Option<&'a str>,
    origin_confidence: Option<&'a str>,
    origin: Option<String>,
    raw: &'a str,
    seq: i64,
    written_at: EpochMillis,
}

fn event_line(e: &Event, seq: i64, written_at: EpochMillis) -> AwsResult<String> {
    let what = format!("event {} of account {}", e.event_id, e.account_id);
    let origin = e.origin.as_ref();
    let line = EventLineOut {
        account_id: &e.account_id,
        event_id: &e.event_id,
        event_time: e.event_time,
        aws_region: &e.region,
        event_source: &e.event_source,
        event_name: &e.event_name,
        identity_type: e.identity_type(),
        actor_arn: e.actor_arn(),
        access_key_id: e.access_key_id(),
        actor: e.actor.as_ref().map(|a| to_json(a, &what)).transpose()?,
        shared_event_id: e.shared_event_id.as_deref(),
        source_ip: e.source_ip.as_deref(),
        error_code: e.error_code.as_deref(),
        read_only: e.read_only,
        origin_kind: origin.map(|o| o.kind.as_str()),
        origin_principal: origin.and_then(|o| o.principal.as_deref()),
        origin_account: origin.and_then(|o| o.account_id.as_deref()),
        origin_confidence: origin.map(|o| o.confidence.as_str()),
        origin: origin.map(|o| to_json(o, &what)).transpose()?,
        raw: &e.raw,
        seq,
        written_at,
    };
    to_json(&line, &what)
}

/// The event objects of a batch: grouped by partition, each group in batch
/// order and cut at [`MAX_OBJECT_EVENTS`]. An event repeated within the
/// batch is written once; the second value counts the repeats.
pub(super) fn plan_events(prefix: &str, events: &[Event], written_at: EpochMillis) -> AwsResult<(Vec<Planned>, u64)> {
    let mut seen = HashSet::with_capacity(events.len());
    let mut repeats = 0;
    let mut groups: BTreeMap<(&str, &str, String), Vec<&Event>> = BTreeMap::new();
    for e in events {
        if !is_account_id(&e.account_id) {
            return Err(not_an_account(format!("event {} of account {:?}", e.event_id, e.account_id)));
        }
        if !seen.insert((e.account_id.as_str(), e.event_id.as_str())) {
            repeats += 1;
            continue;
        }
        groups.entry((e.account_id.as_str(), region_partition(&e.region), ddl::history_day(e.event_time))).or_default().push(e);
    }
    let mut planned = Vec::new();
    for ((account, region, date), group) in groups {
        for chunk in group.chunks(MAX_OBJECT_EVENTS) {
            let (digest, slot) = digest_of_keys(chunk.iter().map(|e| (e.account_id.as_str(), e.event_id.as_str())));
            let newest = chunk.iter().map(|e| e.event_time).max().unwrap_or_default();
            let key = format!("{prefix}/account={account}/region={region}/date={date}/{newest:013}-{}-{digest}.json.gz", chunk.len());
            let lines = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| event_line(e, written_at * 1_000_000 + slot * 10_000 + i as i64, written_at))
                .collect::<AwsResult<Vec<String>>>()?;
            let body = gzip(&lines, &key)?;
            planned.push(Planned { key, body, events: chunk.len() as u64 });
        }
    }
    Ok((planned, repeats))
}

/// The origins objects of a batch of updates, one per (account, day of the
/// event time), named by when they are written (an origin set back to an
/// earlier value is a new object, not the old one). Of several updates of
/// one event in the batch, the last is written: the table tells updates
/// apart by `written_at` only.
pub(super) fn plan_origins(prefix: &str, updates: &[OriginUpdate], written_at: EpochMillis) -> AwsResult<Vec<Planned>> {
    let mut last: HashMap<(&str, &str), &OriginUpdate> = HashMap::with_capacity(updates.len());
    for u in updates {
        if !is_account_id(&u.account_id) {
            return Err(not_an_account(format!("origin of event {} of account {:?}", u.event_id, u.account_id)));
        }
        last.insert((u.account_id.as_str(), u.event_id.as_str()), u);
    }
    let mut groups: BTreeMap<(&str, String), Vec<&OriginUpdate>> = BTreeMap::new();
    for u in updates {
        if last.get(&(u.account_id.as_str(), u.event_id.as_str())).is_some_and(|l| std::ptr::eq(*l, u)) {
            groups.entry((u.account_id.as_str(), ddl::history_day(u.event_time))).or_default().push(u);
        }
    }
    let mut planned = Vec::new();
    for ((account, date), group) in groups {
        let mut lines = Vec::with_capacity(group.len());
        let mut hasher = Sha256::new();
        for u in &group {
            let what = format!("origin of event {} of account {}", u.event_id, u.account_id);
            let o = &u.origin;
            let line = OriginLine {
                account_id: u.account_id.clone(),
                event_id: u.event_id.clone(),
                event_time: u.event_time,
                origin_kind: o.kind.as_str().to_owned(),
                origin_principal: o.principal.clone(),
                origin_account: o.account_id.clone(),
                origin_confidence: o.confidence.as_str().to_owned(),
                origin: to_json(o, &what)?,
                written_at,
            };
            let line = to_json(&line, &what)?;
            hasher.update(line.as_bytes());
            lines.push(line);
        }
        let key = format!("{prefix}-origins/account={account}/date={date}/{written_at:013}-{}.json.gz", hex(&hasher.finalize()));
        let body = gzip(&lines, &key)?;
        planned.push(Planned { key, body, events: group.len() as u64 });
    }
    Ok(planned)
}

/// Runs futures, at most [`S3_CONCURRENCY`] at once; the first error stops the rest.
pub(super) async fn bounded<T, F>(work: impl IntoIterator<Item = F>, what: &str) -> AwsResult<Vec<T>>
where
    T: Send + 'static,
    F: Future<Output = AwsResult<T>> + Send + 'static,
{
    let mut work = work.into_iter();
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    loop {
        while running.len() < S3_CONCURRENCY {
            let Some(next) = work.next() else { break };
            running.spawn(next);
        }
        let Some(finished) = running.join_next().await else { break };
        done.push(finished.map_err(|e| PortError::backend(what.to_owned(), format!("task failed: {e}"), true))??);
    }
    Ok(done)
}

/// The bucket, for tasks that outlive a borrow of the store.
#[derive(Clone)]
pub(super) struct Bucket {
    pub(super) s3: aws_sdk_s3::Client,
    pub(super) name: Arc<str>,
}

impl Bucket {
    /// Writes an object; with `only_new`, `If-None-Match: *`, and Ok(false)
    /// when the object is there already.
    async fn put(self, object: Planned, only_new: bool) -> AwsResult<(bool, u64)> {
        let location = format!("s3://{}/{}", self.name, object.key);
        let mut request = self.s3.put_object().bucket(&*self.name).key(&object.key).content_type("application/gzip").body(ByteStream::from(object.body));
        if only_new {
            request = request.if_none_match("*");
        }
        match request.send().await {
            Ok(_) => Ok((true, object.events)),
            Err(e) if e.code() == Some("PreconditionFailed") => Ok((false, object.events)),
            // Two writers of one object at once: S3 lets one win; trying again settles it.
            Err(e) if e.code() == Some("ConditionalRequestConflict") => {
                Err(PortError::backend(format!("s3:PutObject {location}"), "ConditionalRequestConflict: another write of this object is in flight", true))
            }
            Err(e) => Err(classify(&format!("s3:PutObject {location}"), e)),
        }
    }

    /// Writes objects; the events of those written and of those already there.
    pub(super) async fn put_all(&self, objects: Vec<Planned>, only_new: bool) -> AwsResult<(u64, u64)> {
        let what = format!("s3:PutObject s3://{}", self.name);
        let puts = objects.into_iter().map(|o| self.clone().put(o, only_new));
        let (mut written, mut existed) = (0, 0);
        for (new, events) in bounded(puts, &what).await? {
            if new {
                written += events;
            } else {
                existed += events;
            }
        }
        Ok((written, existed))
    }

    /// The "folders" right under `prefix` (which ends with `/`), or the
    /// object keys with `folders` false.
    pub(super) async fn list(self, prefix: String, folders: bool) -> AwsResult<Vec<String>> {
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .s3
                .list_objects_v2()
                .bucket(&*self.name)
                .prefix(&prefix)
                .delimiter("/")
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify(&format!("s3:ListObjectsV2 s3://{}/{prefix}", self.name), e))?;
            if folders {
                found.extend(out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)));
            } else {
                found.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            }
            match out.next_continuation_token {
                Some(next) if out.is_truncated == Some(true) => token = Some(next),
                _ => return Ok(found),
            }
        }
    }

    /// The newest event of one partition prefix (`…/region=<r>/`): its
    /// newest day's objects name their newest event time.
    pub(super) async fn newest_event(self, region_prefix: String) -> AwsResult<Option<EpochMillis>> {
        let days = self.clone().list(region_prefix, true).await?;
        let Some(newest_day) = days.into_iter().max() else { return Ok(None) };
        let keys = self.list(newest_day, false).await?;
        Ok(keys.iter().filter_map(|k| k.rsplit('/').next()?.split('-').next()?.parse().ok()).max())
    }
}

/// The value after `name=` in a partition folder (`…/name=value/`).
pub(super) fn partition_value<'k>(folder: &'k str, name: &str) -> Option<&'k str> {
    folder.trim_end_matches('/').rsplit('/').next()?.strip_prefix(name)?.strip_prefix('=')
}

#[cfg(test)]
mod tests {
    use super::*;
    use trailwatch_core::identity::OriginKind;

    #[test]
    fn an_update_of_one_event_is_written_once_per_batch_the_last_one() {
        let origin = |principal: &str| Origin {
            kind: OriginKind::IamUser,
            principal: Some(principal.into()),
            account_id: None,
            provider: None,
            source_identity: None,
            chain: vec![],
            confidence: trailwatch_core::identity::Confidence::Exact,
            reason: None,
        };
        let update =
            |id: &str, principal: &str| OriginUpdate { account_id: "111122223333".into(), event_id: id.into(), event_time: 0, origin: origin(principal) };
        let planned = plan_origins("h", &[update("e-1", "first"), update("e-2", "other"), update("e-1", "last")], 5).unwrap();
        assert_eq!(planned.len(), 1);
        let read = read_origins_object(&planned[0].body, "test").unwrap();
        let got: Vec<(&str, Option<&str>)> = read.iter().map(|o| (o.event_id.as_str(), o.origin.principal.as_deref())).collect();
        assert_eq!(got, [("e-2", Some("other")), ("e-1", Some("last"))]);
    }
}
