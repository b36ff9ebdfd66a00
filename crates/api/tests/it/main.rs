//! trailwatch-api integration tests: the schema through `Schema::execute`,
//! the routes through `Router::oneshot`, one server through `curl`.

mod door;
mod graphql;
mod http;
mod limits;
mod loaders;
mod onboarding;
mod server;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;
use trailwatch_api::{Accounts, ApiDeps, ApiState, Limits, MemoryAliases, Principal, Role, Tokens};
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::{Delivery, Detection, EventRef, Lifecycle, LifecycleConfig, MemoryAlertStore, Severity};
use trailwatch_core::identity::{Caller, Confidence, Hop, IssueKind, Origin, OriginKind, PendingConfig, PendingSet, Resolver, ResolverConfig, Session};
use trailwatch_core::layout::ObjectKind;
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemoryPendingStore, MemorySessionStore};
use trailwatch_core::ports::{EventFilter, HistoryPage, HistoryQuery, LastEvent, OriginUpdate, SearchPage, WriteReport};
use trailwatch_core::rules::{RuleSet, RuleSource};
use trailwatch_core::time::parse_utc;
use trailwatch_core::{Checkpoints, Event, FileOutcome, FileStatus, HistoryStore, PortError};

pub const PROD: &str = "111111111111";
pub const DEV: &str = "222222222222";
pub const ALICE: &str = "arn:aws:iam::111111111111:user/alice";
pub const BOB: &str = "arn:aws:iam::222222222222:user/bob";
pub const VIEWER: &str = "viewer-token-0123456789";
pub const RESPONDER: &str = "responder-token-0123456789";
pub const ADMIN: &str = "admin-token-0123456789";
/// A key alice's session was issued with (see `fixture`).
pub const KEY: &str = "ASIAALICESESSION0001";

pub fn t(s: &str) -> i64 {
    parse_utc(s).expect("a test time")
}

pub struct Fixture {
    pub deps: Arc<ApiDeps>,
    pub history: Arc<MemoryHistory>,
    pub aliases: Arc<MemoryAliases>,
    pub feed: broadcast::Sender<Delivery>,
}

struct Saved(Arc<MemoryAliases>);

#[async_trait::async_trait]
impl trailwatch_api::AliasStore for Saved {
    async fn save(&self, account_id: &str, alias: &str) -> Result<(), trailwatch_core::PortError> {
        self.0.save(account_id, alias).await
    }
}

fn origin(principal: &str, account: &str, key: &str, at: i64) -> Origin {
    Origin {
        kind: OriginKind::IamUser,
        principal: Some(principal.to_owned()),
        account_id: Some(account.to_owned()),
        provider: None,
        source_identity: None,
        chain: vec![Hop {
            event_id: format!("issue-{key}"),
            account_id: account.to_owned(),
            role_arn: Some(format!("arn:aws:iam::{account}:role/Admin")),
            session_name: Some("work".into()),
            access_key_id: key.to_owned(),
            kind: IssueKind::AssumeRole,
            time: at,
        }],
        confidence: Confidence::Exact,
        reason: None,
    }
}

/// An event of `who` in `account`, `i` minutes after 2024-01-15T10:00Z.
pub fn event(account: &str, i: i64, name: &str, who: &str) -> Event {
    let time = t("2024-01-15T10:00:00Z") + i * 60_000;
    let id = format!("ev-{account}-{i:04}");
    let key = if who == ALICE { KEY } else { "ASIABOBSESSION000001" };
    let raw = json!({
        "eventVersion": "1.08", "eventID": id, "eventTime": trailwatch_core::time::format_utc(time),
        "eventSource": "iam.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
        "recipientAccountId": account, "sourceIPAddress": "203.0.113.7",
        "userIdentity": {"type": "AssumedRole", "arn": format!("arn:aws:sts::{account}:assumed-role/Admin/work"), "accessKeyId": key}
    });
    Event {
        account_id: account.to_owned(),
        event_id: id,
        event_time: time,
        event_source: "iam.amazonaws.com".into(),
        event_name: name.to_owned(),
        region: if i % 2 == 0 { "us-east-1".into() } else { "eu-west-1".into() },
        actor: Some(Caller {
            identity_type: "AssumedRole".into(),
            arn: Some(format!("arn:aws:sts::{account}:assumed-role/Admin/work")),
            access_key_id: Some(key.into()),
            ..Default::default()
        }),
        shared_event_id: None,
        source_ip: Some("203.0.113.7".into()),
        error_code: if name == "DeleteUser" { Some("AccessDenied".into()) } else { None },
        read_only: Some(name.starts_with("Get") || name.starts_with("List")),
        raw: raw.to_string(),
        origin: Some(origin(who, account, key, t("2024-01-15T09:55:00Z"))),
    }
}

