//! Event history in S3 against the emulator: the objects an append writes
//! (where, what they hold, that a repeated batch writes nothing), the late
//! origins, the listing behind `last_events`; and the Athena reads with
//! canned results, checked by the SQL and parameters Athena recorded (the
//! emulator runs no SQL: the queries are checked against the table
//! definitions by the unit tests of `history.rs`).
//!
//! Canned Athena results are global to the emulator, so the tests that run
//! queries take [`SERIAL`]; each uses its own workgroup and bucket.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_athena::types::QueryExecution;
use serde_json::Value;
use trailwatch_aws::athena::{placeholders, string_literal, Athena, AthenaSettings};
use trailwatch_aws::clients::Clients;
use trailwatch_aws::history::{read_event_object, read_origins_object, result_column_names, result_row, S3History};
use trailwatch_aws::moto::{self, Moto};
use trailwatch_core::conformance::{sample_event, sample_origin};
use trailwatch_core::event::Event;
use trailwatch_core::identity::{Confidence, Origin, OriginKind};
use trailwatch_core::ports::{EventFilter, HistoryCursor, HistoryStore, OriginUpdate, PortError};
use trailwatch_core::time::{parse_utc, EpochMillis};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ALPHA: &str = "508917263341";
const BRAVO: &str = "741258963012";
const DATABASE: &str = "trailwatch";
const DAY: EpochMillis = 86_400_000;

struct Env {
    moto: &'static Moto,
    clients: Clients,
    bucket: String,
    prefix: String,
    /// The emulator's account and region, from STS and the configuration.
    account: String,
    region: String,
    workgroup: String,
    table: String,
}

async fn env() -> Env {
    let moto = moto::shared();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let bucket = moto::unique("history");
    clients.s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let account = clients.caller_identity().await.unwrap().account;
    let region = clients.region().unwrap().to_owned();
    let workgroup = moto::unique("history-wg");
    clients.athena.create_work_group().name(&workgroup).send().await.unwrap();
    let table = moto::unique("events").replace('-', "_");
    Env { moto, clients, bucket, prefix: "trailwatch/events".into(), account, region, workgroup, table }
}

impl Env {
    fn athena(&self) -> Arc<Athena> {
        let settings = AthenaSettings {
            database: DATABASE.into(),
            workgroup: self.workgroup.clone(),
            output_location: Some(format!("s3://{}/athena/", self.bucket)),
            max_bytes_scanned: 1 << 30,
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(40),
            timeout: Duration::from_secs(10),
        };
        Arc::new(Athena::new(self.clients.athena.clone(), settings))
    }

    fn store(&self, athena: Option<Arc<Athena>>) -> S3History {
        S3History::new(self.clients.s3.clone(), &self.bucket, &self.prefix, athena, self.table.clone())
    }

    /// Every object key under a prefix.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.clients.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).send().await.unwrap();
        assert_ne!(out.is_truncated, Some(true), "the tests write fewer than 1000 objects");
        out.contents().iter().map(|o| o.key().unwrap().to_owned()).collect()
    }

    /// Key → ETag and modification time of every object under a prefix.
    async fn versions(&self, prefix: &str) -> BTreeMap<String, (String, String)> {
        let out = self.clients.s3.list_objects_v2().bucket(&self.bucket).prefix(prefix).send().await.unwrap();
        out.contents().iter().map(|o| (o.key().unwrap().to_owned(), (o.e_tag().unwrap().to_owned(), format!("{:?}", o.last_modified())))).collect()
    }

    async fn body(&self, key: &str) -> Vec<u8> {
        let out = self.clients.s3.get_object().bucket(&self.bucket).key(key).send().await.unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }

    /// Queues results for the next query executions: `RESULT` columns, a
    /// header row as Athena sends, then the rows.
    fn can(&self, results: Vec<Vec<Vec<Option<String>>>>) {
        let columns = result_column_names();
        let header: Vec<Option<String>> = columns.iter().map(|c| Some(c.clone())).collect();
        let results = results.into_iter().map(|rows| (columns.clone(), std::iter::once(header.clone()).chain(rows).collect())).collect();
        self.moto.can_athena_results(&self.account, &self.region, results).unwrap();
    }

    /// This test's query executions, as Athena recorded them, oldest first.
    async fn executions(&self) -> Vec<QueryExecution> {
        let ids = self.clients.athena.list_query_executions().work_group(&self.workgroup).send().await.unwrap().query_execution_ids.unwrap_or_default();
        let mut found = Vec::new();
        for id in ids {
            found.push(self.clients.athena.get_query_execution().query_execution_id(id).send().await.unwrap().query_execution.unwrap());
        }
        found
    }
}

