//! One SQLite database file as event history, the ledger, the session store
//! and archive, the pending set, and alerts with their outbox.
//!
//! The idea: one writer connection, reached through a mutex, does every write,
//! a whole batch per transaction, with cached prepared statements. Reads go to
//! a small pool of separate connections: in WAL mode a reader sees the last
//! committed state and never waits for a writer, so paging through history
//! goes on while a large batch is being written. All SQLite work runs on
//! tokio's blocking pool; no lock is held across an `.await`.
//!
//! Settings: `journal_mode=WAL`, `synchronous=NORMAL` (commits reach the disk
//! at the next checkpoint: a power cut can lose the last ones but never
//! corrupts the file), a busy timeout for other processes sharing the file,
//! `foreign_keys=ON`, 16 KiB pages and 64 MiB checkpoints.
//!
//! Where append time goes: every page is written twice, to the log and then,
//! at the checkpoint, to the database, and a 1 KB record takes about 1.6 KB
//! stored (indexed fields, actor and origin columns, indexes). Each page a
//! batch touches is written whole, so indexes are built for inserts that land
//! near their end (see `schema`). `examples/append_bench.rs` measures appends.
//!
//! Modules: `history` (events, with their actors and origins stored once in
//! `documents`), `ledger`, `sessions` (the session store), `archive` (issuing
//! events found in history), `pending` (events waiting for a session),
//! `alerts` (alerts, their transitions and deliveries), and `schema` (the
//! migration steps).

mod alerts;
mod archive;
mod documents;
mod history;
mod integrity;
mod ledger;
mod pending;
pub mod schema;
mod sessions;

pub use archive::MAX_SESSION_MS;
pub use sessions::DEFAULT_SESSION_RETENTION_MS;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode};
use trailwatch_core::ports::{LedgerSummary, PortError};
use trailwatch_core::time::EpochMillis;

use crate::blocking;

/// How long a statement waits for a lock held by another connection or process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size of a new database. Records are about 1 KiB: 16 KiB pages hold
/// a dozen with little slack, and mean fewer pages to log and to checkpoint
/// than the default 4 KiB (appends measured about 1.5 times faster).
const PAGE_SIZE: i64 = 16 * 1024;
/// Pages in the write-ahead log before the writer copies them into the
/// database (64 MiB). Each checkpoint syncs the disk twice: fewer, larger
/// checkpoints keep appends fast; the log file is cut back to this size after.
const CHECKPOINT_PAGES: i64 = 4096;
/// Page cache of the writer, in KiB: keeps the hot end of the table and its indexes in memory.
const WRITER_CACHE_KIB: i64 = 64 * 1024;
/// Idle read connections kept open for reuse.
const MAX_IDLE_READERS: usize = 4;
/// Prepared statements cached per connection (paging builds a few variants).
const STATEMENT_CACHE: usize = 32;

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory of the database could not be created.
    #[error("cannot create the directory {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    /// SQLite refused to open or set up the file.
    #[error("cannot open the database {}: {source}", path.display())]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    /// The file was written by a newer trailwatch.
    #[error(
        "the database {} has schema version {found}, but this trailwatch knows versions up to {known}: \
         it was written by a newer trailwatch; use that version, or another data directory",
        path.display()
    )]
    TooNew { path: PathBuf, found: i64, known: i64 },
    /// The stored schema version makes no sense.
    #[error("the database {} has an invalid schema version {found}", path.display())]
    BadVersion { path: PathBuf, found: i64 },
    /// A migration step failed; the database stays at the version before it.
    #[error("cannot migrate the database {} to schema version {version}: {source}", path.display())]
    Migration { path: PathBuf, version: i64, source: rusqlite::Error },
}

impl OpenError {
    /// Whether opening again may succeed (the file was locked by another process).
    pub fn is_retryable(&self) -> bool {
        match self {
            OpenError::Sqlite { source, .. } | OpenError::Migration { source, .. } => is_busy(source),
            _ => false,
        }
    }
}

/// What the CLI shows about a store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreStats {
    /// Events in history.
    pub events: u64,
    /// The ledger's counts by status.
    pub ledger: LedgerSummary,
    /// Bytes on disk: the database file and its write-ahead log.
    pub file_bytes: u64,
}

