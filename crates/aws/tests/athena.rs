//! Athena against the emulator: the identity fallback's one query per batch
//! (its SQL and parameters as sent), polling, failures, timeouts, the
//! negative cache; and, since the emulator runs no SQL, the queries checked
//! against the table definitions.
//!
//! Canned results and state transitions are global to the emulator, so the
//! tests that start queries take [`SERIAL`]; each uses its own workgroup, so
//! the executions it lists are its own.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_athena::config::interceptors::FinalizerInterceptorContextMut;
use aws_sdk_athena::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_athena::error::BoxError;
use aws_sdk_athena::operation::get_query_execution::GetQueryExecutionOutput;
use aws_sdk_athena::types::{AthenaError, QueryExecution, QueryExecutionState, QueryExecutionStatistics};
use serde_json::{json, Value};
use trailwatch_aws::athena::ddl::{self, enriched_events_ddl, origin_updates_ddl, raw_trail_ddl};
use trailwatch_aws::athena::{placeholders, Athena, AthenaArchive, AthenaSettings, SESSION_COLUMNS};
use trailwatch_aws::clients::Clients;
use trailwatch_aws::moto::{self, Moto};
use trailwatch_core::identity::{Actor, Caller, Confidence, OriginKind, Resolution, Resolver, ResolverConfig, SessionArchive, SessionStore};
use trailwatch_core::memory::MemorySessionStore;
use trailwatch_core::ports::PortError;
use trailwatch_core::time::{parse_utc, EpochMillis};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const DATABASE: &str = "trailwatch";
const RAW_TABLE: &str = "raw_trail";
const USERS: &str = "508917263341";
const ROLES: &str = "741258963012";
const MARIA: &str = "arn:aws:iam::508917263341:user/maria";

struct Env {
    moto: &'static Moto,
    clients: Clients,
    /// The emulator's account, from STS.
    account: String,
    region: String,
    workgroup: String,
}

async fn env() -> Env {
    let moto = moto::shared();
    let clients = Clients::connect(&moto.settings()).await.unwrap();
    let account = clients.caller_identity().await.unwrap().account;
    let region = clients.region().unwrap().to_owned();
    let workgroup = moto::unique("athena-wg");
    clients.athena.create_work_group().name(&workgroup).send().await.unwrap();
    Env { moto, clients, account, region, workgroup }
}

impl Env {
    fn settings(&self) -> AthenaSettings {
        AthenaSettings {
            database: DATABASE.into(),
            workgroup: self.workgroup.clone(),
            output_location: Some("s3://athena-results/trailwatch/".into()),
            max_bytes_scanned: 1 << 30,
            poll_initial: Duration::from_millis(10),
            poll_max: Duration::from_millis(40),
            timeout: Duration::from_secs(10),
        }
    }

    fn athena(&self, settings: AthenaSettings) -> Arc<Athena> {
        Arc::new(Athena::new(self.clients.athena.clone(), settings))
    }

    /// A runner whose client rewrites every GetQueryExecution answer.
    fn athena_rewriting(&self, settings: AthenaSettings, rewrite: fn(&mut QueryExecution)) -> Arc<Athena> {
        let config = aws_sdk_athena::config::Builder::from(&self.clients.config).interceptor(Rewrite(rewrite)).build();
        Arc::new(Athena::new(aws_sdk_athena::Client::from_conf(config), settings))
    }

    /// Queues results for the next query executions.
    async fn can(&self, results: Vec<Canned<'_>>) {
        let results = results
            .into_iter()
            .map(|(columns, rows)| {
                let rows = rows.into_iter().map(|row| row.into_iter().map(|v| v.map(str::to_owned)).collect()).collect();
                (columns.iter().map(|c| (*c).to_owned()).collect(), rows)
            })
            .collect();
        self.moto.can_athena_results(&self.account, &self.region, results).unwrap();
    }

