//! The API's door, tried through the HTTP routes: tokens (missing, wrong,
//! malformed, expired, revoked by editing the token file), roles,
//! introspection, documents built to cost too much, oversized bodies and
//! pages, filter values that look like SQL, errors that could leak
//! internals, and tokens in logs.

use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use trailwatch_core::alerts::{AlertStore, Severity};
use trailwatch_embedded::SqliteStore;

use super::http::{app_of, call, post};
use super::*;

/// (status, JSON body) of a POST with this token.
async fn ask(app: &axum::Router, token: &str, query: &str, variables: Value) -> (StatusCode, Value) {
    let (status, body) = call(app.clone(), post(Some(token), json!({"query": query, "variables": variables}))).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn errors_of(v: &Value) -> Vec<Value> {
    v["errors"].as_array().cloned().unwrap_or_default()
}

fn message(v: &Value) -> String {
    errors_of(v).iter().filter_map(|e| e["message"].as_str().map(str::to_owned)).collect::<Vec<_>>().join(" | ")
}

fn with_header(value: HeaderValue) -> Request<Body> {
    Request::post("/graphql")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, value)
        .body(Body::from(json!({"query": "{ rules { id } }"}).to_string()))
        .expect("request")
}

fn app_with(f: &Fixture, limits: Limits, tokens: Tokens) -> axum::Router {
    let mut deps = deps_with_history(f, f.history.clone());
    deps.limits = limits;
    trailwatch_api::app(ApiState::new(Arc::new(deps), tokens))
}

