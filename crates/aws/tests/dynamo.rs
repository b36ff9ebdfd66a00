//! The DynamoDB adapters against moto: the ports' conformance suites, and
//! what DynamoDB adds (TTL, chunked batches, concurrent takers and claims).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept};
use aws_sdk_dynamodb::operation::batch_write_item::BatchWriteItemInput;
use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use trailwatch_aws::clients::Clients;
use trailwatch_aws::dynamo::ledger::{Claim, DynamoLedger, REJECTS_KEPT};
use trailwatch_aws::dynamo::{self, aliases::DynamoAliases, pending::DynamoPendingStore, sessions::DynamoSessionStore, TableNames};
use trailwatch_aws::moto;
use trailwatch_core::conformance;
use trailwatch_core::event::{FileOutcome, FileStatus, RecordError, RejectedRecord};
use trailwatch_core::identity::{Caller, PendingItem, PendingStore, SessionStore};
use trailwatch_core::layout::ObjectKind;
use trailwatch_core::ports::Checkpoints;

const DAY: i64 = 24 * 3_600_000;

async fn client() -> aws_sdk_dynamodb::Client {
    Clients::connect(&moto::shared().settings()).await.unwrap().dynamodb
}

async fn serial_client() -> aws_sdk_dynamodb::Client {
    Clients::connect(&moto::serial().settings()).await.unwrap().dynamodb
}

async fn session_store(client: aws_sdk_dynamodb::Client, margin: i64) -> (aws_sdk_dynamodb::Client, String, DynamoSessionStore) {
    let table = moto::unique("sessions");
    dynamo::create_sessions_table(&client, &table).await.unwrap();
    (client.clone(), table.clone(), DynamoSessionStore::new(client, table, margin))
}

async fn pending_store(client: aws_sdk_dynamodb::Client) -> DynamoPendingStore {
    let table = moto::unique("pending");
    dynamo::create_pending_table(&client, &table).await.unwrap();
    DynamoPendingStore::new(client, table)
}

async fn ledger(client: aws_sdk_dynamodb::Client) -> DynamoLedger {
    let table = moto::unique("ledger");
    dynamo::create_ledger_table(&client, &table).await.unwrap();
    DynamoLedger::new(client, table)
}

#[tokio::test]
async fn sessions_pass_the_conformance_suite() {
    let (_, _, store) = session_store(client().await, 7 * DAY).await;
    conformance::session_store(&store).await;
}

#[tokio::test]
async fn pending_passes_the_conformance_suite() {
    conformance::pending_store(&pending_store(client().await).await).await;
}

#[tokio::test]
async fn the_ledger_passes_the_conformance_suites() {
    conformance::checkpoints(&ledger(client().await).await).await;
    conformance::file_activity(&ledger(client().await).await).await;
}

#[test]
fn table_names_share_a_prefix() {
    let names = TableNames::with_prefix("trailwatch");
    assert_eq!(
        [names.sessions, names.ledger, names.pending, names.alerts, names.aliases],
        ["trailwatch-sessions", "trailwatch-ledger", "trailwatch-pending", "trailwatch-alerts", "trailwatch-aliases"]
    );
}

#[tokio::test]
async fn creating_tables_again_is_fine_and_sessions_expire_by_ttl() {
    let client = client().await;
    let names = TableNames::with_prefix(&moto::unique("twice"));
    for _ in 0..2 {
        dynamo::create_sessions_table(&client, &names.sessions).await.unwrap();
        dynamo::create_pending_table(&client, &names.pending).await.unwrap();
        dynamo::create_ledger_table(&client, &names.ledger).await.unwrap();
        dynamo::create_aliases_table(&client, &names.aliases).await.unwrap();
    }
    let ttl = client.describe_time_to_live().table_name(&names.sessions).send().await.unwrap().time_to_live_description.unwrap();
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
    assert_eq!(ttl.attribute_name(), Some("expires_ttl"));

    // A table of the same name with other keys is refused, not used.
    let err = dynamo::create_sessions_table(&client, &names.aliases).await.unwrap_err();
    assert!(err.to_string().contains(&names.aliases) && err.to_string().contains("key schema"), "{err}");
}

