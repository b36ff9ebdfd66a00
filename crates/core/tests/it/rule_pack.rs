//! The built-in detection pack (`rules/` at the repository root): it loads,
//! it holds the rules other code and the generator's answer key name, at
//! their levels, every rule proves both a match and a near miss, and every
//! rule's own tests pass. A few summaries are checked for what an analyst
//! needs to read in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trailwatch_core::alerts::Severity;
use trailwatch_core::event::Event;
use trailwatch_core::reader::RecordReader;
use trailwatch_core::rules::{run_tests, Detector, RuleSet, RuleSource};

/// Every built-in rule: id and level. Ids are fixed (alerts, the answer key
/// and people's overrides refer to them).
const PACK: &[(&str, Severity)] = &[
    ("root-account-usage", Severity::Critical),
    ("unauthorized-api-calls", Severity::Medium),
    ("console-signin-without-mfa", Severity::High),
    ("iam-policy-changes", Severity::Medium),
    ("cloudtrail-configuration-changes", Severity::High),
    ("console-authentication-failures", Severity::Medium),
    ("kms-key-disabled-or-scheduled-deletion", Severity::High),
    ("s3-bucket-policy-changes", Severity::Medium),
    ("config-changes", Severity::High),
    ("security-group-changes", Severity::Medium),
    ("network-acl-changes", Severity::Medium),
    ("network-gateway-changes", Severity::Medium),
    ("route-table-changes", Severity::Medium),
    ("vpc-changes", Severity::Medium),
    ("organizations-changes", Severity::High),
    ("console-signin-brute-force", Severity::High),
    ("spot-capacity-changes", Severity::Low),
    ("root-access-key-created", Severity::Critical),
    ("guardduty-detector-deleted", Severity::High),
    ("instance-credentials-used-outside-aws", Severity::High),
];

fn rules_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules")
}

fn sources() -> Vec<RuleSource> {
    RuleSource::read_dir(&rules_dir()).unwrap_or_else(|e| panic!("reading {}: {e}", rules_dir().display()))
}

fn load() -> RuleSet {
    RuleSet::load(&sources()).unwrap_or_else(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("the built-in pack does not load:\n{}", lines.join("\n"))
    })
}

#[test]
fn pack_loads_with_every_rule_at_its_level() {
    let set = load();
    let mut wrong = Vec::new();
    for (id, level) in PACK {
        match set.get(id) {
            None => wrong.push(format!("{id}: missing")),
            Some(rule) if rule.level != *level => wrong.push(format!("{id}: level {} instead of {level}", rule.level)),
            Some(_) => {}
        }
    }
    assert!(wrong.is_empty(), "built-in rules not as expected:\n{}", wrong.join("\n"));
    let unknown: Vec<&str> = set.rules().iter().map(|r| r.id.as_str()).filter(|id| !PACK.iter().any(|(p, _)| p == id)).collect();
    assert!(unknown.is_empty(), "rules in the pack but not in this test's list (add them with their level): {unknown:?}");
}

/// How many tests of each polarity a rule file declares. The loaded rule
/// only says how many tests it has, so this reads the `match:` lines of the
/// file (no CloudTrail record has a field named `match`).
fn polarities(text: &str) -> (usize, usize) {
    text.lines().fold((0, 0), |(yes, no), line| match line.trim().trim_start_matches("- ").trim() {
        "match: true" => (yes + 1, no),
        "match: false" => (yes, no + 1),
        _ => (yes, no),
    })
}

#[test]
fn every_rule_has_a_match_and_a_near_miss() {
    let set = load();
    let texts: BTreeMap<String, String> = sources().into_iter().map(|s| (s.path, s.text)).collect();
    let mut lacking = Vec::new();
    for rule in set.rules() {
        let text = texts.get(&rule.path).unwrap_or_else(|| panic!("{}: no source text for {}", rule.id, rule.path));
        let (yes, no) = polarities(text);
        assert_eq!(yes + no, rule.tests, "{}: counted {} match: lines for {} tests", rule.id, yes + no, rule.tests);
        if yes == 0 || no == 0 {
            lacking.push(format!("{}: {yes} matching and {no} non-matching tests", rule.id));
        }
    }
    assert!(lacking.is_empty(), "every rule needs at least one test that matches and one that does not:\n{}", lacking.join("\n"));
}

