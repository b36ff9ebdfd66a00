//! Injected incidents: each in the trail once, with its records, and
//! exactly the alerts the answer key lists raised by the pack.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;
use trailwatch_core::time::parse_utc;
use trailwatch_gen::{GenConfig, GenError};

use crate::fixture::{answer_key, for_each_record, generate_into, hashes, trail, Trail};
use crate::pack::{text, Pack, Raised};

const INCIDENTS: [(&str, i64); 6] =
    [("console-brute-force", 20), ("root-usage", 35), ("trail-stopped", 50), ("security-group-opened", 62), ("spot-instances", 75), ("ci-into-production", 88)];

fn time(v: &Value) -> i64 {
    parse_utc(v.as_str().expect("a time")).expect("a CloudTrail time")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("a string: {v}"))
}

/// The answer key's alerts, as the pack model reports them.
fn listed(key: &Value) -> Vec<Raised> {
    let mut out: Vec<Raised> = key["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let id = crate::pack::rules().into_iter().map(|r| r.id).find(|id| *id == s(&a["ruleId"])).unwrap_or_else(|| panic!("unknown rule {}", a["ruleId"]));
            Raised {
                rule: id,
                group: a["group"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), s(v).to_owned())).collect(),
                first_event_id: s(&a["firstEventId"]).to_owned(),
                count: a["count"].as_u64().unwrap() as usize,
            }
        })
        .collect();
    out.sort();
    out
}

fn incident<'a>(t: &'a Trail, name: &str) -> &'a Value {
    t.incidents().iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("incident {name}"))
}

fn account_name<'a>(key: &'a Value, id: &str) -> &'a str {
    key["organization"]["accounts"].as_array().unwrap().iter().find(|a| a["id"] == id).map(|a| s(&a["name"])).unwrap()
}

fn is_workload(name: &str) -> bool {
    ["Prod ", "Staging ", "Dev ", "Shared "].iter().any(|p| name.starts_with(p))
}

#[test]
fn the_pack_raises_exactly_the_alerts_the_answer_key_lists() {
    let t = trail();
    let mut pack = Pack::new();
    t.records().for_each(|r| pack.feed(r));
    let raised = pack.alerts();
    assert_eq!(raised, listed(&t.expected));
    let mut rules: Vec<&str> = raised.iter().map(|a| a.rule).collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        [
            "cloudtrail-configuration-changes",
            "console-authentication-failures",
            "console-signin-brute-force",
            "console-signin-without-mfa",
            "iam-policy-changes",
            "root-account-usage",
            "security-group-changes",
            "spot-capacity-changes"
        ]
    );
    for alert in t.alerts() {
        assert_eq!(alert["group"]["recipientAccountId"], alert["accountId"]);
        let (_, first) = t.event(s(&alert["firstEventId"])).unwrap();
        assert_eq!(first["recipientAccountId"], alert["accountId"]);
    }
}

