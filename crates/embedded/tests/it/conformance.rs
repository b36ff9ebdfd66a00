use std::fs;

use trailwatch_core::conformance;
use trailwatch_embedded::{DirSource, SqliteStore};

#[tokio::test]
async fn sqlite_history_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::history_store(&store).await;
}

#[tokio::test]
async fn sqlite_checkpoints_conform() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::checkpoints(&store).await;
}

#[tokio::test]
async fn sqlite_session_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::session_store(&store).await;
}

#[tokio::test]
async fn sqlite_pending_store_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("trailwatch.db")).expect("open");
    conformance::pending_store(&store).await;
}

#[tokio::test]
async fn dir_source_conforms() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_owned();
    let source = DirSource::new(&root);
    conformance::log_source(&source, &move |key, bytes| {
        let path = root.join(key);
        fs::create_dir_all(path.parent().expect("keys have a folder")).expect("create folder");
        fs::write(path, bytes).expect("write object");
    })
    .await;
}
