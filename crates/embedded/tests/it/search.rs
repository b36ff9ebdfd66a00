//! Searching history and the accounts seen, on the SQLite store: the shared
//! suites (search itself runs inside `history_store`), an upgraded database,
//! and a search while appends go on.

use std::sync::Arc;

use rusqlite::Connection;
use trailwatch_core::conformance::{self, sample_event};
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory};
use trailwatch_core::ports::{Checkpoints, EventFilter, HistoryStore, PortError};
use trailwatch_embedded::sqlite::schema::{self, MIGRATIONS, SCHEMA_VERSION};
use trailwatch_embedded::SqliteStore;

#[tokio::test]
async fn sqlite_search_conforms_on_a_fresh_store() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::history_search(&store).await;
    conformance::file_activity(&store).await;
}

#[tokio::test]
async fn accounts_seen_conform_on_sqlite_and_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::account_activity(&store, &store).await;
    conformance::account_activity(&MemoryCheckpoints::new(), &MemoryHistory::new()).await;
}

/// A database written by the version before search: its events are found by
/// origin, its newest events per region are known, and its ledger's files
/// (recorded without a file time) count their modification time.
#[tokio::test]
async fn a_version_8_database_migrates_and_searches() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let t0 = 1_720_000_000_000;
    {
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(&MIGRATIONS[..8].join("\n")).expect("version 8 schema");
        conn.pragma_update(None, "user_version", 8).expect("version");
        conn.execute(
            "INSERT INTO events (account_id, event_id, event_time, region, event_source, event_name, raw, origin_kind, origin_principal)
             VALUES ('111122223333', 'old-1', ?1, 'eu-west-1', 'ec2.amazonaws.com', 'DescribeInstances', ?2, 'iam_user', 'arn:aws:iam::111122223333:user/alice')",
            rusqlite::params![t0, sample_event("111122223333", "old-1", t0).raw],
        )
        .expect("an old event");
        conn.execute(
            "INSERT INTO objects (key, kind, account_id, region, size, modified, status, events, rejected, bytes, attempts, processed_at)
             VALUES ('AWSLogs/111122223333/CloudTrail/eu-west-1/2024/07/03/old.json.gz', 'log', '111122223333', 'eu-west-1', 10, ?1, 'done', 1, 0, 100, 1, 5)",
            [t0 + 60_000],
        )
        .expect("an old ledger entry");
    }
    let store = SqliteStore::open(&path).expect("open and migrate");
    {
        let conn = Connection::open(&path).expect("open");
        assert_eq!(schema::version(&conn).expect("version"), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 11);
    }
    let by_alice = EventFilter { origin_principal: Some("arn:aws:iam::111122223333:user/alice".into()), ..EventFilter::new(t0 - 1, t0 + 1, 10) };
    let page = store.search(&by_alice).await.expect("search");
    assert_eq!(page.hits.iter().map(|h| h.event.event_id.as_str()).collect::<Vec<_>>(), vec!["old-1"], "events stored before the upgrade are found by origin");
    let last = store.last_events().await.expect("last events");
    assert_eq!(last.len(), 1);
    assert_eq!((last[0].region.as_str(), last[0].event_time), ("eu-west-1", t0), "the newest event per region is known after the upgrade");
    let files = store.activity().await.expect("activity");
    assert_eq!((files.len(), files[0].last_file_time, files[0].files), (1, t0 + 60_000, 1), "old ledger rows count their modification time");
}

/// Searching while another task appends: each page sees a committed state,
/// and following the cursor ends with every event of the range once.
#[tokio::test]
async fn a_search_pages_through_while_appends_go_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("trailwatch.db")).expect("open"));
    let t0 = 1_720_000_000_000;
    let batch = move |from: usize| -> Arc<[trailwatch_core::event::Event]> {
        (from..from + 50).map(|i| sample_event("111122223333", &format!("live-{i:05}"), t0 + i as i64 * 1000)).collect::<Vec<_>>().into()
    };
    store.append(batch(0)).await.expect("append");
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for b in 1..20 {
                store.append(batch(b * 50)).await.expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    // Tail the range: after each page, resume after its last hit (a short
    // page included), until the writer is done and a page comes back empty.
    let mut filter = EventFilter::new(t0, t0 + 3_600_000, 7);
    let mut seen = Vec::new();
    loop {
        let done = writer.is_finished();
        let page = store.search(&filter).await.expect("search");
        if let Some(last) = page.hits.last() {
            filter.after = Some(last.cursor);
        }
        let empty = page.hits.is_empty();
        seen.extend(page.hits.into_iter().map(|h| h.event.event_id));
        if empty && done {
            break;
        }
        tokio::task::yield_now().await;
    }
    writer.await.expect("writer");
    let want: Vec<String> = (0..1000).map(|i| format!("live-{i:05}")).collect();
    assert_eq!(seen, want, "every event once, in order, though appends went on between pages");
    assert!(matches!(store.search(&EventFilter::new(t0, t0 + 32 * 86_400_000, 7)).await, Err(PortError::Invalid { .. })));
    let _ = store.activity().await.expect("activity");
}
