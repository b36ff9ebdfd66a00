//! Digest verification state (`integrity_*` tables): the
//! [`IntegrityStore`] of embedded mode. Completeness joins the files the
//! digests list with the ledger (`objects`), so it says which listed files
//! the pipeline has read too.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use trailwatch_core::integrity::{Completeness, DigestRecord, DigestSpan, FileState, Finding, FindingKind, IntegrityStore, ListedFile, Neighbours};
use trailwatch_core::ports::PortError;
use trailwatch_core::time::EpochMillis;

use super::{decode, signed, unsigned, SqliteStore};

const UPSERT_DIGEST: &str = "
INSERT OR REPLACE INTO integrity_digests
    (key, location, account_id, region, start_time, end_time, fingerprint, signature, chain_ok, files, checked_at, previous)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";

const UPSERT_FILE: &str = "
INSERT OR REPLACE INTO integrity_files (key, digest_key, account_id, region, expected_sha256, state, actual_sha256)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const PROBLEM_FILES: &str = "
SELECT key, digest_key, account_id, region, expected_sha256, state, actual_sha256 FROM integrity_files
WHERE account_id = ?1 AND region = ?2 AND state <> 'verified' ORDER BY key";

const BEFORE: &str = "SELECT key, location, start_time, end_time, previous, chain_ok FROM integrity_digests
WHERE account_id = ?1 AND region = ?2 AND start_time < ?3 ORDER BY start_time DESC, key DESC LIMIT 1";
const AFTER: &str = "SELECT key, location, start_time, end_time, previous, chain_ok FROM integrity_digests
WHERE account_id = ?1 AND region = ?2 AND start_time > ?3 ORDER BY start_time, key LIMIT 1";

const FINDING_COLUMNS: &str = "kind, account_id, region, subject, digest, detail, at";

fn finding(row: &rusqlite::Row<'_>) -> rusqlite::Result<Finding> {
    Ok(Finding {
        kind: decode(row, 0, "integrity_findings.kind", |s: String| FindingKind::parse(&s).ok_or_else(|| format!("unknown finding kind {s:?}")))?,
        account_id: row.get(1)?,
        region: row.get(2)?,
        subject: row.get(3)?,
        digest: row.get(4)?,
        detail: row.get(5)?,
        at: row.get(6)?,
    })
}

fn listed_file(row: &rusqlite::Row<'_>) -> rusqlite::Result<ListedFile> {
    Ok(ListedFile {
        key: row.get(0)?,
        digest_key: row.get(1)?,
        account_id: row.get(2)?,
        region: row.get(3)?,
        expected_sha256: row.get(4)?,
        state: decode(row, 5, "integrity_files.state", |s: String| FileState::parse(&s).ok_or_else(|| format!("unknown file state {s:?}")))?,
        actual_sha256: row.get(6)?,
    })
}

fn upsert_files(tx: &Connection, files: &[ListedFile]) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(UPSERT_FILE)?;
    for f in files {
        upsert.execute(params![f.key, f.digest_key, f.account_id, f.region, f.expected_sha256, f.state.as_str(), f.actual_sha256])?;
    }
    Ok(())
}

fn record_digest(conn: &mut Connection, d: &DigestRecord, files: &[ListedFile]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(UPSERT_DIGEST)?.execute(params![
        d.key,
        d.location,
        d.account_id,
        d.region,
        d.start,
        d.end,
        d.fingerprint,
        d.signature,
        d.chain_ok,
        signed(d.files),
        d.checked_at,
        d.previous
    ])?;
    tx.prepare_cached("DELETE FROM integrity_files WHERE digest_key = ?1")?.execute([&d.key])?;
    upsert_files(&tx, files)?;
    tx.commit()
}

fn reconcile(conn: &mut Connection, checked: &[(FindingKind, String)], found: &[Finding], now: EpochMillis) -> rusqlite::Result<Vec<Finding>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let still: HashSet<(FindingKind, &str)> = found.iter().map(|f| (f.kind, f.subject.as_str())).collect();
    {
        let mut clear = tx.prepare_cached("UPDATE integrity_findings SET cleared_at = ?3 WHERE kind = ?1 AND subject = ?2 AND cleared_at IS NULL")?;
        for (kind, subject) in checked {
            if !still.contains(&(*kind, subject.as_str())) {
                clear.execute(params![kind.as_str(), subject, now])?;
            }
        }
    }
    let mut opened = Vec::new();
    {
        let mut is_open = tx.prepare_cached("SELECT cleared_at IS NULL FROM integrity_findings WHERE kind = ?1 AND subject = ?2")?;
        let mut refresh = tx.prepare_cached("UPDATE integrity_findings SET digest = ?3, detail = ?4 WHERE kind = ?1 AND subject = ?2")?;
        let mut open = tx.prepare_cached(
            "INSERT OR REPLACE INTO integrity_findings (kind, subject, account_id, region, digest, detail, at, opened_at, cleared_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, NULL)",
        )?;
        for f in found {
            let was_open: Option<bool> = is_open.query_row(params![f.kind.as_str(), f.subject], |row| row.get(0)).optional()?;
            if was_open == Some(true) {
                refresh.execute(params![f.kind.as_str(), f.subject, f.digest, f.detail])?;
            } else {
                open.execute(params![f.kind.as_str(), f.subject, f.account_id, f.region, f.digest, f.detail, f.at, now])?;
                opened.push(f.clone());
            }
        }
    }
    tx.commit()?;
    Ok(opened)
}

