//! The session archive: the event that issued an access key, found in stored
//! history through the `events_issued_keys` index (see the schema), and read
//! back into a [`Session`] by the same capture the collector uses.
//!
//! A key is looked for only in the hours its session can have been issued
//! in: from [`MAX_SESSION_MS`] (plus slack) before the time it was used, to
//! a little after. AWS reuses key ids, so every candidate is checked for a
//! window that covers that time; of those, the latest issued wins, and the
//! two copies of a cross-account call are merged like the session store does.

use async_trait::async_trait;
use rusqlite::Connection;
use trailwatch_core::identity::{capture, Session, SessionArchive, WINDOW_SLACK_MS};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;
use trailwatch_core::view::RecordView;

use super::SqliteStore;

/// The longest credentials live: `GetSessionToken` and `GetFederationToken`
/// issue them for up to 36 hours (roles for up to 12).
pub const MAX_SESSION_MS: EpochMillis = 36 * HOUR_MS;

/// The width of the time buckets that lead `events_issued_keys`, as the
/// schema writes it (`event_time / 3600000`).
const HOUR_MS: EpochMillis = 3_600_000;

/// The issuing events of one key in one hour. The expressions and the
/// `event_name` list are the partial index's own, so SQLite uses it.
const ISSUED_IN_HOUR: &str = "
SELECT account_id, raw FROM events
WHERE event_name IN ('AssumeRole', 'AssumeRoleWithSAML', 'AssumeRoleWithWebIdentity', 'GetFederationToken',
                     'GetSessionToken', 'GetRoleCredentials', 'AssumeRoot')
  AND event_time / 3600000 = ?1
  AND coalesce(json_extract(raw, '$.responseElements.credentials.accessKeyId'),
               json_extract(raw, '$.responseElements.roleCredentials.accessKeyId')) = ?2";

fn find(conn: &mut Connection, access_key_id: &str, at: EpochMillis) -> rusqlite::Result<Option<Session>> {
    // One read transaction: every hour probed in the same state of history.
    let tx = conn.transaction()?;
    let mut found: Option<Session> = None;
    {
        let mut select = tx.prepare_cached(ISSUED_IN_HOUR)?;
        let first = at.saturating_sub(MAX_SESSION_MS + WINDOW_SLACK_MS) / HOUR_MS;
        let last = at.saturating_add(WINDOW_SLACK_MS) / HOUR_MS;
        for hour in first..=last {
            let mut rows = select.query(rusqlite::params![hour, access_key_id])?;
            while let Some(row) = rows.next()? {
                let (account, raw): (String, String) = (row.get(0)?, row.get(1)?);
                let Some(session) = issued(&raw, &account).filter(|s| s.access_key_id == access_key_id && s.valid_at(at)) else { continue };
                match &mut found {
                    Some(best) if best.same_issue(&session) => best.merge(&session),
                    Some(best) if best.issued_at >= session.issued_at => {}
                    _ => found = Some(session),
                }
            }
        }
    }
    tx.commit()?;
    Ok(found)
}

/// The session a stored record issued, if it did.
fn issued(raw: &str, account: &str) -> Option<Session> {
    let view = RecordView::parse(raw.as_bytes()).ok()?;
    capture(&view, account)
}

#[async_trait]
impl SessionArchive for SqliteStore {
    async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError> {
        let key = access_key_id.to_owned();
        self.read(move |conn| find(conn, &key, at)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hour_is_one_seek_of_the_partial_index() {
        let conn = Connection::open_in_memory().expect("memory database");
        conn.execute_batch(super::super::schema::MIGRATIONS.join("\n").as_str()).expect("schema");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {ISSUED_IN_HOUR}"))
            .expect("explain")
            .query_map(rusqlite::params![1, "ASIA"], |row| row.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows");
        let plan = plan.join("; ");
        assert!(plan.contains("USING INDEX events_issued_keys (<expr>=? AND <expr>=?)"), "{plan}");
    }
}
