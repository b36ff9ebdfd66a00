//! The API of `trailwatch run` over a real WebSocket (`graphql-transport-ws`):
//! a subscription receives the alert an ingest raises while it watches, and
//! `connection_init` without the right token is refused.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_graphql::futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::*;

const ACCOUNT: &str = "210987654321";

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `trailwatch run` watching a trail, with its API on a free port; killed if a test fails.
struct Running {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    trail: PathBuf,
    /// `ws://…/graphql/ws`
    ws: String,
    token: String,
    _tmp: tempfile::TempDir,
}

impl Running {
    /// Starts it over a trail holding one ordinary file and waits until it watches.
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
        let first = record(ACCOUNT, "5d0c2b7e-0000-4000-8000-000000000001", false);
        put(&trail, &log_key(ACCOUNT, "20260302T1015Z", "bbbbbbbbbbbbbbb1"), &gzip(format!(r#"{{"Records":[{first}]}}"#).as_bytes()));
        let args = ["run", "--trail", path(&trail), "--data", path(&data), "--interval", "1", "--listen", "127.0.0.1:0"];
        let mut child = trailwatch().args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("spawn trailwatch");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running { child: Some(child), lines, trail, ws: String::new(), token: String::new(), _tmp: tmp };
        let before = running.wait_for("watching", Duration::from_secs(60));
        let url = before.iter().find_map(|l| l.strip_prefix("GraphQL API on ")).and_then(|l| l.split_whitespace().next()).expect("the API address is printed");
        running.ws = format!("{}/ws", url.replacen("http://", "ws://", 1));
        running.token = before.iter().find_map(|l| l.strip_prefix("admin token (generated for this run): ")).expect("a generated token is printed").to_owned();
        running
    }

    /// Lines until one contains `needle`; panics after `limit`.
    fn wait_for(&self, needle: &str, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let done = line.contains(needle);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {limit:?}; saw:\n{}", seen.join("\n")),
            }
        }
    }

    /// Ctrl-C, and it stops cleanly.
    fn interrupt(mut self) {
        let mut child = self.child.take().expect("running");
        let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                assert!(status.success(), "exit {status}");
                return;
            }
            assert!(Instant::now() < deadline, "trailwatch did not stop within 30 s of SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A DescribeInstances record by an IAM user, or by the account's root user.
fn record(account: &str, id: &str, root: bool) -> String {
    let who = if root {
        format!(
            r#"{{"type":"Root","principalId":"{account}","arn":"arn:aws:iam::{account}:root","accountId":"{account}","accessKeyId":"ASIAEXAMPLEROOT00001"}}"#
        )
    } else {
        format!(
            r#"{{"type":"IAMUser","principalId":"AIDAEXAMPLEUSER00001","arn":"arn:aws:iam::{account}:user/ops","accountId":"{account}","accessKeyId":"AKIAEXAMPLEKEY000001","userName":"ops"}}"#
        )
    };
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{who},"eventTime":"2026-03-02T10:20:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.20","userAgent":"aws-cli/2.15.30","requestParameters":{{"maxResults":50}},"responseElements":null,"requestID":"{id}-req","eventID":"{id}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#
    )
}

/// Opens a `graphql-transport-ws` socket, with a bearer token on the handshake if given.
async fn connect(url: &str, bearer: Option<&str>) -> Socket {
    let mut request = url.into_client_request().expect("a WebSocket request");
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    if let Some(token) = bearer {
        request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).expect("header"));
    }
    let (socket, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket handshake");
    assert_eq!(response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some("graphql-transport-ws"));
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::text(message.to_string())).await.expect("send");
}

/// What the server sent next.
#[derive(Debug)]
enum Received {
    Json(Value),
    /// A close frame (code, reason), or the connection ending without one (None).
    Closed(Option<(u16, String)>),
}

/// The next protocol message (ping and pong frames skipped); panics after `limit`.
async fn receive(socket: &mut Socket, limit: Duration) -> Received {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next()).await.unwrap_or_else(|_| panic!("nothing received within {limit:?}"));
        match next {
            Some(Ok(Message::Text(text))) => return Received::Json(serde_json::from_str(&text).expect("a JSON message")),
            Some(Ok(Message::Close(frame))) => return Received::Closed(frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Received::Closed(None),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

const SUBSCRIPTION: &str = "subscription($min: Severity) { alertTransitions(minSeverity: $min) {
    deliveryKey
    alert { id ruleId severity status accountId revision origin { kind principal accountId confidence } }
    transition { kind revision cause } } }";

