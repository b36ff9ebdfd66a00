//! Sessions, chains and origins: the answer key against the records.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use trailwatch_core::time::parse_utc;

use crate::fixture::trail;

fn time(v: &Value) -> i64 {
    v.as_str().and_then(|t| parse_utc(t).ok()).expect("a CloudTrail time")
}

#[test]
fn cross_account_assume_role_is_written_once_in_each_account() {
    let t = trail();
    let mut by_shared: HashMap<&str, Vec<&Value>> = HashMap::new();
    for r in t.records().filter(|r| r["eventName"] == "AssumeRole" && r["userIdentity"]["type"] != "AWSService") {
        if let Some(shared) = r["sharedEventID"].as_str() {
            by_shared.entry(shared).or_default().push(r);
        } else {
            let role_account = r["requestParameters"]["roleArn"].as_str().unwrap().split(':').nth(4).unwrap();
            assert_eq!(r["recipientAccountId"], role_account, "a same-account AssumeRole appears once, in its account");
        }
    }
    assert!(by_shared.len() > 20, "{} cross-account pairs", by_shared.len());
    for (shared, copies) in by_shared {
        assert_eq!(copies.len(), 2, "sharedEventID {shared}");
        let (caller, target) = if copies[0]["userIdentity"]["type"] == "AWSAccount" { (copies[1], copies[0]) } else { (copies[0], copies[1]) };
        assert_eq!(target["userIdentity"]["type"], "AWSAccount");
        let role_account = target["requestParameters"]["roleArn"].as_str().unwrap().split(':').nth(4).unwrap();
        assert_eq!(target["recipientAccountId"], role_account, "the AWSAccount copy is the role's account's");
        assert_eq!(caller["recipientAccountId"], caller["userIdentity"]["accountId"], "the caller's copy is the caller's account's");
        assert_eq!(target["userIdentity"]["principalId"], caller["userIdentity"]["principalId"]);
        assert_eq!(target["userIdentity"]["accountId"], caller["userIdentity"]["accountId"]);
        assert_ne!(caller["eventID"], target["eventID"]);
        for field in ["requestID", "eventTime", "requestParameters", "responseElements", "sourceIPAddress"] {
            assert_eq!(caller[field], target[field], "{field} of {shared}");
        }
    }
}

#[test]
fn every_session_is_issued_by_records_that_say_so() {
    let t = trail();
    assert!(t.sessions().len() > 200);
    for s in t.sessions() {
        let key = s["accessKeyId"].as_str().unwrap();
        assert!(key.starts_with("ASIA") && key.len() == 20);
        let ids = s["issuingEventIds"].as_array().unwrap();
        assert!(matches!(ids.len(), 1 | 2));
        for id in ids {
            let (_, r) = t.event(id.as_str().unwrap()).unwrap_or_else(|| panic!("issuing event {id} is in the files"));
            assert_eq!(r["eventName"], s["eventName"]);
            assert_eq!(r["eventTime"], s["issuedAt"]);
            assert_eq!(r["responseElements"]["credentials"]["accessKeyId"], key);
            let expiration = r["responseElements"]["credentials"]["expiration"].as_str().unwrap();
            assert!(expiration.ends_with(" AM") || expiration.ends_with(" PM"), "CloudTrail's human expiration format: {expiration}");
            if let Some(role) = s["roleArn"].as_str() {
                assert_eq!(r["requestParameters"]["roleArn"], role);
                assert_eq!(r["requestParameters"]["roleSessionName"], s["sessionName"]);
                let session_arn = r["responseElements"]["assumedRoleUser"]["arn"].as_str().unwrap();
                assert!(session_arn.starts_with(&format!("arn:aws:sts::{}:assumed-role/", s["account"].as_str().unwrap())));
            }
            if let Some(source) = s["sourceIdentity"].as_str() {
                assert_eq!(r["responseElements"]["sourceIdentity"], source);
            }
        }
        if ids.len() == 2 {
            let (_, target) = t.event(ids[1].as_str().unwrap()).unwrap();
            assert_eq!(target["recipientAccountId"], s["account"]);
            assert_eq!(target["userIdentity"]["type"], "AWSAccount");
        }
    }
}

