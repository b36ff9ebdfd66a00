//! Sessions, the session archive and the pending set on SQLite: what the
//! conformance suites leave to each store (retention on disk, pruning,
//! finding issuing events in stored history, work alongside appends).

use std::sync::Arc;

use trailwatch_core::conformance::{sample_event, sample_origin, sample_session};
use trailwatch_core::event::Event;
use trailwatch_core::identity::{Caller, Confidence, IssueKind, PendingItem, PendingStore, SessionArchive, SessionStore};
use trailwatch_core::ports::{HistoryStore, OriginUpdate};
use trailwatch_core::time::format_utc;
use trailwatch_embedded::sqlite::schema::{MIGRATIONS, SCHEMA_VERSION};
use trailwatch_embedded::{SqliteStore, DEFAULT_SESSION_RETENTION_MS};

const T0: i64 = 1_710_000_000_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 3_600_000;
const CALLER_ACCOUNT: &str = "508917263341";
const ROLE_ACCOUNT: &str = "741258963012";

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    (dir, store)
}

/// An `AssumeRole` record as CloudTrail writes it, in `recipient`'s copy:
/// the caller's own account sees the IAM user, the role's account sees only
/// the caller's account.
fn assume_role(event_id: &str, recipient: &str, key: &str, issued: i64, lasts: i64) -> Event {
    let identity = if recipient == CALLER_ACCOUNT {
        format!(
            r#"{{"type":"IAMUser","principalId":"AIDAFEO5EZBWEA7PQYPJZ","arn":"arn:aws:iam::{CALLER_ACCOUNT}:user/devon.clarke","accountId":"{CALLER_ACCOUNT}","accessKeyId":"AKIAEPABNI2D6CI7OKXG","userName":"devon.clarke"}}"#
        )
    } else {
        format!(r#"{{"type":"AWSAccount","principalId":"AIDAFEO5EZBWEA7PQYPJZ","accountId":"{CALLER_ACCOUNT}"}}"#)
    };
    let raw = format!(
        r#"{{"eventVersion":"1.08","userIdentity":{identity},"eventTime":"{time}","eventSource":"sts.amazonaws.com","eventName":"AssumeRole","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.9","userAgent":"aws-cli/2.15.0","requestParameters":{{"roleArn":"arn:aws:iam::{ROLE_ACCOUNT}:role/PaymentsDeployer","roleSessionName":"devon"}},"responseElements":{{"credentials":{{"accessKeyId":"{key}","sessionToken":"IQoJb3JpZ2luX2VjEXAMPLE","expiration":"{expires}"}},"assumedRoleUser":{{"assumedRoleId":"AROAEXAMPLE:devon","arn":"arn:aws:sts::{ROLE_ACCOUNT}:assumed-role/PaymentsDeployer/devon"}}}},"requestID":"r-{event_id}","eventID":"{event_id}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{recipient}","sharedEventID":"shared-{key}-{issued}","eventCategory":"Management"}}"#,
        time = format_utc(issued),
        expires = format_utc(issued + lasts),
    );
    Event::from_record(0, raw.as_bytes(), recipient).expect("valid record")
}

#[tokio::test]
async fn sessions_past_retention_are_kept_on_disk_but_never_returned_until_pruned() {
    let (dir, store) = open();
    let store = store.with_session_retention(HOUR);
    let session = sample_session("ASIARETAINED00000001", T0, HOUR, "retained");
    store.put(vec![session.clone()].into()).await.expect("put");
    let at = T0 + 30 * MINUTE;

    assert_eq!(
        SessionStore::get(&store, &session.access_key_id, at, T0 + 2 * HOUR).await.expect("get"),
        Some(session.clone()),
        "retained up to expiry plus the margin"
    );
    assert_eq!(SessionStore::get(&store, &session.access_key_id, at, T0 + 2 * HOUR + 1).await.expect("get"), None, "past retention: filtered");
    let rows = |path: &std::path::Path| -> i64 {
        rusqlite::Connection::open(path).expect("inspect").query_row("SELECT count(*) FROM sessions", [], |row| row.get(0)).expect("count")
    };
    let path = dir.path().join("trailwatch.db");
    assert_eq!(rows(&path), 1, "the row is still there, like an item DynamoDB has not deleted yet");

    assert_eq!(store.prune_sessions(T0 + 2 * HOUR).await.expect("prune"), 0, "nothing is pruned while retained");
    assert_eq!(store.prune_sessions(T0 + 3 * HOUR).await.expect("prune"), 1);
    assert_eq!(rows(&path), 0);

    // The default margin keeps a session for days.
    let (_dir, store) = open();
    store.put(vec![session.clone()].into()).await.expect("put");
    let late = T0 + HOUR + DEFAULT_SESSION_RETENTION_MS - MINUTE;
    assert_eq!(SessionStore::get(&store, &session.access_key_id, at, late).await.expect("get"), Some(session), "retained for the default margin");
}

#[tokio::test]
async fn the_archive_finds_the_issuing_event_of_a_key_in_history() {
    let (_dir, store) = open();
    let key = "ASIAARCHIVEKEY000001";
    let early = assume_role("issue-early", CALLER_ACCOUNT, key, T0, HOUR);
    // AWS reuses the key id a day later, for somebody else's session.
    let reused = assume_role("issue-reused", ROLE_ACCOUNT, key, T0 + 24 * HOUR, HOUR);
    let noise: Vec<Event> = (0..200).map(|i| sample_event(CALLER_ACCOUNT, &format!("noise-{i}"), T0 + i * MINUTE)).collect();
    let mut history = noise;
    history.extend([early.clone(), reused.clone()]);
    store.append(history.into()).await.expect("append");

    let found = store.find(key, T0 + 30 * MINUTE).await.expect("find").expect("the early session");
    assert_eq!((found.event_id.as_str(), found.kind, found.issued_at, found.expires_at), ("issue-early", IssueKind::AssumeRole, T0, T0 + HOUR));
    assert_eq!(found.caller.arn.as_deref(), Some("arn:aws:iam::508917263341:user/devon.clarke"));
    assert_eq!(found.account_id, ROLE_ACCOUNT);

    let later = store.find(key, T0 + 24 * HOUR + 10 * MINUTE).await.expect("find").expect("the reused key's session");
    assert_eq!(later.event_id, "issue-reused", "a use of the reused key finds its own session");
    assert_eq!(store.find(key, T0 + 5 * HOUR).await.expect("find"), None, "between the two sessions the key is nobody's");
    assert_eq!(store.find(key, T0 - 10 * MINUTE).await.expect("find"), None, "not before it was issued");
    assert_eq!(store.find("ASIANEVERISSUED00001", T0 + 30 * MINUTE).await.expect("find"), None);
}

#[tokio::test]
async fn the_archive_looks_back_as_far_as_the_longest_session() {
    let (_dir, store) = open();
    let key = "ASIAARCHIVELONG00001";
    // A GetSessionToken-length session: 36 hours.
    store.append(vec![assume_role("issue-long", CALLER_ACCOUNT, key, T0, 36 * HOUR)].into()).await.expect("append");
    assert_eq!(store.find(key, T0 + 36 * HOUR).await.expect("find").map(|s| s.event_id), Some("issue-long".to_owned()), "used at the end of 36 hours");
    assert_eq!(store.find(key, T0 + 37 * HOUR).await.expect("find"), None);
}

#[tokio::test]
async fn the_archive_merges_the_two_copies_of_a_cross_account_call() {
    for caller_first in [true, false] {
        let (_dir, store) = open();
        let key = "ASIAARCHIVECROSS0001";
        let caller = assume_role("copy-caller", CALLER_ACCOUNT, key, T0, HOUR);
        let owner = assume_role("copy-owner", ROLE_ACCOUNT, key, T0, HOUR);
        let copies = if caller_first { vec![caller, owner] } else { vec![owner, caller] };
        for copy in copies {
            store.append(vec![copy].into()).await.expect("append");
        }
        let found = store.find(key, T0 + MINUTE).await.expect("find").expect("found");
        assert_eq!((found.event_id.as_str(), found.event_account.as_str()), ("copy-caller", CALLER_ACCOUNT), "the caller's copy wins");
        assert_eq!(found.caller.identity_type, "IAMUser");
    }
}

#[tokio::test]
async fn a_version_3_database_keeps_its_events_which_gain_actors_and_no_origin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let key = "ASIAMIGRATEDKEY00001";
    let old = [sample_event(CALLER_ACCOUNT, "ev-before", T0), assume_role("issue-before", CALLER_ACCOUNT, key, T0, HOUR)];
    {
        // What trailwatch wrote with schema version 3: the actor's three columns only.
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(&MIGRATIONS[..3].join("\n")).expect("version 3 schema");
        conn.pragma_update(None, "user_version", 3).expect("version");
        for e in &old {
            conn.execute(
                "INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name, identity_type, actor_arn, access_key_id, source_ip, error_code, read_only, raw) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                rusqlite::params![e.account_id, e.event_id, e.event_time, e.region, e.event_source, e.event_name, e.identity_type(), e.actor_arn(), e.access_key_id(), e.source_ip, e.error_code, e.read_only, e.raw],
            )
            .expect("old event");
        }
        conn.execute("UPDATE counters SET value = 2 WHERE name = 'events'", []).expect("count");
    }
    let store = SqliteStore::open(&path).expect("open migrates");
    assert_eq!(HistoryStore::count(&store).await.expect("count"), 2);
    for e in &old {
        let migrated = HistoryStore::get(&store, &e.account_id, &e.event_id).await.expect("get").expect("a migrated event is found by id");
        assert_eq!(&migrated, e, "a migrated event comes back whole: its full actor read again from the record, no origin");
        assert_eq!(migrated.origin, None);
    }
    assert_eq!(
        store.find(key, T0 + MINUTE).await.expect("find").map(|s| s.event_id),
        Some("issue-before".to_owned()),
        "issuing events stored before are indexed"
    );
    let update = OriginUpdate { account_id: CALLER_ACCOUNT.into(), event_id: "ev-before".into(), event_time: T0, origin: sample_origin(Confidence::Exact) };
    assert_eq!(store.set_origins(vec![update].into()).await.expect("set origins"), 1, "a migrated event can be resolved late");
    let resolved = HistoryStore::get(&store, CALLER_ACCOUNT, "ev-before").await.expect("get").expect("stored");
    assert_eq!((resolved.origin, resolved.actor), (Some(sample_origin(Confidence::Exact)), old[0].actor.clone()));
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    assert_eq!(trailwatch_embedded::sqlite::schema::version(&conn).expect("version"), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_version_6_database_moves_to_arrival_buckets_and_keeps_its_sessions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let session = sample_session("ASIAVERSIONSIX000001", T0, HOUR, "six");
    let event = assume_role("ev-six", CALLER_ACCOUNT, "ASIAVERSIONSIX000002", T0, HOUR);
    {
        // Version 6 kept `account_only` in sessions and led `events_by_id` with 10-minute buckets.
        let conn = rusqlite::Connection::open(&path).expect("create");
        conn.execute_batch(&MIGRATIONS[..6].join("\n")).expect("version 6 schema");
        conn.pragma_update(None, "user_version", 6).expect("version");
        conn.execute(
            "INSERT INTO sessions (access_key_id, issued_at, expires_at, account_only, session) VALUES (?1, ?2, ?3, 0, ?4)",
            rusqlite::params![session.access_key_id, session.issued_at, session.expires_at, serde_json::to_string(&session).expect("json")],
        )
        .expect("old session");
        conn.execute(
            "INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name, identity_type, actor_arn, access_key_id, raw, shared_event_id, source_ip, read_only) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            rusqlite::params![event.account_id, event.event_id, event.event_time, event.region, event.event_source, event.event_name, event.identity_type(), event.actor_arn(), event.access_key_id(), event.raw, event.shared_event_id, event.source_ip, event.read_only],
        )
        .expect("old event");
        conn.execute("INSERT INTO event_buckets (bucket, events) VALUES (?1, 1)", [T0 / 600_000]).expect("bucket");
        conn.execute("UPDATE counters SET value = 1 WHERE name = 'events'", []).expect("count");
    }
    let store = SqliteStore::open(&path).expect("open migrates");
    assert_eq!(SessionStore::get(&store, &session.access_key_id, T0 + MINUTE, T0 + MINUTE).await.expect("get"), Some(session.clone()));
    let next = sample_session("ASIAVERSIONSIX000003", T0, HOUR, "seven");
    store.put(vec![next.clone()].into()).await.expect("a session is stored without the dropped column");
    assert_eq!(SessionStore::get(&store, &next.access_key_id, T0 + MINUTE, T0 + MINUTE).await.expect("get"), Some(next));
    assert_eq!(HistoryStore::get(&store, CALLER_ACCOUNT, "ev-six").await.expect("get"), Some(event), "found through the rebuilt index");
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    let index: String = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'events_by_id'", [], |row| row.get(0)).expect("index");
    assert!(index.contains("seq / 4096"), "{index}");
    let buckets: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'event_buckets'", [], |row| row.get(0)).expect("tables");
    assert_eq!(buckets, 0);
}

fn pending(event_id: &str, time: i64, key: &str) -> PendingItem {
    PendingItem {
        account_id: ROLE_ACCOUNT.into(),
        event_id: event_id.into(),
        event_time: time,
        actor: Caller { identity_type: "AssumedRole".into(), access_key_id: Some(key.into()), ..Caller::default() },
        shared_event_id: None,
        missing_key: key.into(),
        missing_at: time,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_go_on_while_history_is_appended() {
    let (_dir, store) = open();
    let key = "ASIACONCURRENT000001";
    store.append(vec![assume_role("issue-concurrent", CALLER_ACCOUNT, key, T0, HOUR)].into()).await.expect("append");
    store.put(vec![sample_session(key, T0, HOUR, "issue-concurrent")].into()).await.expect("put");
    let mut first = sample_event(ROLE_ACCOUNT, "first", T0 + MINUTE);
    first.origin = Some(sample_origin(Confidence::Pending));
    store.append(vec![first].into()).await.expect("append");

    let writer = store.clone();
    let appending = tokio::spawn(async move {
        for batch in 0..30 {
            let events: Vec<Event> = (0..200).map(|i| sample_event(ROLE_ACCOUNT, &format!("bulk-{batch}-{i}"), T0 + (batch * 200 + i) * 1000)).collect();
            writer.append(events.into()).await.expect("append");
            let items: Vec<PendingItem> = (0..5).map(|i| pending(&format!("wait-{batch}-{i}"), T0 + batch * MINUTE, &format!("ASIAWAIT{batch:04}"))).collect();
            PendingStore::add(&writer, Arc::from(items)).await.expect("add pending");
        }
    });
    let mut rounds = 0;
    loop {
        let done = appending.is_finished();
        assert!(HistoryStore::get(&store, ROLE_ACCOUNT, "first").await.expect("get").is_some(), "a stored event is found while others are appended");
        assert_eq!(store.find(key, T0 + MINUTE).await.expect("find").map(|s| s.event_id), Some("issue-concurrent".to_owned()));
        assert!(SessionStore::get(&store, key, T0 + MINUTE, T0 + MINUTE).await.expect("session").is_some());
        let update =
            OriginUpdate { account_id: ROLE_ACCOUNT.into(), event_id: "first".into(), event_time: T0 + MINUTE, origin: sample_origin(Confidence::Exact) };
        assert_eq!(store.set_origins(vec![update].into()).await.expect("set origins"), 1);
        let taken = store.take_waiting_on(&[format!("ASIAWAIT{rounds:04}")]).await.expect("take");
        assert!(taken.len() <= 5 && taken.iter().all(|t| t.missing_key == format!("ASIAWAIT{rounds:04}")));
        rounds += 1;
        if done {
            break;
        }
    }
    appending.await.expect("appender");
    assert!(rounds > 1, "lookups ran alongside the appends");
    assert_eq!(HistoryStore::count(&store).await.expect("count"), 2 + 30 * 200);
    assert_eq!(HistoryStore::get(&store, ROLE_ACCOUNT, "first").await.expect("get").and_then(|e| e.origin), Some(sample_origin(Confidence::Exact)));
}
