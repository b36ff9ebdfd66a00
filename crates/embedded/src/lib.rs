//! trailwatch-embedded: the adapters of the single-machine mode.
//!
//! - [`DirSource`]: a local directory laid out like the trail bucket, as the
//!   [`LogSource`](trailwatch_core::LogSource).
//! - [`SqliteStore`]: one SQLite database file holding event history, the
//!   ledger of processed objects, sessions and the events waiting for them,
//!   and alerts with their outbox
//!   ([`HistoryStore`](trailwatch_core::HistoryStore),
//!   [`Checkpoints`](trailwatch_core::Checkpoints),
//!   [`SessionStore`](trailwatch_core::identity::SessionStore),
//!   [`SessionArchive`](trailwatch_core::identity::SessionArchive),
//!   [`PendingStore`](trailwatch_core::identity::PendingStore),
//!   [`AlertStore`](trailwatch_core::alerts::AlertStore)).
//! - [`sinks`]: where alerts go: [`StdoutSink`], [`JsonlSink`], [`WebhookSink`]
//!   (generic JSON or PagerDuty Events API v2).
//!
//! The directory source, the store and the file sink keep blocking work
//! (file system, SQLite) on tokio's blocking pool, so the services' async
//! tasks never wait on a disk.

pub mod dir;
pub mod sinks;
pub mod sqlite;

pub use dir::DirSource;
pub use sinks::{JsonlSink, StdoutFormat, StdoutSink, TransitionRecord, WebhookConfig, WebhookFormat, WebhookSink};
pub use sqlite::{OpenError, SqliteStore, StoreStats, DEFAULT_SESSION_RETENTION_MS, MAX_SESSION_MS};

use trailwatch_core::ports::PortError;

/// Runs blocking work on tokio's blocking pool. `what` names the file or
/// database the work is about, for the error if the task dies.
pub(crate) async fn blocking<T, F>(what: String, work: F) -> Result<T, PortError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, PortError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(PortError::backend(what, format!("blocking task failed: {e}"), false)),
    }
}
