//! `trailwatch onboarding` over the embedded store: a generated organization
//! whose trail lacks some of its accounts, ingested, then checked the way a
//! cron job would (exit code) and a person would (the table).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use crate::harness::*;

const QUIET_A: &str = "210987654321";
const QUIET_B: &str = "310987654322";
const NEVER: &str = "410987654323";
const CLOSED: &str = "510987654324";
const ORG: &str = "o-onboardtest1";

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\nstderr:\n{}", stdout(out), stderr(out)))
}

fn statuses(report: &Value) -> BTreeMap<String, String> {
    report["accounts"].as_array().unwrap().iter().map(|a| (a["account_id"].as_str().unwrap().to_owned(), a["status"].as_str().unwrap().to_owned())).collect()
}

#[test]
fn silent_and_missing_accounts_are_reported_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, old, data) = (tmp.path().join("trail"), tmp.path().join("old"), tmp.path().join("data"));
    let now = now_ms();
    let fresh_end = trailwatch_core::time::format_utc(now - 10 * 60_000);
    let old_end = trailwatch_core::time::format_utc(now - 3 * 86_400_000);
    // The organization delivering today, and two accounts whose files stopped three days ago.
    ok(&["gen", "--out", path(&trail), "--accounts", "4", "--events", "3000", "--seed", "5", "--end", &fresh_end, "--org-id", ORG]);
    ok(&[
        "gen",
        "--out",
        path(&old),
        "--accounts",
        "2",
        "--events",
        "300",
        "--seed",
        "6",
        "--end",
        &old_end,
        "--org-id",
        ORG,
        "--account-ids",
        &format!("{QUIET_A},{QUIET_B}"),
    ]);
    copy_tree(&old.join("AWSLogs"), &trail.join("AWSLogs"));

    let generated: Value = serde_json::from_slice(&std::fs::read(trail.join("accounts.json")).unwrap()).unwrap();
    let mut listed: Vec<Value> = generated["Accounts"].as_array().unwrap().clone();
    let expected: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let delivering: Vec<String> = expected["totals"]["eventsByAccount"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(delivering.len(), 4, "every generated account has traffic");
    // One delivering account is left out of the list: it shows as unknown.
    let stranger = delivering[1].clone();
    listed.retain(|a| a["Id"] != stranger.as_str());
    listed.push(json!({"Id": QUIET_A, "Name": "Quiet Analytics", "Status": "ACTIVE", "OuPath": "Root/Workloads"}));
    listed.push(json!({"Id": QUIET_B, "Name": "Quiet Batch", "Status": "ACTIVE"}));
    listed.push(json!({"Id": NEVER, "Name": "Never Onboarded", "Status": "ACTIVE", "JoinedTimestamp": "2026-01-05T09:00:00+00:00"}));
    listed.push(json!({"Id": CLOSED, "Name": "Closed Sandbox", "Status": "SUSPENDED"}));
    let accounts = tmp.path().join("org-accounts.json");
    std::fs::write(&accounts, json!({ "Accounts": listed }).to_string()).unwrap();
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data), "--accounts", path(&accounts)]);

    // JSON, against the copy of the account list the ingest kept.
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "silent accounts fail the check:\n{}\n{}", stdout(&out), stderr(&out));
    let report = json_of(&out);
    let got = statuses(&report);
    for id in delivering.iter().filter(|id| **id != stranger) {
        assert_eq!(got[id], "ONBOARDED", "{id} delivers today: {report:#}");
    }
    assert_eq!(got[&stranger], "UNKNOWN_ACCOUNT");
    assert_eq!(got[QUIET_A], "SILENT");
    assert_eq!(got[QUIET_B], "SILENT");
    assert_eq!(got[NEVER], "NEVER_DELIVERED");
    assert_eq!(got[CLOSED], "SUSPENDED");
    assert_eq!(report["counts"], json!({"accounts": 8, "onboarded": 3, "silent": 2, "never_delivered": 1, "suspended": 1, "unknown_accounts": 1}));
    assert_eq!(report["all_delivering"], false);
    let quiet = report["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == QUIET_A).unwrap();
    assert!(quiet["silent_regions"].as_array().unwrap().iter().any(|r| r == "us-east-1"), "{quiet}");
    let last = trailwatch_core::time::parse_utc(quiet["last_delivery"].as_str().unwrap()).unwrap();
    assert!((now - 4 * 86_400_000..now - 2 * 86_400_000).contains(&last), "last delivery about three days ago: {quiet}");
    assert!(quiet["reason"].as_str().unwrap().starts_with("no log file within 24h from"), "{quiet}");
    assert_eq!(quiet["name"], "Quiet Analytics");

    // The table a person reads: the failing accounts first, the exit code named.
    let out = trailwatch().args(["onboarding", "--data", path(&data)]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with(NEVER) && lines[1].contains("Never Onboarded") && lines[1].contains("NEVER_DELIVERED"), "{text}");
    assert!(lines[2].starts_with(QUIET_A) && lines[2].contains("Root/Workloads") && lines[2].contains("SILENT"), "{text}");
    assert!(text.contains("8 accounts: 3 onboarded, 2 silent, 1 never delivered, 1 suspended, 1 unknown"), "{text}");
    assert!(text.contains("3 active account(s) delivered nothing within the window (exit code 3)"), "{text}");

    // A wider window takes the quiet accounts back in; a region nobody uses, asked for, is missing everywhere.
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--json", "--window", "5d"]).output().unwrap();
    let got = statuses(&json_of(&out));
    assert_eq!((got[QUIET_A].as_str(), got[QUIET_B].as_str()), ("ONBOARDED", "ONBOARDED"));
    assert_eq!(out.status.code(), Some(3), "the never-onboarded account still fails it");
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--json", "--regions", "us-east-1,ap-south-1"]).output().unwrap();
    let report = json_of(&out);
    let first = report["accounts"].as_array().unwrap().iter().find(|a| a["account_id"] == delivering[0].as_str()).unwrap();
    assert_eq!(first["status"], "SILENT");
    assert_eq!(first["silent_regions"], json!(["ap-south-1"]));

    // Only the accounts that deliver, listed: every active one is fine, exit 0.
    let healthy: Vec<Value> = generated["Accounts"].as_array().unwrap().iter().cloned().chain([json!({"Id": CLOSED, "Status": "SUSPENDED"})]).collect();
    let healthy_file = tmp.path().join("healthy.json");
    std::fs::write(&healthy_file, json!({ "Accounts": healthy }).to_string()).unwrap();
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--accounts", path(&healthy_file)]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("every active account delivered within the window"), "{}", stdout(&out));

    // Mistakes are named.
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--window", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--window") && stderr(&out).contains("is not a window"), "{}", stderr(&out));
    let out = trailwatch().args(["onboarding", "--data", path(&data), "--member-role-name"]).output().unwrap();
    assert!(stderr(&out).contains("need --aws"), "{}", stderr(&out));
}
