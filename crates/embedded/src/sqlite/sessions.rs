//! Sessions in the `sessions` table, keyed by access key id and issue time.
//!
//! The two copies of a cross-account call name the same key and issue time:
//! the second one stored is merged into the first ([`Session::merge`]), so
//! the caller's full identity wins over an `AWSAccount`-only caller whatever
//! the order they arrive in. Like DynamoDB's TTL, expired rows may stay a
//! while; reads filter them out and [`SqliteStore::prune_sessions`] deletes
//! them.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use trailwatch_core::identity::{Session, SessionStore, WINDOW_SLACK_MS};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::documents::to_json;
use super::{decode, SqliteStore};

/// How long a session is kept after its credentials expire, unless
/// configured otherwise: long enough for late log files and pending events.
pub const DEFAULT_SESSION_RETENTION_MS: EpochMillis = 7 * 24 * 3_600_000;

const SELECT_ONE: &str = "SELECT session FROM sessions WHERE access_key_id = ?1 AND issued_at = ?2";

const UPSERT: &str = "
INSERT INTO sessions (access_key_id, issued_at, expires_at, session) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (access_key_id, issued_at) DO UPDATE SET expires_at = excluded.expires_at, session = excluded.session";

/// The latest session of a key valid at `?2` and retained at `?3`: a seek on
/// the primary key to the key's sessions issued up to `?2` (plus slack),
/// newest first, stopping at the first that is still valid.
const VALID_AT: &str = "
SELECT session FROM sessions
WHERE access_key_id = ?1 AND issued_at <= ?2 + ?4 AND expires_at >= ?2 - ?4 AND expires_at >= ?3 - ?5
ORDER BY issued_at DESC
LIMIT 1";

const PRUNE: &str = "DELETE FROM sessions WHERE expires_at < ?1";

fn parse(json: String) -> Result<Session, String> {
    serde_json::from_str(&json).map_err(|e| format!("invalid session JSON: {e}"))
}

fn put(conn: &mut Connection, sessions: &[Session]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut select = tx.prepare_cached(SELECT_ONE)?;
        let mut upsert = tx.prepare_cached(UPSERT)?;
        for session in sessions {
            let stored = select.query_row(params![session.access_key_id, session.issued_at], |row| decode(row, 0, "sessions.session", parse)).optional()?;
            let merged = match stored {
                Some(stored) => {
                    let mut merged = stored.clone();
                    merged.merge(session);
                    if merged == stored {
                        continue; // the same copy again: nothing to write
                    }
                    merged
                }
                None => session.clone(),
            };
            upsert.execute(params![merged.access_key_id, merged.issued_at, merged.expires_at, to_json(&merged)?])?;
        }
    }
    tx.commit()
}

fn get(conn: &Connection, access_key_id: &str, at: EpochMillis, now: EpochMillis, retention: EpochMillis) -> rusqlite::Result<Option<Session>> {
    conn.prepare_cached(VALID_AT)?
        .query_row(params![access_key_id, at, now, WINDOW_SLACK_MS, retention], |row| decode(row, 0, "sessions.session", parse))
        .optional()
}

impl SqliteStore {
    /// Keeps sessions for `retention` after their credentials expire
    /// (default [`DEFAULT_SESSION_RETENTION_MS`]): `get` ignores, and
    /// [`prune_sessions`](Self::prune_sessions) deletes, sessions past that.
    pub fn with_session_retention(mut self, retention: EpochMillis) -> Self {
        self.session_retention = retention.max(0);
        self
    }

    /// Deletes the sessions whose retention has passed at `now`; returns how
    /// many. Reads already ignore them: this only gives the space back, so
    /// the service calls it now and then (hourly, say).
    pub async fn prune_sessions(&self, now: EpochMillis) -> Result<u64, PortError> {
        let before = now.saturating_sub(self.session_retention);
        self.write(move |conn| Ok(conn.prepare_cached(PRUNE)?.execute([before])? as u64)).await
    }
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn put(&self, sessions: Arc<[Session]>) -> Result<(), PortError> {
        if sessions.is_empty() {
            return Ok(());
        }
        self.write(move |conn| put(conn, &sessions)).await
    }

    async fn get(&self, access_key_id: &str, at: EpochMillis, now: EpochMillis) -> Result<Option<Session>, PortError> {
        let key = access_key_id.to_owned();
        let retention = self.session_retention;
        self.read(move |conn| get(conn, &key, at, now, retention)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_seeks_the_primary_key_without_sorting() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {VALID_AT}"))
            .expect("explain")
            .query_map(params!["ASIA", 1, 2, 3, 4], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("PRIMARY KEY (access_key_id=? AND issued_at<?)") && !plan.contains("TEMP B-TREE"), "{plan}");
    }
}