/// Event history, the ledger, sessions and pending events in one SQLite
/// file: [`HistoryStore`](trailwatch_core::HistoryStore),
/// [`Checkpoints`](trailwatch_core::Checkpoints),
/// [`SessionStore`](trailwatch_core::identity::SessionStore),
/// [`SessionArchive`](trailwatch_core::identity::SessionArchive),
/// [`PendingStore`](trailwatch_core::identity::PendingStore) and
/// [`AlertStore`](trailwatch_core::alerts::AlertStore). Cheap to clone:
/// clones share the connections.
///
/// Appends are idempotent on the event's account and `eventID`, checked
/// together with its `eventTime` (see the schema for why): a duplicate that
/// CloudTrail delivers again, or a file read twice, repeats the record whole
/// and is counted as a duplicate; two records sharing an account and
/// `eventID` but not a time would both be kept.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// How long sessions are kept after they expire, in ms.
    session_retention: EpochMillis,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// The documents the writer stored lately. Locked only while holding
    /// `writer`, after it.
    documents: Mutex<documents::DocumentCache>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic inside a transaction rolled it back when the transaction was
    // dropped: the connection behind a poisoned lock is still sound.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SqliteStore {
    /// Opens the database at `path`, creating its directory and the file if
    /// needed, and brings its schema up to date. Blocking: call it at start-up
    /// or from `spawn_blocking`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        let path = path.as_ref().to_owned();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir { dir: dir.to_owned(), source })?;
        }
        let sqlite = |source| OpenError::Sqlite { path: path.clone(), source };
        let mut writer = Connection::open(&path).map_err(sqlite)?;
        configure(&writer).map_err(sqlite)?;
        // Only takes effect while the file is still empty, so before anything else.
        writer.pragma_update(None, "page_size", PAGE_SIZE).map_err(sqlite)?;
        // Changing the journal mode needs no transaction open: done here, once, by the writer.
        let mode: String = writer.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0)).map_err(sqlite)?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(db = %path.display(), mode, "the database is not in WAL mode: readers will wait for writers");
        }
        writer.pragma_update(None, "synchronous", "NORMAL").map_err(sqlite)?;
        writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB).map_err(sqlite)?;
        writer.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES).map_err(sqlite)?;
        writer.pragma_update(None, "journal_size_limit", CHECKPOINT_PAGES * PAGE_SIZE).map_err(sqlite)?;
        writer.pragma_update(None, "foreign_keys", true).map_err(sqlite)?;
        schema::migrate(&mut writer, &path)?;
        let mut inner = Inner { path: path.clone(), writer: Mutex::new(writer), readers: Mutex::new(Vec::new()), documents: Mutex::default() };
        // Open one reader now, so a problem with reading shows at start-up.
        let reader = inner.open_reader().map_err(sqlite)?;
        inner.readers = Mutex::new(vec![reader]);
        Ok(SqliteStore { inner: Arc::new(inner), session_retention: DEFAULT_SESSION_RETENTION_MS })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Events, ledger counts and size on disk. Blocking: call it from
    /// `spawn_blocking` in async code.
    pub fn stats(&self) -> Result<StoreStats, PortError> {
        let (events, ledger) = self.inner.read(|conn| Ok((history::count(conn)?, ledger::summary(conn)?)))?;
        let size = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = self.inner.path.clone().into_os_string();
        wal.push("-wal");
        let file_bytes = size(self.inner.path.clone()) + size(PathBuf::from(wal));
        Ok(StoreStats { events, ledger, file_bytes })
    }

    /// Runs `work` on the writer connection, on the blocking pool.
    async fn write<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(self.inner.path.display().to_string(), move || inner.write(work)).await
    }

    /// Runs `work` on a read connection, on the blocking pool.
    async fn read<T, F>(&self, work: F) -> Result<T, PortError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(self.inner.path.display().to_string(), move || inner.read(work)).await
    }
}

impl Inner {
    fn write<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, PortError> {
        let mut conn = lock(&self.writer);
        work(&mut conn).map_err(|e| self.error(e))
    }

    fn read<T>(&self, work: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T, PortError> {
        let idle = lock(&self.readers).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => self.open_reader().map_err(|e| self.error(e))?,
        };
        let result = work(&mut conn);
        let mut idle = lock(&self.readers);
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result.map_err(|e| self.error(e))
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open(&self.path)?;
        configure(&conn)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }

    fn error(&self, e: rusqlite::Error) -> PortError {
        port_error(&self.path, e)
    }
}

/// A SQLite error as a port error naming the database file.
fn port_error(path: &Path, e: rusqlite::Error) -> PortError {
    let retryable = is_busy(&e);
    PortError::backend(path.display().to_string(), e, retryable)
}

/// Settings of every connection.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Another connection holds the lock: trying again later may succeed.
/// Everything else (constraint, corruption, full disk, bad SQL) will not.
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// A stored value this code cannot read back: the file was changed by hand,
/// or by a newer trailwatch with the same schema version.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}`: {message}")]
struct BadValue {
    column: &'static str,
    message: String,
}

/// Reads column `idx` (named `column`, for messages) and converts it with `convert`.
fn decode<S: rusqlite::types::FromSql, T>(
    row: &rusqlite::Row<'_>,
    idx: usize,
    column: &'static str,
    convert: impl FnOnce(S) -> Result<T, String>,
) -> rusqlite::Result<T> {
    let stored: S = row.get(idx)?;
    convert(stored).map_err(|message| rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(BadValue { column, message })))
}

/// Reads a count or size stored as a SQLite integer.
fn unsigned(row: &rusqlite::Row<'_>, idx: usize, column: &'static str) -> rusqlite::Result<u64> {
    decode(row, idx, column, |v: i64| u64::try_from(v).map_err(|_| format!("negative value {v}")))
}

/// A count or size as a SQLite integer (saturating: SQLite integers are signed).
fn signed(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::ffi;

    fn failure(code: i32) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(ffi::Error::new(code), None)
    }

    #[test]
    fn locks_are_retryable_and_damage_is_not() {
        let path = Path::new("/data/trailwatch.db");
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            assert!(port_error(path, failure(code)).is_retryable());
        }
        for code in [ffi::SQLITE_CONSTRAINT, ffi::SQLITE_CORRUPT, ffi::SQLITE_FULL, ffi::SQLITE_NOTADB] {
            let e = port_error(path, failure(code));
            assert!(!e.is_retryable(), "{e}");
            assert!(e.to_string().starts_with("/data/trailwatch.db: "), "{e}");
        }
    }
}
