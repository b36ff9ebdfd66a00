//! Identity resolution, end to end on the fixture stories and a real trail:
//! records → `RecordView` → `capture` → sessions stored → each event's actor
//! resolved → history, with late sessions and the pending bound.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trailwatch_core::event::Event;
use trailwatch_core::identity::{
    capture, Actor, Caller, Confidence, FallbackPolicy, IssueKind, Origin, OriginKind, PendingConfig, PendingSet, Resolution, Resolver, ResolverConfig,
    Session, SessionStore,
};
use trailwatch_core::memory::{MemoryHistory, MemoryPendingStore, MemorySessionStore};
use trailwatch_core::ports::{HistoryStore, OriginUpdate};
use trailwatch_core::reader::{decode, RecordReader};
use trailwatch_core::time::{parse_utc, EpochMillis};
use trailwatch_core::view::RecordView;

// ------------------------------------------------------------------ the flow

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures").join(rel)
}

/// The records of a log file (gzipped or not), as the streaming reader yields them.
fn records(path: &Path) -> Vec<Vec<u8>> {
    let mut reader = RecordReader::new(decode(File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap());
    let mut out = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        out.push(record.bytes.to_vec());
    }
    out
}

fn story(name: &str) -> Vec<Vec<u8>> {
    records(&fixture(&format!("records/{name}")))
}

const USAGE_FILE: &str = "usage-before-issue/AWSLogs/o-7q3k9x2m1p/629384751068/CloudTrail/eu-west-1/2024/03/12/629384751068_CloudTrail_eu-west-1_20240312T1010Z_b3NcY8fJq1VsD6aE.json.gz";
const ISSUING_FILE: &str = "usage-before-issue/AWSLogs/o-7q3k9x2m1p/629384751068/CloudTrail/us-east-1/2024/03/12/629384751068_CloudTrail_us-east-1_20240312T1020Z_Hq7vR2mXk9LpT4wZ.json.gz";

/// The enricher's loop in miniature, on in-memory ports.
struct Trail {
    sessions: Arc<MemorySessionStore>,
    pending: PendingSet,
    history: MemoryHistory,
}

impl Trail {
    fn new() -> Self {
        Self::with(ResolverConfig::default())
    }

    fn with(config: ResolverConfig) -> Self {
        let sessions = Arc::new(MemorySessionStore::new());
        let resolver = Arc::new(Resolver::new(sessions.clone(), None, config));
        let pending = PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default());
        Trail { sessions, pending, history: MemoryHistory::new() }
    }

    fn resolver(&self) -> &Resolver {
        self.pending.resolver()
    }

    /// One file: its sessions first (settling events that waited on them),
    /// then its events, all written to history.
    async fn ingest(&self, file: &[Vec<u8>], key_account: &str) -> (Vec<Event>, Vec<OriginUpdate>) {
        let sessions: Vec<Session> = file.iter().filter_map(|raw| capture(&RecordView::parse(raw).unwrap(), key_account)).collect();
        let updates = self.pending.record_sessions(sessions).await.unwrap();
        let mut events: Vec<Event> = file.iter().enumerate().map(|(i, raw)| Event::from_record(i, raw, key_account).unwrap()).collect();
        self.pending.resolve_events(&mut events).await.unwrap();
        self.history.append(events.clone().into()).await.unwrap();
        self.history.set_origins(updates.clone().into()).await.unwrap();
        (events, updates)
    }

    async fn expire(&self) -> Vec<OriginUpdate> {
        let updates = self.pending.expire().await.unwrap();
        self.history.set_origins(updates.clone().into()).await.unwrap();
        updates
    }

    async fn stored(&self, account: &str, event_id: &str) -> Origin {
        self.history.get(account, event_id).await.unwrap().unwrap().origin.unwrap()
    }
}

fn origin_of<'e>(events: &'e [Event], event_id: &str) -> &'e Origin {
    events.iter().find(|e| e.event_id == event_id).unwrap_or_else(|| panic!("no event {event_id}")).origin.as_ref().unwrap()
}

