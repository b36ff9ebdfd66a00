//! The alert sinks as a receiver sees them: the stdout line, the JSONL file,
//! and what a webhook receiver gets (headers, bodies, PagerDuty events) and
//! how its answers are taken.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use secrecy::SecretString;
use serde_json::Value;
use trailwatch_core::alerts::{Alert, AlertSink, AlertStatus, Delivery, EventRef, Severity, Transition, TransitionKind};
use trailwatch_core::identity::{Confidence, Hop, IssueKind, Origin, OriginKind};
use trailwatch_embedded::sinks::pagerduty;
use trailwatch_embedded::{JsonlSink, StdoutFormat, StdoutSink, TransitionRecord, WebhookConfig, WebhookFormat, WebhookSink};

const T0: i64 = 1_700_000_000_000;

fn delivery(kind: TransitionKind, revision: u64) -> Delivery {
    let status = match kind {
        TransitionKind::Opened | TransitionKind::Updated => AlertStatus::Open,
        TransitionKind::Acknowledged => AlertStatus::Acknowledged,
        TransitionKind::Resolved => AlertStatus::Resolved,
    };
    let origin = Origin {
        kind: OriginKind::IamUser,
        principal: Some("arn:aws:iam::111111111111:user/bob".into()),
        account_id: Some("111111111111".into()),
        provider: None,
        source_identity: None,
        chain: vec![Hop {
            event_id: "issue-1".into(),
            account_id: "111111111111".into(),
            role_arn: Some("arn:aws:iam::111111111111:role/Admin".into()),
            session_name: Some("bob".into()),
            access_key_id: "ASIAEXAMPLE".into(),
            kind: IssueKind::AssumeRole,
            time: T0 - 60_000,
        }],
        confidence: Confidence::Exact,
        reason: None,
    };
    let alert = Alert {
        id: "01J9ALERT".into(),
        dedup_key: "console-signin-brute-force|111111111111".into(),
        rule_id: "console-signin-brute-force".into(),
        title: "Console sign-in brute force".into(),
        severity: Severity::High,
        status,
        summary: "5 failed console sign-ins for bob from 203.0.113.7".into(),
        account_id: "111111111111".into(),
        account_alias: Some("Prod Payments".into()),
        origin: Some(origin),
        origin_event: None,
        group: vec![("recipientAccountId".into(), "111111111111".into()), ("eventSource".into(), "signin.amazonaws.com".into())],
        first_seen: T0,
        last_seen: T0 + 60_000,
        count: 5,
        samples: vec![EventRef { account_id: "111111111111".into(), event_id: "ev-1".into(), event_time: T0 }],
        resolve_after_ms: Some(86_400_000),
        notify_every_ms: 3_600_000,
        last_notified: T0,
        revision,
        updated_at: T0 + 120_000,
    };
    let by = matches!(kind, TransitionKind::Acknowledged).then(|| "alice".to_owned());
    let transition =
        Transition { alert_id: alert.id.clone(), revision, kind, at: T0 + 60_000, recorded_at: T0 + 120_000, cause: "event ev-1".into(), by, notify: true };
    Delivery { id: revision as i64, sink: "webhook".into(), alert, transition, attempts: 0, next_attempt_at: T0, last_error: None }
}

/// A writer the test keeps a handle on.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuf {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[tokio::test]
async fn stdout_prints_one_readable_line_per_transition() {
    let out = SharedBuf::default();
    let sink = StdoutSink::with_writer(out.clone(), StdoutFormat::Text);
    assert_eq!(sink.name(), "stdout");
    sink.deliver(&delivery(TransitionKind::Opened, 1)).await.unwrap();
    let mut ack = delivery(TransitionKind::Acknowledged, 2);
    ack.alert.account_alias = None;
    ack.alert.origin = None;
    ack.alert.summary = "two\nlines".into();
    sink.deliver(&ack).await.unwrap();
    let text = out.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "[HIGH] opened  console-signin-brute-force  \"Prod Payments\" (111111111111)  5 failed console sign-ins for bob from 203.0.113.7  \
             origin: iam_user arn:aws:iam::111111111111:user/bob (exact)  alert 01J9ALERT",
            "[HIGH] acknowledged  console-signin-brute-force  111111111111  two lines  origin: unknown  by alice  alert 01J9ALERT",
        ]
    );
    assert!(text.ends_with('\n'));
}

