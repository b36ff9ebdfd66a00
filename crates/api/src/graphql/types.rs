//! The GraphQL types over core's model: enums mirrored from core, and thin
//! object wrappers that resolve related data (transitions, sample events)
//! through the loaders.

use std::sync::Arc;

use async_graphql::dataloader::DataLoader;
use async_graphql::{ComplexObject, Context, Enum, Json, Object, SimpleObject};
use trailwatch_core::alerts::{Alert, Transition};
use trailwatch_core::identity::{Hop, Origin};
use trailwatch_core::Event;

use super::loaders::{EventLoader, TransitionLoader};
use super::support::{port_error, DateTime};
use crate::ApiDeps;

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Severity", remote = "trailwatch_core::alerts::Severity")]
pub enum GqlSeverity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AlertStatus", remote = "trailwatch_core::alerts::AlertStatus")]
pub enum GqlAlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "TransitionKind", remote = "trailwatch_core::alerts::TransitionKind")]
pub enum GqlTransitionKind {
    Opened,
    Updated,
    Acknowledged,
    Resolved,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "OriginKind", remote = "trailwatch_core::identity::OriginKind")]
pub enum GqlOriginKind {
    IamUser,
    Root,
    IdentityCenterUser,
    SamlUser,
    WebIdentity,
    FederatedUser,
    AwsService,
    AwsAccount,
    SourceIdentity,
    Unresolved,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Confidence", remote = "trailwatch_core::identity::Confidence")]
pub enum GqlConfidence {
    Exact,
    Derived,
    Pending,
    Unresolved,
}

#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "IssueKind", remote = "trailwatch_core::identity::IssueKind")]
pub enum GqlIssueKind {
    AssumeRole,
    AssumeRoleWithSaml,
    AssumeRoleWithWebIdentity,
    GetFederationToken,
    GetSessionToken,
    IdentityCenter,
    Service,
}

pub(crate) fn deps<'a>(ctx: &Context<'a>) -> &'a Arc<ApiDeps> {
    ctx.data_unchecked::<Arc<ApiDeps>>()
}

/// The person or workload behind an event, with the chain of sessions.
pub struct OriginObj(pub Origin);

#[Object(name = "Origin")]
impl OriginObj {
    async fn kind(&self) -> GqlOriginKind {
        self.0.kind.into()
    }
    /// IAM user or root ARN, Identity Center user id, SAML or OIDC subject, `service:resource`, …
    async fn principal(&self) -> Option<&str> {
        self.0.principal.as_deref()
    }
    async fn account_id(&self) -> Option<&str> {
        self.0.account_id.as_deref()
    }
    async fn provider(&self) -> Option<&str> {
        self.0.provider.as_deref()
    }
    async fn source_identity(&self) -> Option<&str> {
        self.0.source_identity.as_deref()
    }
    /// Sessions from the origin to the acting one, first hop first.
    async fn chain(&self) -> Vec<HopObj> {
        self.0.chain.iter().cloned().map(HopObj).collect()
    }
    async fn confidence(&self) -> GqlConfidence {
        self.0.confidence.into()
    }
    /// Why it is derived, pending or unresolved.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
}

/// One session on the way from the origin to the acting session.
pub struct HopObj(pub Hop);

#[Object(name = "Hop")]
impl HopObj {
    /// The issuing event's `eventID`.
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }
    async fn account_id(&self) -> &str {
        &self.0.account_id
    }
    async fn role_arn(&self) -> Option<&str> {
        self.0.role_arn.as_deref()
    }
    async fn session_name(&self) -> Option<&str> {
        self.0.session_name.as_deref()
    }
    async fn access_key_id(&self) -> &str {
        &self.0.access_key_id
    }
    async fn kind(&self) -> GqlIssueKind {
        self.0.kind.into()
    }
    async fn time(&self) -> DateTime {
        DateTime(self.0.time)
    }
}

#[derive(SimpleObject)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// An alert: a rule's matches for one group (by default one account).
pub struct AlertObj(pub Alert);

