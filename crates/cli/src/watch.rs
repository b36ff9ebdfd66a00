//! Wakes the collector of `trailwatch run` when a log file lands in the
//! watched trail directory (inotify on Linux), so a file is read within
//! milliseconds of appearing instead of at the next scan. A file counts as
//! landed when it is closed after writing or renamed into place, the two
//! ways files arrive whole; the interval scan stays, and catches whatever the
//! watcher misses (a hard link, an event lost when the kernel's queue overflowed).

use std::path::Path;
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::Notify;
use tracing::warn;

/// Whether the event is a file arriving whole: closed after writing, or renamed into place.
fn landed(event: &notify::Event) -> bool {
    let arrived = matches!(event.kind, EventKind::Access(AccessKind::Close(AccessMode::Write)) | EventKind::Modify(ModifyKind::Name(_)));
    arrived && event.paths.iter().any(|p| p.to_str().is_some_and(|s| s.ends_with(".json.gz") || s.ends_with(".json")))
}

/// Watches `trail` and everything under it (directories created later
/// included); `wake` is told of every file that lands. Keep the returned
/// watcher: dropping it stops the watch.
pub fn watch(trail: &Path, wake: Arc<Notify>) -> notify::Result<RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
        Ok(event) if landed(&event) => wake.notify_one(),
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "watching the trail directory: events may have been lost; scanning now");
            wake.notify_one();
        }
    })?;
    watcher.watch(trail, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A file renamed into a new day's directory wakes the collector; a
    /// temporary file being written does not.
    #[tokio::test]
    async fn a_file_renamed_into_place_wakes_the_collector() {
        let tmp = tempfile::tempdir().unwrap();
        let wake = Arc::new(Notify::new());
        let _watcher = watch(tmp.path(), wake.clone()).unwrap();
        let day = tmp.path().join("AWSLogs/o-a1b2c3d4e5/111122223333/CloudTrail/us-east-1/2026/11/30");
        std::fs::create_dir_all(&day).unwrap();
        // Let the watcher add the new directories before writing into them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        std::fs::write(day.join("part.tmp"), b"not yet").unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(300), wake.notified()).await.is_err(), "a temporary file is not a log file");
        std::fs::rename(day.join("part.tmp"), day.join("111122223333_CloudTrail_us-east-1_20261130T1200Z_AbCdEf0123456789.json.gz")).unwrap();
        tokio::time::timeout(Duration::from_secs(5), wake.notified()).await.expect("woken by the rename");
    }
}
