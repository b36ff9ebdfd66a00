use std::collections::HashSet;
use std::path::Path;

use trailwatch_core::conformance::sample_event;
use trailwatch_core::event::{Event, FileOutcome, FileStatus, RecordError, RejectedRecord};
use trailwatch_core::layout::ObjectKind;
use trailwatch_core::ports::{Checkpoints, HistoryQuery, HistoryStore};
use trailwatch_embedded::sqlite::schema::{MIGRATIONS, SCHEMA_VERSION};
use trailwatch_embedded::{OpenError, SqliteStore};

const BASE: i64 = 1_700_000_000_000;
const KEY: &str = "AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2023/11/14/f.json.gz";

fn events(n: usize, offset: usize) -> Vec<Event> {
    (offset..offset + n).map(|i| sample_event("111122223333", &format!("ev-{i:06}"), BASE + (i as i64 % 97) * 1000)).collect()
}

fn partial_outcome() -> FileOutcome {
    FileOutcome {
        key: KEY.into(),
        kind: ObjectKind::Log,
        account_id: "111122223333".into(),
        region: "us-east-1".into(),
        size: 4096,
        modified: BASE,
        status: FileStatus::Partial,
        events: 9,
        bytes: 20_000,
        rejected: vec![RejectedRecord { error: RecordError { index: 4, event_id: None, reason: "invalid record JSON".into() }, raw: "{\"eventID\":".into() }],
        error: None,
    }
}

async fn all_events(store: &SqliteStore, limit: usize) -> Vec<Event> {
    let mut query = HistoryQuery { limit, ..Default::default() };
    let mut out = Vec::new();
    loop {
        let page = store.page(&query).await.expect("page");
        out.extend(page.events);
        match page.next {
            Some(next) => query.after = Some(next),
            None => return out,
        }
    }
}

#[tokio::test]
async fn reopening_the_database_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data/nested/trailwatch.db");
    let written = events(300, 0);
    {
        let store = SqliteStore::open(&path).expect("open creates the directory and the file");
        store.append(written.clone().into()).await.expect("append");
        store.record(vec![partial_outcome()].into(), BASE + 5).await.expect("record");
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.count().await.expect("count"), 300);
    let read = all_events(&store, 64).await;
    assert_eq!(read.len(), 300);
    let mut expected = written;
    expected.sort_by_key(|e| e.event_time); // stable: ties stay in arrival order
    assert_eq!(read, expected, "events come back as written, raw bytes included, in time then arrival order");
    let entry = &store.lookup(&[KEY.to_owned()]).await.expect("lookup")[KEY];
    assert_eq!((entry.status, entry.events, entry.rejected, entry.attempts, entry.processed_at), (FileStatus::Partial, 9, 1, 1, BASE + 5));
    assert_eq!(store.rejected(KEY).await.expect("rejected"), partial_outcome().rejected);
    assert_eq!(store.problems(5).await.expect("problems").len(), 1);
    let stats = store.stats().expect("stats");
    assert_eq!((stats.events, stats.ledger.by_status.get(&FileStatus::Partial)), (300, Some(&1)));
    assert!(stats.file_bytes > 300 * 900, "{stats:?}");
}

#[tokio::test]
async fn appending_the_same_events_twice_stores_them_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    let batch = events(500, 0);
    let first = store.append(batch.clone().into()).await.expect("append");
    assert_eq!((first.inserted, first.duplicates), (500, 0));
    // A re-ingested file overlaps what is stored, and a batch may repeat itself.
    let mut overlap = events(500, 250);
    overlap.push(overlap[0].clone());
    let second = store.append(overlap.into()).await.expect("append again");
    assert_eq!((second.inserted, second.duplicates), (250, 251));
    assert_eq!(store.count().await.expect("count"), 750);
    assert_eq!(all_events(&store, 1000).await.len(), 750);
    assert_eq!(store.append(Vec::new().into()).await.expect("empty append"), Default::default());
}

/// Writes a database as a trailwatch with only the first `version` schema steps did.
fn old_database(path: &Path, version: usize) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(&MIGRATIONS[..version].join("\n")).expect("old schema");
    conn.pragma_update(None, "user_version", version as i64).expect("version");
    conn
}