#[Object(name = "Alert")]
impl AlertObj {
    async fn id(&self) -> &str {
        &self.0.id
    }
    async fn dedup_key(&self) -> &str {
        &self.0.dedup_key
    }
    async fn rule_id(&self) -> &str {
        &self.0.rule_id
    }
    async fn title(&self) -> &str {
        &self.0.title
    }
    async fn severity(&self) -> GqlSeverity {
        self.0.severity.into()
    }
    async fn status(&self) -> GqlAlertStatus {
        self.0.status.into()
    }
    async fn summary(&self) -> &str {
        &self.0.summary
    }
    async fn account_id(&self) -> &str {
        &self.0.account_id
    }
    /// The alias when the alert was raised.
    async fn account_alias(&self) -> Option<&str> {
        self.0.account_alias.as_deref()
    }
    async fn origin(&self) -> Option<OriginObj> {
        self.0.origin.clone().map(OriginObj)
    }
    /// The group-by fields and their values.
    async fn group(&self) -> Vec<KeyValue> {
        self.0.group.iter().map(|(k, v)| KeyValue { key: k.clone(), value: v.clone() }).collect()
    }
    /// Trail time of the first match.
    async fn first_seen(&self) -> DateTime {
        DateTime(self.0.first_seen)
    }
    /// Trail time of the latest match.
    async fn last_seen(&self) -> DateTime {
        DateTime(self.0.last_seen)
    }
    /// Matches so far.
    async fn count(&self) -> u64 {
        self.0.count
    }
    async fn revision(&self) -> u64 {
        self.0.revision
    }
    /// Wall-clock time of the last change.
    async fn updated_at(&self) -> DateTime {
        DateTime(self.0.updated_at)
    }
    /// Every change, oldest first.
    #[graphql(complexity = "5 * child_complexity")]
    async fn transitions(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<TransitionObj>> {
        let loader = ctx.data_unchecked::<DataLoader<TransitionLoader>>();
        let found = loader.load_one(self.0.id.clone()).await.map_err(|e| port_error("reading transitions", &e))?;
        Ok(found.unwrap_or_default().iter().cloned().map(TransitionObj).collect())
    }
    /// The sample events (the first matches, then the latest) as stored.
    /// Samples no longer in history are left out.
    #[graphql(complexity = "20 * child_complexity")]
    async fn events(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<EventObj>> {
        let loader = ctx.data_unchecked::<DataLoader<EventLoader>>();
        let keys: Vec<(String, String)> = self.0.samples.iter().map(|s| (s.account_id.clone(), s.event_id.clone())).collect();
        let mut found = loader.load_many(keys.iter().cloned()).await.map_err(|e| port_error("reading events", &e))?;
        Ok(keys.iter().filter_map(|k| found.remove(k)).collect())
    }
}

/// One change of an alert.
pub struct TransitionObj(pub Transition);

#[Object(name = "Transition")]
impl TransitionObj {
    async fn revision(&self) -> u64 {
        self.0.revision
    }
    async fn kind(&self) -> GqlTransitionKind {
        self.0.kind.into()
    }
    /// Trail time for matches and quiet resolution, wall clock for what a person did.
    async fn at(&self) -> DateTime {
        DateTime(self.0.at)
    }
    async fn recorded_at(&self) -> DateTime {
        DateTime(self.0.recorded_at)
    }
    /// Why: the matching event, the quiet period, the person's note.
    async fn cause(&self) -> &str {
        &self.0.cause
    }
    /// Who acknowledged or resolved it (the token's name).
    async fn by(&self) -> Option<&str> {
        self.0.by.as_deref()
    }
    /// Whether sinks were told.
    async fn notify(&self) -> bool {
        self.0.notify
    }
}

/// Who made the call, as the record says (`userIdentity`).
#[derive(SimpleObject)]
#[graphql(name = "Actor")]
pub struct ActorObj {
    #[graphql(name = "type")]
    pub identity_type: String,
    pub arn: Option<String>,
    pub account_id: Option<String>,
    pub access_key_id: Option<String>,
    pub user_name: Option<String>,
    pub invoked_by: Option<String>,
    pub session_issuer_arn: Option<String>,
}

/// A stored CloudTrail event.
#[derive(Clone)]
pub struct EventObj(pub Arc<Event>);

impl EventObj {
    pub fn new(event: Event) -> Self {
        EventObj(Arc::new(event))
    }
}

impl From<Arc<Event>> for EventObj {
    fn from(e: Arc<Event>) -> Self {
        EventObj(e)
    }
}

#[Object(name = "Event")]
impl EventObj {
    async fn account_id(&self) -> &str {
        &self.0.account_id
    }
    /// The account's alias now (an override, else its Organizations name).
    async fn account_alias(&self, ctx: &Context<'_>) -> Option<String> {
        deps(ctx).accounts.alias(&self.0.account_id)
    }
    async fn event_id(&self) -> &str {
        &self.0.event_id
    }
    async fn event_time(&self) -> DateTime {
        DateTime(self.0.event_time)
    }
    async fn event_source(&self) -> &str {
        &self.0.event_source
    }
    async fn event_name(&self) -> &str {
        &self.0.event_name
    }
    async fn region(&self) -> &str {
        &self.0.region
    }
    async fn actor(&self) -> Option<ActorObj> {
        self.0.actor.as_ref().map(|a| ActorObj {
            identity_type: a.identity_type.clone(),
            arn: a.arn.clone(),
            account_id: a.account_id.clone(),
            access_key_id: a.access_key_id.clone(),
            user_name: a.user_name.clone(),
            invoked_by: a.invoked_by.clone(),
            session_issuer_arn: a.session_issuer_arn.clone(),
        })
    }
    async fn shared_event_id(&self) -> Option<&str> {
        self.0.shared_event_id.as_deref()
    }
    async fn source_ip(&self) -> Option<&str> {
        self.0.source_ip.as_deref()
    }
    async fn error_code(&self) -> Option<&str> {
        self.0.error_code.as_deref()
    }
    async fn read_only(&self) -> Option<bool> {
        self.0.read_only
    }
    async fn origin(&self) -> Option<OriginObj> {
        self.0.origin.clone().map(OriginObj)
    }
    /// The record as CloudTrail wrote it.
    async fn raw(&self) -> Json<serde_json::Value> {
        // Stored records were parsed on the way in; a record that no longer parses is shown as a string.
        Json(serde_json::from_str(&self.0.raw).unwrap_or_else(|_| serde_json::Value::String(self.0.raw.clone())))
    }
}

/// A loaded detection rule.
#[derive(SimpleObject)]
#[graphql(name = "Rule", complex)]
pub struct RuleObj {
    pub id: String,
    pub title: String,
    pub level: GqlSeverity,
    pub status: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<String>,
    /// How many test events it carries.
    pub tests: u64,
    /// The file it was loaded from.
    pub path: String,
    /// Whether it is checked only against the event names or sources its index names.
    pub indexed: bool,
    pub threshold: Option<ThresholdObj>,
    /// Resolve its alerts after this many seconds without a match; null: only a person resolves them.
    pub resolve_after_seconds: Option<i64>,
}

#[derive(SimpleObject)]
#[graphql(name = "Threshold")]
pub struct ThresholdObj {
    /// Fire above this many matches…
    pub above: u64,
    /// …within this many seconds of trail time…
    pub window_seconds: i64,
    /// …per group of these fields.
    pub by: Vec<String>,
}

/// The outcome of every rule's own tests, run once per schema on first use.
#[derive(Default)]
pub struct RuleTests(std::sync::OnceLock<Vec<trailwatch_core::rules::TestOutcome>>);

impl RuleTests {
    fn of<'a>(&'a self, rules: &trailwatch_core::rules::RuleSet, id: &'a str) -> impl Iterator<Item = &'a trailwatch_core::rules::TestOutcome> + 'a {
        self.0.get_or_init(|| trailwatch_core::rules::run_tests(rules)).iter().filter(move |o| o.rule_id == id)
    }
}

#[ComplexObject]
impl RuleObj {
    /// How many of its tests pass against the loaded engine.
    async fn tests_passed(&self, ctx: &Context<'_>) -> async_graphql::Result<u64> {
        let tests = ctx.data::<RuleTests>()?;
        Ok(tests.of(&deps(ctx).rules, &self.id).filter(|o| o.passed).count() as u64)
    }