/// Writes a session item as DynamoDB would hold it, with this `expires_ttl`.
async fn put_raw_session(client: &aws_sdk_dynamodb::Client, table: &str, session: &trailwatch_core::identity::Session, ttl_seconds: i64) {
    client
        .put_item()
        .table_name(table)
        .item("access_key_id", AttributeValue::S(session.access_key_id.clone()))
        .item("issued_at", AttributeValue::N(session.issued_at.to_string()))
        .item("expires_at", AttributeValue::N(session.expires_at.to_string()))
        .item("expires_ttl", AttributeValue::N(ttl_seconds.to_string()))
        .item("session", AttributeValue::S(serde_json::to_string(session).unwrap()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_session_past_its_ttl_is_not_returned_though_dynamodb_still_holds_it() {
    let (client, table, store) = session_store(client().await, 7 * DAY).await;
    let now = 1_750_000_000_000;
    let session = conformance::sample_session("ASIATTLEXPIRED000001", now - 3_600_000, 12 * 3_600_000, "ttl");
    // Its TTL passed a minute ago (say the margin was shorter when it was written).
    put_raw_session(&client, &table, &session, now / 1000 - 60).await;
    assert_eq!(store.get(&session.access_key_id, now, now).await.unwrap(), None, "an item past its TTL is absent");
    let stored = client
        .get_item()
        .table_name(&table)
        .key("access_key_id", AttributeValue::S(session.access_key_id.clone()))
        .key("issued_at", AttributeValue::N(session.issued_at.to_string()))
        .send()
        .await
        .unwrap();
    assert!(stored.item.is_some(), "moto keeps the item: only the read keeps it out");

    let kept = conformance::sample_session("ASIATTLKEPT000000001", now - 3_600_000, 12 * 3_600_000, "kept");
    put_raw_session(&client, &table, &kept, now / 1000 + 60).await;
    assert_eq!(store.get(&kept.access_key_id, now, now).await.unwrap(), Some(kept.clone()), "the same item with its TTL ahead is returned");

    store.put(vec![kept.clone()].into()).await.unwrap();
    let written = client
        .get_item()
        .table_name(&table)
        .key("access_key_id", AttributeValue::S(kept.access_key_id.clone()))
        .key("issued_at", AttributeValue::N(kept.issued_at.to_string()))
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(written["expires_ttl"], AttributeValue::N(((kept.expires_at + 7 * DAY) / 1000).to_string()), "the TTL is expiry plus margin, in seconds");
}

/// Counts the BatchWriteItem calls a client makes and the largest.
#[derive(Debug, Default, Clone)]
struct BatchSizes(Arc<Mutex<Vec<usize>>>);

impl Intercept for BatchSizes {
    fn name(&self) -> &'static str {
        "BatchSizes"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(input) = context.input().downcast_ref::<BatchWriteItemInput>() {
            let items = input.request_items().map_or(0, |r| r.values().map(Vec::len).sum());
            self.0.lock().unwrap().push(items);
        }
        Ok(())
    }
}

#[tokio::test]
async fn sixty_sessions_are_written_in_batches_of_25_and_all_stored() {
    let clients = Clients::connect(&moto::shared().settings()).await.unwrap();
    let sizes = BatchSizes::default();
    let client = aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&clients.config).interceptor(sizes.clone()).build());
    let table = moto::unique("sessions");
    dynamo::create_sessions_table(&client, &table).await.unwrap();
    let store = DynamoSessionStore::new(client.clone(), &table, DAY);
    let t0 = 1_750_000_000_000;
    let sessions: Vec<_> = (0..60).map(|i| conformance::sample_session(&format!("ASIABATCH{i:011}"), t0 + i * 1000, 3_600_000, &format!("b{i}"))).collect();
    store.put(sessions.clone().into()).await.unwrap();
    assert_eq!(*sizes.0.lock().unwrap(), vec![25, 25, 10], "BatchWriteItem calls of at most 25 items");
    for s in &sessions {
        assert_eq!(store.get(&s.access_key_id, s.issued_at + 1000, s.issued_at).await.unwrap().as_ref(), Some(s));
    }
    let count = client.scan().table_name(&table).select(aws_sdk_dynamodb::types::Select::Count).send().await.unwrap().count;
    assert_eq!(count, 60);
}