#[tokio::test]
async fn an_older_database_is_migrated_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    // Version 2 had history but no counters: the migration must count what is there.
    let stored = sample_event("111122223333", "ev-old", BASE);
    {
        let conn = old_database(&path, 2);
        conn.execute(
            "INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name, read_only, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            rusqlite::params![
                stored.account_id,
                stored.event_id,
                stored.event_time,
                stored.region,
                stored.event_source,
                stored.event_name,
                stored.read_only,
                stored.raw
            ],
        )
        .expect("old event");
    }
    let store = SqliteStore::open(&path).expect("open migrates");
    assert_eq!(store.count().await.expect("count"), 1, "the counter starts from the events already stored");
    let page = store.page(&HistoryQuery { limit: 10, ..Default::default() }).await.expect("page");
    assert_eq!(page.events[0].raw, stored.raw);
    let again = store.append(vec![stored, sample_event("111122223333", "ev-new", BASE)].into()).await.expect("append");
    assert_eq!((again.inserted, again.duplicates), (1, 1));
    assert_eq!(store.count().await.expect("count"), 2);
    drop(store);
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    assert_eq!(trailwatch_embedded::sqlite::schema::version(&conn).expect("version"), SCHEMA_VERSION);
}

#[tokio::test]
async fn a_database_from_a_newer_trailwatch_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    drop(SqliteStore::open(&path).expect("create"));
    let newer = SCHEMA_VERSION + 3;
    rusqlite::Connection::open(&path).expect("open").pragma_update(None, "user_version", newer).expect("bump");

    let err = SqliteStore::open(&path).err().expect("a newer schema is refused");
    assert!(matches!(err, OpenError::TooNew { found, known, .. } if found == newer && known == SCHEMA_VERSION), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains(&newer.to_string()) && message.contains(&SCHEMA_VERSION.to_string()),
        "{message}"
    );
    assert!(!err.is_retryable());
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_named_in_the_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("notes.db");
    std::fs::write(&path, vec![b'x'; 8192]).expect("write");
    let err = SqliteStore::open(&path).err().expect("not a database");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_while_appending_sees_no_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    store.append(events(1000, 0).into()).await.expect("first batch");

    let writer = store.clone();
    let appending = tokio::spawn(async move {
        // Late files: event times land before, among and after what is stored.
        for batch in 1..40 {
            writer.append(events(250, batch * 1000).into()).await.expect("append");
        }
    });
    let mut passes = 0;
    loop {
        let done = appending.is_finished();
        let stored_before = store.count().await.expect("count");
        let seen = all_events(&store, 97).await;
        let mut ids = HashSet::new();
        assert!(seen.iter().all(|e| ids.insert(e.event_id.clone())), "an event appeared twice while paging");
        assert!(seen.windows(2).all(|w| w[0].event_time <= w[1].event_time), "pages stay in time order");
        assert!(seen.len() as u64 >= stored_before, "every event stored before paging began is seen");
        passes += 1;
        if done {
            assert_eq!(seen.len(), 1000 + 39 * 250);
            break;
        }
    }
    appending.await.expect("appender");
    assert!(passes > 1, "paging ran alongside the appends");
}

#[tokio::test]
async fn recording_a_file_again_replaces_its_rejects() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    store.record(vec![partial_outcome()].into(), BASE).await.expect("record");
    let mut retry = partial_outcome();
    retry.rejected = vec![
        RejectedRecord {
            error: RecordError { index: 7, event_id: Some("e7".into()), reason: "missing field `eventName`".into() },
            raw: "{\"eventID\":\"e7\"}".into(),
        },
        RejectedRecord { error: RecordError { index: 2, event_id: None, reason: "record is not UTF-8".into() }, raw: "\u{fffd}".into() },
    ];
    store.record(vec![retry.clone()].into(), BASE + 1).await.expect("record again");
    assert_eq!(store.rejected(KEY).await.expect("rejected"), retry.rejected, "the newest rejects, in the order recorded");
    assert_eq!(store.lookup(&[KEY.to_owned()]).await.expect("lookup")[KEY].rejected, 2);
    assert!(store.rejected("AWSLogs/unknown").await.expect("rejected").is_empty());
}

#[tokio::test]
async fn reading_does_not_wait_for_a_write_in_progress() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let store = SqliteStore::open(&path).expect("open");
    store.append(events(10, 0).into()).await.expect("append");

    // Another writer (another process, say) is in the middle of a long transaction.
    let mut other = rusqlite::Connection::open(&path).expect("second connection");
    let tx = other.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).expect("write lock");
    tx.execute("UPDATE counters SET value = value WHERE name = 'events'", []).expect("write");

    let started = std::time::Instant::now();
    assert_eq!(store.count().await.expect("count"), 10);
    assert_eq!(all_events(&store, 3).await.len(), 10);
    assert!(store.lookup(&[KEY.to_owned()]).await.expect("lookup").is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "reads waited for the writer");
    tx.rollback().expect("rollback");
}