#[test]
fn every_rule_test_passes() {
    let outcomes = run_tests(&load());
    assert!(!outcomes.is_empty(), "the pack ran no tests");
    let failures: Vec<String> =
        outcomes.iter().filter(|o| !o.passed).map(|o| format!("{} / {}: {}", o.rule_id, o.name, o.reason.as_deref().unwrap_or("failed"))).collect();
    assert!(failures.is_empty(), "{} of {} rule tests failed:\n{}", failures.len(), outcomes.len(), failures.join("\n"));
}

/// The records of a test file, through the whole pack; the summaries each rule rendered.
fn summaries(set: &Arc<RuleSet>, test_file: &str) -> BTreeMap<String, Vec<String>> {
    let path = rules_dir().join("tests").join(test_file);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = RecordReader::new(bytes.as_slice());
    let mut detector = Detector::new(Arc::clone(set));
    let mut detections = Vec::new();
    while let Some(record) = reader.next_record().unwrap_or_else(|e| panic!("{}: {e}", path.display())) {
        let event = Event::from_record(record.index, record.bytes, "000000000000").unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        detector.check(&event, None, &mut detections);
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in detections {
        out.entry(d.rule_id.to_string()).or_default().push(d.summary);
    }
    out
}

/// The summary the rule's first detection on the file rendered (what the alert opens with).
fn first_summary(set: &Arc<RuleSet>, test_file: &str, rule_id: &str) -> String {
    let all = summaries(set, test_file);
    let mine = all.get(rule_id).unwrap_or_else(|| panic!("{test_file}: {rule_id} did not match (matched: {:?})", all.keys()));
    mine.first().cloned().unwrap_or_default()
}

#[test]
fn summaries_say_what_an_analyst_needs() {
    let set = Arc::new(load());

    let ssh = first_summary(&set, "security-group-changes/ssh-open-to-world.json", "security-group-changes");
    assert!(ssh.contains("0.0.0.0/0") && ssh.contains("sg-0b5d2f1e8c7a94d3e") && ssh.contains("22"), "{ssh}");
    let https = first_summary(&set, "security-group-changes/https-open-to-ipv6-world.json", "security-group-changes");
    assert!(https.contains("::/0"), "{https}");

    let denied = first_summary(&set, "unauthorized-api-calls/enumeration.json", "unauthorized-api-calls");
    // Opened with the first denial of the burst: the principal and that call.
    assert!(denied.contains("arn:aws:iam::111111111111:user/build-bot") && denied.contains("ListUsers on iam.amazonaws.com (AccessDenied)"), "{denied}");

    let brute = first_summary(&set, "console-signin-brute-force/three-failures-then-success.json", "console-authentication-failures");
    assert!(brute.contains("finance-admin") && brute.contains("Failed authentication"), "{brute}");

    let root = first_summary(&set, "root-access-key-created/root-creates-own-key.json", "root-access-key-created");
    assert!(root.contains("111111111111") && root.contains("AKIA") && root.contains("203.0.113.45"), "{root}");

    let stolen = first_summary(&set, "instance-credentials-used-outside-aws/get-caller-identity-from-internet.json", "instance-credentials-used-outside-aws");
    assert!(stolen.contains("reporting-worker") && stolen.contains("i-0f3a9c27d1e84b5a6") && stolen.contains("203.0.113.77"), "{stolen}");
}

#[test]
fn root_activity_raises_root_alerts_only_where_meant() {
    // The root signing in and creating its own key: usage on both, the key rule on the key only.
    let set = Arc::new(load());
    let login = summaries(&set, "root-account-usage/root-console-login.json");
    assert!(login.contains_key("root-account-usage") && !login.contains_key("root-access-key-created"), "{login:?}");
    let key = summaries(&set, "root-access-key-created/root-creates-own-key.json");
    assert!(key.contains_key("root-account-usage") && key.contains_key("root-access-key-created"), "{key:?}");
}