#[tokio::test]
async fn stdout_json_lines_are_the_transition_records() {
    let out = SharedBuf::default();
    let sink = StdoutSink::with_writer(out.clone(), StdoutFormat::Json);
    let d = delivery(TransitionKind::Updated, 3);
    sink.deliver(&d).await.unwrap();
    let text = out.text();
    assert_eq!(text.lines().count(), 1);
    let record: TransitionRecord = serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!(record, TransitionRecord::from(&d));
    assert_eq!(record.dedup_key, "01J9ALERT:3");
}

#[tokio::test]
async fn jsonl_appends_whole_lines_that_read_back_and_survive_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there/alerts.jsonl");
    let sink = JsonlSink::new(&path);
    assert_eq!(sink.name(), "file");
    let sent = [delivery(TransitionKind::Opened, 1), delivery(TransitionKind::Updated, 2)];
    for d in &sent {
        sink.deliver(d).await.unwrap();
    }
    // A crash cut a line short; a new sink (a restart) appends after it.
    std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"dedupKey\":\"01J9AL").unwrap();
    let last = delivery(TransitionKind::Resolved, 3);
    JsonlSink::new(&path).deliver(&last).await.unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(serde_json::from_str::<Value>(lines[2]).is_err(), "the torn line stays alone");
    let whole: Vec<TransitionRecord> = [lines[0], lines[1], lines[3]].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<TransitionRecord> = sent.iter().chain([&last]).map(TransitionRecord::from).collect();
    assert_eq!(whole, expected);
    let raw: Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(raw["dedupKey"], "01J9ALERT:1");
    assert_eq!(raw["transition"]["alertId"], "01J9ALERT");
    assert_eq!(raw["alert"]["accountAlias"], "Prod Payments");
    assert!(text.ends_with('\n'));
}

#[tokio::test]
async fn jsonl_reports_a_path_it_cannot_write() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let err = JsonlSink::new(blocker.join("alerts.jsonl")).deliver(&delivery(TransitionKind::Opened, 1)).await.unwrap_err();
    assert!(err.to_string().contains("01J9ALERT:1"), "{err}");
}