fn by_name<'e>(events: &'e [Event], name: &str) -> &'e Event {
    events.iter().find(|e| e.event_name == name).unwrap_or_else(|| panic!("no {name} event"))
}

fn who(origin: &Origin) -> (OriginKind, Option<&str>, Confidence) {
    (origin.kind, origin.principal.as_deref(), origin.confidence)
}

fn chain(origin: &Origin) -> Vec<(&str, Option<&str>, IssueKind)> {
    origin.chain.iter().map(|h| (h.access_key_id.as_str(), h.role_arn.as_deref(), h.kind)).collect()
}

fn time(text: &str) -> EpochMillis {
    parse_utc(text).unwrap()
}

// ------------------------------------------------------------------ the stories

#[tokio::test]
async fn an_iam_users_role_session_resolves_to_the_user() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("iam-user-to-role.json"), "508917263341").await;
    let maria = "arn:aws:iam::508917263341:user/maria.santos";
    let forecast = by_name(&events, "GetCostForecast").origin.as_ref().unwrap();
    assert_eq!(who(forecast), (OriginKind::IamUser, Some(maria), Confidence::Exact));
    assert_eq!(forecast.account_id.as_deref(), Some("508917263341"));
    assert_eq!(chain(forecast), [("ASIANWUMEAJF6VREM6US", Some("arn:aws:iam::508917263341:role/BillingReadOnly"), IssueKind::AssumeRole)]);
    assert_eq!(forecast.chain[0].event_id, "76765abd-9493-4eeb-a537-f95a9e97854d", "the hop names the AssumeRole that issued the key");
    assert_eq!(forecast.chain[0].time, time("2024-03-12T09:14:27Z"));
    // Her own long-term key needs no session.
    let own = by_name(&events, "ListAccessKeys").origin.as_ref().unwrap();
    assert_eq!((who(own), own.chain.len()), ((OriginKind::IamUser, Some(maria), Confidence::Exact), 0));
}

#[tokio::test]
async fn a_three_account_chain_resolves_to_the_user_who_started_it() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("role-chain-three-accounts.json"), "852963741025").await;
    let query = by_name(&events, "StartQueryExecution");
    assert_eq!(query.account_id, "852963741025");
    let origin = query.origin.as_ref().unwrap();
    assert_eq!(who(origin), (OriginKind::IamUser, Some("arn:aws:iam::508917263341:user/devon.clarke"), Confidence::Exact));
    assert_eq!(origin.account_id.as_deref(), Some("508917263341"));
    assert_eq!(origin.source_identity.as_deref(), Some("devon.clarke"), "the sourceIdentity set on the first hop is carried");
    let hops: Vec<(&str, &str)> = origin.chain.iter().map(|h| (h.account_id.as_str(), h.event_id.as_str())).collect();
    assert_eq!(
        hops,
        [
            ("963852741036", "ce336dbe-135e-4cb7-94b2-8e94f05a0045"),
            ("741258963012", "567be064-e3a3-4484-9024-2da3758c6f8f"),
            ("852963741025", "1d6e527f-838c-4930-9ed0-f2911c54c6ae"),
        ],
        "three hops, first first, each named by the caller's copy of its AssumeRole"
    );
    // The role owners' copies (AWSAccount) resolve through the callers' copies.
    for owner_copy in ["0482e44b-d0d8-42fa-9729-3ea8ae84f5d7", "32cd95d9-3ecf-46cd-bfc6-689e1a8ece1e", "2355a348-0eaf-41d5-a035-5cef2f4ac677"] {
        let o = origin_of(&events, owner_copy);
        assert_eq!(who(o), (OriginKind::IamUser, Some("arn:aws:iam::508917263341:user/devon.clarke"), Confidence::Derived), "{owner_copy}");
        assert!(o.reason.as_deref().unwrap().contains("caller's copy"), "{:?}", o.reason);
    }
}