fn open_findings(conn: &mut Connection, account_id: Option<&str>, region: Option<&str>) -> rusqlite::Result<Vec<Finding>> {
    let sql = format!(
        "SELECT {FINDING_COLUMNS} FROM integrity_findings WHERE cleared_at IS NULL
         AND (?1 IS NULL OR account_id = ?1) AND (?2 IS NULL OR region = ?2) ORDER BY account_id, region, at, kind, subject"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let rows = statement.query_map(params![account_id, region], finding)?;
    rows.collect()
}

fn completeness(conn: &mut Connection) -> rusqlite::Result<Vec<Completeness>> {
    let mut out: BTreeMap<(String, String), Completeness> = BTreeMap::new();
    {
        let mut s = conn.prepare_cached(
            "SELECT d.account_id, d.region, d.n, v.location, v.end_time FROM
               (SELECT account_id, region, count(*) AS n FROM integrity_digests GROUP BY account_id, region) d
             LEFT JOIN
               (SELECT account_id, region, location, max(end_time) AS end_time FROM integrity_digests
                 WHERE signature IN ('valid', 'not-checked') AND chain_ok GROUP BY account_id, region) v
             ON v.account_id = d.account_id AND v.region = d.region",
        )?;
        let rows = s.query_map([], |r| {
            Ok(Completeness {
                account_id: r.get(0)?,
                region: r.get(1)?,
                digests: unsigned(r, 2, "digests")?,
                last_verified_digest: r.get(3)?,
                last_verified_end: r.get(4)?,
                chain_ok: true,
                ..Default::default()
            })
        })?;
        for row in rows {
            let c = row?;
            out.insert((c.account_id.clone(), c.region.clone()), c);
        }
    }
    {
        let mut s = conn.prepare_cached(
            "SELECT f.account_id, f.region, count(*), sum(f.state = 'verified'), sum(f.state = 'missing'), sum(f.state = 'mismatched'),
                    sum(EXISTS (SELECT 1 FROM objects o WHERE o.key = f.key))
             FROM integrity_files f GROUP BY f.account_id, f.region",
        )?;
        let rows = s.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                [unsigned(r, 2, "listed")?, unsigned(r, 3, "verified")?, unsigned(r, 4, "missing")?, unsigned(r, 5, "mismatched")?, unsigned(r, 6, "seen")?],
            ))
        })?;
        for row in rows {
            let (account_id, region, [listed, verified, missing, mismatched, seen]) = row?;
            if let Some(c) = out.get_mut(&(account_id, region)) {
                c.files_listed = listed;
                c.files_verified = verified;
                c.files_missing = missing;
                c.files_mismatched = mismatched;
                c.files_seen = seen;
            }
        }
    }
    {
        let mut s = conn.prepare_cached(
            "SELECT account_id, region, count(*), sum(kind IN ('chain-broken', 'digest-gap')) FROM integrity_findings
             WHERE cleared_at IS NULL GROUP BY account_id, region",
        )?;
        let rows = s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, unsigned(r, 2, "open")?, unsigned(r, 3, "chain")?)))?;
        for row in rows {
            let (account_id, region, open, chain) = row?;
            if let Some(c) = out.get_mut(&(account_id, region)) {
                c.open_findings = open;
                c.chain_ok = chain == 0;
            }
        }
    }
    Ok(out.into_values().collect())
}

#[async_trait]
impl IntegrityStore for SqliteStore {
    async fn record_digest(&self, digest: DigestRecord, files: Vec<ListedFile>) -> Result<(), PortError> {
        self.write(move |conn| record_digest(conn, &digest, &files)).await
    }

    async fn update_files(&self, files: Vec<ListedFile>) -> Result<(), PortError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            upsert_files(&tx, &files)?;
            tx.commit()
        })
        .await
    }

    async fn problem_files(&self, account_id: &str, region: &str) -> Result<Vec<ListedFile>, PortError> {
        let (account_id, region) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| conn.prepare_cached(PROBLEM_FILES)?.query_map(params![account_id, region], listed_file)?.collect()).await
    }

    async fn digest_neighbours(&self, account_id: &str, region: &str, start: EpochMillis) -> Result<Neighbours, PortError> {
        let (account_id, region) = (account_id.to_owned(), region.to_owned());
        self.read(move |conn| {
            let side = |sql: &str| {
                conn.prepare_cached(sql)?
                    .query_row(params![account_id, region, start], |r| {
                        Ok(DigestSpan { key: r.get(0)?, location: r.get(1)?, start: r.get(2)?, end: r.get(3)?, previous: r.get(4)?, chain_ok: r.get(5)? })
                    })
                    .optional()
            };
            Ok(Neighbours { before: side(BEFORE)?, after: side(AFTER)? })
        })
        .await
    }

    async fn reconcile(
        &self,
        _account_id: &str,
        _region: &str,
        checked: Vec<(FindingKind, String)>,
        found: Vec<Finding>,
        now: EpochMillis,
    ) -> Result<Vec<Finding>, PortError> {
        if checked.is_empty() && found.is_empty() {
            return Ok(Vec::new());
        }
        self.write(move |conn| reconcile(conn, &checked, &found, now)).await
    }

    async fn open_findings(&self, account_id: Option<&str>, region: Option<&str>) -> Result<Vec<Finding>, PortError> {
        let (account_id, region) = (account_id.map(str::to_owned), region.map(str::to_owned));
        self.read(move |conn| open_findings(conn, account_id.as_deref(), region.as_deref())).await
    }

    async fn completeness(&self) -> Result<Vec<Completeness>, PortError> {
        self.read(completeness).await
    }
}
