//! Identity resolution: who is really behind every event.
//!
//! Credential-issuing events (AssumeRole, AssumeRoleWithSAML,
//! AssumeRoleWithWebIdentity, GetFederationToken, GetSessionToken, Identity
//! Center role credentials, service-issued sessions) become [`Session`]s,
//! keyed by the temporary access key id **and** the session's validity
//! window: AWS reuses key ids, so a key alone names nothing.
//!
//! An event's actor ([`Caller`]) is resolved to an [`Origin`] by following
//! sessions back, hop by hop, across accounts, to the person or workload
//! that started the chain: an IAM user, the root user, an Identity Center
//! user, a SAML or web-identity subject, a federated user, or an AWS service
//! acting for a resource. When a session is not known yet (its issuing file
//! has not arrived), the event waits in a pending set ([`PendingStore`]) and
//! is resolved again when sessions arrive; past a bound, it is final
//! `unresolved`, with the reason.
//!
//! The engine: [`capture`] turns issuing records into sessions, [`Resolver`]
//! walks an actor back hop by hop (through [`SessionCache`], the
//! [`SessionStore`] and an optional [`SessionArchive`]), and [`PendingSet`]
//! keeps events whose session has not arrived yet. `README.md` beside this
//! file says the idea.

mod cache;
mod capture;
mod origin;
mod pending;
mod resolve;

pub use cache::{CacheConfig, CacheLookup, CacheStats, SessionCache};
pub use capture::{capture, parse_expiration};
pub use pending::{finalize, pending_item, PendingConfig, PendingSet, ResolveReport};
pub use resolve::{issued_key, Actor, FallbackPolicy, Missing, Resolution, Resolver, ResolverConfig, ResolverStats};

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::ports::PortError;
use crate::time::EpochMillis;

/// How a session's credentials were issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssueKind {
    AssumeRole,
    AssumeRoleWithSaml,
    AssumeRoleWithWebIdentity,
    GetFederationToken,
    GetSessionToken,
    /// IAM Identity Center role credentials (`AWSReservedSSO_*` roles).
    IdentityCenter,
    /// A session an AWS service took for a resource (EC2 instance profile, Lambda, ECS task, …).
    Service,
}

/// The identity behind a request, as much of `userIdentity` as resolution
/// needs. Used both for an event's actor and for the caller that asked for
/// a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    /// `userIdentity.type` as written (`IAMUser`, `AssumedRole`, `AWSAccount`, …).
    #[serde(rename = "type")]
    pub identity_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// `invokedBy`: the service that made the call for the principal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoked_by: Option<String>,
    /// `identityProvider` (SAML provider ARN, OIDC provider) or
    /// `webIdFederationData.federatedProvider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<String>,
    /// `onBehalfOf.userId` (Identity Center).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// `onBehalfOf.identityStoreArn` (Identity Center).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_store_arn: Option<String>,
    /// `sessionContext.sourceIdentity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// `sessionContext.sessionIssuer.arn`: the role (or user) the session belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_issuer_arn: Option<String>,
    /// `sessionContext.ec2RoleDelivery`: set when the credentials came from an instance's metadata service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec2_role_delivery: Option<String>,
}

/// Temporary credentials issued by one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Session {
    pub access_key_id: String,
    /// `eventTime` of the issuing event.
    pub issued_at: EpochMillis,
    /// `responseElements.credentials.expiration`.
    pub expires_at: EpochMillis,
    pub kind: IssueKind,
    /// The account the credentials act in (the role's account; the user's
    /// account for federation and session tokens).
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// The ARN the session acts as (`assumed-role/…`, `federated-user/…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assumed_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// `eventID` of the issuing record: the caller's copy when both copies of
    /// a cross-account call are known.
    pub event_id: String,
    /// `recipientAccountId` of that record.
    pub event_account: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_event_id: Option<String>,
    /// Who asked for the session. For the role owner's copy of a
    /// cross-account call this is only an `AWSAccount` caller until the
    /// caller's copy is seen.
    pub caller: Caller,
}