#[tokio::test]
async fn two_writers_of_the_copies_of_a_cross_account_call_keep_the_caller() {
    let (_, _, store) = session_store(serial_client().await, DAY).await;
    let t0 = 1_750_000_000_000;
    for i in 0..10 {
        let caller = conformance::sample_session(&format!("ASIARACE{i:012}"), t0, 3_600_000, &format!("race-{i}"));
        let owner = conformance::owner_copy(&caller);
        let (a, b) = tokio::join!(store.put(vec![owner].into()), store.put(vec![caller.clone()].into()));
        a.unwrap();
        b.unwrap();
        assert_eq!(store.get(&caller.access_key_id, t0 + 60_000, t0).await.unwrap(), Some(caller), "the caller's copy wins a race");
    }
}

fn waiting(event_id: &str, key: &str, time: i64) -> PendingItem {
    PendingItem {
        account_id: "629384751068".into(),
        event_id: event_id.into(),
        event_time: time,
        actor: Caller { identity_type: "AssumedRole".into(), access_key_id: Some(key.into()), ..Caller::default() },
        shared_event_id: None,
        missing_key: key.into(),
        missing_at: time,
    }
}

#[tokio::test]
async fn two_takers_at_once_never_both_take_an_event() {
    let store = pending_store(serial_client().await).await;
    let t0 = 1_750_000_000_000;
    let items: Vec<PendingItem> = (0..40).map(|i| waiting(&format!("race-{i:02}"), if i % 2 == 0 { "ASIARACEA" } else { "ASIARACEB" }, t0 + i)).collect();
    store.add(items.clone().into()).await.unwrap();
    let keys = ["ASIARACEA".to_owned(), "ASIARACEB".to_owned()];
    let (a, b) = tokio::join!(store.take_waiting_on(&keys), store.take_waiting_on(&keys));
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: HashSet<&str> = a.iter().map(|i| i.event_id.as_str()).collect();
    let ids_b: HashSet<&str> = b.iter().map(|i| i.event_id.as_str()).collect();
    assert!(ids_a.is_disjoint(&ids_b), "an event taken twice: {:?}", ids_a.intersection(&ids_b).collect::<Vec<_>>());
    assert_eq!(a.len() + b.len(), 40, "every event is taken once");
    assert_eq!(store.count().await.unwrap(), 0);

    // The same for expiry.
    store.add(items.into()).await.unwrap();
    let (a, b) = tokio::join!(store.take_expired(t0 + 100), store.take_expired(t0 + 100));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len() + b.len(), 40, "every expired event is taken once");
    assert!(a.iter().all(|x| !b.contains(x)));
}

fn file(key: &str, status: FileStatus, size: u64) -> FileOutcome {
    FileOutcome {
        key: key.into(),
        kind: ObjectKind::Log,
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        size,
        modified: 1_750_000_000_000,
        status,
        events: 7,
        bytes: 700,
        rejected: vec![],
        error: (status == FileStatus::Failed).then(|| "truncated".into()),
    }
}

const KEY: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/2025/06/15/claim.json.gz";