#[test]
fn chains_lead_from_the_origin_hop_by_hop() {
    let t = trail();
    let mut kinds = HashSet::new();
    let mut longest = 0;
    for s in t.sessions() {
        let chain = s["chain"].as_array().unwrap();
        longest = longest.max(chain.len());
        let last = chain.last().unwrap();
        assert_eq!(last["accessKeyId"], s["accessKeyId"], "the last hop is the session itself");
        assert_eq!(last["eventId"], s["issuingEventIds"][0]);
        let origin = &s["origin"];
        kinds.insert(origin["kind"].as_str().unwrap().to_owned());
        for (i, hop) in chain.iter().enumerate() {
            let (_, r) = t.event(hop["eventId"].as_str().unwrap()).unwrap();
            assert_eq!(r["responseElements"]["credentials"]["accessKeyId"], hop["accessKeyId"]);
            let caller = &r["userIdentity"];
            if i > 0 {
                let previous = &chain[i - 1];
                assert_eq!(caller["accessKeyId"], previous["accessKeyId"], "hop {i} is called with the previous hop's key");
                assert!(time(&previous["time"]) < time(&hop["time"]));
                continue;
            }
            let principal = origin["principal"].as_str().unwrap();
            match origin["kind"].as_str().unwrap() {
                "iam_user" => {
                    assert_eq!(caller["type"], "IAMUser");
                    assert_eq!(caller["arn"], principal);
                    assert!(caller["accessKeyId"].as_str().unwrap().starts_with("AKIA"));
                }
                "federated_user" => {
                    assert_eq!(r["eventName"], "GetFederationToken");
                    assert_eq!(caller["type"], "IAMUser");
                    assert!(principal.contains(":federated-user/"));
                }
                "identity_center_user" | "saml_user" => {
                    assert_eq!(caller["type"], "SAMLUser");
                    assert_eq!(caller["userName"], principal);
                    assert_eq!(r["requestParameters"]["principalArn"], origin["provider"]);
                    let provider = origin["provider"].as_str().unwrap();
                    assert_eq!(provider.contains(":saml-provider/AWSSSO_"), origin["kind"] == "identity_center_user", "{provider}");
                    if origin["kind"] == "identity_center_user" {
                        assert!(r["requestParameters"]["roleArn"].as_str().unwrap().contains("/AWSReservedSSO_"));
                    }
                }
                "web_identity" => {
                    assert_eq!(caller["type"], "WebIdentityUser");
                    assert_eq!(caller["userName"], principal);
                    assert_eq!(caller["identityProvider"], origin["provider"]);
                    assert!(principal.starts_with("repo:acme/"));
                }
                "aws_service" => {
                    assert_eq!(caller["type"], "AWSService");
                    assert!(principal.starts_with(caller["invokedBy"].as_str().unwrap()));
                    if let Some(instance) = principal.strip_prefix("ec2.amazonaws.com:") {
                        assert_eq!(r["requestParameters"]["roleSessionName"], instance);
                    }
                }
                other => panic!("unexpected origin kind {other}"),
            }
        }
    }
    assert!(longest >= 3, "role chains of up to 3 hops");
    for kind in ["iam_user", "identity_center_user", "saml_user", "web_identity", "aws_service", "federated_user"] {
        assert!(kinds.contains(kind), "{kind} among {kinds:?}");
    }
}

