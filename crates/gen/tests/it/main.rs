//! Integration tests of trailwatch-gen: what a user of the generated trail
//! would notice. One organization is generated once and read back whole by
//! the core crate's reader; each test checks one promise against it.
// Test helpers outside #[test] functions may unwrap too: a failure is the test failing.
#![allow(clippy::unwrap_used)]

mod benign;
mod fixture;
mod identities;
mod incidents;
mod integrity;
mod pack;

use std::collections::{BTreeMap, HashMap, HashSet};

use fixture::{count_records, generate_into, hashes, trail};
use trailwatch_core::event::Event;
use trailwatch_core::layout::ObjectKind;
use trailwatch_core::model::Record;
use trailwatch_gen::{GenConfig, GenError};

#[test]
fn output_is_deterministic_and_does_not_depend_on_threads() {
    let config = GenConfig { accounts: 5, events: 5_000, seed: 7, threads: 1, ..GenConfig::default() };
    let (one, report_one) = generate_into(&config);
    let (three, report_three) = generate_into(&GenConfig { threads: 3, ..config.clone() });
    assert_eq!(report_one, report_three);
    let a = hashes(one.path());
    assert!(a.len() > 100, "{} files", a.len());
    assert_eq!(a, hashes(three.path()), "same seed, different thread counts: byte-identical files");
    let (other, _) = generate_into(&GenConfig { seed: 8, ..config });
    let b = hashes(other.path());
    assert_ne!(a.get("expected.json"), b.get("expected.json"));
    assert!(a.keys().filter(|k| k.starts_with("AWSLogs/")).all(|k| !b.contains_key(k)), "another seed, another organization");
}

#[test]
fn small_and_large_organizations_hold_together() {
    for (accounts, events, days) in [(2, 3_000, 2), (24, 5_000, 1)] {
        let (dir, report) = generate_into(&GenConfig { accounts, events, days, seed: 3, ..GenConfig::default() });
        assert_eq!(report.accounts.len(), accounts);
        let counts = count_records(dir.path());
        assert_eq!(counts.values().sum::<u64>(), events);
        assert_eq!(counts.len(), accounts, "every account has traffic: {counts:?}");
        let expected: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("expected.json")).unwrap()).unwrap();
        assert_eq!(expected["totals"]["events"], events);
        assert!(!expected["sessions"].as_array().unwrap().is_empty());
    }
}

#[test]
fn every_log_file_reads_back_with_the_core_reader() {
    let t = trail();
    assert!(!t.logs.is_empty());
    for log in &t.logs {
        assert_eq!(log.trail_key.kind, ObjectKind::Log);
        assert_eq!(log.trail_key.org_id.as_deref(), Some(t.report.org_id.as_str()), "{}", log.key);
        assert!(!log.records.is_empty(), "CloudTrail writes no empty log file: {}", log.key);
        for (i, (bytes, value)) in log.raw_records.iter().zip(&log.records).enumerate() {
            let event = Event::from_record(i, bytes, &log.trail_key.account_id).unwrap_or_else(|e| panic!("{}: {e}", log.key));
            assert_eq!(event.account_id, log.trail_key.account_id, "recipientAccountId is the key's account");
            assert_eq!(event.region, log.trail_key.region, "awsRegion is the key's region");
            let record: Record = serde_json::from_slice(bytes).unwrap_or_else(|e| panic!("{}: record {i}: {e}", log.key));
            assert_eq!(&serde_json::to_value(&record).unwrap(), value, "the model round-trips record {i} of {}", log.key);
        }
    }
}