    /// This test's query executions, as Athena recorded them.
    async fn executions(&self) -> Vec<QueryExecution> {
        let ids = self.clients.athena.list_query_executions().work_group(&self.workgroup).send().await.unwrap().query_execution_ids.unwrap_or_default();
        let mut out = Vec::new();
        for id in ids {
            out.push(self.clients.athena.get_query_execution().query_execution_id(id).send().await.unwrap().query_execution.unwrap());
        }
        out
    }

    fn calls(&self, operation: &str) -> u64 {
        self.clients.calls.snapshot().iter().filter(|(name, _)| name.ends_with(&format!(":{operation}"))).map(|(_, n)| n).sum()
    }

    async fn set_transition(&self, transition: Value) -> Transition {
        let body = json!({"model_name": "athena::execution", "transition": transition}).to_string();
        let (status, text) = self.moto.request("POST", "/moto-api/state-manager/set-transition", &body).unwrap();
        assert_eq!(status, 201, "{text}");
        Transition(self.moto)
    }
}

/// A canned result: column names, then rows of values (`None` is NULL).
type Canned<'a> = (Vec<&'a str>, Vec<Vec<Option<&'a str>>>);

/// Puts Athena executions back to finishing at once when dropped.
struct Transition(&'static Moto);

impl Drop for Transition {
    fn drop(&mut self) {
        let body = json!({"model_name": "athena::execution"}).to_string();
        let _ = self.0.request("POST", "/moto-api/state-manager/unset-transition", &body);
    }
}

/// Rewrites GetQueryExecution answers: a failure the emulator cannot produce.
#[derive(Debug)]
struct Rewrite(fn(&mut QueryExecution));

impl Intercept for Rewrite {
    fn name(&self) -> &'static str {
        "test.RewriteQueryExecution"
    }

    fn modify_before_completion(&self, context: &mut FinalizerInterceptorContextMut<'_>, _: &RuntimeComponents, _: &mut ConfigBag) -> Result<(), BoxError> {
        if let Some(Ok(output)) = context.output_or_error_mut() {
            if let Some(execution) = output.downcast_mut::<GetQueryExecutionOutput>().and_then(|o| o.query_execution.as_mut()) {
                (self.0)(execution);
            }
        }
        Ok(())
    }
}

fn at(text: &str) -> EpochMillis {
    parse_utc(text).unwrap()
}

fn role_user(key: &str) -> Caller {
    Caller {
        identity_type: "AssumedRole".into(),
        account_id: Some(ROLES.into()),
        access_key_id: Some(key.into()),
        arn: Some(format!("arn:aws:sts::{ROLES}:assumed-role/Deployer/{key}")),
        ..Caller::default()
    }
}

/// A result row: the value of each [`SESSION_COLUMNS`] column, in `order`.
fn row<'a>(order: &[&str], values: &[(&str, &'a str)]) -> Vec<Option<&'a str>> {
    for (name, _) in values {
        assert!(order.contains(name), "{name} is not a session column");
    }
    order.iter().map(|c| values.iter().find(|(n, _)| n == c).map(|(_, v)| *v)).collect()
}

const KEY1: &str = "ASIA5QZ3KEY0000001";
const KEY2: &str = "ASIA5QZ3KEY0000002";
const KEY3: &str = "ASIA5QZ3KEY0000003";
const KEY4: &str = "ASIA5QZ3KEY0000004";