pub fn detection(rule: &str, severity: Severity, e: &Event) -> Detection {
    Detection {
        rule_id: rule.into(),
        title: format!("{rule} fired").into(),
        severity,
        dedup_key: format!("{rule}|{}", e.account_id),
        group: vec![("recipientAccountId".into(), e.account_id.clone())],
        event: EventRef { account_id: e.account_id.clone(), event_id: e.event_id.clone(), event_time: e.event_time },
        account_alias: None,
        summary: format!("{} in {}", e.event_name, e.account_id),
        origin: e.origin.clone(),
        resolve_after_ms: None,
        notify_every_ms: 0,
    }
}

pub fn tokens() -> Tokens {
    Tokens::from_specs(&[format!("vera:viewer:{VIEWER}"), format!("rita:responder:{RESPONDER}"), format!("ada:admin:{ADMIN}")]).expect("tokens")
}

/// 120 events in two accounts (alice in prod, bob in dev), a ledger, three
/// alerts raised through the lifecycle, alice's session, an accounts file.
pub async fn fixture() -> Fixture {
    let history = Arc::new(MemoryHistory::new());
    let mut events = Vec::new();
    for i in 0..60 {
        events.push(event(PROD, i, if i % 3 == 0 { "CreateUser" } else { "GetUser" }, ALICE));
        events.push(event(DEV, i, if i % 10 == 0 { "DeleteUser" } else { "ListUsers" }, BOB));
    }
    history.append(events.clone().into()).await.expect("append");

    let checkpoints = Arc::new(MemoryCheckpoints::new());
    let outcome = |account: &str, status: FileStatus| FileOutcome {
        key: format!("AWSLogs/{account}/CloudTrail/us-east-1/2024/01/15/{account}_CloudTrail_us-east-1_20240115T1100Z_x.json.gz"),
        kind: ObjectKind::Log,
        account_id: account.to_owned(),
        region: "us-east-1".into(),
        size: 100,
        modified: t("2024-01-15T11:05:00Z"),
        status,
        events: 60,
        bytes: 1000,
        rejected: Vec::new(),
        error: (status == FileStatus::Failed).then(|| "truncated gzip".to_owned()),
    };
    checkpoints.record(vec![outcome(PROD, FileStatus::Done), outcome(DEV, FileStatus::Done)].into(), t("2024-01-15T11:06:00Z")).await.expect("record");

    let alerts = Arc::new(MemoryAlertStore::new());
    let lifecycle = Arc::new(Lifecycle::new(alerts.clone(), vec!["api".into(), "stdout".into()], LifecycleConfig::default()));
    let creates: Vec<Detection> = events.iter().filter(|e| e.event_name == "CreateUser").map(|e| detection("iam-user-created", Severity::High, e)).collect();
    let deletes: Vec<Detection> = events.iter().filter(|e| e.event_name == "DeleteUser").map(|e| detection("iam-delete-denied", Severity::Low, e)).collect();
    lifecycle.apply(&creates, t("2024-01-15T12:00:00Z")).await.expect("apply");
    lifecycle.apply(&deletes, t("2024-01-15T12:00:01Z")).await.expect("apply");
    let bob_create = detection("iam-user-created", Severity::High, &event(DEV, 61, "CreateUser", BOB));
    history.append(vec![event(DEV, 61, "CreateUser", BOB)].into()).await.expect("append");
    lifecycle.apply(&[bob_create], t("2024-01-15T12:00:02Z")).await.expect("apply");

    let sessions = Arc::new(MemorySessionStore::new());
    let resolver = Arc::new(Resolver::new(sessions, None, ResolverConfig::default()));
    let identity = Arc::new(PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default()));
    let issued = t("2024-01-15T09:55:00Z");
    identity
        .record_sessions(vec![Session {
            access_key_id: KEY.into(),
            issued_at: issued,
            expires_at: issued + 3_600_000,
            kind: IssueKind::AssumeRole,
            account_id: PROD.into(),
            role_arn: Some(format!("arn:aws:iam::{PROD}:role/Admin")),
            session_name: Some("work".into()),
            assumed_arn: Some(format!("arn:aws:sts::{PROD}:assumed-role/Admin/work")),
            source_identity: None,
            event_id: "issue-1".into(),
            event_account: PROD.into(),
            shared_event_id: None,
            caller: Caller { identity_type: "IAMUser".into(), arn: Some(ALICE.into()), account_id: Some(PROD.into()), ..Default::default() },
        }])
        .await
        .expect("sessions");
    identity.resolver().observe(t("2024-01-15T11:01:00Z"));

    let rules_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../rules");
    let rules = RuleSet::load(&RuleSource::read_dir(&rules_dir).expect("rules dir")).expect("rules load");
    let directory = AccountDirectory::from_list_accounts(
        r#"{"Accounts":[{"Id":"111111111111","Name":"Prod Payments","Email":"pay@example.com","Status":"ACTIVE",
                         "OuPath":"Root/Workloads/Prod","Tags":[{"Key":"environment","Value":"production"}]},
                        {"Id":"222222222222","Name":"Dev","Status":"ACTIVE"},
                        {"Id":"333333333333","Name":"Old Sandbox","Status":"SUSPENDED"}]}"#,
        "accounts.json",
    )
    .expect("accounts");
    let aliases = Arc::new(MemoryAliases::new());
    let (feed, _) = broadcast::channel(64);
    let deps = Arc::new(ApiDeps {
        history: history.clone(),
        checkpoints,
        alerts,
        lifecycle,
        rules: Arc::new(rules),
        accounts: Arc::new(Accounts::new(directory, Box::new(Saved(aliases.clone())))),
        identity,
        alert_feed: feed.clone(),
        limits: Limits::default(),
    });
    Fixture { deps, history, aliases, feed }
}

