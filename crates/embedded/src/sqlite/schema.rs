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
/// - one actor's activity: `(actor_arn, event_time)`;
/// - an API call across the organization: `(event_name, event_time)`;
/// - one origin's activity. Not `(origin_principal, event_time)`: every
///   active principal's end of that index is a page each batch rewrites, and
///   appends ran at half the speed (300 people, 1M events). Led by a minute
///   bucket, `(event_time / 60000, origin_principal)`, it cost about a tenth,
///   and a query seeks each minute of its range.
///
/// The issuing event of an access key and one event by its id are served
/// since `IDENTITY` (the latter as `ARRIVAL_BUCKETS` redid it).
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

/// Who did it, and who was really behind it: the event's actor and its
/// resolved origin. Added columns go after `raw`; records are far smaller
/// than a page, so a row still lives on one page and reading these columns
/// skips over the record's bytes without reading more pages.
///
/// An actor is its three indexed columns (`identity_type`, `actor_arn`,
/// `access_key_id`) plus the rest of it, as JSON; an origin is four indexed
/// columns plus the whole origin, chain included, as JSON. Every event of a
/// session has the same origin, and the same actor but for its key, so those
/// JSON documents are stored once, in `documents`, and events point at them
/// (`actor_doc`, `origin_doc`): an origin with its chain is about 500 bytes,
/// and storing it with every event made appends a third slower. A row with
/// `identity_type` set but no `actor_doc` was written before this step; its
/// actor is read back from `raw` (and its `sharedEventID` was copied by
/// `ARRIVAL_BUCKETS`).
///
/// Two lookups that the time-ordered indexes cannot serve get expression
/// indexes, each led by a coarse time bucket so that an insert lands near the
/// end of the index rather than on a random page (see `HISTORY` for why that
/// matters):
/// - `events_by_id`: an event by account and eventID without its time (an
///   alert's link, a pending event resolved late). Keyed by the event's
///   10-minute bucket and the first 13 characters of its eventID (48 random
///   bits of a UUID; the row is then checked whole). A lookup probes the
///   buckets that hold events (`event_buckets`), newest first. Replaced by
///   `ARRIVAL_BUCKETS`: it cost appends a sixth of their speed.
/// - `events_issued_keys`: the events that issued temporary credentials, by
///   their hour and the access key id in the response, for `SessionArchive`.
///   Partial: only the calls that can issue credentials have an entry, and
///   only their records are read (by SQLite's JSON functions) on insert;
///   `raw` is always JSON, as `Event` is only built from a parsed record.
///   `AssumeRoot` is listed though sessions are not captured from it yet, so
///   that capturing it later needs no new index over all of history.
const IDENTITY: &str = "
-- JSON documents shared by many events, stored once. Never updated: a
-- changed document is another row.
CREATE TABLE documents (
    id   INTEGER PRIMARY KEY,
    hash INTEGER NOT NULL,             -- FNV-1a (64 bits) of json
    json TEXT    NOT NULL
);
CREATE INDEX documents_hash ON documents (hash);

ALTER TABLE events ADD COLUMN actor_doc INTEGER;       -- documents.id: the actor but its indexed columns
ALTER TABLE events ADD COLUMN shared_event_id TEXT;
ALTER TABLE events ADD COLUMN origin_kind TEXT;        -- OriginKind::as_str
ALTER TABLE events ADD COLUMN origin_principal TEXT;
ALTER TABLE events ADD COLUMN origin_account TEXT;
ALTER TABLE events ADD COLUMN confidence TEXT;         -- Confidence::as_str
ALTER TABLE events ADD COLUMN origin_doc INTEGER;      -- documents.id: the whole origin

CREATE INDEX events_by_id ON events (event_time / 600000, substr(event_id, 1, 13));
CREATE TABLE event_buckets (
    bucket INTEGER PRIMARY KEY,        -- event_time / 600000
    events INTEGER NOT NULL
);
INSERT INTO event_buckets (bucket, events) SELECT event_time / 600000, count(*) FROM events GROUP BY 1;

CREATE INDEX events_issued_keys
    ON events (event_time / 3600000,
               coalesce(json_extract(raw, '$.responseElements.credentials.accessKeyId'),
                        json_extract(raw, '$.responseElements.roleCredentials.accessKeyId')))
    WHERE event_name IN ('AssumeRole', 'AssumeRoleWithSAML', 'AssumeRoleWithWebIdentity', 'GetFederationToken',
                         'GetSessionToken', 'GetRoleCredentials', 'AssumeRoot');
";

/// Sessions by access key id and issue time (`SessionStore`). `session` is
/// the whole session as JSON; the other columns are what lookups and pruning
/// read. (`account_only` was dropped by `ARRIVAL_BUCKETS`: merges read the
/// stored session itself.)
const SESSIONS: &str = "
CREATE TABLE sessions (
    access_key_id TEXT    NOT NULL,
    issued_at     INTEGER NOT NULL,    -- ms since the epoch
    expires_at    INTEGER NOT NULL,    -- ms since the epoch
    account_only  INTEGER NOT NULL,
    session       TEXT    NOT NULL,
    PRIMARY KEY (access_key_id, issued_at)
) WITHOUT ROWID;
-- Pruning what is past retention.
CREATE INDEX sessions_expiry ON sessions (expires_at);
";