#[test]
fn every_temporary_key_in_use_belongs_to_exactly_one_session() {
    let t = trail();
    let mut sessions: HashMap<&str, Vec<&Value>> = HashMap::new();
    for s in t.sessions() {
        sessions.entry(s["accessKeyId"].as_str().unwrap()).or_default().push(s);
    }
    let mut used = 0;
    // The root user's console session (an incident) was issued by no record.
    for r in t.records().filter(|r| r["userIdentity"]["type"] != "Root") {
        let identity = &r["userIdentity"];
        let Some(key) = identity["accessKeyId"].as_str().filter(|k| k.starts_with("ASIA")) else { continue };
        used += 1;
        let at = time(&r["eventTime"]);
        let matching: Vec<&&Value> = sessions[key].iter().filter(|s| time(&s["issuedAt"]) < at && at <= time(&s["expiresAt"])).collect();
        assert_eq!(matching.len(), 1, "{key} at {}", r["eventTime"]);
        let s = matching[0];
        assert_eq!(identity["accountId"], s["account"]);
        if identity["type"] == "AssumedRole" {
            assert!(identity["arn"].as_str().unwrap().ends_with(&format!("/{}", s["sessionName"].as_str().unwrap())));
            assert_eq!(identity["sessionContext"]["sessionIssuer"]["arn"], s["roleArn"]);
            assert_eq!(identity["sessionContext"]["attributes"]["creationDate"], s["issuedAt"]);
            assert_eq!(identity["sessionContext"]["sourceIdentity"].as_str(), s["sourceIdentity"].as_str());
            match s["origin"]["kind"].as_str().unwrap() {
                "web_identity" if s["chain"].as_array().unwrap().len() == 1 => {
                    assert_eq!(identity["sessionContext"]["webIdFederationData"]["federatedProvider"], s["origin"]["provider"])
                }
                "aws_service" if s["origin"]["principal"].as_str().unwrap().starts_with("ec2.") && s["chain"].as_array().unwrap().len() == 1 => {
                    assert_eq!(identity["sessionContext"]["ec2RoleDelivery"], "2.0")
                }
                _ => {}
            }
        }
    }
    assert!(used > t.config.events as usize / 2, "most traffic uses temporary keys: {used}");
}

#[test]
fn a_temporary_key_id_is_issued_again_hours_later() {
    let t = trail();
    let mut by_key: HashMap<&str, Vec<&Value>> = HashMap::new();
    for s in t.sessions() {
        by_key.entry(s["accessKeyId"].as_str().unwrap()).or_default().push(s);
    }
    let reused: Vec<_> = by_key.values().filter(|v| v.len() > 1).collect();
    assert!(!reused.is_empty(), "at least one access key id is reused");
    for holders in reused {
        assert_ne!(holders[0]["issuingEventIds"], holders[1]["issuingEventIds"]);
        assert!(time(&holders[0]["expiresAt"]) + 3_600_000 <= time(&holders[1]["issuedAt"]), "hours apart, never while valid");
    }
}

#[test]
fn usage_can_reach_the_bucket_before_the_assume_role_that_issued_it() {
    let t = trail();
    let mut issued_in: HashMap<(&str, &str), i64> = HashMap::new();
    for s in t.sessions() {
        for id in s["issuingEventIds"].as_array().unwrap() {
            let (log, r) = t.event(id.as_str().unwrap()).unwrap();
            if r["recipientAccountId"] == s["account"] {
                issued_in.insert((s["accessKeyId"].as_str().unwrap(), s["issuedAt"].as_str().unwrap()), log.trail_key.file_time);
            }
        }
    }
    let mut early = 0;
    let sessions = t.sessions();
    for log in &t.logs {
        for r in log.records.iter().filter(|r| r["userIdentity"]["type"] != "Root") {
            let Some(key) = r["userIdentity"]["accessKeyId"].as_str().filter(|k| k.starts_with("ASIA")) else { continue };
            let at = time(&r["eventTime"]);
            let s = sessions.iter().find(|s| s["accessKeyId"] == key && time(&s["issuedAt"]) < at && at <= time(&s["expiresAt"])).unwrap();
            if issued_in.get(&(key, s["issuedAt"].as_str().unwrap())).is_some_and(|&file| log.trail_key.file_time < file) {
                early += 1;
            }
        }
    }
    assert!(early > 0, "some usage lands in an earlier file than its issuing event");
}

#[test]
fn every_claimed_identity_type_appears() {
    let t = trail();
    let seen: HashSet<&str> = t.records().filter_map(|r| r["userIdentity"]["type"].as_str()).collect();
    for kind in trailwatch_gen::IDENTITY_TYPES {
        assert!(seen.contains(kind), "{kind} among {seen:?}");
    }
    // The root user acts only in its incident.
    let root: HashSet<&str> = t.records().filter(|r| r["userIdentity"]["type"] == "Root").map(|r| r["eventID"].as_str().unwrap()).collect();
    let incident = t.incidents().iter().find(|i| i["name"] == "root-usage").unwrap();
    let listed: HashSet<&str> = incident["eventIds"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert_eq!(root, listed);
}
