//! The GraphQL request path: any request body, as the HTTP route would
//! receive it (a JSON request, or else the bytes taken as the query text),
//! executed by the API's schema, with its limits, over in-memory stores
//! holding a few events, an alert and a session.

use std::sync::Arc;

use tokio::sync::broadcast;
use trailwatch_api::{Accounts, ApiDeps, ApiSchema, Limits, MemoryAliases, Principal, Role};
use trailwatch_core::accounts::AccountDirectory;
use trailwatch_core::alerts::{Detection, EventRef, Lifecycle, LifecycleConfig, MemoryAlertStore, Severity};
use trailwatch_core::identity::{PendingConfig, PendingSet, Resolver, ResolverConfig};
use trailwatch_core::memory::{MemoryCheckpoints, MemoryHistory, MemoryPendingStore, MemorySessionStore};
use trailwatch_core::rules::RuleSet;
use trailwatch_core::{Event, HistoryStore};

const ACCOUNT: &str = "111122223333";

fn record(i: usize, name: &str) -> String {
    format!(
        r#"{{"eventVersion":"1.09","userIdentity":{{"type":"IAMUser","arn":"arn:aws:iam::{ACCOUNT}:user/alice","accountId":"{ACCOUNT}","accessKeyId":"AKIAFUZZ"}},"eventTime":"2024-01-15T12:0{i}:00Z","eventSource":"iam.amazonaws.com","eventName":"{name}","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.7","eventID":"g{i}","recipientAccountId":"{ACCOUNT}"}}"#
    )
}

/// The schema and the runtime it runs on, built once per fuzzing process.
pub struct Target {
    runtime: tokio::runtime::Runtime,
    schema: ApiSchema,
}

impl Default for Target {
    fn default() -> Self {
        Self::new()
    }
}

impl Target {
    pub fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let schema = runtime.block_on(async {
            let history = Arc::new(MemoryHistory::new());
            let events: Vec<Event> = ["CreateUser", "GetUser", "DeleteUser"]
                .iter()
                .enumerate()
                .map(|(i, name)| Event::from_record(i, record(i, name).as_bytes(), ACCOUNT).expect("a valid event"))
                .collect();
            history.append(events.clone().into()).await.expect("in-memory append");
            let alerts = Arc::new(MemoryAlertStore::new());
            let lifecycle = Arc::new(Lifecycle::new(alerts.clone(), vec!["api".into()], LifecycleConfig::default()));
            let e = &events[0];
            let detection = Detection {
                rule_id: "iam-user-created".into(),
                title: "IAM user created".into(),
                severity: Severity::High,
                dedup_key: format!("iam-user-created|{ACCOUNT}"),
                group: vec![("recipientAccountId".into(), ACCOUNT.into())],
                event: EventRef { account_id: e.account_id.clone(), event_id: e.event_id.clone(), event_time: e.event_time },
                account_alias: None,
                summary: "CreateUser".into(),
                origin: None,
                resolve_after_ms: None,
                notify_every_ms: 0,
            };
            lifecycle.apply(&[detection], e.event_time).await.expect("in-memory alert");
            let resolver = Arc::new(Resolver::new(Arc::new(MemorySessionStore::new()), None, ResolverConfig::default()));
            let identity = Arc::new(PendingSet::new(resolver, Arc::new(MemoryPendingStore::new()), PendingConfig::default()));
            let directory =
                AccountDirectory::from_list_accounts(&format!(r#"{{"Accounts":[{{"Id":"{ACCOUNT}","Name":"Prod","Status":"ACTIVE"}}]}}"#), "accounts.json")
                    .expect("an accounts list");
            let deps = ApiDeps {
                history,
                checkpoints: Arc::new(MemoryCheckpoints::new()),
                alerts,
                lifecycle,
                rules: Arc::new(RuleSet::load(&[]).expect("no rules load")),
                accounts: Arc::new(Accounts::new(directory, Box::new(MemoryAliases::new()))),
                identity,
                alert_feed: broadcast::channel(16).0,
                limits: Limits::default(),
            };
            trailwatch_api::schema(Arc::new(deps))
        });
        Target { runtime, schema }
    }

    /// Executes `body` as one request of a viewer, responder or admin (by
    /// its length); the response must serialize, and an error must say
    /// something.
    pub fn run(&self, body: &[u8]) {
        let request = match serde_json::from_slice::<async_graphql::Request>(body) {
            Ok(request) => request,
            Err(_) => async_graphql::Request::new(String::from_utf8_lossy(body)),
        };
        let role = [Role::Viewer, Role::Responder, Role::Admin][body.len() % 3];
        let request = request.data(Principal { name: "fuzz".into(), role });
        let response = self.runtime.block_on(self.schema.execute(request));
        for error in &response.errors {
            assert!(!error.message.is_empty(), "an error says what went wrong");
        }
        serde_json::to_vec(&response).expect("a response serializes");
    }
}