/// Events waiting for a session (`PendingStore`). `item` is the whole
/// pending item as JSON.
const PENDING: &str = "
CREATE TABLE pending (
    account_id  TEXT    NOT NULL,
    event_id    TEXT    NOT NULL,
    event_time  INTEGER NOT NULL,      -- ms since the epoch
    missing_key TEXT    NOT NULL,
    item        TEXT    NOT NULL,
    PRIMARY KEY (account_id, event_id)
) WITHOUT ROWID;
CREATE INDEX pending_missing_key ON pending (missing_key);
CREATE INDEX pending_event_time ON pending (event_time);
";

/// Corrections to `IDENTITY` and `SESSIONS`:
/// - `events_by_id` is led by the arrival bucket of a row (`seq / 4096`)
///   instead of a 10-minute bucket of its event time. New rows only ever go
///   into the last arrival bucket, a few pages, where late log files spread
///   one batch over the pages of many time buckets: appends ran a sixth
///   faster (1M events), within measuring noise of having no such index. A
///   lookup probes the arrival buckets newest first: a recently stored event
///   (the usual question) is found at once, and one that is not stored costs
///   a probe per 4,096 events. `event_buckets` is no longer needed.
/// - Events stored before `IDENTITY` get their `sharedEventID` from the record.
/// - `sessions.account_only` goes: nothing reads it.
const ARRIVAL_BUCKETS: &str = "
DROP INDEX events_by_id;
DROP TABLE event_buckets;
CREATE INDEX events_by_id ON events (seq / 4096, substr(event_id, 1, 13));

UPDATE events SET shared_event_id = json_extract(raw, '$.sharedEventID')
    WHERE shared_event_id IS NULL AND instr(raw, '\"sharedEventID\"') > 0;

ALTER TABLE sessions DROP COLUMN account_only;
";

/// Alerts (`AlertStore`): each alert as its indexed fields beside the whole
/// alert as JSON, its transitions, and the outbox of deliveries per sink.
///
/// - `alerts_current`: at most one unresolved alert per dedup key, enforced;
///   also how `current` finds it. Partial, like the other `status <>
///   'resolved'` indexes: resolved alerts pile up, the ones the lifecycle
///   works on stay few.
/// - `alerts_listing`: the listing, newest change first; its filters are
///   checked along it (alerts are few next to events).
/// - `alerts_quiet`: unresolved alerts by when they go quiet (`quiet_at` is
///   `last_seen + resolve_after`, NULL when only a person resolves it).
/// - `alerts_origin_event`: unresolved alerts by the event their origin
///   belongs to, for origins resolved late.
/// - A notifying transition keeps the alert as it was right after it
///   (`snapshot`), and its deliveries send that: a delivery retried an hour
///   later still says what happened then. Deliveries done keep their row
///   (`done_at`); `alert_outbox_due` holds only those not done, per sink in
///   the order they are due. `AUTOINCREMENT`: delivery ids never go back,
///   even once old rows are pruned.
const ALERTS: &str = "
CREATE TABLE alerts (
    id                   TEXT    PRIMARY KEY,
    dedup_key            TEXT    NOT NULL,
    status               TEXT    NOT NULL,     -- AlertStatus::as_str
    severity             INTEGER NOT NULL,     -- 0 informational, 1 low, 2 medium, 3 high, 4 critical
    rule_id              TEXT    NOT NULL,
    account_id           TEXT    NOT NULL,
    origin_principal     TEXT,
    origin_event_account TEXT,
    origin_event_id      TEXT,
    first_seen           INTEGER NOT NULL,     -- trail time, ms since the epoch
    last_seen            INTEGER NOT NULL,     -- trail time
    quiet_at             INTEGER,              -- trail time: last_seen + resolve_after
    revision             INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL,     -- wall clock
    alert                TEXT    NOT NULL      -- the whole alert, JSON
);
CREATE UNIQUE INDEX alerts_current ON alerts (dedup_key) WHERE status <> 'resolved';
CREATE INDEX alerts_listing ON alerts (updated_at, id);
CREATE INDEX alerts_quiet ON alerts (quiet_at, id) WHERE status <> 'resolved' AND quiet_at IS NOT NULL;
CREATE INDEX alerts_origin_event ON alerts (origin_event_id, origin_event_account) WHERE status <> 'resolved';

CREATE TABLE alert_transitions (
    alert_id    TEXT    NOT NULL REFERENCES alerts (id),
    revision    INTEGER NOT NULL,
    kind        TEXT    NOT NULL,              -- TransitionKind::as_str
    at          INTEGER NOT NULL,              -- trail time, or wall clock for what a person did
    recorded_at INTEGER NOT NULL,              -- wall clock
    cause       TEXT    NOT NULL,
    by_person   TEXT,
    notify      INTEGER NOT NULL,
    snapshot    TEXT,                          -- the alert right after it, JSON, when it notifies
    PRIMARY KEY (alert_id, revision)
);

