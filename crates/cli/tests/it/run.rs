use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Starts `trailwatch` with args and returns it with a channel of its stdout lines.
fn spawn(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = trailwatch().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn trailwatch");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Lines until one contains `needle`; panics after `limit`.
fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
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

fn interrupt_and_wait(mut child: Child) -> (std::process::ExitStatus, String) {
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return (status, err);
        }
        assert!(Instant::now() < deadline, "trailwatch did not stop within 30 s of SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn record(account: &str, id: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","principalId":"AIDAEXAMPLEUSER00001","arn":"arn:aws:iam::{account}:user/ops","accountId":"{account}","accessKeyId":"AKIAEXAMPLEKEY000001","userName":"ops"}},"eventTime":"2026-03-02T10:15:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.20","userAgent":"aws-cli/2.15.30","requestParameters":{{"maxResults":50}},"responseElements":null,"requestID":"{id}-req","eventID":"{id}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"{account}","eventCategory":"Management"}}"#
    )
}

/// `run` ingests what is there, then picks up a file that lands while it
/// watches, and stops cleanly on Ctrl-C.
#[test]
fn run_watches_for_new_files_and_stops_on_interrupt() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    let account = "210987654321";
    put(
        &trail,
        &log_key(account, "20260302T1015Z", "aaaaaaaaaaaaaaa1"),
        &gzip(format!(r#"{{"Records":[{}]}}"#, record(account, "3f1c0a52-0000-4000-8000-000000000001")).as_bytes()),
    );
    let (child, rx) = spawn(&["run", "--trail", path(&trail), "--data", path(&data), "--interval", "1", "--listen", "127.0.0.1:0"]);
    let before = wait_for(&rx, "watching", Duration::from_secs(60));
    assert!(before.iter().any(|l| l.contains("1 stored")), "{before:?}");
    let url =
        before.iter().find_map(|l| l.strip_prefix("GraphQL API on ")).and_then(|l| l.split_whitespace().next()).expect("the API address is printed").to_owned();
    let token = before.iter().find_map(|l| l.strip_prefix("admin token (generated for this run): ")).expect("a token is generated and printed").to_owned();

    // The late file holds the root user at work: an alert while watching.
    let root = record(account, "3f1c0a52-0000-4000-8000-000000000003").replace(
        &format!(r#"{{"type":"IAMUser","principalId":"AIDAEXAMPLEUSER00001","arn":"arn:aws:iam::{account}:user/ops","accountId":"{account}","accessKeyId":"AKIAEXAMPLEKEY000001","userName":"ops"}}"#),
        &format!(r#"{{"type":"Root","principalId":"{account}","arn":"arn:aws:iam::{account}:root","accountId":"{account}","accessKeyId":"ASIAEXAMPLEROOT00001"}}"#),
    );
    assert!(root.contains(r#""type":"Root""#));
    let late = format!(r#"{{"Records":[{},{root}]}}"#, record(account, "3f1c0a52-0000-4000-8000-000000000002"));
    put(&trail, &log_key(account, "20260302T1020Z", "aaaaaaaaaaaaaaa2"), &gzip(late.as_bytes()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while exported_ids(&data, &[]).len() < 3 {
        assert!(Instant::now() < deadline, "the new file was not ingested within 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The API answers with the alert the late file raised (curl, as a script would).
    let query = r#"{"query":"{ alerts(first: 10) { edges { node { ruleId accountId origin { kind principal } } } } }"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let answer = loop {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-H", "content-type: application/json", "-H", &format!("authorization: Bearer {token}"), "--data", query, &url])
            .output()
            .expect("curl runs");
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if body.contains("root-account-usage") || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap_or_else(|e| panic!("the API answers JSON ({e}): {answer}"));
    let node = &answer["data"]["alerts"]["edges"][0]["node"];
    assert_eq!(node["ruleId"], "root-account-usage", "{answer}");
    assert_eq!(node["origin"]["kind"], "ROOT", "{answer}");
    let denied = std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--data", query, &url]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&denied.stdout), "401", "no token, no data");

    let (status, stderr) = interrupt_and_wait(child);
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped; 2 events stored and 1 alerts opened while watching")), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("root-account-usage") && l.contains(account)), "the alert is printed as it opens: {rest:?}");
    assert_eq!(exported_ids(&data, &[]).len(), 3);
}

/// With no trail, `run` generates a demo organization, ingests it and shows what it holds.
#[test]
fn run_without_a_trail_shows_a_demo_organization() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (child, rx) = spawn(&["run", "--data", path(&data), "--demo-events", "4000", "--listen", "127.0.0.1:0"]);
    let lines = wait_for(&rx, "watching", Duration::from_secs(120)).join("\n");
    assert!(lines.contains("generating a demo organization (4,000 events, 12 accounts)"), "{lines}");
    assert!(lines.contains("4,000 stored"), "{lines}");
    assert!(lines.contains("what the store holds"), "{lines}");
    assert!(lines.contains("AssumedRole"), "identity types are shown: {lines}");
    assert!(lines.contains("who is behind the most events"), "{lines}");
    let who: Vec<&str> = lines.lines().skip_while(|l| !l.contains("who is behind")).skip(1).take_while(|l| l.contains(" events · ")).collect();
    assert!(who.len() >= 4, "origins behind the sessions are shown: {lines}");
    assert!(who.iter().any(|l| l.trim_start().starts_with("aws_service")), "{who:?}");
    let (status, stderr) = interrupt_and_wait(child);
    assert!(status.success(), "exit {status}; stderr:\n{stderr}");
    assert!(data.join("demo-trail/expected.json").exists());
}