/// How far a usage event may be logged outside its session's window and
/// still belong to it (clock differences between services).
pub const WINDOW_SLACK_MS: EpochMillis = 60_000;

/// Bytes a string takes, heap and handle, as the caches weigh it.
fn text_bytes(s: &str) -> usize {
    s.len() + std::mem::size_of::<String>()
}

fn optional_bytes(s: &Option<String>) -> usize {
    s.as_deref().map_or(std::mem::size_of::<Option<String>>(), text_bytes)
}

impl Session {
    /// About how many bytes the session takes in memory (what the caches weigh).
    pub fn approx_bytes(&self) -> usize {
        let own = [&self.role_arn, &self.session_name, &self.assumed_arn, &self.source_identity, &self.shared_event_id];
        std::mem::size_of::<Session>()
            + text_bytes(&self.access_key_id)
            + text_bytes(&self.account_id)
            + text_bytes(&self.event_id)
            + text_bytes(&self.event_account)
            + own.iter().map(|s| optional_bytes(s)).sum::<usize>()
            + self.caller.approx_bytes()
    }

    /// Whether the credentials were valid at `at`.
    pub fn valid_at(&self, at: EpochMillis) -> bool {
        self.issued_at - WINDOW_SLACK_MS <= at && at <= self.expires_at + WINDOW_SLACK_MS
    }

    /// Whether the caller is only known as another account (the role owner's copy).
    pub fn caller_is_account_only(&self) -> bool {
        self.caller.identity_type == "AWSAccount"
    }

    /// Whether `other` is the same issuance: the same access key id issued at
    /// the same time (the two copies of a cross-account call are).
    pub fn same_issue(&self, other: &Session) -> bool {
        self.access_key_id == other.access_key_id && self.issued_at == other.issued_at
    }

    /// Merges another copy of the same issuance into this one, whichever
    /// arrived first. The caller's copy wins: when this session's caller is
    /// only an `AWSAccount` and the other's is not, the other's caller,
    /// `event_id` and `event_account` replace them. Fields this copy lacks are
    /// taken from the other. Merging a copy into itself changes nothing.
    pub fn merge(&mut self, other: &Session) {
        if self.caller_is_account_only() && !other.caller_is_account_only() {
            self.caller = other.caller.clone();
            self.event_id = other.event_id.clone();
            self.event_account = other.event_account.clone();
        }
        fn fill(mine: &mut Option<String>, theirs: &Option<String>) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        fill(&mut self.role_arn, &other.role_arn);
        fill(&mut self.session_name, &other.session_name);
        fill(&mut self.assumed_arn, &other.assumed_arn);
        fill(&mut self.source_identity, &other.source_identity);
        fill(&mut self.shared_event_id, &other.shared_event_id);
    }
}