CREATE TABLE alert_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sink            TEXT    NOT NULL,
    alert_id        TEXT    NOT NULL,
    revision        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,          -- wall clock
    last_error      TEXT,
    done_at         INTEGER,                   -- wall clock; NULL until delivered
    FOREIGN KEY (alert_id, revision) REFERENCES alert_transitions (alert_id, revision)
);
CREATE INDEX alert_outbox_due ON alert_outbox (sink, next_attempt_at, id) WHERE done_at IS NULL;
";

/// Searching history (`HistoryStore::search`) and ingest health
/// (`Checkpoints::activity`, `HistoryStore::last_events`).
///
/// - A search seeks its time range in `events_time` and checks the other
///   filters on each row (the range is at most 31 days). The one filter that
///   gets its own index is the origin principal, the question "what did this
///   person do": `events_origin`, led by the event's minute so that an insert
///   lands near the end of the index, where the current minute's few pages
///   are (see `HISTORY` for what an index led by the principal cost; led by
///   the hour it dirtied so many pages a batch that appends ran at half
///   speed). A search seeks each minute of its range for the principal
///   (44,640 seeks for 31 days), and within a minute the entries are in
///   (event_time, seq) order, so no sort is needed. Partial: events without
///   a resolved principal have no entry.
/// - `event_regions`: per account and region, the newest event time stored,
///   kept by appends in their own transaction (a few rows a batch) so that the
///   accounts-seen query reads a row per region instead of scanning events.
/// - `objects.file_time`: the time in the file's key (when CloudTrail wrote
///   it), set when an outcome is recorded; NULL for rows recorded before this
///   step, for which the ledger's `modified` stands in.
const SEARCH: &str = "
CREATE INDEX events_origin ON events (event_time / 60000, origin_principal, event_time)
    WHERE origin_principal IS NOT NULL;

CREATE TABLE event_regions (
    account_id      TEXT    NOT NULL,
    region          TEXT    NOT NULL,
    last_event_time INTEGER NOT NULL,     -- ms since the epoch
    PRIMARY KEY (account_id, region)
) WITHOUT ROWID;
INSERT INTO event_regions (account_id, region, last_event_time)
    SELECT account_id, region, max(event_time) FROM events GROUP BY account_id, region;

ALTER TABLE objects ADD COLUMN file_time INTEGER;      -- ms since the epoch, from the key
";

/// Digest verification (log file integrity): each checked digest, each log
/// file a digest lists with how it compared, and the findings, open until a
/// later check clears them.
const INTEGRITY: &str = "
CREATE TABLE integrity_digests (
    key          TEXT    PRIMARY KEY,
    location     TEXT    NOT NULL,          -- s3://bucket/key as the digest names itself
    account_id   TEXT    NOT NULL,
    region       TEXT    NOT NULL,
    start_time   INTEGER NOT NULL,          -- ms since the epoch
    end_time     INTEGER NOT NULL,
    fingerprint  TEXT,
    signature    TEXT    NOT NULL,          -- valid, not-checked, or a finding kind
    chain_ok     INTEGER NOT NULL,
    files        INTEGER NOT NULL,
    checked_at   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX integrity_digests_span ON integrity_digests (account_id, region, start_time);

CREATE TABLE integrity_files (
    key             TEXT PRIMARY KEY,
    digest_key      TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    region          TEXT NOT NULL,
    expected_sha256 TEXT NOT NULL,
    state           TEXT NOT NULL,          -- verified, missing, mismatched
    actual_sha256   TEXT
) WITHOUT ROWID;
CREATE INDEX integrity_files_digest ON integrity_files (digest_key);
CREATE INDEX integrity_files_problems ON integrity_files (account_id, region) WHERE state <> 'verified';

CREATE TABLE integrity_findings (
    kind        TEXT    NOT NULL,           -- FindingKind::as_str
    subject     TEXT    NOT NULL,           -- digest key, log file key, or gap
    account_id  TEXT    NOT NULL,
    region      TEXT    NOT NULL,
    digest      TEXT    NOT NULL,           -- s3://bucket/key of the digest
    detail      TEXT    NOT NULL,
    at          INTEGER NOT NULL,           -- trail time
    opened_at   INTEGER NOT NULL,           -- wall clock
    cleared_at  INTEGER,                    -- NULL while open
    PRIMARY KEY (kind, subject)
) WITHOUT ROWID;
CREATE INDEX integrity_findings_open ON integrity_findings (account_id, region) WHERE cleared_at IS NULL;
";

/// The previous digest each digest names, so that gaps are told from
/// digests not checked yet (NULL: the first of a chain, or checked before
/// this step).
const DIGEST_LINKS: &str = "
ALTER TABLE integrity_digests ADD COLUMN previous TEXT;
";

/// The migration steps, in order: a database at version `n` has had the first `n`.
pub const MIGRATIONS: &[&str] = &[LEDGER, HISTORY, COUNTERS, IDENTITY, SESSIONS, PENDING, ARRIVAL_BUCKETS, ALERTS, SEARCH, INTEGRITY, DIGEST_LINKS];

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
