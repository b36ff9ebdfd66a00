//! Alerts in SQLite: the shared conformance suite, and what a user notices:
//! deliveries outlive a restart, an older database gains the alert tables,
//! two processes raising the same alert raise it once.

use std::path::Path;
use std::sync::Arc;

use trailwatch_core::alerts::conformance::{self, sample_detection};
use trailwatch_core::alerts::{AlertQuery, AlertStatus, AlertStore, Detection, Lifecycle, LifecycleConfig, TransitionKind};
use trailwatch_core::conformance::sample_event;
use trailwatch_core::ports::{HistoryQuery, HistoryStore};
use trailwatch_embedded::sqlite::schema::{self, MIGRATIONS, SCHEMA_VERSION};
use trailwatch_embedded::SqliteStore;

const T0: i64 = 1_730_000_000_000;
const HOUR: i64 = 3_600_000;
const WALL: i64 = 1_760_000_000_000;

fn alice(event_id: &str, at: i64) -> Detection {
    sample_detection("console-signin-without-mfa", "alice", event_id, at)
}

fn lifecycle(store: &SqliteStore) -> Lifecycle {
    Lifecycle::new(Arc::new(store.clone()), vec!["webhook".into(), "stdout".into()], LifecycleConfig::default())
}

#[tokio::test]
async fn sqlite_alert_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance::alert_store(|| {
        let path = dir.path().join(format!("alerts-{}.db", n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
        async move { Arc::new(SqliteStore::open(path).expect("open")) as Arc<dyn AlertStore> }
    })
    .await;
}

#[tokio::test]
async fn deliveries_and_alerts_survive_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let key = alice("x", 0).dedup_key;
    {
        let store = SqliteStore::open(&path).expect("open");
        let alerts = lifecycle(&store);
        // Opened, resolved by a match 25 h later, and a new one opened: one write.
        alerts.apply(&[alice("ev-1", T0), alice("ev-2", T0 + 25 * HOUR)], WALL).await.expect("apply");
    }
    let store = SqliteStore::open(&path).expect("reopen");
    assert_eq!(store.outstanding().await.expect("outstanding").get("webhook"), Some(&3));
    let due = store.due("webhook", WALL, 10).await.expect("due");
    assert_eq!(
        due.iter().map(|d| (d.transition.kind, d.alert.status, d.alert.revision)).collect::<Vec<_>>(),
        vec![
            (TransitionKind::Opened, AlertStatus::Open, 1),
            (TransitionKind::Resolved, AlertStatus::Resolved, 2),
            (TransitionKind::Opened, AlertStatus::Open, 1)
        ],
        "queued deliveries outlive a restart, each with the alert as it was"
    );
    assert_eq!(due[1].transition.cause, "no match for 24h");
    let current = store.current(std::slice::from_ref(&key)).await.expect("current");
    assert_eq!(current.get(&key).map(|a| a.id.as_str()), Some(due[2].alert.id.as_str()), "the new alert is current after a restart");

    store.retry_later(due[0].id, WALL + 60_000, "HTTP 502").await.expect("retry later");
    store.delivered(&[due[1].id, due[2].id], WALL + 1000).await.expect("delivered");
    drop(store);

    let store = SqliteStore::open(&path).expect("reopen");
    assert!(store.due("webhook", WALL + 59_999, 10).await.expect("due").is_empty(), "delivered stays delivered; a retry waits for its time");
    let retried = store.due("webhook", WALL + 60_000, 10).await.expect("due");
    assert_eq!(retried.len(), 1);
    assert_eq!((retried[0].id, retried[0].attempts, retried[0].last_error.as_deref()), (due[0].id, 1, Some("HTTP 502")));
    assert_eq!(store.due("stdout", WALL, 10).await.expect("due").len(), 3, "each sink keeps its own deliveries");

    // The lifecycle carries on where it was.
    let alerts = lifecycle(&store);
    let report = alerts.apply(&[alice("ev-3", T0 + 27 * HOUR)], WALL + 2000).await.expect("apply");
    assert_eq!((report.opened, report.updated), (0, 1));
    assert_eq!(alerts.sweep(T0 + 60 * HOUR, WALL + 3000).await.expect("sweep"), 1);
    let all = store.list(&AlertQuery { limit: 10, ..Default::default() }).await.expect("list").alerts;
    assert_eq!(all.iter().map(|a| (a.status, a.count)).collect::<Vec<_>>(), vec![(AlertStatus::Resolved, 2), (AlertStatus::Resolved, 1)]);
}

