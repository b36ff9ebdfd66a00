//! The database schema, as an ordered list of migration steps.
//!
//! `PRAGMA user_version` holds how many steps a database has had. Opening
//! applies the missing ones in order, each in its own transaction together
//! with the version bump, so a crash leaves the database at a whole step. A
//! released step is never edited: a change to the schema is a new step at the
//! end. A database whose version is beyond the list was written by a newer
//! trailwatch and is refused rather than guessed at.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::OpenError;

/// The ledger: one row per object of the trail, updated in place when the
/// object is read again (so its id, and the rejects pointing at it, stay put).
const LEDGER: &str = "
CREATE TABLE objects (
    id           INTEGER PRIMARY KEY,
    key          TEXT    NOT NULL UNIQUE,
    kind         TEXT    NOT NULL,          -- ObjectKind::as_str
    account_id   TEXT    NOT NULL,
    region       TEXT    NOT NULL,
    size         INTEGER NOT NULL,          -- as listed; with `modified`, tells a changed object
    modified     INTEGER NOT NULL,          -- ms since the epoch
    status       TEXT    NOT NULL,          -- FileStatus::as_str
    events       INTEGER NOT NULL,
    rejected     INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,          -- decompressed bytes read
    attempts     INTEGER NOT NULL,
    error        TEXT,
    processed_at INTEGER NOT NULL           -- ms since the epoch
);
-- `problems`, newest first. Partial: it holds only the problems, not every object.
CREATE INDEX objects_problems ON objects (processed_at DESC, key)
    WHERE status IN ('failed', 'partial', 'empty');

-- Records rejected from an object, kept whole; replaced with the object's entry.
CREATE TABLE rejects (
    object_id    INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    record_index INTEGER NOT NULL,
    event_id     TEXT,
    reason       TEXT    NOT NULL,
    raw          TEXT    NOT NULL
);
-- Entries are (object_id, rowid): one object's rejects come back in the order recorded.
CREATE INDEX rejects_object ON rejects (object_id);
";

/// Event history. The small indexed fields come first and `raw` last, so
/// reading the fields never touches the record's bytes.
///
/// Indexes are kept to what writes and paging need, because every index costs
/// each insert. Filters later issues add will want, each with its own step:
/// - events of one account in time order: `(account_id, event_time)` (paging
///   with an account filter scans the time index until then);
/// - the issuing event of an access key (`SessionArchive`):
///   `(access_key_id) WHERE access_key_id IS NOT NULL`;
/// - one actor's activity: `(actor_arn, event_time)`;
/// - one event by its id (an alert's link): `(event_id)`;
/// - an API call across the organization: `(event_name, event_time)`.
const HISTORY: &str = "
CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,     -- arrival order: breaks ties of event_time
    account_id    TEXT    NOT NULL,
    event_id      TEXT    NOT NULL,
    event_time    INTEGER NOT NULL,        -- ms since the epoch
    region        TEXT    NOT NULL,
    event_source  TEXT    NOT NULL,
    event_name    TEXT    NOT NULL,
    identity_type TEXT,
    actor_arn     TEXT,
    access_key_id TEXT,
    source_ip     TEXT,
    error_code    TEXT,
    read_only     INTEGER,                 -- 0, 1 or NULL when the record does not say
    raw           TEXT    NOT NULL         -- the record's JSON, byte for byte
);
-- Idempotent appends: an event is its eventID within its account. The key
-- leads with the event's time: eventIDs are random UUIDs, and an index led by
-- them sends every insert to a random page, which once the index outgrows the
-- cache costs a read and a page write per event (appends ran at under a
-- third of the speed by one million events). A delivered duplicate repeats the record
-- whole, time included, so this key finds the same duplicates while inserts
-- stay near the end of the index, where events arrive.
CREATE UNIQUE INDEX events_identity ON events (event_time, account_id, event_id);
-- Time-ordered paging. An index entry ends with the rowid, which is `seq`:
-- this index is ordered by (event_time, seq) without storing seq twice.
CREATE INDEX events_time ON events (event_time);
";

/// Counters kept in the same transactions as the rows they count, so that
/// `count()` reads one row instead of scanning millions.
const COUNTERS: &str = "
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value) SELECT 'events', count(*) FROM events;
";

/// The migration steps, in order: a database at version `n` has had the first `n`.
pub const MIGRATIONS: &[&str] = &[LEDGER, HISTORY, COUNTERS];

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version of an open database.
pub fn version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database at `path` to [`SCHEMA_VERSION`], one step per
/// transaction. The version is read inside each step's write transaction, so
/// two processes opening the same new file do not both apply a step.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite = |source| OpenError::Sqlite { path: path.to_owned(), source };
    let start = version(conn).map_err(sqlite)?;
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sqlite)?;
        let found = version(&tx).map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(OpenError::TooNew { path: path.to_owned(), found, known: SCHEMA_VERSION });
        }
        let Some(step) = usize::try_from(found).ok().and_then(|i| MIGRATIONS.get(i)) else {
            if found < 0 {
                return Err(OpenError::BadVersion { path: path.to_owned(), found });
            }
            break; // up to date
        };
        let next = found + 1;
        let failed = |source| OpenError::Migration { path: path.to_owned(), version: next, source };
        tx.execute_batch(step).map_err(failed)?;
        tx.pragma_update(None, "user_version", next).map_err(failed)?;
        tx.commit().map_err(failed)?;
    }
    if start < SCHEMA_VERSION {
        tracing::info!(db = %path.display(), from = start, to = SCHEMA_VERSION, "migrated the database schema");
    }
    Ok(())
}
