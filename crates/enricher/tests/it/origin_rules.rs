//! Rules on enriched origin fields, for an event read before the event that
//! issued its session: it is checked against the rules with a `pending`
//! origin, and again when the origin settles.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::lifecycle::{Lifecycle, LifecycleConfig};
use trailwatch_core::alerts::{AlertQuery, AlertStatus, AlertStore, MemoryAlertStore, TransitionKind};
use trailwatch_core::identity::{Confidence, OriginKind, PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemoryPendingStore, MemorySessionStore};
use trailwatch_core::ports::HistoryStore;
use trailwatch_core::rules::{RuleSet, RuleSource};
use trailwatch_core::stats::PipelineStats;
use trailwatch_enricher::alerting::AlertPorts;
use trailwatch_enricher::{run, EnricherConfig, EnricherPorts};

use super::batches_of;

const RULE: &str = r#"title: Role policy written by a CI workload
id: ci-role-policy
level: high
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventSource: iam.amazonaws.com
    eventName: PutRolePolicy
  ci:
    origin.kind: web_identity
  condition: selection and ci
summary: '{origin.principal} put policy {requestParameters.policyName} on {requestParameters.roleName} in {account}'
"#;

/// The GitHub Actions session of `records/web-identity-ci.json` writing an
/// inline role policy (IAM is global: the record lands in us-east-1's file).
const PUT_ROLE_POLICY: &str = r#"{"Records": [{
  "eventVersion": "1.09",
  "userIdentity": {
    "type": "AssumedRole",
    "principalId": "AROAJXTROMDY6YBOB2MRI:GitHubActions",
    "arn": "arn:aws:sts::963852741036:assumed-role/gha-payments-api-deploy/GitHubActions",
    "accountId": "963852741036",
    "accessKeyId": "ASIAHNAMXFNPVAUUWGJD",
    "sessionContext": {
      "sessionIssuer": {
        "type": "Role",
        "principalId": "AROAJXTROMDY6YBOB2MRI",
        "arn": "arn:aws:iam::963852741036:role/gha-payments-api-deploy",
        "accountId": "963852741036",
        "userName": "gha-payments-api-deploy"
      },
      "webIdFederationData": {
        "federatedProvider": "arn:aws:iam::963852741036:oidc-provider/token.actions.githubusercontent.com",
        "attributes": {}
      },
      "attributes": {"creationDate": "2024-03-12T11:20:14Z", "mfaAuthenticated": "false"}
    }
  },
  "eventTime": "2024-03-12T11:23:05Z",
  "eventSource": "iam.amazonaws.com",
  "eventName": "PutRolePolicy",
  "awsRegion": "us-east-1",
  "sourceIPAddress": "203.0.113.140",
  "userAgent": "aws-sdk-js/3.525.0 ua/2.0 os/linux#6.5.0-1016-azure lang/js md/nodejs#20.11.1 api/iam#3.525.0 configure-aws-credentials-for-github-actions",
  "requestParameters": {
    "roleName": "payments-api-task",
    "policyName": "ci-extra-permissions",
    "policyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"*\",\"Resource\":\"*\"}]}"
  },
  "responseElements": null,
  "requestID": "0c7d41e2-58a9-4b3f-9e6d-2f81a7c5b940",
  "eventID": "6e2b9d14-3a7f-4c85-b1e0-9d4f2a6c8b37",
  "readOnly": false,
  "eventType": "AwsApiCall",
  "managementEvent": true,
  "recipientAccountId": "963852741036",
  "eventCategory": "Management",
  "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "iam.amazonaws.com"}
}]}"#;

const USAGE_KEY: &str =
    "AWSLogs/o-7q3k9x2m1p/963852741036/CloudTrail/us-east-1/2024/03/12/963852741036_CloudTrail_us-east-1_20240312T1125Z_Rk3pW8sVn2QxT6yJ.json.gz";
const ISSUE_KEY: &str =
    "AWSLogs/o-7q3k9x2m1p/963852741036/CloudTrail/eu-west-1/2024/03/12/963852741036_CloudTrail_eu-west-1_20240312T1130Z_Gh4mZ9tLc1WbN7xE.json.gz";

