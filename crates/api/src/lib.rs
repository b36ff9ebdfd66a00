//! trailwatch-api: the GraphQL API over trailwatch's ports.
//!
//! - [`schema`] builds the schema from [`ApiDeps`] (tests run queries with
//!   `Schema::execute`, no HTTP);
//! - [`app`] wraps it in an axum `Router` with bearer-token auth
//!   ([`Tokens`]), GraphiQL, WebSocket subscriptions, health and metrics;
//! - [`BroadcastSink`] is the alert sink (`api`) that feeds subscriptions.
//!
//! Role failures are GraphQL errors with code `FORBIDDEN` (HTTP 200, the
//! other fields still answer); a missing or wrong token is HTTP 401 with no body data.

mod accounts;
pub mod auth;
mod graphql;
mod http;
mod metrics;
mod request_limits;
mod sink;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::dataloader::DataLoader;
use async_graphql::Schema;
use tokio::sync::broadcast;
use trailwatch_core::alerts::{AlertStore, Delivery, Lifecycle};
use trailwatch_core::identity::PendingSet;
use trailwatch_core::ports::{Checkpoints, HistoryStore};
use trailwatch_core::rules::RuleSet;

pub use accounts::{Accounts, AliasStore, MemoryAliases};
pub use auth::{generate_token, Principal, Refusal, Role, TokenError, Tokens};
pub use graphql::support::{DateTime, MAX_PAGE};
pub use graphql::{MutationRoot, QueryRoot, SubscriptionRoot};
pub use http::{app, ApiState, ExtraMetrics};
pub use sink::BroadcastSink;

/// The schema type.
pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// What the API reads and changes.
pub struct ApiDeps {
    pub history: Arc<dyn HistoryStore>,
    pub checkpoints: Arc<dyn Checkpoints>,
    pub alerts: Arc<dyn AlertStore>,
    /// Acknowledge and resolve go through it, so they reach the sinks like any transition.
    pub lifecycle: Arc<Lifecycle>,
    pub rules: Arc<RuleSet>,
    pub accounts: Arc<Accounts>,
    /// The pipeline's identity engine (its resolver answers `identity`).
    pub identity: Arc<PendingSet>,
    /// Where [`BroadcastSink`] publishes; each subscription subscribes to it.
    pub alert_feed: broadcast::Sender<Delivery>,
    pub limits: Limits,
}

/// What one request may cost. Everything but `body_bytes` and `timeout` is
/// checked on the parsed document before it runs (see `request_limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Levels of nested fields.
    pub depth: usize,
    /// async-graphql's cost: a connection costs `first` times its fields.
    pub complexity: usize,
    /// Request body (413 past it).
    pub body_bytes: usize,
    /// Time to answer (408 past it).
    pub timeout: Duration,
    /// Operations in one document.
    pub operations: usize,
    /// Fields selected, every fragment spread expanded.
    pub fields: usize,
    /// Aliases, every fragment spread expanded: each alias of an expensive
    /// field would run it again.
    pub aliases: usize,
    /// Directives on one field.
    pub directives: usize,
    /// The least role that may introspect the schema (`__schema`, `__type`;
    /// GraphiQL needs it); `None`: nobody.
    pub introspection: Option<Role>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            depth: 12,
            complexity: 5_000,
            body_bytes: 64 * 1024,
            timeout: Duration::from_secs(30),
            operations: 10,
            fields: 1_000,
            aliases: 30,
            directives: 8,
            introspection: Some(Role::Viewer),
        }
    }
}

/// The schema over `deps`, with its [`Limits`].
pub fn schema(deps: Arc<ApiDeps>) -> ApiSchema {
    let events = DataLoader::new(graphql::EventLoader(deps.history.clone()), tokio::spawn);
    let transitions = DataLoader::new(graphql::TransitionLoader(deps.alerts.clone()), tokio::spawn);
    let limits = deps.limits;
    let builder = Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(limits.depth)
        .limit_complexity(limits.complexity)
        .limit_directives(limits.directives)
        .extension(request_limits::RequestLimits(limits));
    // "Did you mean …?" would tell the schema to whoever may not introspect it.
    let builder = if limits.introspection == Some(Role::Viewer) { builder } else { builder.disable_suggestions() };
    builder.data(events).data(transitions).data(graphql::RuleTests::default()).data(deps).finish()
}

/// Wall-clock now, in milliseconds since the epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