#[test]
fn totals_count_exactly_what_was_written() {
    let t = trail();
    let records: usize = t.logs.iter().map(|l| l.records.len()).sum();
    assert_eq!(records as u64, t.config.events, "exactly the events asked for");
    assert_eq!(t.report.events, t.config.events);
    let totals = &t.expected["totals"];
    assert_eq!(totals["events"], t.config.events);
    assert_eq!(totals["files"], t.logs.len() as u64);
    assert_eq!(totals["digestFiles"], t.digests.len() as u64);
    assert_eq!(t.report.files, t.logs.len() as u64);
    assert_eq!(t.report.digest_files, t.digests.len() as u64);
    assert_eq!(totals["sessions"], t.sessions().len() as u64);
    let mut by_account: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids: HashMap<&str, HashSet<&str>> = HashMap::new();
    for log in &t.logs {
        *by_account.entry(log.trail_key.account_id.clone()).or_default() += log.records.len() as u64;
        for r in &log.records {
            assert!(ids.entry(&log.trail_key.account_id).or_default().insert(r["eventID"].as_str().unwrap()), "eventIDs are unique per account");
        }
    }
    let expected: BTreeMap<String, u64> = totals["eventsByAccount"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    assert_eq!(by_account, expected);
    let counts: Vec<u64> = expected.values().copied().collect();
    assert!(counts.iter().max().unwrap() > &(counts.iter().min().unwrap() * 4), "a few busy accounts: {counts:?}");
}

#[test]
fn records_carry_the_fields_cloudtrail_writes() {
    let t = trail();
    let mut sources = HashSet::new();
    let mut errors = HashSet::new();
    let mut console = 0;
    for r in t.records() {
        for field in [
            "eventVersion",
            "userIdentity",
            "eventTime",
            "eventSource",
            "eventName",
            "awsRegion",
            "sourceIPAddress",
            "userAgent",
            "eventID",
            "eventType",
            "managementEvent",
            "recipientAccountId",
            "eventCategory",
            "readOnly",
        ] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
        assert!(r.get("requestParameters").is_some() && r.get("responseElements").is_some(), "{r}");
        assert!(matches!(r["eventVersion"].as_str(), Some("1.08" | "1.09")));
        assert_eq!(r["eventCategory"], "Management");
        let id = r["eventID"].as_str().unwrap();
        assert!(id.len() == 36 && &id[14..15] == "4", "UUID v4 event id: {id}");
        if r["eventType"] == "AwsApiCall" && r["userIdentity"]["invokedBy"].is_null() && r["userAgent"] != "AWS Internal" {
            assert!(r["tlsDetails"]["clientProvidedHostHeader"].is_string(), "API calls have TLS details: {r}");
        }
        if let Some(code) = r["errorCode"].as_str() {
            errors.insert(code.to_owned());
            assert!(r["errorMessage"].is_string() && r["responseElements"].is_null());
        }
        if r["eventName"] == "ConsoleLogin" {
            assert_eq!(r["eventType"], "AwsConsoleSignIn");
            let outcome = r["responseElements"]["ConsoleLogin"].as_str().unwrap();
            assert_eq!(outcome == "Failure", r["errorMessage"] == "Failed authentication");
            assert!(r["additionalEventData"]["MFAUsed"].is_string() && r["additionalEventData"]["LoginTo"].is_string());
        }
        console += usize::from(r["sessionCredentialFromConsole"] == "true");
        sources.insert(r["eventSource"].as_str().unwrap().to_owned());
    }
    for code in ["AccessDenied", "Client.UnauthorizedOperation", "ThrottlingException"] {
        assert!(errors.contains(code), "{code} among {errors:?}");
    }
    assert!(console > 0);
    assert!(sources.len() >= 12, "{sources:?}");
    let event_types: HashSet<&str> = t.records().map(|r| r["eventType"].as_str().unwrap()).collect();
    assert_eq!(event_types, HashSet::from(["AwsApiCall", "AwsConsoleSignIn", "AwsServiceEvent"]));
}

#[test]
fn reads_outnumber_writes_and_follow_working_hours() {
    let t = trail();
    let (mut reads, mut writes) = (0, 0);
    let mut by_hour = [0u64; 24];
    for r in t.records() {
        if r["readOnly"] == true {
            reads += 1;
        } else {
            writes += 1;
        }
        let time = r["eventTime"].as_str().unwrap();
        by_hour[time[11..13].parse::<usize>().unwrap()] += 1;
    }
    assert!(reads > 3 * writes, "{reads} reads, {writes} writes");
    let day: u64 = by_hour[12..20].iter().sum();
    let night: u64 = by_hour[0..8].iter().sum();
    assert!(day > night, "busier at working hours (UTC 12-20: {day}, 0-8: {night})");
}

#[test]
fn accounts_json_lists_the_organization_like_the_cli() {
    let t = trail();
    let text = std::fs::read_to_string(t.dir.path().join("accounts.json")).unwrap();
    let listing: serde_json::Value = serde_json::from_str(&text).unwrap();
    let accounts = listing["Accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), t.config.accounts);
    let management = t.expected["organization"]["managementAccountId"].as_str().unwrap();
    let org = &t.report.org_id;
    assert!(org.starts_with("o-") && org.len() == 12 && org[2..].bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let ids: Vec<&str> = accounts.iter().map(|a| a["Id"].as_str().unwrap()).collect();
    assert_eq!(ids, t.report.accounts.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(ids[0], management);
    let names: Vec<&str> = accounts.iter().map(|a| a["Name"].as_str().unwrap()).collect();
    for name in ["Management", "Log Archive", "Security Tooling", "Prod Payments", "Sandbox Alice"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    for a in accounts {
        let id = a["Id"].as_str().unwrap();
        assert!(id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit()) && id != "123456789012");
        assert_eq!(a["Arn"], format!("arn:aws:organizations::{management}:account/{org}/{id}"));
        assert_eq!(a["Status"], "ACTIVE");
        assert!(matches!(a["JoinedMethod"].as_str(), Some("CREATED" | "INVITED")));
        assert!(a["Email"].as_str().unwrap().contains('@'));
        assert!(a["JoinedTimestamp"].as_str().unwrap().ends_with("+00:00"));
    }
}

#[test]
fn impossible_configurations_and_unwritable_paths_are_errors() {
    let noop = |_: u64| {};
    let dir = tempfile::tempdir().unwrap();
    let err = trailwatch_gen::generate(&GenConfig { accounts: 1, ..GenConfig::default() }, dir.path(), &noop).unwrap_err();
    assert!(matches!(err, GenError::Config(_)) && err.to_string().contains("at least 2 accounts"), "{err}");
    let err = trailwatch_gen::generate(&GenConfig { days: 0, ..GenConfig::default() }, dir.path(), &noop).unwrap_err();
    assert!(matches!(err, GenError::Config(_)), "{err}");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = trailwatch_gen::generate(&GenConfig { events: 100, ..GenConfig::default() }, &file, &noop).unwrap_err();
    assert!(matches!(err, GenError::Io { .. }) && err.to_string().contains("not-a-dir"), "the error names the path: {err}");
}