/// The row Athena returns for an event whose newest origin is `origin`.
fn row(e: &Event, origin: Option<&Origin>, seq: i64) -> Vec<Option<String>> {
    result_row(e, origin, seq)
}

fn at(text: &str) -> EpochMillis {
    parse_utc(text).unwrap()
}

fn event(account: &str, id: &str, region: &str, time: EpochMillis) -> Event {
    let mut e = sample_event(account, id, time);
    e.region = region.into();
    e
}

/// Two accounts × two regions × two days, two events each; some with every
/// optional field, some with an origin.
fn spread() -> Vec<Event> {
    let day = at("2024-03-09T10:00:00Z");
    let mut events = Vec::new();
    for (a, account) in [ALPHA, BRAVO].into_iter().enumerate() {
        for (r, region) in ["eu-west-1", "us-east-1"].into_iter().enumerate() {
            for d in 0..2 {
                for n in 0..2 {
                    let mut e = event(account, &format!("ev-{a}{r}{d}{n}"), region, day + d * DAY + n * 60_000);
                    if n == 1 {
                        e.origin = Some(sample_origin(Confidence::Exact));
                        e.shared_event_id = Some(format!("shared-{a}{r}{d}"));
                        e.error_code = Some("AccessDenied".into());
                    }
                    events.push(e);
                }
            }
        }
    }
    events
}

fn sorted(mut events: Vec<Event>) -> Vec<Event> {
    events.sort_by(|a, b| (&a.account_id, &a.event_id).cmp(&(&b.account_id, &b.event_id)));
    events
}

fn gunzip(body: &[u8]) -> String {
    assert_eq!(&body[..2], &[0x1f, 0x8b], "gzip");
    let mut text = String::new();
    flate2::read::GzDecoder::new(body).read_to_string(&mut text).unwrap();
    text
}

#[tokio::test]
async fn an_append_writes_one_gzipped_json_lines_object_per_account_region_and_day() {
    let env = env().await;
    let store = env.store(None);
    let events = spread();
    let report = store.append(events.clone().into()).await.unwrap();
    assert_eq!((report.inserted, report.duplicates), (16, 0));

    let keys = env.keys(&format!("{}/", env.prefix)).await;
    assert_eq!(keys.len(), 8, "{keys:#?}");
    let mut partitions = BTreeSet::new();
    for key in &keys {
        let (folder, name) = key.rsplit_once('/').unwrap();
        assert!(name.ends_with(".json.gz"), "{key}");
        partitions.insert(folder.to_owned());
    }
    let mut expected = BTreeSet::new();
    for account in [ALPHA, BRAVO] {
        for region in ["eu-west-1", "us-east-1"] {
            for day in ["2024-03-09", "2024-03-10"] {
                expected.insert(format!("trailwatch/events/account={account}/region={region}/date={day}"));
            }
        }
    }
    assert_eq!(partitions, expected, "one object per partition, under the exact partition keys");

    let mut read = Vec::new();
    for key in &keys {
        let body = env.body(key).await;
        let text = gunzip(&body);
        let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 2, "{key}: one JSON object per line");
        for line in &lines {
            // Each line is in the partition it names.
            let folder = format!(
                "trailwatch/events/account={}/region={}/date={}",
                line["account_id"].as_str().unwrap(),
                line["aws_region"].as_str().unwrap(),
                if line["event_time"].as_i64().unwrap() < at("2024-03-10T00:00:00Z") { "2024-03-09" } else { "2024-03-10" }
            );
            assert!(key.starts_with(&folder), "{key} holds a line of {folder}");
            let original = events.iter().find(|e| e.event_id == line["event_id"].as_str().unwrap() && e.account_id == line["account_id"]).unwrap();
            assert_eq!(line["raw"].as_str().unwrap(), original.raw, "the record byte for byte");
            assert_eq!(line["actor_arn"].as_str(), original.actor_arn());
            assert_eq!(line["origin_principal"].as_str(), original.origin.as_ref().and_then(|o| o.principal.as_deref()));
            assert!(line["seq"].as_i64().unwrap() > 0 && line["written_at"].as_i64().unwrap() > at("2024-01-01T00:00:00Z"));
        }
        read.extend(read_event_object(&body, key).unwrap().into_iter().map(|s| s.event));
    }
    assert_eq!(sorted(read), sorted(events), "the objects parse back into the same events, origins included");
}