#[tokio::test]
async fn an_identity_center_user_is_found_through_the_permission_set_role_and_on() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("identity-center-permission-set.json"), "741258963012").await;
    let alice = "alice.nguyen@example.com";
    let provider = "arn:aws:iam::741258963012:saml-provider/AWSSSO_8c1d9e2f3a4b5c6d_DO_NOT_DELETE";
    let direct = by_name(&events, "DescribeInstances").origin.as_ref().unwrap();
    assert_eq!(who(direct), (OriginKind::IdentityCenterUser, Some(alice), Confidence::Exact));
    assert_eq!((direct.provider.as_deref(), direct.account_id.as_deref()), (Some(provider), Some("741258963012")));
    assert_eq!(chain(direct)[0].2, IssueKind::IdentityCenter);
    // She chains on into the data lake: still her, two hops.
    let chained = origin_of(&events, "be4182d5-b596-4c81-8fac-4dcbfc7dcd2f");
    assert_eq!(who(chained), (OriginKind::IdentityCenterUser, Some(alice), Confidence::Exact));
    assert_eq!(chain(chained).iter().map(|h| h.2).collect::<Vec<_>>(), [IssueKind::IdentityCenter, IssueKind::AssumeRole]);
    // The portal's calls name the Identity Center user by id.
    let portal = by_name(&events, "GetRoleCredentials").origin.as_ref().unwrap();
    assert_eq!(who(portal), (OriginKind::IdentityCenterUser, Some("a4e8c4d8-7031-70be-91f3-5c2d7e8b9a10"), Confidence::Exact));
    assert_eq!(portal.provider.as_deref(), Some("arn:aws:identitystore::318246550911:identitystore/d-93671c2a5e"));
    // The sign-in record names no credentials: final, with the user name it shows.
    let sign_in = by_name(&events, "UserAuthentication").origin.as_ref().unwrap();
    assert_eq!(who(sign_in), (OriginKind::Unresolved, Some(alice), Confidence::Unresolved));
    assert!(sign_in.reason.as_deref().unwrap().contains("Unknown"));
}

#[tokio::test]
async fn saml_and_web_identity_subjects_are_the_origin() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("saml-federation.json"), "852963741025").await;
    let sam = by_name(&events, "GetObject").origin.as_ref().unwrap();
    assert_eq!(who(sam), (OriginKind::SamlUser, Some("sam.okafor@example.com"), Confidence::Exact));
    assert_eq!(sam.provider.as_deref(), Some("arn:aws:iam::852963741025:saml-provider/Okta"), "the provider ARN, not the name qualifier");
    assert_eq!(sam.source_identity.as_deref(), Some("sam.okafor"));
    // The console sign-in carries no key: what the record tells, derived.
    let console = by_name(&events, "ConsoleLogin").origin.as_ref().unwrap();
    assert_eq!(who(console), (OriginKind::SourceIdentity, Some("sam.okafor"), Confidence::Derived));

    let (events, _) = trail.ingest(&story("web-identity-ci.json"), "963852741036").await;
    let job = by_name(&events, "PutObject").origin.as_ref().unwrap();
    assert_eq!(who(job), (OriginKind::WebIdentity, Some("repo:acme/payments-api:ref:refs/heads/main"), Confidence::Exact));
    assert_eq!(job.provider.as_deref(), Some("arn:aws:iam::963852741036:oidc-provider/token.actions.githubusercontent.com"));
    assert_eq!(job.account_id.as_deref(), Some("963852741036"));
}

#[tokio::test]
async fn a_federation_token_resolves_to_the_federated_user() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("federation-token.json"), "629384751068").await;
    let put = by_name(&events, "PutObject").origin.as_ref().unwrap();
    assert_eq!(who(put), (OriginKind::FederatedUser, Some("arn:aws:sts::629384751068:federated-user/jo.rivera"), Confidence::Exact));
    assert_eq!(put.account_id.as_deref(), Some("629384751068"));
    assert_eq!((put.chain.len(), put.chain[0].kind, put.chain[0].session_name.as_deref()), (1, IssueKind::GetFederationToken, Some("jo.rivera")));
    assert_eq!(put.chain[0].role_arn, None);
}

