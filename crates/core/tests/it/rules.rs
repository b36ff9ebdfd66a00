//! The detection rules engine as a rule author and the pipeline see it:
//! rules written as YAML, events as CloudTrail records, detections out.
//! Rule files under `tests/fixtures/rules/` (SigmaHQ-shaped rules, and
//! rules using trailwatch's extensions with their own tests) run against the
//! repository's fixture trails.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use trailwatch_core::alerts::{Detection, Severity};
use trailwatch_core::event::Event;
use trailwatch_core::identity::{Confidence, Hop, IssueKind, Origin, OriginKind};
use trailwatch_core::reader::RecordReader;
use trailwatch_core::rules::{run_tests, Detector, DetectorConfig, RuleIndex, RuleSet, RuleSource};
use trailwatch_core::time::parse_utc;

// ------------------------------------------------------------------ helpers

fn source(path: &str, text: &str) -> RuleSource {
    RuleSource { path: path.to_owned(), text: text.to_owned() }
}

/// A rule around a detection block (indented by 2) and extra top-level YAML.
fn rule_text(id: &str, detection: &str, extra: &str) -> String {
    format!("title: Test rule {id}\nid: {id}\nlevel: high\nlogsource:\n  product: aws\n  service: cloudtrail\ndetection:\n{detection}{extra}")
}