/// What the test receiver answers to its n-th request (from 0).
type Reply = (StatusCode, Vec<(header::HeaderName, &'static str)>, String, Duration);

struct Shared {
    requests: Mutex<Vec<(HeaderMap, Bytes)>>,
    reply: Box<dyn Fn(usize) -> Reply + Send + Sync>,
}

struct Receiver {
    url: String,
    shared: Arc<Shared>,
}

impl Receiver {
    fn requests(&self) -> Vec<(HeaderMap, Bytes)> {
        self.shared.requests.lock().unwrap().clone()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let n = {
        let mut requests = shared.requests.lock().unwrap();
        requests.push((headers, body));
        requests.len() - 1
    };
    let (status, headers, body, delay) = (shared.reply)(n);
    tokio::time::sleep(delay).await;
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

async fn receiver(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let shared = Arc::new(Shared { requests: Mutex::new(Vec::new()), reply: Box::new(reply) });
    let app = Router::new().route("/hook", post(handle)).with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url: format!("http://{addr}/hook"), shared }
}

fn answer(status: StatusCode, body: &str) -> Reply {
    (status, vec![], body.to_owned(), Duration::ZERO)
}

#[tokio::test]
async fn the_webhook_posts_the_record_with_its_idempotency_key_and_headers() {
    let rx = receiver(|_| answer(StatusCode::NO_CONTENT, "")).await;
    let mut config = WebhookConfig::new("hook", &rx.url);
    config.headers.push(("Authorization".into(), SecretString::from("Bearer s3cret".to_owned())));
    let sink = WebhookSink::new(config).unwrap();
    assert_eq!(sink.name(), "hook");
    let d = delivery(TransitionKind::Opened, 1);
    sink.deliver(&d).await.unwrap();
    let requests = rx.requests();
    assert_eq!(requests.len(), 1);
    let (headers, body) = &requests[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["idempotency-key"], "01J9ALERT:1");
    assert_eq!(headers["authorization"], "Bearer s3cret");
    let record: TransitionRecord = serde_json::from_slice(body).unwrap();
    assert_eq!(record, TransitionRecord::from(&d));
}

#[tokio::test]
async fn webhook_answers_are_delivered_retryable_or_permanent() {
    let long_body = format!("{}{}", "x".repeat(200), "TAIL-NOT-KEPT");
    let replies: Vec<Reply> = vec![
        answer(StatusCode::ACCEPTED, ""),
        answer(StatusCode::SERVICE_UNAVAILABLE, "down for maintenance"),
        answer(StatusCode::TOO_MANY_REQUESTS, "slow down"),
        answer(StatusCode::REQUEST_TIMEOUT, ""),
        answer(StatusCode::BAD_REQUEST, &long_body),
        answer(StatusCode::UNAUTHORIZED, "bad token"),
        // Followed, it would post the alert again to the same receiver.
        (StatusCode::TEMPORARY_REDIRECT, vec![(header::LOCATION, "/hook")], String::new(), Duration::ZERO),
    ];
    let expected = [None, Some(true), Some(true), Some(true), Some(false), Some(false), Some(false)];
    let n = replies.len();
    let rx = receiver(move |i| replies.get(i).cloned().unwrap_or_else(|| answer(StatusCode::OK, ""))).await;
    let sink = WebhookSink::new(WebhookConfig::new("hook", &rx.url)).unwrap();
    let d = delivery(TransitionKind::Opened, 1);
    let mut errors = Vec::new();
    for want in expected {
        let result = sink.deliver(&d).await;
        assert_eq!(result.as_ref().err().map(|e| e.is_retryable()), want, "{result:?}");
        errors.push(result.err().map(|e| e.to_string()));
    }
    assert_eq!(rx.requests().len(), n, "the redirect was not followed");
    let unavailable = errors[1].as_deref().unwrap();
    assert!(unavailable.contains("503") && unavailable.contains("down for maintenance"), "{unavailable}");
    let rejected = errors[4].as_deref().unwrap();
    assert!(rejected.contains("400") && rejected.contains(&"x".repeat(200)) && !rejected.contains("TAIL"), "first 200 bytes only: {rejected}");
    assert!(!rejected.contains("/hook"), "the URL's path stays out of messages: {rejected}");
}

#[tokio::test]
async fn no_answer_in_time_and_no_listener_are_retryable() {
    let rx = receiver(|_| (StatusCode::OK, vec![], String::new(), Duration::from_secs(5))).await;
    let mut config = WebhookConfig::new("hook", &rx.url);
    config.timeout = Duration::from_millis(200);
    let err = WebhookSink::new(config).unwrap().deliver(&delivery(TransitionKind::Opened, 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    // Bound but not listening: refused, and no other test can take the port.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap();
    let sink = WebhookSink::new(WebhookConfig::new("hook", format!("http://{closed}/hook"))).unwrap();
    let err = sink.deliver(&delivery(TransitionKind::Opened, 1)).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
}

fn pd(kind: TransitionKind) -> Value {
    pagerduty::event(&delivery(kind, 1), "R0UTINGKEY")
}

#[test]
fn pagerduty_follows_one_incident_per_alert() {
    for (kind, action) in [
        (TransitionKind::Opened, "trigger"),
        (TransitionKind::Updated, "trigger"),
        (TransitionKind::Acknowledged, "acknowledge"),
        (TransitionKind::Resolved, "resolve"),
    ] {
        let event = pd(kind);
        assert_eq!(event["event_action"], action, "{kind:?}");
        assert_eq!(event["dedup_key"], "01J9ALERT", "the alert id, the same across its life");
        assert_eq!(event["routing_key"], "R0UTINGKEY");
        assert_eq!(event.get("payload").is_some(), action == "trigger", "payload only for trigger: {event}");
    }
}

#[test]
fn pagerduty_trigger_payload_carries_the_alert() {
    let event = pd(TransitionKind::Opened);
    let payload = &event["payload"];
    assert_eq!(payload["summary"], "5 failed console sign-ins for bob from 203.0.113.7");
    assert_eq!(payload["source"], "Prod Payments");
    assert_eq!(payload["severity"], "error");
    assert_eq!(payload["timestamp"], "2023-11-14T22:14:20Z");
    assert_eq!(payload["component"], "signin.amazonaws.com");
    assert_eq!(payload["group"], "111111111111");
    assert_eq!(payload["class"], "console-signin-brute-force");
    let details = &payload["custom_details"];
    assert_eq!(details["origin"]["kind"], "iam_user");
    assert_eq!(details["origin"]["principal"], "arn:aws:iam::111111111111:user/bob");
    assert_eq!(details["origin"]["confidence"], "exact");
    assert_eq!(details["chain"][0]["role_arn"], "arn:aws:iam::111111111111:role/Admin");
    assert_eq!(details["count"], 5);
    assert_eq!(details["first_seen"], "2023-11-14T22:13:20Z");
    assert_eq!(details["last_seen"], "2023-11-14T22:14:20Z");
    assert_eq!(details["samples"][0]["event_id"], "ev-1");
    assert_eq!(details["transition"]["kind"], "opened");
    assert_eq!(details["transition"]["dedup_key"], "01J9ALERT:1");

    let mut bare = delivery(TransitionKind::Opened, 1);
    bare.alert.account_alias = None;
    bare.alert.group.clear();
    let event = pagerduty::event(&bare, "k");
    assert_eq!(event["payload"]["source"], "111111111111", "the account id without an alias");
    assert!(event["payload"].get("component").is_none());
}

#[test]
fn pagerduty_severities_and_summary_limit() {
    for (level, expected) in
        [(Severity::Critical, "critical"), (Severity::High, "error"), (Severity::Medium, "warning"), (Severity::Low, "info"), (Severity::Informational, "info")]
    {
        let mut d = delivery(TransitionKind::Opened, 1);
        d.alert.severity = level;
        assert_eq!(pagerduty::event(&d, "k")["payload"]["severity"], expected, "{level:?}");
    }
    let mut d = delivery(TransitionKind::Opened, 1);
    d.alert.summary = "é".repeat(3000);
    let summary = pagerduty::event(&d, "k")["payload"]["summary"].as_str().unwrap().to_owned();
    assert_eq!(summary.chars().count(), pagerduty::SUMMARY_MAX_CHARS);
    assert!(summary.ends_with('…'));
}

#[tokio::test]
async fn the_pagerduty_webhook_sends_events_api_v2_bodies() {
    let rx = receiver(|_| answer(StatusCode::ACCEPTED, r#"{"status":"success"}"#)).await;
    let mut config = WebhookConfig::new("pagerduty", &rx.url);
    config.format = WebhookFormat::PagerDuty { routing_key: SecretString::from("R0UTINGKEY".to_owned()) };
    let sink = WebhookSink::new(config).unwrap();
    sink.deliver(&delivery(TransitionKind::Opened, 1)).await.unwrap();
    sink.deliver(&delivery(TransitionKind::Resolved, 2)).await.unwrap();
    let requests = rx.requests();
    let bodies: Vec<Value> = requests.iter().map(|(_, b)| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(bodies[0]["event_action"], "trigger");
    assert_eq!(bodies[0]["routing_key"], "R0UTINGKEY");
    assert_eq!(bodies[1], serde_json::json!({ "routing_key": "R0UTINGKEY", "event_action": "resolve", "dedup_key": "01J9ALERT" }));
    assert_eq!(requests[1].0["idempotency-key"], "01J9ALERT:2");
}