    /// Its failing tests: name and why.
    async fn test_failures(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<String>> {
        let tests = ctx.data::<RuleTests>()?;
        Ok(tests.of(&deps(ctx).rules, &self.id).filter(|o| !o.passed).map(|o| format!("{}: {}", o.name, o.reason.as_deref().unwrap_or("failed"))).collect())
    }

    /// The latest match of the rule's most recently changed alert (one alert-store read per rule).
    async fn last_fired(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<DateTime>> {
        let query = trailwatch_core::alerts::AlertQuery { rule_id: Some(self.id.clone()), limit: 1, ..Default::default() };
        let page = deps(ctx).alerts.list(&query).await.map_err(|e| port_error("reading alerts", &e))?;
        Ok(page.alerts.first().map(|a| DateTime(a.last_seen)))
    }
}

impl From<&trailwatch_core::rules::Rule> for RuleObj {
    fn from(r: &trailwatch_core::rules::Rule) -> Self {
        RuleObj {
            id: r.id.clone(),
            title: r.title.clone(),
            level: r.level.into(),
            status: r.status.clone(),
            description: r.description.clone(),
            tags: r.tags.clone(),
            tests: r.tests as u64,
            path: r.path.clone(),
            indexed: r.indexed,
            threshold: r.threshold.as_ref().map(|t| ThresholdObj { above: t.above, window_seconds: t.window_ms / 1000, by: t.by.clone() }),
            resolve_after_seconds: r.resolve_after_ms.map(|ms| ms / 1000),
        }
    }
}