#[test]
fn each_incident_is_in_the_trail_once_with_its_records() {
    let t = trail();
    let names: Vec<&str> = t.incidents().iter().map(|i| s(&i["name"])).collect();
    assert_eq!(names, INCIDENTS.map(|i| i.0));
    let mut ids: HashMap<&str, usize> = HashMap::new();
    for r in t.records() {
        *ids.entry(s(&r["eventID"])).or_default() += 1;
    }
    for i in t.incidents() {
        for id in i["eventIds"].as_array().unwrap() {
            assert_eq!(ids.get(s(id)), Some(&1), "{} record {id}", i["name"]);
            let (_, r) = t.event(s(id)).unwrap();
            assert_eq!(r["recipientAccountId"], i["accountId"], "{} record {id}", i["name"]);
        }
        let alerts: Vec<&Value> = t.alerts().iter().filter(|a| a["incident"] == i["name"]).collect();
        assert!(!alerts.is_empty(), "{} raises alerts", i["name"]);
    }
    let named = |name: &str| -> Vec<&Value> { t.records().filter(|r| r["eventName"] == name).collect() };

    // Brute force: 8 failures within 3 minutes from one IP, then a sign-in without MFA.
    let failures: Vec<&Value> = named("ConsoleLogin").into_iter().filter(|r| r["responseElements"]["ConsoleLogin"] == "Failure").collect();
    assert_eq!(failures.len(), 8);
    let victim = &failures[0]["userIdentity"];
    assert!(failures.iter().all(|r| r["userIdentity"] == *victim && r["sourceIPAddress"] == failures[0]["sourceIPAddress"]));
    assert!(is_workload(account_name(&t.expected, s(&victim["accountId"]))), "{victim}");
    let times: Vec<i64> = failures.iter().map(|r| time(&r["eventTime"])).collect();
    assert!(times.iter().max().unwrap() - times.iter().min().unwrap() <= 3 * 60_000);
    let no_mfa: Vec<&Value> = named("ConsoleLogin")
        .into_iter()
        .filter(|r| {
            r["responseElements"]["ConsoleLogin"] == "Success" && r["userIdentity"]["type"] == "IAMUser" && r["additionalEventData"]["MFAUsed"] != "Yes"
        })
        .collect();
    assert_eq!(no_mfa.len(), 1);
    assert_eq!(no_mfa[0]["userIdentity"]["userName"], victim["userName"]);
    assert_eq!(no_mfa[0]["sourceIPAddress"], failures[0]["sourceIPAddress"]);
    assert!(time(&no_mfa[0]["eventTime"]) > *times.iter().max().unwrap());

    // Root: a member account's root user signs in with MFA, then calls.
    let root: Vec<&Value> = t.records().filter(|r| r["userIdentity"]["type"] == "Root").collect();
    let login = root.iter().find(|r| r["eventName"] == "ConsoleLogin").unwrap();
    assert_eq!(login["additionalEventData"]["MFAUsed"], "Yes");
    assert_ne!(login["recipientAccountId"], t.expected["organization"]["managementAccountId"]);
    assert!(
        root.len() > 1 && root.iter().all(|r| r["recipientAccountId"] == login["recipientAccountId"] && time(&r["eventTime"]) >= time(&login["eventTime"]))
    );

    // The organization trail stopped by an Identity Center administrator in the management account.
    let stop = named("StopLogging");
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0]["recipientAccountId"], t.expected["organization"]["managementAccountId"]);
    assert!(s(&stop[0]["requestParameters"]["name"]).ends_with(":trail/org-trail"));
    assert!(s(&stop[0]["userIdentity"]["arn"]).contains(":assumed-role/AWSReservedSSO_AdministratorAccess_"));

    // SSH opened to the world by an assumed-role session.
    let open = named("AuthorizeSecurityGroupIngress");
    assert_eq!(open.len(), 1);
    let permission = &open[0]["requestParameters"]["ipPermissions"]["items"][0];
    assert_eq!((&permission["fromPort"], &permission["ipRanges"]["items"][0]["cidrIp"]), (&Value::from(22), &Value::from("0.0.0.0/0")));
    assert_eq!(open[0]["userIdentity"]["type"], "AssumedRole");

    // Spot capacity, requested and run, by one CI session.
    let spot = named("RequestSpotInstances");
    let run: Vec<&Value> =
        named("RunInstances").into_iter().filter(|r| text(r, "requestParameters.instanceMarketOptions.marketType") == Some("spot")).collect();
    assert_eq!((spot.len(), run.len()), (1, 1));
    assert_eq!(spot[0]["userIdentity"]["arn"], run[0]["userIdentity"]["arn"]);

    // IAM changed in a production account by a session two hops from a GitHub workflow.
    let (put, attach) = (named("PutRolePolicy"), named("AttachRolePolicy"));
    assert_eq!((put.len(), attach.len()), (1, 1));
    assert_eq!(put[0]["userIdentity"]["arn"], attach[0]["userIdentity"]["arn"]);
    assert!(account_name(&t.expected, s(&put[0]["recipientAccountId"])).starts_with("Prod "));
}

/// The origin behind a record, from the record and the answer key's sessions.
fn origin_of(t: &Trail, r: &Value) -> (String, String) {
    let identity = &r["userIdentity"];
    match s(&identity["type"]) {
        "Root" => ("root".into(), s(&identity["arn"]).into()),
        "IAMUser" if identity["arn"].is_string() => ("iam_user".into(), s(&identity["arn"]).into()),
        // A failed sign-in names the user, not its ARN.
        "IAMUser" => ("iam_user".into(), s(&identity["userName"]).into()),
        _ => {
            let (key, at) = (&identity["accessKeyId"], time(&r["eventTime"]));
            let session = t.sessions().iter().find(|s| s["accessKeyId"] == *key && time(&s["issuedAt"]) < at && at <= time(&s["expiresAt"])).unwrap();
            (s(&session["origin"]["kind"]).into(), s(&session["origin"]["principal"]).into())
        }
    }
}