#[tokio::test]
async fn every_refused_token_gets_the_same_401() {
    let f = fixture().await;
    let mut tokens = tokens();
    tokens.add_spec("old:admin:expired-token-0123456789:expires=2020-01-01T00:00:00Z", "test").expect("expired token");
    let app = app_with(&f, Limits::default(), tokens);
    let mut headers: Vec<HeaderValue> = [
        "Bearer wrong-token-0123456789".to_owned(),
        format!("Bearer {}", &VIEWER[..VIEWER.len() - 1]),
        format!("Bearer {VIEWER}x"),
        "Bearer".into(),
        "Bearer ".into(),
        format!("Basic {VIEWER}"),
        format!("Bearer {VIEWER} {ADMIN}"),
        format!("Bearer\t{VIEWER}"),
        VIEWER.to_owned(),
        format!("Bearer {}", "A".repeat(8 * 1024)),
        "Bearer expired-token-0123456789".into(),
        "Bearer ' OR 1=1 --".into(),
    ]
    .iter()
    .map(|v| HeaderValue::from_str(v).expect("header"))
    .collect();
    headers.push(HeaderValue::from_bytes(b"Bearer \xff\xfe0123456789abcdef").expect("opaque bytes"));
    let (status, reference) = call(app.clone(), post(None, json!({"query": "{ rules { id } }"}))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(reference, "unauthorized\n");
    for value in headers {
        let shown = String::from_utf8_lossy(value.as_bytes()).chars().take(60).collect::<String>();
        let response = app.clone().oneshot(with_header(value)).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{shown}");
        assert_eq!(response.headers().get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()), Some(&b"Bearer"[..]));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
        assert_eq!(body, reference.as_bytes(), "the same body whatever was wrong: {shown}");
    }
    // The expired token's owner still has a good one: a valid token works on the same app.
    assert_eq!(ask(&app, VIEWER, "{ rules { id } }", json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_token_works_until_it_expires() {
    let f = fixture().await;
    let soon = trailwatch_core::time::format_utc(trailwatch_core::time::parse_utc("2100-01-01T00:00:00Z").expect("time"));
    let tokens = Tokens::from_specs(&[format!("temp:viewer:temporary-token-0123456789:expires={soon}")]).expect("tokens");
    let app = app_with(&f, Limits::default(), tokens);
    let (status, v) = ask(&app, "temporary-token-0123456789", "{ rules { id } }", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let tokens = Tokens::from_specs(&["temp:viewer:temporary-token-0123456789:expires=2024-01-01T00:00:00Z"]).expect("tokens");
    let app = app_with(&f, Limits::default(), tokens);
    assert_eq!(call(app, post(Some("temporary-token-0123456789"), json!({"query": "{ rules { id } }"}))).await.0, StatusCode::UNAUTHORIZED);
    let err = Tokens::from_specs(&["temp:viewer:temporary-token-0123456789:expires=next-week"]).expect_err("a bad time");
    assert_eq!(err.to_string(), r#"token 1: token "temp": expires="next-week" is not a UTC time like 2026-12-31T00:00:00Z"#);
}

fn write(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).expect("token file");
    file.write_all(text.as_bytes()).expect("write");
}

#[tokio::test]
async fn editing_the_token_file_revokes_and_adds_tokens_without_a_restart() {
    let f = fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens");
    write(&path, "# the on-call team\numa:responder:uma-token-0123456789\nned:viewer:ned-token-0123456789\n");
    let mut tokens = Tokens::from_specs(&[format!("ada:admin:{ADMIN}")]).expect("tokens");
    tokens.watch_file(&path, Duration::ZERO).expect("the file loads");
    let app = app_with(&f, Limits::default(), tokens);
    let status = |token: &'static str| {
        let app = app.clone();
        async move { call(app, post(Some(token), json!({"query": "{ rules { id } }"}))).await.0 }
    };
    assert_eq!(status("uma-token-0123456789").await, StatusCode::OK);
    assert_eq!(status("ned-token-0123456789").await, StatusCode::OK);

    write(&path, "uma:responder:uma-token-0123456789\n");
    assert_eq!(status("ned-token-0123456789").await, StatusCode::UNAUTHORIZED, "a removed line is revoked");
    assert_eq!(status("uma-token-0123456789").await, StatusCode::OK);

    write(&path, "uma:responder:uma-token-0123456789\nned:viewer:ned-token-0123456789:expires=2100-01-01T00:00:00Z\n");
    assert_eq!(status("ned-token-0123456789").await, StatusCode::OK, "a line added works at once");

    write(&path, "uma:responder:uma-token-0123456789\nned:viewer:ned-token-0123456789:expires=soon\n");
    assert_eq!(status("uma-token-0123456789").await, StatusCode::UNAUTHORIZED, "a file that does not parse fails closed");
    assert_eq!(status(ADMIN).await, StatusCode::OK, "tokens given as options still work");

    write(&path, "uma:responder:uma-token-0123456789\n");
    assert_eq!(status("uma-token-0123456789").await, StatusCode::OK, "fixed, it works again");

    std::fs::remove_file(&path).expect("remove");
    assert_eq!(status("uma-token-0123456789").await, StatusCode::UNAUTHORIZED, "a deleted file revokes its tokens");

    write(&path, "bad line\n");
    let err = Tokens::new().watch_file(&path, Duration::ZERO).expect_err("refused at start");
    assert_eq!(err.to_string(), format!("{}:1: expected name:role:token or name:role:token:expires=2026-12-31T00:00:00Z", path.display()));
}

#[tokio::test]
async fn roles_refuse_what_they_may_not_do() {
    let f = fixture().await;
    let app = app_of(&f);
    let (_, alerts) = ask(&app, VIEWER, "{ alerts(first: 1) { edges { node { id status } } } }", json!({})).await;
    let id = alerts["data"]["alerts"]["edges"][0]["node"]["id"].as_str().expect("an alert").to_owned();
    let mutations = [
        (r#"mutation($id: String!) { acknowledgeAlert(id: $id) { id } }"#, "responder"),
        (r#"mutation($id: String!) { resolveAlert(id: $id, note: "x") { id } }"#, "responder"),
        (r#"mutation { setAccountAlias(accountId: "111111111111", alias: "mine") { id } }"#, "admin"),
    ];
    for (mutation, needs) in mutations {
        for (token, role) in [(VIEWER, "viewer"), (RESPONDER, "responder")] {
            if role == "responder" && needs == "responder" {
                continue;
            }
            let (status, v) = ask(&app, token, mutation, json!({"id": id})).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(codes(&errors_of(&v)), ["FORBIDDEN"], "{role}: {mutation}: {v}");
            assert_eq!(message(&v), format!("the {role} role cannot do this: it needs {needs}"));
            assert!(v["data"].is_null(), "{v}");
        }
    }
    let (_, after) = ask(&app, VIEWER, "{ alerts(first: 1) { edges { node { id status } } } }", json!({})).await;
    assert_eq!(after, alerts, "nothing changed");
    assert!(f.aliases.saved().is_empty());
}

#[tokio::test]
async fn introspection_follows_the_configured_role() {
    let f = fixture().await;
    let schema_q = "{ __schema { queryType { name } } }";
    let type_q = r#"{ __type(name: "Alert") { name } }"#;
    // Default: every authenticated caller (GraphiQL needs it).
    let (_, v) = ask(&app_of(&f), VIEWER, schema_q, json!({})).await;
    assert_eq!(v["data"]["__schema"]["queryType"]["name"], "QueryRoot", "{v}");
    let admins_only = app_with(&f, Limits { introspection: Some(Role::Admin), ..Limits::default() }, tokens());
    for q in [schema_q, type_q, "query { ...F } fragment F on QueryRoot { __schema { types { name } } }"] {
        let (_, v) = ask(&admins_only, VIEWER, q, json!({})).await;
        assert_eq!(codes(&errors_of(&v)), ["FORBIDDEN"], "{q}: {v}");
        assert_eq!(message(&v), "introspection needs the admin role; this token has viewer");
        assert!(v["data"].is_null());
    }
    let (_, v) = ask(&admins_only, ADMIN, type_q, json!({})).await;
    assert_eq!(v["data"]["__type"]["name"], "Alert", "{v}");
    let (_, v) = ask(&admins_only, VIEWER, "{ rules { i } }", json!({})).await;
    assert!(!message(&v).contains("Did you mean"), "no schema hints for who may not introspect: {v}");
    let nobody = app_with(&f, Limits { introspection: None, ..Limits::default() }, tokens());
    let (_, v) = ask(&nobody, ADMIN, schema_q, json!({})).await;
    assert_eq!(message(&v), "introspection is disabled on this server");
    let (_, v) = ask(&nobody, ADMIN, "{ rules { __typename id } }", json!({})).await;
    assert!(errors_of(&v).is_empty(), "__typename is not introspection: {v}");
}

/// A fixture whose store takes 3 s per read: what is refused before execution answers at once.
fn slow_app(f: &Fixture) -> axum::Router {
    let slow = Arc::new(Watched::slow(f.history.clone(), Duration::from_secs(3)));
    trailwatch_api::app(ApiState::new(Arc::new(deps_with_history(f, slow)), tokens()))
}

async fn refused_quickly(app: &axum::Router, query: &str, says: &str) {
    let started = Instant::now();
    let (status, v) = ask(app, VIEWER, query, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(v["data"].is_null(), "{v}");
    assert!(message(&v).contains(says), "{says:?} not in {v}");
    assert!(started.elapsed() < Duration::from_secs(2), "refused before execution, not after {:?}", started.elapsed());
}

#[tokio::test]
async fn costly_documents_are_refused_before_they_run() {
    let f = fixture().await;
    let app = slow_app(&f);
    let since = r#"since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z""#;
    let sessions: String = (0..31).map(|i| format!("s{i}: sessions(originPrincipal: \"{ALICE}\", {since}) {{ truncated }} ")).collect();
    refused_quickly(&app, &format!("{{ {sessions} }}"), "the query uses 31 aliases (fragments expanded); at most 30 are accepted").await;
    let alerts: String = (0..20).map(|i| format!("a{i}: alerts(first: 200) {{ edges {{ node {{ id }} }} }} ")).collect();
    refused_quickly(&app, &format!("{{ {alerts} }}"), "the query is too complex: its cost is over the limit of 5000").await;
    let aliased_in_fragment = format!(
        "{{ ...F ...G }} fragment F on QueryRoot {{ {} }} fragment G on QueryRoot {{ ...F }}",
        (0..16).map(|i| format!("r{i}: rules {{ id }}")).collect::<Vec<_>>().join(" ")
    );
    refused_quickly(&app, &aliased_in_fragment, "the query uses 32 aliases").await;
    refused_quickly(&app, &format!("{{ {} }}", "rules { id } ".repeat(600)), "the query selects 1200 fields (fragments expanded); at most 1000 are accepted")
        .await;
    let operations: String = (0..11).map(|i| format!("query Q{i} {{ rules {{ id }} }} ")).collect();
    refused_quickly(&app, &operations, "the document holds 11 operations; at most 10 are accepted in one request").await;
    refused_quickly(&app, "{ ...A } fragment A on QueryRoot { ...B } fragment B on QueryRoot { rules { id } ...A }", "fragment A spreads itself (A → B → A)")
        .await;
    let mut bomb = String::from("{ ...F0 }\n");
    for i in 0..30 {
        bomb.push_str(&format!("fragment F{i} on QueryRoot {{ ...F{} ...F{} }}\n", i + 1, i + 1));
    }
    bomb.push_str("fragment F30 on QueryRoot { rules { id } }");
    refused_quickly(&app, &bomb, "fields (fragments expanded); at most 1000").await;
    // Four spreads a level, 14 levels: 4^14 expansions, counted in a few hundred steps.
    let mut wide = String::from("{ ...F0 }\n");
    for i in 0..14 {
        wide.push_str(&format!("fragment F{i} on QueryRoot {{ {} }}\n", format!("...F{} ", i + 1).repeat(4)));
    }
    wide.push_str("fragment F14 on QueryRoot { __typename }");
    refused_quickly(&app, &wide, "the query selects 268435456 fields").await;
    let chain: String = (0..40).map(|i| format!("fragment F{i} on QueryRoot {{ ...F{} }}\n", i + 1)).collect();
    refused_quickly(&app, &format!("{{ ...F0 }}\n{chain}fragment F40 on QueryRoot {{ rules {{ id }} }}"), "fragments spread each other more than 32 deep")
        .await;
    let deep = format!("{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}", "ofType { ".repeat(10), "} ".repeat(10));
    refused_quickly(&app, &deep, "the query is nested too deep: more than 12 levels").await;
    refused_quickly(&app, &format!("{{ rules {} {{ id }} }}", "@include(if: true) ".repeat(9)), "directives").await;
    for (name, q) in [
        ("braces", format!("{}{}", "{r".repeat(15_000), "}".repeat(15_000))),
        ("lists", format!("{{ alert(id: {}\"x\"{}) {{ id }} }}", "[".repeat(20_000), "]".repeat(20_000))),
    ] {
        let (status, v) = ask(&app, VIEWER, &q, json!({})).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert!(v["data"].is_null() && !errors_of(&v).is_empty(), "{name}: refused, and the server is still up");
    }
    // A batch (a JSON array of requests) is refused as a whole.
    let batch = json!([{"query": "{ rules { id } }"}, {"query": "{ rules { id } }"}]);
    let (status, body) = call(app.clone(), post(Some(VIEWER), batch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("batched requests are not accepted: send one operation per request"), "{body}");
    // What is within every limit still answers.
    let (status, v) = ask(&app, VIEWER, "query A { rules { id } } query B { rules { title } }", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(message(&v), "Operation name required in request.");
    let (_, v) = ask(&app, VIEWER, &format!("{{ {} }}", (0..30).map(|i| format!("r{i}: rules {{ id }}")).collect::<Vec<_>>().join(" ")), json!({})).await;
    assert!(errors_of(&v).is_empty() && v["data"]["r29"].is_array(), "30 aliases pass: {v}");
}

#[tokio::test]
async fn oversized_bodies_and_pages_are_refused_with_a_clear_message() {
    let f = fixture().await;
    let app = app_of(&f);
    let padding = " ".repeat(65 * 1024);
    let big = json!({"query": format!("{{ rules {{ id }} }}{padding}")});
    let (status, body) = call(app.clone(), post(Some(VIEWER), big.clone())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(serde_json::from_str::<Value>(&body).map(|v| message(&v)).ok().as_deref(), Some("the request body is larger than 65536 bytes"), "{body}");
    assert_eq!(call(app.clone(), post(None, big)).await.0, StatusCode::UNAUTHORIZED, "no token: 401 first, whatever the size");
    let range = r#"filter: {since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z"}"#;
    for field in ["alerts(first: 1000000)".to_owned(), "accounts(first: 1000000)".to_owned(), format!("events({range}, first: 1000000)")] {
        let (status, v) = ask(&app, VIEWER, &format!("{{ {field} {{ edges {{ cursor }} }} }}"), json!({})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(codes(&errors_of(&v)), ["BAD_USER_INPUT"], "{field}: {v}");
        assert_eq!(message(&v), "first must be between 0 and 200 (was 1000000)", "{field}");
    }
    let (_, v) = ask(&app, VIEWER, "{ alerts(first: 10000000000) { edges { cursor } } }", json!({})).await;
    assert!(v["data"].is_null() && message(&v).contains("Int"), "out of Int's range: {v}");
}

/// Values that mean something to SQL, LIKE, Athena or a shell.
const HOSTILE: [&str; 10] = [
    "' OR 1=1 --",
    "%",
    "_",
    "\"; DROP TABLE events; --",
    "’ OR ’1’=’1",
    "GetUser%",
    "Get_ser",
    "\\' OR \\'1\\'=\\'1",
    "*",
    "x') UNION SELECT * FROM alerts --",
];

/// The fixture's events and alerts in SQLite, plus events and alerts carrying each hostile value in every text field.
async fn sqlite_app(dir: &Path) -> (axum::Router, Vec<Event>) {
    let f = fixture().await;
    let store = Arc::new(SqliteStore::open(dir.join("door.db")).expect("sqlite"));
    let mut events: Vec<Event> = (0..40).map(|i| event(PROD, i, if i % 3 == 0 { "CreateUser" } else { "GetUser" }, ALICE)).collect();
    for (n, value) in HOSTILE.iter().enumerate() {
        let mut e = event(DEV, 100 + n as i64, value, BOB);
        e.region = (*value).to_owned();
        e.event_source = (*value).to_owned();
        e.source_ip = Some((*value).to_owned());
        e.error_code = Some((*value).to_owned());
        if let Some(actor) = e.actor.as_mut() {
            actor.arn = Some((*value).to_owned());
        }
        if let Some(origin) = e.origin.as_mut() {
            origin.principal = Some((*value).to_owned());
        }
        events.push(e);
    }
    store.append(events.clone().into()).await.expect("append");
    let lifecycle = Arc::new(Lifecycle::new(store.clone(), vec!["api".into()], LifecycleConfig::default()));
    let detections: Vec<Detection> = events
        .iter()
        .filter(|e| e.account_id == DEV || e.event_name == "CreateUser")
        .map(|e| {
            let mut d = detection(if e.account_id == DEV { &e.event_name } else { "iam-user-created" }, Severity::High, e);
            d.dedup_key = format!("{}|{}", d.rule_id, e.event_id);
            d
        })
        .collect();
    lifecycle.apply(&detections, t("2024-01-15T12:00:00Z")).await.expect("alerts");
    let d = &f.deps;
    let deps = ApiDeps {
        history: store.clone(),
        checkpoints: store.clone(),
        alerts: store.clone(),
        lifecycle,
        rules: d.rules.clone(),
        accounts: d.accounts.clone(),
        identity: d.identity.clone(),
        alert_feed: d.alert_feed.clone(),
        limits: Limits::default(),
    };
    (trailwatch_api::app(ApiState::new(Arc::new(deps), tokens())), events)
}

fn assert_no_internals(v: &Value) {
    let text = v.to_string();
    for leak in ["SQL", "sqlite", "syntax", "SELECT ", "no such", "door.db", "rusqlite", "panicked"] {
        assert!(!text.contains(leak), "{leak:?} leaked: {text}");
    }
}

/// One text field of an event, as a filter compares it.
type FieldOf = fn(&Event) -> Option<&str>;

#[tokio::test]
async fn filter_values_that_look_like_sql_match_literally() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, events) = sqlite_app(dir.path()).await;
    let q = "query($f: EventSearch!) { events(filter: $f, first: 200) { edges { node { eventId } } } }";
    let fields: [(&str, FieldOf); 8] = [
        ("region", |e| Some(e.region.as_str())),
        ("eventSource", |e| Some(e.event_source.as_str())),
        ("eventName", |e| Some(e.event_name.as_str())),
        ("actorArn", |e| e.actor.as_ref().and_then(|a| a.arn.as_deref())),
        ("originPrincipal", |e| e.origin.as_ref().and_then(|o| o.principal.as_deref())),
        ("sourceIp", |e| e.source_ip.as_deref()),
        ("errorCode", |e| e.error_code.as_deref()),
        ("account", |e| Some(e.account_id.as_str())),
    ];
    let mut tried = 0;
    for (field, of) in fields {
        for value in HOSTILE.iter().copied().chain(["GetUser", DEV, "us-east-1"]) {
            let filter = json!({"since": "2024-01-15T00:00:00Z", "until": "2024-01-16T00:00:00Z", field: value});
            let (status, v) = ask(&app, VIEWER, q, json!({"f": filter})).await;
            assert_eq!(status, StatusCode::OK);
            assert!(errors_of(&v).is_empty(), "{field} = {value:?}: {v}");
            let got: Vec<&str> = v["data"]["events"]["edges"].as_array().expect("edges").iter().filter_map(|e| e["node"]["eventId"].as_str()).collect();
            let want: Vec<&str> = events.iter().filter(|e| of(e) == Some(value)).map(|e| e.event_id.as_str()).collect();
            assert_eq!(got, want, "{field} = {value:?}");
            tried += 1;
        }
    }
    assert!(tried >= 80);
    // Alert filters, single lookups and the sessions scan.
    let alerts_q = "query($f: AlertFilter) { alerts(filter: $f, first: 200) { edges { node { ruleId } } } }";
    for value in HOSTILE {
        for field in ["rule", "account", "originPrincipal"] {
            let (_, v) = ask(&app, VIEWER, alerts_q, json!({"f": {field: value}})).await;
            assert!(errors_of(&v).is_empty(), "{field} = {value:?}: {v}");
            let rules: Vec<&str> = v["data"]["alerts"]["edges"].as_array().expect("edges").iter().filter_map(|e| e["node"]["ruleId"].as_str()).collect();
            let want: Vec<&str> = if field == "account" { vec![] } else { vec![value] };
            assert_eq!(rules, want, "alerts {field} = {value:?}");
        }
        let lookups = r#"query($v: String!) { alert(id: $v) { id } event(accountId: $v, eventId: $v) { eventId } account(id: $v) { id }
                          accounts(filter: {status: $v}) { edges { cursor } } }"#;
        let (_, v) = ask(&app, VIEWER, lookups, json!({"v": value})).await;
        assert!(errors_of(&v).is_empty(), "{value:?}: {v}");
        assert_eq!(v["data"], json!({"alert": null, "event": null, "account": null, "accounts": {"edges": []}}), "{value:?}");
        let sessions =
            r#"query($v: String!) { sessions(originPrincipal: $v, since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z") { eventsExamined } }"#;
        let (_, v) = ask(&app, VIEWER, sessions, json!({"v": value})).await;
        assert_eq!(v["data"]["sessions"]["eventsExamined"], 1, "{value:?}: {v}");
        let (_, v) = ask(&app, VIEWER, "query($v: String!) { identity(accessKeyId: $v) { missing } }", json!({"v": value})).await;
        assert_eq!(codes(&errors_of(&v)), ["BAD_USER_INPUT"], "{value:?}");
        assert_eq!(message(&v), format!("{value:?} is not an AWS access key id"), "only the caller's own value comes back");
    }
    let (_, v) = ask(&app, VIEWER, "{ health { events } }", json!({})).await;
    assert_no_internals(&v);
    let everything = json!({"f": {"since": "2024-01-15T00:00:00Z", "until": "2024-01-16T00:00:00Z"}});
    let (_, v) = ask(&app, VIEWER, q, everything).await;
    assert_eq!(v["data"]["events"]["edges"].as_array().map(Vec::len), Some(events.len()), "every table is intact");
}

/// A history whose reads fail with the store's internals in the message.
struct Leaky(usize);

fn leaky_error(kind: usize) -> PortError {
    match kind {
        0 => PortError::backend("sqlite /srv/trailwatch/db.sqlite", "SELECT account_id FROM events WHERE x = ?: database disk image is malformed", false),
        1 => PortError::Invalid {
            what: "athena query 9f1c".into(),
            message: "SYNTAX_ERROR: line 1:8: Column 'x' cannot be resolved; s3://secret-bucket/out".into(),
        },
        _ => PortError::NotFound { what: "arn:aws:dynamodb:us-east-1:000000000000:table/tw-events".into() },
    }
}

#[async_trait::async_trait]
impl HistoryStore for Leaky {
    async fn append(&self, _: Arc<[Event]>) -> Result<WriteReport, PortError> {
        Err(leaky_error(self.0))
    }
    async fn page(&self, _: &HistoryQuery) -> Result<HistoryPage, PortError> {
        Err(leaky_error(self.0))
    }
    async fn count(&self) -> Result<u64, PortError> {
        Err(leaky_error(self.0))
    }
    async fn set_origins(&self, _: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        Err(leaky_error(self.0))
    }
    async fn get(&self, _: &str, _: &str) -> Result<Option<Event>, PortError> {
        Err(leaky_error(self.0))
    }
    async fn get_many(&self, _: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        Err(leaky_error(self.0))
    }
    async fn search(&self, _: &EventFilter) -> Result<SearchPage, PortError> {
        Err(leaky_error(self.0))
    }
    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        Err(leaky_error(self.0))
    }
}

/// Everything logged while the guard lives, on this thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_ansi(false).with_writer(move || writer.clone()).finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

#[tokio::test]
async fn store_errors_reach_the_client_as_an_id_and_the_log_as_detail() {
    let f = fixture().await;
    let (logs, _guard) = capture();
    let queries = [
        format!(r#"{{ event(accountId: "{PROD}", eventId: "ev-1") {{ eventId }} }}"#),
        r#"{ events(filter: {since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z"}) { edges { cursor } } }"#.to_owned(),
        "{ accounts { edges { cursor } } }".to_owned(),
        format!(r#"{{ sessions(originPrincipal: "{ALICE}", since: "2024-01-15T00:00:00Z", until: "2024-01-16T00:00:00Z") {{ truncated }} }}"#),
    ];
    for kind in 0..3 {
        let app = trailwatch_api::app(ApiState::new(Arc::new(deps_with_history(&f, Arc::new(Leaky(kind)))), tokens()));
        for q in &queries {
            let (status, v) = ask(&app, VIEWER, q, json!({})).await;
            assert_eq!(status, StatusCode::OK);
            let text = v.to_string();
            for leak in ["sqlite", "/srv", "SELECT", "SYNTAX_ERROR", "s3://", "arn:aws", "dynamodb", "athena", "malformed"] {
                assert!(!text.contains(leak), "{leak:?} leaked to the client: {text}");
            }
            let error = &errors_of(&v)[0];
            let id = error.pointer("/extensions/correlationId").and_then(Value::as_str).expect("a correlation id");
            assert!(["INTERNAL", "BAD_USER_INPUT", "NOT_FOUND"].contains(&error.pointer("/extensions/code").and_then(Value::as_str).unwrap_or("")), "{error}");
            let logged = logs.text();
            let line = logged.lines().find(|l| l.contains(id)).unwrap_or_else(|| panic!("{id} is not in the log: {logged}"));
            assert!(["SELECT account_id", "SYNTAX_ERROR", "table/tw-events"].iter().any(|d| line.contains(d)), "the detail is logged with the id: {line}");
        }
    }
}

#[tokio::test]
async fn tokens_never_reach_the_logs() {
    let f = fixture().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tokens");
    let secrets = ["filetoken-aaaa-0123456789", "expiredtoken-bbbb-0123456789", "wrongtoken-cccc-0123456789", "badlinetoken-dddd-0123456789"];
    let (logs, _guard) = capture();
    write(&path, &format!("fay:viewer:{}\nold:viewer:{}:expires=2020-01-01T00:00:00Z\n", secrets[0], secrets[1]));
    let mut tokens = tokens();
    tokens.watch_file(&path, Duration::ZERO).expect("token file");
    let app = app_with(&f, Limits::default(), tokens);
    for token in [VIEWER, ADMIN, secrets[0], secrets[1], secrets[2], &format!("{VIEWER}0")] {
        call(app.clone(), post(Some(token), json!({"query": "{ rules { id } }"}))).await;
        call(app.clone(), with_header(HeaderValue::from_str(&format!("Basic {token}")).expect("header"))).await;
        call(app.clone(), post(Some(token), json!({"query": "mutation { setAccountAlias(accountId: \"1\", alias: \"x\") { id } }"}))).await;
    }
    // A bad line in the reloaded file: its error names the line, not the token.
    write(&path, &format!("fay:viewer:{}\nbob:root:{}\nsam:viewer:{}:expires=tomorrow\n", secrets[0], secrets[3], secrets[3]));
    call(app.clone(), post(Some(secrets[0]), json!({"query": "{ rules { id } }"}))).await;
    write(&path, &format!("sam:viewer:{}:expires=tomorrow\n", secrets[3]));
    call(app.clone(), post(Some(secrets[0]), json!({"query": "{ rules { id } }"}))).await;
    let logged = logs.text();
    assert!(logged.contains("api.unauthorized: an expired token") && logged.contains("old"), "the expired token is named: {logged}");
    assert!(logged.contains("api.token_file_invalid") && logged.contains(&format!("{}:2", path.display())), "{logged}");
    assert!(logged.contains(&format!("{}:1: token \"sam\": expires=\"tomorrow\"", path.display())), "{logged}");
    for token in [VIEWER, RESPONDER, ADMIN].iter().chain(secrets.iter()) {
        assert!(!logged.contains(token), "{token} was logged: {logged}");
    }
    assert!(!format!("{:?}", Tokens::from_specs(&[format!("a:admin:{ADMIN}")]).expect("tokens")).contains(ADMIN));
}

#[tokio::test]
async fn an_alert_filter_never_changes_stored_alerts() {
    // The SQLite alert store after every hostile filter above still lists what it held.
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, _) = sqlite_app(dir.path()).await;
    let store = SqliteStore::open(dir.path().join("door.db")).expect("reopen");
    let before = store.list(&trailwatch_core::alerts::AlertQuery { limit: 1000, ..Default::default() }).await.expect("list").alerts.len();
    for value in HOSTILE {
        ask(&app, VIEWER, "query($v: String!) { alerts(filter: {rule: $v, account: $v, originPrincipal: $v}) { edges { cursor } } }", json!({"v": value}))
            .await;
    }
    let after = store.list(&trailwatch_core::alerts::AlertQuery { limit: 1000, ..Default::default() }).await.expect("list").alerts.len();
    assert_eq!(after, before);
    assert!(before > HOSTILE.len());
}