/// Rows Athena would return for the events that issued KEY1 (same
/// account), KEY2 (cross-account: the role owner's copy first, then the
/// caller's) and KEY3 (a web identity); nothing issued KEY4.
fn issuing_rows<'a>(order: &[&str]) -> Vec<Vec<Option<&'a str>>> {
    let maria: &[(&str, &str)] =
        &[("identity_type", "IAMUser"), ("arn", MARIA), ("account_id", USERS), ("access_key_id", "AKIA5QZ3MARIA"), ("user_name", "maria")];
    let mut same = vec![
        ("key_account", USERS),
        ("event_id", "evt-same-account"),
        ("event_time", "2024-03-12T09:30:00Z"),
        ("event_source", "sts.amazonaws.com"),
        ("event_name", "AssumeRole"),
        ("recipient_account_id", USERS),
        ("request_parameters", r#"{"roleArn":"arn:aws:iam::508917263341:role/Billing","roleSessionName":"maria"}"#),
        ("response_elements", r#"{"credentials":{"accessKeyId":"ASIA5QZ3KEY0000001","expiration":"Mar 12, 2024, 10:30:00 AM"}}"#),
    ];
    same.extend_from_slice(maria);
    let cross = |event_id: &'a str, account: &'a str| {
        vec![
            ("key_account", account),
            ("event_id", event_id),
            ("event_time", "2024-03-12T09:40:00Z"),
            ("event_source", "sts.amazonaws.com"),
            ("event_name", "AssumeRole"),
            ("recipient_account_id", account),
            ("shared_event_id", "shared-2"),
            ("request_parameters", r#"{"roleArn":"arn:aws:iam::741258963012:role/Deployer","roleSessionName":"maria-deploy"}"#),
            ("response_elements", r#"{"credentials":{"accessKeyId":"ASIA5QZ3KEY0000002","expiration":"2024-03-12T10:40:00Z"}}"#),
        ]
    };
    let mut owner = cross("evt-owner-copy", ROLES);
    owner.extend_from_slice(&[("identity_type", "AWSAccount"), ("account_id", USERS), ("principal_id", "AIDA5QZ3MARIA")]);
    let mut caller = cross("evt-caller-copy", USERS);
    caller.extend_from_slice(maria);
    let web = vec![
        ("key_account", ROLES),
        ("event_id", "evt-web-identity"),
        ("event_time", "2024-03-12T09:50:00Z"),
        ("event_source", "sts.amazonaws.com"),
        ("event_name", "AssumeRoleWithWebIdentity"),
        ("recipient_account_id", ROLES),
        ("identity_type", "WebIdentityUser"),
        ("principal_id", "arn:aws:iam::741258963012:oidc-provider/token.actions.githubusercontent.com:sts.amazonaws.com:repo:acme/app"),
        ("federated_provider", "arn:aws:iam::741258963012:oidc-provider/token.actions.githubusercontent.com"),
        ("request_parameters", r#"{"roleArn":"arn:aws:iam::741258963012:role/ci","roleSessionName":"ci-run"}"#),
        (
            "response_elements",
            r#"{"credentials":{"accessKeyId":"ASIA5QZ3KEY0000003","expiration":"Mar 12, 2024, 10:50:00 AM"},"subjectFromWebIdentityToken":"repo:acme/app:ref:refs/heads/main"}"#,
        ),
    ];
    vec![row(order, &same), row(order, &owner), row(order, &caller), row(order, &web)]
}

#[tokio::test]
async fn a_batch_of_unknown_keys_costs_one_query_whose_values_are_all_parameters() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    // The columns in another order than the SELECT's, and Athena's header row first.
    let order: Vec<&str> = SESSION_COLUMNS.iter().rev().map(|(_, name)| *name).collect();
    let mut rows = vec![order.iter().map(|c| Some(*c)).collect::<Vec<_>>()];
    rows.extend(issuing_rows(&order));
    env.can(vec![(order.clone(), rows)]).await;

    let athena = env.athena(env.settings());
    let archive = Arc::new(AthenaArchive::new(athena.clone(), RAW_TABLE.into(), Duration::from_secs(36 * 3600), Duration::from_secs(600)).unwrap());
    let store = Arc::new(MemorySessionStore::new());
    let resolver = Resolver::new(store.clone(), Some(archive.clone()), ResolverConfig::default());
    let callers: Vec<Caller> = [KEY1, KEY2, KEY3, KEY4].iter().map(|k| role_user(k)).collect();
    let t0 = at("2024-03-12T10:00:00Z");
    let actors: Vec<Actor<'_>> = (0..8).map(|i| Actor::new(&callers[i % 4], t0 + i as EpochMillis * 1000)).collect();

    let out = resolver.resolve_batch(&actors).await.unwrap();

    // One query for the four keys, as Athena recorded it.
    let executions = env.executions().await;
    assert_eq!(executions.len(), 1, "one query for the batch");
    assert_eq!(athena.stats().queries, 1);
    assert_eq!((resolver.stats().archive_queries, resolver.stats().archive_lookups), (1, 4));
    let sql = executions[0].query.as_deref().unwrap();
    let params = executions[0].execution_parameters.clone().unwrap();
    assert_eq!(
        params,
        [
            // 36 h (and a minute) before the earliest use, to the latest use plus the delivery margin.
            "'2024/03/10'",
            "'2024/03/12'",
            "'ASIA5QZ3KEY0000001'",
            "'ASIA5QZ3KEY0000002'",
            "'ASIA5QZ3KEY0000003'",
            "'ASIA5QZ3KEY0000004'",
        ]
    );
    assert_eq!(placeholders(sql), params.len(), "{sql}");
    assert!(!sql.contains("ASIA5QZ3") && !sql.contains("2024"), "values only as parameters: {sql}");
    assert!(sql.contains("FROM \"trailwatch\".\"raw_trail\""), "{sql}");
    assert!(sql.contains("\"date\" BETWEEN ? AND ?"), "{sql}");
    assert_eq!(executions[0].query_execution_context.as_ref().and_then(|c| c.database()), Some(DATABASE));

    // The rows became the right sessions.
    for (actor, resolution) in actors.iter().zip(&out) {
        let key = actor.caller.access_key_id.as_deref().unwrap();
        let origin = resolution.origin();
        match key {
            KEY1 | KEY2 => {
                assert_eq!((origin.kind, origin.principal.as_deref(), origin.confidence), (OriginKind::IamUser, Some(MARIA), Confidence::Exact), "{key}");
                let hop = &origin.chain[0];
                let expected = if key == KEY1 { ("evt-same-account", USERS) } else { ("evt-caller-copy", ROLES) };
                assert_eq!((hop.event_id.as_str(), hop.account_id.as_str()), expected, "{key}: the caller's copy of a cross-account call wins");
            }
            KEY3 => {
                assert_eq!((origin.kind, origin.principal.as_deref()), (OriginKind::WebIdentity, Some("repo:acme/app:ref:refs/heads/main")));
                assert_eq!(origin.provider.as_deref(), Some("arn:aws:iam::741258963012:oidc-provider/token.actions.githubusercontent.com"));
                assert_eq!(origin.chain[0].role_arn.as_deref(), Some("arn:aws:iam::741258963012:role/ci"));
            }
            _ => assert!(matches!(resolution, Resolution::Waiting { missing, .. } if missing.access_key_id == KEY4), "{resolution:?}"),
        }
    }
    let kept = store.get(KEY2, t0, t0).await.unwrap().unwrap();
    assert_eq!((kept.caller.arn.as_deref(), kept.expires_at), (Some(MARIA), at("2024-03-12T10:40:00Z")), "what the archive found is stored");
    assert_eq!((archive.stats().sessions_found, archive.stats().rows_skipped), (3, 0), "the header row was not taken for an event");
}

#[tokio::test]
async fn a_key_not_found_is_not_asked_again() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let archive = AthenaArchive::new(env.athena(env.settings()), RAW_TABLE.into(), Duration::from_secs(36 * 3600), Duration::from_secs(600)).unwrap();
    let t = at("2024-03-12T10:00:00Z");

    assert_eq!(archive.find_many(&[(KEY4.into(), t)]).await.unwrap(), []);
    assert_eq!(env.executions().await.len(), 1);
    // Asked again within the hour: the cached miss answers, no query.
    assert_eq!(archive.find_many(&[(KEY4.into(), t + 20 * 60_000)]).await.unwrap(), []);
    assert_eq!(archive.find(KEY4, t + 30 * 60_000).await.unwrap(), None);
    assert_eq!(env.executions().await.len(), 1, "no query for a key just missed");
    assert_eq!(archive.stats().negative_hits, 2);
    // Another key, or the same key a day later, is asked.
    assert_eq!(archive.find_many(&[(KEY4.into(), t + 86_400_000), (KEY3.into(), t)]).await.unwrap(), []);
    let executions = env.executions().await;
    assert_eq!(executions.len(), 2);
    let newest = executions.iter().find(|e| e.execution_parameters().len() == 4).unwrap();
    assert_eq!(&newest.execution_parameters()[2..], ["'ASIA5QZ3KEY0000003'", "'ASIA5QZ3KEY0000004'"]);
}

#[tokio::test]
async fn a_query_is_polled_with_backoff_until_it_succeeds() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    // QUEUED → RUNNING → RUNNING → SUCCEEDED, one step every two polls.
    let _transition = env.set_transition(json!({"progression": "manual", "times": 2})).await;
    env.can(vec![(vec!["eventid"], vec![vec![Some("eventid")], vec![Some("evt-1")], vec![None]])]).await;
    let settings = AthenaSettings { poll_initial: Duration::from_millis(40), poll_max: Duration::from_millis(80), ..env.settings() };
    let athena = env.athena(settings);

    let started = Instant::now();
    let result = athena.query("SELECT eventid FROM raw_trail WHERE \"date\" = ?", &["2024/03/12".into()]).await.unwrap();

    assert_eq!(env.calls("GetQueryExecution"), 4, "queued, running, running, succeeded");
    assert!(started.elapsed() >= Duration::from_millis(40 + 80 + 80), "waits of 40, 80 (doubled) and 80 ms (capped): {:?}", started.elapsed());
    assert_eq!((result.columns.clone(), result.rows.clone()), (vec!["eventid".to_owned()], vec![vec![Some("evt-1".to_owned())], vec![None]]));
    let executions = env.executions().await;
    assert_eq!(executions[0].status.as_ref().and_then(|s| s.state.clone()), Some(QueryExecutionState::Succeeded));
    assert_eq!(result.query_execution_id, executions[0].query_execution_id.clone().unwrap());
}

#[tokio::test]
async fn a_failed_query_is_an_error_that_says_why() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let athena = env.athena_rewriting(env.settings(), |execution| {
        let status = execution.status.as_mut().unwrap();
        status.state = Some(QueryExecutionState::Failed);
        status.state_change_reason = Some("COLUMN_NOT_FOUND: line 1:8: Column 'nope' cannot be resolved".into());
        status.athena_error = Some(AthenaError::builder().error_category(2).error_type(1006).retryable(false).build());
    });

    let err = athena.query("SELECT nope FROM raw_trail", &[]).await.unwrap_err();

    let id = env.executions().await[0].query_execution_id.clone().unwrap();
    match &err {
        PortError::Backend { what, message, retryable: false } => {
            assert_eq!(what, &format!("athena query {id}"));
            assert_eq!(message, "failed (user error): COLUMN_NOT_FOUND: line 1:8: Column 'nope' cannot be resolved");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(athena.stats().failed, 1);

    // Athena's own retryable flag is kept.
    let athena = env.athena_rewriting(env.settings(), |execution| {
        let status = execution.status.as_mut().unwrap();
        status.state = Some(QueryExecutionState::Failed);
        status.athena_error = Some(AthenaError::builder().error_category(1).retryable(true).error_message("S3 slow down").build());
    });
    let err = athena.query("SELECT 1", &[]).await.unwrap_err();
    assert!(err.is_retryable() && err.to_string().contains("failed (system error): S3 slow down"), "{err}");
}

#[tokio::test]
async fn a_query_past_its_timeout_is_stopped_and_retryable() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let _transition = env.set_transition(json!({"progression": "manual", "times": 1_000_000})).await;
    let athena = env.athena(AthenaSettings { timeout: Duration::from_millis(300), ..env.settings() });

    let started = Instant::now();
    let err = athena.query("SELECT 1", &[]).await.unwrap_err();

    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("did not finish within 300ms; stopped"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!((athena.stats().timed_out, env.calls("StopQueryExecution")), (1, 1));
    let executions = env.executions().await;
    assert_eq!(executions[0].status.as_ref().and_then(|s| s.state.clone()), Some(QueryExecutionState::Cancelled), "the query was stopped");
}

#[tokio::test]
async fn a_query_that_scanned_more_than_allowed_is_an_error() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    let athena = env.athena_rewriting(AthenaSettings { max_bytes_scanned: 1_000_000_000, ..env.settings() }, |execution| {
        execution.statistics = Some(QueryExecutionStatistics::builder().data_scanned_in_bytes(5_000_000_000).build());
    });

    let err = athena.query("SELECT 1", &[]).await.unwrap_err();

    assert!(!err.is_retryable() && err.to_string().contains("scanned 5000000000 bytes, over the limit of 1000000000"), "{err}");
    let stats = athena.stats();
    assert_eq!((stats.queries, stats.over_limit, stats.bytes_scanned), (1, 1, 5_000_000_000));
}

#[tokio::test]
async fn pages_are_read_and_a_token_continues_only_its_own_query() {
    let _serial = SERIAL.lock().await;
    let env = env().await;
    // No header row this time (the emulator returns rows as given): the first row is data.
    env.can(vec![(vec!["event_id", "event_name"], vec![vec![Some("evt-1"), Some("AssumeRole")], vec![Some("evt-2"), None]])]).await;
    let athena = env.athena(env.settings());
    let sql = "SELECT event_id, event_name FROM events WHERE \"date\" BETWEEN ? AND ?";
    let params = vec!["2024-03-11".to_owned(), "2024-03-12".to_owned()];

    let page = athena.query_page(sql, &params, None, 100).await.unwrap();

    assert_eq!(page.rows, [vec![Some("evt-1".to_owned()), Some("AssumeRole".to_owned())], vec![Some("evt-2".to_owned()), None]]);
    assert_eq!(page.next_token, None, "the emulator has one page");
    assert_eq!(env.executions().await[0].execution_parameters(), ["'2024-03-11'", "'2024-03-12'"]);
    let forged = format!("{}~0000000000000000~token", page.query_execution_id);
    let err = athena.query_page(sql, &params, Some(forged), 100).await.unwrap_err();
    assert!(matches!(err, PortError::Invalid { .. }), "{err}");
    assert!(matches!(athena.query_page(sql, &params, None, 0).await, Err(PortError::Invalid { .. })));
    assert!(matches!(athena.query(sql, &params[..1]).await, Err(PortError::Invalid { .. })), "one parameter for two placeholders");
    assert_eq!(env.executions().await.len(), 1, "refused before anything ran");
}

// ---- The queries against the table definitions (the emulator runs no SQL).

#[derive(Debug)]
enum Type {
    Struct(BTreeMap<String, Type>),
    Other,
}

/// A table's columns, partition columns and properties, read from its DDL.
struct Table {
    name: String,
    columns: BTreeMap<String, Type>,
    partitions: Vec<String>,
    properties: BTreeMap<String, String>,
}

/// Splits at commas outside `<…>` and `(…)`.
fn split_top(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(text[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(text[start..].trim());
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

fn parse_type(text: &str) -> Type {
    let text = text.trim();
    match text.strip_prefix("STRUCT<").and_then(|t| t.strip_suffix('>')) {
        Some(fields) => Type::Struct(
            split_top(fields)
                .into_iter()
                .map(|f| {
                    let (name, ty) = f.split_once(':').unwrap();
                    (name.trim().to_owned(), parse_type(ty))
                })
                .collect(),
        ),
        None => Type::Other,
    }
}

fn parse_table(ddl: &str) -> Table {
    let head = ddl.strip_prefix("CREATE EXTERNAL TABLE IF NOT EXISTS ").unwrap();
    let (name, rest) = head.split_once(" (\n").unwrap();
    let (columns, rest) = rest.split_once("\n)\nPARTITIONED BY (").unwrap();
    let (partitions, rest) = rest.split_once(")\n").unwrap();
    let columns = split_top(columns)
        .into_iter()
        .map(|c| {
            let (name, ty) = c.split_once(' ').unwrap();
            (name.to_owned(), parse_type(ty))
        })
        .collect();
    let partitions = split_top(partitions).into_iter().map(|p| p.split_whitespace().next().unwrap().trim_matches('`').to_owned()).collect();
    let properties = rest.split_once("TBLPROPERTIES (").unwrap().1;
    let properties = properties
        .lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches(',');
            let (k, v) = l.split_once("'='")?;
            Some((k.trim_start_matches('\'').to_owned(), v.trim_end_matches('\'').to_owned()))
        })
        .collect();
    Table { name: name.to_owned(), columns, partitions, properties }
}

impl Table {
    /// Whether a column reference (`eventid`, `useridentity.sessioncontext.sessionissuer.arn`, `"date"`) exists.
    fn has(&self, reference: &str) -> bool {
        let mut parts = reference.split('.').map(|p| p.trim_matches('"'));
        let first = parts.next().unwrap_or_default();
        if self.partitions.iter().any(|p| p == first) {
            return parts.next().is_none();
        }
        let mut ty = self.columns.get(first);
        for part in parts {
            ty = match ty {
                Some(Type::Struct(fields)) => fields.get(part),
                _ => None,
            };
        }
        ty.is_some()
    }

    /// What a sound projected table needs: every partition column projected,
    /// every one in the location template and nothing else there, no column
    /// named like a partition, a date format our day functions write.
    fn check_projection(&self, day: fn(EpochMillis) -> String) {
        assert_eq!(self.properties.get("projection.enabled").map(String::as_str), Some("true"), "{}", self.name);
        let template = &self.properties["storage.location.template"];
        for p in &self.partitions {
            assert!(!self.columns.contains_key(p), "{}: column and partition {p}", self.name);
            let ty = self.properties.get(&format!("projection.{p}.type")).unwrap_or_else(|| panic!("{}: projection.{p}.type", self.name));
            match ty.as_str() {
                "enum" => assert!(!self.properties[&format!("projection.{p}.values")].is_empty()),
                "date" => {
                    let format = &self.properties[&format!("projection.{p}.format")];
                    let t = at("2024-03-09T12:00:00Z");
                    assert_eq!(format.replace("yyyy", "2024").replace("MM", "03").replace("dd", "09"), day(t), "{}: {format}", self.name);
                    assert!(self.properties[&format!("projection.{p}.range")].ends_with(",NOW"));
                }
                "injected" => {}
                other => panic!("{}: projection type {other}", self.name),
            }
            assert!(template.contains(&format!("${{{p}}}")), "{}: {template} lacks ${{{p}}}", self.name);
        }
        let used = template.matches("${").count();
        assert_eq!(used, self.partitions.len(), "{}: {template} uses only partition columns", self.name);
    }
}

/// The column references of a query: identifiers outside literals, minus
/// keywords, functions, aliases and the table.
fn references(sql: &str) -> (String, Vec<String>) {
    let mut text = String::new();
    let mut in_literal = false;
    for c in sql.chars() {
        if c == '\'' {
            in_literal = !in_literal;
            text.push(' ');
        } else if !in_literal {
            text.push(c);
        }
    }
    let spaced: String = text.chars().map(|c| if matches!(c, '(' | ')' | ',') { format!(" {c} ") } else { c.to_string() }).collect();
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    const KEYWORDS: &[&str] = &["SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "BETWEEN", "AS", "IS", "NULL", "?", "(", ")", ","];
    let mut table = String::new();
    let mut refs = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| tokens[p]);
        if KEYWORDS.contains(&token.to_uppercase().as_str()) || tokens.get(i + 1) == Some(&"(") || previous == Some("AS") {
            continue;
        }
        if previous == Some("FROM") {
            table = (*token).to_owned();
            continue;
        }
        refs.push((*token).to_owned());
    }
    (table, refs)
}

#[test]
fn the_archive_query_names_only_what_the_raw_trail_table_has() {
    let ddl = raw_trail_ddl(DATABASE, RAW_TABLE, "s3://org-trail/audit", "o-a1b2c3d4e5", &[USERS.into(), ROLES.into()], at("2024-01-01T00:00:00Z")).unwrap();
    let table = parse_table(&ddl);
    assert_eq!(table.partitions, ["account", "region", "date"]);
    table.check_projection(ddl::trail_day);
    assert_eq!(table.properties["storage.location.template"], "s3://org-trail/audit/AWSLogs/o-a1b2c3d4e5/${account}/CloudTrail/${region}/${date}");

    let settings = AthenaSettings {
        database: DATABASE.into(),
        workgroup: "primary".into(),
        output_location: None,
        max_bytes_scanned: 1 << 30,
        poll_initial: Duration::from_millis(10),
        poll_max: Duration::from_millis(10),
        timeout: Duration::from_secs(1),
    };
    let config = aws_sdk_athena::Config::builder().behavior_version(aws_config::BehaviorVersion::latest()).region(aws_config::Region::new("us-east-1")).build();
    let client = aws_sdk_athena::Client::from_conf(config);
    let archive =
        AthenaArchive::new(Arc::new(Athena::new(client, settings)), RAW_TABLE.into(), Duration::from_secs(36 * 3600), Duration::from_secs(60)).unwrap();

    for keys in [1, 3, 200] {
        let sql = archive.query_text(keys);
        assert_eq!(placeholders(&sql), 2 + keys, "two dates, then the keys: {sql}");
        let (from, refs) = references(&sql);
        assert_eq!(from.replace('"', "").replace('.', "`.`"), table.name.trim_matches('`'), "the query reads the table the DDL creates");
        for reference in &refs {
            assert!(table.has(reference), "{reference} is not a column of the raw trail table: {sql}");
        }
        let selected: BTreeSet<&str> = SESSION_COLUMNS.iter().map(|(expr, _)| *expr).collect();
        assert!(selected.iter().all(|expr| refs.iter().any(|r| r == expr)), "every selected column is checked");
        let filter = sql.split_once("WHERE").unwrap().1;
        assert!(filter.contains("\"date\" BETWEEN ? AND ?"), "the date partition bounds the scan: {filter}");
        for p in &table.partitions {
            if table.properties[&format!("projection.{p}.type")] == "injected" {
                assert!(filter.contains(&format!("\"{p}\"")), "an injected partition must be constrained: {p}");
            }
        }
    }
    // A reference the table lacks is caught.
    assert!(!table.has("useridentity.sessioncontext.nope") && !table.has("eventid.x") && table.has("\"account\""));
}

#[test]
fn the_history_tables_are_projected_on_every_partition() {
    let accounts = [USERS.to_owned(), ROLES.to_owned()];
    let since = at("2024-01-01T00:00:00Z");
    let events = parse_table(&enriched_events_ddl(DATABASE, "events", "s3://history/trailwatch/events", &accounts, since).unwrap());
    assert_eq!(events.partitions, ["account", "region", "date"]);
    events.check_projection(ddl::history_day);
    assert_eq!(events.properties["storage.location.template"], "s3://history/trailwatch/events/account=${account}/region=${region}/date=${date}/");
    for column in [
        "account_id",
        "event_id",
        "event_time",
        "event_name",
        "event_source",
        "aws_region",
        "origin_principal",
        "origin_kind",
        "origin_confidence",
        "error_code",
        "source_ip",
        "raw",
    ] {
        assert!(events.has(column), "{column}");
    }
    assert!(events.properties["projection.region.values"].split(',').any(|r| r == "unknown"), "records without a region");

    let origins = parse_table(&origin_updates_ddl(DATABASE, "origin_updates", "s3://history/trailwatch/events", &accounts, since).unwrap());
    assert_eq!(origins.partitions, ["account", "date"]);
    origins.check_projection(ddl::history_day);
    assert_eq!(origins.properties["storage.location.template"], "s3://history/trailwatch/events-origins/account=${account}/date=${date}/");
}