#[tokio::test]
async fn appending_the_same_batch_again_writes_no_new_object() {
    let env = env().await;
    let store = env.store(None);
    let events = spread();
    store.append(events.clone().into()).await.unwrap();
    let root = format!("{}/", env.prefix);
    let before = env.versions(&root).await;

    let again = store.append(events.clone().into()).await.unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 16), "the same batch again is all duplicates");
    assert_eq!(env.versions(&root).await, before, "the same keys, not rewritten");

    // An event repeated within a batch is written once.
    let fresh = event(ALPHA, "ev-repeated", "eu-west-1", at("2024-03-11T08:00:00Z"));
    let report = store.append(vec![fresh.clone(), fresh.clone()].into()).await.unwrap();
    assert_eq!((report.inserted, report.duplicates), (1, 1));
    let objects = env.keys(&store.partition_prefix(ALPHA, "eu-west-1", "2024-03-11")).await;
    assert_eq!(objects.len(), 1);
    assert_eq!(read_event_object(&env.body(&objects[0]).await, &objects[0]).unwrap().len(), 1);

    // A batch cut differently is another object: S3 cannot tell, reads keep one copy.
    let part = store.append(events[..1].to_vec().into()).await.unwrap();
    assert_eq!((part.inserted, part.duplicates), (1, 0));
    assert_eq!(env.versions(&root).await.len(), before.len() + 2);
}

#[tokio::test]
async fn late_origins_land_under_the_origins_prefix() {
    let env = env().await;
    let store = env.store(None);
    let update = |account: &str, id: &str, time: &str, principal: &str| OriginUpdate {
        account_id: account.into(),
        event_id: id.into(),
        event_time: at(time),
        origin: Origin { principal: Some(principal.into()), kind: OriginKind::SamlUser, ..sample_origin(Confidence::Derived) },
    };
    let updates = vec![
        update(ALPHA, "ev-1", "2024-03-09T10:00:00Z", "carol@example.com"),
        update(ALPHA, "ev-2", "2024-03-10T10:00:00Z", "carol@example.com"),
        update(BRAVO, "ev-3", "2024-03-09T23:59:59Z", "dave@example.com"),
        update(ALPHA, "ev-1", "2024-03-09T10:00:00Z", "erin@example.com"),
    ];
    assert_eq!(store.set_origins(updates.clone().into()).await.unwrap(), 3, "three events updated");
    assert_eq!(store.origins_location(), format!("s3://{}/trailwatch/events-origins", env.bucket));

    let keys = env.keys("trailwatch/events-origins/").await;
    let folders: BTreeSet<&str> = keys.iter().map(|k| k.rsplit_once('/').unwrap().0).collect();
    assert_eq!(
        folders,
        BTreeSet::from([
            "trailwatch/events-origins/account=508917263341/date=2024-03-09",
            "trailwatch/events-origins/account=508917263341/date=2024-03-10",
            "trailwatch/events-origins/account=741258963012/date=2024-03-09",
        ])
    );
    let mut read = Vec::new();
    for key in &keys {
        read.extend(read_origins_object(&env.body(key).await, key).unwrap());
    }
    read.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    let got: Vec<(&str, &str, Option<&str>)> = read.iter().map(|o| (o.account_id.as_str(), o.event_id.as_str(), o.origin.principal.as_deref())).collect();
    assert_eq!(
        got,
        [(ALPHA, "ev-1", Some("erin@example.com")), (ALPHA, "ev-2", Some("carol@example.com")), (BRAVO, "ev-3", Some("dave@example.com"))],
        "of two updates of one event in a batch, the last is written"
    );
    assert_eq!(read[2].origin, updates[2].origin, "the whole origin");

    // A later batch is a new object, even with an origin written before.
    store.set_origins(vec![updates[0].clone()].into()).await.unwrap();
    let later = env.keys(&store.origins_partition_prefix(ALPHA, "2024-03-09")).await;
    assert_eq!(later.len(), 2);
}

