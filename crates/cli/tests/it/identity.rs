//! Identity resolution end to end: a generated organization's answer key
//! against what trailwatch stored and resolves.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;
use trailwatch_core::identity::{Actor, Caller, PendingConfig, PendingSet, Resolution, Resolver, ResolverConfig};
use trailwatch_core::time::parse_utc;
use trailwatch_embedded::SqliteStore;

use crate::harness::*;

fn time(v: &Value) -> i64 {
    parse_utc(v.as_str().expect("time")).expect("time")
}

fn chain_ids(chain: &Value) -> Vec<String> {
    chain.as_array().expect("chain").iter().map(|h| h["eventId"].as_str().expect("eventId").to_owned()).collect()
}

/// Every session of the answer key, and every event using one, resolves to
/// its true origin with the true chain of hops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_organization_resolves_to_its_answer_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "50", "--events", "500000", "--seed", "11"]);
    let summary = stdout(&ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]));
    assert!(summary.contains("still waiting 0"), "no event is left waiting: {summary}");
    let key: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let sessions = key["sessions"].as_array().unwrap();
    assert!(sessions.len() > 1000, "a realistic number of sessions: {}", sessions.len());

    // Sessions: resolve each key at its issue time through the stored sessions.
    let store = Arc::new(SqliteStore::open(data.join("trailwatch.db")).unwrap());
    let resolver = Arc::new(Resolver::new(store.clone(), Some(store.clone()), ResolverConfig::default()));
    let identity = PendingSet::new(resolver.clone(), store.clone(), PendingConfig::default());
    let mut wrong = Vec::new();
    for s in sessions {
        let at = time(&s["issuedAt"]);
        resolver.observe(at);
        let caller = Caller { identity_type: "AssumedRole".into(), access_key_id: Some(s["accessKeyId"].as_str().unwrap().into()), ..Default::default() };
        let origin = match resolver.resolve(Actor::new(&caller, at)).await.unwrap() {
            Resolution::Resolved(origin) => origin,
            Resolution::Waiting { missing, .. } => panic!("session {} is not known: {}", s["accessKeyId"], missing.describe()),
        };
        let expected = &s["origin"];
        let got_chain: Vec<String> = origin.chain.iter().map(|h| h.event_id.clone()).collect();
        if origin.kind.as_str() != expected["kind"].as_str().unwrap()
            || origin.principal.as_deref() != expected["principal"].as_str()
            || got_chain != chain_ids(&s["chain"])
        {
            wrong.push(format!(
                "{} at {}: got {:?} {:?} {got_chain:?}, expected {expected} {:?}",
                s["accessKeyId"],
                s["issuedAt"],
                origin.kind,
                origin.principal,
                chain_ids(&s["chain"])
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} sessions resolve wrongly, e.g.:\n{}",
        wrong.len(),
        sessions.len(),
        wrong.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
    assert_eq!(identity.count().await.unwrap(), 0);

    // Events: every exported event that used a session carries that session's origin.
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for s in sessions {
        by_key.entry(s["accessKeyId"].as_str().unwrap()).or_default().push(s);
    }
    let out = stdout(&ok(&["export", "--data", path(&data)]));
    let (mut checked, mut exact) = (0, 0);
    for line in out.lines() {
        let record: Value = serde_json::from_str(line).unwrap();
        let origin = &record["trailwatch"]["origin"];
        exact += usize::from(origin["confidence"] == "exact");
        let Some(k) = record["userIdentity"]["accessKeyId"].as_str().filter(|k| k.starts_with("ASIA")) else { continue };
        let at = time(&record["eventTime"]);
        let session = by_key
            .get(k)
            .and_then(|c| c.iter().filter(|s| time(&s["issuedAt"]) - 60_000 <= at && at <= time(&s["expiresAt"]) + 60_000).max_by_key(|s| time(&s["issuedAt"])))
            .unwrap_or_else(|| panic!("event {} uses {k}, which the answer key does not know", record["eventID"]));
        assert_eq!(origin["kind"], session["origin"]["kind"], "event {}", record["eventID"]);
        assert_eq!(origin["principal"], session["origin"]["principal"], "event {}", record["eventID"]);
        assert_eq!(chain_ids(&origin["chain"]), chain_ids(&session["chain"]), "event {}", record["eventID"]);
        assert_eq!(origin["confidence"], "exact", "event {}", record["eventID"]);
        checked += 1;
    }
    assert!(checked > 100_000, "most traffic runs on sessions: {checked}");
    assert!(exact * 100 / out.lines().count() >= 99, "{exact} exact of {}", out.lines().count());
}

/// `trailwatch resolve` prints the origin and chain of a key as JSON.
#[test]
fn resolve_prints_the_origin_and_chain_of_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (trail, data) = (tmp.path().join("trail"), tmp.path().join("data"));
    ok(&["gen", "--out", path(&trail), "--accounts", "6", "--events", "8000", "--seed", "5"]);
    ok(&["ingest", "--trail", path(&trail), "--data", path(&data)]);
    let key: Value = serde_json::from_slice(&std::fs::read(trail.join("expected.json")).unwrap()).unwrap();
    let session = key["sessions"].as_array().unwrap().iter().max_by_key(|s| s["chain"].as_array().unwrap().len()).unwrap();
    let access_key = session["accessKeyId"].as_str().unwrap();
    let out = stdout(&ok(&["resolve", "--data", path(&data), access_key, "--at", session["issuedAt"].as_str().unwrap()]));
    let got: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["origin"]["kind"], session["origin"]["kind"], "{out}");
    assert_eq!(got["origin"]["principal"], session["origin"]["principal"], "{out}");
    assert_eq!(chain_ids(&got["origin"]["chain"]), chain_ids(&session["chain"]), "{out}");

    let unknown = stdout(&ok(&["resolve", "--data", path(&data), "ASIAZZZZZZZZZZZZZZZZ", "--at", "2026-10-31T12:00:00Z"]));
    let got: Value = serde_json::from_str(&unknown).unwrap();
    assert_eq!(got["origin"]["confidence"], "pending", "{unknown}");
    assert!(got["missing"].as_str().unwrap().contains("ASIAZZZZZZZZZZZZZZZZ"), "{unknown}");

    let bad = trailwatch().args(["resolve", "--data", path(&data), "not a key"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("is not an AWS access key id"), "{}", stderr(&bad));
}