fn load(texts: &[&str]) -> Arc<RuleSet> {
    let sources: Vec<RuleSource> = texts.iter().enumerate().map(|(i, t)| source(&format!("rules/r{i}.yml"), t)).collect();
    match RuleSet::load(&sources) {
        Ok(set) => Arc::new(set),
        Err(errors) => panic!("rules failed to load:\n{}", errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")),
    }
}

fn load_one(detection: &str) -> Arc<RuleSet> {
    load(&[&rule_text("t", detection, "")])
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    let sources: Vec<RuleSource> = files.iter().map(|(p, t)| source(p, t)).collect();
    match RuleSet::load(&sources) {
        Ok(set) => panic!("expected load errors, got {} rules", set.rules().len()),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// A record from the fields given, with the ones every record needs.
fn event(fields: Value) -> Event {
    let mut record = json!({
        "eventVersion": "1.09",
        "eventID": "e-0001",
        "eventTime": "2024-03-12T15:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject",
        "awsRegion": "us-east-1",
        "recipientAccountId": "111111111111",
    });
    for (k, v) in fields.as_object().expect("fields are a map") {
        record[k] = v.clone();
    }
    Event::from_record(0, record.to_string().as_bytes(), "000000000000").expect("a valid test record")
}

fn check(set: &Arc<RuleSet>, e: &Event) -> Vec<Detection> {
    let mut detector = Detector::new(Arc::clone(set));
    let mut out = Vec::new();
    detector.check(e, None, &mut out);
    out
}

fn matches(set: &Arc<RuleSet>, fields: Value) -> bool {
    !check(set, &event(fields)).is_empty()
}

fn fixture_events(name: &str) -> Vec<Event> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records").join(name);
    let bytes = std::fs::read(&path).unwrap();
    let mut reader = RecordReader::new(bytes.as_slice());
    let mut events = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        events.push(Event::from_record(record.index, record.bytes, "000000000000").unwrap());
    }
    events
}

fn rule_fixtures(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules").join(dir)
}

fn origin(kind: OriginKind, principal: &str, hops: usize, confidence: Confidence) -> Origin {
    let hop = Hop {
        event_id: "h".into(),
        account_id: "111111111111".into(),
        role_arn: None,
        session_name: None,
        access_key_id: "ASIAEXAMPLE".into(),
        kind: IssueKind::AssumeRole,
        time: 0,
    };
    Origin {
        kind,
        principal: Some(principal.into()),
        account_id: Some("508917263341".into()),
        provider: None,
        source_identity: None,
        chain: vec![hop; hops],
        confidence,
        reason: None,
    }
}

// ------------------------------------------------------------------ values and modifiers

#[test]
fn plain_values_compare_as_case_insensitive_text() {
    let set = load_one("  selection:\n    eventName: getobject\n    readOnly: true\n    eventVersion: '1.09'\n  condition: selection\n");
    assert!(matches(&set, json!({"readOnly": true})));
    assert!(!matches(&set, json!({"readOnly": false})));
    assert!(!matches(&set, json!({"readOnly": true, "eventName": "GetObjectAcl"})));
    let list = load_one("  selection:\n    eventName: [PutObject, GetObject]\n  condition: selection\n");
    assert!(matches(&list, json!({})) && matches(&list, json!({"eventName": "PUTOBJECT"})) && !matches(&list, json!({"eventName": "DeleteObject"})));
}

#[test]
fn contains_startswith_endswith_and_all() {
    let set = load_one(concat!(
        "  selection:\n",
        "    userAgent|contains: kali\n",
        "    userIdentity.arn|startswith: 'arn:aws:sts::'\n",
        "    userIdentity.arn|endswith: [/i-0c4e7a19b2d3f5a68, /i-0000000000000000]\n",
        "    requestParameters.tags|contains|all: [env, owner]\n",
        "  condition: selection\n"
    ));
    let base = json!({
        "userAgent": "aws-cli/2.15.30 Linux/6.6.15-amd64 exe/x86_64.KALI.2024",
        "userIdentity": {"arn": "arn:aws:sts::741258963012:assumed-role/web/i-0c4e7a19b2d3f5a68"},
        "requestParameters": {"tags": "env=prod,owner=payments"}
    });
    assert!(matches(&set, base.clone()));
    let mut other = base.clone();
    other["userAgent"] = json!("aws-cli/2.15.30 Linux");
    assert!(!matches(&set, other));
    let mut other = base.clone();
    other["userIdentity"]["arn"] = json!("arn:aws:iam::741258963012:user/web/i-0c4e7a19b2d3f5a68");
    assert!(!matches(&set, other));
    let mut other = base.clone();
    other["requestParameters"]["tags"] = json!("env=prod");
    assert!(!matches(&set, other), "all: every value must be contained");
}

#[test]
fn regular_expressions_are_case_sensitive_unless_asked() {
    let set = load_one("  selection:\n    userIdentity.arn|re: ':assumed-role/[^/]+/i-[0-9a-f]{17}$'\n  condition: selection\n");
    assert!(matches(&set, json!({"userIdentity": {"arn": "arn:aws:sts::1:assumed-role/web/i-0c4e7a19b2d3f5a68"}})));
    assert!(!matches(&set, json!({"userIdentity": {"arn": "arn:aws:sts::1:assumed-role/web/I-0C4E7A19B2D3F5A68"}})));
    let flagged = load_one("  selection:\n    userIdentity.arn|re|i: ':assumed-role/[^/]+/i-[0-9a-f]{17}$'\n  condition: selection\n");
    assert!(matches(&flagged, json!({"userIdentity": {"arn": "arn:aws:sts::1:assumed-role/web/I-0C4E7A19B2D3F5A68"}})));
    let inline = load_one("  selection:\n    eventName|re: '(?i)^getobj'\n  condition: selection\n");
    assert!(matches(&inline, json!({})));
}

#[test]
fn cidr_blocks_v4_and_v6() {
    let set = load_one("  selection:\n    sourceIPAddress|cidr: [10.0.0.0/8, '2001:db8::/32']\n  condition: selection\n");
    assert!(matches(&set, json!({"sourceIPAddress": "10.42.3.117"})));
    assert!(matches(&set, json!({"sourceIPAddress": "2001:db8:4::1"})));
    assert!(!matches(&set, json!({"sourceIPAddress": "203.0.113.77"})));
    assert!(!matches(&set, json!({"sourceIPAddress": "2001:db9::1"})));
    assert!(!matches(&set, json!({"sourceIPAddress": "AWS Internal"})));
    assert!(!matches(&set, json!({})));
}

#[test]
fn exists_null_and_empty() {
    let exists = load_one("  selection:\n    errorCode|exists: true\n  condition: selection\n");
    assert!(matches(&exists, json!({"errorCode": "AccessDenied"})));
    assert!(!matches(&exists, json!({})));
    assert!(!matches(&exists, json!({"errorCode": null})), "a null value counts as absent");
    let absent = load_one("  selection:\n    errorCode|exists: false\n  condition: selection\n");
    assert!(matches(&absent, json!({})) && !matches(&absent, json!({"errorCode": "x"})));
    let null = load_one("  selection:\n    responseElements: null\n  condition: selection\n");
    assert!(matches(&null, json!({})));
    assert!(matches(&null, json!({"responseElements": null})));
    assert!(!matches(&null, json!({"responseElements": {"ConsoleLogin": "Success"}})));
    assert!(!matches(&null, json!({"responseElements": ""})));
    let empty = load_one("  selection:\n    userAgent: ''\n  condition: selection\n");
    assert!(matches(&empty, json!({"userAgent": ""})));
    assert!(!matches(&empty, json!({})) && !matches(&empty, json!({"userAgent": "x"})));
    let quoted_null = load_one("  selection:\n    userAgent: 'null'\n  condition: selection\n");
    assert!(matches(&quoted_null, json!({"userAgent": "NULL"})) && !matches(&quoted_null, json!({})));
}

#[test]
fn numbers_compare_numerically() {
    let set = load_one(concat!(
        "  selection:\n",
        "    additionalEventData.bytesTransferredOut|gt: 4000\n",
        "    additionalEventData.bytesTransferredIn|lte: 0\n",
        "    requestParameters.maxResults|gte: '100'\n",
        "    requestParameters.durationSeconds|lt: 3600.5\n",
        "  condition: selection\n"
    ));
    let record = |out: u64, max: Value| json!({"additionalEventData": {"bytesTransferredOut": out, "bytesTransferredIn": 0}, "requestParameters": {"maxResults": max, "durationSeconds": 3600}});
    assert!(matches(&set, record(4187, json!(100))));
    assert!(matches(&set, record(4187, json!("250"))), "text that reads as a number counts");
    assert!(!matches(&set, record(4000, json!(100))));
    assert!(!matches(&set, record(4187, json!(99))));
    assert!(!matches(&set, record(4187, json!("many"))));
    let text = load_one("  selection:\n    additionalEventData.bytesTransferredOut: '4187'\n  condition: selection\n");
    assert!(matches(&text, record(4187, json!(1))), "numbers also compare as their text");
}

#[test]
fn fieldref_compares_two_fields() {
    let set = load_one("  selection:\n    userIdentity.accountId|fieldref: recipientAccountId\n  condition: selection\n");
    assert!(matches(&set, json!({"userIdentity": {"accountId": "111111111111"}})));
    assert!(!matches(&set, json!({"userIdentity": {"accountId": "222222222222"}})));
    assert!(!matches(&set, json!({})));
    let suffix = load_one("  selection:\n    userIdentity.arn|fieldref|endswith: requestParameters.userName\n  condition: selection\n");
    assert!(matches(&suffix, json!({"userIdentity": {"arn": "arn:aws:iam::1:user/Alice"}, "requestParameters": {"userName": "alice"}})));
    assert!(!matches(&suffix, json!({"userIdentity": {"arn": "arn:aws:iam::1:user/bob"}, "requestParameters": {"userName": "alice"}})));
    let cased = load_one("  selection:\n    userIdentity.userName|fieldref|cased: requestParameters.userName\n  condition: selection\n");
    assert!(!matches(&cased, json!({"userIdentity": {"userName": "Alice"}, "requestParameters": {"userName": "alice"}})));
    assert!(matches(&cased, json!({"userIdentity": {"userName": "alice"}, "requestParameters": {"userName": "alice"}})));
}

#[test]
fn cased_compares_exactly() {
    let set = load_one("  selection:\n    requestParameters.bucketName|cased|startswith: Prod-\n  condition: selection\n");
    assert!(matches(&set, json!({"requestParameters": {"bucketName": "Prod-ledger"}})));
    assert!(!matches(&set, json!({"requestParameters": {"bucketName": "prod-ledger"}})));
}

#[test]
fn wildcards_and_escapes() {
    let set = load_one("  selection:\n    userIdentity.arn: 'arn:aws:iam::*:role/*admin*'\n  condition: selection\n");
    assert!(matches(&set, json!({"userIdentity": {"arn": "arn:aws:iam::111:role/OrgAdminRole"}})));
    assert!(!matches(&set, json!({"userIdentity": {"arn": "arn:aws:iam::111:user/admin"}})));
    let one = load_one("  selection:\n    requestParameters.key: 'report-202?.csv'\n  condition: selection\n");
    assert!(matches(&one, json!({"requestParameters": {"key": "report-2024.csv"}})));
    assert!(!matches(&one, json!({"requestParameters": {"key": "report-20245.csv"}})));
    let escaped = load_one("  selection:\n    requestParameters.key: 'logs/\\*'\n  condition: selection\n");
    assert!(matches(&escaped, json!({"requestParameters": {"key": "logs/*"}})));
    assert!(!matches(&escaped, json!({"requestParameters": {"key": "logs/2024"}})));
    let question = load_one("  selection:\n    requestParameters.q|contains: 'why\\?'\n  condition: selection\n");
    assert!(matches(&question, json!({"requestParameters": {"q": "but why? no"}})) && !matches(&question, json!({"requestParameters": {"q": "whyy"}})));
}

#[test]
fn arrays_on_the_way_match_any_element() {
    let set = load_one("  selection:\n    resources.type: AWS::S3::Object\n    resources.ARN|endswith: /secret.txt\n  condition: selection\n");
    let resources = json!({"resources": [
        {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::ledger"},
        {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::ledger/secret.txt"}
    ]});
    assert!(matches(&set, resources));
    assert!(!matches(&set, json!({"resources": [{"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::ledger"}]})));
    let nested = load_one(concat!(
        "  selection:\n",
        "    requestParameters.containerDefinitions.command|contains|all: ['169.254', '$AWS_CONTAINER_CREDENTIALS']\n",
        "  condition: selection\n"
    ));
    let task = |cmd: Value| json!({"requestParameters": {"containerDefinitions": [{"name": "a", "command": ["sh"]}, {"name": "b", "command": cmd}]}});
    assert!(matches(&nested, task(json!(["sh", "-c", "curl 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]))));
    assert!(!matches(&nested, task(json!(["sh", "-c", "curl 169.254.170.2/v2/metadata"]))));
    let object = load_one("  selection:\n    requestParameters|contains: '\"s3:GetObject\"'\n  condition: selection\n");
    assert!(
        matches(&object, json!({"requestParameters": {"policyDocument": "{\"Action\":\"s3:GetObject\"}"}})),
        "a field holding an object matches when a value inside it does"
    );
}

// ------------------------------------------------------------------ conditions

#[test]
fn conditions_with_precedence_parentheses_and_quantifiers() {
    let detection = |condition: &str| {
        format!(
            "  sel_get:\n    eventName: GetObject\n  sel_put:\n    eventName: PutObject\n  filter_internal:\n    sourceIPAddress|cidr: 10.0.0.0/8\n  _helper:\n    eventSource: nothing\n  condition: {condition}\n"
        )
    };
    let get_outside = json!({"eventName": "GetObject", "sourceIPAddress": "203.0.113.1"});
    let get_inside = json!({"eventName": "GetObject", "sourceIPAddress": "10.1.1.1"});
    let put_inside = json!({"eventName": "PutObject", "sourceIPAddress": "10.1.1.1"});
    let case = |condition: &str, fields: &Value| matches(&load_one(&detection(condition)), fields.clone());

    assert!(case("sel_get or sel_put and filter_internal", &get_outside), "and binds tighter than or");
    assert!(!case("(sel_get or sel_put) and filter_internal", &get_outside));
    assert!(case("(sel_get or sel_put) and filter_internal", &put_inside));
    assert!(case("1 of sel_* and not filter_internal", &get_outside));
    assert!(!case("1 of sel_* and not filter_internal", &get_inside));
    assert!(case("not sel_put and not (filter_internal or _helper)", &get_outside));
    assert!(case("1 of them", &get_outside));
    assert!(case("sel_get and filter_internal", &get_inside));
    // GetObject and PutObject at once: refused rather than never matching.
    let never = errors(&[("rules/never.yml", &rule_text("never", &detection("all of sel_*"), ""))]);
    assert_eq!(never, ["rules/never.yml:8:3: the condition can never match: it requires eventName to take different values at once"]);

    let all = |condition: &str| {
        load_one(&format!(
            "  sel_name:\n    eventName: GetObject\n  sel_ip:\n    sourceIPAddress|cidr: 203.0.113.0/24\n  _helper:\n    eventSource: nothing\n  condition: {condition}\n"
        ))
    };
    assert!(matches(&all("all of them"), get_outside.clone()), "`them` leaves out _helper");
    assert!(!matches(&all("all of them"), get_inside.clone()));
    assert!(!matches(&all("all of sel_* and _helper"), get_outside.clone()));
    let list = load_one("  sel_get:\n    eventName: GetObject\n  sel_put:\n    eventName: PutObject\n  condition:\n    - sel_get\n    - sel_put\n");
    assert!(matches(&list, put_inside.clone()), "a list of conditions is any of them");
}

#[test]
fn selections_as_lists_of_maps_are_alternatives() {
    let set = load_one(concat!(
        "  filter:\n",
        "    - eventSource: ssm.amazonaws.com\n",
        "    - eventName: RegisterManagedInstance\n",
        "      sourceIPAddress: AWS Internal\n",
        "  condition: not filter\n"
    ));
    assert!(!matches(&set, json!({"eventSource": "ssm.amazonaws.com"})));
    assert!(!matches(&set, json!({"eventName": "RegisterManagedInstance", "sourceIPAddress": "AWS Internal"})));
    assert!(matches(&set, json!({"eventName": "RegisterManagedInstance", "sourceIPAddress": "203.0.113.1"})));
}

// ------------------------------------------------------------------ enriched fields

#[test]
fn enriched_fields_come_from_the_origin_and_the_alias() {
    let set = load_one(concat!(
        "  selection:\n",
        "    origin.kind: iam_user\n",
        "    origin.principal|endswith: /maria.santos\n",
        "    origin.hops|gte: 2\n",
        "    origin.confidence: [exact, derived]\n",
        "    origin.account: '508917263341'\n",
        "    account.alias|startswith: pay\n",
        "    account.id: '111111111111'\n",
        "  condition: selection\n"
    ));
    let mut e = event(json!({}));
    let run = |e: &Event, alias: Option<&str>| {
        let mut detector = Detector::new(Arc::clone(&set));
        let mut out = Vec::new();
        detector.check(e, alias, &mut out);
        !out.is_empty()
    };
    assert!(!run(&e, Some("payments")), "no origin yet: origin.* are missing");
    e.origin = Some(origin(OriginKind::IamUser, "arn:aws:iam::508917263341:user/maria.santos", 2, Confidence::Exact));
    assert!(run(&e, Some("payments")));
    assert!(!run(&e, Some("data-lake")));
    assert!(!run(&e, None));
    e.origin = Some(origin(OriginKind::IamUser, "arn:aws:iam::508917263341:user/maria.santos", 1, Confidence::Exact));
    assert!(!run(&e, Some("payments")), "one hop is fewer than 2");
    e.origin = Some(origin(OriginKind::IamUser, "arn:aws:iam::508917263341:user/maria.santos", 3, Confidence::Pending));
    assert!(!run(&e, Some("payments")));
    e.origin = Some(origin(OriginKind::SamlUser, "arn:aws:iam::508917263341:user/maria.santos", 3, Confidence::Derived));
    assert!(!run(&e, Some("payments")));
}

/// A GitHub Actions session writing an inline role policy: its
/// `AssumeRoleWithWebIdentity` had not been read yet when it was first checked.
fn ci_put_role_policy() -> Event {
    let role = "arn:aws:iam::963852741036:role/gha-payments-api-deploy";
    event(json!({
        "eventID": "5c1e9a2f-7d3b-4e6a-9f08-2b4c6d8e0a13",
        "eventTime": "2024-03-12T11:23:05Z",
        "eventSource": "iam.amazonaws.com",
        "eventName": "PutRolePolicy",
        "recipientAccountId": "963852741036",
        "sourceIPAddress": "203.0.113.140",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAJXTROMDY6YBOB2MRI:GitHubActions",
            "arn": "arn:aws:sts::963852741036:assumed-role/gha-payments-api-deploy/GitHubActions",
            "accountId": "963852741036",
            "accessKeyId": "ASIAHNAMXFNPVAUUWGJD",
            "sessionContext": {
                "sessionIssuer": {"type": "Role", "principalId": "AROAJXTROMDY6YBOB2MRI", "arn": role, "accountId": "963852741036", "userName": "gha-payments-api-deploy"},
                "webIdFederationData": {"federatedProvider": "arn:aws:iam::963852741036:oidc-provider/token.actions.githubusercontent.com", "attributes": {}},
                "attributes": {"creationDate": "2024-03-12T11:20:14Z", "mfaAuthenticated": "false"}
            }
        },
        "requestParameters": {"roleName": "payments-api-task", "policyName": "ci-extra", "policyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}"}
    }))
}

#[test]
fn rules_on_origin_fields_are_checked_again_when_the_origin_settles() {
    let set = load(&[
        &rule_text("ci-policy", "  selection:\n    eventName: PutRolePolicy\n  ci:\n    origin.kind: web_identity\n  condition: selection and ci\n", ""),
        &rule_text(
            "iam-policy",
            "  selection:\n    eventName: PutRolePolicy\n  condition: selection\n",
            "dedup:\n  by: [origin.principal]\nsummary: '{eventName} by {origin}'\n",
        ),
        &rule_text(
            "policy-burst",
            "  selection:\n    eventName: PutRolePolicy\n  condition: selection\n",
            "threshold:\n  above: 2\n  window: 5m\n  by: [recipientAccountId]\n",
        ),
        &rule_text(
            "burst-by-origin",
            "  selection:\n    eventName: PutRolePolicy\n  condition: selection\n",
            "threshold:\n  above: 10\n  window: 5m\n  by: [origin.principal]\n",
        ),
        &rule_text("self-named", "  selection:\n    eventName: PutRolePolicy\n    userIdentity.arn|fieldref: origin.principal\n  condition: selection\n", ""),
        &rule_text("unused-origin", "  selection:\n    eventName: PutRolePolicy\n  spare:\n    origin.kind: root\n  condition: selection\n", ""),
    ]);
    let uses: Vec<(&str, bool)> = set.rules().iter().map(|r| (r.id.as_str(), r.uses_origin)).collect();
    assert_eq!(
        uses,
        [("ci-policy", true), ("iam-policy", false), ("policy-burst", false), ("burst-by-origin", false), ("self-named", true), ("unused-origin", false)],
        "only a condition that tests an origin field counts (summary, dedup and threshold fields do not)"
    );
    assert!(set.has_origin_rules());
    assert_eq!(set.origin_rules().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["ci-policy", "self-named"]);

    let mut e = ci_put_role_policy();
    let mut pending = origin(OriginKind::Unresolved, "-", 0, Confidence::Pending);
    pending.principal = None;
    e.origin = Some(pending);
    let mut detector = Detector::new(Arc::clone(&set));
    let mut out = Vec::new();
    detector.check(&e, None, &mut out);
    let ids = |out: &[Detection]| out.iter().map(|d| d.rule_id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&out), ["iam-policy", "unused-origin"], "pending: not (yet) a web identity");

    out.clear();
    let mut settled = origin(OriginKind::WebIdentity, "repo:acme/payments-api:ref:refs/heads/main", 1, Confidence::Exact);
    settled.provider = Some("arn:aws:iam::963852741036:oidc-provider/token.actions.githubusercontent.com".into());
    e.origin = Some(settled.clone());
    detector.check_settled(&e, None, &mut out);
    assert_eq!(ids(&out), ["ci-policy"], "one detection, from the rule on the origin");
    assert_eq!(out[0].origin.as_ref(), Some(&settled));
    assert_eq!(out[0].event.event_id, "5c1e9a2f-7d3b-4e6a-9f08-2b4c6d8e0a13");
    let evaluations: Vec<u64> = set.rules().iter().map(|r| detector.evaluations_of(&r.id)).collect();
    assert_eq!(evaluations, [2, 1, 1, 1, 2, 1], "rules without origin fields in their condition are not evaluated again");
    let stats = detector.stats();
    assert_eq!((stats.events, stats.settled, stats.detections), (1, 1, 3));

    // A second PutRolePolicy makes two matches for the burst rule, not three: the re-check counted nothing.
    out.clear();
    let mut second = ci_put_role_policy();
    second.event_id = "second".into();
    detector.check(&second, None, &mut out);
    assert!(!ids(&out).contains(&"policy-burst".to_owned()), "two matches are not above 2");
    detector.check(&second, None, &mut out);
    assert!(!ids(&out).contains(&"policy-burst".to_owned()), "the same event checked again is not a third match");
    let mut third = ci_put_role_policy();
    third.event_id = "third".into();
    detector.check(&third, None, &mut out);
    assert!(ids(&out).contains(&"policy-burst".to_owned()), "a third is");

    // No rule on origin fields: nothing to evaluate.
    let plain = load(&[&rule_text("iam-policy", "  selection:\n    eventName: PutRolePolicy\n  condition: selection\n", "")]);
    assert!(!plain.has_origin_rules());
    let mut detector = Detector::new(plain);
    out.clear();
    detector.check_settled(&e, None, &mut out);
    assert!(out.is_empty());
    assert_eq!((detector.evaluations_of("iam-policy"), detector.stats().settled, detector.stats().events_parsed), (0, 0, 0));
}

// ------------------------------------------------------------------ detections

#[test]
fn detections_carry_summary_group_and_alert_settings() {
    let text = rule_text(
        "root-account-usage",
        "  selection:\n    userIdentity.type: Root\n  condition: selection\n",
        "summary: 'Root used {eventName} in {account} from {sourceIPAddress} as {origin}; mfa {additionalEventData.MFAUsed}'\nresolve_after: never\ndedup:\n  window: 30m\n",
    );
    let set = load(&[&text]);
    let mut e = event(json!({"userIdentity": {"type": "Root"}, "eventName": "CreateAccessKey", "sourceIPAddress": "203.0.113.201", "eventID": "ev-9"}));
    e.origin = Some(origin(OriginKind::Root, "arn:aws:iam::111111111111:root", 0, Confidence::Exact));
    let mut detector = Detector::new(Arc::clone(&set));
    let mut out = Vec::new();
    detector.check(&e, Some("Payments"), &mut out);
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(d.summary, "Root used CreateAccessKey in \"Payments\" (111111111111) from 203.0.113.201 as arn:aws:iam::111111111111:root (root); mfa -");
    assert_eq!(d.dedup_key, "root-account-usage|111111111111");
    assert_eq!(d.group, vec![("recipientAccountId".to_owned(), "111111111111".to_owned())]);
    assert_eq!((&*d.rule_id, &*d.title, d.severity), ("root-account-usage", "Test rule root-account-usage", Severity::High));
    assert_eq!(
        (d.event.account_id.as_str(), d.event.event_id.as_str(), d.event.event_time),
        ("111111111111", "ev-9", parse_utc("2024-03-12T15:00:00Z").unwrap())
    );
    assert_eq!(d.account_alias.as_deref(), Some("Payments"));
    assert_eq!(d.origin, e.origin);
    assert_eq!((d.resolve_after_ms, d.notify_every_ms), (None, 30 * 60_000));

    // Defaults: title and account, 24 h, 1 h, per account.
    let plain = load(&[&rule_text("plain", "  selection:\n    eventName: GetObject\n  condition: selection\n", "")]);
    let d = &check(&plain, &event(json!({})))[0];
    assert_eq!(d.summary, "Test rule plain in 111111111111");
    assert_eq!((d.resolve_after_ms, d.notify_every_ms), (Some(24 * 3_600_000), 3_600_000));
    assert_eq!(d.dedup_key, "plain|111111111111");
}

#[test]
fn dedup_groups_by_the_fields_named() {
    let text = rule_text(
        "console",
        "  selection:\n    eventName: ConsoleLogin\n  condition: selection\n",
        "dedup:\n  by: [recipientAccountId, userIdentity.arn, origin.kind]\n",
    );
    let set = load(&[&text]);
    let d = &check(&set, &event(json!({"eventName": "ConsoleLogin", "userIdentity": {"arn": "arn:aws:iam::1:user/a"}})))[0];
    assert_eq!(d.dedup_key, "console|111111111111|arn:aws:iam::1:user/a|-");
    assert_eq!(d.group[1], ("userIdentity.arn".to_owned(), "arn:aws:iam::1:user/a".to_owned()));
}

// ------------------------------------------------------------------ thresholds

const FAILURES: &str = "  selection:\n    eventName: ConsoleLogin\n    responseElements.ConsoleLogin: Failure\n  condition: selection\n";

fn failure(id: &str, time: &str, user: &str) -> Event {
    event(json!({
        "eventID": id, "eventTime": time, "eventSource": "signin.amazonaws.com", "eventName": "ConsoleLogin",
        "responseElements": {"ConsoleLogin": "Failure"}, "additionalEventData": {"UserName": user}, "sourceIPAddress": "203.0.113.201"
    }))
}

fn run_all(set: &Arc<RuleSet>, events: &[Event]) -> Vec<Vec<Detection>> {
    let mut detector = Detector::new(Arc::clone(set));
    events
        .iter()
        .map(|e| {
            let mut out = Vec::new();
            detector.check(e, None, &mut out);
            out
        })
        .collect()
}

fn threshold_rule() -> Arc<RuleSet> {
    let extra = "threshold:\n  above: 3\n  window: 5m\n  by: [recipientAccountId, additionalEventData.UserName]\nsummary: 'Sign-in failures for {additionalEventData.UserName}'\n";
    load(&[&rule_text("brute-force", FAILURES, extra)])
}

#[test]
fn the_fourth_failure_within_five_minutes_fires() {
    let set = threshold_rule();
    let events: Vec<Event> = ["15:00:00", "15:01:00", "15:02:00", "15:03:30", "15:04:00"]
        .iter()
        .enumerate()
        .map(|(i, t)| failure(&format!("f{i}"), &format!("2024-03-12T{t}Z"), "ops"))
        .collect();
    let fired: Vec<usize> = run_all(&set, &events).iter().map(Vec::len).collect();
    assert_eq!(fired, [0, 0, 0, 4, 1], "the 4th fires the burst's four matches, and the 5th still over the threshold updates");
    let burst = &run_all(&set, &events)[3];
    let ids: Vec<&str> = burst.iter().map(|d| d.event.event_id.as_str()).collect();
    assert_eq!(ids, ["f0", "f1", "f2", "f3"], "oldest first, so the alert opens with the burst's first failure");
    let d = &burst[0];
    assert_eq!(d.dedup_key, "brute-force|111111111111|ops", "dedup follows the threshold's groups");
    assert_eq!(d.summary, "Sign-in failures for ops");
}

#[test]
fn failures_spread_over_ten_minutes_do_not_fire() {
    let set = threshold_rule();
    let events: Vec<Event> = ["15:00:00", "15:03:00", "15:06:00", "15:09:00", "15:10:00"]
        .iter()
        .enumerate()
        .map(|(i, t)| failure(&format!("f{i}"), &format!("2024-03-12T{t}Z"), "ops"))
        .collect();
    assert!(run_all(&set, &events).iter().all(Vec::is_empty));
}

#[test]
fn thresholds_count_per_group() {
    let set = threshold_rule();
    let events: Vec<Event> = (0..6).map(|i| failure(&format!("f{i}"), &format!("2024-03-12T15:0{i}:00Z"), if i % 2 == 0 { "ops" } else { "dev" })).collect();
    assert!(run_all(&set, &events).iter().all(Vec::is_empty), "three each, never four of one user");
}

#[test]
fn out_of_order_arrivals_count_by_event_time() {
    let set = threshold_rule();
    // Delivered late: the 15:00 failure arrives after the others.
    let late = ["15:02:00", "15:03:00", "15:04:30", "15:00:00"];
    let events: Vec<Event> = late.iter().enumerate().map(|(i, t)| failure(&format!("f{i}"), &format!("2024-03-12T{t}Z"), "ops")).collect();
    let fired: Vec<usize> = run_all(&set, &events).iter().map(Vec::len).collect();
    assert_eq!(fired, [0, 0, 0, 4], "the late failure completes the burst, and all four fire");
    // Out of order but spread: 15:00 and 15:09 belong to different windows.
    let spread = ["15:09:00", "15:08:00", "15:00:00", "15:01:00", "15:07:00"];
    let events: Vec<Event> = spread.iter().enumerate().map(|(i, t)| failure(&format!("g{i}"), &format!("2024-03-12T{t}Z"), "ops")).collect();
    assert!(run_all(&set, &events).iter().all(Vec::is_empty));
}

#[test]
fn threshold_groups_are_bounded() {
    let set = threshold_rule();
    let mut detector = Detector::with_config(Arc::clone(&set), DetectorConfig { max_groups_per_rule: 50, lateness_ms: 60_000, ..DetectorConfig::default() });
    let mut out = Vec::new();
    for i in 0..200 {
        detector.check(&failure(&format!("f{i}"), "2024-03-12T15:00:00Z", &format!("user{i}")), None, &mut out);
    }
    let stats = detector.stats();
    assert_eq!((stats.threshold_groups, stats.groups_dropped), (50, 150));
    // Trail time moves on: the old groups expire.
    detector.check(&failure("late", "2024-03-12T18:00:00Z", "someone"), None, &mut out);
    assert_eq!(detector.stats().threshold_groups, 1);
    assert!(out.is_empty());
}

#[test]
fn sigma_count_aggregations_are_thresholds() {
    let set =
        load(&[&rule_text("agg", "  selection:\n    eventName: 'List*'\n  timeframe: 10m\n  condition: selection | count() by userIdentity.arn > 2\n", "")]);
    let t = set.rules()[0].threshold.clone().expect("a threshold");
    assert_eq!((t.above, t.window_ms, t.by), (2, 600_000, vec!["userIdentity.arn".to_owned()]));
    let events: Vec<Event> = (0..3)
        .map(|i| {
            event(json!({"eventID": format!("l{i}"), "eventName": "ListBuckets", "eventTime": format!("2024-03-12T15:0{i}:00Z"), "userIdentity": {"arn": "a"}}))
        })
        .collect();
    assert_eq!(run_all(&set, &events).iter().map(Vec::len).collect::<Vec<_>>(), [0, 0, 3]);
}

// ------------------------------------------------------------------ the index

#[test]
fn a_rule_indexed_by_event_name_is_never_evaluated_for_other_events() {
    let set = load(&[
        &rule_text("console", "  selection:\n    eventName: ConsoleLogin\n  filter:\n    userIdentity.type: Root\n  condition: selection and not filter\n", ""),
        &rule_text("sts", "  selection:\n    eventSource: sts.amazonaws.com\n  condition: selection\n", ""),
        &rule_text("not-name", "  selection:\n    eventName: ConsoleLogin\n  condition: not selection\n", ""),
    ]);
    assert_eq!(set.rules()[0].index, RuleIndex::EventName(vec!["consolelogin".into()]));
    assert_eq!(set.rules()[1].index, RuleIndex::EventSource(vec!["sts.amazonaws.com".into()]));
    assert_eq!(set.rules()[2].index, RuleIndex::Every);
    assert!(set.rules()[0].indexed && set.rules()[1].indexed && !set.rules()[2].indexed);

    let indexed_only = load(&[
        &rule_text("console", "  selection:\n    eventName: ConsoleLogin\n  filter:\n    userIdentity.type: Root\n  condition: selection and not filter\n", ""),
        &rule_text("sts", "  selection:\n    eventSource: sts.amazonaws.com\n  condition: selection\n", ""),
    ]);
    let mut detector = Detector::new(Arc::clone(&indexed_only));
    let mut out = Vec::new();
    for name in ["GetObject", "PutObject", "ListBuckets", "ConsoleLoginX"] {
        detector.check(&event(json!({"eventName": name})), None, &mut out);
    }
    let stats = detector.stats();
    assert_eq!((stats.events, stats.events_parsed, stats.evaluations), (4, 0, 0), "no candidate rule: the record is not even parsed");
    detector.check(&event(json!({"eventName": "consolelogin", "eventSource": "signin.amazonaws.com", "userIdentity": {"type": "IAMUser"}})), None, &mut out);
    detector.check(&event(json!({"eventName": "AssumeRole", "eventSource": "sts.amazonaws.com"})), None, &mut out);
    assert_eq!((detector.evaluations_of("console"), detector.evaluations_of("sts")), (1, 1));
    assert_eq!(out.len(), 2);
    assert_eq!(detector.stats().events_parsed, 2);

    let mut all = Detector::new(Arc::clone(&set));
    all.check(&event(json!({"eventName": "GetObject"})), None, &mut out);
    assert_eq!((all.evaluations_of("console"), all.evaluations_of("sts"), all.evaluations_of("not-name")), (0, 0, 1));
}

#[test]
fn the_index_follows_the_condition_logic() {
    let index = |detection: &str| load_one(detection).rules()[0].index.clone();
    assert_eq!(
        index("  a:\n    eventName: [PutObject, DeleteObject]\n  b:\n    eventName: GetObject\n  condition: a or b\n"),
        RuleIndex::EventName(vec!["deleteobject".into(), "getobject".into(), "putobject".into()])
    );
    assert_eq!(index("  a:\n    eventName: GetObject\n  b:\n    eventSource: s3.amazonaws.com\n  condition: a or b\n"), RuleIndex::Every);
    assert_eq!(index("  a:\n    eventName: Get*\n  condition: a\n"), RuleIndex::Every, "wildcards are not indexed");
    assert_eq!(
        index("  a:\n    eventName|startswith: Get\n  b:\n    eventSource: s3.amazonaws.com\n  condition: a and b\n"),
        RuleIndex::EventSource(vec!["s3.amazonaws.com".into()])
    );
    assert_eq!(
        index("  a:\n    - eventName: GetObject\n    - eventName: PutObject\n      userAgent: x\n  condition: a\n"),
        RuleIndex::EventName(vec!["getobject".into(), "putobject".into()])
    );
}

// ------------------------------------------------------------------ load errors

#[test]
fn load_errors_name_file_line_column_and_reason() {
    let text = "\
title: Broken
id: broken
level: severe
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventName: ConsoleLogin
    sourceIPAddress|cidr: 10.0.0.0/33
  sel_re:
    userAgent|re: '(unclosed'
  filter:
    eventName|contians: x
  condition: selection and not filtr
";
    let errs = errors(&[("rules/x.yml", text)]);
    assert_eq!(
        errs,
        [
            "rules/x.yml:3:8: unknown level \"severe\" (informational, low, medium, high or critical)",
            "rules/x.yml:10:27: field sourceIPAddress: bad CIDR block \"10.0.0.0/33\": the prefix length must be 0 to 32",
            "rules/x.yml:12:19: field userAgent: bad regular expression \"(unclosed\": unclosed group",
            "rules/x.yml:14:5: unknown modifier \"contians\" on field eventName",
            "rules/x.yml:15:32: the condition names selection \"filtr\", which the detection does not define",
        ]
    );
}

#[test]
fn missing_parts_and_refused_shapes() {
    let errs = errors(&[("r/a.yml", "description: nothing else\n")]);
    assert_eq!(
        errs,
        [
            "r/a.yml:1:1: missing id",
            "r/a.yml:1:1: missing title",
            "r/a.yml:1:1: missing logsource (product: aws, service: cloudtrail)",
            "r/a.yml:1:1: missing detection"
        ]
    );
    let errs = errors(&[("r/b.yml", "title: t\nid: b\nlogsource: {product: aws}\ndetection:\n  selection:\n    eventName: x\n")]);
    assert_eq!(errs, ["r/b.yml:5:3: missing condition in detection"]);
    let keywords =
        "title: t\nid: k\nlogsource: {product: aws, service: cloudtrail}\ndetection:\n  keywords:\n    - mimikatz\n    - evil\n  condition: keywords\n";
    let errs = errors(&[("r/k.yml", keywords)]);
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("r/k.yml:6:5: selection keywords: keyword searches (a plain list of values) are not supported"), "{errs:?}");
    let windows = "title: t\nid: w\nlogsource:\n  product: windows\n  category: process_creation\ndetection:\n  s:\n    Image: x\n  condition: s\n";
    let errs = errors(&[("r/w.yml", windows)]);
    assert_eq!(
        errs,
        [
            "r/w.yml:4:12: logsource product \"windows\" is not CloudTrail: trailwatch loads only product aws, service cloudtrail",
            "r/w.yml:5:13: logsource category \"process_creation\" is not CloudTrail: trailwatch loads only product aws, service cloudtrail",
        ]
    );
    let nested = "title: t\nid: n\nlogsource: {service: cloudtrail}\ndetection:\n  s:\n    userIdentity:\n      type: Root\n  condition: s\n";
    assert!(errors(&[("r/n.yml", nested)])[0].starts_with("r/n.yml:7:7: field userIdentity: a value or a list of values is expected, not a map"));
}

#[test]
fn modifiers_that_trailwatch_cannot_honour_are_refused() {
    let detection = concat!(
        "  s:\n",
        "    userAgent|base64offset|contains: evil\n",
        "    userAgent|re|contains: x\n",
        "    userAgent|i: x\n",
        "    errorCode|exists|all: true\n",
        "    errorCode|exists: maybe\n",
        "    sourceIPAddress|cidr: null\n",
        "    src_ip|expand: '%Office%'\n",
        "    eventName|contains|contains: x\n",
        "    bytes|gt: many\n",
        "    eventName: []\n",
        "  condition: s\n",
    );
    let errs = errors(&[("r/m.yml", &rule_text("m", detection, ""))]);
    assert_eq!(
        errs,
        [
            "r/m.yml:9:5: modifier \"base64offset\" on field userAgent is not supported by trailwatch",
            "r/m.yml:10:5: modifiers \"re\" and \"contains\" cannot be combined on field userAgent",
            "r/m.yml:11:5: modifier \"i\" on field userAgent only follows \"re\"",
            "r/m.yml:12:5: modifiers \"exists\" and \"all\" cannot be combined on field errorCode",
            "r/m.yml:13:23: field errorCode: \"exists\" takes true or false",
            "r/m.yml:14:27: field sourceIPAddress: null cannot be used with modifier \"cidr\"",
            "r/m.yml:15:5: modifier \"expand\" on field src_ip is not supported by trailwatch",
            "r/m.yml:16:5: modifier \"contains\" is given twice on field eventName",
            "r/m.yml:17:15: field bytes: \"gt\" needs a number, not \"many\"",
            "r/m.yml:18:16: field eventName: an empty list matches nothing",
        ]
    );
}

#[test]
fn reading_a_rules_directory() {
    let sources = RuleSource::read_dir(&rule_fixtures("")).unwrap();
    let names: Vec<String> = sources.iter().map(|s| s.path.rsplit_once("rules/").unwrap().1.to_owned()).collect();
    assert_eq!(
        names,
        [
            "sigma/aws_instance_credentials_used_outside_vpc.yml",
            "sigma/aws_root_access_key_created.yml",
            "sigma/aws_root_console_login_without_mfa.yml",
            "sigma/aws_sts_assume_role_denied.yml",
            "trailwatch/console-login-failures.yml",
            "trailwatch/console-login-without-mfa.yml",
        ],
        "recursive, sorted, rule files only"
    );
    let missing = RuleSource::read_dir(&rule_fixtures("no-such-dir")).unwrap_err();
    assert!(missing.to_string().contains("no-such-dir: cannot read the rules directory"), "{missing}");
    assert_eq!((missing.line, missing.column), (None, None));
}

#[test]
fn every_error_of_every_file_is_reported() {
    let good = rule_text("same-id", "  s:\n    eventName: x\n  condition: s\n", "");
    let again = rule_text("same-id", "  s:\n    eventName: y\n  condition: s\n", "");
    let typo = rule_text("typo", "  s:\n    eventName: x\n  condition: s\n", "summry: 'x'\nthreshold:\n  above: many\n  window: 5 minutes\n");
    let yaml = "title: [unclosed\n";
    let dup_key = "title: a\ntitle: b\n";
    let errs = errors(&[("r/1.yml", &good), ("r/2.yml", &again), ("r/3.yml", &typo), ("r/4.yml", yaml), ("r/5.yml", dup_key)]);
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert_eq!(errs[0], "r/2.yml:2:5: duplicate rule id \"same-id\" (also in r/1.yml:2)");
    assert_eq!(errs[1], "r/3.yml:11:1: unknown key \"summry\" (did you mean \"summary\"?)");
    assert_eq!(errs[2], "r/3.yml:13:10: threshold.above must be a whole number (0 or more)");
    assert_eq!(errs[3], "r/3.yml:14:11: threshold.window: \"5 minutes\" is not a duration (30s, 5m, 1h, 7d)");
    assert!(errs[4].starts_with("r/4.yml:2:1: invalid YAML"), "{}", errs[4]);
    assert_eq!(errs[5], "r/5.yml:2:1: duplicate key \"title\" (first at line 1)");
}

#[test]
fn bad_tests_fail_at_load() {
    let extra = "tests:\n  - name: no record\n    match: true\n    event: {eventName: GetObject}\n  - name: missing file\n    match: false\n    event_file: tests/none.json\n  - match: true\n    event: {}\n";
    let errs = errors(&[("r/t.yml", &rule_text("t", "  s:\n    eventName: x\n  condition: s\n", extra))]);
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert_eq!(errs[0], "r/t.yml:14:12: test \"no record\": not a valid CloudTrail record: missing field `eventID`");
    assert!(errs[1].starts_with("r/t.yml:17:17: test \"missing file\": event_file tests/none.json: cannot read r/tests/none.json"), "{}", errs[1]);
    assert_eq!(errs[2], "r/t.yml:18:5: a test needs a name");
}

// ------------------------------------------------------------------ layers

#[test]
fn user_rules_replace_built_in_rules_with_the_same_id() {
    let builtin = [
        source("rules/root.yml", &rule_text("root-account-usage", "  s:\n    userIdentity.type: Root\n  condition: s\n", "")),
        source("rules/other.yml", &rule_text("other", "  s:\n    eventName: x\n  condition: s\n", "")),
    ];
    let user = [
        source(
            "mine/root.yml",
            &rule_text("root-account-usage", "  s:\n    userIdentity.type: Root\n  f:\n    eventType: AwsServiceEvent\n  condition: s and not f\n", ""),
        ),
        source("mine/new.yml", &rule_text("mine", "  s:\n    eventName: y\n  condition: s\n", "")),
    ];
    let set = RuleSet::load_layers(&builtin, &user).unwrap();
    let ids: Vec<(&str, &str)> = set.rules().iter().map(|r| (r.id.as_str(), r.path.as_str())).collect();
    assert_eq!(ids, [("root-account-usage", "mine/root.yml"), ("other", "rules/other.yml"), ("mine", "mine/new.yml")]);
    assert_eq!(set.get("root-account-usage").unwrap().condition(), "s and not f");

    let twice = [
        source("mine/a.yml", &rule_text("dup", "  s:\n    eventName: y\n  condition: s\n", "")),
        source("mine/b.yml", &rule_text("dup", "  s:\n    eventName: z\n  condition: s\n", "")),
    ];
    let errs: Vec<String> = RuleSet::load_layers(&builtin, &twice).unwrap_err().iter().map(ToString::to_string).collect();
    assert_eq!(errs, ["mine/b.yml:2:5: duplicate rule id \"dup\" (also in mine/a.yml:2)"]);
}

// ------------------------------------------------------------------ the rules' own tests

#[test]
fn rule_tests_run_and_say_why_they_fail() {
    let sources = RuleSource::read_dir(&rule_fixtures("trailwatch")).unwrap();
    assert_eq!(sources.len(), 2, "only the .yml files");
    let set = RuleSet::load(&sources).unwrap();
    let outcomes = run_tests(&set);
    let summary: Vec<(String, bool)> = outcomes.iter().map(|o| (format!("{}/{}", o.rule_id, o.name), o.passed)).collect();
    assert_eq!(
        summary,
        [
            ("console-signin-failures/two failures are not enough".to_owned(), true),
            ("console-signin-failures/a third within five minutes fires".to_owned(), true),
            ("console-signin-without-mfa/IAM user without MFA".to_owned(), true),
            ("console-signin-without-mfa/with MFA".to_owned(), true),
            ("console-signin-without-mfa/only for people resolved to an IAM user".to_owned(), true),
        ],
        "{outcomes:#?}"
    );
    let rule = set.get("console-signin-without-mfa").unwrap();
    assert_eq!((rule.tests, rule.level, rule.tags.as_slice()), (3, Severity::Medium, ["attack.initial_access".to_owned(), "cis.4.3".to_owned()].as_slice()));
    assert_eq!(rule.references, ["https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_mfa.html"]);
    assert_eq!(set.get("console-signin-failures").unwrap().resolve_after_ms, None);

    let wrong = rule_text(
        "wrong",
        "  selection:\n    eventName: ConsoleLogin\n  filter_mfa:\n    additionalEventData.MFAUsed: 'Yes'\n  condition: selection and not filter_mfa\n",
        "tests:\n  - name: says yes\n    match: true\n    event: {eventID: a, eventTime: '2024-03-12T15:00:00Z', eventSource: signin.amazonaws.com, eventName: ConsoleLogin, additionalEventData: {MFAUsed: 'Yes'}}\n  - name: says no\n    match: false\n    event: {eventID: b, eventTime: '2024-03-12T15:00:00Z', eventSource: signin.amazonaws.com, eventName: ConsoleLogin, recipientAccountId: '1'}\n  - name: other event\n    match: true\n    event: {eventID: c, eventTime: '2024-03-12T15:00:00Z', eventSource: s3.amazonaws.com, eventName: GetObject}\n",
    );
    let outcomes = run_tests(&load(&[&wrong]));
    let reasons: Vec<&str> = outcomes.iter().map(|o| o.reason.as_deref().unwrap_or("passed")).collect();
    assert_eq!(
        reasons,
        [
            "expected a match, got none: selection matched, filter_mfa matched [condition: selection and not filter_mfa]",
            "expected no match, got 1 (\"Test rule wrong in 1\"): selection matched, filter_mfa did not (additionalEventData.MFAUsed) [condition: selection and not filter_mfa]",
            "expected a match, got none: the rule is only evaluated for eventName consolelogin, not GetObject",
        ]
    );
    assert!(outcomes.iter().all(|o| !o.passed && o.path == "rules/r0.yml"));
}

// ------------------------------------------------------------------ Sigma compatibility

#[test]
fn sigma_shaped_rules_load_and_match_the_fixture_trails() {
    let sources = RuleSource::read_dir(&rule_fixtures("sigma")).unwrap();
    let set = Arc::new(RuleSet::load(&sources).unwrap_or_else(|e| panic!("{e:#?}")));
    let ids: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "0c6f1d92-47a8-4b35-8e1e-72b9d05a3f61",
            "7f3d1c58-e2a4-4b96-8d0c-5a9e6b2f1c47",
            "5e0b7a3c-9d41-4c8e-b6f2-1a7d3e9c4b10",
            "b8e2a6f4-3c19-4d7e-9a05-6f1c2e8d7b93",
        ],
        "sorted by file name"
    );
    let root_login = set.get("5e0b7a3c-9d41-4c8e-b6f2-1a7d3e9c4b10").unwrap();
    assert_eq!((root_login.level, root_login.status.as_deref(), root_login.author.as_deref()), (Severity::High, Some("experimental"), Some("trailwatch")));
    assert_eq!(root_login.modified.as_deref(), Some("2026-12-01"));
    assert!(root_login.description.as_deref().unwrap().starts_with("Detects a successful sign-in"));
    assert_eq!(root_login.falsepositives.len(), 1);

    let mut detector = Detector::new(Arc::clone(&set));
    let mut found: Vec<(String, String)> = Vec::new();
    for file in [
        "root-and-console.json",
        "ec2-instance-profile.json",
        "failed-assume-role.json",
        "every-identity-type.json",
        "iam-user-to-role.json",
        "role-chain-three-accounts.json",
        "identity-center-permission-set.json",
        "saml-federation.json",
        "web-identity-ci.json",
    ] {
        for e in fixture_events(file) {
            let mut out = Vec::new();
            detector.check(&e, None, &mut out);
            found.extend(out.into_iter().map(|d| (d.rule_id.to_string(), d.event.event_id[..8].to_owned())));
        }
    }
    let expected: Vec<(String, String)> = [
        ("5e0b7a3c-9d41-4c8e-b6f2-1a7d3e9c4b10", "cb70deb4"),
        ("7f3d1c58-e2a4-4b96-8d0c-5a9e6b2f1c47", "bba36e50"),
        ("0c6f1d92-47a8-4b35-8e1e-72b9d05a3f61", "029e9b4a"),
        ("0c6f1d92-47a8-4b35-8e1e-72b9d05a3f61", "6357444c"),
        ("0c6f1d92-47a8-4b35-8e1e-72b9d05a3f61", "1bb0152a"),
        ("0c6f1d92-47a8-4b35-8e1e-72b9d05a3f61", "9bf52e6a"),
        ("b8e2a6f4-3c19-4d7e-9a05-6f1c2e8d7b93", "abadc80d"),
        ("b8e2a6f4-3c19-4d7e-9a05-6f1c2e8d7b93", "88d64880"),
        ("b8e2a6f4-3c19-4d7e-9a05-6f1c2e8d7b93", "78c92ddb"),
    ]
    .iter()
    .map(|(r, e)| ((*r).to_owned(), (*e).to_owned()))
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn rule_sets_are_shared_and_detectors_move_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<RuleSet>();
    shared::<Detector>();
}