#[tokio::test]
async fn a_session_token_then_a_role_resolves_to_the_user() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("session-token-then-role.json"), "508917263341").await;
    let priya = "arn:aws:iam::508917263341:user/priya.raman";
    let report = by_name(&events, "GenerateCredentialReport").origin.as_ref().unwrap();
    assert_eq!(who(report), (OriginKind::IamUser, Some(priya), Confidence::Exact));
    assert_eq!(
        chain(report),
        [
            ("ASIAJJHAG5JMDNSAA6M3", None, IssueKind::GetSessionToken),
            ("ASIA6AL26BVKSEUMJCAQ", Some("arn:aws:iam::508917263341:role/SecurityAuditor"), IssueKind::AssumeRole)
        ]
    );
    let with_token = by_name(&events, "DescribeRegions").origin.as_ref().unwrap();
    assert_eq!((who(with_token), chain(with_token).len()), ((OriginKind::IamUser, Some(priya), Confidence::Exact), 1));
}

#[tokio::test]
async fn instance_profile_credentials_resolve_to_the_instance_wherever_they_are_used() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("ec2-instance-profile.json"), "741258963012").await;
    let instance = "ec2.amazonaws.com:i-0c4e7a19b2d3f5a68";
    for event in events.iter().filter(|e| e.identity_type() == Some("AssumedRole")) {
        let o = event.origin.as_ref().unwrap();
        assert_eq!(who(o), (OriginKind::AwsService, Some(instance), Confidence::Exact), "{}", event.event_id);
        assert_eq!((o.account_id.as_deref(), o.chain[0].kind), (Some("741258963012"), IssueKind::Service));
    }
    // Stolen: the same instance, and the outside address on the event itself.
    let outside: Vec<&Event> = events.iter().filter(|e| e.source_ip.as_deref() == Some("203.0.113.77")).collect();
    assert!(outside.len() >= 3);
    assert!(outside.iter().all(|e| e.origin.as_ref().unwrap().principal.as_deref() == Some(instance)));
    assert!(outside.iter().any(|e| e.error_code.as_deref() == Some("AccessDenied")), "the denied call is attributed too");
}

#[tokio::test]
async fn a_reused_access_key_resolves_by_its_validity_window() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("reused-access-key.json"), "852963741025").await;
    let night = by_name(&events, "PutObject");
    let morning = by_name(&events, "GetQueryExecution");
    assert_eq!(night.access_key_id(), morning.access_key_id());
    assert_eq!(who(night.origin.as_ref().unwrap()), (OriginKind::AwsService, Some("glue.amazonaws.com"), Confidence::Exact));
    let support = morning.origin.as_ref().unwrap();
    assert_eq!(who(support), (OriginKind::IamUser, Some("arn:aws:iam::508917263341:user/oncall.sre"), Confidence::Exact));
    assert_eq!(support.chain[0].role_arn.as_deref(), Some("arn:aws:iam::852963741025:role/SupportReadOnly"));
}