/// A root user's call lands in the trail while `run` watches it: the
/// subscriber is told within seconds that the alert opened, with who did it.
#[test]
fn a_subscription_receives_the_alert_a_new_file_raises() {
    let running = Running::start();
    let trail = running.trail.clone();
    runtime().block_on(async {
        let mut socket = connect(&running.ws, None).await;
        send(&mut socket, json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", running.token)}})).await;
        match receive(&mut socket, Duration::from_secs(10)).await {
            Received::Json(ack) => assert_eq!(ack["type"], "connection_ack", "{ack}"),
            other => panic!("the token is refused: {other:?}"),
        }
        send(&mut socket, json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION, "variables": {"min": "HIGH"}}})).await;
        // A ping is answered after the subscribe before it is read: the subscription is in place.
        send(&mut socket, json!({"type": "ping"})).await;
        match receive(&mut socket, Duration::from_secs(10)).await {
            Received::Json(pong) => assert_eq!(pong["type"], "pong", "{pong}"),
            other => panic!("no pong: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;

        drop_root_file(&trail);
        let dropped = Instant::now();
        let message = match receive(&mut socket, Duration::from_secs(15)).await {
            Received::Json(message) => message,
            other => panic!("the subscription ended: {other:?}"),
        };
        let took = dropped.elapsed();
        assert_eq!(message["type"], "next", "{message}");
        assert_eq!(message["id"], "1", "{message}");
        let event = &message["payload"]["data"]["alertTransitions"];
        let alert = &event["alert"];
        assert_eq!(alert["ruleId"], "root-account-usage", "{message}");
        assert_eq!(alert["severity"], "CRITICAL", "{message}");
        assert_eq!(alert["status"], "OPEN", "{message}");
        assert_eq!(alert["accountId"], ACCOUNT, "{message}");
        assert_eq!(alert["origin"]["kind"], "ROOT", "{message}");
        assert_eq!(alert["origin"]["principal"], format!("arn:aws:iam::{ACCOUNT}:root"), "{message}");
        assert_eq!(alert["origin"]["accountId"], ACCOUNT, "{message}");
        assert_eq!(event["transition"]["kind"], "OPENED", "{message}");
        let id = alert["id"].as_str().expect("an alert id");
        assert_eq!(event["deliveryKey"], format!("{id}:{}", event["transition"]["revision"]), "{message}");
        assert!(took < Duration::from_secs(10), "the alert took {took:?} to reach the subscriber");

        send(&mut socket, json!({"id": "1", "type": "complete"})).await;
        let _ = socket.close(None).await;
    });
    running.wait_for("root-account-usage", Duration::from_secs(10));
    running.interrupt();
}

/// Writes the file with the root user's call into the watched trail.
fn drop_root_file(trail: &Path) {
    let records = [record(ACCOUNT, "5d0c2b7e-0000-4000-8000-000000000002", false), record(ACCOUNT, "5d0c2b7e-0000-4000-8000-000000000003", true)];
    let body = format!(r#"{{"Records":[{}]}}"#, records.join(","));
    put(trail, &log_key(ACCOUNT, "20260302T1020Z", "bbbbbbbbbbbbbbb2"), &gzip(body.as_bytes()));
}

/// `connection_init` with a wrong token, or none, closes the socket with
/// 1002 "unauthorized" and nothing is subscribed; a right token in the
/// handshake's header needs none in the payload.
#[test]
fn connection_init_without_the_right_token_is_refused() {
    let running = Running::start();
    runtime().block_on(async {
        let payloads =
            [("a wrong token", Some(json!({"authorization": "Bearer not-the-token-0123456789"}))), ("an empty payload", Some(json!({}))), ("no payload", None)];
        for (what, payload) in payloads {
            let mut socket = connect(&running.ws, None).await;
            let init = match payload {
                Some(payload) => json!({"type": "connection_init", "payload": payload}),
                None => json!({"type": "connection_init"}),
            };
            send(&mut socket, init).await;
            match receive(&mut socket, Duration::from_secs(10)).await {
                Received::Closed(Some((code, reason))) => assert_eq!((code, reason.as_str()), (1002, "unauthorized"), "{what}"),
                other => panic!("{what}: not refused: {other:?}"),
            }
            // Whatever else is sent goes nowhere: the connection is over.
            let _ = socket.send(Message::text(json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}).to_string())).await;
            if let Received::Json(message) = receive(&mut socket, Duration::from_secs(10)).await {
                panic!("{what}: the server answered after refusing: {message}");
            }
        }

        let mut socket = connect(&running.ws, Some(&running.token)).await;
        send(&mut socket, json!({"type": "connection_init"})).await;
        match receive(&mut socket, Duration::from_secs(10)).await {
            Received::Json(ack) => assert_eq!(ack["type"], "connection_ack", "{ack}"),
            other => panic!("a token in the header is refused: {other:?}"),
        }
        let _ = socket.close(None).await;
    });
    running.interrupt();
}