impl IssueKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IssueKind::AssumeRole => "assume_role",
            IssueKind::AssumeRoleWithSaml => "assume_role_with_saml",
            IssueKind::AssumeRoleWithWebIdentity => "assume_role_with_web_identity",
            IssueKind::GetFederationToken => "get_federation_token",
            IssueKind::GetSessionToken => "get_session_token",
            IssueKind::IdentityCenter => "identity_center",
            IssueKind::Service => "service",
        }
    }

    /// The kind named by [`IssueKind::as_str`] (and by serde).
    pub fn parse(s: &str) -> Option<Self> {
        [
            IssueKind::AssumeRole,
            IssueKind::AssumeRoleWithSaml,
            IssueKind::AssumeRoleWithWebIdentity,
            IssueKind::GetFederationToken,
            IssueKind::GetSessionToken,
            IssueKind::IdentityCenter,
            IssueKind::Service,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What kind of principal an origin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OriginKind {
    IamUser,
    Root,
    IdentityCenterUser,
    /// A subject of an external SAML identity provider.
    SamlUser,
    /// A subject of an OIDC provider (CI pipelines, mobile apps, …).
    WebIdentity,
    FederatedUser,
    /// An AWS service acting for a resource (an EC2 instance, a Lambda function, …).
    AwsService,
    /// A principal of another account that the trail shows only as that account.
    AwsAccount,
    /// Only the `sourceIdentity` the chain carries is known (its sessions are
    /// not): the name the first hop's principal set, always `derived`.
    SourceIdentity,
    Unresolved,
}

impl OriginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OriginKind::IamUser => "iam_user",
            OriginKind::Root => "root",
            OriginKind::IdentityCenterUser => "identity_center_user",
            OriginKind::SamlUser => "saml_user",
            OriginKind::WebIdentity => "web_identity",
            OriginKind::FederatedUser => "federated_user",
            OriginKind::AwsService => "aws_service",
            OriginKind::AwsAccount => "aws_account",
            OriginKind::SourceIdentity => "source_identity",
            OriginKind::Unresolved => "unresolved",
        }
    }

    /// The kind named by [`OriginKind::as_str`] (and by serde).
    pub fn parse(s: &str) -> Option<Self> {
        [
            OriginKind::IamUser,
            OriginKind::Root,
            OriginKind::IdentityCenterUser,
            OriginKind::SamlUser,
            OriginKind::WebIdentity,
            OriginKind::FederatedUser,
            OriginKind::AwsService,
            OriginKind::AwsAccount,
            OriginKind::SourceIdentity,
            OriginKind::Unresolved,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How sure the origin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// Every hop matched by access key id and validity window.
    Exact,
    /// Inferred: from `sourceIdentity`, Identity Center naming, or the other
    /// copy of a cross-account event.
    Derived,
    /// Waiting for a session that has not arrived yet.
    Pending,
    /// Final: could not be resolved; `reason` says why.
    Unresolved,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Exact => "exact",
            Confidence::Derived => "derived",
            Confidence::Pending => "pending",
            Confidence::Unresolved => "unresolved",
        }
    }

    /// The confidence named by [`Confidence::as_str`] (and by serde).
    pub fn parse(s: &str) -> Option<Self> {
        [Confidence::Exact, Confidence::Derived, Confidence::Pending, Confidence::Unresolved].into_iter().find(|c| c.as_str() == s)
    }
}

/// One step of a chain: a session issued on the way from the origin to the
/// acting session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    /// The issuing event's `eventID`.
    pub event_id: String,
    /// The account the session acts in.
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    pub access_key_id: String,
    pub kind: IssueKind,
    /// When the session was issued.
    pub time: EpochMillis,
}

/// The person or workload behind an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    pub kind: OriginKind,
    /// IAM user or root ARN; Identity Center user id; SAML or OIDC subject;
    /// federated user ARN; `service:resource` for services (e.g.
    /// `ec2.amazonaws.com:i-0abc…`); the account id for `aws_account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The origin's own account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The identity provider (SAML provider ARN, OIDC provider, identity store ARN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// `sourceIdentity` carried along the chain, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_identity: Option<String>,
    /// Hops from the origin to the acting session, first hop first.
    #[serde(default)]
    pub chain: Vec<Hop>,
    pub confidence: Confidence,
    /// Why the origin is derived, pending or unresolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An event waiting for a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingItem {
    pub account_id: String,
    pub event_id: String,
    pub event_time: EpochMillis,
    /// The event's own actor, to resolve it again.
    pub actor: Caller,
    /// `sharedEventID` of the event, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_event_id: Option<String>,
    /// The access key whose session is missing, and when it was used: the
    /// event's own key, or one further back along its chain.
    pub missing_key: String,
    pub missing_at: EpochMillis,
}

/// Sessions by access key id and validity window.
///
/// Backends may keep a session past its expiration (DynamoDB deletes
/// expired items up to days late): `get` never returns a session whose
/// retention (`expires_at` plus the store's margin) has passed at `now`.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores sessions. A session with the same access key id and issue time
    /// as a stored one (the other copy of a cross-account call) is merged:
    /// the caller's full identity replaces an `AWSAccount`-only caller.
    async fn put(&self, sessions: Arc<[Session]>) -> Result<(), PortError>;

    /// The session of `access_key_id` valid at `at`, if known and retained at
    /// `now`. When several are valid, the latest issued.
    async fn get(&self, access_key_id: &str, at: EpochMillis, now: EpochMillis) -> Result<Option<Session>, PortError>;
}

