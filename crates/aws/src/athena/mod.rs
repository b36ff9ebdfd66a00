//! Athena: bounded, parameterized queries over the raw organization trail
//! and the enriched history in S3.
//!
//! [`Athena`] runs one query: `StartQueryExecution` with every value as an
//! execution parameter (never spliced into the SQL text), then
//! `GetQueryExecution` polled with exponential backoff until the query
//! succeeds, fails, is cancelled or runs out of time (it is then stopped),
//! then `GetQueryResults` page by page.
//!
//! Cost is bounded twice. The workgroup's `BytesScannedCutoffPerQuery` (set
//! in the infrastructure) is what enforces a limit: Athena cancels a query
//! that reaches it. [`AthenaSettings::max_bytes_scanned`] is the second line:
//! a query that succeeded but scanned more is an error here and is logged,
//! so a workgroup without a cutoff, or with a higher one, is noticed. Every
//! query also names the date partitions it needs (see [`ddl`]).
//!
//! [`AthenaArchive`] is the identity-resolution fallback over the raw trail;
//! [`ddl`] defines the tables.

mod archive;
pub mod ddl;

pub use archive::{ArchiveStats, AthenaArchive, DELIVERY_MARGIN, MAX_KEYS_PER_QUERY, SESSION_COLUMNS};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState, QueryExecutionStatus, ResultConfiguration, Row};
use tokio::time::Instant;
use trailwatch_core::ports::PortError;

use crate::error::{classify, AwsResult};

/// Where and how queries run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AthenaSettings {
    /// The Glue database the tables live in (the query context).
    pub database: String,
    pub workgroup: String,
    /// Where results are written, when the workgroup does not set it.
    pub output_location: Option<String>,
    /// A succeeded query that scanned more is an error (the workgroup's
    /// `BytesScannedCutoffPerQuery` is what stops a query; this is the second line).
    pub max_bytes_scanned: u64,
    /// First wait between status polls; doubled each poll up to `poll_max`.
    pub poll_initial: Duration,
    pub poll_max: Duration,
    /// How long a query may run before it is stopped (a retryable error).
    pub timeout: Duration,
}

impl AthenaSettings {
    /// Checks what cannot be checked by Athena before money is spent: the
    /// database name (it is an identifier, see [`ddl::identifier`]), and
    /// positive poll intervals and timeout.
    pub fn validate(&self) -> AwsResult<()> {
        ddl::identifier("Athena database", &self.database)?;
        if self.workgroup.is_empty() {
            return Err(invalid("Athena workgroup", "must not be empty"));
        }
        if self.poll_initial.is_zero() || self.poll_max < self.poll_initial || self.timeout.is_zero() {
            return Err(invalid(
                "Athena polling",
                format!(
                    "poll_initial ({:?}) must be positive and at most poll_max ({:?}), timeout ({:?}) positive",
                    self.poll_initial, self.poll_max, self.timeout
                ),
            ));
        }
        Ok(())
    }
}

/// Every row of a finished query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryResult {
    /// Column names, in order (the aliases of the SELECT).
    pub columns: Vec<String>,
    /// Rows without Athena's header row; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    pub query_execution_id: String,
    pub bytes_scanned: u64,
}

impl QueryResult {
    /// The position of a column by name.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// One page of a query's rows, for paging through an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryPage {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    /// Pass back to [`Athena::query_page`] (with the same SQL and parameters)
    /// for the next page; `None` on the last page.
    pub next_token: Option<String>,
    pub query_execution_id: String,
    /// What the query scanned, on its first page; 0 on later pages (the
    /// query ran once).
    pub bytes_scanned: u64,
}

/// Counts since the runner was built. Each query that ends is counted in
/// exactly one of `succeeded`, `over_limit`, `failed`, `cancelled` and
/// `timed_out`; a query whose status could not be read is in none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AthenaStats {
    /// Queries started.
    pub queries: u64,
    /// Bytes scanned by the queries that succeeded (over the limit or not).
    pub bytes_scanned: u64,
    /// Queries that succeeded within `max_bytes_scanned`.
    pub succeeded: u64,
    /// Queries Athena failed.
    pub failed: u64,
    /// Queries Athena cancelled (the workgroup's bytes-scanned cutoff, or someone).
    pub cancelled: u64,
    /// Queries stopped for running past the timeout.
    pub timed_out: u64,
    /// Queries that succeeded but scanned more than `max_bytes_scanned`.
    pub over_limit: u64,
}

#[derive(Debug, Default)]
struct Counters {
    queries: AtomicU64,
    bytes_scanned: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
    timed_out: AtomicU64,
    over_limit: AtomicU64,
}