#[tokio::test]
async fn a_version_7_database_gains_the_alert_tables_and_keeps_its_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    let stored = sample_event("111111111111", "ev-before-alerts", T0);
    {
        let store = SqliteStore::open(&path).expect("create");
        store.append(vec![stored.clone()].into()).await.expect("append");
    }
    // Take the file back to version 7, as a trailwatch before alerts left it.
    {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.execute_batch(
            "DROP TABLE alert_outbox; DROP TABLE alert_transitions; DROP TABLE alerts; DELETE FROM sqlite_sequence WHERE name = 'alert_outbox';
             DROP INDEX events_origin; DROP TABLE event_regions; ALTER TABLE objects DROP COLUMN file_time;
             DROP TABLE integrity_digests; DROP TABLE integrity_files; DROP TABLE integrity_findings;",
        )
        .expect("drop what came after version 7");
        conn.pragma_update(None, "user_version", 7).expect("version 7");
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'alert%'", [], |row| row.get(0)).expect("count");
        assert_eq!(tables, 0);
    }
    assert!(MIGRATIONS[7].contains("CREATE TABLE alerts"), "alerts are step 8");
    let store = SqliteStore::open(&path).expect("open migrates");
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    assert_eq!(schema::version(&conn).expect("version"), SCHEMA_VERSION);
    let page = store.page(&HistoryQuery { limit: 10, ..Default::default() }).await.expect("page");
    assert_eq!(page.events, vec![stored], "history is kept");
    let report = lifecycle(&store).apply(&[alice("ev-1", T0)], WALL).await.expect("alerts work after the migration");
    assert_eq!(report.opened, 1);
    assert_eq!(store.outstanding().await.expect("outstanding").get("stdout"), Some(&1));
}

#[tokio::test]
async fn a_version_7_database_written_from_the_steps_migrates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    write_version(&path, 7);
    let store = SqliteStore::open(&path).expect("open migrates");
    assert_eq!(lifecycle(&store).apply(&[alice("ev-1", T0)], WALL).await.expect("apply").opened, 1);
    let conn = rusqlite::Connection::open(&path).expect("inspect");
    assert_eq!(schema::version(&conn).expect("version"), SCHEMA_VERSION);
    let unique: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'alerts_current'", [], |row| row.get(0)).expect("the unique index of current alerts");
    assert!(unique.contains("UNIQUE") && unique.contains("status <> 'resolved'"), "{unique}");
}

/// A database as a trailwatch with the first `version` steps wrote it.
fn write_version(path: &Path, version: usize) {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(&MIGRATIONS[..version].join("\n")).expect("old schema");
    conn.pragma_update(None, "user_version", version as i64).expect("version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_raising_the_same_alert_raise_it_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("trailwatch.db");
    // Two stores on one file: two processes, each with its own connections.
    let first = SqliteStore::open(&path).expect("open");
    let second = SqliteStore::open(&path).expect("open again");
    let config = LifecycleConfig { max_attempts: 50, ..LifecycleConfig::default() };
    let lifecycles = [first, second].map(|store| Arc::new(Lifecycle::new(Arc::new(store), vec!["webhook".into()], config.clone())));
    let mut tasks = Vec::new();
    for (n, lifecycle) in lifecycles.iter().enumerate() {
        let lifecycle = Arc::clone(lifecycle);
        tasks.push(tokio::spawn(async move {
            for i in 0..40 {
                let at = T0 + i * 1000;
                lifecycle.apply(&[alice(&format!("ev-{n}-{i}"), at)], WALL + i).await.expect("apply");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let store = SqliteStore::open(&path).expect("inspect");
    let alerts = store.list(&AlertQuery { limit: 10, ..Default::default() }).await.expect("list").alerts;
    assert_eq!(alerts.len(), 1, "one alert for the key, whoever opened it");
    assert_eq!(alerts[0].count, 80, "every match of both is counted once");
    let transitions = store.transitions(&alerts[0].id).await.expect("transitions");
    assert_eq!(transitions.len() as u64, alerts[0].revision);
    assert_eq!(transitions.iter().filter(|t| t.kind == TransitionKind::Opened).count(), 1);
}