#[tokio::test]
async fn of_two_claims_at_once_exactly_one_wins() {
    let ledger = ledger(serial_client().await).await;
    let now = 1_750_000_000_000;
    for i in 0..10 {
        let key = format!("{KEY}.{i}");
        let (a, b) = tokio::join!(ledger.claim(&key, 10, now, "collector-a", 60_000, now), ledger.claim(&key, 10, now, "collector-b", 60_000, now));
        let (a, b) = (a.unwrap(), b.unwrap());
        let winners = [&a, &b].iter().filter(|c| ***c == Claim::Claimed).count();
        assert_eq!(winners, 1, "exactly one claim wins: {a:?} {b:?}");
        let loser = if a == Claim::Claimed { &b } else { &a };
        let winner = if a == Claim::Claimed { "collector-a" } else { "collector-b" };
        assert_eq!(loser, &Claim::Busy { owner: winner.into(), until: now + 60_000 }, "the other sees who holds it and until when");
    }
    assert!(ledger.lookup(&[format!("{KEY}.0")]).await.unwrap().is_empty(), "a claim alone is no ledger entry");
}

#[tokio::test]
async fn a_done_file_is_not_claimed_again_unless_it_changed_or_failed() {
    let ledger = ledger(client().await).await;
    let now = 1_750_000_000_000;
    assert_eq!(ledger.claim(KEY, 10, now, "a", 60_000, now).await.unwrap(), Claim::Claimed);
    ledger.record(vec![file(KEY, FileStatus::Done, 10)].into(), now + 5).await.unwrap();
    let entry = ledger.lookup(&[KEY.to_owned()]).await.unwrap().remove(KEY).unwrap();
    assert_eq!(ledger.claim(KEY, 10, now, "b", 60_000, now + 10).await.unwrap(), Claim::Done(entry.clone()), "recording a final outcome ends the lease");

    assert_eq!(ledger.claim(KEY, 11, now, "b", 60_000, now + 10).await.unwrap(), Claim::Claimed, "a file of another size is read again");
    assert_eq!(ledger.lookup(&[KEY.to_owned()]).await.unwrap()[KEY], entry, "a claim leaves the recorded entry as it was");
    assert_eq!(ledger.summary().await.unwrap().by_status.get(&FileStatus::Done), Some(&1));
    ledger.release(KEY, "b").await.unwrap();
    assert_eq!(ledger.lookup(&[KEY.to_owned()]).await.unwrap()[KEY], entry, "a release leaves the recorded entry as it was");

    ledger.record(vec![file(KEY, FileStatus::Failed, 10)].into(), now + 20).await.unwrap();
    assert_eq!(ledger.claim(KEY, 10, now, "c", 60_000, now + 30).await.unwrap(), Claim::Claimed, "a failed file is read again");
}

#[tokio::test]
async fn a_lease_runs_out_and_only_its_owner_releases_it() {
    let ledger = ledger(client().await).await;
    let now = 1_750_000_000_000;
    assert_eq!(ledger.claim(KEY, 10, now, "a", 1000, now).await.unwrap(), Claim::Claimed);
    assert_eq!(ledger.claim(KEY, 10, now, "b", 1000, now + 500).await.unwrap(), Claim::Busy { owner: "a".into(), until: now + 1000 });
    assert_eq!(ledger.claim(KEY, 10, now, "b", 1000, now + 1001).await.unwrap(), Claim::Claimed, "an expired lease is taken over");
    ledger.release(KEY, "a").await.unwrap();
    assert_eq!(
        ledger.claim(KEY, 10, now, "c", 1000, now + 1002).await.unwrap(),
        Claim::Busy { owner: "b".into(), until: now + 2001 },
        "a release by a former owner leaves the new lease"
    );
    ledger.release(KEY, "b").await.unwrap();
    assert_eq!(ledger.claim(KEY, 10, now, "c", 1000, now + 1003).await.unwrap(), Claim::Claimed, "a released file is claimed at once");
}