#[tokio::test]
async fn root_events_and_failed_calls() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("root-and-console.json"), "741258963012").await;
    for id in ["bba36e50-5ccc-4d57-be14-c4caad256be6", "6628999e-1df0-4b97-8867-a5b4e5ade19f"] {
        assert_eq!(who(origin_of(&events, id)), (OriginKind::Root, Some("arn:aws:iam::741258963012:root"), Confidence::Exact), "{id}");
    }

    // Failed console sign-ins name the user tried, never as exact.
    let tried = origin_of(&events, "dc291032-1754-4bba-8940-28eff2d13859");
    assert_eq!(who(tried), (OriginKind::IamUser, Some("ops-legacy"), Confidence::Derived));
    let hidden = origin_of(&events, "04886d25-6534-46b9-98e1-15a0158160c3");
    assert_eq!(who(hidden), (OriginKind::Unresolved, None, Confidence::Unresolved));
    // A console SwitchRole issues no key in the trail: its calls wait, then are final.
    let switched = origin_of(&events, "1de6f7eb-2840-4802-af6e-bea69530b659");
    assert_eq!((switched.confidence, switched.chain.len()), (Confidence::Pending, 0));

    let failed = story("failed-assume-role.json");
    assert!(failed.iter().all(|raw| capture(&RecordView::parse(raw).unwrap(), "963852741036").is_none()), "a failed AssumeRole issues nothing");
    let (events, _) = trail.ingest(&failed, "963852741036").await;
    assert_eq!(trail.sessions.len(), 0);
    let denied = origin_of(&events, events[0].event_id.as_str());
    assert_eq!(who(denied), (OriginKind::IamUser, Some("arn:aws:iam::963852741036:user/ci-deployer"), Confidence::Exact), "the denied caller is still named");
}

#[tokio::test]
async fn other_accounts_services_and_signins() {
    let trail = Trail::new();
    let (events, _) = trail.ingest(&story("every-identity-type.json"), "741258963012").await;
    let foreign = events.iter().find(|e| e.identity_type() == Some("AWSAccount")).unwrap().origin.as_ref().unwrap();
    assert_eq!((foreign.kind, foreign.confidence), (OriginKind::AwsAccount, Confidence::Derived));
    assert_eq!(foreign.principal, foreign.account_id);
    assert!(foreign.reason.as_deref().unwrap().contains("sharedEventID"), "{:?}", foreign.reason);
    assert_eq!(who(by_name(&events, "RotateKey").origin.as_ref().unwrap()), (OriginKind::AwsService, Some("AWS Internal"), Confidence::Exact));
    assert!(
        events.iter().find(|e| e.event_name == "RunInstances" && e.identity_type().is_none()).is_none_or(|e| e.origin.is_none()),
        "an Insights event names no one"
    );
}

// ------------------------------------------------------------------ late and missing sessions

#[tokio::test]
async fn usage_delivered_before_its_issuing_file_waits_then_resolves() {
    let trail = Trail::new();
    let (usage, _) = trail.ingest(&records(&fixture(USAGE_FILE)), "629384751068").await;
    for event in &usage {
        let o = event.origin.as_ref().unwrap();
        assert_eq!((o.kind, o.confidence), (OriginKind::Unresolved, Confidence::Pending), "{}", event.event_id);
        assert!(o.reason.as_deref().unwrap().starts_with("waiting for the session of ASIA5OKXVQKCDLS7RUWO used at 2024-03-12T10:0"), "{:?}", o.reason);
    }
    assert_eq!(trail.pending.count().await.unwrap(), 3);

    let (_, updates) = trail.ingest(&records(&fixture(ISSUING_FILE)), "629384751068").await;
    assert_eq!(updates.len(), 3, "every waiting event is updated once its session arrives");
    assert_eq!(trail.pending.count().await.unwrap(), 0);
    for event in &usage {
        let stored = trail.stored("629384751068", &event.event_id).await;
        assert_eq!(who(&stored), (OriginKind::IamUser, Some("arn:aws:iam::629384751068:user/li.wei"), Confidence::Exact), "history holds the late resolution");
        assert_eq!(stored.chain[0].event_id, "04dc8807-8e21-4b8e-af60-a8eff54c831b");
    }
    assert!(trail.resolver().stats().cache.negative_hits + trail.resolver().stats().batch_reuses >= 2, "one store lookup answered the whole usage file");
}