#[test]
fn alerts_carry_the_origin_behind_their_first_event() {
    let t = trail();
    let mut kinds = BTreeMap::new();
    for alert in t.alerts() {
        let (_, first) = t.event(s(&alert["firstEventId"])).unwrap();
        let origin = origin_of(t, first);
        assert_eq!((origin.0.as_str(), origin.1.as_str()), (s(&alert["originKind"]), s(&alert["originPrincipal"])), "{alert}");
        kinds.insert(s(&alert["incident"]), origin.0);
    }
    let expected = [
        ("ci-into-production", "web_identity"),
        ("console-brute-force", "iam_user"),
        ("root-usage", "root"),
        ("security-group-opened", "iam_user"),
        ("spot-instances", "web_identity"),
        ("trail-stopped", "identity_center_user"),
    ];
    assert_eq!(kinds, expected.iter().map(|(k, v)| (*k, (*v).to_owned())).collect());

    // The CI chain: web identity in one account, AssumeRole into production, resolved across both hops.
    let ci = incident(t, "ci-into-production");
    let keys: Vec<&str> = ci["accessKeyIds"].as_array().unwrap().iter().map(s).collect();
    assert_eq!(keys.len(), 2);
    let deploy = t.sessions().iter().find(|x| x["accessKeyId"] == keys[1] && x["account"] == ci["accountId"]).unwrap();
    let chain = deploy["chain"].as_array().unwrap();
    assert_eq!(chain.iter().map(|h| s(&h["eventName"])).collect::<Vec<_>>(), ["AssumeRoleWithWebIdentity", "AssumeRole"]);
    assert_ne!(chain[0]["account"], ci["accountId"], "the workflow's role is in another account");
    assert_eq!(chain[0]["accessKeyId"], keys[0]);
    let alert = t.alerts().iter().find(|a| a["ruleId"] == "iam-policy-changes").unwrap();
    assert_eq!(alert["originPrincipal"], deploy["origin"]["principal"]);
    assert!(s(&alert["originPrincipal"]).starts_with("repo:acme/"));
}

#[test]
fn incidents_sit_at_fixed_fractions_of_the_span_in_accounts_the_seed_chooses() {
    let t = trail();
    let end = time(&t.expected["generator"]["end"]);
    let span = i64::from(t.config.days) * 86_400_000;
    for (i, (name, percent)) in t.incidents().iter().zip(INCIDENTS) {
        assert_eq!(i["name"], name);
        assert_eq!(time(&i["start"]), (end - span + span * percent / 100) / 1000 * 1000, "{name}");
        for id in i["eventIds"].as_array().unwrap() {
            let (_, r) = t.event(s(id)).unwrap();
            assert!((time(&i["start"])..time(&i["start"]) + 10 * 60_000).contains(&time(&r["eventTime"])), "{name}: {r}");
        }
    }
    let mut placements = HashSet::new();
    for seed in 1..=5 {
        let (dir, _) = generate_into(&GenConfig { accounts: 8, events: 2_000, seed, incidents: true, ..GenConfig::default() });
        let key = answer_key(dir.path());
        let accounts: Vec<String> = key["incidents"].as_array().unwrap().iter().map(|i| account_name(&key, s(&i["accountId"])).to_owned()).collect();
        placements.insert(accounts);
    }
    assert!(placements.len() > 1, "the seed chooses the accounts: {placements:?}");
}

#[test]
fn incidents_are_deterministic_and_fit_the_smallest_organization() {
    let config = GenConfig { accounts: 6, events: 1_000, seed: 3, threads: 1, incidents: true, ..GenConfig::default() };
    let (one, report) = generate_into(&config);
    let (two, _) = generate_into(&GenConfig { threads: 2, ..config.clone() });
    assert_eq!(hashes(one.path()), hashes(two.path()), "same seed: byte-identical, incidents included");
    assert_eq!((report.events, report.incidents, report.alerts), (1_000, 6, 8));
    let key = answer_key(one.path());
    let mut pack = Pack::new();
    for_each_record(one.path(), |r| pack.feed(r));
    assert_eq!(pack.alerts(), listed(&key));

    let (plain, report) = generate_into(&GenConfig { incidents: false, ..config });
    assert_eq!((report.incidents, report.alerts), (0, 0));
    let key = answer_key(plain.path());
    assert_eq!((key["alerts"].as_array().unwrap().len(), key["incidents"].as_array().unwrap().len()), (0, 0));
}

#[test]
fn incidents_need_enough_accounts_and_events() {
    let noop = |_: u64| {};
    let dir = tempfile::tempdir().unwrap();
    for config in [GenConfig { accounts: 5, incidents: true, ..GenConfig::default() }, GenConfig { events: 999, incidents: true, ..GenConfig::default() }] {
        let err = trailwatch_gen::generate(&config, dir.path(), &noop).unwrap_err();
        assert!(matches!(err, GenError::Config(_)) && err.to_string().contains("incidents need"), "{err}");
    }
}