/// The fallback behind the session store: searches stored history (SQLite
/// here, Athena over the trail in AWS) for the event that issued a key.
#[async_trait]
pub trait SessionArchive: Send + Sync {
    /// The session of `access_key_id` valid at `at`, from history.
    async fn find(&self, access_key_id: &str, at: EpochMillis) -> Result<Option<Session>, PortError>;

    /// The sessions of many keys at once: for each `(access key id, time of
    /// use)`, the session valid then, if history holds it; each session once
    /// (the two copies of a cross-account call merged), in no particular
    /// order. The resolver asks for a whole batch's unknown keys in one call,
    /// so an archive whose every search costs a query (Athena) answers it
    /// with one. The default asks [`SessionArchive::find`] once per pair.
    async fn find_many(&self, wanted: &[(String, EpochMillis)]) -> Result<Vec<Session>, PortError> {
        let mut found: Vec<Session> = Vec::new();
        for (access_key_id, at) in wanted {
            if let Some(session) = self.find(access_key_id, *at).await? {
                match found.iter_mut().find(|f| f.same_issue(&session)) {
                    Some(known) => known.merge(&session),
                    None => found.push(session),
                }
            }
        }
        Ok(found)
    }
}

/// Events waiting for a session.
#[async_trait]
pub trait PendingStore: Send + Sync {
    /// Adds (or replaces, by account and event id) waiting events.
    async fn add(&self, items: Arc<[PendingItem]>) -> Result<(), PortError>;

    /// Removes and returns the events waiting on any of these access keys.
    async fn take_waiting_on(&self, keys: &[String]) -> Result<Vec<PendingItem>, PortError>;

    /// Removes and returns events with `event_time` before `before`: they have
    /// waited past the bound and become final `unresolved`.
    async fn take_expired(&self, before: EpochMillis) -> Result<Vec<PendingItem>, PortError>;

    /// How many events wait.
    async fn count(&self) -> Result<u64, PortError>;
}

impl Caller {
    /// About how many bytes the caller's text takes beyond the struct itself.
    pub fn approx_bytes(&self) -> usize {
        let fields = [
            &self.arn,
            &self.principal_id,
            &self.account_id,
            &self.access_key_id,
            &self.user_name,
            &self.invoked_by,
            &self.identity_provider,
            &self.on_behalf_of,
            &self.identity_store_arn,
            &self.source_identity,
            &self.session_issuer_arn,
            &self.ec2_role_delivery,
        ];
        self.identity_type.len() + fields.iter().map(|s| s.as_deref().map_or(0, str::len)).sum::<usize>()
    }

    /// The caller described by a record's `userIdentity`.
    pub fn from_view(identity: &crate::view::IdentityView<'_>) -> Caller {
        fn own(s: &Option<std::borrow::Cow<'_, str>>) -> Option<String> {
            s.as_deref().filter(|v| !v.is_empty()).map(str::to_owned)
        }
        let context = identity.session_context.as_ref();
        let on_behalf_of = identity.on_behalf_of.as_ref();
        Caller {
            identity_type: identity.identity_type.as_deref().unwrap_or("Unknown").to_owned(),
            arn: own(&identity.arn),
            principal_id: own(&identity.principal_id),
            account_id: own(&identity.account_id),
            access_key_id: own(&identity.access_key_id),
            user_name: own(&identity.user_name),
            invoked_by: own(&identity.invoked_by),
            identity_provider: own(&identity.identity_provider)
                .or_else(|| context.and_then(|c| c.web_id_federation_data.as_ref()).and_then(|w| own(&w.federated_provider))),
            on_behalf_of: on_behalf_of.and_then(|o| own(&o.user_id)),
            identity_store_arn: on_behalf_of.and_then(|o| own(&o.identity_store_arn)),
            source_identity: context.and_then(|c| own(&c.source_identity)),
            session_issuer_arn: context.and_then(|c| c.session_issuer.as_ref()).and_then(|i| own(&i.arn)),
            ec2_role_delivery: context.and_then(|c| own(&c.ec2_role_delivery)),
        }
    }
}