/// Splits a story into the records a predicate picks and the rest.
fn split(file: &[Vec<u8>], pick: impl Fn(&RecordView<'_>) -> bool) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    file.iter().cloned().partition(|raw| pick(&RecordView::parse(raw).unwrap()))
}

#[tokio::test]
async fn both_copies_of_a_cross_account_call_whichever_arrives_first() {
    let chain = story("role-chain-three-accounts.json");
    let is_caller_copy = |v: &RecordView<'_>| v.event_name.as_deref() == Some("AssumeRole") && v.identity_type() != Some("AWSAccount");
    let (callers, rest) = split(&chain, is_caller_copy);
    let devon = (OriginKind::IamUser, Some("arn:aws:iam::508917263341:user/devon.clarke"), Confidence::Exact);

    // The role owners' copies and the target account's calls first.
    let trail = Trail::new();
    let (events, _) = trail.ingest(&rest, "852963741025").await;
    let glue = by_name(&events, "GetTables");
    let waiting = glue.origin.as_ref().unwrap();
    assert_eq!(waiting.confidence, Confidence::Pending);
    assert!(
        waiting.reason.as_deref().unwrap().contains("the caller's copy of the cross-account call that issued ASIAAKMA2XJPU5B7WXXL"),
        "{:?}",
        waiting.reason
    );
    assert_eq!(waiting.chain.len(), 1, "the hop known so far");
    // The role owner's copy of the last hop: that account, at once.
    let owner_copy = "2355a348-0eaf-41d5-a035-5cef2f4ac677";
    let shown = origin_of(&events, owner_copy);
    assert_eq!(who(shown), (OriginKind::AwsAccount, Some("741258963012"), Confidence::Derived));
    let (_, updates) = trail.ingest(&callers, "508917263341").await;
    assert_eq!(updates.len(), 3 + 3, "the three calls in the data lake, and the three role owners' copies");
    let settled = trail.stored("852963741025", &glue.event_id).await;
    assert_eq!((who(&settled), settled.chain.len()), (devon, 3));
    let owner = trail.stored("852963741025", owner_copy).await;
    assert_eq!(
        who(&owner),
        (OriginKind::IamUser, Some("arn:aws:iam::508917263341:user/devon.clarke"), Confidence::Derived),
        "upgraded through the caller's copy"
    );
    assert_eq!(trail.pending.count().await.unwrap(), 0);

    // The callers' copies first.
    let trail = Trail::new();
    trail.ingest(&callers, "508917263341").await;
    let (events, _) = trail.ingest(&rest, "852963741025").await;
    let glue = by_name(&events, "GetTables").origin.as_ref().unwrap();
    assert_eq!((who(glue), glue.chain.len()), (devon, 3));
    assert_eq!(trail.sessions.len(), 3, "two copies, one session each");
}

#[tokio::test]
async fn past_the_bound_a_waiting_event_becomes_final_with_the_reason() {
    let trail = Trail::new();
    let (usage, _) = trail.ingest(&records(&fixture(USAGE_FILE)), "629384751068").await;
    assert!(trail.expire().await.is_empty(), "nothing has waited two hours of trail time yet");

    // Trail time moves on: a file of 17:31 (another story) is read, so the
    // 10:03 uses have waited past the bound. Backfilled data behaves the same.
    let (failed, _) = trail.ingest(&story("failed-assume-role.json"), "963852741036").await;
    let updates = trail.expire().await;
    assert_eq!(updates.len(), 3);
    let final_ = trail.stored("629384751068", &usage[0].event_id).await;
    assert_eq!((final_.kind, final_.confidence), (OriginKind::Unresolved, Confidence::Unresolved));
    assert_eq!(final_.reason.as_deref(), Some("no session for ASIA5OKXVQKCDLS7RUWO used at 2024-03-12T10:03:40Z arrived within 2h"));

    // A fallback waits too: the denied call's session is missing, its sourceIdentity is known.
    let chained = &failed[2];
    assert_eq!(chained.origin.as_ref().unwrap().confidence, Confidence::Pending, "the exact answer may still come: wait");
    trail.resolver().observe(time("2024-03-12T19:40:00Z"));
    assert_eq!(trail.expire().await.len(), 1);
    let derived = trail.stored("963852741036", &chained.event_id).await;
    assert_eq!(who(&derived), (OriginKind::SourceIdentity, Some("devon.clarke"), Confidence::Derived));
    assert!(
        derived.reason.as_deref().unwrap().starts_with("no session for ASIA3WON5DPRFRAHFSHC used at 2024-03-12T17:31:45Z arrived within 2h; "),
        "{:?}",
        derived.reason
    );
    assert_eq!(trail.pending.count().await.unwrap(), 0);
}

#[tokio::test]
async fn the_immediate_policy_shows_the_fallback_at_once_and_still_upgrades() {
    let trail = Trail::with(ResolverConfig { fallback: FallbackPolicy::Immediate, ..ResolverConfig::default() });
    let sso = story("identity-center-permission-set.json");
    let is_issuing = |v: &RecordView<'_>| v.event_source.as_deref() == Some("sts.amazonaws.com");
    let (issuing, usage) = split(&sso, is_issuing);
    let (events, _) = trail.ingest(&usage, "741258963012").await;
    let shown = by_name(&events, "DescribeInstances").origin.as_ref().unwrap();
    assert_eq!(
        who(shown),
        (OriginKind::IdentityCenterUser, Some("alice.nguyen@example.com"), Confidence::Derived),
        "the permission-set role's session name, at once"
    );
    assert!(shown.reason.as_deref().unwrap().contains("is not known yet"), "{:?}", shown.reason);
    assert!(trail.pending.count().await.unwrap() > 0, "and it still waits for the exact answer");
    trail.ingest(&issuing, "741258963012").await;
    let upgraded = trail.stored("741258963012", &by_name(&events, "DescribeInstances").event_id).await;
    assert_eq!(who(&upgraded), (OriginKind::IdentityCenterUser, Some("alice.nguyen@example.com"), Confidence::Exact));
}

// ------------------------------------------------------------------ loops and long chains

fn session(key: &str, issued_at: EpochMillis, caller: Caller) -> Session {
    Session {
        access_key_id: key.into(),
        issued_at,
        expires_at: issued_at + 3_600_000,
        kind: IssueKind::AssumeRole,
        account_id: "741258963012".into(),
        role_arn: Some("arn:aws:iam::741258963012:role/Hop".into()),
        session_name: Some(key.to_lowercase()),
        assumed_arn: None,
        source_identity: None,
        event_id: format!("issue-{key}"),
        event_account: "741258963012".into(),
        shared_event_id: None,
        caller,
    }
}

fn role_caller(key: &str) -> Caller {
    Caller { identity_type: "AssumedRole".into(), account_id: Some("741258963012".into()), access_key_id: Some(key.into()), ..Caller::default() }
}

/// A chain of `hops` sessions, each asked for with the previous key, from an IAM user.
fn long_chain(hops: usize, t0: EpochMillis) -> Vec<Session> {
    (0..hops)
        .map(|i| {
            let caller = if i == 0 {
                Caller {
                    identity_type: "IAMUser".into(),
                    arn: Some("arn:aws:iam::741258963012:user/deep".into()),
                    access_key_id: Some("AKIADEEP".into()),
                    ..Caller::default()
                }
            } else {
                role_caller(&format!("ASIAHOP{:03}", i - 1))
            };
            session(&format!("ASIAHOP{i:03}"), t0 + i as EpochMillis * 1000, caller)
        })
        .collect()
}

#[tokio::test]
async fn loops_and_over_long_chains_stop_with_a_reason() {
    let t0 = time("2024-03-12T10:00:00Z");
    let store = Arc::new(MemorySessionStore::new());
    store.put(vec![session("ASIALOOPA", t0, role_caller("ASIALOOPB")), session("ASIALOOPB", t0, role_caller("ASIALOOPA"))].into()).await.unwrap();
    let resolver = Resolver::new(store.clone(), None, ResolverConfig::default());
    let actor = role_caller("ASIALOOPA");
    let Resolution::Resolved(looped) = resolver.resolve(Actor::new(&actor, t0 + 60_000)).await.unwrap() else { panic!("a loop is final") };
    assert_eq!((looped.kind, looped.confidence), (OriginKind::Unresolved, Confidence::Unresolved));
    assert!(looped.reason.as_deref().unwrap().contains("loops"), "{:?}", looped.reason);

    store.put(long_chain(40, t0).into()).await.unwrap();
    let end = role_caller("ASIAHOP039");
    let at = t0 + 60_000;
    let Resolution::Resolved(stopped) = resolver.resolve(Actor::new(&end, at)).await.unwrap() else { panic!("too long is final") };
    assert_eq!((stopped.confidence, stopped.chain.len()), (Confidence::Unresolved, 32));
    assert!(stopped.reason.as_deref().unwrap().starts_with("the chain is longer than 32 hops"), "{:?}", stopped.reason);

    let patient = Resolver::new(store, None, ResolverConfig { max_hops: 64, ..ResolverConfig::default() });
    let deep = patient.resolve(Actor::new(&end, at)).await.unwrap().into_origin();
    assert_eq!((who(&deep), deep.chain.len()), ((OriginKind::IamUser, Some("arn:aws:iam::741258963012:user/deep"), Confidence::Exact), 40));
    assert_eq!(deep.chain[0].access_key_id, "ASIAHOP000", "first hop first");
}

// ------------------------------------------------------------------ a real trail

#[tokio::test]
async fn the_real_stolen_instance_credentials_resolve_to_the_instance() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/real/otrf-ec2-proxy-s3-exfiltration.ndjson.gz");
    assert!(path.is_file(), "the shared data file {} is missing: clone or copy `shared/` beside the repository", path.display());
    let trail = Trail::new();
    let (events, _) = trail.ingest(&records(&path), "123456789123").await;
    let stolen: Vec<&Event> = events.iter().filter(|e| e.identity_type() == Some("AssumedRole")).collect();
    assert_eq!(stolen.len(), 11);
    for event in &stolen {
        let o = event.origin.as_ref().unwrap();
        assert_eq!(who(o), (OriginKind::AwsService, Some("ec2.amazonaws.com:i-0317f6c6b66ae9c40"), Confidence::Exact), "{}", event.event_id);
        assert_eq!((o.account_id.as_deref(), o.chain[0].access_key_id.as_str()), (Some("123456789123"), "ASIA5FLZVX4OPVKKVBMX"));
        assert_eq!(event.source_ip.as_deref(), Some("1.2.3.4"), "the outside address is on the event");
    }
    // pedro's console session (no issuing record in the trail): named at once, derived.
    let pedro: Vec<&Event> = events.iter().filter(|e| e.identity_type() == Some("IAMUser")).collect();
    assert_eq!(pedro.len(), 87);
    for event in &pedro {
        let o = event.origin.as_ref().unwrap();
        assert_eq!(who(o), (OriginKind::IamUser, Some("arn:aws:iam::123456789123:user/pedro"), Confidence::Derived), "{}", event.event_id);
    }
    assert_eq!(trail.pending.count().await.unwrap(), 87, "and waits, in case its session arrives");
    let settled = trail.pending.expire_before(EpochMillis::MAX).await.unwrap();
    assert_eq!(settled.len(), 87);
    assert!(
        settled[0].origin.reason.as_deref().unwrap().starts_with("no session for ASIA5FLZVX4OI4ZDQJOL used at 2020-09-14T00:"),
        "{:?}",
        settled[0].origin.reason
    );
    let stats = trail.resolver().stats();
    assert_eq!(stats.store_lookups, 1, "98 uses of two keys: the instance's session, recorded from the trail, is in the cache; pedro's key is looked up once");
    assert!(stats.store_lookups_per_thousand() < 25.0, "{stats:?}");
}