#[tokio::test]
async fn a_rule_on_the_origin_matches_an_event_read_before_its_session() {
    let issuing = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records/web-identity-ci.json")).unwrap();
    let rules = Arc::new(RuleSet::load(&[RuleSource { path: "user/ci-role-policy.yml".into(), text: RULE.into() }]).unwrap());
    assert!(rules.has_origin_rules());
    let alerts = Arc::new(MemoryAlertStore::new());
    let lifecycle = Arc::new(Lifecycle::new(alerts.clone(), vec![], LifecycleConfig::default()));
    let history = Arc::new(MemoryHistory::new());
    let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default()));
    let identity = Arc::new(PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default()));
    let stats = Arc::new(PipelineStats::default());
    let ports = EnricherPorts {
        history: history.clone(),
        checkpoints: Arc::new(MemoryCheckpoints::new()),
        identity: Some(identity.clone()),
        alerts: Some(AlertPorts {
            rules,
            lifecycle,
            accounts: Arc::new(AccountDirectory::new().into()),
            delivery: None,
            detector: Default::default(),
            refill: None,
        }),
    };
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(EnricherConfig::default(), ports, rx, stats.clone(), CancellationToken::new()));

    for batch in batches_of(USAGE_KEY, PUT_ROLE_POLICY.as_bytes()) {
        tx.send(batch).await.unwrap();
    }
    // The usage file is stored and checked on its own before the issuing file arrives.
    while PipelineStats::get(&stats.events_stored) == 0 {
        tokio::task::yield_now().await;
    }
    assert_eq!(PipelineStats::get(&stats.resolved_waiting), 1, "PutRolePolicy waits for its session");
    assert_eq!(PipelineStats::get(&stats.detections), 0, "a pending origin is not a web identity");
    for batch in batches_of(ISSUE_KEY, &issuing) {
        tx.send(batch).await.unwrap();
    }
    drop(tx);
    task.await.unwrap();

    assert_eq!(PipelineStats::get(&stats.origins_updated), 1);
    assert_eq!(PipelineStats::get(&stats.detections), 1, "matched once, when the origin settled");
    let stored = history.get("963852741036", "6e2b9d14-3a7f-4c85-b1e0-9d4f2a6c8b37").await.unwrap().unwrap();
    assert_eq!(stored.origin.as_ref().map(|o| (o.kind, o.confidence)), Some((OriginKind::WebIdentity, Confidence::Exact)));

    let page = alerts.list(&AlertQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.alerts.len(), 1, "exactly one alert: {:?}", page.alerts);
    let alert = &page.alerts[0];
    assert_eq!((alert.rule_id.as_str(), alert.status, alert.count), ("ci-role-policy", AlertStatus::Open, 1));
    assert_eq!(alert.origin_event.as_ref().map(|e| e.event_id.as_str()), Some("6e2b9d14-3a7f-4c85-b1e0-9d4f2a6c8b37"));
    let origin = alert.origin.as_ref().expect("the alert names who is behind it");
    assert_eq!((origin.kind, origin.confidence), (OriginKind::WebIdentity, Confidence::Exact));
    assert_eq!(origin.principal.as_deref(), Some("repo:acme/payments-api:ref:refs/heads/main"));
    assert_eq!(alert.summary, "repo:acme/payments-api:ref:refs/heads/main put policy ci-extra-permissions on payments-api-task in 963852741036");
    let transitions = alerts.transitions(&alert.id).await.unwrap();
    let kinds: Vec<TransitionKind> = transitions.iter().map(|t| t.kind).collect();
    assert_eq!(kinds, [TransitionKind::Opened], "opened with the settled origin: no origin update follows");
}

/// Any rule on the event itself: it matches while the origin is still pending.
const ANY_ORIGIN_RULE: &str = r#"title: Inline role policy written
id: inline-role-policy
level: medium
logsource:
  product: aws
  service: cloudtrail
detection:
  selection:
    eventSource: iam.amazonaws.com
    eventName: PutRolePolicy
  condition: selection
"#;

/// A read in another file, matching no rule: it only makes a third batch.
const QUIET_KEY: &str =
    "AWSLogs/o-7q3k9x2m1p/963852741036/CloudTrail/eu-west-1/2024/03/12/963852741036_CloudTrail_eu-west-1_20240312T1140Z_Pq7rT2vWx9YzA3bC.json.gz";
const QUIET: &str = r#"{"Records": [{"eventVersion": "1.09",
  "userIdentity": {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
  "eventTime": "2024-03-12T11:38:00Z", "eventSource": "s3.amazonaws.com", "eventName": "GetBucketAcl", "awsRegion": "eu-west-1",
  "sourceIPAddress": "cloudtrail.amazonaws.com", "userAgent": "cloudtrail.amazonaws.com", "requestParameters": {"bucketName": "org-trail"},
  "responseElements": null, "requestID": "a1f3c5e7-0b2d-4f68-9a1c-3e5b7d9f1a2c", "eventID": "f0e1d2c3-b4a5-4968-8776-655443322110",
  "readOnly": true, "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": "963852741036", "eventCategory": "Management"}]}"#;