#[tokio::test]
async fn an_event_of_an_account_that_is_not_twelve_digits_is_refused() {
    let env = env().await;
    let store = env.store(None);
    let mut bad = event(ALPHA, "ev-bad", "eu-west-1", at("2024-03-09T10:00:00Z"));
    bad.account_id = "5089/../x".into();
    let good = event(ALPHA, "ev-good", "eu-west-1", at("2024-03-09T10:00:00Z"));
    match store.append(vec![good, bad].into()).await {
        Err(e @ PortError::Invalid { .. }) => assert!(e.to_string().contains("ev-bad"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert!(env.keys(&format!("{}/", env.prefix)).await.is_empty(), "nothing of the batch is written");
}

#[tokio::test]
async fn the_newest_event_per_account_and_region_comes_from_the_listing() {
    let env = env().await;
    let store = env.store(None);
    assert!(store.last_events().await.unwrap().is_empty());
    store.append(spread().into()).await.unwrap();
    let mut late = event(BRAVO, "ev-late", "us-east-1", at("2024-03-12T23:00:00Z"));
    late.region = "us-east-1".into();
    let mut no_region = event(BRAVO, "ev-nowhere", "", at("2024-03-01T00:00:00Z"));
    no_region.region = String::new();
    store.append(vec![late, no_region].into()).await.unwrap();
    let last: Vec<(String, String, EpochMillis)> = store.last_events().await.unwrap().into_iter().map(|l| (l.account_id, l.region, l.event_time)).collect();
    let newest = at("2024-03-10T10:01:00Z");
    assert_eq!(
        last,
        [
            (ALPHA.into(), "eu-west-1".into(), newest),
            (ALPHA.into(), "us-east-1".into(), newest),
            (BRAVO.into(), "eu-west-1".into(), newest),
            (BRAVO.into(), "unknown".into(), at("2024-03-01T00:00:00Z")),
            (BRAVO.into(), "us-east-1".into(), at("2024-03-12T23:00:00Z")),
        ]
    );
}

#[tokio::test]
async fn reads_without_athena_are_refused() {
    let env = env().await;
    let store = env.store(None);
    let refused = |result: Result<(), PortError>| match result {
        Err(e @ PortError::Invalid { .. }) => assert!(e.to_string().contains("history queries need Athena"), "{e}"),
        other => panic!("expected Invalid, got {other:?}"),
    };
    refused(store.get(ALPHA, "ev").await.map(|_| ()));
    refused(store.get_many(&[(ALPHA.into(), "ev".into())]).await.map(|_| ()));
    refused(store.count().await.map(|_| ()));
    refused(store.search(&EventFilter::new(0, DAY, 10)).await.map(|_| ()));
}

/// The parameters of an execution, and its text.
fn recorded(execution: &QueryExecution) -> (String, Vec<String>) {
    (execution.query.clone().unwrap(), execution.execution_parameters.clone().unwrap_or_default())
}

#[tokio::test]
async fn a_search_sends_every_value_as_a_parameter_and_reads_events_with_their_origins() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let store = env.store(Some(env.athena()));
    let since = at("2024-03-09T06:00:00Z");
    let hostile = "' OR 1=1 --";
    let filter = EventFilter {
        account: Some(ALPHA.into()),
        region: Some("eu-west-1".into()),
        event_source: Some("ec2.amazonaws.com".into()),
        event_name: Some(hostile.into()),
        actor_arn: Some(format!("arn:aws:iam::{ALPHA}:user/alice")),
        origin_principal: Some("carol@example.com".into()),
        origin_kind: Some(OriginKind::SamlUser),
        source_ip: Some("198.51.100.7".into()),
        error_code: Some("AccessDenied".into()),
        read_only: Some(true),
        ..EventFilter::new(since, since + DAY, 10)
    };
    let mut first = event(ALPHA, "ev-1", "eu-west-1", since + 60_000);
    first.error_code = Some("AccessDenied".into());
    first.origin = Some(sample_origin(Confidence::Pending));
    let mut second = first.clone();
    second.event_id = "ev-2".into();
    second.shared_event_id = Some("shared-2".into());
    let settled = Origin { kind: OriginKind::SamlUser, principal: Some("carol@example.com".into()), ..sample_origin(Confidence::Exact) };
    env.can(vec![vec![row(&first, Some(&settled), 17), row(&second, Some(&settled), 18)]]);

    let page = store.search(&filter).await.unwrap();
    let got: Vec<(&str, Option<&Origin>, HistoryCursor)> = page.hits.iter().map(|h| (h.event.event_id.as_str(), h.event.origin.as_ref(), h.cursor)).collect();
    assert_eq!(
        got,
        [
            ("ev-1", Some(&settled), HistoryCursor { event_time: first.event_time, seq: 17 }),
            ("ev-2", Some(&settled), HistoryCursor { event_time: second.event_time, seq: 18 })
        ],
        "rows come back as events with their newest origin"
    );
    assert_eq!(page.hits[1].event, Event { origin: Some(settled.clone()), ..second }, "every field, the actor and the record included");
    assert_eq!(page.next, None, "a short page is the last");

    let executions = env.executions().await;
    assert_eq!(executions.len(), 1, "one query");
    let (sql, params) = recorded(&executions[0]);
    assert_eq!(placeholders(&sql), params.len(), "{sql}");
    let values = [
        ALPHA,
        "eu-west-1",
        "ec2.amazonaws.com",
        hostile,
        "arn:aws:iam::508917263341:user/alice",
        "carol@example.com",
        "saml_user",
        "198.51.100.7",
        "AccessDenied",
        "true",
    ];
    for value in values {
        assert!(params.contains(&string_literal(value).unwrap()), "{value} is an execution parameter: {params:?}");
    }
    for value in &values[..9] {
        assert!(!sql.contains(value), "{value} is not in the query text: {sql}");
    }
    assert!(!sql.contains("1=1") && !sql.contains("--"), "the hostile value appears only as a parameter: {sql}");
    let stored = sql.split("updates AS").next().unwrap();
    assert!(stored.contains("\"date\" BETWEEN ? AND ?"), "the date partitions bound the scan: {stored}");
    assert!(stored.contains("\"account\" = ?") && stored.contains("\"region\" = ?"), "and the account and region partitions: {stored}");
    for day in ["2024-03-09", "2024-03-10"] {
        assert!(params.contains(&string_literal(day).unwrap()), "{day}: {params:?}");
    }
    assert!(!params.contains(&string_literal("2024-03-11").unwrap()), "no day past the range");
    assert!(sql.contains(&format!("\"{DATABASE}\".\"{}\"", env.table)) && sql.contains(&format!("\"{DATABASE}\".\"{}_origins\"", env.table)));
}

#[tokio::test]
async fn the_page_after_a_full_one_reads_the_same_execution() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let store = env.store(Some(env.athena()));
    let since = at("2024-03-09T06:00:00Z");
    let filter = EventFilter { account: Some(BRAVO.into()), ..EventFilter::new(since, since + 2 * DAY, 2) };
    let events: Vec<Event> = (0..2).map(|i| event(BRAVO, &format!("ev-{i}"), "us-east-1", since + i * 1000)).collect();
    env.can(vec![vec![row(&events[0], None, 5), row(&events[1], None, 9)]]);

    let page = store.search(&filter).await.unwrap();
    assert_eq!(page.hits.len(), 2);
    let next = page.next.expect("a full page has a next");
    assert_eq!(next, HistoryCursor { event_time: events[1].event_time, seq: 9 });
    assert_eq!(page.hits[0].event.origin, None);

    // The query's LIMIT is ten pages: the execution had every row, so the next page is empty and runs no query.
    let rest = store.search(&EventFilter { after: Some(next), ..filter.clone() }).await.unwrap();
    assert!(rest.hits.is_empty() && rest.next.is_none());
    assert_eq!(env.executions().await.len(), 1, "the next page read the first page's execution");
    assert_eq!(store.continuation_stats().hits, 1);
    let (sql, _) = recorded(&env.executions().await[0]);
    assert!(sql.contains("LIMIT 20"), "ten pages of rows: {sql}");

    // Resuming after another hit runs the query again from that position.
    let again = store.search(&EventFilter { after: Some(page.hits[0].cursor), ..filter }).await.unwrap();
    assert!(again.hits.is_empty());
    let executions = env.executions().await;
    assert_eq!(executions.len(), 2);
    let (sql, params) = recorded(&executions[1]);
    assert!(sql.contains("seq > CAST(? AS bigint)"), "{sql}");
    assert!(params.contains(&string_literal("5").unwrap()) && params.contains(&string_literal(&events[0].event_time.to_string()).unwrap()), "{params:?}");
    assert!(!sql.contains(&events[0].event_time.to_string()), "the cursor is a parameter too");
}

#[tokio::test]
async fn many_events_are_one_query_that_keeps_only_the_keys_asked() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let store = env.store(Some(env.athena()));
    let time = at("2024-03-09T10:00:00Z");
    let a1 = event(ALPHA, "ev-1", "eu-west-1", time);
    let b2 = event(BRAVO, "ev-2", "us-east-1", time);
    let b1 = event(BRAVO, "ev-1", "us-east-1", time);
    // The query reads accounts × ids: (BRAVO, ev-1) is read but was not asked.
    env.can(vec![vec![row(&a1, None, 1), row(&b2, a1.origin.as_ref(), 2), row(&b1, None, 3)]]);
    let keys =
        vec![(ALPHA.to_owned(), "ev-1".to_owned()), (BRAVO.to_owned(), "ev-2".to_owned()), (ALPHA.to_owned(), "ev-1".to_owned()), ("bad".into(), "x".into())];
    let found = sorted(store.get_many(&keys).await.unwrap());
    assert_eq!(found, sorted(vec![a1, b2]));
    let executions = env.executions().await;
    assert_eq!(executions.len(), 1, "one query for the batch");
    let (sql, params) = recorded(&executions[0]);
    assert_eq!(placeholders(&sql), params.len());
    for value in [ALPHA, BRAVO, "ev-1", "ev-2"] {
        assert!(params.contains(&string_literal(value).unwrap()) && !sql.contains(value), "{value}: {params:?}");
    }
    assert!(!params.iter().any(|p| p.contains("bad")), "a key that cannot be stored is not asked");
    assert!(sql.contains("\"date\" >= ?"), "bounded by the lookback: {sql}");

    // Nothing found is None.
    assert_eq!(store.get(ALPHA, "ev-none").await.unwrap(), None);
    assert_eq!(env.executions().await.len(), 2);
}
