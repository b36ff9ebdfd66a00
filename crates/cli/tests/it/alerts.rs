//! Rules and alerts end to end: the generator's incidents raise exactly the
//! alerts its answer key lists, with the right origin; the rule commands;
//! a webhook that fails for a while still gets every transition once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::harness::*;

fn alerts_json(data: &std::path::Path) -> Vec<Value> {
    let out = ok(&["alerts", "list", "--data", path(data), "--status", "all", "--json", "--limit", "10000"]);
    stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("alerts list line is not JSON ({e}): {l}"))).collect()
}

fn group_of(alert: &Value) -> HashMap<String, String> {
    alert["group"].as_array().unwrap().iter().map(|pair| (pair[0].as_str().unwrap().to_owned(), pair[1].as_str().unwrap().to_owned())).collect()
}

/// Every incident the generator injected raises its alerts once, with the
/// origin the answer key names (the CI chain resolves to its OIDC subject
/// across the hops), and the built-in pack raises nothing else.
#[test]
fn incidents_raise_exactly_the_alerts_of_the_answer_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    let file = tmp.path().join("alerts.jsonl");
    ok(&["gen", "--out", path(&trail), "--accounts", "20", "--events", "150000", "--seed", "5", "--incidents"]);
    let summary = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--alerts-file", path(&file)]));
    assert!(summary.contains("(20 rules)"), "the built-in pack ran: {summary}");

    let key: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let expected = key["alerts"].as_array().expect("the answer key lists alerts");
    assert!(expected.len() >= 6, "every incident is in the answer key: {expected:?}");
    let raised = alerts_json(&data);

    let mut problems = Vec::new();
    for want in expected {
        let group: HashMap<String, String> = want["group"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
        let matching: Vec<&Value> =
            raised.iter().filter(|a| a["ruleId"] == want["ruleId"] && a["accountId"] == want["accountId"] && group_of(a) == group).collect();
        match matching.as_slice() {
            [alert] => {
                let origin = &alert["origin"];
                if origin["kind"] != want["originKind"] || origin["principal"] != want["originPrincipal"] {
                    problems.push(format!(
                        "{} in {}: origin {} {}, expected {} {}",
                        want["ruleId"], want["accountId"], origin["kind"], origin["principal"], want["originKind"], want["originPrincipal"]
                    ));
                }
                if let Some(count) = want["count"].as_u64() {
                    if alert["count"].as_u64() != Some(count) {
                        problems.push(format!("{} in {}: {} matching events, expected {count}", want["ruleId"], want["accountId"], alert["count"]));
                    }
                }
            }
            [] => problems.push(format!("not raised: {want}")),
            many => problems.push(format!("raised {} times: {want}", many.len())),
        }
    }
    for alert in &raised {
        let listed = expected.iter().any(|w| w["ruleId"] == alert["ruleId"] && w["accountId"] == alert["accountId"]);
        if !listed {
            problems.push(format!("raised but not expected: {} in {}: {}", alert["ruleId"], alert["accountId"], alert["summary"]));
        }
    }
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));

    // The file sink got each alert's opening exactly once, in the JSON Lines shape.
    let lines: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let opened: Vec<&Value> = lines.iter().filter(|l| l["transition"]["kind"] == "opened").collect();
    assert_eq!(opened.len(), raised.len(), "one `opened` line per alert");
    let keys: Vec<&str> = lines.iter().map(|l| l["dedupKey"].as_str().unwrap()).collect();
    assert_eq!(unique(&keys), keys.len(), "no transition written twice");

    // Alerts and exported events carry the account names of the trail's accounts file.
    let names: Value = serde_json::from_slice(&std::fs::read(trail.join("accounts.json")).unwrap()).unwrap();
    let name_of = |id: &str| names["Accounts"].as_array().unwrap().iter().find(|a| a["Id"] == id).map(|a| a["Name"].clone());
    for alert in &raised {
        assert_eq!(Some(alert["accountAlias"].clone()), name_of(alert["accountId"].as_str().unwrap()), "alias of {}", alert["accountId"]);
    }
    let export = stdout(&ok(&["export", "--data", path(&data), "--account", raised[0]["accountId"].as_str().unwrap()]));
    let first: Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(first["trailwatch"]["account"]["alias"], raised[0]["accountAlias"], "export names the account too");

    // The same alerts through GraphQL, without a server (`trailwatch query`).
    let out = stdout(&ok(&["query", "--data", path(&data), "{ alerts(first: 200) { edges { node { ruleId origin { principal } } } } }"]));
    let answer: Value = serde_json::from_str(&out).unwrap();
    let edges = answer["data"]["alerts"]["edges"].as_array().unwrap_or_else(|| panic!("{answer}"));
    assert_eq!(edges.len(), raised.len());
    let ci = expected.iter().find(|w| w["originKind"] == "web_identity" && w["ruleId"] == "iam-policy-changes").expect("the CI incident's alert");
    assert!(edges.iter().any(|e| e["node"]["ruleId"] == "iam-policy-changes" && e["node"]["origin"]["principal"] == ci["originPrincipal"]), "{answer}");
    let bad = trailwatch().args(["query", "--data", path(&data), "{ alerts(first: 5000) { edges { node { id } } } }"]).output().unwrap();
    assert!(!bad.status.success(), "a page over the maximum is refused");

    // Ingesting again reads nothing new and raises nothing new.
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--alerts-file", path(&file)]);
    assert_eq!(alerts_json(&data).len(), raised.len());
}