impl Fixture {
    pub fn state(&self) -> ApiState {
        ApiState::new(self.deps.clone(), tokens())
    }

    /// Runs a request as a principal of `role` through the schema; returns (data, errors).
    pub async fn run(&self, role: Role, query: &str, variables: Value) -> (Value, Vec<Value>) {
        let schema = trailwatch_api::schema(self.deps.clone());
        run_on(&schema, role, query, variables).await
    }
}

pub async fn run_on(schema: &trailwatch_api::ApiSchema, role: Role, query: &str, variables: Value) -> (Value, Vec<Value>) {
    let name = match role {
        Role::Viewer => "vera",
        Role::Responder => "rita",
        Role::Admin => "ada",
    };
    let request = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(variables)).data(Principal { name: name.into(), role });
    let response = schema.execute(request).await;
    let out = serde_json::to_value(&response).expect("response json");
    let errors = out.get("errors").and_then(Value::as_array).cloned().unwrap_or_default();
    (out.get("data").cloned().unwrap_or(Value::Null), errors)
}

pub fn codes(errors: &[Value]) -> Vec<String> {
    errors.iter().filter_map(|e| e.pointer("/extensions/code").and_then(Value::as_str).map(str::to_owned)).collect()
}

/// The fixture's dependencies with another history store.
pub fn deps_with_history(f: &Fixture, history: Arc<dyn HistoryStore>) -> ApiDeps {
    let d = &f.deps;
    ApiDeps {
        history,
        checkpoints: d.checkpoints.clone(),
        alerts: d.alerts.clone(),
        lifecycle: d.lifecycle.clone(),
        rules: d.rules.clone(),
        accounts: d.accounts.clone(),
        identity: d.identity.clone(),
        alert_feed: d.alert_feed.clone(),
        limits: d.limits,
    }
}

/// History that counts its reads by one key and by many, and can take its time over them.
pub struct Watched {
    inner: Arc<MemoryHistory>,
    delay: Duration,
    gets: AtomicUsize,
    get_manys: AtomicUsize,
    keys: AtomicUsize,
}

impl Watched {
    pub fn new(inner: Arc<MemoryHistory>) -> Self {
        Watched { inner, delay: Duration::ZERO, gets: AtomicUsize::new(0), get_manys: AtomicUsize::new(0), keys: AtomicUsize::new(0) }
    }

    /// Each read (`get`, `get_many`, `count`, `search`) first sleeps this long.
    pub fn slow(inner: Arc<MemoryHistory>, delay: Duration) -> Self {
        Watched { delay, ..Watched::new(inner) }
    }

    /// (`get` calls, `get_many` calls, keys asked of `get_many`).
    pub fn reads(&self) -> (usize, usize, usize) {
        (self.gets.load(Ordering::SeqCst), self.get_manys.load(Ordering::SeqCst), self.keys.load(Ordering::SeqCst))
    }

    async fn pause(&self) {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
    }
}

#[async_trait::async_trait]
impl HistoryStore for Watched {
    async fn append(&self, events: Arc<[Event]>) -> Result<WriteReport, PortError> {
        self.inner.append(events).await
    }
    async fn page(&self, query: &HistoryQuery) -> Result<HistoryPage, PortError> {
        self.inner.page(query).await
    }
    async fn count(&self) -> Result<u64, PortError> {
        self.pause().await;
        self.inner.count().await
    }
    async fn set_origins(&self, updates: Arc<[OriginUpdate]>) -> Result<u64, PortError> {
        self.inner.set_origins(updates).await
    }
    async fn get(&self, account_id: &str, event_id: &str) -> Result<Option<Event>, PortError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.pause().await;
        self.inner.get(account_id, event_id).await
    }
    async fn get_many(&self, keys: &[(String, String)]) -> Result<Vec<Event>, PortError> {
        self.get_manys.fetch_add(1, Ordering::SeqCst);
        self.keys.fetch_add(keys.len(), Ordering::SeqCst);
        self.pause().await;
        self.inner.get_many(keys).await
    }
    async fn search(&self, filter: &EventFilter) -> Result<SearchPage, PortError> {
        self.pause().await;
        self.inner.search(filter).await
    }
    async fn last_events(&self) -> Result<Vec<LastEvent>, PortError> {
        self.inner.last_events().await
    }
}