#[tokio::test]
async fn rejected_records_are_kept_up_to_a_bound_and_all_counted() {
    let ledger = ledger(client().await).await;
    let rejected: Vec<RejectedRecord> = (0..150)
        .map(|i| RejectedRecord {
            error: RecordError { index: i, event_id: (i % 2 == 0).then(|| format!("e-{i}")), reason: format!("missing field `eventName` ({i})") },
            raw: format!(r#"{{"eventID":"e-{i}"}}"#),
        })
        .collect();
    let outcome = FileOutcome { rejected: rejected.clone(), ..file(KEY, FileStatus::Partial, 10) };
    ledger.record(vec![outcome].into(), 1).await.unwrap();
    assert_eq!(ledger.rejected(KEY).await.unwrap(), rejected[..REJECTS_KEPT].to_vec(), "the first records are kept whole");
    assert_eq!(ledger.lookup(&[KEY.to_owned()]).await.unwrap()[KEY].rejected, 150, "every rejected record is counted");
    assert_eq!(ledger.summary().await.unwrap().rejected_records, 150);
    assert_eq!(ledger.problems(5).await.unwrap().len(), 1);
}

#[tokio::test]
async fn many_outcomes_in_one_call_are_recorded_and_counted() {
    let ledger = ledger(client().await).await;
    let outcomes: Vec<FileOutcome> =
        (0..75).map(|i| file(&format!("AWSLogs/111122223333/CloudTrail/us-east-1/2025/06/15/f{i}.json.gz"), FileStatus::Done, 10)).collect();
    ledger.record(outcomes.clone().into(), 1).await.unwrap();
    ledger.record(outcomes[..5].to_vec().into(), 2).await.unwrap();
    let keys: Vec<String> = outcomes.iter().map(|o| o.key.clone()).collect();
    let found = ledger.lookup(&keys).await.unwrap();
    assert_eq!(found.len(), 75);
    assert_eq!(found[&keys[0]].attempts, 2);
    assert_eq!(found[&keys[74]].attempts, 1);
    let summary = ledger.summary().await.unwrap();
    assert_eq!((summary.by_status.get(&FileStatus::Done), summary.events), (Some(&75), 75 * 7), "counters count each file once");
    let activity = ledger.activity().await.unwrap();
    assert_eq!((activity.len(), activity[0].files, activity[0].events, activity[0].last_processed_at), (1, 75, 525, 2));
}

#[tokio::test]
async fn problems_come_newest_first() {
    let ledger = ledger(client().await).await;
    for (i, status) in [FileStatus::Failed, FileStatus::Done, FileStatus::Empty, FileStatus::Partial, FileStatus::Failed].into_iter().enumerate() {
        ledger.record(vec![file(&format!("{KEY}.{i}"), status, 10)].into(), 100 + i as i64).await.unwrap();
    }
    let problems: Vec<String> = ledger.problems(3).await.unwrap().into_iter().map(|p| p.key).collect();
    assert_eq!(problems, vec![format!("{KEY}.4"), format!("{KEY}.3"), format!("{KEY}.2")]);
    ledger.record(vec![file(&format!("{KEY}.4"), FileStatus::Done, 10)].into(), 200).await.unwrap();
    let problems: Vec<String> = ledger.problems(10).await.unwrap().into_iter().map(|p| p.key).collect();
    assert_eq!(problems, vec![format!("{KEY}.3"), format!("{KEY}.2"), format!("{KEY}.0")], "a file done on retry is no longer a problem");
}

#[tokio::test]
async fn alias_overrides_are_set_and_removed() {
    let client = client().await;
    let table = moto::unique("aliases");
    dynamo::create_aliases_table(&client, &table).await.unwrap();
    let aliases = DynamoAliases::new(client, table);
    assert!(aliases.all().await.unwrap().is_empty());
    aliases.set("111122223333", Some("payments-prod")).await.unwrap();
    aliases.set("444455556666", Some("sandbox")).await.unwrap();
    aliases.set("444455556666", Some("sandbox-2")).await.unwrap();
    let all = aliases.all().await.unwrap();
    assert_eq!((all.len(), all["111122223333"].as_str(), all["444455556666"].as_str()), (2, "payments-prod", "sandbox-2"));
    aliases.set("111122223333", None).await.unwrap();
    assert_eq!(aliases.all().await.unwrap().into_iter().collect::<Vec<_>>(), vec![("444455556666".to_owned(), "sandbox-2".to_owned())]);
}

#[path = "dynamo/integrity.rs"]
mod integrity;