#[test]
fn the_pack_lists_and_passes_its_own_tests() {
    let list = stdout(&ok(&["rules", "list"]));
    for id in ["root-account-usage", "console-signin-brute-force", "instance-credentials-used-outside-aws", "organizations-changes"] {
        assert!(list.contains(id), "{id} is listed:\n{list}");
    }
    assert!(list.contains("20 rules"), "{list}");
    let test = stdout(&ok(&["rules", "test"]));
    assert!(test.contains("20 rules") && test.contains(" 0 failed"), "{test}");
}

#[test]
fn a_broken_rule_is_named_with_its_line_and_an_override_replaces_the_builtin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("rules");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("typo.yml"),
        "title: Typo\nid: typo\nlevel: high\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  selection:\n    eventName|contians: Stop\n  condition: selection\n",
    )
    .unwrap();
    let out = trailwatch().args(["rules", "list", "--rules", path(&dir)]).output().unwrap();
    assert!(!out.status.success(), "a rule that fails to load fails the command");
    let err = stderr(&out);
    assert!(err.contains("typo.yml:7:") && err.contains("contians"), "names the file, the line and the modifier: {err}");
    let trail = tmp.path().join("trail");
    std::fs::create_dir_all(&trail).unwrap();
    let out = trailwatch().args(["ingest", "--trail", path(&trail), "--data", path(&tmp.path().join("data")), "--rules", path(&dir)]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("typo.yml:7:"), "ingest refuses to start: {}", stderr(&out));

    std::fs::remove_file(dir.join("typo.yml")).unwrap();
    std::fs::write(
        dir.join("root.yml"),
        "title: Root used (ours)\nid: root-account-usage\nlevel: low\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  selection:\n    userIdentity.type: Root\n  condition: selection\n",
    )
    .unwrap();
    let list = stdout(&ok(&["rules", "list", "--rules", path(&dir)]));
    let line = list.lines().find(|l| l.starts_with("root-account-usage")).unwrap();
    assert!(line.contains("low") && line.contains("Root used (ours)"), "the directory's rule replaces the built-in one: {line}");
    assert!(list.contains("20 rules"), "{list}");
}

/// A minimal HTTP receiver: answers 503 to its first `failures` requests,
/// then 200, and keeps each accepted body with its Idempotency-Key.
struct Receiver {
    url: String,
    accepted: Arc<Mutex<Vec<(String, Value)>>>,
    refused: Arc<Mutex<u32>>,
}

impl Receiver {
    fn start(failures: u32) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (kept, count) = (accepted.clone(), refused.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (mut length, mut key) = (0usize, String::new());
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("idempotency-key:") {
                        key = line["idempotency-key:".len()..].trim().to_owned();
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut refused = count.lock().unwrap();
                let status = if *refused < failures {
                    *refused += 1;
                    "503 Service Unavailable"
                } else {
                    kept.lock().unwrap().push((key, serde_json::from_slice(&body).unwrap()));
                    "200 OK"
                };
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Receiver { url, accepted, refused }
    }
}

#[test]
fn a_webhook_that_fails_for_a_while_gets_every_transition_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "6", "--events", "20000", "--seed", "3", "--incidents"]);
    let receiver = Receiver::start(3);
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--webhook", &receiver.url]);
    assert_eq!(*receiver.refused.lock().unwrap(), 3, "the receiver refused its first requests");
    let raised = alerts_json(&data);
    assert!(!raised.is_empty());
    {
        let accepted = receiver.accepted.lock().unwrap();
        let keys: Vec<&str> = accepted.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(unique(&keys), keys.len(), "no transition delivered twice: {keys:?}");
        let opened = accepted.iter().filter(|(_, b)| b["transition"]["kind"] == "opened").count();
        assert_eq!(opened, raised.len(), "every alert's opening arrived once the receiver recovered");
        for (key, body) in accepted.iter() {
            assert_eq!(key, body["dedupKey"].as_str().unwrap(), "the Idempotency-Key header is the transition's dedup key");
        }
    }

    // A person acknowledges one alert; the next ingest (nothing new to read) delivers that.
    let id = raised[0]["id"].as_str().unwrap();
    let line = stdout(&ok(&["alerts", "ack", "--data", path(&data), id, "--by", "alice", "--note", "looking into it"]));
    assert!(line.contains("acknowledged"), "{line}");
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--webhook", &receiver.url]);
    let accepted = receiver.accepted.lock().unwrap();
    let acks: Vec<&Value> = accepted.iter().map(|(_, b)| b).filter(|b| b["transition"]["kind"] == "acknowledged").collect();
    assert_eq!(acks.len(), 1, "the acknowledgement is delivered once");
    assert_eq!(acks[0]["transition"]["by"], "alice");
    assert_eq!(acks[0]["alert"]["id"], id);
    let shown: Value = serde_json::from_str(&stdout(&ok(&["alerts", "show", "--data", path(&data), id]))).unwrap();
    let kinds: Vec<&str> = shown["transitions"].as_array().unwrap().iter().map(|t| t["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"opened"));
    assert_eq!(kinds.last(), Some(&"acknowledged"));
}