/// Feeds the usage file, the issuing file and a quiet file, one batch each,
/// through an enricher whose alert store fails as `fault` says; returns the
/// alert store and the plan.
async fn three_batches_with(fault: trailwatch_core::faults::FaultRule) -> (Arc<MemoryAlertStore>, Arc<trailwatch_core::faults::FaultPlan>, Arc<PipelineStats>) {
    use trailwatch_core::faults::{FaultPlan, Faulty};
    let issuing = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/records/web-identity-ci.json")).unwrap();
    let rules = Arc::new(RuleSet::load(&[RuleSource { path: "user/inline-role-policy.yml".into(), text: ANY_ORIGIN_RULE.into() }]).unwrap());
    let alerts = Arc::new(MemoryAlertStore::new());
    let plan = FaultPlan::new(7, vec![fault]);
    let faulty: Arc<dyn AlertStore> = Faulty::new("alerts", alerts.clone(), plan.clone());
    let lifecycle = Arc::new(Lifecycle::new(faulty, vec![], LifecycleConfig::default()));
    let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default()));
    let identity = Arc::new(PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default()));
    let stats = Arc::new(PipelineStats::default());
    let ports = EnricherPorts {
        history: Arc::new(MemoryHistory::new()),
        checkpoints: Arc::new(MemoryCheckpoints::new()),
        identity: Some(identity),
        alerts: Some(AlertPorts {
            rules,
            lifecycle,
            accounts: Arc::new(AccountDirectory::new().into()),
            delivery: None,
            detector: Default::default(),
            refill: None,
        }),
    };
    let (tx, rx) = mpsc::channel(4);
    let task = tokio::spawn(run(EnricherConfig::default(), ports, rx, stats.clone(), CancellationToken::new()));
    let mut stored = 0;
    for (key, bytes) in [(USAGE_KEY, PUT_ROLE_POLICY.as_bytes()), (ISSUE_KEY, &issuing[..]), (QUIET_KEY, QUIET.as_bytes())] {
        for batch in batches_of(key, bytes) {
            tx.send(batch).await.unwrap();
        }
        // One file per batch: wait until this one is stored.
        while PipelineStats::get(&stats.events_stored) == stored {
            tokio::task::yield_now().await;
        }
        stored = PipelineStats::get(&stats.events_stored);
    }
    drop(tx);
    task.await.unwrap();
    assert_eq!(PipelineStats::get(&stats.origins_updated), 1, "PutRolePolicy's origin settled with the issuing file");
    (alerts, plan, stats)
}

async fn the_alert_names_the_settled_origin(alerts: &MemoryAlertStore) {
    let page = alerts.list(&AlertQuery { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.alerts.len(), 1, "the match raised one alert: {:?}", page.alerts);
    let origin = page.alerts[0].origin.as_ref().expect("the alert names who is behind it");
    assert_eq!((origin.kind, origin.confidence), (OriginKind::WebIdentity, Confidence::Exact), "the settled origin, not the pending one");
    assert_eq!(origin.principal.as_deref(), Some("repo:acme/payments-api:ref:refs/heads/main"));
}

#[tokio::test]
async fn a_match_whose_alert_could_not_be_written_takes_the_origin_that_settled_meanwhile() {
    use trailwatch_core::faults::{FaultKind, FaultRule};
    // The first two commits are refused: the match is carried past the
    // batch in which its event's origin settles.
    let (alerts, plan, _) = three_batches_with(FaultRule::next(FaultKind::Permanent, 2).on("alerts").op("commit")).await;
    assert_eq!(plan.injected(FaultKind::Permanent), 2, "both refused commits happened");
    the_alert_names_the_settled_origin(&alerts).await;
}

#[tokio::test]
async fn an_origin_update_the_alerts_could_not_take_is_tried_again_with_the_next_batch() {
    use trailwatch_core::faults::{FaultKind, FaultRule};
    // Finding the alerts of the settled event fails once, in the issuing file's batch.
    let (alerts, plan, stats) = three_batches_with(FaultRule::next(FaultKind::Permanent, 1).on("alerts").op("with_origin_events")).await;
    assert_eq!(plan.injected(FaultKind::Permanent), 1);
    the_alert_names_the_settled_origin(&alerts).await;
    assert_eq!(PipelineStats::get(&stats.alerts_updated), 1, "updated once, by the retried update");
}