/// Runs Athena queries. Share it (`Arc<Athena>`); it holds only the client,
/// the settings and atomics.
#[derive(Debug)]
pub struct Athena {
    client: aws_sdk_athena::Client,
    settings: AthenaSettings,
    counters: Counters,
}

/// The most rows `GetQueryResults` returns at once.
const PAGE_ROWS: i32 = 1000;

/// The longest value an execution parameter may have (the API's limit).
const MAX_PARAMETER_LEN: usize = 1024;

impl Athena {
    pub fn new(client: aws_sdk_athena::Client, settings: AthenaSettings) -> Self {
        Athena { client, settings, counters: Counters::default() }
    }

    pub fn settings(&self) -> &AthenaSettings {
        &self.settings
    }

    pub fn stats(&self) -> AthenaStats {
        let c = &self.counters;
        AthenaStats {
            queries: c.queries.load(Ordering::Relaxed),
            bytes_scanned: c.bytes_scanned.load(Ordering::Relaxed),
            succeeded: c.succeeded.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
            over_limit: c.over_limit.load(Ordering::Relaxed),
        }
    }

    /// Runs `sql` with `params` bound, in order, to its `?` placeholders
    /// (each passed as an execution parameter, quoted as a string literal),
    /// and reads every row. For small results; page large ones with
    /// [`Athena::query_page`].
    pub async fn query(&self, sql: &str, params: &[String]) -> AwsResult<QueryResult> {
        let (id, bytes_scanned) = self.run(sql, params).await?;
        let mut columns = Vec::new();
        let mut rows = Vec::new();
        let mut token = None;
        loop {
            let first = token.is_none();
            let page = self.results(&id, token, PAGE_ROWS).await?;
            if first {
                columns = page.columns;
            }
            rows.extend(page.rows);
            match page.next_token {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(QueryResult { columns, rows, query_execution_id: id, bytes_scanned })
    }

    /// One page of at most `max_rows` (1 to 1000) rows. Without a token the
    /// query is run and its first page returned; with the `next_token` of a
    /// page, the next page of the same execution is read (no query runs).
    /// A token only continues the query it came from: the same SQL and
    /// parameters must be passed with it, or it is refused.
    pub async fn query_page(&self, sql: &str, params: &[String], next_token: Option<String>, max_rows: i32) -> AwsResult<QueryPage> {
        if !(1..=PAGE_ROWS).contains(&max_rows) {
            return Err(invalid("Athena page size", format!("{max_rows} rows: must be between 1 and {PAGE_ROWS}")));
        }
        let fingerprint = fingerprint(sql, params);
        let (id, athena_token, bytes_scanned) = match next_token {
            None => {
                let (id, bytes) = self.run(sql, params).await?;
                (id, None, bytes)
            }
            Some(token) => {
                let (id, print, athena_token) = split_token(&token).ok_or_else(|| invalid("Athena page token", "not a token of this service"))?;
                if print != fingerprint {
                    return Err(invalid("Athena page token", format!("belongs to another query (execution {id})")));
                }
                (id.to_owned(), Some(athena_token.to_owned()), 0)
            }
        };
        let page = self.results(&id, athena_token, max_rows).await?;
        Ok(QueryPage {
            columns: page.columns,
            rows: page.rows,
            next_token: page.next_token.map(|t| format!("{id}~{fingerprint:016x}~{t}")),
            query_execution_id: id,
            bytes_scanned,
        })
    }

    /// Starts the query and waits for it: its execution id and bytes scanned.
    async fn run(&self, sql: &str, params: &[String]) -> AwsResult<(String, u64)> {
        let id = self.start(sql, params).await?;
        let bytes = self.wait(&id).await?;
        Ok((id, bytes))
    }

    async fn start(&self, sql: &str, params: &[String]) -> AwsResult<String> {
        let expected = placeholders(sql);
        if expected != params.len() {
            return Err(invalid("Athena query", format!("{expected} placeholders but {} parameters", params.len())));
        }
        let literals = params.iter().map(|p| string_literal(p)).collect::<AwsResult<Vec<_>>>()?;
        let mut request = self
            .client
            .start_query_execution()
            .query_string(sql)
            .work_group(&self.settings.workgroup)
            .query_execution_context(QueryExecutionContext::builder().database(&self.settings.database).build());
        if !literals.is_empty() {
            request = request.set_execution_parameters(Some(literals));
        }
        if let Some(location) = &self.settings.output_location {
            request = request.result_configuration(ResultConfiguration::builder().output_location(location).build());
        }
        let out = request.send().await.map_err(|e| classify("athena:StartQueryExecution", e))?;
        self.counters.queries.fetch_add(1, Ordering::Relaxed);
        out.query_execution_id.ok_or_else(|| {
            PortError::backend("athena:StartQueryExecution", format!("no query execution id returned (workgroup {})", self.settings.workgroup), true)
        })
    }

    /// Polls until the query ends; the bytes it scanned when it succeeded.
    async fn wait(&self, id: &str) -> AwsResult<u64> {
        let deadline = Instant::now() + self.settings.timeout;
        let mut delay = self.settings.poll_initial;
        loop {
            let poll = self.client.get_query_execution().query_execution_id(id).send();
            let out = match tokio::time::timeout_at(deadline, poll).await {
                Ok(out) => out.map_err(|e| classify("athena:GetQueryExecution", e))?,
                Err(_) => return Err(self.timed_out(id).await),
            };
            let execution = out.query_execution.as_ref();
            let status = execution.and_then(|e| e.status.as_ref());
            match status.and_then(|s| s.state.as_ref()) {
                Some(QueryExecutionState::Succeeded) => {
                    let scanned = execution.and_then(|e| e.statistics.as_ref()).and_then(|s| s.data_scanned_in_bytes).unwrap_or(0).max(0) as u64;
                    return self.check_scanned(id, scanned);
                }
                Some(QueryExecutionState::Failed) => {
                    self.counters.failed.fetch_add(1, Ordering::Relaxed);
                    return Err(failed(id, status));
                }
                Some(QueryExecutionState::Cancelled) => {
                    self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    let reason = status.and_then(|s| s.state_change_reason.as_deref()).unwrap_or("no reason given");
                    // The workgroup's bytes-scanned cutoff cancels a query: retrying cannot help.
                    return Err(PortError::backend(
                        format!("athena query {id}"),
                        format!("cancelled: {reason} (the workgroup's BytesScannedCutoffPerQuery cancels queries that scan more)"),
                        false,
                    ));
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timed_out(id).await);
            }
            tokio::time::sleep(delay.min(deadline - now)).await;
            delay = (delay * 2).min(self.settings.poll_max);
        }
    }

    fn check_scanned(&self, id: &str, scanned: u64) -> AwsResult<u64> {
        self.counters.bytes_scanned.fetch_add(scanned, Ordering::Relaxed);
        let limit = self.settings.max_bytes_scanned;
        if scanned > limit {
            self.counters.over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                query_execution_id = id,
                bytes_scanned = scanned,
                limit,
                workgroup = %self.settings.workgroup,
                "athena query scanned more than allowed; check the workgroup's BytesScannedCutoffPerQuery"
            );
            return Err(PortError::backend(format!("athena query {id}"), format!("scanned {scanned} bytes, over the limit of {limit}"), false));
        }
        self.counters.succeeded.fetch_add(1, Ordering::Relaxed);
        Ok(scanned)
    }

    /// Stops a query that ran out of time: a retryable error.
    async fn timed_out(&self, id: &str) -> PortError {
        self.counters.timed_out.fetch_add(1, Ordering::Relaxed);
        let stopped = match self.client.stop_query_execution().query_execution_id(id).send().await {
            Ok(_) => "stopped".to_owned(),
            Err(e) => format!("stopping it failed too: {}", classify("athena:StopQueryExecution", e)),
        };
        PortError::backend(format!("athena query {id}"), format!("did not finish within {:?}; {stopped}", self.settings.timeout), true)
    }

    /// One page of results. The first row of a SELECT's first page is
    /// Athena's header (the column names); it is dropped when it is one.
    async fn results(&self, id: &str, token: Option<String>, max_rows: i32) -> AwsResult<QueryPage> {
        let first = token.is_none();
        let out = self
            .client
            .get_query_results()
            .query_execution_id(id)
            .set_next_token(token)
            .max_results(max_rows)
            .send()
            .await
            .map_err(|e| classify("athena:GetQueryResults", e))?;
        let (columns, mut rows): (Vec<String>, Vec<Vec<Option<String>>>) = match out.result_set {
            Some(set) => (
                set.result_set_metadata.and_then(|m| m.column_info).unwrap_or_default().into_iter().map(|c| c.name).collect(),
                set.rows.unwrap_or_default().into_iter().map(row_values).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        if first && rows.first().is_some_and(|row| is_header(row, &columns)) {
            rows.remove(0);
        }
        Ok(QueryPage { columns, rows, next_token: out.next_token, query_execution_id: id.to_owned(), bytes_scanned: 0 })
    }
}

fn row_values(row: Row) -> Vec<Option<String>> {
    row.data.unwrap_or_default().into_iter().map(|d| d.var_char_value).collect()
}

/// Whether a row spells the column names: Athena's header row. (Emulators
/// return rows as given, with or without one; a data row that equals the
/// column names exactly would be taken for a header.)
fn is_header(row: &[Option<String>], columns: &[String]) -> bool {
    !columns.is_empty() && row.len() == columns.len() && row.iter().zip(columns).all(|(v, c)| v.as_deref() == Some(c.as_str()))
}

/// Why a query failed, with Athena's own retryable flag.
fn failed(id: &str, status: Option<&QueryExecutionStatus>) -> PortError {
    let error = status.and_then(|s| s.athena_error.as_ref());
    let reason = status.and_then(|s| s.state_change_reason.as_deref()).or(error.and_then(|e| e.error_message.as_deref())).unwrap_or("no reason given");
    let retryable = error.is_some_and(|e| e.retryable);
    let category = match error.and_then(|e| e.error_category) {
        Some(1) => " (system error)",
        Some(2) => " (user error)",
        _ => "",
    };
    PortError::backend(format!("athena query {id}"), format!("failed{category}: {reason}"), retryable)
}

fn invalid(what: &str, message: impl Into<String>) -> PortError {
    PortError::Invalid { what: what.to_owned(), message: message.into() }
}

/// A value as Athena's execution parameters take a string: a SQL string
/// literal in single quotes, with quotes inside doubled. (A parameter is
/// read as a literal; unquoted, `abc` would be a column name and `1` a number.)
pub fn string_literal(value: &str) -> AwsResult<String> {
    let literal = format!("'{}'", value.replace('\'', "''"));
    if literal.len() > MAX_PARAMETER_LEN {
        return Err(invalid("Athena parameter", format!("{} bytes quoted, over the limit of {MAX_PARAMETER_LEN}", literal.len())));
    }
    Ok(literal)
}

/// The `?` placeholders of a query: outside string literals, quoted
/// identifiers and comments.
pub fn placeholders(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            quote @ (b'\'' | b'"') => {
                // Skip to the closing quote; a doubled quote is an escaped one.
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == quote {
                        if bytes.get(i + 1) == Some(&quote) {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'?' => count += 1,
            _ => {}
        }
        i += 1;
    }
    count
}

/// FNV-1a of the SQL and its parameters: ties a page token to its query.
fn fingerprint(sql: &str, params: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes.iter().chain(std::iter::once(&0u8)) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    feed(sql.as_bytes());
    for p in params {
        feed(p.as_bytes());
    }
    hash
}

/// `<execution id>~<fingerprint>~<Athena's token>`.
fn split_token(token: &str) -> Option<(&str, u64, &str)> {
    let (id, rest) = token.split_once('~')?;
    let (print, athena) = rest.split_once('~')?;
    let print = u64::from_str_radix(print, 16).ok()?;
    (!id.is_empty() && !athena.is_empty()).then_some((id, print, athena))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_quoted_string_literals() {
        assert_eq!(string_literal("ASIAEXAMPLE").unwrap(), "'ASIAEXAMPLE'");
        assert_eq!(string_literal("2024/03/12").unwrap(), "'2024/03/12'");
        assert_eq!(string_literal("x' OR '1'='1").unwrap(), "'x'' OR ''1''=''1'", "quotes inside are doubled, so the value stays one literal");
        assert!(string_literal(&"a".repeat(1023)).is_err(), "quoted, over the API's 1024 characters");
    }

    #[test]
    fn placeholders_inside_literals_identifiers_and_comments_do_not_count() {
        assert_eq!(placeholders("SELECT a FROM t WHERE b = ? AND c IN (?, ?)"), 3);
        assert_eq!(placeholders("SELECT '?', \"we?ird\" FROM t -- what?\nWHERE x = ? /* or ? */"), 1);
        assert_eq!(placeholders("SELECT 'it''s ?' FROM t WHERE x = ?"), 1);
    }

    #[test]
    fn the_header_row_is_recognized_by_the_column_names() {
        let columns = vec!["eventid".to_owned(), "eventtime".to_owned()];
        assert!(is_header(&[Some("eventid".into()), Some("eventtime".into())], &columns));
        assert!(!is_header(&[Some("e-1".into()), Some("2024-03-12T09:14:27Z".into())], &columns));
        assert!(!is_header(&[Some("eventid".into()), None], &columns));
    }

    #[test]
    fn a_page_token_continues_only_its_own_query() {
        let print = fingerprint("SELECT 1 WHERE a = ?", &["x".into()]);
        assert_ne!(print, fingerprint("SELECT 1 WHERE a = ?", &["y".into()]));
        assert_ne!(fingerprint("ab", &["c".into()]), fingerprint("a", &["bc".into()]), "parts are delimited");
        let token = format!("exec-1~{print:016x}~AthenaToken~with~tildes");
        assert_eq!(split_token(&token), Some(("exec-1", print, "AthenaToken~with~tildes")));
        assert_eq!(split_token("garbage"), None);
    }
}
